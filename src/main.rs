fn main() {
    std::process::exit(pbio::cli::main());
}
