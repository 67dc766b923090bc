//! What an interrupted set left durable on each device (`backup --resume`):
//! the labels checked against each other and the run's options, then
//! each device's records walked from the label as `scan` walks them
//! (every header and payload CRC checked), up to the first record that
//! breaks the stream or belongs to a file that changed since.

use crate::device::{Access, Device};
use crate::engine::ring::RecordDone;
use crate::format::{codec, Codec, Label, RecordHeader, RecordKind, SetId};
use crate::media::stream::{self, Flow, Item, StreamError};
use crate::media::{self, MediaError};
use crate::source::{Entry, EntryKind};

use super::super::{BackupConfig, SetInput};

/// Why a set cannot be resumed on the devices given (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// An encrypted set (`--encrypt`): its records are sealed under keys of
    /// the interrupted run, which a resume cannot go on with yet.
    #[error("--resume: device {device} holds an encrypted set ({set}): --resume cannot finish an encrypted set yet; run the backup again with --overwrite {set}")]
    Encrypted { device: String, set: SetId },
    /// The interrupted run wrote parity records (`--parity`), which a
    /// resume cannot finish yet: it would leave the set without them.
    #[error("--resume: device {device} holds parity records of set {set} (written with --parity): --resume cannot finish a parity set yet; run the backup again with --overwrite {set} --parity M")]
    Parity { device: String, set: SetId },
    #[error("--resume: no given device holds a label of an interrupted set (nothing to resume: run the backup without --resume)")]
    NoSet,
    #[error("--resume: device {device} holds set {found}, device {first} set {set}: give the devices of one set")]
    OtherSet {
        device: String,
        found: SetId,
        first: String,
        set: SetId,
    },
    #[error("--resume: device {device}: the set has {on_media} devices, {given} given: give the devices of the interrupted run, in its order")]
    Count {
        device: String,
        on_media: u32,
        given: usize,
    },
    #[error("--resume: device {device} is device {index} of the set, given as device {given}: give the devices in the order of the interrupted run")]
    Order {
        device: String,
        index: u32,
        given: usize,
    },
    #[error("--resume: device {device}: {field} differs from the interrupted run ({on_media} on the device, {given} given): resume with the same options")]
    Field {
        device: String,
        field: &'static str,
        on_media: String,
        given: String,
    },
    #[error("--resume: device {device}: its label cannot be read: {error}")]
    Unreadable { device: String, error: MediaError },
    #[error(transparent)]
    Read(#[from] StreamError),
}

/// One record the interrupted run made durable, that the resumed set keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kept {
    /// As the ring reports a record it made durable: `payload_hash` is the
    /// BLAKE3 of the payload decompressed when stored compressed,
    /// `position` the media offset of its header (a tape: its logical
    /// object number).
    pub record: RecordDone,
    /// Bytes it takes on media.
    pub media_bytes: u64,
}

/// Why a device's usable stream ends where it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// No record after the last kept one (the device's end, the end of
    /// recorded data, or the set's own catalog).
    Clean,
    /// A block that is not a good record of the set (torn, unwritten,
    /// garbage): what follows is written again.
    Broken { position: u64, why: String },
    /// A record of a file that changed since it was written (or no longer
    /// exists as it was): it and what follows are written again.
    Changed { position: u64, file_id: u32 },
}

/// One device: its label (None: it joins the set blank), and the records
/// of its usable stream.
#[derive(Clone, Debug)]
pub struct DeviceDurable {
    pub label: Option<Label>,
    pub records: Vec<Kept>,
    pub end: StreamEnd,
}

impl DeviceDurable {
    /// A device that joins the set blank: nothing kept.
    pub fn blank() -> DeviceDurable {
        DeviceDurable {
            label: None,
            records: Vec::new(),
            end: StreamEnd::Clean,
        }
    }

    /// Media bytes the kept records take after the label (where the
    /// resumed run writes on: `data_start + this` on a disk).
    pub fn media_bytes(&self) -> u64 {
        self.records.iter().map(|r| r.media_bytes).sum()
    }
}

/// The interrupted set, from its devices.
#[derive(Debug)]
pub struct Durable {
    pub set_id: SetId,
    pub created_unix_ns: u64,
    pub devices: Vec<DeviceDurable>,
    /// Files named because they changed since the interrupted run wrote
    /// some of them (file ids, ascending, each once).
    pub changed: Vec<u32>,
}

/// Read every device's label, check they agree on one set written with
/// these options, and walk each device's records (one thread per device).
pub fn durable(
    input: &SetInput,
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
) -> Result<Durable, ResumeError> {
    let labels: Vec<Result<Label, MediaError>> = devices
        .iter()
        .map(|d| media::read_label(d.as_ref()))
        .collect();
    let name = |i: usize| devices[i].path().display().to_string();
    let Some(first) = labels.iter().position(|l| l.is_ok()) else {
        return Err(ResumeError::NoSet);
    };
    let set = labels[first].as_ref().expect("found above");
    let (set_id, count, created_unix_ns) = (set.set_id, set.device_count, set.created_unix_ns);
    if count as usize != devices.len() {
        return Err(ResumeError::Count {
            device: name(first),
            on_media: count,
            given: devices.len(),
        });
    }
    for (i, label) in labels.iter().enumerate() {
        let Ok(label) = label else { continue };
        check_label(label, config, set_id, &name(i), i).map_err(|e| match e {
            LabelCheck::Other => ResumeError::OtherSet {
                device: name(i),
                found: label.set_id,
                first: name(first),
                set: set_id,
            },
            LabelCheck::Err(e) => e,
        })?;
    }
    let mut labels_kept = Vec::with_capacity(devices.len());
    for (i, label) in labels.into_iter().enumerate() {
        match label {
            Ok(label) => labels_kept.push(Some(label)),
            // A blank device joins as the index nobody holds: the indexes
            // are the order, so that is its own (checked above for the rest).
            Err(error) if !matches!(error, MediaError::Io { .. }) => labels_kept.push(None),
            Err(error) => {
                return Err(ResumeError::Unreadable {
                    device: name(i),
                    error,
                })
            }
        }
    }
    let devices_durable: Vec<Result<DeviceDurable, ResumeError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .zip(labels_kept)
            .map(|(dev, label)| {
                scope.spawn(move || match label {
                    None => Ok(DeviceDurable::blank()),
                    Some(label) => walk(dev.as_ref(), label, input, config),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("resume scan thread panicked"))
            .collect()
    });
    let devices_durable = devices_durable.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(assemble(set_id, created_unix_ns, devices_durable))
}

/// The interrupted set from each device's walk (in device order; a blank
/// device as `DeviceDurable::blank()`): a range kept twice is kept on the
/// first device only, and the files that changed are named once.
pub fn assemble(
    set_id: SetId,
    created_unix_ns: u64,
    mut devices_durable: Vec<DeviceDurable>,
) -> Durable {
    drop_overlaps(&mut devices_durable);
    let mut changed: Vec<u32> = devices_durable
        .iter()
        .filter_map(|d| match d.end {
            StreamEnd::Changed { file_id, .. } => Some(file_id),
            _ => None,
        })
        .collect();
    changed.sort_unstable();
    changed.dedup();
    Durable {
        set_id,
        created_unix_ns,
        devices: devices_durable,
        changed,
    }
}

/// Check the label of one volume of a set spanning cartridges
/// (`backup --changer --resume`) against the run's options: as a device's
/// label, its volume number being its own place.
pub fn check_volume_label(
    label: &Label,
    config: &BackupConfig,
    set_id: SetId,
    device: &str,
) -> Result<(), ResumeError> {
    check_label(label, config, set_id, device, label.device_index as usize).map_err(|e| match e {
        LabelCheck::Other => ResumeError::OtherSet {
            device: device.to_string(),
            found: label.set_id,
            first: device.to_string(),
            set: set_id,
        },
        LabelCheck::Err(e) => e,
    })
}

enum LabelCheck {
    Other,
    Err(ResumeError),
}

/// A label of the set, at its place, written with these options.
fn check_label(
    label: &Label,
    config: &BackupConfig,
    set_id: SetId,
    device: &str,
    given: usize,
) -> Result<(), LabelCheck> {
    if label.set_id != set_id {
        return Err(LabelCheck::Other);
    }
    let field = |field, on_media: String, given: String| {
        LabelCheck::Err(ResumeError::Field {
            device: device.to_string(),
            field,
            on_media,
            given,
        })
    };
    if label.seal != crate::format::seal::LabelSeal::NONE {
        return Err(LabelCheck::Err(ResumeError::Encrypted {
            device: device.to_string(),
            set: label.set_id,
        }));
    }
    if config.encryption.is_some() {
        return Err(LabelCheck::Err(ResumeError::Field {
            device: device.to_string(),
            field: "--encrypt",
            on_media: "not encrypted".into(),
            given: "--encrypt".into(),
        }));
    }
    if label.device_index as usize != given {
        return Err(LabelCheck::Err(ResumeError::Order {
            device: device.to_string(),
            index: label.device_index,
            given,
        }));
    }
    if label.chunk_bytes != config.chunk_bytes {
        let (on_media, given) = (label.chunk_bytes, config.chunk_bytes);
        return Err(field("--chunk", on_media.to_string(), given.to_string()));
    }
    let keyed = label.mac != [0; 32];
    match &config.mac_key {
        None if keyed => {
            return Err(field("--key", "a key".into(), "none".into()));
        }
        Some(_) if !keyed => {
            return Err(field("--key", "none".into(), "a key".into()));
        }
        Some(key) if label.mac != label.mac_for(key) => {
            return Err(field(
                "--key",
                "another key (the label's MAC does not match)".into(),
                "this key".into(),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// What the walk found of a record's file.
enum FileNow {
    /// At its file id, unchanged since (path, size, mtime, mode, owner:
    /// what the record itself says of its file).
    Same,
    /// At its file id, changed since: named, written again whole.
    Changed,
    /// Not at its file id any more (removed, another file added before it
    /// in the walk order), or stored otherwise (sparse, or in an earlier
    /// set): its records are written again.
    Elsewhere(String),
}

fn file_now(input: &SetInput, header: &RecordHeader, block: &[u8]) -> FileNow {
    let i = header.file_id as usize;
    let Some(info) = RecordHeader::decode_info(block) else {
        return FileNow::Elsewhere("record without file info".into());
    };
    let elsewhere = || {
        FileNow::Elsewhere(format!(
            "record of {}, not at its place in the walk",
            crate::units::shown_name(&info.path)
        ))
    };
    let Some(entry) = input.entries.get(i) else {
        return elsewhere();
    };
    if info.path_truncated || info.path != entry.path {
        return elsewhere();
    }
    if input.since.as_ref().and_then(|s| s.origin(i)).is_some() {
        return FileNow::Elsewhere("record of a file an earlier set holds".into());
    }
    match entry.kind {
        EntryKind::File {
            size_bytes,
            data: None,
        } if same_file(&entry, size_bytes, header, &info) => FileNow::Same,
        // A sparse file's records do not cover its holes: written again whole.
        EntryKind::File { data: Some(_), .. } => {
            FileNow::Elsewhere("record of a sparse file".into())
        }
        _ => FileNow::Changed,
    }
}

fn same_file(
    entry: &Entry,
    size_bytes: u64,
    header: &RecordHeader,
    info: &crate::format::FileInfo,
) -> bool {
    header.file_size == size_bytes
        && info.data_bytes == size_bytes
        && info.mtime_sec == entry.meta.stat.mtime_sec
        && info.mtime_nsec == entry.meta.stat.mtime_nsec
        && info.mode == entry.meta.stat.mode
        && info.uid == entry.meta.stat.uid
        && info.gid == entry.meta.stat.gid
}

/// Walk one device's records from the label: each must be a Data record
/// of the set and device, numbered and placed right after the one before,
/// with a good payload CRC and zero padding, of an unchanged file. The
/// first that is not ends the usable stream.
pub fn walk(
    dev: &dyn Device,
    label: Label,
    input: &SetInput,
    config: &BackupConfig,
) -> Result<DeviceDurable, ResumeError> {
    let sequential = dev.access() == Access::Sequential;
    let device = dev.path().display().to_string();
    let mut records: Vec<Kept> = Vec::new();
    let mut end = StreamEnd::Clean;
    let mut next_position = media::data_start(dev);
    let mut inflated: Vec<u8> = Vec::new();
    let mut mismatch: Option<ResumeError> = None;
    let mut pool = None;
    let broken = |position: u64, why: String| StreamEnd::Broken { position, why };
    // The set's chunk bounds every record (a tape's are smaller).
    stream::stream::<StreamError>(
        dev,
        media::data_start(dev),
        media::scan_end(dev),
        label.chunk_bytes,
        |item| {
            // Checked by the stream already (a short tape block).
            let crc_checked;
            let (position, header, block, payload, padding) = match item {
                Item::Reclaim => return Ok(Flow::Continue),
                Item::Bad { position, error } => {
                    if media::scan::parity_at(dev, position, &error, Some(label.set_id), &mut pool)
                        .is_some()
                    {
                        mismatch = Some(ResumeError::Parity {
                            device: dev.path().display().to_string(),
                            set: label.set_id,
                        });
                    }
                    end = broken(position, error.to_string());
                    return Ok(Flow::Stop);
                }
                Item::Record {
                    position,
                    header,
                    header_block,
                    payload,
                    padding,
                    crc_checked: checked,
                    ..
                } => {
                    crc_checked = checked;
                    (position, header, header_block, payload, padding)
                }
            };
            if header.kind != RecordKind::Data || header.set_id != label.set_id {
                // The set's own catalog (a run stopped while finishing),
                // or what an earlier use of the device left.
                return Ok(Flow::Stop);
            }
            let sequence = records.len() as u64;
            let why = if header.device_index != label.device_index {
                Some(format!("record of device {}", header.device_index))
            } else if header.sequence != sequence {
                Some(format!(
                    "sequence {} where {sequence} was due",
                    header.sequence
                ))
            } else if position != next_position {
                Some(format!(
                    "record at {position} where {next_position} was due"
                ))
            } else if header.payload_bytes > label.chunk_bytes {
                Some(format!("payload of {} bytes", header.payload_bytes))
            } else if !(crc_checked || crate::format::crc32c(payload) == header.payload_crc)
                || !stream::all_zero(padding)
            {
                Some("payload CRC or padding does not check".to_string())
            } else {
                None
            };
            if let Some(why) = why {
                end = broken(position, why);
                return Ok(Flow::Stop);
            }
            if header.transform.codec != Codec::Raw && config.compression.is_none() {
                mismatch = Some(ResumeError::Field {
                    device: device.clone(),
                    field: "--compress",
                    on_media: format!("{:?} records", header.transform.codec),
                    given: "none".into(),
                });
                return Ok(Flow::Stop);
            }
            match file_now(input, &header, block) {
                FileNow::Same => {}
                FileNow::Changed => {
                    end = StreamEnd::Changed {
                        position,
                        file_id: header.file_id,
                    };
                    return Ok(Flow::Stop);
                }
                FileNow::Elsewhere(why) => {
                    end = broken(position, why);
                    return Ok(Flow::Stop);
                }
            }
            let payload_hash = match header.transform.codec {
                Codec::Raw => crate::format::payload_hash(payload),
                codec_used => {
                    inflated.resize(header.payload_bytes as usize, 0);
                    if let Err(e) = codec::decompress(codec_used, payload, &mut inflated) {
                        end = broken(position, format!("payload does not decompress: {e}"));
                        return Ok(Flow::Stop);
                    }
                    crate::format::payload_hash(&inflated)
                }
            };
            let media_bytes = header.media_bytes();
            records.push(Kept {
                record: RecordDone {
                    file_id: header.file_id,
                    file_offset: header.file_offset,
                    payload_bytes: header.payload_bytes,
                    payload_crc: header.payload_crc,
                    payload_hash,
                    position,
                    sequence: header.sequence,
                    stored_bytes: header.stored_len(),
                },
                media_bytes,
            });
            next_position = if sequential {
                position + 1
            } else {
                position + media_bytes
            };
            Ok(Flow::Continue)
        },
    )?;
    if let Some(e) = mismatch {
        return Err(e);
    }
    Ok(DeviceDurable {
        label: Some(label),
        records,
        end,
    })
}

/// A range kept on two devices (the interrupted run wrote it again after a
/// device failed or filled up) is kept once: the later device's stream is
/// cut at its copy, so every kept range is held once and every file's
/// digest counts each record once.
fn drop_overlaps(devices: &mut [DeviceDurable]) {
    let mut held: std::collections::BTreeMap<(u32, u64), u64> = Default::default();
    for d in devices.iter_mut() {
        let cut = d.records.iter().map(|k| &k.record).position(|r| {
            let (start, end) = (r.file_offset, r.file_offset + r.payload_bytes as u64);
            let before = held.range(..(r.file_id, end)).next_back();
            before.is_some_and(|(&(f, s), &e)| f == r.file_id && s < end && start < e)
        });
        if let Some(k) = cut {
            d.end = StreamEnd::Broken {
                position: d.records[k].record.position,
                why: "range already held by another device".into(),
            };
            d.records.truncate(k);
        }
        for r in d.records.iter().map(|k| &k.record) {
            held.insert(
                (r.file_id, r.file_offset),
                r.file_offset + r.payload_bytes as u64,
            );
        }
    }
}
