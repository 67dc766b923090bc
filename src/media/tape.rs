//! The label and catalog on a sequential device (tape): tape blocks and
//! filemarks, positions counted in logical objects (docs/FORMAT.md, "Tape
//! layout").

use super::catalog::{checked_payload, decoded, each_catalog_record, CatalogRead};
use super::{name, MediaError};
use crate::device::{self, Access, Device, TapeOp};
use crate::format::{Label, RecordHeader, RecordKind, SetId, BLOCK_BYTES, HEADER_BYTES};
use crate::io::buffers::BufferPool;

pub(super) fn tape_op(dev: &dyn Device, op: TapeOp, position: u64) -> Result<(), MediaError> {
    let what = match op {
        TapeOp::Rewind => "rewind (MTREW)",
        TapeOp::ForwardFiles(_) => "space forward over filemarks (MTFSF)",
        TapeOp::BackFiles(_) => "space back over filemarks (MTBSF)",
        TapeOp::ForwardBlocks(_) => "space forward over blocks (MTFSR)",
        TapeOp::BackBlocks(_) => "space back over blocks (MTBSR)",
        TapeOp::EndOfData => "space to end of data (MTEOM)",
        TapeOp::WriteFilemarks(_) => "write filemark (MTWEOF)",
    };
    dev.tape_op(op)
        .map_err(|error| MediaError::io(dev, what, position, error))
}

/// Write one tape block. In the early-warning zone st alternates: a write
/// succeeds, the next fails with ENOSPC having written nothing, the one
/// after succeeds (IO-NOTES.md). So ENOSPC is tried once more; two in a
/// row mean the physical end of the medium.
pub(super) fn write_tape_block(
    dev: &dyn Device,
    buf: &[u8],
    position: u64,
) -> Result<(), MediaError> {
    let io_err = |error| MediaError::io(dev, "write tape block", position, error);
    let mut enospc = 0;
    loop {
        match device::write_block(dev, buf) {
            Ok(n) if n == buf.len() => return Ok(()),
            Ok(n) => {
                return Err(io_err(std::io::Error::other(format!(
                    "short block: {n} of {} bytes written (end of medium)",
                    buf.len()
                ))))
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && enospc == 0 => enospc += 1,
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// How many bytes to ask for when reading a tape block of at most
/// `record_max` bytes: no more than the drive's block limit (READ BLOCK
/// LIMITS), since st refuses a variable-block read larger than that with
/// EINVAL whatever the block on the tape (rw_checks), and at least a header.
pub(super) fn block_read_bytes(dev: &dyn Device, record_max: usize) -> usize {
    dev.block_bytes_max()
        .map_or(record_max, |m| (m as usize).min(record_max))
        .max(HEADER_BYTES)
}

/// Whether `block` (all the bytes a tape block read returned) holds a
/// whole record: its header decodes, says the block's length, and its
/// stored payload matches the header's checksum.
///
/// A block read with a request larger than the block comes back short
/// (the drive reports the residue), and some transports lose the tail of
/// such a transfer while reporting the block's length right: tgt's
/// virtual tape drives (tgt 1.0.85, `ssc.c` `resp_var_read` passes the
/// residue where the transferred length belongs) send only `asked -
/// block` bytes of it, so every block longer than half the request
/// arrived with its tail missing (hw-tests/README.md, item 7). A short
/// block that does not check is read again with a request of exactly
/// its length ([`read_again_exactly`]); a real drive's block that checks
/// costs one checksum, a damaged one one reposition.
pub(super) fn record_checks(block: &[u8]) -> bool {
    match RecordHeader::decode(block) {
        Ok(h) if h.media_bytes() == block.len() as u64 => {
            let stored = &block[HEADER_BYTES..HEADER_BYTES + h.stored_len() as usize];
            h.stored_len() == 0 || crate::format::crc32c(stored) == h.payload_crc
        }
        _ => false,
    }
}

/// The block just read (`got` bytes, fewer than asked, not a whole
/// record) read again asking exactly `got` bytes: MTBSR 1, then one read.
/// Returns what the second read gave.
pub(super) fn read_again_exactly(
    dev: &dyn Device,
    buf: &mut [u8],
    got: usize,
    position: u64,
) -> Result<usize, MediaError> {
    tape_op(dev, TapeOp::BackBlocks(1), position)?;
    read_tape_block(dev, &mut buf[..got], position)
}

/// Read one tape block; 0 is a filemark.
pub(super) fn read_tape_block(
    dev: &dyn Device,
    buf: &mut [u8],
    position: u64,
) -> Result<usize, MediaError> {
    loop {
        match device::read_block(dev, buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(error) => return Err(MediaError::io(dev, "read tape block", position, error)),
        }
    }
}

/// Close the data file of a tape and write the catalog as tape file 1:
/// a filemark at `data_end` (the object after the last data record), the
/// catalog records (slices of at most `payload_bytes_max`), the End
/// record, a filemark. The filemarks are written without the immediate
/// bit, so the drive has everything on the medium when this returns.
/// Returns the object number just past the closing filemark.
pub fn write_tape_catalog(
    dev: &dyn Device,
    set_id: SetId,
    device_index: u32,
    sequence: u64,
    data_end: u64,
    catalog: &[u8],
    payload_bytes_max: u32,
) -> Result<u64, MediaError> {
    assert_eq!(dev.access(), Access::Sequential);
    let mut pool = BufferPool::new(1, HEADER_BYTES + payload_bytes_max as usize);
    let mut position = data_end;
    tape_op(dev, TapeOp::WriteFilemarks(1), position)?;
    position += 1;
    let ids = (set_id, device_index, sequence);
    each_catalog_record(
        pool.slot_mut(0),
        ids,
        catalog,
        payload_bytes_max,
        |record| {
            write_tape_block(dev, record, position)?;
            position += 1;
            Ok(())
        },
    )?;
    tape_op(dev, TapeOp::WriteFilemarks(1), position)?;
    Ok(position + 1)
}

/// The catalog of a tape: space over tape file 0 (label and data) with
/// MTFSF, then read catalog records up to the End record, which must be
/// followed by a filemark. That End record and filemark are what makes a
/// tape complete: its label cannot be rewritten.
pub(super) fn read_tape_catalog(
    dev: &dyn Device,
    label: &Label,
) -> Result<CatalogRead, MediaError> {
    // Catalog blocks were written no larger than the drive allows: ask
    // for no more than that (HEADER_BYTES + chunk can be past the limit).
    let read_bytes = block_read_bytes(dev, HEADER_BYTES + label.chunk_bytes as usize);
    let mut pool = BufferPool::new(1, read_bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES);
    let invalid = |why: String| MediaError::Invalid {
        device: name(dev),
        why,
    };
    let format_err = |what, position, error| MediaError::Format {
        device: name(dev),
        what,
        offset: position,
        error,
    };
    tape_op(dev, TapeOp::Rewind, 0)?;
    tape_op(dev, TapeOp::ForwardFiles(1), 0)?;
    // The object number of the first catalog block is only known from the
    // catalog itself (data_end + 1); block numbers within file 1 are used
    // in messages until then.
    let mut block = 0u64;
    let mut bytes: Vec<u8> = Vec::new();
    let mut catalog_bytes: Option<u64> = None;
    loop {
        let buf = &mut pool.slot_mut(0)[..read_bytes];
        let mut got = read_tape_block(dev, buf, block)?;
        if got > 0 && got < read_bytes && !record_checks(&buf[..got]) {
            got = read_again_exactly(dev, buf, got, block)?;
        }
        if got == 0 {
            return Err(invalid(format!(
                "tape file 1 ends at its block {block} without an End record: the catalog is incomplete (interrupted run?): use `pbio scan`"
            )));
        }
        let header = RecordHeader::decode(&buf[..got])
            .map_err(|e| format_err("catalog record header (tape file 1)", block, e))?;
        if header.set_id != label.set_id {
            return Err(invalid(format!(
                "tape file 1 block {block} belongs to another set"
            )));
        }
        if header.kind == RecordKind::End {
            if block == 0 {
                return Err(MediaError::Continued {
                    device: name(dev),
                    volume: label.device_index,
                    volumes: label.device_count,
                });
            }
            break;
        }
        let expected_size = *catalog_bytes.get_or_insert(header.file_size);
        if header.kind != RecordKind::Catalog
            || header.file_offset != bytes.len() as u64
            || header.file_size != expected_size
            || got != header.media_bytes() as usize
        {
            return Err(invalid(format!(
                "tape file 1 block {block} is not the next record of this set's catalog"
            )));
        }
        let end = HEADER_BYTES + header.payload_bytes as usize;
        let payload = checked_payload(buf, &header)
            .map_err(|e| format_err("catalog payload (tape file 1)", block, e))?;
        if buf[end..got].iter().any(|&b| b != 0) {
            return Err(invalid(format!(
                "tape file 1 block {block}: damaged padding after the catalog slice"
            )));
        }
        bytes.extend_from_slice(payload);
        block += 1;
    }
    if catalog_bytes != Some(bytes.len() as u64) {
        return Err(invalid(format!(
            "tape file 1: End record after {} of {} catalog bytes",
            bytes.len(),
            catalog_bytes.unwrap_or(0)
        )));
    }
    let buf = &mut pool.slot_mut(0)[..read_bytes];
    if read_tape_block(dev, buf, block + 1)? != 0 {
        return Err(invalid(
            "tape file 1: no filemark after the End record".to_string(),
        ));
    }
    decoded(&bytes, label).map_err(|e| format_err("catalog (tape file 1)", 0, e))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::device::vtape::{VirtualTape, BLOCK_BYTES_MAX};
    use crate::device::{DeviceSpec, Mode};
    use crate::format::seal::LabelSeal;

    /// A new emulated tape of 64 MiB in `dir`.
    pub(in crate::media) fn scratch_tape(dir: &std::path::Path) -> VirtualTape {
        let spec = DeviceSpec::parse(&format!("vtape:{},size=64M", dir.display())).unwrap();
        VirtualTape::open(&spec, Mode::Write).unwrap()
    }

    /// The label of a one-device set (id bytes `id`) written on `tape`.
    fn labelled(tape: &VirtualTape, id: u8, chunk_bytes: u32) -> Label {
        let label = Label::new_writing(
            SetId([id; 16]),
            1,
            chunk_bytes,
            LabelSeal::NONE,
            0,
            1,
            BLOCK_BYTES as u32,
        );
        super::super::label::write_label(tape, &label).unwrap();
        label
    }

    /// A set whose chunk is larger than the drive's block limit: its
    /// catalog blocks were written within the limit, and reading them
    /// must ask for no more than that, or the drive refuses the read
    /// (EINVAL from st, as tgt's drives showed with a 1 MiB chunk).
    #[test]
    fn the_catalog_is_read_within_the_drive_block_limit() {
        let dir = tempfile::tempdir().unwrap();
        let tape = scratch_tape(dir.path());
        let chunk_bytes = 16 << 20;
        assert!(HEADER_BYTES + chunk_bytes as usize > BLOCK_BYTES_MAX as usize);
        let label = labelled(&tape, 0x5a, chunk_bytes);
        // Not a catalog pbio could decode: the records must be read through
        // to the End record and its filemark, then decoding fails.
        let catalog = vec![7u8; 20_000];
        write_tape_catalog(&tape, label.set_id, 0, 1, 1, &catalog, 8192).unwrap();
        match read_tape_catalog(&tape, &label) {
            Err(MediaError::Format { what, .. }) => assert_eq!(what, "catalog (tape file 1)"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("7s decoded as a catalog"),
        }
        // A volume closed before its catalog: only the End record.
        super::super::label::write_label(&tape, &label).unwrap();
        write_tape_catalog(&tape, label.set_id, 0, 1, 1, &[], 8192).unwrap();
        let e = read_tape_catalog(&tape, &label).unwrap_err();
        assert!(matches!(e, MediaError::Continued { .. }), "{e}");
    }

    /// Catalog blocks longer than half the read request, on a drive that
    /// loses the tail of a short transfer (tgt's, item 7 of
    /// hw-tests/README.md): each is read again asking exactly its length,
    /// so the catalog reads whole (without that: "catalog payload"
    /// checksum errors).
    #[test]
    fn catalog_blocks_whose_tail_a_short_read_lost_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let tape = scratch_tape(dir.path()).losing_residual_tails();
        // Read requests of a header and 64 KiB; blocks of a header and 32
        // KiB: more than half the request, so 4 KiB of each would be lost.
        let label = labelled(&tape, 0x5b, 64 << 10);
        let catalog: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        write_tape_catalog(&tape, label.set_id, 0, 1, 1, &catalog, 32 << 10).unwrap();
        match read_tape_catalog(&tape, &label) {
            // Every slice checked and read through to the End record and
            // its filemark: only the decoding (not a catalog) fails.
            Err(MediaError::Format { what, .. }) => assert_eq!(what, "catalog (tape file 1)"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("not a catalog, decoded"),
        }
    }
}
