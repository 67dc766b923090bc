//! `pbio backup`: walk, plan, write through one ring per device, catalog everywhere.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::json;

pub use super::backup_report::{finished_json, outcome, print_report};
use super::progress::{self, DeviceInfo, Output, Reporter};
use super::{prepare, CliResult, Failure, SetArgs};
use crate::backup::{self, BackupConfig};
use crate::device::{self, DeviceSpec, Mode};
use crate::engine::ring::QUEUE_DEPTH_MAX;
use crate::format::SetId;
use crate::media::guard::{self, Policy};
use crate::units::human_bytes;

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub set: SetArgs,
    /// Records in flight per device.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=QUEUE_DEPTH_MAX as i64))]
    pub qd: u16,
    /// Resubmissions of a write that failed with a device error (EIO) before
    /// the device is declared failed and its work goes to the others.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,
    /// Largest tape block (record header + payload) written to a tape; the
    /// drive's own limit applies too. A record's payload on tape is the
    /// largest power of two that fits (512K with the default 1M).
    #[arg(long, default_value = "1M", value_parser = parse_tape_block)]
    pub tape_block: u64,
    /// Records read ahead of each tape's one write (a watermark buffer, so
    /// the drive keeps streaming while sources are slow).
    #[arg(long, default_value_t = backup::TAPE_BUFFER_RECORDS_DEFAULT as u16, value_parser = clap::value_parser!(u16).range(1..=QUEUE_DEPTH_MAX as i64))]
    pub tape_buffer: u16,
    /// Write over whatever the devices hold (a filesystem, partition table, LVM/RAID member, another pbio set). Never overrides a device that is mounted or in use.
    #[arg(long)]
    pub force: bool,
    /// Allow writing over the pbio set with this id (32 hex digits, as `pbio backup` and `pbio list` print it); repeat for several sets.
    #[arg(long = "overwrite", value_name = "SETID", value_parser = guard::parse_set_id)]
    pub overwrite: Vec<SetId>,
    /// Seconds between `--json` progress events.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = progress::parse_interval)]
    pub json_interval: Duration,
    /// Authenticate the set with this key file (at least 32 bytes; make one
    /// with `pbio key new FILE`): every label and the catalog carry a keyed
    /// MAC, and restore, verify and list given the same key refuse a set
    /// whose MACs do not match. With --encrypt, the key that opens the set.
    /// (`--key` is the same option.)
    #[arg(long = "key-file", visible_alias = "key", value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    /// Encrypt the set with AES-256-GCM under a random data key, wrapped
    /// by the key of --key-file: file contents, names and metadata, and
    /// the catalog (README "Encryption"). Restore, verify and list then
    /// need the same --key-file (or --passphrase-file).
    #[arg(long)]
    pub encrypt: bool,
    /// With --encrypt: wrap the set's data key with a key derived from
    /// this file's passphrase (argon2id, its parameters and salt stored in
    /// the labels) instead of a key file.
    #[arg(
        long = "passphrase-file",
        value_name = "FILE",
        conflicts_with = "key",
        requires = "encrypt"
    )]
    pub passphrase_file: Option<std::path::PathBuf>,
    /// Compress each record's payload on worker threads: `zstd` (level 3),
    /// `zstd:LEVEL` (1 to 19; 1 is fastest) or `lz4` (fastest, least
    /// compression). A record that does not shrink is stored as it is.
    #[arg(long, value_name = "CODEC", value_parser = parse_compress)]
    pub compress: Option<crate::format::codec::Compression>,
    /// Reed-Solomon parity records per stripe: any M devices of the set
    /// may be lost afterwards and a restore from the others is still
    /// whole. Needs more than M devices, all disks, files or NBD exports
    /// (not tapes, not pmem); parity takes about M/(N-M) more room.
    #[arg(long, value_name = "M", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=254))]
    pub parity: u8,
    #[command(flatten)]
    pub resume: super::resume::ResumeArgs,
    /// Tapes (and with --changer, cartridges): write the new set after the sets already there, never over one. A tape whose last set is incomplete (an interrupted run) is refused unless --force; a disk is refused.
    #[arg(long)]
    pub append: bool,
    /// Never overwrite a tape or cartridge holding a set younger than this (30d, 12h; units s, m, h, d, w) unless --force; with --changer, scratch cartridges are blank ones and those whose sets are all older.
    #[arg(long, value_name = "DURATION", value_parser = super::append::parse_duration)]
    pub retention: Option<Duration>,
}

fn parse_compress(text: &str) -> Result<crate::format::codec::Compression, String> {
    use crate::format::{codec::Compression, Codec};
    let (name, level) = match text.split_once(':') {
        Some((name, level)) => (name, Some(level)),
        None => (text, None),
    };
    match (name, level) {
        ("lz4", None) => Ok(Compression {
            codec: Codec::Lz4,
            level: 0,
        }),
        ("zstd", None) => Ok(Compression {
            codec: Codec::Zstd,
            level: Compression::ZSTD_LEVEL_DEFAULT,
        }),
        ("zstd", Some(level)) => match level.parse::<i32>() {
            Ok(level) if (1..=19).contains(&level) => Ok(Compression {
                codec: Codec::Zstd,
                level,
            }),
            _ => Err(format!("zstd level '{level}': give 1 to 19")),
        },
        _ => Err(format!("'{text}': give zstd, zstd:LEVEL or lz4")),
    }
}

/// `--parity M`: more devices than M, each one a parity can be read back
/// from at any offset (exit 2 otherwise, before anything is written).
fn check_parity(m: usize, devices: &[Box<dyn device::Device>]) -> Result<(), Failure> {
    if m == 0 {
        return Ok(());
    }
    if m >= devices.len() {
        return Err(Failure::Usage(format!(
            "--parity {m} needs more than {m} devices ({} given)",
            devices.len()
        )));
    }
    if let Some(dev) = devices
        .iter()
        .find(|d| !backup::parity::parity_capable(d.as_ref()))
    {
        return Err(Failure::Usage(format!(
            "--parity: {} is a {:?} device; parity needs devices read at any offset (disks, files, NBD exports)",
            dev.path().display(),
            dev.kind()
        )));
    }
    Ok(())
}

fn parse_tape_block(text: &str) -> Result<u64, String> {
    let n = crate::units::parse_size(text)?;
    let max = crate::format::PAYLOAD_BYTES_MAX as u64 + crate::format::HEADER_BYTES as u64;
    if n < backup::TAPE_BLOCK_BYTES_MIN as u64 || n > max || n % 4096 != 0 {
        return Err(format!(
            "tape block '{text}' must be a multiple of 4K between 8K and 64M+4K"
        ));
    }
    Ok(n)
}

impl BackupArgs {
    /// Backup of `set` with the defaults of every other option.
    pub fn with_defaults(set: SetArgs) -> BackupArgs {
        BackupArgs {
            set,
            qd: 32,
            retries: 2,
            force: false,
            overwrite: Vec::new(),
            json_interval: progress::JSON_INTERVAL_DEFAULT,
            tape_block: crate::backup::TAPE_BLOCK_BYTES_DEFAULT as u64,
            tape_buffer: crate::backup::TAPE_BUFFER_RECORDS_DEFAULT as u16,
            key: None,
            encrypt: false,
            passphrase_file: None,
            compress: None,
            parity: 0,
            resume: Default::default(),
            append: false,
            retention: None,
        }
    }
}

pub use super::append::{check_devices, check_devices_kept};

/// `--balance time`: every device given without `rate=` is measured with
/// a short write probe (backup::probe), and planned at that rate.
fn measure_rates(set: &super::SetArgs, json: bool) -> Result<super::SetArgs, Failure> {
    let mut set = set.clone();
    for spec in set.devs.iter_mut() {
        if spec.rate_bytes_per_sec.is_some() {
            continue;
        }
        let probe = device::probe(spec).map_err(Failure::DeviceToWrite)?;
        if matches!(
            probe.kind,
            device::Kind::Tape | device::Kind::VirtualTape | device::Kind::Pmem
        ) {
            // The planner names the device and asks for rate=.
            continue;
        }
        let dev = device::open(spec, Mode::Write).map_err(Failure::DeviceToWrite)?;
        super::show_notes(dev.as_ref());
        let m =
            crate::measure::probe::write_rate(dev.as_ref(), Default::default()).map_err(|e| {
                Failure::Usage(format!(
                    "device {}: --balance time: measuring its write rate failed: {e} (give rate=)",
                    spec.path.display()
                ))
            })?;
        if !json {
            errln!(
                "pbio: device {}: measured {:.1} MiB/s ({} MiB in {:.2} s) for --balance time",
                spec.path.display(),
                m.bytes_per_sec as f64 / (1 << 20) as f64,
                m.bytes >> 20,
                m.elapsed.as_secs_f64()
            );
        }
        spec.rate_bytes_per_sec = Some(m.bytes_per_sec);
    }
    Ok(set)
}

/// The device paths the backup would create or write must be writable by us.
pub(super) fn check_writable(devs: &[DeviceSpec]) -> Result<(), Failure> {
    use crate::device::Backing;
    use nix::unistd::{access, AccessFlags};
    for spec in devs {
        let dir = match crate::device::backing(&spec.path) {
            // A remote export: the server says whether it may be written.
            Backing::Remote => continue,
            // An emulated tape is written in its directory.
            // A pmem device (`pmem:PATH`) is its file.
            Backing::TapeDirectory(path) | Backing::Mapped(path) => Some(path),
            Backing::Node => None,
        };
        let path = dir.as_ref().unwrap_or(&spec.path);
        let target = if path.exists() {
            path.to_path_buf()
        } else {
            match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => Path::new(".").to_path_buf(),
            }
        };
        if let Err(errno) = access(&target, AccessFlags::W_OK) {
            let what = if target == *path {
                "cannot be written".to_string()
            } else {
                format!("cannot be created in {}", target.display())
            };
            return Err(Failure::Usage(format!(
                "device {}: {what}: {}",
                spec.path.display(),
                std::io::Error::from(errno)
            )));
        }
    }
    Ok(())
}

/// Payload bytes the plan sends to each device: the plan's assigned bytes
/// less the holes of sparse files, which are recorded, not written (the
/// same ranges the ring reads). This is what the progress counters reach.
pub fn payload_per_device(
    entries: &(impl crate::source::spill::EntryList + ?Sized),
    plan: &crate::plan::Plan,
) -> Vec<u64> {
    let mut out = vec![0u64; plan.devices.len()];
    for segment in &plan.segments {
        let (start, end) = (segment.offset, segment.offset + segment.length);
        let bytes = match entries.sparse(segment.file as usize) {
            Some(extents) => extents
                .iter()
                .map(|&(o, l)| (o + l).min(end).saturating_sub(o.max(start)))
                .sum(),
            None => segment.length,
        };
        out[segment.device as usize] += bytes;
    }
    out
}

pub fn run(args: BackupArgs) -> CliResult {
    // Cheap checks first: the key (of every kind of run: a resumed one and
    // one to a library's cartridges too), paths, then what is on the
    // devices, then the walk.
    super::key::check_encrypt(
        args.encrypt,
        args.key.is_some() || args.passphrase_file.is_some(),
    )?;
    let mac_key = super::key::load_optional(args.key.as_deref())?;
    super::key::load_passphrase(args.passphrase_file.as_deref())?;
    if args.resume.resume {
        return super::resume::run(args);
    }
    if args.set.changer.is_some() {
        if args.parity > 0 {
            return Err(Failure::Usage(format!(
                "--parity {} with --changer: parity needs devices read at any offset, and a library's cartridges are tapes",
                args.parity
            )));
        }
        return super::span::run(args);
    }
    let policy = Policy {
        force: args.force,
        overwrite: args.overwrite.clone(),
    };
    super::check_paths(&args.set.sources, &args.set.devs)?;
    // --append writes after the sets on each tape: nothing is overwritten.
    let append_points = super::append::points_or_guard(&args, &policy)?;
    let measured;
    let set = if args.set.balance == crate::plan::Balance::Time {
        measured = measure_rates(&args.set, args.set.json)?;
        &measured
    } else {
        &args.set
    };
    let prepared = prepare(set)?;
    super::key::check_since_encrypted(args.encrypt, prepared.since.as_ref())?;
    check_writable(&set.devs)?;
    if !prepared.excluded.is_empty() {
        // stderr: stdout keeps the summary (or the JSON events) alone.
        errln!(
            "pbio: {} names excluded by the selection options (`pbio plan --verbose` lists them)",
            prepared.excluded.len()
        );
    }
    let mut devices = Vec::with_capacity(set.devs.len());
    // With the rates measured (an NBD device sizes its pipeline from its
    // bandwidth and round trip).
    for (i, spec) in set.devs.iter().enumerate() {
        let mut dev = device::open(spec, Mode::Write).map_err(Failure::DeviceToWrite)?;
        super::show_notes(dev.as_ref());
        if let Some(point) = append_points.get(i) {
            dev = point.view(dev);
        }
        devices.push(dev);
    }
    check_parity(args.parity.into(), &devices)?;
    let (events_tx, events_rx) = crossbeam_channel::unbounded();
    let steal_work = (args.set.balance == crate::plan::Balance::Time)
        .then(|| prepared.devices.iter().map(|d| d.2.unwrap_or(0)).collect());
    let config = backup_config(
        &args,
        prepared.reserve_bytes,
        events_tx,
        mac_key,
        steal_work,
    );
    let payload = payload_per_device(&prepared.entries, &prepared.plan);
    let infos: Vec<DeviceInfo> = prepared
        .devices
        .iter()
        .zip(payload)
        .map(|((path, capacity, rate), planned_bytes)| DeviceInfo {
            path: path.clone(),
            planned_bytes,
            capacity_bytes: *capacity,
            rate_bytes_per_sec: *rate,
        })
        .collect();
    let (input, reporter) = progress::start_run(
        prepared,
        Output::choose(args.set.json, args.json_interval),
        infos,
        &config,
    );
    let progress: Vec<AtomicU64> = devices.iter().map(|_| AtomicU64::new(0)).collect();
    let result = with_progress(reporter, &progress, events_rx, |progress| {
        backup::run_backup(&input, &devices, &config, progress)
    });
    let json = args.set.json;
    match result {
        Err(e) => Err(backup_failed(e, json)),
        Ok(report) => {
            let outcome = outcome(&report);
            if json {
                outln!("{}", finished_json(&report, outcome));
            }
            print_report(&report, json);
            if let Some(since) = &input.since {
                print_increment(since, &input.entries, json);
            }
            Ok(outcome)
        }
    }
}

/// What an incremental set refers to instead of storing (stderr in JSON
/// mode, which keeps one summary object on stdout).
fn print_increment(
    since: &crate::source::incremental::Increment,
    entries: &crate::source::spill::SpilledEntries,
    as_json: bool,
) {
    let line = format!(
        "incremental over set {} ({} earlier sets in the chain): {} unchanged files ({}) referenced, {} paths removed, {} renamed",
        since.parent(),
        since.ancestors.len(),
        since.referenced_files(),
        human_bytes(since.referenced_bytes(entries)),
        since.removed.len(),
        since.renamed.len()
    );
    if as_json {
        errln!("pbio: {line}");
    } else {
        outln!("{line}");
    }
}

/// Run `work` (a backup's data path, given the per-device progress
/// counters) while a thread shows its progress and events through
/// `reporter`; the thread stops when `work` returns. How devices ended is
/// the report's to say; the reporter only showed it.
pub(super) fn with_progress<T>(
    reporter: Reporter<std::io::Stdout>,
    progress: &[AtomicU64],
    events: crossbeam_channel::Receiver<backup::Event>,
    work: impl FnOnce(&[AtomicU64]) -> T,
) -> T {
    std::thread::scope(|scope| {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let shown = std::thread::Builder::new()
            .name("pbio-progress".into())
            .spawn_scoped(scope, move || {
                progress::run(reporter, progress, events, stop_rx)
            })
            .expect("spawn progress thread");
        let result = work(progress);
        drop(stop_tx);
        let _shown = shown.join().expect("progress thread panicked");
        result
    })
}

/// A backup that failed as a whole: the failure (its exit code), and with
/// `--json` the final event saying so.
pub(super) fn backup_failed(e: backup::BackupError, json: bool) -> Failure {
    let error = e.to_string();
    let failure = Failure::Backup(e);
    if json {
        outln!(
            "{}",
            json!({"event": "finished", "ok": false, "exit_code": failure.code(), "error": error})
        );
    }
    failure
}

/// The run's configuration from the command line: a new set id, the
/// options' sizes and depths, the event sink and the key.
pub(super) fn backup_config(
    args: &BackupArgs,
    reserve_bytes: u64,
    events: crossbeam_channel::Sender<backup::Event>,
    mac_key: Option<crate::format::MacKey>,
    steal_work: Option<Vec<u64>>,
) -> BackupConfig {
    let set_id = crate::media::new_set_id();
    let encryption = args.encrypt.then(|| super::key::new_set_encryption(set_id));
    // A sealed set's MACs are keyed by its data key (a key change keeps them).
    let mac_key = encryption
        .as_ref()
        .map(|e| e.data_key.mac_key())
        .or(mac_key);
    BackupConfig {
        set_id,
        created_unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        chunk_bytes: args.set.chunk as u32,
        queue_depth: args.qd as usize,
        tape_block_bytes: args.tape_block as u32,
        tape_buffer_records: args.tape_buffer as usize,
        reserve_bytes,
        write_retries: args.retries,
        events: Some(events),
        steal_work,
        mac_key,
        compression: args.compress,
        encryption,
        parity: args.parity.into(),
        cpu_wait_us: Default::default(),
    }
}
