//! Restore and verify: one reader thread and ring per device, each
//! streaming its device in media order, writing payloads to their file
//! offsets, in parallel across devices. Any subset of a set's devices
//! restores every file whose segments it holds and names the missing byte
//! ranges of the rest.

pub mod scan;
pub mod tree;
pub mod writer;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::device::{self, Access, Device, DeviceSpec, Mode};
use crate::engine::media::{self, MediaError};
use crate::engine::stream::{self, Flow, Item, StreamError};
use crate::format::{Catalog, FileKind, Label, LabelState, RecordKind};

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

/// Open the given devices, check they belong to one complete set, and read
/// the catalog (from the first device whose catalog reads back correctly).
pub fn open_set(specs: &[DeviceSpec]) -> Result<OpenSet, RestoreError> {
    if specs.is_empty() {
        return Err(RestoreError::Set("no devices given (use --dev)".into()));
    }
    let mut devices: Vec<(Box<dyn Device>, Label)> = Vec::with_capacity(specs.len());
    let mut tape_catalogs: Vec<Option<Result<Catalog, MediaError>>> = Vec::new();
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
        if let Some((first, first_label)) = devices.first() {
            if first_label.set_id != label.set_id {
                return Err(RestoreError::Set(format!(
                    "devices {} and {} hold different sets ({} and {})",
                    first.path().display(),
                    spec.path.display(),
                    crate::engine::set_id_hex(&first_label.set_id),
                    crate::engine::set_id_hex(&label.set_id)
                )));
            }
        }
        if let Some((other, _)) = devices
            .iter()
            .find(|(_, l)| l.device_index == label.device_index)
        {
            return Err(RestoreError::Set(format!(
                "devices {} and {} are both device {} of the set (the same device given twice?)",
                other.path().display(),
                spec.path.display(),
                label.device_index
            )));
        }
        devices.push((dev, label));
        tape_catalogs.push(tape_catalog);
    }
    if devices.is_empty() {
        return Err(RestoreError::Set(format!(
            "no given device can be read: {}",
            unreadable.join("; ")
        )));
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
                return finish_open(devices, catalog, &catalog_devices, unreadable);
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
    unreadable: Vec<String>,
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
        unreadable,
    })
}

/// The device index of a missing range that no device of the set holds.
pub const NOWHERE: u32 = u32::MAX;

/// A file that cannot be restored from the given devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub path: Vec<u8>,
    /// (offset, length, device index) of every range not on the given
    /// devices; the device is `NOWHERE` when no device of the set holds it.
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
    Restore { to: &'a Path },
    Verify,
}

fn matches_only(path: &[u8], only: &[Vec<u8>]) -> bool {
    only.is_empty()
        || only.iter().any(|o| {
            let o = o.strip_suffix(b"/").unwrap_or(o);
            path == o || (path.starts_with(o) && path.get(o.len()) == Some(&b'/'))
        })
}

/// Which files are complete on the given devices (every byte of a regular
/// file covered by a segment on a present device: a range may be held
/// twice, when a failed device's work was written again on the survivors),
/// and for the others the uncovered ranges, each with the absent device
/// that holds it, or `NOWHERE` when no device does (the set is incomplete:
/// the survivors of a backup lacked the room).
fn completeness(set: &OpenSet, present: &[u32]) -> (Vec<bool>, Vec<Missing>) {
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
    let mut complete = vec![true; catalog.files.len()];
    let mut missing = Vec::new();
    for (file, f) in catalog.files.iter().enumerate() {
        if f.kind != FileKind::Regular || f.size_bytes == 0 {
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
            complete[file] = false;
            missing.push(Missing {
                path: f.path.clone(),
                ranges,
            });
        }
    }
    for (i, f) in catalog.files.iter().enumerate() {
        if f.kind == FileKind::HardLink && !complete[f.hardlink_to as usize] {
            complete[i] = false;
        }
    }
    missing.sort_by(|a, b| a.path.cmp(&b.path));
    (complete, missing)
}

struct DeviceRead {
    records: Vec<(u32, u64, u32, u32)>,
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

/// Restore (or verify) the set from the opened devices.
pub fn run(set: &OpenSet, action: Action<'_>, only: &[Vec<u8>]) -> Result<Report, RestoreError> {
    let started = std::time::Instant::now();
    let catalog = &set.catalog;
    // Devices that failed during the backup are read only when the others
    // do not hold everything asked for (their copies then count only where
    // they read back with good CRCs: the digests decide).
    let is_failed = |index: u32| {
        catalog.devices.get(index as usize).map(|d| d.state)
            == Some(crate::format::DeviceState::Failed)
    };
    let trusted: Vec<u32> = set
        .devices
        .iter()
        .map(|(_, l)| l.device_index)
        .filter(|&i| !is_failed(i))
        .collect();
    let (mut complete, mut missing) = completeness(set, &trusted);
    let mut reading = trusted.clone();
    if !missing.is_empty() && trusted.len() < set.devices.len() {
        reading = set.devices.iter().map(|(_, l)| l.device_index).collect();
        (complete, missing) = completeness(set, &reading);
    }
    let selected: Vec<bool> = catalog
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| complete[i] && matches_only(&f.path, only))
        .collect();
    // A hard link needs its target's data even when only the link was asked for.
    let mut wanted = selected.clone();
    for (i, f) in catalog.files.iter().enumerate() {
        if selected[i] && f.kind == FileKind::HardLink {
            wanted[f.hardlink_to as usize] = true;
        }
    }
    let missing: Vec<Missing> = missing
        .into_iter()
        .filter(|m| matches_only(&m.path, only))
        .collect();
    let to = match action {
        Action::Restore { to } => {
            tree::prepare(to, catalog, &wanted)?;
            Some(to)
        }
        Action::Verify => None,
    };

    let results: Vec<Result<DeviceRead, RestoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = set
            .devices
            .iter()
            .filter(|(_, label)| reading.contains(&label.device_index))
            .map(|(dev, label)| {
                let wanted = &wanted;
                scope.spawn(move || read_device(dev.as_ref(), label, catalog, wanted, to))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader thread panicked"))
            .collect()
    });
    let mut report = Report {
        missing,
        ..Report::default()
    };
    let mut per_file: Vec<Vec<(u64, u32, u32)>> = vec![Vec::new(); catalog.files.len()];
    for result in results {
        // A device that cannot be read is reported; what the others hold is
        // still restored, and the digests name the files it leaves short.
        let read = match result {
            Ok(read) => read,
            Err(e @ (RestoreError::Stream(_) | RestoreError::Media(_))) => {
                report.errors.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        report.payload_bytes += read.payload_bytes;
        report.records += read.records.len() as u64;
        report.errors.extend(read.errors);
        for (file, offset, len, crc) in read.records {
            per_file[file as usize].push((offset, len, crc));
        }
    }
    for (i, f) in catalog.files.iter().enumerate() {
        if !wanted[i] || f.kind != FileKind::Regular {
            continue;
        }
        // A range held twice (a failed device's copy and the survivor's)
        // yields the same records; count each once.
        let records = &mut per_file[i];
        records.sort_unstable();
        records.dedup_by_key(|r| r.0);
        let digest = crate::format::file_digest(records);
        if digest != f.digest {
            report.errors.push(format!(
                "file {}: content digest mismatch (records missing, altered or duplicated on the devices)",
                String::from_utf8_lossy(&f.path)
            ));
        }
    }
    if let Some(to) = to {
        tree::finish(to, catalog, &wanted)?;
    }
    report.files_restored = selected.iter().filter(|&&s| s).count();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Destination files kept open at once by one reader's queued writes.
const OPEN_FILES_MAX: usize = 128;

fn read_device(
    dev: &dyn Device,
    label: &Label,
    catalog: &Catalog,
    wanted: &[bool],
    to: Option<&Path>,
) -> Result<DeviceRead, RestoreError> {
    let name = dev.path().display().to_string();
    let mut out = DeviceRead {
        records: Vec::new(),
        payload_bytes: 0,
        errors: Vec::new(),
    };
    // The destination file the previous record went to: records of one
    // file are contiguous on media, so one open file at a time suffices.
    let mut open: Option<(u32, usize)> = None;
    let mut writer = match to {
        Some(_) => Some(writer::Writer::new().map_err(|e| {
            RestoreError::Set(format!("device {name}: io_uring for restore writes: {e}"))
        })?),
        None => None,
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
            let path = String::from_utf8_lossy(&file.path);
            let crc = crate::format::crc32c(payload);
            if crc != header.payload_crc {
                out.errors.push(format!(
                "device {name}: offset {position}: file {path} at file offset {}: payload checksum mismatch (stored {:#010x}, computed {crc:#010x})",
                header.file_offset, header.payload_crc
            ));
                return Ok(Flow::Continue);
            }
            out.records.push((
                header.file_id,
                header.file_offset,
                header.payload_bytes,
                crc,
            ));
            out.payload_bytes += payload.len() as u64;
            let (Some(root), true) = (to, wanted[header.file_id as usize]) else {
                return Ok(Flow::Continue);
            };
            let w = writer.as_mut().expect("a writer when restoring");
            if open.map(|(id, _)| id) != Some(header.file_id) {
                if w.open_files() >= OPEN_FILES_MAX {
                    if let Err(e) = w.finish() {
                        result = Err(RestoreError::Set(e));
                        return Ok(Flow::Stop);
                    }
                }
                let target: PathBuf = tree::safe_join(root, &file.path)?;
                match OpenOptions::new().write(true).open(&target) {
                    Ok(f) => open = Some((header.file_id, w.add_file(f, path.to_string()))),
                    Err(error) => {
                        result = Err(RestoreError::Set(format!(
                            "open {}: {error}",
                            target.display()
                        )));
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
