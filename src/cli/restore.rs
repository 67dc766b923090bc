//! `pbio restore` and `pbio verify`.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{parse_dev, path_text, CliResult, Failure, Outcome};
use crate::device::DeviceSpec;
use crate::restore::{self, Action, Chain, Problem, Report};
use crate::units::{human_bytes, shown_line, shown_name};

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Devices of the set, in any order; any subset restores what it holds.
    /// For an incremental set, the devices of the whole chain (the full set
    /// and the increments), in any order: the newest set is restored.
    #[arg(id = "dev", long = "dev", value_name = "DEVS", value_parser = parse_dev, required_unless_present = "changer")]
    pub devs: Vec<DeviceSpec>,
    #[command(flatten)]
    pub library: super::LibraryArgs,
    /// Directory to restore into (created if missing); or a block device,
    /// which receives the one block device (or image file) of the set
    /// selected with --only, from offset 0 (needs --force; a mounted or
    /// busy device is refused).
    #[arg(long)]
    pub to: PathBuf,
    /// Allow --to to name a block device: its contents are overwritten.
    #[arg(long)]
    pub force: bool,
    /// Restore only what matches GLOB (repeatable), and everything under a
    /// directory matched. Matched against the stored paths (`pbio list`),
    /// gitignore-like as backup's --exclude: without a '/' it matches a
    /// name at any depth ('*.conf'); with one it is anchored at the top
    /// ('home/ann/*.txt', '/etc'); a trailing '/' matches directories only;
    /// '**' crosses directories. An exact stored path always matches
    /// itself. A GLOB that matches nothing is an error (exit 2, nothing
    /// written) unless --allow-no-match.
    #[arg(long, value_name = "GLOB")]
    pub only: Vec<PathBuf>,
    /// An --only GLOB that matches nothing is not an error: the rest is restored.
    #[arg(long, requires = "only")]
    pub allow_no_match: bool,
    /// Drop N leading components of every stored path (as tar does):
    /// 'home/ann/x' restores as 'ann/x' with 1; entries with N components
    /// or fewer are skipped. --only matches the paths before stripping.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub strip_components: usize,
    /// Leave every name that already exists in --to as it is; each is
    /// listed ("kept: NAME: exists") and the restore still succeeds
    /// (exit 0). An existing directory is restored into, its own mode,
    /// owner and mtime left alone.
    #[arg(long, conflicts_with = "overwrite_newer_only")]
    pub keep_old_files: bool,
    /// Replace an existing name only when the set's mtime is newer than its
    /// own; the others are kept and listed (tar's --keep-newer-files).
    /// Existing directories are restored into, their metadata left alone.
    #[arg(long)]
    pub overwrite_newer_only: bool,
    /// No catalog needed: read every record of the devices and restore each
    /// regular file that is complete on them (after a crash or a lost
    /// catalog). It takes none of the selection options (--only,
    /// --strip-components, --keep-old-files, --overwrite-newer-only), nor
    /// --changer (`pbio scan --changer` reads a library's cartridges).
    #[arg(
        long,
        conflicts_with_all = ["only", "strip_components", "keep_old_files", "overwrite_newer_only", "changer"]
    )]
    pub scan: bool,
    /// A file that cannot be restored completely (damaged or missing
    /// records, a digest mismatch) is kept as NAME.pbio-partial instead of
    /// being removed.
    #[arg(long)]
    pub keep_partial: bool,
    /// Machine-readable report: one JSON summary object (files, bytes, missing files with their byte ranges and devices, kept: existing names left with why, errors, ok).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub open: super::OpenArgs,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Devices of the set, in any order; any subset verifies what it holds.
    /// Devices of several sets of one chain (a full set and its increments)
    /// verify the newest set, each file where its data is.
    #[arg(id = "dev", long = "dev", value_name = "DEVS", value_parser = parse_dev, required_unless_present = "changer")]
    pub devs: Vec<DeviceSpec>,
    #[command(flatten)]
    pub library: super::LibraryArgs,
    /// Machine-readable report: one JSON summary object (files, bytes, missing byte ranges, errors, ok).
    #[arg(long)]
    pub json: bool,
    /// No catalog needed: read every record of the devices (rebuilding
    /// from parity what a `--parity` set's devices lack) and check each
    /// regular file is complete on them, as `restore --scan` would
    /// restore it; nothing is written.
    #[arg(long, conflicts_with = "changer")]
    pub scan: bool,
    #[command(flatten)]
    pub open: super::OpenArgs,
}

/// Open the devices as one chain of sets, checking their MACs with the
/// key of `--key` (a set with MACs given without it is restored, and said
/// to be unchecked).
pub(super) fn open(devs: &[DeviceSpec], key: Option<&std::path::Path>) -> Result<Chain, Failure> {
    open_from(devs, None, &[], None, key)
}

/// The chain `restore` and `verify` read: `--dev`, or the cartridges of
/// `--changer`, with `--set`, `--key-file` and `--passphrase-file`.
fn open_chain(
    devs: &[DeviceSpec],
    library: &super::LibraryArgs,
    open: &super::OpenArgs,
) -> Result<Chain, Failure> {
    super::key::load_passphrase(open.passphrase_file.as_deref())?;
    open_from(
        devs,
        library.changer.as_deref(),
        &library.drives,
        open.set.as_deref(),
        open.key.as_deref(),
    )
}

/// `open`, or with `--changer` the cartridges of the library that hold a
/// set, read through its drives (`drives`: the ones to use, empty: all).
pub(super) fn open_from(
    devs: &[DeviceSpec],
    changer: Option<&str>,
    drives: &[u32],
    set: Option<&str>,
    key: Option<&std::path::Path>,
) -> Result<Chain, Failure> {
    let key = super::key::load_optional(key)?;
    let devices = match changer {
        None => Opening::Devices(open_devs(devs)?),
        Some(text) => Opening::Cartridges(super::span::library_devices(text, drives, set)?),
    };
    chain_of(devices, changer.is_none().then_some(set), key.as_ref())
}

/// What a chain is opened from.
enum Opening {
    /// Devices (`--dev`), their labels read first.
    Devices(Vec<Box<dyn crate::device::Device>>),
    /// The cartridges of one set in a library (`--changer`), each loaded
    /// once: `restore::open_cartridges`.
    Cartridges(Vec<crate::restore::Cartridge>),
}

/// The devices `--dev` names, opened for reading.
fn open_devs(devs: &[DeviceSpec]) -> Result<Vec<Box<dyn crate::device::Device>>, Failure> {
    devs.iter()
        .map(|spec| crate::device::open(spec, crate::device::Mode::Read))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Failure::Restore {
            doing: "",
            error: error.into(),
        })
}

/// The chain of sets on `devices` (`tapes_set`: `--dev` devices, whose
/// tapes may hold several sets, and the `--set` chosen among them).
fn chain_of(
    devices: Opening,
    tapes_set: Option<Option<&str>>,
    key: Option<&crate::format::MacKey>,
) -> Result<Chain, Failure> {
    let opened = match (devices, tapes_set) {
        (Opening::Devices(devices), Some(set)) => {
            restore::open_devices(super::append::choose_on_tapes(devices, set)?, key)
        }
        (Opening::Devices(devices), None) => restore::open_devices(devices, key),
        (Opening::Cartridges(cartridges), _) => restore::open_cartridges(cartridges, key),
    };
    let chain = opened
        .and_then(Chain::new)
        .map_err(|error| Failure::Restore { doing: "", error })?;
    for set in &chain.sets {
        set.devices
            .iter()
            .for_each(|(dev, _)| super::show_notes(dev.as_ref()));
    }
    if chain
        .sets
        .iter()
        .any(|s| super::key::macs_unchecked(key.is_some(), s.keyed, &s.devices[0].1))
    {
        super::key::say_macs_unchecked();
    }
    Ok(chain)
}

pub fn run_restore(args: RestoreArgs) -> CliResult {
    if args.scan {
        let how = (args.keep_partial, args.json);
        return super::restore_scan::run(&args.devs, Some(&args.to), &args.open, how);
    }
    let only: Vec<Vec<u8>> = args
        .only
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    let choice = restore::Choice {
        only: restore::Only::new(&only).map_err(Failure::Select)?,
        strip_components: args.strip_components,
        existing: if args.keep_old_files {
            restore::Existing::Keep
        } else if args.overwrite_newer_only {
            restore::Existing::ReplaceOlder
        } else {
            restore::Existing::Replace
        },
        allow_no_match: args.allow_no_match,
    };
    let is_block_device = std::fs::metadata(&args.to)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    let failed = |error| match error {
        // Nothing was written: bad input, not lost data.
        restore::RestoreError::NoMatch { .. } => Failure::Usage(error.to_string()),
        error => Failure::Restore {
            doing: "restore failed: ",
            error,
        },
    };
    let whole_set = args.library.changer.is_none()
        && args.open.set.is_none()
        && only.is_empty()
        && choice.strip_components == 0
        && choice.existing == restore::Existing::Replace
        && !is_block_device;
    let chain = if whole_set {
        // The whole of one set of disks into a directory: its catalog read
        // entry by entry (issue 23); anything else as `open_chain` opens it.
        super::key::load_passphrase(args.open.passphrase_file.as_deref())?;
        let key = super::key::load_optional(args.open.key.as_deref())?;
        let devices = open_devs(&args.devs)?;
        let streamed =
            restore::restore_streamed(devices, key.as_ref(), &args.to, args.keep_partial);
        match streamed.map_err(failed)? {
            restore::Streamed::Done(restored) => {
                let (chain, report) = streamed_chain(restored, key.is_some())?;
                return Ok(print(&chain, &report, "restored", args.json));
            }
            restore::Streamed::Other(devices) => {
                chain_of(Opening::Devices(devices), Some(None), key.as_ref())?
            }
        }
    } else {
        open_chain(&args.devs, &args.library, &args.open)?
    };
    let report = if is_block_device {
        let (target, file) = device_target(&args, &chain, &choice.only)?;
        restore::run_chain(
            &chain,
            Action::RestoreToDevice {
                target: &target,
                file,
            },
            &[],
        )
    } else {
        restore::run_chain_with(
            &chain,
            Action::Restore {
                to: &args.to,
                keep_partial: args.keep_partial,
            },
            &choice,
        )
    }
    .map_err(failed)?;
    Ok(print(&chain, &report, "restored", args.json))
}

/// `restore --to /dev/X`: the one entry with data that is selected, and
/// the device opened exclusively, after the checks (usage errors, nothing
/// written): --force given, the device not mounted or busy, large enough.
fn device_target(
    args: &RestoreArgs,
    chain: &Chain,
    only: &restore::Only,
) -> Result<(std::fs::File, u32), Failure> {
    let to = args.to.display();
    let catalog = &chain.tip().catalog;
    let (taken, _) = only.choose(&catalog.files);
    let candidates: Vec<u32> = catalog
        .files
        .iter()
        .enumerate()
        .filter(|&(i, f)| f.kind.has_data() && taken[i])
        .map(|(i, _)| i as u32)
        .collect();
    let file = match candidates[..] {
        [file] => file,
        [] => {
            return Err(Failure::Usage(format!(
                "--to {to} is a block device, but the set holds no selected block device or file to write onto it"
            )))
        }
        _ => {
            let names: Vec<String> = candidates
                .iter()
                .take(10)
                .map(|&i| shown_name(&catalog.files[i as usize].path))
                .collect();
            return Err(Failure::Usage(format!(
                "--to {to} is a block device: choose the one entry to write onto it with --only (candidates: {}{})",
                names.join(", "),
                if candidates.len() > 10 { ", ..." } else { "" }
            )));
        }
    };
    if !args.force {
        return Err(Failure::Usage(format!(
            "--to {to} is a block device: restoring overwrites it; add --force to do so"
        )));
    }
    let rdev = std::fs::metadata(&args.to).map(|m| m.rdev()).unwrap_or(0);
    let mounts = crate::source::mounted(rdev);
    if !mounts.is_empty() {
        return Err(Failure::Usage(format!(
            "--to {to} is mounted at {}: refusing to overwrite it",
            mounts.join(", ")
        )));
    }
    // O_EXCL on a block device: refused while it is mounted or claimed
    // (md, device-mapper, swap, another exclusive opener).
    let target = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(&args.to)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                Failure::Usage(format!(
                    "--to {to} is in use (mounted, or held by another program): refusing to overwrite it"
                ))
            } else {
                Failure::Usage(format!("--to {to}: {e}"))
            }
        })?;
    let capacity = crate::device::block::size_bytes(&target)
        .map_err(|e| Failure::Usage(format!("--to {to}: BLKGETSIZE64: {e}")))?;
    let entry = &catalog.files[file as usize];
    if capacity < entry.size_bytes {
        return Err(Failure::Usage(format!(
            "--to {to} holds {capacity} bytes, {} needs {}",
            shown_name(&entry.path),
            entry.size_bytes
        )));
    }
    if capacity > entry.size_bytes {
        errln!(
            "pbio: {} is {} bytes, {to} {capacity}: the last {} bytes of the device are left as they are",
            shown_name(&entry.path),
            entry.size_bytes,
            capacity - entry.size_bytes
        );
    }
    Ok((target, file))
}

/// `verify` of a chain opened with its catalogs decoded: every file read
/// and checked, then every device's own catalog compared.
fn verify_chain(chain: Chain) -> Result<(Chain, Report), Failure> {
    let mut report =
        restore::run_chain(&chain, Action::Verify, &[]).map_err(|error| Failure::Restore {
            doing: "verify failed: ",
            error,
        })?;
    // Every device's own catalog must read back and agree, not only the
    // one used (a library's cartridges: compared while loaded for their
    // records, by `run_chain`).
    for set in chain.sets.iter().filter(|s| s.unread.is_empty()) {
        for (dev, label) in &set.devices {
            if label.state != crate::format::LabelState::Complete {
                continue;
            }
            let read = dev
                .attach()
                .map_err(|error| crate::media::MediaError::Io {
                    device: dev.path().display().to_string(),
                    op: "load the cartridge",
                    offset: 0,
                    error,
                })
                .and_then(|()| crate::media::read_catalog(dev.as_ref(), label));
            dev.detach();
            match read {
                Ok(read) if read.catalog == set.catalog && read.digest == label.catalog_digest => {}
                Ok(_) => report.errors.push(Problem::CatalogDiffers {
                    device: dev.path().display().to_string(),
                }),
                Err(e) => report.errors.push(Problem::Catalog(e)),
            }
        }
    }
    Ok((chain, report))
}

/// The chain of the one set a streamed verify or restore read (its
/// devices' notes shown, a note when it is authenticated and no key was
/// given), and its report.
fn streamed_chain(
    done: Box<(restore::OpenSet, Report)>,
    key_given: bool,
) -> Result<(Chain, Report), Failure> {
    let (set, report) = *done;
    set.devices
        .iter()
        .for_each(|(dev, _)| super::show_notes(dev.as_ref()));
    if super::key::macs_unchecked(key_given, set.keyed, &set.devices[0].1) {
        super::key::say_macs_unchecked();
    }
    let chain = Chain::new(vec![set]).map_err(|error| Failure::Restore { doing: "", error })?;
    Ok((chain, report))
}

pub fn run_verify(args: VerifyArgs) -> CliResult {
    if args.scan {
        return super::restore_scan::run(&args.devs, None, &args.open, (false, args.json));
    }
    let (chain, mut report) = if args.library.changer.is_none() && args.open.set.is_none() {
        // One set of disks: its catalog read entry by entry (issue 23);
        // anything else as `open_chain` opens it.
        super::key::load_passphrase(args.open.passphrase_file.as_deref())?;
        let key = super::key::load_optional(args.open.key.as_deref())?;
        let failed = |error| Failure::Restore { doing: "", error };
        match restore::verify_streamed(open_devs(&args.devs)?, key.as_ref()).map_err(failed)? {
            restore::Streamed::Done(verified) => streamed_chain(verified, key.is_some())?,
            restore::Streamed::Other(devices) => verify_chain(chain_of(
                Opening::Devices(devices),
                Some(None),
                key.as_ref(),
            )?)?,
        }
    } else {
        verify_chain(open_chain(&args.devs, &args.library, &args.open)?)?
    };
    // Data unchanged since an earlier set none of whose devices was given
    // is not checked, and not an error.
    let (elsewhere, missing): (Vec<_>, Vec<_>) =
        report.missing.drain(..).partition(|m| !m.set_given);
    report.missing = missing;
    for m in &elsewhere {
        errln!(
            "not verified: {}: its data is in set {} (no device of it given)",
            shown_name(&m.path),
            m.set_id
        );
    }
    Ok(print(&chain, &report, "verified", args.json))
}

fn print(chain: &Chain, report: &Report, verb: &str, as_json: bool) -> Outcome {
    let set = chain.tip();
    for why in chain.sets.iter().flat_map(|s| &s.unreadable) {
        let why = why.to_string();
        errln!("pbio: left out an unreadable device: {}", shown_line(&why));
    }
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let code = if report.ok() {
        Outcome::Done
    } else {
        Outcome::Incomplete
    };
    if as_json {
        let missing: Vec<_> = report
            .missing
            .iter()
            .map(|m| {
                json!({
                    "path": path_text(&m.path),
                    "set_id": m.set_id.to_string(),
                    "set_given": m.set_given,
                    "ranges": m.ranges.iter().map(|&(o, l, d)| json!({"offset": o, "length": l, "device": (d != restore::NOWHERE).then_some(d)})).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!(
            "{}",
            json!({
                "event": "summary",
                "set_id": set.catalog.set_id.to_string(),
                "sets": chain.sets.iter().map(|s| s.catalog.set_id.to_string()).collect::<Vec<_>>(),
                "files": report.files_restored,
                "payload_bytes": report.payload_bytes,
                "records": report.records,
                "seconds": secs,
                "mib_per_sec": report.payload_bytes as f64 / (1 << 20) as f64 / secs,
                "missing": missing,
                "kept": report.kept.iter().map(|k| json!({
                    "path": path_text(&k.path), "why": k.why.code(),
                })).collect::<Vec<_>>(),
                "errors": report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "warnings": report.warnings,
                "rebuild": rebuild_json(&report.rebuild),
                "ok": report.ok(),
            })
        );
        return code;
    }
    let given: usize = chain.sets.iter().map(|s| s.devices.len()).sum();
    let of: usize = chain.sets.iter().map(|s| s.catalog.devices.len()).sum();
    outln!(
        "set {}: {verb} {} entries, {} in {} records, {:.2} s ({:.1} MiB/s), from {given} of {of} devices{}",
        set.catalog.set_id,
        report.files_restored,
        human_bytes(report.payload_bytes),
        report.records,
        secs,
        report.payload_bytes as f64 / (1 << 20) as f64 / secs,
        if chain.sets.len() > 1 {
            format!(" of {} sets", chain.sets.len())
        } else {
            String::new()
        }
    );
    say_rebuild(&report.rebuild);
    if chain.sets.len() > 1 {
        outln!(
            "  chain: {}",
            chain
                .sets
                .iter()
                .map(|s| restore::chain::describe(&s.catalog))
                .collect::<Vec<_>>()
                .join("; ")
        );
        for unused in chain.unused() {
            outln!(
                "  set {} was not needed (none of the restored data is in it)",
                unused
            );
        }
    }
    for m in &report.missing {
        if !m.set_given {
            errln!(
                "missing: {}: its data is in set {} (an earlier set of the chain): give that set's devices too",
                shown_name(&m.path),
                m.set_id
            );
            continue;
        }
        let devices = chain
            .sets
            .iter()
            .find(|s| s.catalog.set_id == m.set_id)
            .map(|s| &s.catalog.devices[..])
            .unwrap_or(&[]);
        let ranges: Vec<String> = m
            .ranges
            .iter()
            .map(|&(o, l, d)| match devices.get(d as usize) {
                Some(dev) => format!("{o}..{} on device {d} ({})", o + l, shown_name(&dev.path)),
                None => format!(
                    "{o}..{} on no device (not written: the set is incomplete)",
                    o + l
                ),
            })
            .collect();
        errln!("missing: {}: {}", shown_name(&m.path), ranges.join(", "));
    }
    for k in &report.kept {
        errln!("kept: {}: {}", shown_name(&k.path), k.why);
    }
    if !report.kept.is_empty() {
        outln!(
            "  kept {} existing entries as they are (listed on stderr)",
            report.kept.len()
        );
    }
    // Messages made by restore, which may quote stored names.
    for e in &report.errors {
        errln!("error: {}", shown_line(&e.to_string()));
    }
    for w in &report.warnings {
        errln!("warning: {}", shown_line(w));
    }
    if !report.missing.is_empty() {
        errln!(
            "{} files are incomplete on the given devices",
            report.missing.len()
        );
    }
    code
}

/// The `rebuild` object of a `--json` summary (a device's path null when
/// it is not known: a scan reads no catalog).
pub(super) fn rebuild_json(rebuild: &restore::RebuildSummary) -> serde_json::Value {
    json!({
        "missing_devices": rebuild.missing_devices.iter().map(|(i, p)| json!({
            "index": i, "path": (!p.is_empty()).then(|| path_text(p)),
        })).collect::<Vec<_>>(),
        "records": rebuild.records,
        "bytes": rebuild.bytes,
        "damaged": rebuild.damaged,
    })
}

/// Say which devices were missing and what was rebuilt from parity.
pub(super) fn say_rebuild(rebuild: &restore::RebuildSummary) {
    if !rebuild.missing_devices.is_empty() {
        let missing: Vec<String> = rebuild
            .missing_devices
            .iter()
            .map(|(i, p)| match p.is_empty() {
                true => i.to_string(),
                false => format!("{i} ({})", shown_name(p)),
            })
            .collect();
        outln!(
            "  parity: devices missing: {}; rebuilt {} records, {}",
            missing.join(", "),
            rebuild.records,
            human_bytes(rebuild.bytes)
        );
    } else if rebuild.records > 0 {
        outln!(
            "  parity: rebuilt {} damaged records, {}",
            rebuild.records,
            human_bytes(rebuild.bytes)
        );
    }
    for d in &rebuild.damaged {
        errln!(
            "warning: {} (the stripe was rebuilt from its other records)",
            shown_line(d)
        );
    }
}
