//! The phases of a restore after the devices are read: the records
//! gathered per file, each file's verdict, an image's holes and sync.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::format::{Catalog, DigestRecord};

use super::problem::Problem;
use super::read::{DeviceRead, Reader};
use super::select::{uncovered, DataSource, Selection};
use super::{tree, OpenSet, Report, RestoreError, TargetOp};

/// The records read, of every file, in one list sorted by (file, record),
/// each record once: a range held twice (a failed device's copy and the
/// survivor's) yields the same records and counts once; two different
/// records at one offset both stay (the digest then fails). One list, not
/// one per file: a file of a large tree has one record or none, and a
/// `Vec` per file cost 24 bytes for every file and 192 for the first
/// record (issue 23, PERF.md "#23 memory").
pub(super) struct Records(Vec<(u32, DigestRecord)>);

impl Records {
    /// The records of `file`, sorted by offset.
    pub(super) fn of(&self, file: usize) -> Vec<DigestRecord> {
        let Ok(file) = u32::try_from(file) else {
            return Vec::new();
        };
        let start = self.0.partition_point(|r| r.0 < file);
        let end = start + self.0[start..].partition_point(|r| r.0 == file);
        self.0[start..end].iter().map(|r| r.1).collect()
    }
}

/// The records read, per restored file, and the devices whose reading
/// broke off. A device that cannot be read is reported; what the others
/// hold is still restored (the files it leaves short are named with it).
/// Any other error ends the run.
pub(super) fn gather(
    results: Vec<(Reader, Result<DeviceRead, RestoreError>)>,
    report: &mut Report,
) -> Result<(Records, Vec<Reader>), RestoreError> {
    let mut records: Vec<(u32, DigestRecord)> = Vec::new();
    let mut broken: Vec<Reader> = Vec::new();
    for (reader, result) in results {
        let read = match result {
            Ok(read) => read,
            Err(
                e @ (RestoreError::Stream(_)
                | RestoreError::Media(_)
                | RestoreError::WrongVolume { .. }),
            ) => {
                report.errors.push(Problem::Unread(e));
                broken.push(reader);
                continue;
            }
            Err(e) => return Err(e),
        };
        report.payload_bytes += read.payload_bytes;
        report.records += read.records_read;
        report.errors.extend(read.errors);
        records.extend(read.records);
    }
    records.sort_unstable();
    records.dedup();
    Ok((Records(records), broken))
}

/// Verdict phase: per file of the restored catalog, complete and verified,
/// or why not. Invariant: a wanted file with data is Good only when the
/// digest over its records (each range once) is the catalog's.
pub(super) fn verdicts(
    sets: &[&OpenSet],
    selection: &Selection,
    records: &Records,
    broken: &[Reader],
    report: &mut Report,
) -> Vec<tree::Verdict> {
    let catalog = &sets[0].catalog;
    let mut verdicts = vec![tree::Verdict::Good; catalog.files.len()];
    for (i, f) in catalog.files.iter().enumerate() {
        if !selection.wanted[i] || !f.kind.has_data() {
            continue;
        }
        // Each record once (`Records`).
        if crate::format::file_digest(&mut records.of(i)) == f.digest {
            continue;
        }
        // Data of it on a device whose reading broke off: that is why.
        let on_broken = on_broken(sets, selection.sources[i], broken);
        let path = f.path.clone();
        let why = if on_broken.is_empty() {
            let devices = devices_holding(sets, selection.sources[i]);
            Problem::Digest { path, devices }
        } else {
            let devices = on_broken.into_iter().map(str::to_string).collect();
            Problem::OnUnread { path, devices }
        };
        let failed = tree::Verdict::Failed(why.to_string());
        report.errors.push(why);
        verdicts[i] = failed;
    }
    verdicts
}

/// Files with records on absent devices that a planned rebuild could not
/// make after all (a member of their stripe damaged on a given device):
/// named in `report.missing` with those ranges, as a file with too many
/// devices missing is, in place of their digest mismatch (which those
/// ranges explain). Their verdict stays failed: none is restored.
pub(super) fn name_unrebuilt(
    sets: &[&OpenSet],
    catalog: &Catalog,
    unrebuilt: super::rebuild::Unrebuilt,
    report: &mut Report,
) {
    let mut named: Vec<u32> = Vec::new();
    for (s, target, offset, length, device) in unrebuilt {
        let Some(f) = catalog.files.get(target as usize) else {
            continue;
        };
        let at = report.missing.iter().position(|m| m.path == f.path);
        let at = at.unwrap_or_else(|| {
            report.missing.push(super::Missing {
                path: f.path.clone(),
                set_id: sets[s].catalog.set_id,
                set_given: true,
                ranges: Vec::new(),
            });
            report.missing.len() - 1
        });
        report.missing[at].ranges.push((offset, length, device));
        named.push(target);
    }
    for m in &mut report.missing {
        m.ranges.sort_unstable();
        m.ranges.dedup();
    }
    report.missing.sort_by(|a, b| a.path.cmp(&b.path));
    report.errors.retain(|p| match p {
        Problem::Digest { path, .. } => !named.iter().any(|&t| {
            catalog
                .files
                .get(t as usize)
                .is_some_and(|f| f.path == *path)
        }),
        _ => true,
    });
}

/// The devices whose reading broke off that hold records of a file, by path.
fn on_broken<'a>(sets: &[&OpenSet], source: DataSource, broken: &'a [Reader]) -> Vec<&'a str> {
    let DataSource::In { set, file } = source else {
        return Vec::new();
    };
    let segments = &sets[set].catalog.segments;
    broken
        .iter()
        .filter(|(s, device, _)| {
            *s == set
                && segments
                    .iter()
                    .any(|g| g.file_id == file && g.device == *device && g.records > 0)
        })
        .map(|(_, _, path)| path.as_str())
        .collect()
}

/// Finish phase of an image restore: the holes written as zeros, then the
/// target synced. Invariant: once it returns, the target holds exactly
/// the image, durably.
pub(super) fn finish_image(
    target: &File,
    catalog: &Catalog,
    wanted: &[bool],
    records: &Records,
) -> Result<(), RestoreError> {
    for (i, f) in catalog.files.iter().enumerate() {
        if wanted[i] {
            zero_holes(target, f.size_bytes, &records.of(i))?;
        }
    }
    target.sync_all().map_err(|error| RestoreError::Target {
        op: TargetOp::Sync,
        error,
    })
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
            target
                .write_all_at(&zeros[..n], at)
                .map_err(|error| RestoreError::Target {
                    op: TargetOp::Zeros { offset: at },
                    error,
                })?;
            at += n as u64;
        }
    }
    Ok(())
}
