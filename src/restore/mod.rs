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
use crate::format::{
    Catalog, DigestRecord, FileKind, Label, LabelState, MacKey, RecordHeader, RecordKind, SetId,
};
use crate::media::stream::{self, Flow, Item, StreamError};
use crate::media::{self, MediaError};
use crate::units::shown_name;
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
    /// Devices given that could not be read at all, or whose catalog was
    /// not used (left out, with why).
    pub unreadable: Vec<String>,
    /// The set carries MACs (it was written with `--key`). Without the key
    /// they are not checked: the caller says so.
    pub keyed: bool,
}

/// A tape's label stays Writing (it cannot be rewritten); its catalog is
/// tape file 1, complete when it ends with an End record and a filemark.
/// When it reads back, the label is completed in memory, with positions
/// in logical object numbers and the BLAKE3 of the catalog read as its
/// `catalog_digest`, so that the rest of restore treats the tape like any
/// device with a Complete label (and the catalogs of a set's tapes and
/// disks are compared by their digests).
fn complete_tape_label(
    dev: &dyn Device,
    label: &mut Label,
) -> Option<Result<media::CatalogRead, MediaError>> {
    if dev.access() != Access::Sequential || label.state == LabelState::Complete {
        return None;
    }
    let read = media::read_catalog(dev, label);
    if let Ok(read) = &read {
        let catalog = &read.catalog;
        if catalog.set_id == label.set_id {
            if let Some(entry) = catalog.devices.get(label.device_index as usize) {
                label.state = LabelState::Complete;
                label.data_end = entry.data_end;
                label.catalog_offset = entry.data_end + 1;
                label.catalog_bytes = catalog.encode().len() as u64;
                label.catalog_digest = read.digest;
            }
        }
    }
    Some(read)
}

/// A device opened for reading, its label, and for a tape the catalog
/// read while completing its label.
type Opened = (
    Box<dyn Device>,
    Label,
    Option<Result<media::CatalogRead, MediaError>>,
);

/// Open the given devices, check they belong to one complete set, and read
/// the catalog (from the first device whose catalog reads back correctly).
/// With `key`, the set's MACs are checked (`open_sets`).
pub fn open_set(specs: &[DeviceSpec], key: Option<&MacKey>) -> Result<OpenSet, RestoreError> {
    let mut sets = open_sets(specs, key)?;
    if sets.len() > 1 {
        let (a, b) = (&sets[0], &sets[1]);
        return Err(RestoreError::Set(format!(
            "devices {} and {} hold different sets ({} and {})",
            a.devices[0].0.path().display(),
            b.devices[0].0.path().display(),
            a.catalog.set_id,
            b.catalog.set_id
        )));
    }
    Ok(sets.remove(0))
}

/// Open the given devices, group them by set (in the order each set first
/// appears), and read each set's catalog as `open_set` does. Before any
/// byte is restored, every device's membership is checked (docs/FORMAT.md,
/// "Reading a set"): its label's device index is in the set and given
/// once, all labels of a set agree (device count, chunk size, creation
/// time, catalog digest) and agree with the catalog, and the catalog read
/// hashes to the digest the labels give. With `key`, every label's MAC and
/// the catalog's MAC must match it. A device that disagrees is refused,
/// named with the device it disagrees with.
pub fn open_sets(specs: &[DeviceSpec], key: Option<&MacKey>) -> Result<Vec<OpenSet>, RestoreError> {
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
        if let Some(key) = key {
            check_label_mac(dev.as_ref(), &label, key)?;
        }
        let tape_catalog = complete_tape_label(dev.as_ref(), &mut label);
        let Some(group) = groups.iter_mut().find(|g| g[0].1.set_id == label.set_id) else {
            groups.push(vec![(dev, label, tape_catalog)]);
            continue;
        };
        for (other, other_label, _) in group.iter() {
            labels_agree((other.as_ref(), other_label), (dev.as_ref(), &label))?;
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
        .map(|group| assemble(group, key))
        .collect::<Result<Vec<OpenSet>, RestoreError>>()?;
    // Which set an unreadable device belonged to is unknown: named once.
    sets[0].unreadable.extend(unreadable);
    Ok(sets)
}

/// A label's MAC checked with `key` (before anything else is read from
/// the device): refused when it does not match, or is zero (the set was
/// written without a key).
fn check_label_mac(dev: &dyn Device, label: &Label, key: &MacKey) -> Result<(), RestoreError> {
    if crate::format::hash_eq(&label.mac_for(key), &label.mac) {
        return Ok(());
    }
    Err(RestoreError::Set(if label.mac == [0; 32] {
        format!(
            "device {}: its label carries no MAC (the set was written without a key), but --key was given: refusing it",
            dev.path().display()
        )
    } else {
        format!(
            "device {}: its label's MAC does not match the key: written with another key, or altered: refusing it",
            dev.path().display()
        )
    }))
}

/// Two devices that claim the same set must agree on what their labels
/// say of the whole set; when they do not, at least one of them lies (a
/// device of another run, or a forged label), and both are named.
fn labels_agree(
    (a_dev, a): (&dyn Device, &Label),
    (b_dev, b): (&dyn Device, &Label),
) -> Result<(), RestoreError> {
    let refuse = |why: String| {
        Err(RestoreError::Set(format!(
            "devices {} and {} both claim set {} but {why}: refusing the set (a device of another run, or a forged label?)",
            a_dev.path().display(),
            b_dev.path().display(),
            a.set_id
        )))
    };
    if a.device_index == b.device_index {
        return Err(RestoreError::Set(format!(
            "devices {} and {} are both device {} of the set (the same device given twice?)",
            a_dev.path().display(),
            b_dev.path().display(),
            a.device_index
        )));
    }
    if a.device_count != b.device_count {
        return refuse(format!(
            "disagree on the number of devices ({} and {})",
            a.device_count, b.device_count
        ));
    }
    if a.chunk_bytes != b.chunk_bytes {
        return refuse(format!(
            "disagree on the chunk size ({} and {})",
            a.chunk_bytes, b.chunk_bytes
        ));
    }
    if a.created_unix_ns != b.created_unix_ns {
        return refuse(format!(
            "disagree on the set's creation time ({} and {})",
            a.created_unix_ns, b.created_unix_ns
        ));
    }
    if a.state == LabelState::Complete
        && b.state == LabelState::Complete
        && a.catalog_digest != b.catalog_digest
    {
        return refuse("hold different catalogs (their catalog digests differ)".to_string());
    }
    Ok(())
}

/// The catalog of one set's devices: from the first complete device whose
/// catalog reads back and hashes to the digest its label gives (every
/// Complete label of the set gives the same one: `labels_agree`).
fn assemble(opened: Vec<Opened>, key: Option<&MacKey>) -> Result<OpenSet, RestoreError> {
    let mut devices = Vec::with_capacity(opened.len());
    let mut tape_catalogs = Vec::with_capacity(opened.len());
    for (dev, label, tape_catalog) in opened {
        devices.push((dev, label));
        tape_catalogs.push(tape_catalog);
    }
    let mut last_error = None;
    let mut notes = Vec::new();
    for (from, ((dev, label), tape_catalog)) in
        devices.iter().zip(tape_catalogs.iter_mut()).enumerate()
    {
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
            Ok(read) if read.catalog.set_id != label.set_id => {
                last_error = Some(RestoreError::Set(format!(
                    "device {}: catalog belongs to another set",
                    dev.path().display()
                )))
            }
            Ok(read) if read.digest != label.catalog_digest => {
                let why = format!(
                    "device {}: its catalog does not hash to the catalog digest in its label (altered or damaged): not used",
                    dev.path().display()
                );
                notes.push(why.clone());
                last_error = Some(RestoreError::Set(why));
            }
            Ok(read) => return finish_open(devices, read.catalog, from, key, notes),
            Err(e) => last_error = Some(e.into()),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        RestoreError::Set(format!(
            "set {}: none of the given devices holds a completed catalog (crashed or interrupted run?): use `pbio scan` to recover records",
            devices[0].1.set_id
        ))
    }))
}

/// Check every device against the catalog read from `devices[from]` (and,
/// with `key`, the catalog's MAC). A device without a catalog of its own
/// (it failed during the backup) is read up to the end that the set's
/// catalog records for it.
fn finish_open(
    mut devices: Vec<(Box<dyn Device>, Label)>,
    catalog: Catalog,
    from: usize,
    key: Option<&MacKey>,
    notes: Vec<String>,
) -> Result<OpenSet, RestoreError> {
    let source = devices[from].0.path().display().to_string();
    if let Some(key) = key {
        if !crate::format::hash_eq(&catalog.mac_for(key), &catalog.mac) {
            return Err(RestoreError::Set(if catalog.mac == [0; 32] {
                format!(
                    "device {source}: the set's catalog carries no MAC (the set was written without a key), but --key was given: refusing it"
                )
            } else {
                format!(
                    "device {source}: the catalog's MAC does not match the key: written with another key, or altered: refusing it"
                )
            }));
        }
    }
    let count = catalog.devices.len();
    for (dev, l) in devices.iter_mut() {
        let name = dev.path().display();
        if l.device_count as usize != count || l.device_index as usize >= count {
            return Err(RestoreError::Set(format!(
                "device {name}: its label says device {} of {}, but the set's catalog (read from {source}) lists {count} devices: refusing it",
                l.device_index, l.device_count
            )));
        }
        if l.chunk_bytes != catalog.chunk_bytes || l.created_unix_ns != catalog.created_unix_ns {
            return Err(RestoreError::Set(format!(
                "device {name}: its label disagrees with the set's catalog (read from {source}) on the chunk size or the creation time: refusing it"
            )));
        }
        if l.state != LabelState::Complete {
            l.data_end = catalog.devices[l.device_index as usize].data_end;
        }
    }
    let keyed = catalog.mac != [0; 32] || devices.iter().any(|(_, l)| l.mac != [0; 32]);
    Ok(OpenSet {
        devices,
        catalog,
        unreadable: notes,
        keyed,
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
    /// (restored file, offset, length, BLAKE3 of the payload) of the
    /// records with a target.
    records: Vec<(u32, DigestRecord)>,
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
                        shown_name(&f.path),
                        set_id,
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
    let mut per_file: Vec<Vec<DigestRecord>> = vec![Vec::new(); catalog.files.len()];
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
        for (file, record) in read.records {
            per_file[file as usize].push(record);
        }
    }
    // Per file of the restored catalog: complete and verified, or why not.
    let mut verdicts = vec![tree::Verdict::Good; catalog.files.len()];
    for (i, f) in catalog.files.iter().enumerate() {
        if !wanted[i] || !f.kind.has_data() {
            continue;
        }
        // A range held twice (a failed device's copy and the survivor's)
        // yields the same records; count each once. Two different records
        // at one offset both count: the digest then fails.
        let records = &mut per_file[i];
        records.sort_unstable();
        records.dedup();
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
                    "file {}: content digest mismatch (records missing, altered, substituted or duplicated on the devices: {})",
                    shown_name(&f.path),
                    devices_holding(sets, sources[i]).join(", ")
                )
            } else {
                format!(
                    "file {}: not restored completely: part of it is on {}, which could not be read (above)",
                    shown_name(&f.path),
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
/// `records` are (offset, length, hash), sorted by offset.
fn zero_holes(
    target: &File,
    size_bytes: u64,
    records: &[DigestRecord],
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

/// The byte ranges a set's catalog assigns to one device, per file:
/// `(file_id, start, end)`, sorted, overlapping and adjacent segments of
/// a file merged. Built once per device read; every Data record read from
/// the device must lie inside one of them.
struct DeviceRanges(Vec<(u32, u64, u64)>);

impl DeviceRanges {
    fn new(catalog: &Catalog, device: u32) -> DeviceRanges {
        let mut ranges: Vec<(u32, u64, u64)> = catalog
            .segments
            .iter()
            .filter(|s| s.device == device)
            // `Catalog::validate` rules out an overflow.
            .map(|s| (s.file_id, s.offset, s.offset + s.length))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u64, u64)> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if last.0 == r.0 && r.1 <= last.2 => last.2 = last.2.max(r.2),
                _ => merged.push(r),
            }
        }
        DeviceRanges(merged)
    }

    /// Whether `[offset, offset + bytes)` of `file` lies inside one range.
    fn contains(&self, file: u32, offset: u64, bytes: u64) -> bool {
        let Some(end) = offset.checked_add(bytes) else {
            return false;
        };
        // The last range of any file starting at or before (file, offset).
        let after = self
            .0
            .partition_point(|&(f, start, _)| (f, start) <= (file, offset));
        after > 0 && {
            let (f, start, range_end) = self.0[after - 1];
            f == file && start <= offset && end <= range_end
        }
    }
}

/// Why a Data record of this set may not be written, checked against the
/// device's label and the set's catalog (docs/FORMAT.md, section 5: what
/// one header cannot check): None when it may. Its CRC is checked after.
fn record_refusal(
    header: &RecordHeader,
    label: &Label,
    catalog: &Catalog,
    ranges: &DeviceRanges,
) -> Option<String> {
    if header.device_index != label.device_index {
        return Some(format!(
            "record says it is on device {}, but this device's label says device {}",
            header.device_index, label.device_index
        ));
    }
    if header.payload_bytes > label.chunk_bytes {
        return Some(format!(
            "record payload of {} bytes is larger than the set's chunk ({} bytes)",
            header.payload_bytes, label.chunk_bytes
        ));
    }
    let Some(file) = catalog.files.get(header.file_id as usize) else {
        return Some(format!(
            "record names file id {} not in the catalog",
            header.file_id
        ));
    };
    let path = shown_name(&file.path);
    if !file.kind.has_data() || file.origin != 0 {
        return Some(format!(
            "record of {path} (file id {}), which has no data in this set",
            header.file_id
        ));
    }
    if header.file_size != file.size_bytes {
        return Some(format!(
            "record of file {path} says the file has {} bytes, the catalog {}",
            header.file_size, file.size_bytes
        ));
    }
    if !ranges.contains(
        header.file_id,
        header.file_offset,
        header.payload_bytes.into(),
    ) {
        return Some(format!(
            "record of file {path} at file offset {} ({} bytes) lies outside the segments the catalog assigns to this device",
            header.file_offset, header.payload_bytes
        ));
    }
    None
}

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
    let ranges = DeviceRanges::new(catalog, label.device_index);
    // An image restore also checks every record against the target's size
    // (the catalog's segments already keep records inside the file, and
    // the file inside the target: defense in depth).
    let target_bytes = match destination {
        Destination::Device(target) => Some(
            target_size_bytes(target)
                .map_err(|e| RestoreError::Set(format!("the size of the restore target: {e}")))?,
        ),
        Destination::Tree(_) | Destination::Nowhere => None,
    };
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
            if let Some(why) = record_refusal(&header, label, catalog, &ranges) {
                out.errors.push(format!(
                    "device {name}: offset {position}: {why}: not written"
                ));
                return Ok(Flow::Continue);
            }
            let file = &catalog.files[header.file_id as usize];
            let path = shown_name(&file.path);
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
            let end = header.file_offset + u64::from(header.payload_bytes);
            if target_bytes.is_some_and(|bytes| end > bytes) {
                out.errors.push(format!(
                    "device {name}: offset {position}: record of file {path} at file offset {} ({} bytes) lies beyond the end of the restore target ({} bytes): not written",
                    header.file_offset,
                    header.payload_bytes,
                    target_bytes.unwrap_or(0)
                ));
                return Ok(Flow::Continue);
            }
            // The file digest proves the bytes (a CRC32C can be forged).
            out.records.push((
                target,
                (
                    header.file_offset,
                    header.payload_bytes,
                    crate::format::payload_hash(payload),
                ),
            ));
            let Some(w) = writer.as_mut() else {
                return Ok(Flow::Continue);
            };
            let restored_path = shown_name(&restored.files[target as usize].path);
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
                    Ok(f) => open = Some((target, w.add_file(f, restored_path))),
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

/// The size of an image restore's target: a block device's capacity, or
/// a file's length.
fn target_size_bytes(target: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileTypeExt;
    let meta = target.metadata()?;
    if meta.file_type().is_block_device() {
        crate::device::block::size_bytes(target)
    } else {
        Ok(meta.len())
    }
}

#[cfg(test)]
mod tests {
    use super::{record_refusal, uncovered, DeviceRanges};
    use crate::format::catalog::tests::sample;
    use crate::format::{Label, LabelState, RecordHeader, RecordKind};

    #[test]
    fn device_ranges_merge_and_contain() {
        let mut c = sample();
        // File 1: [0, 6M) on device 0 (two overlapping segments), [6M, 10M) on 1.
        let mut extra = c.segments[0];
        extra.offset = 1 << 20;
        extra.length = 2 << 20;
        c.segments.push(extra);
        let zero = DeviceRanges::new(&c, 0);
        assert_eq!(zero.0, vec![(1, 0, 6 << 20)]);
        assert!(zero.contains(1, 0, 1 << 20));
        assert!(zero.contains(1, 5 << 20, 1 << 20));
        assert!(!zero.contains(1, 5 << 20, (1 << 20) + 1));
        assert!(!zero.contains(1, 6 << 20, 1));
        assert!(!zero.contains(1, 1 << 40, 1 << 20));
        assert!(!zero.contains(1, u64::MAX, 2));
        assert!(!zero.contains(0, 0, 0));
        assert!(!zero.contains(4, 0, 0));
        let one = DeviceRanges::new(&c, 1);
        assert_eq!(one.0, vec![(1, 6 << 20, 10 << 20), (4, 0, 0)]);
        assert!(one.contains(1, 9 << 20, 1 << 20));
        assert!(!one.contains(1, 0, 4096));
        // The empty file's empty range.
        assert!(one.contains(4, 0, 0));
        assert!(!one.contains(4, 0, 1));
    }

    #[test]
    fn records_are_checked_against_label_and_catalog() {
        let c = sample();
        let label = Label {
            set_id: c.set_id,
            device_index: 0,
            device_count: 2,
            chunk_bytes: c.chunk_bytes,
            block_bytes: 4096,
            created_unix_ns: c.created_unix_ns,
            state: LabelState::Complete,
            catalog_offset: 4096,
            catalog_bytes: 100,
            data_end: 4096,
            catalog_digest: [0; 32],
            mac: [0; 32],
        };
        let ranges = DeviceRanges::new(&c, 0);
        let good = RecordHeader {
            kind: RecordKind::Data,
            set_id: c.set_id,
            device_index: 0,
            sequence: 0,
            file_id: 1,
            segment_id: 0,
            file_offset: 5 << 20,
            payload_bytes: 1 << 20,
            file_size: 10 << 20,
            payload_crc: 1,
        };
        assert_eq!(record_refusal(&good, &label, &c, &ranges), None);
        let refused = |h: RecordHeader, want: &str| {
            let why = record_refusal(&h, &label, &c, &ranges).expect("refused");
            assert!(why.contains(want), "{why}");
        };
        refused(
            RecordHeader {
                device_index: 1,
                ..good
            },
            "on device 1",
        );
        refused(
            RecordHeader {
                payload_bytes: (1 << 20) + 4096,
                file_offset: 0,
                ..good
            },
            "larger than the set's chunk",
        );
        refused(
            RecordHeader {
                file_id: 99,
                ..good
            },
            "file id 99 not in the catalog",
        );
        refused(RecordHeader { file_id: 0, ..good }, "has no data");
        refused(
            RecordHeader {
                file_size: 1 << 40,
                ..good
            },
            "says the file has",
        );
        // On the other device's segment, and beyond the file's end.
        refused(
            RecordHeader {
                file_offset: 6 << 20,
                ..good
            },
            "lies outside the segments",
        );
        refused(
            RecordHeader {
                file_offset: 10 << 20,
                ..good
            },
            "lies outside the segments",
        );
    }

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
