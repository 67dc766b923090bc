//! `pbio scan`: recover the records of a device with no usable label or
//! catalog (a crashed run, an overwritten catalog), by reading every block
//! and keeping what decodes and checks (Bareos `bscan` / `bls` style).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use super::tree::{safe_join, TreeError};
use super::RestoreError;
use crate::device::Device;
use crate::engine::stream::{self, Flow, Item, StreamError};
use crate::format::{FileInfo, RecordHeader, RecordKind, SetId, PAYLOAD_BYTES_MAX};

/// One record found by a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub position: u64,
    pub header: RecordHeader,
    /// Whether the payload matches the CRC in its header and its padding is zero.
    pub payload_ok: bool,
}

#[derive(Debug, Default)]
pub struct ScanReport {
    pub set_id: Option<SetId>,
    pub records: Vec<Found>,
    /// Blocks that did not decode as a record header (skipped one block at a time).
    pub bad_blocks: u64,
    /// Whether an End record of the set was found.
    pub end_found: bool,
}

/// Scan `dev` from the first record to its end (or to the set's End
/// record). `set_id` selects one set; when None, the first valid record's
/// set is taken and records of any other set are skipped.
pub fn scan(dev: &dyn Device, mut set_id: Option<SetId>) -> Result<ScanReport, StreamError> {
    let mut report = ScanReport::default();
    // Records of any chunk size this format allows: a window that holds the largest.
    let chunk_max = PAYLOAD_BYTES_MAX.min(16 << 20);
    stream::stream::<StreamError>(
        dev,
        crate::engine::media::data_start(dev),
        crate::engine::media::scan_end(dev),
        chunk_max,
        |item| {
            match item {
                Item::Bad { .. } => report.bad_blocks += 1,
                Item::Reclaim => {}
                Item::Record {
                    position,
                    header,
                    payload,
                    padding,
                    ..
                } => {
                    let wanted = *set_id.get_or_insert(header.set_id);
                    if header.set_id != wanted {
                        report.bad_blocks += 1;
                        return Ok(Flow::Continue);
                    }
                    if header.kind == RecordKind::End {
                        report.end_found = true;
                        return Ok(Flow::Stop);
                    }
                    report.records.push(Found {
                        position,
                        header,
                        payload_ok: crate::format::crc32c(payload) == header.payload_crc
                            && padding.iter().all(|&b| b == 0),
                    });
                }
            }
            Ok(Flow::Continue)
        },
    )?;
    report.set_id = set_id;
    Ok(report)
}

/// A file a scan found records of but could not restore whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incomplete {
    pub path: Vec<u8>,
    /// Distinct payload bytes found, and what the file stores in all.
    pub found_bytes: u64,
    pub data_bytes: u64,
    pub why: &'static str,
}

#[derive(Debug, Default)]
pub struct ScanRestoreReport {
    pub set_id: Option<SetId>,
    /// Files restored whole (every stored byte found, every CRC good).
    pub restored: Vec<Vec<u8>>,
    pub payload_bytes: u64,
    pub incomplete: Vec<Incomplete>,
    /// Records of the set skipped: payload CRC mismatch, damaged padding.
    pub bad_records: u64,
}

/// What a scan learnt about one file.
struct Seen {
    info: FileInfo,
    file_size: u64,
    /// (offset, length) of every good record written to it.
    ranges: Vec<(u64, u64)>,
    /// A record of it failed its checks.
    damaged: bool,
    /// The file exists under the target (created fresh by this scan).
    created: bool,
}

/// Restore every file that is complete on the given devices from their
/// records alone, with no catalog (a crashed or interrupted run, a lost
/// catalog). Records carry their file's path, owner, mode, mtime and
/// stored size; a file is restored when good records with distinct
/// offsets add up to its stored size. Anything less is removed again and
/// reported, so a scan never leaves a file with wrong content.
/// Directories, symlinks, hard links and empty files have no data records
/// and are not recovered by a scan.
pub fn restore_from_scan(
    devs: &[Box<dyn Device>],
    to: &std::path::Path,
) -> Result<ScanRestoreReport, RestoreError> {
    // The set: from the labels where they read back (a label is written
    // before any data), else from the first record found. Devices whose
    // labels name different sets (a backup killed while writing its
    // labels over an older set's): the newest set is the one restored,
    // and records of any other set are skipped.
    let mut set_id: Option<SetId> = None;
    let mut newest = 0u64;
    for dev in devs {
        if let Ok(label) = crate::engine::media::read_label(dev.as_ref()) {
            if set_id.is_none() || label.created_unix_ns > newest {
                set_id = Some(label.set_id);
                newest = label.created_unix_ns;
            }
        }
    }
    if set_id.is_none() {
        set_id = scan(devs[0].as_ref(), None)?.set_id;
    }
    let mut report = ScanRestoreReport {
        set_id,
        ..ScanRestoreReport::default()
    };
    let Some(set_id) = set_id else {
        return Ok(report);
    };
    std::fs::create_dir_all(to).map_err(|error| TreeError::Io {
        op: "create directory",
        path: to.to_path_buf(),
        error,
    })?;
    let seen: Mutex<HashMap<Vec<u8>, Seen>> = Mutex::new(HashMap::new());
    let chunk_max = PAYLOAD_BYTES_MAX.min(16 << 20);
    let results: Vec<Result<u64, RestoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devs
            .iter()
            .map(|dev| {
                let seen = &seen;
                scope.spawn(move || scan_device(dev.as_ref(), set_id, chunk_max, to, seen))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scan thread panicked"))
            .collect()
    });
    for r in results {
        report.bad_records += r?;
    }
    let mut seen: Vec<(Vec<u8>, Seen)> = seen
        .into_inner()
        .expect("no poisoned lock")
        .into_iter()
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, mut s) in seen {
        s.ranges.sort_unstable();
        s.ranges.dedup_by_key(|r| r.0);
        let found: u64 = s.ranges.iter().map(|r| r.1).sum();
        let target = safe_join(to, &path)?;
        let why = if s.info.path_truncated {
            Some("path too long for a record header")
        } else if s.damaged && found < s.info.data_bytes {
            Some("a record failed its checks")
        } else if found != s.info.data_bytes {
            Some("records missing")
        } else {
            None
        };
        if let Some(why) = why {
            let _ = std::fs::remove_file(&target);
            report.incomplete.push(Incomplete {
                path,
                found_bytes: found,
                data_bytes: s.info.data_bytes,
                why,
            });
            continue;
        }
        apply_info(&target, &s.info, s.file_size)?;
        report.payload_bytes += found;
        report.restored.push(path);
    }
    Ok(report)
}

/// Stream one device, writing every good data record of `set_id` to its
/// file under `to`. Returns the number of records skipped as bad.
fn scan_device(
    dev: &dyn Device,
    set_id: SetId,
    chunk_max: u32,
    to: &std::path::Path,
    seen: &Mutex<HashMap<Vec<u8>, Seen>>,
) -> Result<u64, RestoreError> {
    let mut bad = 0u64;
    let mut open: Option<(Vec<u8>, File)> = None;
    stream::stream::<RestoreError>(
        dev,
        crate::engine::media::data_start(dev),
        crate::engine::media::scan_end(dev),
        chunk_max,
        |item| {
            let Item::Record {
                header,
                header_block,
                payload,
                padding,
                ..
            } = item
            else {
                return Ok(Flow::Continue);
            };
            if header.set_id != set_id {
                return Ok(Flow::Continue);
            }
            match header.kind {
                RecordKind::End => return Ok(Flow::Stop),
                RecordKind::Catalog => return Ok(Flow::Continue),
                RecordKind::Data => {}
            }
            let Some(info) = RecordHeader::decode_info(header_block) else {
                bad += 1;
                return Ok(Flow::Continue);
            };
            let good = crate::format::crc32c(payload) == header.payload_crc
                && padding.iter().all(|&b| b == 0);
            let target = safe_join(to, &info.path)?;
            {
                let mut seen = seen.lock().expect("no poisoned lock");
                let s = seen.entry(info.path.clone()).or_insert_with(|| Seen {
                    info: info.clone(),
                    file_size: header.file_size,
                    ranges: Vec::new(),
                    damaged: false,
                    created: false,
                });
                if !good || info.path_truncated {
                    s.damaged = true;
                    bad += u64::from(!good);
                    return Ok(Flow::Continue);
                }
                if !s.created {
                    s.created = true;
                    // Created fresh, under the lock, so that no two devices race.
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(|error| TreeError::Io {
                            op: "create directory",
                            path: parent.to_path_buf(),
                            error,
                        })?;
                    }
                    let f = File::create(&target).map_err(|error| TreeError::Io {
                        op: "create",
                        path: target.clone(),
                        error,
                    })?;
                    f.set_len(header.file_size).map_err(|error| TreeError::Io {
                        op: "set size",
                        path: target.clone(),
                        error,
                    })?;
                }
                s.ranges
                    .push((header.file_offset, header.payload_bytes as u64));
            }
            if open.as_ref().map(|(p, _)| p != &info.path).unwrap_or(true) {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&target)
                    .map_err(|error| TreeError::Io {
                        op: "open",
                        path: target.clone(),
                        error,
                    })?;
                open = Some((info.path.clone(), f));
            }
            let (_, f) = open.as_ref().expect("opened above");
            f.write_all_at(payload, header.file_offset)
                .map_err(|error| TreeError::Io {
                    op: "write",
                    path: target.clone(),
                    error,
                })?;
            Ok(Flow::Continue)
        },
    )?;
    Ok(bad)
}

/// Owner, mode and mtime of a restored file, from a record's file info.
fn apply_info(path: &std::path::Path, info: &FileInfo, file_size: u64) -> Result<(), RestoreError> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use std::os::unix::fs::PermissionsExt;
    let io = |op, error| TreeError::Io {
        op,
        path: path.to_path_buf(),
        error,
    };
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io("open", e))?;
    f.set_len(file_size).map_err(|e| io("set size", e))?;
    if nix::unistd::Uid::effective().is_root() {
        std::os::unix::fs::fchown(&f, Some(info.uid), Some(info.gid))
            .map_err(|e| io("chown", e))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(info.mode & 0o7777))
        .map_err(|e| io("chmod", e))?;
    drop(f);
    let mtime = TimeSpec::new(info.mtime_sec, info.mtime_nsec as i64);
    utimensat(None, path, &mtime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| io("set mtime", e.into()))?;
    Ok(())
}
