//! `pbio list`: the catalog of a set, from one device.

use clap::Args;
use serde_json::json;

use super::{parse_dev, path_text, segment_json, with_path, CliResult, Failure, Outcome};
use crate::device::DeviceSpec;

use crate::format::{Catalog, CatalogFile, CatalogSegment, FileKind, FormatError, SetId};
use crate::units::shown_name;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// One device of the set (every device carries the whole catalog).
    #[arg(long = "dev", value_parser = parse_dev, required_unless_present = "changer")]
    pub dev: Option<DeviceSpec>,
    #[command(flatten)]
    pub library: super::LibraryArgs,
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
    #[command(flatten)]
    pub open: super::OpenArgs,
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
    let key = super::key::load_optional(args.open.key.as_deref())?;
    super::key::load_passphrase(args.open.passphrase_file.as_deref())?;
    let set = match (&args.dev, &args.library.changer) {
        (Some(dev), _) => {
            let opened = crate::device::open(dev, crate::device::Mode::Read).map_err(|error| {
                Failure::Restore {
                    doing: "",
                    error: error.into(),
                }
            })?;
            if args.open.set.is_none() && opened.access() == crate::device::Access::Sequential {
                let found = crate::media::sets::sets_on_tape(opened.as_ref());
                if let Some(sets) = found.ok().filter(|s| s.len() > 1) {
                    print_sets(&dev.path, &sets, args.json);
                    return Ok(Outcome::Done);
                }
            }
            // One disk or file: the catalog read entry by entry, never
            // held decoded (issue 23).
            let opened = if args.open.set.is_some() {
                opened
            } else {
                match crate::restore::open_encoded(opened, key.as_ref()).map_err(fail)? {
                    Ok(set) => return list_streamed(&args, &set, key.is_some()),
                    Err(opened) => opened,
                }
            };
            let devices = super::append::choose_on_tapes(vec![opened], args.open.set.as_deref())?;
            crate::restore::open_devices(devices, key.as_ref()).and_then(one_set)
        }
        (None, Some(changer)) => {
            let devices = super::span::library_devices(
                changer,
                &args.library.drives,
                args.open.set.as_deref(),
            )?;
            crate::restore::open_cartridges(devices, key.as_ref()).and_then(one_set)
        }
        (None, None) => unreachable!("clap requires --dev or --changer"),
    }
    .map_err(fail)?;
    set.devices
        .iter()
        .for_each(|(dev, _)| super::show_notes(dev.as_ref()));
    if super::key::macs_unchecked(key.is_some(), set.keyed, &set.devices[0].1) {
        super::key::say_macs_unchecked();
    }
    let (_, label) = &set.devices[0];
    let c = &set.catalog;
    if let Some(path) = &args.export {
        crate::restore::create_export(path, label.seal.is_sealed())
            .and_then(|mut out| std::io::Write::write_all(&mut out, &c.encode()))
            .map_err(|e| Failure::Usage(format!("--export {}: {e}", path.display())))?;
    }
    if args.json {
        let files: Vec<_> = c
            .files
            .iter()
            .enumerate()
            .map(|(id, f)| file_json(f, &c.ancestors, stored_of(c, id, f)))
            .collect();
        let segments: Vec<_> = c
            .segments
            .iter()
            .map(|s| segment_entry(&c.files[s.file_id as usize].path, s))
            .collect();
        let mut whole = head_json(c, label);
        whole["files"] = files.into();
        whole["segments"] = segments.into();
        whole["renamed"] = renamed_json(c, |id| Ok(c.files[id as usize].path.clone()))
            .map_err(|error| catalog_failure(set.devices[0].0.as_ref(), label, error))?;
        outln!("{whole}");
        return Ok(Outcome::Done);
    }
    let mut totals = Totals::default();
    for (id, f) in c.files.iter().enumerate() {
        totals.add(c, id, f);
    }
    print_head(c, label, c.files.len(), c.segments.len(), &totals);
    for (id, f) in c.files.iter().enumerate() {
        if !super::stdout_open() {
            break; // the reader went away (`| head`)
        }
        let target =
            (f.kind == FileKind::HardLink).then(|| &c.files[f.hardlink_to as usize].path[..]);
        let stored = stored_of(c, id, f);
        outln!(
            "{}",
            file_line(f, target.unwrap_or_default(), &c.ancestors, stored)
        );
    }
    let path_of = |id: u32| Ok(c.files[id as usize].path.clone());
    print_tail(c, &args, path_of, c.segments.iter().map(Ok))
        .map_err(|error| catalog_failure(set.devices[0].0.as_ref(), &set.devices[0].1, error))?;
    Ok(Outcome::Done)
}

/// One file of `list --json`.
fn file_json(f: &CatalogFile, ancestors: &[SetId], stored: Option<u64>) -> serde_json::Value {
    let mut file = with_path(
        &f.path,
        json!({
            "kind": kind_name(f.kind),
            "mode": f.stat.mode,
            "uid": f.stat.uid,
            "gid": f.stat.gid,
            "mtime_sec": f.stat.mtime_sec,
            "size_bytes": f.size_bytes,
            // Set holding the data of a file unchanged since an earlier set.
            "data_in_set": (f.origin != 0).then(|| ancestors[f.origin as usize - 1].to_string()),
        }),
    );
    if f.kind.has_rdev() {
        file["rdev_major"] = libc::major(f.stat.rdev).into();
        file["rdev_minor"] = libc::minor(f.stat.rdev).into();
    }
    if f.stat.flags != 0 {
        file["flags"] = f.stat.flags.into();
    }
    // The bytes its records take on the devices (compressed: fewer), when
    // the catalog records them (amendment ten).
    if let Some(stored) = stored {
        file["stored_bytes"] = stored.into();
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
}

/// One segment of `list --json`; `path` is its file's.
fn segment_entry(path: &[u8], s: &CatalogSegment) -> serde_json::Value {
    let mut segment = segment_json(path, s.offset, s.length, s.device);
    segment["position"] = s.position.into();
    segment["records"] = s.records.into();
    segment
}

/// `list --json` without its files, segments and renamed files.
fn head_json(c: &Catalog, label: &crate::format::Label) -> serde_json::Value {
    json!({
        "set_id": c.set_id.to_string(),
        "device_index": label.device_index,
        "device_count": label.device_count,
        "chunk_bytes": c.chunk_bytes,
        "devices": c.devices.iter().map(|d| json!({"path": path_text(&d.path), "capacity_bytes": d.capacity_bytes})).collect::<Vec<_>>(),
        "ancestors": c.ancestors.iter().map(SetId::to_string).collect::<Vec<_>>(),
        "removed": c.removed.iter().map(|p| path_text(p)).collect::<Vec<_>>(),
    })
}

/// The renamed files of `list --json`; `path_of` gives a file's path by id.
fn renamed_json(
    c: &Catalog,
    mut path_of: impl FnMut(u32) -> Result<Vec<u8>, FormatError>,
) -> Result<serde_json::Value, FormatError> {
    let mut renamed = Vec::with_capacity(c.renamed.len());
    for r in &c.renamed {
        renamed.push(json!({
            "path": path_text(&path_of(r.file_id)?),
            "from": path_text(&r.from),
        }));
    }
    Ok(renamed.into())
}

/// `list --json` of a catalog read entry by entry: the object `run`
/// prints, its keys in the same (sorted) order, written a part at a time
/// so that neither the files nor the segments are held.
fn json_streamed(
    c: &crate::format::catalog::CatalogStream,
    label: &crate::format::Label,
    path_of: &mut dyn FnMut(u32) -> Result<Vec<u8>, FormatError>,
) -> Result<(), FormatError> {
    const PART_BYTES: usize = 64 << 10;
    let head = c.head();
    let mut whole = head_json(head, label);
    whole["renamed"] = renamed_json(head, &mut *path_of)?;
    let serde_json::Value::Object(fields) = whole else {
        unreachable!("head_json gives an object");
    };
    let mut part = String::with_capacity(2 * PART_BYTES);
    let mut flush = |part: &mut String, force: bool| {
        if force || part.len() >= PART_BYTES {
            super::stdout_part(format_args!("{part}"));
            part.clear();
        }
    };
    part.push('{');
    let mut tables = [("files", false), ("segments", false)];
    for (key, value) in &fields {
        // The two tables go in their places among the sorted keys.
        for (table, done) in tables.iter_mut() {
            if !*done && *table < key.as_str() {
                *done = true;
                write_table(c, table, &mut part, &mut flush, &mut *path_of)?;
            }
        }
        part.push_str(&serde_json::Value::from(key.as_str()).to_string());
        part.push(':');
        part.push_str(&value.to_string());
        part.push(',');
    }
    for (table, done) in tables.iter_mut() {
        if !*done {
            write_table(c, table, &mut part, &mut flush, &mut *path_of)?;
        }
    }
    part.pop(); // the last comma
    part.push('}');
    flush(&mut part, true);
    outln!("");
    Ok(())
}

/// `"files":[...],` or `"segments":[...],` of `json_streamed`.
fn write_table(
    c: &crate::format::catalog::CatalogStream,
    table: &str,
    part: &mut String,
    flush: &mut dyn FnMut(&mut String, bool),
    path_of: &mut dyn FnMut(u32) -> Result<Vec<u8>, FormatError>,
) -> Result<(), FormatError> {
    use std::fmt::Write;
    let _ = write!(part, "\"{table}\":[");
    let mut first = true;
    let mut entry = |part: &mut String, value: serde_json::Value| {
        if !first {
            part.push(',');
        }
        first = false;
        let _ = write!(part, "{value}");
        flush(part, false);
    };
    if table == "files" {
        for (id, f) in c.files().enumerate() {
            let f = f?;
            let stored = stored_of(c.head(), id, &f);
            entry(part, file_json(&f, &c.head().ancestors, stored));
        }
    } else {
        for s in c.segments() {
            let s = s?;
            entry(part, segment_entry(&path_of(s.file_id)?, &s));
        }
    }
    part.push_str("],");
    Ok(())
}

fn fail(error: crate::restore::RestoreError) -> Failure {
    Failure::Restore { doing: "", error }
}

/// A catalog that stopped decoding after it was checked (not expected:
/// `CatalogStream::open` decoded all of it once), named like any other.
fn catalog_failure(
    dev: &dyn crate::device::Device,
    label: &crate::format::Label,
    error: crate::format::FormatError,
) -> Failure {
    fail(
        crate::media::MediaError::Format {
            device: dev.path().display().to_string(),
            what: "catalog",
            offset: label.catalog_offset,
            error,
        }
        .into(),
    )
}

/// The bytes file `id`'s data takes as stored in this set, when the
/// catalog records it (FORMAT.md 6.1, amendment ten) and the file has
/// data here.
fn stored_of(c: &Catalog, id: usize, f: &CatalogFile) -> Option<u64> {
    let here = f.kind.has_data() && f.origin == 0;
    c.stored_bytes.get(id).copied().filter(|_| here)
}

/// What the head line of a listing counts over the files.
#[derive(Default)]
struct Totals {
    /// Files whose data is in an earlier set.
    unchanged: usize,
    /// Payload bytes of the files with data in this set, and what they
    /// take stored (None: not recorded).
    payload_bytes: u64,
    stored_bytes: Option<u64>,
}

impl Totals {
    fn add(&mut self, c: &Catalog, id: usize, f: &CatalogFile) {
        self.unchanged += usize::from(f.origin != 0);
        if let Some(stored) = stored_of(c, id, f) {
            self.payload_bytes += f.size_bytes;
            *self.stored_bytes.get_or_insert(0) += stored;
        }
    }
}

/// One file's line of the text listing; `target` is a hard link's
/// target's path; `stored` what its data takes on the devices, shown when
/// it differs from its size (compressed).
fn file_line(f: &CatalogFile, target: &[u8], ancestors: &[SetId], stored: Option<u64>) -> String {
    let extra = match f.kind {
        FileKind::Symlink => format!(" -> {}", shown_name(&f.link_target)),
        FileKind::HardLink => format!(" => {}", shown_name(target)),
        FileKind::CharDevice | FileKind::BlockNode => {
            format!(
                " (device {}:{})",
                libc::major(f.stat.rdev),
                libc::minor(f.stat.rdev)
            )
        }
        _ if f.origin != 0 => format!(
            " (unchanged, data in set {})",
            ancestors[f.origin as usize - 1]
        ),
        _ => match stored {
            Some(stored) if stored != f.size_bytes => format!(" (stored {stored} bytes)"),
            _ => String::new(),
        },
    };
    format!(
        "{:<8} {:06o} {:>5}:{:<5} {:>14} {}{}",
        kind_name(f.kind),
        f.stat.mode & 0o7777,
        f.stat.uid,
        f.stat.gid,
        f.size_bytes,
        shown_name(&f.path),
        extra
    )
}

/// The first lines of the text listing: the set, its counts, and for an
/// increment what it references.
fn print_head(
    c: &Catalog,
    label: &crate::format::Label,
    files: usize,
    segments: usize,
    totals: &Totals,
) {
    // On the first line: the lines after it are the files (scripts
    // take them so).
    let stored = totals.stored_bytes.map_or(String::new(), |stored| {
        format!(", data {} bytes, {stored} stored", totals.payload_bytes)
    });
    outln!(
        "{} (device {} of {}), {} entries, {} segments{}",
        crate::restore::chain::describe(c),
        label.device_index,
        label.device_count,
        files,
        segments,
        stored
    );
    if let Some(parent) = c.ancestors.first() {
        outln!(
            "incremental over set {}: {} unchanged files referenced, {} paths removed, {} renamed",
            parent,
            totals.unchanged,
            c.removed.len(),
            c.renamed.len()
        );
    }
}

/// The lines after the files: removed and renamed paths, and with
/// `--segments` every segment; `path_of` gives a file's path by id.
fn print_tail(
    c: &Catalog,
    args: &ListArgs,
    mut path_of: impl FnMut(u32) -> Result<Vec<u8>, FormatError>,
    segments: impl Iterator<Item = Result<impl std::borrow::Borrow<CatalogSegment>, FormatError>>,
) -> Result<(), FormatError> {
    for path in &c.removed {
        outln!("removed  {}", shown_name(path));
    }
    for r in &c.renamed {
        outln!(
            "renamed  {} -> {}",
            shown_name(&r.from),
            shown_name(&path_of(r.file_id)?)
        );
    }
    if args.segments {
        for s in segments {
            let s = *s?.borrow();
            outln!(
                "segment {} {}..{} device {} position {} records {}",
                shown_name(&path_of(s.file_id)?),
                s.offset,
                s.offset + s.length,
                s.device,
                s.position,
                s.records
            );
        }
    }
    Ok(())
}

/// `list` of one disk or file in text: the catalog proven against the
/// label (`open_encoded`), then read entry by entry, a few passes over
/// its bytes, so that what is held is the encoding (and the paths of hard
/// links' targets, renamed files, and with `--segments` files with data),
/// not a decoded entry per file.
fn list_streamed(args: &ListArgs, set: &crate::restore::EncodedSet, key_given: bool) -> CliResult {
    let c = set.stream().map_err(fail)?;
    super::show_notes(set.device.as_ref());
    if super::key::macs_unchecked(key_given, set.keyed(&c), &set.label) {
        super::key::say_macs_unchecked();
    }
    let broken = |error| catalog_failure(set.device.as_ref(), &set.label, error);
    if let Some(path) = &args.export {
        set.export(path)
            .map_err(|e| Failure::Usage(format!("--export {}: {e}", path.display())))?;
    }
    let head = c.head();
    // What a line names of another file (a hard link's target, a renamed
    // file, a segment's file) is read by id from the catalog, one entry.
    let path_of = |id: u32| -> Result<Vec<u8>, FormatError> {
        match c.file(id as usize) {
            Some(f) => Ok(f?.path),
            None => Ok(Vec::new()),
        }
    };
    if args.json {
        json_streamed(&c, &set.label, &mut |id| path_of(id)).map_err(broken)?;
        return Ok(Outcome::Done);
    }
    let mut totals = Totals::default();
    for (id, f) in c.files().enumerate() {
        totals.add(head, id, &f.map_err(broken)?);
    }
    print_head(head, &set.label, c.file_count(), c.segment_count(), &totals);
    for (id, f) in c.files().enumerate() {
        if !super::stdout_open() {
            break; // the reader went away (`| head`)
        }
        let f = f.map_err(broken)?;
        let target = if f.kind == FileKind::HardLink {
            path_of(f.hardlink_to).map_err(broken)?
        } else {
            Vec::new()
        };
        let stored = stored_of(head, id, &f);
        outln!("{}", file_line(&f, &target, &head.ancestors, stored));
    }
    // Segments of one file follow each other: its path read once.
    let mut last: Option<(u32, Vec<u8>)> = None;
    let path_of = |id: u32| -> Result<Vec<u8>, FormatError> {
        if let Some((last_id, path)) = &last {
            if *last_id == id {
                return Ok(path.clone());
            }
        }
        let path = path_of(id)?;
        last = Some((id, path.clone()));
        Ok(path)
    };
    print_tail(head, args, path_of, c.segments()).map_err(broken)?;
    Ok(Outcome::Done)
}

/// `list` of a tape holding several sets (appended with `backup
/// --append`): one line (or JSON object) per set, in tape order: set id,
/// created, devices, files, bytes, and how its tape file 1 ends.
fn print_sets(device: &std::path::Path, sets: &[crate::media::sets::TapeSet], as_json: bool) {
    use crate::media::guard::utc_text;
    use crate::media::sets::SetEnd;
    let row = |s: &crate::media::sets::TapeSet| {
        let c = s.catalog();
        let state = match &s.end {
            SetEnd::Catalog(_) => "complete".to_string(),
            SetEnd::Continued => "continued (catalog on other cartridges)".to_string(),
            SetEnd::Sealed(why) => format!("complete, encrypted: {why}"),
            SetEnd::Incomplete(why) => format!("incomplete: {why}"),
        };
        (
            s.label.set_id.to_string(),
            utc_text(s.label.created_unix_ns / 1_000_000_000),
            s.label.device_index,
            s.label.device_count,
            c.map(|c| c.files.len()),
            c.map(|c| c.files.iter().map(|f| f.size_bytes).sum::<u64>()),
            state,
        )
    };
    if as_json {
        let sets: Vec<_> = sets
            .iter()
            .map(|s| {
                let (id, created, index, count, files, bytes, state) = row(s);
                json!({
                    "set_id": id, "created": created,
                    "created_unix_ns": s.label.created_unix_ns,
                    "device_index": index, "device_count": count,
                    "files": files, "bytes": bytes, "state": state,
                })
            })
            .collect();
        outln!(
            "{}",
            json!({"device": device.display().to_string(), "sets": sets})
        );
        return;
    }
    outln!(
        "{} holds {} sets (choose one with --set ID):",
        device.display(),
        sets.len()
    );
    for s in sets {
        let (id, created, index, count, files, bytes, state) = row(s);
        let num = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
        outln!(
            "set {id}  created {created}  device {} of {count}  files {}  bytes {}  {state}",
            index + 1,
            num(files.map(|f| f as u64)),
            num(bytes)
        );
    }
}
