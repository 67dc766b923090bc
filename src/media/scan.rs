//! The record scanner: read every block of a device and keep what decodes
//! as a record (Bareos `bscan` / `bls` style), for `pbio scan` and for
//! `restore --scan`'s choice of set. Nothing here writes; restoring the
//! scanned records to files is `restore::scan`.

use super::stream::{self, Flow, Item, StreamError};
use crate::device::{Access, Device};
use crate::format::parity::ParityHeader;
use crate::format::{
    round_up_block, FormatError, RecordHeader, RecordKind, SetId, HEADER_BYTES, PAYLOAD_BYTES_MAX,
};
use crate::io::buffers::BufferPool;

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
    /// Parity records (`--parity`, docs/FORMAT.md 5.1) of the set: never
    /// data; their payload blocks are not counted as bad.
    pub parity: Vec<FoundParity>,
    /// Blocks that did not decode as a record header (skipped one block at a time).
    pub bad_blocks: u64,
    /// Whether an End record of the set was found.
    pub end_found: bool,
}

/// One parity record found by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundParity {
    pub position: u64,
    pub header: ParityHeader,
    /// Whether the payload matches the CRC in its header.
    pub payload_ok: bool,
}

/// A block the record decoder refused although its frame (magic, CRC,
/// version) is good: a record of another kind, such as a parity record.
/// Read again at `position` and decoded as a parity record of `set_id`.
pub(crate) fn parity_at(
    dev: &dyn Device,
    position: u64,
    error: &FormatError,
    set_id: Option<SetId>,
    pool: &mut Option<BufferPool>,
) -> Option<FoundParity> {
    let pool = pool.get_or_insert_with(|| {
        // A parity record of the largest chunk read: its shard holds a
        // whole data record (header block included, docs/FORMAT.md 5.1).
        let shard = crate::format::parity::shard_bytes_for(PAYLOAD_BYTES_MAX.min(16 << 20));
        BufferPool::new(1, HEADER_BYTES + shard as usize)
    });
    let buf = pool.slot_mut(0);
    let header = parity_header_in(dev, position, error, set_id, &mut buf[..HEADER_BYTES])?;
    let media_bytes = HEADER_BYTES + round_up_block(header.shard_bytes.into()) as usize;
    let payload_ok = media_bytes <= buf.len()
        && super::read_at(dev, &mut buf[..media_bytes], position).ok() == Some(media_bytes)
        && header.payload_ok(&buf[HEADER_BYTES..HEADER_BYTES + header.shard_bytes as usize]);
    Some(FoundParity {
        position,
        header,
        payload_ok,
    })
}

/// `parity_at` without reading the payload (its CRC unchecked): the
/// header of the parity record at `position`, read into `block` (one
/// aligned block of `HEADER_BYTES`).
pub(crate) fn parity_header_in(
    dev: &dyn Device,
    position: u64,
    error: &FormatError,
    set_id: Option<SetId>,
    block: &mut [u8],
) -> Option<ParityHeader> {
    if dev.access() != Access::Random
        || matches!(
            error,
            FormatError::Short { .. }
                | FormatError::BadMagic { .. }
                | FormatError::Checksum { .. }
                | FormatError::Version(_)
        )
    {
        return None;
    }
    let got = super::read_at(dev, block, position).ok()?;
    let header = ParityHeader::decode(&block[..got]).ok()?;
    if set_id.is_some_and(|s| s != header.set_id) {
        return None;
    }
    Some(header)
}

/// Scan `dev` from the first record to its end (or to the set's End
/// record). `set_id` selects one set; when None, the first valid record's
/// set is taken and records of any other set are skipped.
pub fn scan(dev: &dyn Device, mut set_id: Option<SetId>) -> Result<ScanReport, StreamError> {
    let mut report = ScanReport::default();
    let mut parity_end = 0u64;
    let mut parity_pool = None;
    // Records of any chunk size this format allows: a window that holds the largest.
    let chunk_max = PAYLOAD_BYTES_MAX.min(16 << 20);
    stream::stream::<StreamError>(
        dev,
        super::data_start(dev),
        super::scan_end(dev),
        chunk_max,
        |item| {
            match item {
                // Inside a parity record found: its payload.
                Item::Bad { position, .. } if position < parity_end => {}
                Item::Bad { position, error } => {
                    match parity_at(dev, position, &error, set_id, &mut parity_pool) {
                        Some(found) => {
                            parity_end = position
                                + HEADER_BYTES as u64
                                + round_up_block(found.header.shard_bytes.into());
                            set_id.get_or_insert(found.header.set_id);
                            report.parity.push(found);
                        }
                        None => report.bad_blocks += 1,
                    }
                }
                Item::Reclaim => {}
                Item::Record {
                    position,
                    header,
                    payload,
                    padding,
                    crc_checked,
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
                        payload_ok: (crc_checked
                            || crate::format::crc32c(payload) == header.payload_crc)
                            && stream::all_zero(padding),
                    });
                }
            }
            Ok(Flow::Continue)
        },
    )?;
    report.set_id = set_id;
    Ok(report)
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
/// its first valid record's (read from the start of its data only). The
/// devices are asked at once, one thread each: a device whose label is
/// gone may have to be read far before its first record shows.
pub fn device_sets(devs: &[Box<dyn Device>]) -> Result<Vec<DeviceSet>, StreamError> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = devs
            .iter()
            .map(|dev| scope.spawn(move || device_set(dev.as_ref())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("device set thread panicked"))
            .collect()
    })
}

/// `device_sets` of one device.
fn device_set(dev: &dyn Device) -> Result<DeviceSet, StreamError> {
    let device = dev.path().display().to_string();
    if let Ok(label) = super::read_label(dev) {
        return Ok(DeviceSet {
            device,
            set_id: Some(label.set_id),
            created_unix_ns: Some(label.created_unix_ns),
        });
    }
    let mut set_id = None;
    stream::stream::<StreamError>(
        dev,
        super::data_start(dev),
        super::scan_end(dev),
        PAYLOAD_BYTES_MAX.min(16 << 20),
        |item| {
            if let Item::Record { header, .. } = item {
                set_id = Some(header.set_id);
                return Ok(Flow::Stop);
            }
            Ok(Flow::Continue)
        },
    )?;
    Ok(DeviceSet {
        device,
        set_id,
        created_unix_ns: None,
    })
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
                    id,
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
    if prefix.is_empty()
        || prefix.len() > SetId::HEX_DIGITS
        || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(format!(
            "--set {wanted}: expected a set id in hex (32 digits, or a prefix of one)"
        ));
    }
    let matching: Vec<SetId> = sets
        .iter()
        .map(|(id, _, _)| *id)
        .filter(|id| id.has_hex_prefix(&prefix))
        .collect();
    match (matching.len(), prefix.parse::<SetId>().ok()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, id: Option<[u8; 16]>) -> DeviceSet {
        DeviceSet {
            device: name.into(),
            set_id: id.map(SetId),
            created_unix_ns: None,
        }
    }

    #[test]
    fn one_set_is_taken_and_two_are_refused_without_set() {
        let a = device("/dev/a", Some([0xab; 16]));
        let b = device("/dev/b", Some([0xac; 16]));
        let none = device("/dev/c", None);
        assert_eq!(choose_set(std::slice::from_ref(&none), None), Ok(None));
        assert_eq!(
            choose_set(&[a.clone(), none], None),
            Ok(Some(SetId([0xab; 16])))
        );
        let e = choose_set(&[a, b], None).unwrap_err();
        assert!(e.contains("belong to 2 different sets"), "{e}");
        assert!(e.contains(&"ab".repeat(16)) && e.contains("/dev/b"), "{e}");
    }

    #[test]
    fn set_picks_by_unambiguous_prefix_or_whole_id() {
        let devs = [
            device("/dev/a", Some([0xab; 16])),
            device("/dev/b", Some([0xac; 16])),
        ];
        assert_eq!(choose_set(&devs, Some("AbA")), Ok(Some(SetId([0xab; 16]))));
        let e = choose_set(&devs, Some("a")).unwrap_err();
        assert!(e.contains("ambiguous: 2 sets"), "{e}");
        let e = choose_set(&devs, Some("ff")).unwrap_err();
        assert!(e.contains("no given device belongs"), "{e}");
        // A whole id no device's label names: its records may still be there.
        let other = "ff".repeat(16);
        assert_eq!(choose_set(&devs, Some(&other)), Ok(Some(SetId([0xff; 16]))));
        for bad in ["", "xy", &"a".repeat(33)] {
            let e = choose_set(&devs, Some(bad)).unwrap_err();
            assert!(e.contains("expected a set id in hex"), "{bad}: {e}");
        }
    }
}
