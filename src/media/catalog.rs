//! The catalog on a random-access device: Catalog records after the data,
//! closed by an End record (docs/FORMAT.md, "Catalog").

use super::{name, read_at, write_all_at, MediaError};
use crate::device::{Access, Device};
use crate::format::catalog::Spilled;
use crate::format::{
    round_up_block, Catalog, FormatError, Label, RecordHeader, RecordKind, SetId, HEADER_BYTES,
};
use crate::io::buffers::BufferPool;

/// Write the encoded catalog as Catalog records starting at `position`,
/// then one End record. Returns the offset just past the End record.
pub fn write_catalog(
    dev: &dyn Device,
    set_id: SetId,
    device_index: u32,
    sequence: u64,
    position: u64,
    catalog: &[u8],
    chunk_bytes: u32,
) -> Result<u64, MediaError> {
    let mut pool = BufferPool::new(1, HEADER_BYTES + chunk_bytes as usize);
    let mut offset = position;
    let ids = (set_id, device_index, sequence);
    each_catalog_record(pool.slot_mut(0), ids, catalog, chunk_bytes, |record| {
        if offset + record.len() as u64 > dev.capacity_bytes() {
            return Err(MediaError::Invalid {
                device: name(dev),
                why: format!("no room for the catalog at offset {offset}"),
            });
        }
        write_all_at(dev, record, offset)?;
        offset += record.len() as u64;
        Ok(())
    })?;
    Ok(offset)
}

/// The records that hold a catalog on media, in order: its slices of at
/// most `slice_bytes_max` bytes as Catalog records, then the End record.
/// Each is encoded into `buf` and handed to `put` (the record's bytes).
pub(super) fn each_catalog_record(
    buf: &mut [u8],
    (set_id, device_index, first_sequence): (SetId, u32, u64),
    catalog: &[u8],
    slice_bytes_max: u32,
    mut put: impl FnMut(&[u8]) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    let slice_bytes_max = slice_bytes_max as usize;
    let records = catalog
        .chunks(slice_bytes_max)
        .enumerate()
        .map(|(i, slice)| (RecordKind::Catalog, slice, (i * slice_bytes_max) as u64))
        .chain([(RecordKind::End, &[][..], 0)]);
    for ((kind, payload, file_offset), sequence) in records.zip(first_sequence..) {
        let header = catalog_record_header(
            kind,
            (set_id, device_index, sequence),
            file_offset,
            payload,
            catalog.len(),
        );
        let total = encode_record(buf, header, payload);
        put(&buf[..total])?;
    }
    Ok(())
}

/// The header of a Catalog record (a slice of the encoded catalog at
/// `file_offset`) or of the End record (empty payload).
fn catalog_record_header(
    kind: RecordKind,
    (set_id, device_index, sequence): (SetId, u32, u64),
    file_offset: u64,
    payload: &[u8],
    catalog_bytes: usize,
) -> RecordHeader {
    RecordHeader {
        kind,
        set_id,
        device_index,
        sequence,
        file_id: 0,
        segment_id: 0,
        file_offset,
        payload_bytes: payload.len() as u32,
        file_size: if kind == RecordKind::Catalog {
            catalog_bytes as u64
        } else {
            0
        },
        payload_crc: crate::format::crc32c(payload),
        transform: crate::format::Transform::RAW,
    }
}

/// Media bytes the catalog and End record take.
pub fn catalog_media_bytes(catalog_bytes: u64, chunk_bytes: u32) -> u64 {
    let records = catalog_bytes.div_ceil(chunk_bytes as u64);
    records * HEADER_BYTES as u64 + round_up_block(catalog_bytes) + HEADER_BYTES as u64
}

/// A catalog read from a device, and the BLAKE3 of its encoding as read
/// (what a Complete label's `catalog_digest` must equal).
#[derive(Debug)]
pub struct CatalogRead {
    pub catalog: Catalog,
    pub digest: [u8; 32],
}

/// The catalog of the bytes read for `label`'s set: opened first when
/// the set is encrypted (with the data key its envelope holds), the digest
/// over the bytes as read (sealed).
pub(super) fn decoded(bytes: &[u8], label: &Label) -> Result<CatalogRead, FormatError> {
    let digest = *blake3::hash(bytes).as_bytes();
    if label.seal.is_sealed() {
        // Opened with the user's key when this process has not opened the
        // set yet (`backup --since` an encrypted set).
        let key = crate::format::seal::keyring::open(label.set_id, &label.seal)
            .map_err(crate::format::seal::SealError::from)?;
        let opened = key.open_catalog(label.seal.run_id, bytes)?;
        return Ok(CatalogRead {
            catalog: Catalog::decode(&opened)?,
            digest,
        });
    }
    Ok(CatalogRead {
        catalog: Catalog::decode(bytes)?,
        digest,
    })
}

/// Read and decode the catalog a Complete label points to. On a tape,
/// the catalog is tape file 1, found by spacing over the data file.
pub fn read_catalog(dev: &dyn Device, label: &Label) -> Result<CatalogRead, MediaError> {
    if dev.access() == Access::Sequential {
        return super::tape::read_tape_catalog(dev, label);
    }
    let bytes = read_catalog_bytes(dev, label)?;
    decoded(&bytes, label).map_err(|error| MediaError::Format {
        device: name(dev),
        what: "catalog",
        offset: label.catalog_offset,
        error,
    })
}

/// The catalog's encoding as a Complete label of a random-access device
/// points to (every record checked, then the End record after them),
/// not decoded: the encoding as stored (sealed when the set is encrypted).
/// `catalog_bytes` opens and hashes it; `CatalogStream` reads it entry by
/// entry (issue 23).
pub fn read_catalog_bytes(dev: &dyn Device, label: &Label) -> Result<Vec<u8>, MediaError> {
    let mut bytes = Vec::with_capacity(label.catalog_bytes.min(1 << 30) as usize);
    each_catalog_payload(dev, label, |payload| {
        bytes.extend_from_slice(payload);
        Ok(())
    })?;
    Ok(bytes)
}

/// `read_catalog_bytes` into a spill file (`$TMPDIR`) instead of memory,
/// with the BLAKE3 of the bytes (what the label's `catalog_digest` must
/// be): a reader then holds a window of the catalog, not all of it.
pub fn spill_catalog_bytes(
    dev: &dyn Device,
    label: &Label,
) -> Result<(Spilled, [u8; 32]), MediaError> {
    let spill_error = |error: std::io::Error| MediaError::Io {
        device: name(dev),
        op: "write the catalog to a temporary file ($TMPDIR)",
        offset: label.catalog_offset,
        error,
    };
    let mut spilled = Spilled::new().map_err(spill_error)?;
    let mut hasher = blake3::Hasher::new();
    each_catalog_payload(dev, label, |payload| {
        hasher.update(payload);
        spilled.append(payload).map_err(spill_error)
    })?;
    Ok((spilled, *hasher.finalize().as_bytes()))
}

/// The BLAKE3 of the catalog's encoding a Complete label points to (what
/// its `catalog_digest` must be), read and checked as `read_catalog_bytes`
/// reads it, without holding it.
pub fn catalog_digest(dev: &dyn Device, label: &Label) -> Result<[u8; 32], MediaError> {
    let mut hasher = blake3::Hasher::new();
    each_catalog_payload(dev, label, |payload| {
        hasher.update(payload);
        Ok(())
    })?;
    Ok(*hasher.finalize().as_bytes())
}

/// The payloads of the catalog's records a Complete label points to, in
/// order, each handed to `put` once checked (header, CRC, padding); then
/// the End record after them checked.
fn each_catalog_payload(
    dev: &dyn Device,
    label: &Label,
    mut put: impl FnMut(&[u8]) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    let chunk = label.chunk_bytes as usize;
    let mut pool = BufferPool::new(1, HEADER_BYTES + chunk);
    let mut read_bytes = 0u64;
    let mut offset = label.catalog_offset;
    let format_err = |what, offset, error| MediaError::Format {
        device: name(dev),
        what,
        offset,
        error,
    };
    while read_bytes < label.catalog_bytes {
        let buf = pool.slot_mut(0);
        let got = read_at(dev, buf, offset)?;
        let header = RecordHeader::decode(&buf[..got])
            .map_err(|e| format_err("catalog record header", offset, e))?;
        if header.kind != RecordKind::Catalog
            || header.set_id != label.set_id
            || header.file_offset != read_bytes
            || header.file_size != label.catalog_bytes
        {
            return Err(MediaError::Invalid {
                device: name(dev),
                why: format!(
                    "catalog record at offset {offset} does not belong to this set's catalog"
                ),
            });
        }
        let end = HEADER_BYTES + header.payload_bytes as usize;
        if got < end {
            return Err(MediaError::Invalid {
                device: name(dev),
                why: format!(
                    "catalog record at offset {offset} is cut short by the end of the device"
                ),
            });
        }
        let payload =
            checked_payload(buf, &header).map_err(|e| format_err("catalog payload", offset, e))?;
        let padded = header.media_bytes() as usize;
        if buf[end..padded.min(got)].iter().any(|&b| b != 0) {
            return Err(MediaError::Invalid {
                device: name(dev),
                why: format!(
                    "catalog record at offset {offset}: damaged padding after the payload"
                ),
            });
        }
        read_bytes += u64::from(header.payload_bytes);
        put(payload)?;
        offset += header.media_bytes();
    }
    // The End record closes the device's records.
    let buf = pool.slot_mut(0);
    let got = read_at(dev, &mut buf[..HEADER_BYTES], offset)?;
    match RecordHeader::decode(&buf[..got]) {
        Ok(h) if h.kind == RecordKind::End && h.set_id == label.set_id => {}
        Ok(_) => {
            return Err(MediaError::Invalid {
                device: name(dev),
                why: format!("no End record after the catalog (offset {offset})"),
            })
        }
        Err(e) => return Err(format_err("End record", offset, e)),
    }
    Ok(())
}

/// The catalog's encoding read by `read_catalog_bytes` (whose BLAKE3 the
/// caller checked against the label's `catalog_digest`), opened when the
/// set is encrypted: the plain encoding, for `CatalogStream`.
pub fn opened_catalog_bytes(bytes: Vec<u8>, label: &Label) -> Result<Vec<u8>, FormatError> {
    if !label.seal.is_sealed() {
        return Ok(bytes);
    }
    let key = crate::format::seal::keyring::open(label.set_id, &label.seal)
        .map_err(crate::format::seal::SealError::from)?;
    Ok(key.open_catalog(label.seal.run_id, &bytes)?)
}

/// The payload of the record read into `buf` (its header block first,
/// `header` decoded from it), with its CRC32C checked. `buf` holds the
/// whole payload (the caller checked the length read).
pub(super) fn checked_payload<'b>(
    buf: &'b [u8],
    header: &RecordHeader,
) -> Result<&'b [u8], FormatError> {
    let payload = &buf[HEADER_BYTES..HEADER_BYTES + header.payload_bytes as usize];
    let computed = crate::format::crc32c(payload);
    if computed != header.payload_crc {
        return Err(FormatError::Checksum {
            what: "payload",
            stored: header.payload_crc,
            computed,
        });
    }
    Ok(payload)
}

/// A record image in `buf`: header block, payload, zero padding to a
/// block. Returns its length in bytes.
fn encode_record(buf: &mut [u8], header: RecordHeader, payload: &[u8]) -> usize {
    let padded = round_up_block(payload.len() as u64) as usize;
    let (head, body) = buf.split_at_mut(HEADER_BYTES);
    body[..payload.len()].copy_from_slice(payload);
    body[payload.len()..padded].fill(0);
    header.encode_into(head);
    HEADER_BYTES + padded
}
