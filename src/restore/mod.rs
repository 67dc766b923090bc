//! Restore and verify: one reader thread and ring per device, each
//! streaming its device in media order, writing payloads to their file
//! offsets, in parallel across devices. Any subset of a set's devices
//! restores every file whose segments it holds and names the missing byte
//! ranges of the rest. Devices of several sets of one chain (a full set
//! and its increments, `chain`) restore the newest set's tree, each file's
//! data read from the set that holds it.

pub mod at;
pub mod chain;
pub mod scan;
pub mod tree;
pub mod writer;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::device::{self, Access, Device, DeviceSpec, Mode};
use crate::engine::media::{self, MediaError};
use crate::engine::stream::{self, Flow, Item, StreamError};
use crate::format::{Catalog, FileKind, Label, LabelState, RecordKind, SetId};
pub use chain::{open_chain, Chain};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
    #[error("{0}")]
    Set(String),
}

/// The devices of one set, opened for reading, and its catalog.
pub struct OpenSet {
    pub devices: Vec<(Box<dyn Device>, Label)>,
    pub catalog: Catalog,
    /// Devices given that could not be read at all (left out, with why).
    pub unreadable: Vec<String>,
}

/// A tape's label stays Writing (it cannot be rewritten); its catalog is
/// tape file 1, complete when it ends with an End record and a filemark.
/// When it reads back, the label is completed in memory, with positions
/// in logical object numbers, so that the rest of restore treats the tape
/// like any device with a Complete label.
fn complete_tape_label(dev: &dyn Device, label: &mut Label) -> Option<Result<Catalog, MediaError>> {
    if dev.access() != Access::Sequential || label.state == LabelState::Complete {
        return None;
    }
    let read = media::read_catalog(dev, label);
    if let Ok(catalog) = &read {
        if catalog.set_id == label.set_id {
            if let Some(entry) = catalog.devices.get(label.device_index as usize) {
                label.state = LabelState::Complete;
                label.data_end = entry.data_end;
                label.catalog_offset = entry.data_end + 1;
                label.catalog_bytes = catalog.encode().len() as u64;
            }
        }
    }
    Some(read)
}

/// A device opened for reading, its label, and for a tape the catalog
/// read while completing its label.
type Opened = (Box<dyn Device>, Label, Option<Result<Catalog, MediaError>>);

/// Open the given devices, check they belong to one complete set, and read
/// the catalog (from the first device whose catalog reads back correctly).
pub fn open_set(specs: &[DeviceSpec]) -> Result<OpenSet, RestoreError> {
    let mut sets = open_sets(specs)?;
    if sets.len() > 1 {
        let (a, b) = (&sets[0], &sets[1]);
        return Err(RestoreError::Set(format!(
            "devices {} and {} hold different sets ({} and {})",
            a.devices[0].0.path().display(),
            b.devices[0].0.path().display(),
            crate::engine::set_id_hex(&a.catalog.set_id),
            crate::engine::set_id_hex(&b.catalog.set_id)
        )));
    }
    Ok(sets.remove(0))
}

/// Open the given devices, group them by set (in the order each set first
/// appears), and read each set's catalog as `open_set` does.
pub fn open_sets(specs: &[DeviceSpec]) -> Result<Vec<OpenSet>, RestoreError> {
    if specs.is_empty() {
        return Err(RestoreError::Set("no devices given (use --dev)".into()));
    }
    let mut groups: Vec<Vec<Opened>> = Vec::new();
    let mut unreadable = Vec::new();
    for spec in specs {
        let dev = device::open(spec, Mode::Read)?;
        let mut label = match media::read_label(dev.as_ref()) {
            Ok(label) => label,
            // One unreadable device does not stop a restore from the others.
            Err(e) if specs.len() > 1 => {
                unreadable.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let tape_catalog = complete_tape_label(dev.as_ref(), &mut label);
        let Some(group) = groups.iter_mut().find(|g| g[0].1.set_id == label.set_id) else {
            groups.push(vec![(dev, label, tape_catalog)]);
            continue;
        };
        if let Some((other, _, _)) = group
            .iter()
            .find(|(_, l, _)| l.device_index == label.device_index)
        {
            return Err(RestoreError::Set(format!(
                "devices {} and {} are both device {} of the set (the same device given twice?)",
                other.path().display(),
                spec.path.display(),
                label.device_index
            )));
        }
        group.push((dev, label, tape_catalog));
    }
    if groups.is_empty() {
        return Err(RestoreError::Set(format!(
            "no given device can be read: {}",
            unreadable.join("; ")
        )));
    }
    let mut sets = groups
        .into_iter()
        .map(assemble)
        .collect::<Result<Vec<OpenSet>, RestoreError>>()?;
    // Which set an unreadable device belonged to is unknown: named once.
    sets[0].unreadable = unreadable;
    Ok(sets)
}

/// The catalog of one set's devices: from the first complete device whose
/// catalog reads back.
fn assemble(opened: Vec<Opened>) -> Result<OpenSet, RestoreError> {
    let mut devices = Vec::with_capacity(opened.len());
    let mut tape_catalogs = Vec::with_capacity(opened.len());
    for (dev, label, tape_catalog) in opened {
        devices.push((dev, label));
        tape_catalogs.push(tape_catalog);
    }
    let mut last_error = None;
    for ((dev, label), tape_catalog) in devices.iter().zip(tape_catalogs.iter_mut()) {
        if let Some(Err(e)) = tape_catalog.take() {
            last_error = Some(e.into());
            continue;
        }
        if label.state != LabelState::Complete {
            continue;
        }
        let read = match tape_catalog.take() {
            Some(read) => read,
            None => media::read_catalog(dev.as_ref(), label),
        };
        match read {
            Ok(catalog) if catalog.set_id == label.set_id => {
                let catalog_devices = catalog.devices.clone();
                return finish_open(devices, catalog, &catalog_devices);
            }
            Ok(_) => {
                last_error = Some(RestoreError::Set(format!(
                    "device {}: catalog belongs to another set",
                    dev.path().display()
                )))
            }
            Err(e) => last_error = Some(e.into()),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        RestoreError::Set(format!(
            "set {}: none of the given devices holds a completed catalog (crashed or interrupted run?): use `pbio scan` to recover records",
            crate::engine::set_id_hex(&devices[0].1.set_id)
        ))
    }))
}

/// A device without a catalog of its own (it failed during the backup) is
/// read up to the end that the set's catalog records for it.
fn finish_open(
    mut devices: Vec<(Box<dyn Device>, Label)>,
    catalog: Catalog,
    entries: &[crate::format::CatalogDevice],
) -> Result<OpenSet, RestoreError> {
    for (dev, l) in devices.iter_mut() {
        if l.state != LabelState::Complete {
            let Some(entry) = entries.get(l.device_index as usize) else {
                return Err(RestoreError::Set(format!(
                    "device {}: device index {} is not in the set's catalog",
                    dev.path().display(),
                    l.device_index
                )));
            };
            l.data_end = entry.data_end;
        }
    }
    Ok(OpenSet {
        devices,
        catalog,
        unreadable: Vec::new(),
    })
}

/// The device index of a missing range that no device of the set holds.
pub const NOWHERE: u32 = u32::MAX;

/// A file that cannot be restored from the given devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub path: Vec<u8>,
    /// The set whose devices hold (or should hold) the file's data: the
    /// set restored, or for a file unchanged since an earlier set of the
    /// chain, that set.
    pub set_id: SetId,
    /// Whether any device of that set was given. When not, `ranges` is the
    /// whole file, on device `NOWHERE`.
    pub set_given: bool,
    /// (offset, length, device index in that set) of every range not on
    /// the given devices; the device is `NOWHERE` when no device of the
    /// set holds it (or the set was not given).
    pub ranges: Vec<(u64, u64, u32)>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub files_restored: usize,
    pub payload_bytes: u64,
    pub records: u64,
    pub missing: Vec<Missing>,
    /// Integrity errors, each naming device, file and offset.
    pub errors: Vec<String>,
    pub elapsed: std::time::Duration,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.errors.is_empty()
    }
}

/// What to do with the records.
pub enum Action<'a> {
    /// Rebuild the tree under `to`. A file that cannot be restored
    /// completely is removed, or with `keep_partial` kept as
    /// `NAME.pbio-partial`.
    Restore {
        to: &'a Path,
        keep_partial: bool,
    },
    /// Write the data of one file of the catalog (a block device, or an
    /// image file) onto `target` from offset 0, holes written as zeros.
    /// The caller opened `target` (a block device, exclusively) and
    /// checked that it is large enough.
    RestoreToDevice {
        target: &'a File,
        file: u32,
    },
    Verify,
}

fn matches_only(path: &[u8], only: &[Vec<u8>]) -> bool {
    only.is_empty()
        || only.iter().any(|o| {
            let o = o.strip_suffix(b"/").unwrap_or(o);
            path == o || (path.starts_with(o) && path.get(o.len()) == Some(&b'/'))
        })
}

/// Missing byte ranges of one file: (offset, length, device index).
type Ranges = Vec<(u64, u64, u32)>;

/// For each file of `set` whose data is in it (`origin` 0), the ranges not
/// covered by a segment on a present device (a range may be held twice,
/// when a failed device's work was written again on the survivors), each
/// with the absent device that holds it, or `NOWHERE` when no device does
/// (the set is incomplete: the survivors of a backup lacked the room).
/// None for complete files and for everything else. `present`: the device
/// indexes counted as given.
fn coverage(set: &OpenSet, present: &[u32]) -> Vec<Option<Ranges>> {
    let catalog = &set.catalog;
    let mut covered: Vec<Vec<(u64, u64)>> = vec![Vec::new(); catalog.files.len()];
    let mut absent: Vec<Vec<(u64, u64, u32)>> = vec![Vec::new(); catalog.files.len()];
    for s in &catalog.segments {
        let range = (s.offset, s.offset + s.length);
        if present.contains(&s.device) {
            covered[s.file_id as usize].push(range);
        } else {
            absent[s.file_id as usize].push((range.0, range.1, s.device));
        }
    }
    let mut out = vec![None; catalog.files.len()];
    for (file, f) in catalog.files.iter().enumerate() {
        if !f.kind.has_data() || f.origin != 0 || f.size_bytes == 0 {
            continue;
        }
        covered[file].sort_unstable();
        absent[file].sort_unstable();
        let mut ranges = Vec::new();
        for (gap_start, gap_end) in uncovered(0, f.size_bytes, &covered[file]) {
            let mut at = gap_start;
            for &(start, end, device) in &absent[file] {
                let (start, end) = (start.max(at), end.min(gap_end));
                if start >= end {
                    continue;
                }
                if start > at {
                    ranges.push((at, start - at, NOWHERE));
                }
                ranges.push((start, end - start, device));
                at = end;
            }
            if at < gap_end {
                ranges.push((at, gap_end - at, NOWHERE));
            }
        }
        if !ranges.is_empty() {
            out[file] = Some(ranges);
        }
    }
    out
}

/// Which given devices of `set` to read, and the coverage they give.
/// Devices that failed during the backup are read only when the others do
/// not hold everything (their copies then count only where they read back
/// with good CRCs: the digests decide).
fn devices_to_read(set: &OpenSet) -> (Vec<u32>, Vec<Option<Ranges>>) {
    let is_failed = |index: u32| {
        set.catalog.devices.get(index as usize).map(|d| d.state)
            == Some(crate::format::DeviceState::Failed)
    };
    let present: Vec<u32> = set.devices.iter().map(|(_, l)| l.device_index).collect();
    let trusted: Vec<u32> = present.iter().copied().filter(|&i| !is_failed(i)).collect();
    let covered = coverage(set, &trusted);
    if covered.iter().any(Option::is_some) && trusted.len() < present.len() {
        let covered = coverage(set, &present);
        return (present, covered);
    }
    (trusted, covered)
}

/// Where the data of a file of the restored catalog is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataSource {
    /// No data (directories, links) or nothing to read.
    None,
    /// File `file` of set `set` (an index into the sets being read).
    In { set: usize, file: u32 },
    /// In an earlier set of the chain none of whose devices was given.
    Absent { set_id: SetId },
    /// The given set that should hold it does not (an error is reported).
    Broken,
}

/// Sentinel of `Targets`: the record's file is not restored.
const NO_TARGET: u32 = u32::MAX;

/// Per file of one set: the file of the restored catalog its records
/// belong to, or `NO_TARGET`.
type Targets = Vec<u32>;

struct DeviceRead {
    /// (restored file, offset, length, crc) of the records with a target.
    records: Vec<(u32, u64, u32, u32)>,
    /// Every record read and checked.
    records_read: u64,
    payload_bytes: u64,
    errors: Vec<String>,
}

/// The parts of [start, end) not covered by `have` (sorted by start).
fn uncovered(start: u64, end: u64, have: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut gaps = Vec::new();
    let mut at = start;
    for &(s, e) in have {
        if e <= at {
            continue;
        }
        if s >= end {
            break;
        }
        if s > at {
            gaps.push((at, s.min(end)));
        }
        at = at.max(e);
        if at >= end {
            break;
        }
    }
    if at < end {
        gaps.push((at, end));
    }
    gaps
}

/// Restore (or verify) one set from its opened devices. For an
/// incremental set, the files whose data is in earlier sets are missing
/// (their set is not given): use `run_chain`.
pub fn run(set: &OpenSet, action: Action<'_>, only: &[Vec<u8>]) -> Result<Report, RestoreError> {
    let ancestors = vec![None; set.catalog.ancestors.len()];
    run_sets(&[set], &ancestors, action, only)
}

/// Restore (or verify) the newest set of a chain: its tree, each file's
/// data read from the set that holds it, all devices of all sets in parallel.
pub fn run_chain(
    chain: &Chain,
    action: Action<'_>,
    only: &[Vec<u8>],
) -> Result<Report, RestoreError> {
    let sets: Vec<&OpenSet> = chain.sets.iter().collect();
    run_sets(&sets, &chain.ancestor_sets, action, only)
}

/// Where the records go.
#[derive(Clone, Copy)]
enum Destination<'a> {
    Nowhere,
    Tree(&'a tree::Staged),
    Device(&'a File),
}

/// Where each file of `sets[0]`'s catalog has its data; errors for
/// references the given sets do not satisfy.
fn data_sources(
    sets: &[&OpenSet],
    ancestor_sets: &[Option<usize>],
    errors: &mut Vec<String>,
) -> Vec<DataSource> {
    let catalog = &sets[0].catalog;
    catalog
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if !f.kind.has_data() {
                return DataSource::None;
            }
            if f.origin == 0 {
                return DataSource::In {
                    set: 0,
                    file: i as u32,
                };
            }
            let n = f.origin as usize - 1;
            let set_id = catalog.ancestors[n];
            let Some(s) = ancestor_sets[n] else {
                return if f.size_bytes == 0 {
                    DataSource::None
                } else {
                    DataSource::Absent { set_id }
                };
            };
            match sets[s].catalog.files.get(f.origin_file_id as usize) {
                Some(base)
                    if base.kind == f.kind
                        && base.origin == 0
                        && base.size_bytes == f.size_bytes
                        && base.digest == f.digest =>
                {
                    DataSource::In {
                        set: s,
                        file: f.origin_file_id,
                    }
                }
                _ => {
                    errors.push(format!(
                        "file {}: set {} does not hold its data as file id {} (the catalogs of the chain disagree)",
                        crate::units::shown_name(&f.path),
                        crate::engine::set_id_hex(&set_id),
                        f.origin_file_id
                    ));
                    DataSource::Broken
                }
            }
        })
        .collect()
}

fn run_sets(
    sets: &[&OpenSet],
    ancestor_sets: &[Option<usize>],
    action: Action<'_>,
    only: &[Vec<u8>],
) -> Result<Report, RestoreError> {
    let started = std::time::Instant::now();
    let catalog = &sets[0].catalog;
    assert_eq!(ancestor_sets.len(), catalog.ancestors.len());
    let mut report = Report::default();
    let sources = data_sources(sets, ancestor_sets, &mut report.errors);
    let (reading, coverages): (Vec<Vec<u32>>, Vec<_>) =
        sets.iter().map(|s| devices_to_read(s)).unzip();
    let mut complete = vec![true; catalog.files.len()];
    let mut missing = Vec::new();
    for (i, f) in catalog.files.iter().enumerate() {
        match sources[i] {
            DataSource::None => {}
            DataSource::Broken => complete[i] = false,
            DataSource::In { set, file } => {
                if let Some(ranges) = &coverages[set][file as usize] {
                    complete[i] = false;
                    missing.push(Missing {
                        path: f.path.clone(),
                        set_id: sets[set].catalog.set_id,
                        set_given: true,
                        ranges: ranges.clone(),
                    });
                }
            }
            DataSource::Absent { set_id } => {
                complete[i] = false;
                missing.push(Missing {
                    path: f.path.clone(),
                    set_id,
                    set_given: false,
                    ranges: vec![(0, f.size_bytes, NOWHERE)],
                });
            }
        }
    }
    for (i, f) in catalog.files.iter().enumerate() {
        if f.kind == FileKind::HardLink && !complete[f.hardlink_to as usize] {
            complete[i] = false;
        }
    }
    missing.sort_by(|a, b| a.path.cmp(&b.path));
    let chosen = |i: usize, f: &crate::format::CatalogFile| match action {
        Action::RestoreToDevice { file, .. } => i == file as usize,
        _ => matches_only(&f.path, only),
    };
    let selected: Vec<bool> = catalog
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| complete[i] && chosen(i, f))
        .collect();
    // A hard link needs its target's data even when only the link was asked for.
    let mut wanted = selected.clone();
    for (i, f) in catalog.files.iter().enumerate() {
        if selected[i] && f.kind == FileKind::HardLink {
            wanted[f.hardlink_to as usize] = true;
        }
    }
    report.missing = missing
        .into_iter()
        .filter(|m| match action {
            Action::RestoreToDevice { file, .. } => m.path == catalog.files[file as usize].path,
            _ => matches_only(&m.path, only),
        })
        .collect();
    let (staged, keep_partial) = match action {
        Action::Restore { to, keep_partial } => {
            let mut staged = tree::prepare(to, catalog, &wanted)?;
            // Entries refused one by one; the rest is restored.
            report
                .errors
                .extend(staged.take_errors().iter().map(ToString::to_string));
            for (i, w) in wanted.iter_mut().enumerate() {
                *w = *w && !staged.refused(i);
            }
            (Some(staged), keep_partial)
        }
        _ => (None, false),
    };
    let destination = match action {
        Action::Restore { .. } => Destination::Tree(staged.as_ref().expect("prepared above")),
        Action::RestoreToDevice { target, .. } => Destination::Device(target),
        Action::Verify => Destination::Nowhere,
    };
    // Per set, which restored file each of its files' records belong to.
    let mut targets: Vec<Targets> = sets
        .iter()
        .map(|s| vec![NO_TARGET; s.catalog.files.len()])
        .collect();
    for (i, source) in sources.iter().enumerate() {
        if let (true, DataSource::In { set, file }) = (wanted[i], *source) {
            targets[set][file as usize] = i as u32;
        }
    }
    let verify = matches!(action, Action::Verify);
    let read: Vec<usize> = (0..sets.len())
        .filter(|&s| s == 0 || verify || targets[s].iter().any(|&t| t != NO_TARGET))
        .collect();

    // The devices read, in the order of `results`: (set, device index, path).
    let readers: Vec<(usize, u32, String)> = read
        .iter()
        .flat_map(|&s| sets[s].devices.iter().map(move |d| (s, d)))
        .filter(|(s, (_, label))| reading[*s].contains(&label.device_index))
        .map(|(s, (dev, label))| (s, label.device_index, dev.path().display().to_string()))
        .collect();
    let results: Vec<Result<DeviceRead, RestoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = read
            .iter()
            .flat_map(|&s| sets[s].devices.iter().map(move |d| (s, d)))
            .filter(|(s, (_, label))| reading[*s].contains(&label.device_index))
            .map(|(s, (dev, label))| {
                let targets = &targets[s];
                let set_catalog = &sets[s].catalog;
                scope.spawn(move || {
                    read_device(
                        dev.as_ref(),
                        label,
                        set_catalog,
                        targets,
                        catalog,
                        destination,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader thread panicked"))
            .collect()
    });
    let mut per_file: Vec<Vec<(u64, u32, u32)>> = vec![Vec::new(); catalog.files.len()];
    // Devices whose reading broke off: (set, device index, path).
    let mut broken: Vec<&(usize, u32, String)> = Vec::new();
    for (result, reader) in results.into_iter().zip(&readers) {
        // A device that cannot be read is reported; what the others hold is
        // still restored, and the files it leaves short are named with it.
        let read = match result {
            Ok(read) => read,
            Err(e @ (RestoreError::Stream(_) | RestoreError::Media(_))) => {
                report.errors.push(e.to_string());
                broken.push(reader);
                continue;
            }
            Err(e) => return Err(e),
        };
        report.payload_bytes += read.payload_bytes;
        report.records += read.records_read;
        report.errors.extend(read.errors);
        for (file, offset, len, crc) in read.records {
            per_file[file as usize].push((offset, len, crc));
        }
    }
    // Per file of the restored catalog: complete and verified, or why not.
    let mut verdicts = vec![tree::Verdict::Good; catalog.files.len()];
    for (i, f) in catalog.files.iter().enumerate() {
        if !wanted[i] || !f.kind.has_data() {
            continue;
        }
        // A range held twice (a failed device's copy and the survivor's)
        // yields the same records; count each once.
        let records = &mut per_file[i];
        records.sort_unstable();
        records.dedup_by_key(|r| r.0);
        let digest = crate::format::file_digest(records);
        if digest != f.digest {
            // Data of it on a device whose reading broke off: that is why.
            let on_broken: Vec<&str> =
                match sources[i] {
                    DataSource::In { set, file } => broken
                        .iter()
                        .filter(|(s, device, _)| {
                            *s == set
                                && sets[set].catalog.segments.iter().any(|g| {
                                    g.file_id == file && g.device == *device && g.records > 0
                                })
                        })
                        .map(|(_, _, path)| path.as_str())
                        .collect(),
                    _ => Vec::new(),
                };
            let why = if on_broken.is_empty() {
                format!(
                    "file {}: content digest mismatch (records missing, altered or duplicated on the devices: {})",
                    crate::units::shown_name(&f.path),
                    devices_holding(sets, sources[i]).join(", ")
                )
            } else {
                format!(
                    "file {}: not restored completely: part of it is on {}, which could not be read (above)",
                    crate::units::shown_name(&f.path),
                    on_broken.join(", ")
                )
            };
            report.errors.push(why.clone());
            verdicts[i] = tree::Verdict::Failed(why);
        }
    }
    let mut done = selected.clone();
    match destination {
        Destination::Tree(_) => {}
        Destination::Device(target) => {
            for (i, f) in catalog.files.iter().enumerate() {
                if wanted[i] {
                    zero_holes(target, f.size_bytes, &per_file[i])?;
                }
            }
            target
                .sync_all()
                .map_err(|e| RestoreError::Set(format!("sync of the restore target: {e}")))?;
        }
        Destination::Nowhere => {}
    }
    if let Some(staged) = staged {
        let finished = tree::finish(staged, catalog, &wanted, &verdicts, keep_partial);
        report
            .errors
            .extend(finished.errors.iter().map(ToString::to_string));
        for (d, f) in done.iter_mut().zip(&finished.done) {
            *d = *d && *f;
        }
    }
    report.files_restored = done.iter().filter(|&&d| d).count();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The given devices that hold records of a file (its segments), by path.
fn devices_holding(sets: &[&OpenSet], source: DataSource) -> Vec<String> {
    let DataSource::In { set, file } = source else {
        return Vec::new();
    };
    let segments = &sets[set].catalog.segments;
    sets[set]
        .devices
        .iter()
        .filter(|(_, label)| {
            segments
                .iter()
                .any(|g| g.file_id == file && g.device == label.device_index && g.records > 0)
        })
        .map(|(dev, _)| dev.path().display().to_string())
        .collect()
}

/// Write zeros over the ranges of `[0, size_bytes)` that no record wrote
/// (the holes of a sparse image), so the device holds exactly the image.
/// `records` are (offset, length, crc), sorted by offset.
fn zero_holes(
    target: &File,
    size_bytes: u64,
    records: &[(u64, u32, u32)],
) -> Result<(), RestoreError> {
    const ZEROS_BYTES: usize = 1 << 20;
    let written: Vec<(u64, u64)> = records
        .iter()
        .map(|&(offset, len, _)| (offset, offset + u64::from(len)))
        .collect();
    let zeros = vec![0u8; ZEROS_BYTES];
    for (start, end) in uncovered(0, size_bytes, &written) {
        let mut at = start;
        while at < end {
            let n = (end - at).min(ZEROS_BYTES as u64) as usize;
            target.write_all_at(&zeros[..n], at).map_err(|e| {
                RestoreError::Set(format!(
                    "write zeros at offset {at} of the restore target: {e}"
                ))
            })?;
            at += n as u64;
        }
    }
    Ok(())
}

/// Destination files kept open at once by one reader's queued writes.
const OPEN_FILES_MAX: usize = 128;

/// Stream one device of a set; records whose file has a target are
/// checked and written to it (queued on the reader's own io_uring, the
/// payloads written from the stream's buffers without a copy).
fn read_device(
    dev: &dyn Device,
    label: &Label,
    catalog: &Catalog,
    targets: &[u32],
    restored: &Catalog,
    destination: Destination<'_>,
) -> Result<DeviceRead, RestoreError> {
    let name = dev.path().display().to_string();
    let mut out = DeviceRead {
        records: Vec::new(),
        records_read: 0,
        payload_bytes: 0,
        errors: Vec::new(),
    };
    // The destination the previous record went to (restored file id, writer
    // handle): records of one file are contiguous on media.
    let mut open: Option<(u32, usize)> = None;
    let mut writer = match destination {
        Destination::Nowhere => None,
        Destination::Tree(_) | Destination::Device(_) => {
            Some(writer::Writer::new().map_err(|e| {
                RestoreError::Set(format!("device {name}: io_uring for restore writes: {e}"))
            })?)
        }
    };
    let mut result: Result<(), RestoreError> = Ok(());
    stream::stream::<RestoreError>(
        dev,
        media::data_start(dev),
        label.data_end,
        label.chunk_bytes,
        |item| {
            let (position, header, payload) = match item {
                Item::Record {
                    position,
                    header,
                    payload,
                    padding,
                    ..
                } => {
                    if padding.iter().any(|&b| b != 0) {
                        out.errors.push(format!(
                            "device {name}: offset {position}: damaged padding after the payload of the record at file offset {}",
                            header.file_offset
                        ));
                    }
                    (position, header, payload)
                }
                Item::Bad { position, error } => {
                    out.errors.push(format!(
                        "device {name}: offset {position}: damaged record header: {error}"
                    ));
                    return Ok(Flow::Continue);
                }
                Item::Reclaim => {
                    // Every queued write done before the window is reused.
                    if let Some(w) = writer.as_mut() {
                        open = None;
                        if let Err(e) = w.finish() {
                            result = Err(RestoreError::Set(e));
                            return Ok(Flow::Stop);
                        }
                    }
                    return Ok(Flow::Continue);
                }
            };
            if header.set_id != label.set_id || header.kind != RecordKind::Data {
                out.errors.push(format!(
                    "device {name}: offset {position}: record does not belong to this set's data"
                ));
                return Ok(Flow::Continue);
            }
            let Some(file) = catalog.files.get(header.file_id as usize) else {
                out.errors.push(format!(
                    "device {name}: offset {position}: record names file id {} not in the catalog",
                    header.file_id
                ));
                return Ok(Flow::Continue);
            };
            let path = crate::units::shown_name(&file.path);
            let crc = crate::format::crc32c(payload);
            if crc != header.payload_crc {
                out.errors.push(format!(
                "device {name}: offset {position}: file {path} at file offset {}: payload checksum mismatch (stored {:#010x}, computed {crc:#010x})",
                header.file_offset, header.payload_crc
            ));
                return Ok(Flow::Continue);
            }
            out.records_read += 1;
            out.payload_bytes += payload.len() as u64;
            let target = targets[header.file_id as usize];
            if target == NO_TARGET {
                return Ok(Flow::Continue);
            }
            out.records
                .push((target, header.file_offset, header.payload_bytes, crc));
            let Some(w) = writer.as_mut() else {
                return Ok(Flow::Continue);
            };
            let restored_path = crate::units::shown_name(&restored.files[target as usize].path);
            if open.map(|(id, _)| id) != Some(target) {
                if w.open_files() >= OPEN_FILES_MAX {
                    if let Err(e) = w.finish() {
                        result = Err(RestoreError::Set(e));
                        return Ok(Flow::Stop);
                    }
                }
                let opened = match destination {
                    Destination::Tree(staged) => staged
                        .open_for_write(target as usize)
                        .map_err(|error| format!("open {restored_path}: {error}")),
                    Destination::Device(device) => device
                        .try_clone()
                        .map_err(|error| format!("restore target: {error}")),
                    Destination::Nowhere => unreachable!("no writer without a destination"),
                };
                match opened {
                    Ok(f) => open = Some((target, w.add_file(f, restored_path.to_string()))),
                    Err(why) => {
                        result = Err(RestoreError::Set(why));
                        return Ok(Flow::Stop);
                    }
                }
            }
            let (_, handle) = open.expect("opened above");
            // SAFETY: `payload` lies in the stream's window buffer, which the
            // stream neither reuses nor frees before delivering Reclaim, and
            // on Reclaim (and before any early return) the writer is finished.
            if let Err(e) = unsafe { w.write(handle, payload, header.file_offset) } {
                result = Err(RestoreError::Set(e));
                return Ok(Flow::Stop);
            }
            Ok(Flow::Continue)
        },
    )?;
    result?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::uncovered;

    #[test]
    fn uncovered_ranges() {
        assert_eq!(uncovered(0, 10, &[]), vec![(0, 10)]);
        assert_eq!(uncovered(0, 10, &[(0, 10)]), vec![]);
        assert_eq!(
            uncovered(0, 10, &[(2, 4), (6, 8)]),
            vec![(0, 2), (4, 6), (8, 10)]
        );
        assert_eq!(uncovered(5, 10, &[(0, 6), (6, 12)]), vec![]);
        assert_eq!(uncovered(5, 10, &[(0, 3), (12, 20)]), vec![(5, 10)]);
    }
}
