//! The select phase of a restore, before any device is read: where each
//! file's data is, which devices to read, which files are complete on them.

use crate::format::{FileKind, SetId};

use super::problem::Problem;
use super::{Action, Missing, OpenSet, Report, NOWHERE};

/// Missing byte ranges of one file: (offset, length, device index).
pub(super) type Ranges = Vec<(u64, u64, u32)>;

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
        let ranges = missing_ranges(f.size_bytes, &mut covered[file], &mut absent[file]);
        if !ranges.is_empty() {
            out[file] = Some(ranges);
        }
    }
    out
}

/// The ranges of a file of `size_bytes` that the `covered` ranges (its
/// segments on the devices read) leave out, each with the absent device
/// of `absent` (its other segments) that holds it, or `NOWHERE`. Sorts
/// both lists.
pub(super) fn missing_ranges(
    size_bytes: u64,
    covered: &mut [(u64, u64)],
    absent: &mut [(u64, u64, u32)],
) -> Ranges {
    covered.sort_unstable();
    absent.sort_unstable();
    let mut ranges = Vec::new();
    for (gap_start, gap_end) in uncovered(0, size_bytes, covered) {
        let mut at = gap_start;
        for &(start, end, device) in absent.iter() {
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
    ranges
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
pub(super) enum DataSource {
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
pub(super) const NO_TARGET: u32 = u32::MAX;

/// Per file of one set: the file of the restored catalog its records
/// belong to, or `NO_TARGET`.
type Targets = Vec<u32>;

/// The parts of [start, end) not covered by `have` (sorted by start).
pub(super) fn uncovered(start: u64, end: u64, have: &[(u64, u64)]) -> Vec<(u64, u64)> {
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

/// Where each file of `sets[0]`'s catalog has its data; errors for
/// references the given sets do not satisfy.
fn data_sources(
    sets: &[&OpenSet],
    ancestor_sets: &[Option<usize>],
    errors: &mut Vec<Problem>,
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
                    errors.push(Problem::ChainDisagrees {
                        path: f.path.clone(),
                        set: set_id,
                        file_id: f.origin_file_id,
                    });
                    DataSource::Broken
                }
            }
        })
        .collect()
}

/// What a run restores, per file of the restored catalog (`sets[0]`).
pub(super) struct Selection {
    /// Where each file's data is.
    pub(super) sources: Vec<DataSource>,
    /// Per set, the device indexes to read.
    pub(super) reading: Vec<Vec<u32>>,
    /// Asked for (`--only`, `--strip-components`, or the one file of an
    /// image restore), complete on the given devices and, with
    /// `--keep-old-files` or `--overwrite-newer-only`, not kept as the
    /// destination holds it.
    pub(super) selected: Vec<bool>,
    /// Whose data is read: the selected files and the targets of selected
    /// hard links (less the entries the destination refuses).
    pub(super) wanted: Vec<bool>,
    /// Per set, the stripes to rebuild from parity (`rebuild::plan`).
    pub(super) rebuild: Vec<super::rebuild::Plan>,
}

/// Select phase, before any device is read: where each file's data is,
/// which devices to read, which files are complete on them and asked for.
/// Invariant: a file is selected only when every byte of it (and of a
/// hard link's target) is on a device read; the missing ranges of the
/// asked-for files are in `report.missing`, sorted by path.
pub(super) fn select(
    sets: &[&OpenSet],
    ancestor_sets: &[Option<usize>],
    action: &Action<'_>,
    taken: &[bool],
    report: &mut Report,
) -> Selection {
    let catalog = &sets[0].catalog;
    let sources = data_sources(sets, ancestor_sets, &mut report.errors);
    let (reading, mut coverages): (Vec<Vec<u32>>, Vec<_>) =
        sets.iter().map(|s| devices_to_read(s)).unzip();
    // `--parity`: what the given devices can rebuild is not missing.
    let rebuild: Vec<super::rebuild::Plan> = sets
        .iter()
        .zip(&reading)
        .zip(coverages.iter_mut())
        .map(|((set, reading), coverage)| super::rebuild::plan(set, reading, coverage))
        .collect();
    let (complete, missing) = completeness(sets, &sources, &coverages);
    let chosen = |i: usize| match action {
        Action::RestoreToDevice { file, .. } => i == *file as usize,
        _ => taken[i],
    };
    let selected: Vec<bool> = (0..catalog.files.len())
        .map(|i| complete[i] && chosen(i))
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
            Action::RestoreToDevice { file, .. } => m.file == *file as usize,
            _ => taken[m.file],
        })
        .map(|m| m.missing)
        .collect();
    Selection {
        sources,
        reading,
        selected,
        wanted,
        rebuild,
    }
}

/// A file's missing ranges, with its index in the restored catalog.
struct FileMissing {
    file: usize,
    missing: Missing,
}

/// Per file of the restored catalog, whether its data is all on the
/// devices read (a hard link: whether its target's is), and the missing
/// ranges of those whose data is not, sorted by path.
fn completeness(
    sets: &[&OpenSet],
    sources: &[DataSource],
    coverages: &[Vec<Option<Ranges>>],
) -> (Vec<bool>, Vec<FileMissing>) {
    let catalog = &sets[0].catalog;
    let mut complete = vec![true; catalog.files.len()];
    let mut missing = Vec::new();
    for (i, f) in catalog.files.iter().enumerate() {
        match sources[i] {
            DataSource::None => {}
            DataSource::Broken => complete[i] = false,
            DataSource::In { set, file } => {
                if let Some(ranges) = &coverages[set][file as usize] {
                    complete[i] = false;
                    missing.push(FileMissing {
                        file: i,
                        missing: Missing {
                            path: f.path.clone(),
                            set_id: sets[set].catalog.set_id,
                            set_given: true,
                            ranges: ranges.clone(),
                        },
                    });
                }
            }
            DataSource::Absent { set_id } => {
                complete[i] = false;
                missing.push(FileMissing {
                    file: i,
                    missing: Missing {
                        path: f.path.clone(),
                        set_id,
                        set_given: false,
                        ranges: vec![(0, f.size_bytes, NOWHERE)],
                    },
                });
            }
        }
    }
    // A hard link whose target's data is missing is named too, with the
    // target's missing ranges: it cannot be made without them.
    let mut links = Vec::new();
    for (i, f) in catalog.files.iter().enumerate() {
        if f.kind == FileKind::HardLink && !complete[f.hardlink_to as usize] {
            complete[i] = false;
            let target = missing.iter().find(|m| m.file == f.hardlink_to as usize);
            if let Some(t) = target {
                let mut named = t.missing.clone();
                named.path = f.path.clone();
                links.push(FileMissing {
                    file: i,
                    missing: named,
                });
            }
        }
    }
    missing.extend(links);
    missing.sort_by(|a, b| a.missing.path.cmp(&b.missing.path));
    (complete, missing)
}

/// Per set, which restored file each of its files' records belong to.
pub(super) fn targets(sets: &[&OpenSet], selection: &Selection) -> Vec<Targets> {
    let mut targets: Vec<Targets> = sets
        .iter()
        .map(|s| vec![NO_TARGET; s.catalog.files.len()])
        .collect();
    for (i, source) in selection.sources.iter().enumerate() {
        if let (true, DataSource::In { set, file }) = (selection.wanted[i], *source) {
            targets[set][file as usize] = i as u32;
        }
    }
    targets
}
