//! Reading a data record of a parity stripe as its shard (`--parity`,
//! docs/FORMAT.md section 5.1: parity is computed over the records as
//! stored, header block included): the backup's parity phase, scrub and
//! the restore's rebuild read data members through this one function.

use crate::device::Device;
use crate::format::parity::{check_data_shard, record_to_shard};
use crate::format::{round_up_block, RecordHeader, SetId, StripeRecord, HEADER_BYTES};

/// Read the data record `r` of a stripe of set `set_id` from `dev` into
/// `buf` as its shard, the magic zeroed, checked by `check_data_shard`:
/// in one read of the most it can take on media (header block and
/// `payload_bytes` padded: exactly the record unless it is compressed)
/// when the device and `buf` hold that much, else the header block
/// first, then the stored payload and padding it announces.
/// The record's length on media (its shard is `buf[..len]`, to be padded
/// with zeros to the stripe's shard length), or why it cannot be used.
pub fn read_data_shard(
    dev: &dyn Device,
    set_id: SetId,
    r: &StripeRecord,
    buf: &mut [u8],
) -> Result<usize, String> {
    let read = |buf: &mut [u8], offset: u64| match super::read_at(dev, buf, offset) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(format!("short read ({n} of {} bytes)", buf.len())),
        Err(e) => Err(e.to_string()),
    };
    if buf.len() < HEADER_BYTES {
        return Err("no room for a record header (caller bug)".into());
    }
    let most = HEADER_BYTES + round_up_block(r.payload_bytes.into()) as usize;
    let whole = most <= buf.len() && r.position + most as u64 <= dev.capacity_bytes();
    let first = if whole { most } else { HEADER_BYTES };
    read(&mut buf[..first], r.position)?;
    let media = RecordHeader::decode(&buf[..HEADER_BYTES])
        .map_err(|e| format!("data record header: {e}"))?
        .media_bytes() as usize;
    if media > buf.len() {
        return Err(format!(
            "a record of {media} bytes on media is larger than the set's chunk"
        ));
    }
    if media > first {
        read(
            &mut buf[HEADER_BYTES..media],
            r.position + HEADER_BYTES as u64,
        )?;
    }
    let len = data_shard_in(&mut buf[..media], set_id, r)?;
    Ok(len.expect("the record's media bytes were read"))
}

/// The data record `r` at the start of `bytes` (read from its position,
/// header block included, possibly with what follows it on media) made
/// its shard in place and checked, as `read_data_shard` does: the
/// record's length on media, or None when `bytes` stops before its end.
pub fn data_shard_in(
    bytes: &mut [u8],
    set_id: SetId,
    r: &StripeRecord,
) -> Result<Option<usize>, String> {
    let head = bytes
        .get(..HEADER_BYTES)
        .ok_or("data record shorter than its header")?;
    let media = RecordHeader::decode(head)
        .map_err(|e| format!("data record header: {e}"))?
        .media_bytes() as usize;
    if media > bytes.len() {
        return Ok(None);
    }
    record_to_shard(&mut bytes[..media]);
    check_data_shard(&bytes[..media], set_id, r).map(|(_, len)| Some(len))
}
