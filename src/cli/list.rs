//! `pbio list`: the catalog of a set, from one device.

use clap::Args;
use serde_json::json;

use super::{parse_dev, path_hex, path_text, CliResult, Failure, Outcome};
use crate::device::DeviceSpec;
use crate::format::{FileKind, SetId};
use crate::units::shown_name;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// One device of the set (every device carries the whole catalog).
    #[arg(long = "dev", value_parser = parse_dev, required_unless_present = "changer")]
    pub dev: Option<DeviceSpec>,
    /// The set on the cartridges of a tape library (vlib:DIR[,...] or /dev/sgN) instead of --dev: its cartridges are loaded in turn to find the set and its catalog, and unloaded after.
    #[arg(long, value_name = "CHANGER", conflicts_with = "dev")]
    pub changer: Option<String>,
    /// With --changer: a drive to read with (repeat; default: every drive).
    #[arg(long = "drive", value_name = "N", requires = "changer")]
    pub drives: Vec<u32>,
    /// With --changer: the set to list (its id in hex, or an unambiguous prefix), when the library holds more than one.
    #[arg(long = "set", value_name = "SETID", requires = "changer")]
    pub set: Option<String>,
    /// Also print every segment (file range, device, position).
    #[arg(long)]
    pub segments: bool,
    /// Also write the encoded catalog to this file, for a later
    /// `pbio backup --since FILE` without the set's devices.
    #[arg(long, value_name = "FILE")]
    pub export: Option<std::path::PathBuf>,
    /// Machine-readable catalog: one JSON object (set id, devices, files, segments).
    #[arg(long)]
    pub json: bool,
    /// The key the set was written with (`backup --key`): the label's and
    /// the catalog's MAC must match it.
    #[arg(long = "key-file", visible_alias = "key", value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    /// The passphrase of a set written with `backup --encrypt
    /// --passphrase-file`: the file's contents (one trailing newline
    /// dropped).
    #[arg(long = "passphrase-file", value_name = "FILE", conflicts_with = "key")]
    pub passphrase_file: Option<std::path::PathBuf>,
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Regular => "file",
        FileKind::Directory => "dir",
        FileKind::Symlink => "symlink",
        FileKind::HardLink => "hardlink",
        FileKind::BlockDevice => "blockdev",
        FileKind::Fifo => "fifo",
        FileKind::CharDevice => "chardev",
        FileKind::BlockNode => "blocknod",
    }
}

/// The one set a library holds (several: refused, naming them).
fn one_set(
    mut sets: Vec<crate::restore::OpenSet>,
) -> Result<crate::restore::OpenSet, crate::restore::RestoreError> {
    if sets.len() > 1 {
        let (a, b) = (&sets[0], &sets[1]);
        return Err(crate::restore::RestoreError::DifferentSets {
            device: a.devices[0].0.path().display().to_string(),
            other: b.devices[0].0.path().display().to_string(),
            set: a.catalog.set_id.to_string(),
            other_set: b.catalog.set_id.to_string(),
        });
    }
    Ok(sets.remove(0))
}

pub fn run(args: ListArgs) -> CliResult {
    let key = super::key::load_optional(args.key.as_deref())?;
    super::key::load_passphrase(args.passphrase_file.as_deref())?;
    let set = match (&args.dev, &args.changer) {
        (Some(dev), _) => crate::restore::open_set(std::slice::from_ref(dev), key.as_ref()),
        (None, Some(changer)) => {
            let devices = super::span::library_devices(changer, &args.drives, args.set.as_deref())?;
            crate::restore::open_devices(devices, key.as_ref()).and_then(one_set)
        }
        (None, None) => unreachable!("clap requires --dev or --changer"),
    }
    .map_err(|error| Failure::Restore { doing: "", error })?;
    set.devices
        .iter()
        .for_each(|(dev, _)| super::show_notes(dev.as_ref()));
    if key.is_none() && set.keyed {
        errln!("pbio: set is authenticated; give --key to check it");
    }
    let (_, label) = &set.devices[0];
    let c = &set.catalog;
    if let Some(path) = &args.export {
        std::fs::write(path, c.encode())
            .map_err(|e| Failure::Usage(format!("--export {}: {e}", path.display())))?;
    }
    let origin_set = |f: &crate::format::CatalogFile| {
        (f.origin != 0).then(|| c.ancestors[f.origin as usize - 1].to_string())
    };
    if args.json {
        let files: Vec<_> = c
            .files
            .iter()
            .map(|f| {
                let mut file = json!({
                    "path": path_text(&f.path),
                    "kind": kind_name(f.kind),
                    "mode": f.mode,
                    "uid": f.uid,
                    "gid": f.gid,
                    "mtime_sec": f.mtime_sec,
                    "size_bytes": f.size_bytes,
                    // Set holding the data of a file unchanged since an earlier set.
                    "data_in_set": origin_set(f),
                });
                if let Some(hex) = path_hex(&f.path) {
                    file["path_hex"] = hex.into();
                }
                if f.kind.has_rdev() {
                    file["rdev_major"] = libc::major(f.rdev).into();
                    file["rdev_minor"] = libc::minor(f.rdev).into();
                }
                if f.flags != 0 {
                    file["flags"] = f.flags.into();
                }
                if !f.xattrs.is_empty() {
                    file["xattrs"] = f
                        .xattrs
                        .iter()
                        .map(|x| path_text(&x.name))
                        .collect::<Vec<_>>()
                        .into();
                }
                file
            })
            .collect();
        let segments: Vec<_> = c
            .segments
            .iter()
            .map(|s| {
                json!({
                    "path": path_text(&c.files[s.file_id as usize].path),
                    "offset": s.offset, "length": s.length, "device": s.device,
                    "position": s.position, "records": s.records,
                })
            })
            .collect();
        outln!(
            "{}",
            json!({
                "set_id": c.set_id.to_string(),
                "device_index": label.device_index,
                "device_count": label.device_count,
                "chunk_bytes": c.chunk_bytes,
                "devices": c.devices.iter().map(|d| json!({"path": path_text(&d.path), "capacity_bytes": d.capacity_bytes})).collect::<Vec<_>>(),
                "files": files,
                "segments": segments,
                "ancestors": c.ancestors.iter().map(SetId::to_string).collect::<Vec<_>>(),
                "removed": c.removed.iter().map(|p| path_text(p)).collect::<Vec<_>>(),
                "renamed": c.renamed.iter().map(|r| json!({
                    "path": path_text(&c.files[r.file_id as usize].path),
                    "from": path_text(&r.from),
                })).collect::<Vec<_>>(),
            })
        );
        return Ok(Outcome::Done);
    }
    outln!(
        "{} (device {} of {}), {} entries, {} segments",
        crate::restore::chain::describe(c),
        label.device_index,
        label.device_count,
        c.files.len(),
        c.segments.len()
    );
    if let Some(parent) = c.ancestors.first() {
        outln!(
            "incremental over set {}: {} unchanged files referenced, {} paths removed, {} renamed",
            parent,
            c.files.iter().filter(|f| f.origin != 0).count(),
            c.removed.len(),
            c.renamed.len()
        );
    }
    for f in &c.files {
        if !super::stdout_open() {
            break; // the reader went away (`| head`)
        }
        let extra = match f.kind {
            FileKind::Symlink => format!(" -> {}", shown_name(&f.link_target)),
            FileKind::HardLink => {
                format!(" => {}", shown_name(&c.files[f.hardlink_to as usize].path))
            }
            FileKind::CharDevice | FileKind::BlockNode => {
                format!(" (device {}:{})", libc::major(f.rdev), libc::minor(f.rdev))
            }
            _ => match origin_set(f) {
                Some(set) => format!(" (unchanged, data in set {set})"),
                None => String::new(),
            },
        };
        outln!(
            "{:<8} {:06o} {:>5}:{:<5} {:>14} {}{}",
            kind_name(f.kind),
            f.mode & 0o7777,
            f.uid,
            f.gid,
            f.size_bytes,
            shown_name(&f.path),
            extra
        );
    }
    for path in &c.removed {
        outln!("removed  {}", shown_name(path));
    }
    for r in &c.renamed {
        outln!(
            "renamed  {} -> {}",
            shown_name(&r.from),
            shown_name(&c.files[r.file_id as usize].path)
        );
    }
    if args.segments {
        for s in &c.segments {
            outln!(
                "segment {} {}..{} device {} position {} records {}",
                shown_name(&c.files[s.file_id as usize].path),
                s.offset,
                s.offset + s.length,
                s.device,
                s.position,
                s.records
            );
        }
    }
    Ok(Outcome::Done)
}
