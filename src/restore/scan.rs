//! `pbio scan`: recover the records of a device with no usable label or
//! catalog (a crashed run, an overwritten catalog), by reading every block
//! and keeping what decodes and checks (Bareos `bscan` / `bls` style).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use nix::fcntl::OFlag;

use super::at::Root;
use super::tree::{self, Attrs, Meta, TreeError};
use super::RestoreError;
use crate::device::Device;
use crate::engine::set_id_hex;
use crate::engine::stream::{self, Flow, Item, StreamError};
use crate::format::{FileInfo, RecordHeader, RecordKind, SetId, PAYLOAD_BYTES_MAX};
use crate::units::shown_name;

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
    /// With `keep_partial`: the name its partial data is kept under.
    pub kept_as: Option<Vec<u8>>,
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
}

/// The set one given device belongs to, as far as a scan can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSet {
    pub device: String,
    /// From its label, else from its first record; None: neither found.
    pub set_id: Option<SetId>,
    /// When its label reads back: the set's creation time.
    pub created_unix_ns: Option<u64>,
}

/// Which set each device belongs to: its label's, else (a damaged label)
/// its first valid record's (read from the start of its data only).
pub fn device_sets(devs: &[Box<dyn Device>]) -> Result<Vec<DeviceSet>, StreamError> {
    let mut out = Vec::with_capacity(devs.len());
    for dev in devs {
        let device = dev.path().display().to_string();
        if let Ok(label) = crate::engine::media::read_label(dev.as_ref()) {
            out.push(DeviceSet {
                device,
                set_id: Some(label.set_id),
                created_unix_ns: Some(label.created_unix_ns),
            });
            continue;
        }
        let mut set_id = None;
        stream::stream::<StreamError>(
            dev.as_ref(),
            crate::engine::media::data_start(dev.as_ref()),
            crate::engine::media::scan_end(dev.as_ref()),
            PAYLOAD_BYTES_MAX.min(16 << 20),
            |item| {
                if let Item::Record { header, .. } = item {
                    set_id = Some(header.set_id);
                    return Ok(Flow::Stop);
                }
                Ok(Flow::Continue)
            },
        )?;
        out.push(DeviceSet {
            device,
            set_id,
            created_unix_ns: None,
        });
    }
    Ok(out)
}

/// Parse a set id given in hex (`--set`): the whole id, or a prefix.
fn hex_id(text: &str) -> Option<SetId> {
    if text.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// The set a scan restores. Devices of more than one set given together
/// are refused unless `wanted` (hex, a prefix if it is unambiguous) picks
/// one: an error naming each set and its devices. With `wanted`, a full id
/// no device's label names is accepted (its records may still be on them).
/// Ok(None): no device holds any record.
pub fn choose_set(devices: &[DeviceSet], wanted: Option<&str>) -> Result<Option<SetId>, String> {
    let mut sets: Vec<(SetId, Vec<&str>, Option<u64>)> = Vec::new();
    for d in devices {
        let Some(id) = d.set_id else { continue };
        match sets.iter_mut().find(|(s, _, _)| *s == id) {
            Some((_, names, _)) => names.push(&d.device),
            None => sets.push((id, vec![&d.device], d.created_unix_ns)),
        }
    }
    let listing = || {
        sets.iter()
            .map(|(id, names, created)| {
                format!(
                    "  set {}{}: {} device{} ({})",
                    set_id_hex(id),
                    created
                        .map(|ns| format!(" (created {} s after the epoch)", ns / 1_000_000_000))
                        .unwrap_or_default(),
                    names.len(),
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let Some(wanted) = wanted else {
        return match sets.len() {
            0 => Ok(None),
            1 => Ok(Some(sets[0].0)),
            n => Err(format!(
                "the given devices belong to {n} different sets; restore --scan restores one set at a time: choose it with --set SETID\n{}",
                listing()
            )),
        };
    };
    let prefix = wanted.to_ascii_lowercase();
    if prefix.is_empty() || prefix.len() > 32 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "--set {wanted}: expected a set id in hex (32 digits, or a prefix of one)"
        ));
    }
    let matching: Vec<SetId> = sets
        .iter()
        .map(|(id, _, _)| *id)
        .filter(|id| set_id_hex(id).starts_with(&prefix))
        .collect();
    match (matching.len(), hex_id(&prefix)) {
        (1, _) => Ok(Some(matching[0])),
        (0, Some(id)) => Ok(Some(id)),
        (0, None) => Err(format!(
            "--set {wanted}: no given device belongs to a set whose id starts with it (give all 32 digits to scan for its records anyway); the devices hold:\n{}",
            listing()
        )),
        (n, _) => Err(format!(
            "--set {wanted} is ambiguous: {n} sets start with it\n{}",
            listing()
        )),
    }
}

/// What a scan learnt about one file.
struct Seen {
    info: FileInfo,
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
/// owner, mode, mtime and stored size; a file is restored when good
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
    to: &std::path::Path,
    set_id: SetId,
    keep_partial: bool,
) -> Result<ScanRestoreReport, RestoreError> {
    let mut report = ScanRestoreReport {
        set_id: Some(set_id),
        ..ScanRestoreReport::default()
    };
    let root = Root::open(to).map_err(|error| TreeError::Io {
        op: "open restore directory",
        path: to.display().to_string(),
        error,
    })?;
    let seen: Mutex<HashMap<Vec<u8>, Seen>> = Mutex::new(HashMap::new());
    let chunk_max = PAYLOAD_BYTES_MAX.min(16 << 20);
    let results: Vec<Result<DeviceScan, RestoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devs
            .iter()
            .map(|dev| {
                let (seen, root) = (&seen, &root);
                scope.spawn(move || scan_device(dev.as_ref(), set_id, chunk_max, root, seen))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scan thread panicked"))
            .collect()
    });
    let mut others: HashMap<SetId, u64> = HashMap::new();
    for (r, dev) in results.into_iter().zip(devs) {
        // A device whose reading broke off: what it left short is reported
        // below as incomplete, and its temporary files are removed.
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                report
                    .errors
                    .push(format!("device {}: {e}", dev.path().display()));
                continue;
            }
        };
        report.bad_records += r.bad;
        for (id, n) in r.other_sets {
            *others.entry(id).or_default() += n;
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
        if let Some(why) = why {
            let mut kept_as = None;
            if let Some(temp) = &s.temp {
                match tree::drop_file(&root, temp, &path, keep_partial) {
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
            report.incomplete.push(Incomplete {
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
        let attrs = Attrs {
            uid: s.info.uid,
            gid: s.info.gid,
            mode: s.info.mode,
            mtime_sec: s.info.mtime_sec,
            mtime_nsec: s.info.mtime_nsec,
        };
        match tree::place_file(&root, temp, &path, attrs, meta) {
            Ok(()) => {
                report.payload_bytes += found;
                report.restored.push(path);
            }
            Err(error) => report.errors.push(error.to_string()),
        }
    }
    Ok(report)
}

/// What one device's scan found besides the files.
struct DeviceScan {
    /// Records of the set skipped as bad.
    bad: u64,
    /// Records of other sets, by set.
    other_sets: HashMap<SetId, u64>,
}

/// Stream one device, writing every good data record of `set_id` to its
/// file's temporary file below `root`.
fn scan_device(
    dev: &dyn Device,
    set_id: SetId,
    chunk_max: u32,
    root: &Root,
    seen: &Mutex<HashMap<Vec<u8>, Seen>>,
) -> Result<DeviceScan, RestoreError> {
    let mut out = DeviceScan {
        bad: 0,
        other_sets: HashMap::new(),
    };
    let name = dev.path().display().to_string();
    // The temporary file the previous record went to: (path, temp, file).
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
                *out.other_sets.entry(header.set_id).or_default() += 1;
                return Ok(Flow::Continue);
            }
            match header.kind {
                RecordKind::End => return Ok(Flow::Stop),
                RecordKind::Catalog => return Ok(Flow::Continue),
                RecordKind::Data => {}
            }
            let Some(info) = RecordHeader::decode_info(header_block) else {
                out.bad += 1;
                return Ok(Flow::Continue);
            };
            let in_range = header
                .file_offset
                .checked_add(u64::from(header.payload_bytes))
                .is_some_and(|end| end <= header.file_size);
            let good = crate::format::crc32c(payload) == header.payload_crc
                && padding.iter().all(|&b| b == 0)
                && in_range;
            let temp = {
                let mut seen = seen.lock().expect("no poisoned lock");
                let s = seen.entry(info.path.clone()).or_insert_with(|| Seen {
                    info: info.clone(),
                    file_size: header.file_size,
                    ranges: Vec::new(),
                    damaged: false,
                    temp: None,
                    refused: None,
                });
                if s.refused.is_some() {
                    return Ok(Flow::Continue);
                }
                // Records of one file must agree on what the file is.
                let agrees = s.file_size == header.file_size && s.info == info;
                if !good || !agrees || info.path_truncated {
                    s.damaged = true;
                    out.bad += u64::from(!good || !agrees);
                    return Ok(Flow::Continue);
                }
                if s.temp.is_none() {
                    // Created under the lock, so that no two devices race.
                    let made = tree::check_rel(&info.path)
                        .and_then(|()| tree::create_file(root, &info.path, header.file_size));
                    match made {
                        Ok(temp) => s.temp = Some(temp),
                        Err(error) => {
                            s.refused = Some(format!("{error} (records on {name})"));
                            return Ok(Flow::Continue);
                        }
                    }
                }
                s.ranges
                    .push((header.file_offset, header.payload_bytes as u64));
                s.temp.clone().expect("made above")
            };
            if open.as_ref().map(|(p, _)| p != &info.path).unwrap_or(true) {
                let f = root
                    .open_at(&temp, OFlag::O_WRONLY)
                    .map(File::from)
                    .map_err(|error| TreeError::Io {
                        op: "open temporary file of",
                        path: shown_name(&info.path),
                        error,
                    })?;
                open = Some((info.path.clone(), f));
            }
            let (_, f) = open.as_ref().expect("opened above");
            f.write_all_at(payload, header.file_offset)
                .map_err(|error| TreeError::Io {
                    op: "write",
                    path: shown_name(&info.path),
                    error,
                })?;
            Ok(Flow::Continue)
        },
    )?;
    Ok(out)
}
