//! The command line: one file per subcommand. `main` calls `run`, and
//! this is the one place where errors become exit codes:
//! 0 success; 1 completed with degraded devices; 2 usage error; 3 data
//! could not all be written or restored.

pub mod backup;
pub mod bench;
pub mod demo;
pub mod list;
pub mod plan;
pub mod restore;
pub mod scan;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::device::DeviceSpec;
use crate::plan::{Balance, Order, Strategy};
use crate::units::parse_size;

pub const EXIT_OK: i32 = 0;
pub const EXIT_DEGRADED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_DATA: i32 = 3;

/// A failed command: what to print and which exit code it means.
#[derive(Debug)]
pub enum Failure {
    /// Bad input: nothing was written.
    Usage(String),
    /// Data could not all be written, read or restored.
    Data(String),
}

impl Failure {
    pub fn code(&self) -> i32 {
        match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Data(_) => EXIT_DATA,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(m) | Failure::Data(m) => f.write_str(m),
        }
    }
}

pub type CliResult = Result<i32, Failure>;

#[derive(Parser, Debug)]
#[command(
    name = "pbio",
    version,
    about = "Parallel backup engine: one backup split across many devices, each device readable alone",
    after_help = "Exit codes: 0 success, 1 degraded (data safe), 2 usage error, 3 data not all written or restored."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Back up sources across devices.
    Backup(backup::BackupArgs),
    /// Show the plan (which bytes go to which device) without touching the devices.
    Plan(plan::PlanArgs),
    /// Restore a set (or the part of it the given devices hold).
    Restore(restore::RestoreArgs),
    /// Read every record of a set, checking every CRC and every file digest.
    Verify(restore::VerifyArgs),
    /// Print the catalog of a set from one device.
    List(list::ListArgs),
    /// Recover the records of a device with no usable catalog.
    Scan(scan::ScanArgs),
    /// The embedded default: file devices in a temp dir, a generated tree, backup, restore, verify.
    Demo(demo::DemoArgs),
    Bench(bench::BenchArgs),
}

fn parse_dev(text: &str) -> Result<DeviceSpec, String> {
    DeviceSpec::parse(text)
}

fn parse_chunk(text: &str) -> Result<u64, String> {
    let n = parse_size(text)?;
    if n < 4096 || !n.is_power_of_two() || n > (64 << 20) {
        return Err(format!(
            "chunk '{text}' must be a power of two between 4K and 64M"
        ));
    }
    Ok(n)
}

/// Arguments shared by `plan` and `backup`.
#[derive(Args, Debug, Clone)]
pub struct SetArgs {
    /// Files and directory trees to back up.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// A backup device: PATH[,size=N][,rate=N] (repeat for each device).
    #[arg(long = "dev", value_parser = parse_dev, required = true)]
    pub devs: Vec<DeviceSpec>,
    /// split: segments <= T, least filled first (claims 10, 30); fill: whole files first, large files split by space remaining (claims 19, 38).
    #[arg(long, value_enum, default_value_t)]
    pub strategy: Strategy,
    /// Sort order of files and segments (claims 11, 12).
    #[arg(long, value_enum, default_value_t)]
    pub order: Order,
    /// bytes: equal bytes per device; time: bytes proportional to each device's rate=.
    #[arg(long, value_enum, default_value_t)]
    pub balance: Balance,
    /// Record payload size; segment boundaries fall on multiples of it.
    #[arg(long, default_value = "1M", value_parser = parse_chunk)]
    pub chunk: u64,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

impl SetArgs {
    pub fn options(&self) -> crate::plan::Options {
        crate::plan::Options {
            strategy: self.strategy,
            order: self.order,
            balance: self.balance,
            chunk_bytes: self.chunk,
        }
    }
}

/// Parse arguments and run; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("pbio: {failure}");
            failure.code()
        }
    }
}

pub fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Backup(a) => backup::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Restore(a) => restore::run_restore(a),
        Command::Verify(a) => restore::run_verify(a),
        Command::List(a) => list::run(a),
        Command::Scan(a) => scan::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

/// Walk the sources and probe the devices: everything `plan` and `backup`
/// check before any device is written. Errors here are usage errors.
pub struct Prepared {
    pub entries: Vec<crate::source::Entry>,
    pub devices: Vec<(String, u64, Option<u64>)>,
    pub plan: crate::plan::Plan,
    /// Media bytes kept free on every device for label and catalog.
    pub reserve_bytes: u64,
}

pub fn prepare(args: &SetArgs) -> Result<Prepared, Failure> {
    let walk = crate::source::walk(&args.sources).map_err(|e| Failure::Usage(e.to_string()))?;
    if !walk.errors.is_empty() {
        let mut msg = format!("{} source entries cannot be read:", walk.errors.len());
        for e in &walk.errors {
            msg.push_str(&format!("\n  {}: {}", e.path.display(), e.error));
        }
        return Err(Failure::Usage(msg));
    }
    let mut devices = Vec::with_capacity(args.devs.len());
    let mut identities = Vec::with_capacity(args.devs.len());
    for spec in &args.devs {
        let probe = crate::device::probe(spec).map_err(|e| Failure::Usage(e.to_string()))?;
        if let Some(i) = identities.iter().position(|id| *id == probe.identity) {
            return Err(Failure::Usage(format!(
                "device {} is given twice (also as {})",
                spec.path.display(),
                args.devs[i].path.display()
            )));
        }
        if let Some(entry) = walk
            .entries
            .iter()
            .find(|e| (e.meta.dev, e.meta.ino) == probe.identity)
        {
            return Err(Failure::Usage(format!(
                "device {} is also a source (as {}): refusing to back it up onto itself",
                spec.path.display(),
                entry.source.display()
            )));
        }
        identities.push(probe.identity);
        devices.push((
            spec.path.display().to_string(),
            probe.capacity_bytes,
            spec.rate_bytes_per_sec,
        ));
    }
    let (plan, reserve_bytes) = crate::engine::plan_set(&walk.entries, &devices, &args.options())
        .map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(Prepared {
        entries: walk.entries,
        devices,
        plan,
        reserve_bytes,
    })
}

/// JSON-safe form of a stored path (lossy for non-UTF-8 bytes).
pub fn path_text(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}
