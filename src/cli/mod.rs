//! The command line: one file per subcommand. `main` calls `run`; a
//! command returns its `Outcome` (0 success; 1 completed with degraded
//! devices; 3 data not all written, read or restored) or a `Failure`,
//! which `failure::exit_code` maps to 2 (usage error) or 3 (data could not
//! all be written or restored): `failure` is the one place where outcomes
//! and errors become exit codes.
//!
//! Output goes through `outln!` (stdout) and `errln!` (stderr), never
//! `println!`: a reader that goes away (`pbio list | head -1`) ends the
//! output quietly instead of a panic, and the command's exit code stands.
//! Names from a medium or a walked tree are printed through
//! `units::shown_name` (escaped); JSON carries them as they are.

/// `println!` to stdout that never panics: once a write fails, stdout is
/// left alone (`stdout_line`).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::stdout_line(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics (a closed stderr is ignored).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::stderr_line(format_args!($($arg)*))
    };
}

pub mod append;
pub mod backup;
mod backup_report;
pub mod bench;
pub mod changer;
pub mod demo;
pub mod diff;
pub mod failure;
pub mod key;
pub mod list;
mod output;
pub mod plan;
pub mod progress;
pub mod qualify;
pub mod restore;
mod restore_scan;
pub mod resume;
mod resume_span;
pub mod scan;
pub mod scrub;
pub mod span;

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::device::DeviceSpec;
use crate::plan::{Balance, Order, Strategy};
use crate::units::{parse_size, shown_line, shown_path};
pub use failure::{exit_code, Failure, Outcome};
use output::output_complete;
pub use output::{stderr_line, stdout_line, stdout_open, stdout_part};

/// The planner's choices as command-line values: the planner stays free
/// of clap, the words and their help live here.
macro_rules! value_enum {
    ($ty:ty { $($variant:path => $name:literal: $help:literal),+ $(,)? }) => {
        impl clap::ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($variant),+]
            }
            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(match self {
                    $($variant => clap::builder::PossibleValue::new($name).help($help)),+
                })
            }
        }
    };
}

value_enum!(Strategy {
    Strategy::Split => "split": "Claims 10/30: split files larger than T into segments <= T, sort, least filled first",
    Strategy::Fill => "fill": "Claims 19/38: sort, place whole files < T, split large files by the space remaining",
});
value_enum!(Order {
    Order::Desc => "desc": "Largest first (claim 11)",
    Order::Asc => "asc": "Smallest first (claim 12)",
});
value_enum!(Balance {
    Balance::Bytes => "bytes": "Equal bytes per device (the claims)",
    Balance::Time => "time": "Bytes proportional to each device's rate; least predicted finish time first",
});

pub type CliResult = Result<Outcome, Failure>;

#[derive(Parser, Debug)]
#[command(
    name = "pbio",
    version,
    about = "Parallel backup engine: one backup split across many devices, each device readable alone",
    long_about = "Parallel backup engine: one backup split across many devices, each device readable alone.\n\n\
        With no subcommand, `pbio --dev D --dev D... SRC...` runs a backup (the same as `pbio backup`).",
    after_help = "Exit codes: 0 success, 1 degraded (data safe), 2 usage error (nothing written), 3 data not all written or restored.",
    propagate_version = true,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    override_usage = "pbio [OPTIONS] --dev <DEV> --dev <DEV>... <SOURCES>...\n       pbio <COMMAND> [ARGS]"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The backup arguments, when no subcommand is given (their required
    /// arguments are not required when one is: `subcommand_negates_reqs`).
    #[command(flatten)]
    pub backup: backup::BackupArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Back up sources across devices (also what `pbio --dev D... SRC...` does).
    Backup(backup::BackupArgs),
    /// Show the plan (which bytes go to which device) without touching the devices.
    Plan(plan::PlanArgs),
    /// Restore a set (or the part of it the given devices hold).
    Restore(restore::RestoreArgs),
    /// Read every record of a set, checking every CRC and every file digest.
    Verify(restore::VerifyArgs),
    /// Print the catalog of a set from one device.
    List(list::ListArgs),
    /// Compare a set with the live filesystem (like `tar --compare`): exit 0 same, 1 different.
    Diff(diff::DiffArgs),
    /// Recover the records of a device with no usable catalog.
    Scan(scan::ScanArgs),
    /// Read every stripe of a parity set, check every record and the parity against the data; --repair rebuilds what is bad or lost.
    Scrub(scrub::ScrubArgs),
    /// The embedded default: file devices in a temp dir, a generated tree, backup, restore, verify.
    Demo(demo::DemoArgs),
    /// Raw sequential throughput and latency of devices through pbio's own rings (fio-like).
    Bench(bench::BenchArgs),
    Qualify(qualify::QualifyArgs),
    /// Keys that authenticate and encrypt sets (`--key-file FILE` of backup, restore, verify, list).
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Tape libraries: slots, drives, barcodes, moving cartridges, the sets each cartridge holds.
    #[command(subcommand)]
    Changer(changer::ChangerCommand),

    /// Print a shell completion script (e.g. `pbio completions bash > /etc/bash_completion.d/pbio`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout (e.g. `pbio man | man -l -`), or write every page to a directory.
    Man {
        /// A subcommand's page instead of pbio(1) (e.g. `pbio man backup`).
        command: Option<String>,
        /// Write pbio.1 and one page per subcommand (pbio-backup.1, ...) into this directory.
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        dir: Option<PathBuf>,
    },
}

/// What `pbio` alone prints (on stderr, exit 2).
pub const SHORT_USAGE: &str = "\
usage: pbio --dev DEVICE [--dev DEVICE...] SOURCE...     back up (same as `pbio backup`)
       pbio plan|restore|verify|list|diff|scan|scrub|changer|bench|qualify|demo ...  see `pbio help COMMAND`
       pbio --help                                        every option
Try: pbio demo";

fn parse_dev(text: &str) -> Result<DeviceSpec, crate::device::SpecError> {
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

/// `--changer` and `--drive` of the commands that read a set (`list`,
/// `restore`, `verify`, `scan`): a tape library instead of `--dev` (whose
/// argument id is `dev` in each of them).
#[derive(Args, Debug, Default)]
pub struct LibraryArgs {
    /// Read from the cartridges of a tape library (vlib:DIR[,...] or /dev/sgN) instead of --dev: each cartridge is loaded into a free drive when it is read, and unloaded after.
    #[arg(long, value_name = "CHANGER", conflicts_with = "dev")]
    pub changer: Option<String>,
    /// With --changer: a drive to read with (repeat; default: every drive of the library). One drive reads any set.
    #[arg(long = "drive", value_name = "N", requires = "changer")]
    pub drives: Vec<u32>,
}

/// Which set `list`, `restore` and `verify` read, and its key.
#[derive(Args, Debug, Default)]
pub struct OpenArgs {
    /// The set to read (its id in hex, or an unambiguous prefix), when the
    /// devices (tapes with appended sets, `restore --scan`) or the library
    /// hold more than one (without it, `list` of a tape holding several
    /// sets lists them).
    #[arg(long = "set", value_name = "SETID")]
    pub set: Option<String>,
    /// The key the set was written with (`backup --key`): every label's and
    /// the catalog's MAC must match it, or the set is refused before
    /// anything is written. An encrypted set (`backup --encrypt`) needs it,
    /// with `restore --scan` too (each record opens alone; there is no
    /// catalog, so no MAC is checked).
    #[arg(long = "key-file", visible_alias = "key", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The passphrase of a set written with `backup --encrypt
    /// --passphrase-file`: the file's contents (one trailing newline
    /// dropped).
    #[arg(long = "passphrase-file", value_name = "FILE", conflicts_with = "key")]
    pub passphrase_file: Option<PathBuf>,
}

/// Arguments shared by `plan` and `backup`.
#[derive(Args, Debug, Clone)]
pub struct SetArgs {
    /// Files and directory trees to back up.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// A backup device: PATH[,size=N][,rate=N] (repeat for each device).
    #[arg(long = "dev", value_parser = parse_dev, required_unless_present = "changer")]
    pub devs: Vec<DeviceSpec>,
    /// Back up onto the cartridges of a tape library (vlib:DIR[,...] or /dev/sgN): its drives write, scratch cartridges (blank, or any with --force) are loaded as needed, a set larger than a cartridge spans several (README, "Tape libraries").
    #[arg(long, value_name = "CHANGER", conflicts_with = "devs")]
    pub changer: Option<String>,
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
    /// Incremental: store only what changed since an earlier set, given as
    /// any one of its devices or a catalog exported with `pbio list --export`.
    #[arg(long, value_name = "PREVIOUS")]
    pub since: Option<PathBuf>,
    /// Machine-readable output: for `backup` one JSON event per line (start, progress, device_full, device_failed, finished, summary; see the README), for `plan` one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// What to leave out of the sources (`plan` and `backup`; see the README,
/// "Choosing what to back up"). A source named on the command line is
/// always backed up: the rules apply to what is below it.
#[derive(Args, Debug, Clone, Default)]
pub struct SelectArgs {
    /// Leave out what matches GLOB (repeatable). Without a '/' it matches a name at any depth ('*.tmp'); with one it is anchored to the source root ('build/out', '/tmp'); a trailing '/' matches directories only; '**' crosses directories.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Read --exclude patterns from FILE, one a line; blank lines and lines starting with '#' are skipped (repeatable).
    #[arg(long = "exclude-from", value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// Leave out the contents of directories holding a valid CACHEDIR.TAG (kept, with the directory), as tar does.
    #[arg(long)]
    pub exclude_caches: bool,
    /// Leave out every directory that contains NAME, NAME included (tar's --exclude-tag-all; repeatable).
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Do not descend into other filesystems: a mount point is kept as an empty directory (as tar does).
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Leave out regular files larger than SIZE (e.g. 100M, 2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub exclude_larger_than: Option<u64>,
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    parse_size(text)
}

impl SelectArgs {
    /// The compiled selection; a bad pattern or an unreadable
    /// --exclude-from file is a usage error naming it.
    pub fn selection(&self) -> Result<crate::source::select::Selection, Failure> {
        crate::source::select::Selection::new(
            &self.exclude,
            &self.exclude_from,
            self.exclude_caches,
            &self.exclude_if_present,
            self.one_file_system,
            self.exclude_larger_than,
        )
        .map_err(Failure::Select)
    }
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
    if std::env::args_os().len() <= 1 {
        errln!("{SHORT_USAGE}");
        return Failure::CommandLine.code();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are told through clap's error too.
            return if e.use_stderr() {
                Failure::CommandLine.code()
            } else {
                Outcome::Done.code()
            };
        }
    };
    match run(cli) {
        Ok(outcome) => outcome.with_output(output_complete()).code(),
        Err(failure) => {
            // Its lines as made, each made safe (a message may quote a
            // stored name that its maker did not escape).
            let text = failure.to_string();
            let lines: Vec<String> = text.split('\n').map(shown_line).collect();
            errln!("pbio: {}", lines.join("\n"));
            output_complete();
            failure.code()
        }
    }
}

pub fn run(cli: Cli) -> CliResult {
    let command = cli.command.unwrap_or(Command::Backup(cli.backup));
    match command {
        Command::Backup(a) => backup::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Restore(a) => restore::run_restore(a),
        Command::Verify(a) => restore::run_verify(a),
        Command::List(a) => list::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Scan(a) => scan::run(a),
        Command::Scrub(a) => scrub::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Qualify(a) => qualify::run(a),
        Command::Key(k) => key::run(k),
        Command::Changer(c) => changer::run(c),

        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pbio", &mut script);
            write_stdout(&script)
        }
        Command::Man { command, dir } => man(command.as_deref(), dir.as_deref()),
    }
}

/// Write generated text to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> CliResult {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(Outcome::Done),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Outcome::Done),
        Err(e) => Err(Failure::Data(format!("writing to stdout: {e}"))),
    }
}

/// `pbio man [COMMAND] [--dir DIR]`.
fn man(command: Option<&str>, dir: Option<&Path>) -> CliResult {
    let mut cli = Cli::command();
    cli.build();
    if let Some(dir) = dir {
        let pages = std::iter::once(cli.clone()).chain(
            cli.get_subcommands()
                .filter(|c| c.get_name() != "help")
                .cloned(),
        );
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Usage(format!("man --dir {}: {e}", dir.display())))?;
        for page in pages {
            let name = page
                .get_display_name()
                .unwrap_or(page.get_name())
                .to_string();
            let path = dir.join(format!("{name}.1"));
            let mut roff = Vec::new();
            clap_mangen::Man::new(page)
                .render(&mut roff)
                .map_err(|e| Failure::Data(format!("man: {e}")))?;
            std::fs::write(&path, roff)
                .map_err(|e| Failure::Usage(format!("man: writing {}: {e}", path.display())))?;
            outln!("{}", path.display());
        }
        return Ok(Outcome::Done);
    }
    let page = match command {
        None => cli,
        Some(name) => {
            let Some(sub) = cli.find_subcommand(name) else {
                return Err(Failure::Usage(format!(
                    "man: no subcommand '{name}' (known: {})",
                    cli.get_subcommands()
                        .map(|c| c.get_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            // After build(), a subcommand's display name is "pbio-NAME",
            // which clap_mangen uses for the page title.
            sub.clone()
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .map_err(|e| Failure::Data(format!("man: {e}")))?;
    write_stdout(&roff)
}

/// Walk the sources and probe the devices: everything `plan` and `backup`
/// check before any device is written. Errors here are usage errors.
pub struct Prepared {
    /// The walked entries, spilled to a temporary file (`source::spill`).
    pub entries: crate::source::spill::SpilledEntries,
    pub devices: Vec<(String, u64, Option<u64>)>,
    pub plan: crate::plan::Plan,
    /// Media bytes kept free on every device for label and catalog.
    pub reserve_bytes: u64,
    /// With `--since`: what the set refers to instead of storing.
    pub since: Option<crate::source::incremental::Increment>,
    /// What the selection options left out, and why.
    pub excluded: Vec<crate::source::select::Excluded>,
}

pub fn prepare(args: &SetArgs) -> Result<Prepared, Failure> {
    prepare_on(args, None)
}

/// `prepare` over `devices` (name, capacity, rate) when given instead of
/// probing `args.devs`: the cartridges of a library, known by barcode and
/// measured while loaded, not reachable by a path of their own.
pub fn prepare_on(
    args: &SetArgs,
    devices: Option<Vec<(String, u64, Option<u64>)>>,
) -> Result<Prepared, Failure> {
    check_paths(&args.sources, &args.devs)?;
    let selection = args.select.selection()?;
    let walk = crate::source::walk_spilled(&args.sources, &selection).map_err(Failure::Source)?;
    // Sockets inside a tree are not stored: named
    // and skipped (as tar says "socket ignored"). Any other entry that
    // cannot be read stops the backup before a device is written.
    let (skipped, unreadable): (Vec<_>, Vec<_>) = walk
        .errors
        .iter()
        .partition(|e| e.error.kind() == std::io::ErrorKind::Unsupported);
    for e in &skipped {
        errln!("pbio: skipped {}: {}", shown_path(&e.path), e.error);
    }
    if !unreadable.is_empty() {
        let mut msg = format!("{} source entries cannot be read:", unreadable.len());
        for e in &unreadable {
            msg.push_str(&format!("\n  {}: {}", shown_path(&e.path), e.error));
        }
        return Err(Failure::Usage(msg));
    }
    let given = devices.is_some();
    let mut devices = devices.unwrap_or_default();
    let mut identities = Vec::with_capacity(args.devs.len());
    for spec in args.devs.iter().filter(|_| !given) {
        let probe = crate::device::probe(spec).map_err(Failure::DeviceToWrite)?;
        if let Some(i) = identities.iter().position(|id| *id == probe.identity) {
            return Err(Failure::Usage(format!(
                "device {} is given twice (also as {})",
                spec.path.display(),
                args.devs[i].path.display()
            )));
        }
        if let Some(entry) = walk.entries.iter().find(|e| {
            (e.meta.stat.dev, e.meta.stat.ino) == probe.identity
                || (e.is_block_device() && (e.meta.stat.rdev, 0) == probe.identity)
        }) {
            return Err(Failure::Usage(format!(
                "device {} is also a source (as {}): refusing to back it up onto itself",
                spec.path.display(),
                shown_path(&entry.source())
            )));
        }
        identities.push(probe.identity);
        devices.push((
            spec.path.display().to_string(),
            probe.capacity_bytes,
            spec.rate_bytes_per_sec,
        ));
    }
    for entry in walk.entries.iter().filter(|e| e.is_block_device()) {
        for mount_point in crate::source::mounted_read_write(entry.meta.stat.rdev) {
            errln!(
                "pbio: warning: source {} is mounted read-write at {}: its image may be inconsistent; back up a snapshot of it instead (README, \"Consistent images: back up a snapshot\")",
                shown_path(&entry.source()),
                shown_line(&mount_point)
            );
        }
    }
    let since = match &args.since {
        None => None,
        Some(previous) => {
            let same = |dev: &Path| {
                let (a, b) = (std::fs::canonicalize(previous), std::fs::canonicalize(dev));
                matches!((a, b), (Ok(a), Ok(b)) if a == b)
            };
            if let Some(spec) = args.devs.iter().find(|d| same(&d.path)) {
                return Err(Failure::Usage(format!(
                    "--since {} is also a device of this backup ({}): the earlier set would be overwritten; give another device of it, or its exported catalog",
                    previous.display(),
                    spec.path.display()
                )));
            }
            let parent =
                crate::restore::chain::read_catalog_from(previous).map_err(Failure::Since)?;
            Some(crate::source::incremental::since(&walk.entries, &parent))
        }
    };
    let (plan, reserve_bytes) =
        crate::backup::plan_set(&walk.entries, since.as_ref(), &devices, &args.options())
            .map_err(Failure::Plan)?;
    Ok(Prepared {
        excluded: walk.excluded,
        entries: walk.entries,
        devices,
        plan,
        reserve_bytes,
        since,
    })
}

/// Where a device path leads: the canonical path of an existing device,
/// or the canonical parent joined with the name of a file device that does
/// not exist yet. None when even the parent cannot be resolved (the probe
/// reports that with its own message).
fn device_location(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Some(p);
    }
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(parent).ok()?.join(name))
}

/// Device paths against source paths, before anything is walked or opened:
/// a device given twice under different spellings, a block device that is
/// also a source, a file device that is a source or lies inside a source
/// tree (even one that does not exist yet: the backup would contain itself).
pub fn check_paths(sources: &[PathBuf], devs: &[crate::device::DeviceSpec]) -> Result<(), Failure> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for source in sources {
        // `pbio --json list ...`: options before a subcommand make the line a
        // backup (clap's args_conflicts_with_subcommands), and `list` a source.
        if std::fs::symlink_metadata(source).is_err() {
            if let Some(name) = source.to_str() {
                if Cli::command().find_subcommand(name).is_some() {
                    return Err(Failure::Usage(format!(
                        "source '{name}' does not exist; to run `pbio {name}`, put its options after it: pbio {name} [OPTIONS]"
                    )));
                }
            }
        }
    }
    let mut seen: Vec<(PathBuf, &Path)> = Vec::with_capacity(devs.len());
    for spec in devs {
        let Some(location) = device_location(&spec.path) else {
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(l, _)| *l == location) {
            return Err(Failure::Usage(format!(
                "device {} is given twice (also as {})",
                spec.path.display(),
                first.display()
            )));
        }
        seen.push((location.clone(), &spec.path));
        let dev_meta = std::fs::metadata(&location).ok();
        let is_block = dev_meta
            .as_ref()
            .is_some_and(|m| m.file_type().is_block_device());
        for source in sources {
            // The walker never follows a source that is a symlink: it is stored as one.
            let Ok(src_meta) = std::fs::symlink_metadata(source) else {
                continue;
            };
            if src_meta.file_type().is_symlink() {
                continue;
            }
            if is_block {
                let rdev = dev_meta.as_ref().map(|m| m.rdev());
                if src_meta.file_type().is_block_device() && Some(src_meta.rdev()) == rdev {
                    return Err(Failure::Usage(format!(
                        "device {} is also a source (as {}): refusing to back it up onto itself",
                        spec.path.display(),
                        shown_path(source)
                    )));
                }
                continue;
            }
            let Ok(src_canon) = std::fs::canonicalize(source) else {
                continue;
            };
            if location == src_canon {
                return Err(Failure::Usage(format!(
                    "device {} is also a source (as {}): refusing to back it up onto itself",
                    spec.path.display(),
                    shown_path(source)
                )));
            }
            if src_meta.is_dir() && location.starts_with(&src_canon) {
                return Err(Failure::Usage(format!(
                    "device {} is inside source tree {}: the backup would contain itself; put the device file outside the sources",
                    spec.path.display(),
                    shown_path(source)
                )));
            }
        }
    }
    Ok(())
}

/// Show what a device said at open (a fallback it took, its mapping):
/// devices never print, the CLI does.
pub fn show_notes(dev: &dyn crate::device::Device) {
    for note in dev.notes() {
        errln!("pbio: {note}");
    }
}

/// `fields` (a JSON object) with the stored `path` added: `path`, and
/// `path_hex` when it is not UTF-8.
pub fn with_path(path: &[u8], mut fields: serde_json::Value) -> serde_json::Value {
    fields["path"] = path_text(path).into();
    if let Some(hex) = path_hex(path) {
        fields["path_hex"] = hex.into();
    }
    fields
}

/// A segment of a file (planned or in a catalog) as `plan --json` and
/// `list --json` give it.
pub fn segment_json(path: &[u8], offset: u64, length: u64, device: u32) -> serde_json::Value {
    serde_json::json!({
        "path": path_text(path),
        "offset": offset,
        "length": length,
        "device": device,
    })
}

/// JSON-safe form of a stored path: exact for UTF-8 names, lossy
/// (U+FFFD) for others, which `path_hex` then gives exactly.
pub fn path_text(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// The exact bytes of a stored path that is not UTF-8, as lowercase hex
/// (JSON strings cannot hold them); None for a UTF-8 path, whose
/// `path_text` is already exact.
pub fn path_hex(path: &[u8]) -> Option<String> {
    use std::fmt::Write;
    std::str::from_utf8(path).is_err().then(|| {
        path.iter()
            .fold(String::with_capacity(2 * path.len()), |mut out, b| {
                let _ = write!(out, "{b:02x}");
                out
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_paths_are_given_exactly_in_hex() {
        assert_eq!(path_hex("caf\u{e9}/a".as_bytes()), None);
        assert_eq!(path_hex(b"a\xff/b").as_deref(), Some("61ff2f62"));
        assert_eq!(path_text(b"a\xff/b"), "a\u{fffd}/b");
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `pbio --help` and every subcommand's help explain every option.
    #[test]
    fn every_argument_is_documented() {
        let mut cli = Cli::command();
        cli.build();
        let mut missing = Vec::new();
        let mut check = |cmd: &clap::Command, name: &str| {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{name} {id}"));
                }
            }
        };
        check(&cli, "pbio");
        for sub in cli.get_subcommands() {
            check(sub, sub.get_name());
            assert!(sub.get_about().is_some(), "{} has no about", sub.get_name());
        }
        assert!(missing.is_empty(), "undocumented arguments: {missing:?}");
    }

    #[test]
    fn no_subcommand_is_a_backup() {
        let cli = Cli::try_parse_from(["pbio", "--dev", "a.img", "src", "--force"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.backup.set.sources, [PathBuf::from("src")]);
        assert!(cli.backup.force);
        let cli = Cli::try_parse_from(["pbio", "list", "--dev", "a.img"]).unwrap();
        assert!(matches!(cli.command, Some(Command::List(_))));
        // Options before a subcommand: a backup whose first source is "list".
        let cli = Cli::try_parse_from(["pbio", "--json", "list", "--dev", "a.img"]).unwrap();
        assert!(cli.command.is_none());
        assert!(Cli::try_parse_from(["pbio", "--dev", "a.img"]).is_err());
        assert!(Cli::try_parse_from(["pbio", "src"]).is_err());
    }
}
