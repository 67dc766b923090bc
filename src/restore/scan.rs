//! `restore --scan`: restore the files of a set from its records alone, on
//! devices with no usable label or catalog (a crashed run, an overwritten
//! catalog). The records are found by the media layer's scanner
//! (`media::scan`, which also chooses the set); this writes them to files.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use nix::fcntl::OFlag;

use super::at::Root;
use super::tree::{self, Attrs, Meta, TreeError};
use super::RestoreError;
use crate::device::Device;
use crate::format::parity::ParityHeader;
use crate::format::{FileInfo, RecordHeader, RecordKind, SetId, HEADER_BYTES, PAYLOAD_BYTES_MAX};
use crate::io::buffers::BufferPool;
use crate::media::stream::{self, Flow, Item};
use crate::units::shown_name;

/// A file a scan found records of but could not restore whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incomplete {
    pub path: Vec<u8>,
    /// Distinct payload bytes found, and what the file stores in all.
    pub found_bytes: u64,
    pub data_bytes: u64,
    pub why: &'static str,
    /// With `keep_partial`: the name its partial data is kept under.
    pub kept_as: Option<Vec<u8>>,
    /// `--parity`: the ranges of it in stripes that could not be rebuilt
    /// (offset, length, device index).
    pub ranges: Vec<(u64, u64, u32)>,
}

#[derive(Debug, Default)]
pub struct ScanRestoreReport {
    pub set_id: Option<SetId>,
    /// Files restored whole (every stored byte found, every CRC good).
    pub restored: Vec<Vec<u8>>,
    pub payload_bytes: u64,
    pub incomplete: Vec<Incomplete>,
    /// Records of the set skipped: payload CRC mismatch, damaged padding,
    /// a range outside the file.
    pub bad_records: u64,
    /// Records of other sets found on the devices and not restored: (set, count).
    pub other_sets: Vec<(SetId, u64)>,
    /// Entries refused or failed one by one (unsafe name, a directory
    /// where the file must go, an I/O error), each naming the entry.
    pub errors: Vec<String>,
    /// Metadata not restored (an extended attribute the destination
    /// refused, or one that did not fit the records), naming file and attribute.
    pub warnings: Vec<String>,
    /// `--parity`: the devices of the set not given (index; no path: that
    /// is in the catalog), the records rebuilt from parity, the damaged
    /// members of stripes that were rebuilt from the others.
    pub rebuild: super::RebuildSummary,
    /// `--parity`: data records lost (in stripes that could not be
    /// rebuilt) of files no record of which was found to name them:
    /// (file id, offset, length, device index).
    pub lost: Vec<(u32, u64, u64, u32)>,
}

/// What a scan learnt about one file.
pub(super) struct Seen {
    /// What its records say (without the xattrs only the first carries).
    info: FileInfo,
    /// Its extended attributes, from its first record, once found; and
    /// whether some did not fit that record.
    xattrs: Option<(Vec<crate::format::Xattr>, bool)>,
    file_size: u64,
    /// (offset, length) of every good record written to it.
    ranges: Vec<(u64, u64)>,
    /// A record of it failed its checks.
    damaged: bool,
    /// Its temporary file below the root, once a good record was found.
    temp: Option<Vec<u8>>,
    /// Why it is refused (unsafe name, cannot be created), once.
    refused: Option<String>,
}

/// Restore every file of set `set_id` that is complete on the given
/// devices from their records alone, with no catalog (a crashed or
/// interrupted run, a lost catalog). Records carry their file's path,
/// owner, mode, mtime and stored size (its first record also its
/// extended attributes, those that fit); a file is restored when good
/// records with distinct offsets add up to its stored size.
///
/// Everything happens below `to` through directory descriptors (`at`):
/// each file is written under a temporary name and renamed into place only
/// when complete; anything less is removed again (or with `keep_partial`
/// kept as `NAME.pbio-partial`) and reported, so a scan never leaves a
/// file with wrong content and never removes anything but its own
/// temporary files. Records of other sets are counted and reported.
/// Directories, symlinks, hard links and empty files have no data records
/// and are not recovered by a scan.
pub fn restore_from_scan(
    devs: &[Box<dyn Device>],
    to: Option<&std::path::Path>,
    set_id: SetId,
    keep_partial: bool,
) -> Result<ScanRestoreReport, RestoreError> {
    let mut report = ScanRestoreReport {
        set_id: Some(set_id),
        ..ScanRestoreReport::default()
    };
    let root = to
        .map(|to| {
            Root::open(to).map_err(|error| TreeError::Io {
                op: "open restore directory",
                path: to.display().to_string(),
                error,
            })
        })
        .transpose()?;
    let seen: Mutex<HashMap<Vec<u8>, Seen>> = Mutex::new(HashMap::new());
    let chunk_max = PAYLOAD_BYTES_MAX.min(16 << 20);
    let results: Vec<Result<DeviceScan, RestoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devs
            .iter()
            .map(|dev| {
                let (seen, root) = (&seen, root.as_ref());
                scope.spawn(move || scan_device(dev.as_ref(), set_id, chunk_max, root, seen))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scan thread panicked"))
            .collect()
    });
    let mut others: HashMap<SetId, u64> = HashMap::new();
    let mut scans = Vec::with_capacity(devs.len());
    for (r, dev) in results.into_iter().zip(devs) {
        // A device whose reading broke off: what it left short is reported
        // below as incomplete, and its temporary files are removed.
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                report
                    .errors
                    .push(format!("device {}: {e}", dev.path().display()));
                scans.push(None);
                continue;
            }
        };
        report.bad_records += r.bad;
        for (id, n) in &r.other_sets {
            *others.entry(*id).or_default() += n;
        }
        scans.push(Some(r));
    }
    // `--parity`: the data records the given devices lack (on devices not
    // given, or damaged), rebuilt from the stripes their parity records
    // describe, and taken like records read.
    let parity = super::scan_parity::rebuild(
        (set_id, chunk_max),
        devs,
        &scans,
        Sink::new(root.as_ref(), &seen, "parity rebuild".into()),
    )?;
    report.bad_records -= parity.healed;
    let mut torn = torn_at_end(&scans, &parity.healed_at);
    report.rebuild = parity.summary.clone();
    let mut names: HashMap<u32, &[u8]> = HashMap::new();
    for scan in scans.iter().flatten() {
        for (id, path) in &scan.names {
            names.entry(*id).or_insert(path);
        }
    }
    for (id, path) in &parity.names {
        names.entry(*id).or_insert(path);
    }
    let mut lost_of: HashMap<&[u8], Vec<(u64, u64, u32)>> = HashMap::new();
    for l in &parity.lost {
        match names.get(&l.0) {
            Some(path) => lost_of.entry(path).or_default().push((l.1, l.2, l.3)),
            None => report.lost.push(*l),
        }
    }
    report.other_sets = others.into_iter().collect();
    report.other_sets.sort();
    let mut seen: Vec<(Vec<u8>, Seen)> = seen
        .into_inner()
        .expect("no poisoned lock")
        .into_iter()
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = Meta::of_process();
    for (path, mut s) in seen {
        if let Some(why) = s.refused {
            report.errors.push(why);
            continue;
        }
        s.ranges.sort_unstable();
        s.ranges.dedup_by_key(|r| r.0);
        let found: u64 = s.ranges.iter().map(|r| r.1).sum();
        let why = if s.info.path_truncated {
            Some("path too long for a record header")
        } else if s.damaged && found < s.info.data_bytes {
            Some("a record failed its checks")
        } else if found != s.info.data_bytes {
            Some("records missing")
        } else {
            None
        };
        if why.is_none() {
            // Restored whole: a torn record of it at the end of a
            // device's stream whose bytes came from other records is no
            // loss, only a warning.
            torn.retain(|t| {
                let forgiven = t.path == path && covered(&s.ranges, t.file_offset, t.bytes);
                if forgiven {
                    report.bad_records -= 1;
                    report.warnings.push(format!(
                        "device {}: offset {}: a torn record at the end of its stream (written when the device failed?); its {} bytes at offset {} of {} were restored from other records",
                        devs[t.slot].path().display(),
                        t.position,
                        t.bytes,
                        t.file_offset,
                        shown_name(&path),
                    ));
                }
                !forgiven
            });
        }
        if let Some(why) = why {
            let mut kept_as = None;
            if let (Some(temp), Some(root)) = (&s.temp, &root) {
                let dropped = tree::temp_in_parent(root, temp, &path).and_then(|(dir, name)| {
                    tree::drop_file(dir.as_fd(), name, &path, keep_partial)
                });
                match dropped {
                    // Removed, or kept: the error says which.
                    Err(TreeError::Entry { .. }) if keep_partial => {
                        let mut name = path.clone();
                        name.extend_from_slice(tree::PARTIAL_SUFFIX);
                        kept_as = Some(name);
                    }
                    Err(TreeError::Entry { .. }) => {}
                    Ok(()) => {}
                    Err(error) => report.errors.push(error.to_string()),
                }
            }
            let mut ranges = lost_of.remove(path.as_slice()).unwrap_or_default();
            ranges.sort_unstable();
            report.incomplete.push(Incomplete {
                ranges,
                path,
                found_bytes: found,
                data_bytes: s.info.data_bytes,
                why,
                kept_as,
            });
            continue;
        }
        let temp = s
            .temp
            .as_ref()
            .expect("a file with data has a temporary file");
        let Some(root) = &root else {
            // Verifying: complete, nothing to place.
            report.payload_bytes += found;
            report.restored.push(path);
            continue;
        };
        let (xattrs, cut) = s.xattrs.take().unwrap_or_default();
        if cut {
            report.warnings.push(format!(
                "{}: some extended attributes did not fit its record header and are not restored",
                shown_name(&path)
            ));
        }
        let attrs = Attrs {
            uid: s.info.uid,
            gid: s.info.gid,
            mode: s.info.mode,
            mtime_sec: s.info.mtime_sec,
            mtime_nsec: s.info.mtime_nsec,
            // File flags are in the catalog only.
            flags: 0,
            xattrs: &xattrs,
        };
        let placed = tree::temp_in_parent(root, temp, &path).and_then(|(dir, name)| {
            tree::place_file(dir.as_fd(), name, &path, attrs, meta, &mut report.warnings)
        });
        match placed {
            Ok(()) => {
                report.payload_bytes += found;
                report.restored.push(path);
            }
            Err(error) => report.errors.push(error.to_string()),
        }
    }
    Ok(report)
}

/// A bad record at the end of its device's stream (a device failing
/// while it wrote its last records leaves them torn).
struct Torn {
    slot: usize,
    position: u64,
    path: Vec<u8>,
    file_offset: u64,
    bytes: u64,
}

/// The bad records that end their device's stream (no good data record
/// of the set after them on it: the records in flight when a device
/// failed), not rebuilt from parity (`healed_at`), whose header names
/// their file.
fn torn_at_end(scans: &[Option<DeviceScan>], healed_at: &[(usize, u64)]) -> Vec<Torn> {
    let mut torn = Vec::new();
    for (slot, scan) in scans.iter().enumerate() {
        let Some(scan) = scan else { continue };
        let last_good = scan
            .held
            .iter()
            .filter(|h| h.taken)
            .map(|h| h.position)
            .max();
        for h in &scan.held {
            if h.taken
                || last_good.is_some_and(|good| h.position < good)
                || healed_at.contains(&(slot, h.position))
            {
                continue;
            }
            let Some((_, Some(path))) = scan.bad_at.iter().find(|b| b.0 == h.position) else {
                continue;
            };
            torn.push(Torn {
                slot,
                position: h.position,
                path: path.clone(),
                file_offset: h.file_offset,
                bytes: u64::from(h.payload_bytes),
            });
        }
    }
    torn
}

/// Whether `ranges` (offset, length; sorted by offset) cover
/// `offset..offset + bytes`.
fn covered(ranges: &[(u64, u64)], offset: u64, bytes: u64) -> bool {
    let end = offset.saturating_add(bytes);
    let mut at = offset;
    for &(o, n) in ranges {
        if at >= end {
            break;
        }
        if o <= at && o.saturating_add(n) > at {
            at = o.saturating_add(n);
        }
    }
    at >= end
}

/// What one device's scan found besides the files.
pub(super) struct DeviceScan {
    /// Records of the set skipped as bad.
    bad: u64,
    /// Where those lie, and their file's path when their header said it.
    bad_at: Vec<(u64, Option<Vec<u8>>)>,
    /// Records of other sets, by set.
    other_sets: HashMap<SetId, u64>,
    /// Its index in the set: its label's, else the one most of its
    /// records name (None: neither).
    pub(super) index: Option<u32>,
    /// Its label's device count and chunk size, when the label reads.
    pub(super) label: Option<(u32, u32)>,
    /// Every data record of the set it holds (for `--parity`).
    pub(super) held: Vec<Held>,
    /// The parity records of the set on it: (media offset, header).
    pub(super) parity: Vec<(u64, ParityHeader)>,
    /// The file id -> path of its records taken.
    pub(super) names: HashMap<u32, Vec<u8>>,
}

/// A data record of the set a scan found (what a parity record's entry
/// names it by).
#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    /// The device index its header names.
    pub(super) index: u32,
    pub(super) sequence: u64,
    pub(super) position: u64,
    pub(super) file_id: u32,
    pub(super) file_offset: u64,
    pub(super) payload_bytes: u32,
    pub(super) payload_crc: u32,
    /// Taken (good, agreeing with its file's other records).
    pub(super) taken: bool,
}

/// What `Sink::take` did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Taken {
    /// Written (or, verifying, counted) for its file.
    Yes,
    /// Bad, or disagreeing with its file's other records: counted bad.
    Bad,
    /// Left alone: its file is refused, its path cut short, or (a
    /// rebuilt record) its range was already found.
    No,
}

/// Where the records a scan takes go: their files' temporary files below
/// `root` (None: verifying, nothing written), and what is known of each
/// file. One per reading thread.
pub(super) struct Sink<'a> {
    pub(super) root: Option<&'a Root>,
    pub(super) seen: &'a Mutex<HashMap<Vec<u8>, Seen>>,
    /// The device (or "parity rebuild") named when a file is refused.
    pub(super) name: String,
    /// The temporary file the previous record went to: (path, file).
    open: Option<(Vec<u8>, File)>,
}

impl<'a> Sink<'a> {
    pub(super) fn new(
        root: Option<&'a Root>,
        seen: &'a Mutex<HashMap<Vec<u8>, Seen>>,
        name: String,
    ) -> Self {
        Sink {
            root,
            seen,
            name,
            open: None,
        }
    }

    /// Take the data record `header` of file `info` with its (opened and
    /// decompressed) payload, `good` when every check of it passed.
    /// With `only_new`, a record whose offset its file already has is
    /// left alone (a rebuilt record never overwrites one read).
    pub(super) fn take(
        &mut self,
        header: &RecordHeader,
        info: &FileInfo,
        payload: &[u8],
        good: bool,
        only_new: bool,
    ) -> Result<Taken, RestoreError> {
        let temp = {
            let mut seen = self.seen.lock().expect("no poisoned lock");
            let s = seen.entry(info.path.clone()).or_insert_with(|| Seen {
                info: FileInfo {
                    xattrs: None,
                    xattrs_cut: false,
                    ..info.clone()
                },
                xattrs: None,
                file_size: header.file_size,
                ranges: Vec::new(),
                damaged: false,
                temp: None,
                refused: None,
            });
            if s.refused.is_some() {
                return Ok(Taken::No);
            }
            // Records of one file must agree on what the file is.
            let agrees = s.file_size == header.file_size && s.info.same_file(info);
            if !good || !agrees || info.path_truncated {
                s.damaged = true;
                return Ok(if !good || !agrees {
                    Taken::Bad
                } else {
                    Taken::No
                });
            }
            if only_new && s.ranges.iter().any(|r| r.0 == header.file_offset) {
                return Ok(Taken::No);
            }
            if s.temp.is_none() {
                let made = tree::check_rel(&info.path).and_then(|()| match self.root {
                    // Created under the lock, so that no two devices race.
                    Some(root) => tree::create_file(root, &info.path, header.file_size),
                    None => Ok(Vec::new()),
                });
                match made {
                    Ok(temp) => s.temp = Some(temp),
                    Err(error) => {
                        s.refused = Some(format!("{error} (records on {})", self.name));
                        return Ok(Taken::No);
                    }
                }
            }
            s.ranges
                .push((header.file_offset, header.payload_bytes as u64));
            if let Some(xattrs) = &info.xattrs {
                s.xattrs = Some((xattrs.clone(), info.xattrs_cut));
            } else if info.xattrs_cut && s.xattrs.is_none() {
                s.xattrs = Some((Vec::new(), true));
            }
            s.temp.clone().expect("made above")
        };
        let Some(root) = self.root else {
            return Ok(Taken::Yes);
        };
        if self.open.as_ref().is_none_or(|(p, _)| p != &info.path) {
            let f = root
                .open_at(&temp, OFlag::O_WRONLY)
                .map(File::from)
                .map_err(|error| TreeError::Io {
                    op: "open temporary file of",
                    path: shown_name(&info.path),
                    error,
                })?;
            self.open = Some((info.path.clone(), f));
        }
        let (_, f) = self.open.as_ref().expect("opened above");
        f.write_all_at(payload, header.file_offset)
            .map_err(|error| TreeError::Io {
                op: "write",
                path: shown_name(&info.path),
                error,
            })?;
        Ok(Taken::Yes)
    }
}

/// Stream one device, writing every good data record of `set_id` to its
/// file's temporary file below `root` (verifying: nowhere), and noting
/// the parity records of the set and where each data record lies.
fn scan_device(
    dev: &dyn Device,
    set_id: SetId,
    chunk_max: u32,
    root: Option<&Root>,
    seen: &Mutex<HashMap<Vec<u8>, Seen>>,
) -> Result<DeviceScan, RestoreError> {
    let label = crate::media::read_label(dev)
        .ok()
        .filter(|l| l.set_id == set_id);
    let mut out = DeviceScan {
        bad: 0,
        bad_at: Vec::new(),
        other_sets: HashMap::new(),
        index: label.as_ref().map(|l| l.device_index),
        label: label.as_ref().map(|l| (l.device_count, l.chunk_bytes)),
        held: Vec::new(),
        parity: Vec::new(),
        names: HashMap::new(),
    };
    let mut sink = Sink::new(root, seen, dev.path().display().to_string());
    let mut inflate = super::transform::Inflate::default();
    // Parity records (`--parity`): their headers, and where their payload
    // ends (its blocks are not records).
    let mut parity_end = 0u64;
    let mut block = BufferPool::new(1, HEADER_BYTES);
    stream::stream::<RestoreError>(
        dev,
        crate::media::data_start(dev),
        crate::media::scan_end(dev),
        chunk_max,
        |item| {
            let (position, header, header_block, payload, padding, crc_checked) = match item {
                Item::Record {
                    header,
                    header_block,
                    payload,
                    padding,
                    position,
                    crc_checked,
                    ..
                } => (
                    position,
                    header,
                    header_block,
                    payload,
                    padding,
                    crc_checked,
                ),
                Item::Bad { position, error } if position >= parity_end => {
                    let found = crate::media::scan::parity_header_in(
                        dev,
                        position,
                        &error,
                        Some(set_id),
                        block.slot_mut(0),
                    );
                    if let Some(h) = found {
                        parity_end = position
                            + HEADER_BYTES as u64
                            + crate::format::round_up_block(h.shard_bytes.into());
                        out.parity.push((position, h));
                    }
                    return Ok(Flow::Continue);
                }
                _ => return Ok(Flow::Continue),
            };
            if header.set_id != set_id {
                *out.other_sets.entry(header.set_id).or_default() += 1;
                return Ok(Flow::Continue);
            }
            match header.kind {
                RecordKind::End => return Ok(Flow::Stop),
                RecordKind::Catalog => return Ok(Flow::Continue),
                RecordKind::Data => {}
            }
            let mut held = Held {
                index: header.device_index,
                sequence: header.sequence,
                position,
                file_id: header.file_id,
                file_offset: header.file_offset,
                payload_bytes: header.payload_bytes,
                payload_crc: header.payload_crc,
                taken: false,
            };
            // Opened first when sealed (`--encrypt`).
            let Some(info) = inflate.file_info(&header, header_block) else {
                out.bad += 1;
                out.bad_at.push((position, None));
                out.held.push(held);
                return Ok(Flow::Continue);
            };
            let in_range = header
                .file_offset
                .checked_add(u64::from(header.payload_bytes))
                .is_some_and(|end| end <= header.file_size);
            let good = (crc_checked || crate::format::crc32c(payload) == header.payload_crc)
                && crate::media::stream::all_zero(padding)
                && in_range
                && header.payload_bytes <= chunk_max;
            // A compressed record's payload (bounded by its header), a
            // sealed one's opened: one that does not is not good.
            let (payload, good) = match good.then(|| inflate.payload(&header, payload)) {
                Some(Ok(plain)) => (plain, true),
                _ => (payload, false),
            };
            let good = good && payload.len() == header.payload_bytes as usize;
            match sink.take(&header, &info, payload, good, false)? {
                Taken::Yes => {
                    held.taken = true;
                    out.names
                        .entry(header.file_id)
                        .or_insert_with(|| info.path.clone());
                }
                Taken::Bad => {
                    out.bad += 1;
                    out.bad_at.push((position, Some(info.path.clone())));
                }
                Taken::No => {}
            }
            out.held.push(held);
            Ok(Flow::Continue)
        },
    )?;
    if out.index.is_none() {
        // No label: the index most of its records name.
        let mut votes: HashMap<u32, u64> = HashMap::new();
        for i in out
            .held
            .iter()
            .map(|h| h.index)
            .chain(out.parity.iter().map(|p| p.1.device_index))
        {
            *votes.entry(i).or_default() += 1;
        }
        out.index = votes
            .into_iter()
            .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))
            .map(|(i, _)| i);
    }
    Ok(out)
}
