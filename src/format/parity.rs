//! Parity records (`--parity M`, issue 19): the header of one Reed-Solomon
//! parity shard of a stripe. Normative description: docs/FORMAT.md,
//! "Parity records". Pure.
//!
//! A parity record is framed like every record (magic `PBIORECD`, version,
//! kind at 12, set id, device index, payload bytes and sequence at the same
//! offsets as section 5), with kind `4`; the rest of its header describes
//! its stripe completely, so that a reader with no catalog (`scan`) can
//! find the stripe's other members and rebuild a missing data record from
//! any `k` of the `k + M`:
//!
//! - the stripe id, this record's position in it, `k` and `M`;
//! - the members' device indexes in position order (data `0..k`, parity
//!   `k..k + M`: the rotation of parity across devices is written out, a
//!   reader needs no formula);
//! - for each data position, the data record it covers: its sequence on
//!   its device, file id, file offset, payload bytes and payload CRC.
//!
//! The payload is the parity shard, `shard_bytes` long: the code runs over
//! the data records **as stored** (amendment seven): each data shard is
//! the record as it lies on its device, header block with its magic
//! zeroed and the stored payload (compressed and/or sealed) with its
//! padding, padded with zeros to `shard_bytes` (`shard_bytes_for`).

use super::block::{self, get, get_u32, get_u64, put, put_u32, put_u64, Block};
use super::{
    crc32c, round_up_block, FormatError, SetId, HEADER_BYTES, PAYLOAD_BYTES_MAX, RECORD_MAGIC,
};

/// `kind` of a parity record (docs/FORMAT.md section 5 lists 1..3).
pub const PARITY_KIND: u32 = 4;
/// Most members (`k + M`) of a stripe.
pub const MEMBERS_MAX: usize = 255;

/// Byte offsets in the parity record header.
pub mod layout {
    pub const KIND: usize = 12;
    pub const SET_ID: usize = 16;
    pub const DEVICE_INDEX: usize = 32;
    pub const SHARD_BYTES: usize = 36;
    pub const SEQUENCE: usize = 40;
    pub const STRIPE_ID: usize = 48;
    pub const PAYLOAD_CRC: usize = 56;
    pub const DEVICE_COUNT: usize = 60;
    pub const K: usize = 64;
    pub const M: usize = 65;
    pub const POSITION: usize = 66;
    /// One zero byte.
    pub const PAD: usize = 67;
    /// `k + M` u32 device indexes, then `k` data entries.
    pub const MEMBERS: usize = 68;
    pub const MEMBER_BYTES: usize = 4;
    pub const ENTRY_BYTES: usize = 32;
    /// Within an entry.
    pub const E_SEQUENCE: usize = 0;
    pub const E_FILE_ID: usize = 8;
    pub const E_PAYLOAD_BYTES: usize = 12;
    pub const E_FILE_OFFSET: usize = 16;
    pub const E_PAYLOAD_CRC: usize = 24;
    /// Four zero bytes.
    pub const E_PAD: usize = 28;
    pub const CRC: usize = super::block::CRC;
}

/// The shard length of a stripe whose largest data record holds
/// `payload_bytes` (before compression): its header block and that payload
/// padded to a block, the most a data record of the stripe takes on media
/// (a stored payload is never longer than its payload).
/// Saturates at `u32::MAX` (a length no rule accepts) for an absurd input.
pub const fn shard_bytes_for(payload_bytes: u32) -> u32 {
    let bytes = HEADER_BYTES as u64 + round_up_block(payload_bytes as u64);
    if bytes > u32::MAX as u64 {
        u32::MAX
    } else {
        bytes as u32
    }
}

/// A data record as read from its device (header block, stored payload,
/// padding) made its shard in place: the magic zeroed, so that no parity
/// payload (at `k = 1` a copy of its data shard) holds a record header a
/// scan could take for a real one.
pub fn record_to_shard(record: &mut [u8]) {
    record[..RECORD_MAGIC.len()].fill(0);
}

/// The inverse of `record_to_shard`: a rebuilt data shard made the
/// record bytes it was (to be checked like any record read).
pub fn shard_to_record(shard: &mut [u8]) {
    shard[..RECORD_MAGIC.len()].copy_from_slice(&RECORD_MAGIC);
}

/// Check a data shard (a data record as read from its device and made a
/// shard, or rebuilt from parity) against the stripe entry `r` of the
/// set `set_id`, as a record read from a device is checked (docs/FORMAT.md
/// section 5): its header (magic put back) decodes and is a Data record of
/// this set on device `r.device` holding `r`'s file, offset and length with
/// `r`'s CRC; the stored bytes it announces fit in `shard` and have that
/// CRC; the padding after them is zero. Its header and the record's length
/// on media (the first bytes of `shard`), or why it cannot be used.
pub fn check_data_shard(
    shard: &[u8],
    set_id: SetId,
    r: &super::StripeRecord,
) -> Result<(super::RecordHeader, usize), String> {
    let mut head = [0u8; HEADER_BYTES];
    head.copy_from_slice(
        shard
            .get(..HEADER_BYTES)
            .ok_or("data record shorter than its header")?,
    );
    shard_to_record(&mut head);
    let h = super::RecordHeader::decode(&head).map_err(|e| format!("data record header: {e}"))?;
    if h.kind != super::RecordKind::Data
        || h.set_id != set_id
        || h.device_index != r.device
        || h.file_id != r.file_id
        || h.file_offset != r.file_offset
        || h.payload_bytes != r.payload_bytes
        || h.payload_crc != r.payload_crc
    {
        return Err("data record is not the one the catalog lists in its stripe".into());
    }
    let media = h.media_bytes() as usize;
    let stored = HEADER_BYTES + h.stored_len() as usize;
    if media > shard.len() {
        return Err(format!(
            "data record of {media} bytes on media is longer than its stripe's shard ({} bytes)",
            shard.len()
        ));
    }
    let crc = crc32c(&shard[HEADER_BYTES..stored]);
    if crc != r.payload_crc {
        return Err(format!(
            "payload checksum mismatch (stored {:#010x}, computed {crc:#010x}): not used to rebuild",
            r.payload_crc
        ));
    }
    if shard[stored..media].iter().any(|&b| b != 0) {
        return Err("the padding after the payload is not zero".into());
    }
    Ok((h, media))
}

/// Whether a stripe of `k` data and `m` parity members fits in one header.
pub const fn shape_fits(k: usize, m: usize) -> bool {
    k >= 1
        && m >= 1
        && k + m <= MEMBERS_MAX
        && layout::MEMBERS + layout::MEMBER_BYTES * (k + m) + layout::ENTRY_BYTES * k <= layout::CRC
}

/// The data record one data position of a stripe holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripeData {
    /// The record's `sequence` on its device (the member at this position).
    pub sequence: u64,
    pub file_id: u32,
    pub file_offset: u64,
    pub payload_bytes: u32,
    pub payload_crc: u32,
}

/// A parity record header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParityHeader {
    pub set_id: SetId,
    /// The device this record is on (`members[position]`).
    pub device_index: u32,
    /// Devices in the set (members are below it).
    pub device_count: u32,
    /// Record number on this device, shared with its data records.
    pub sequence: u64,
    pub stripe_id: u64,
    /// This record's position in the stripe, `k..k + M`.
    pub position: u8,
    /// Length of every shard of the stripe and of this record's payload:
    /// `shard_bytes_for` the largest data payload of the stripe.
    pub shard_bytes: u32,
    /// CRC32C of this record's payload (the parity shard).
    pub payload_crc: u32,
    /// Device index of each position, data `0..k` then parity `k..k + M`.
    pub members: Vec<u32>,
    /// The data record of each data position (`k` of them).
    pub data: Vec<StripeData>,
}

impl ParityHeader {
    /// Data members `k`.
    pub fn k(&self) -> usize {
        self.data.len()
    }

    /// Parity members `M`.
    pub fn m(&self) -> usize {
        self.members.len().saturating_sub(self.data.len())
    }

    /// Check the field rules of docs/FORMAT.md "Parity records", in order.
    pub fn validate(&self) -> Result<(), FormatError> {
        let field = |field: &'static str, value: u64| Err(FormatError::Field { field, value });
        let (k, n) = (self.data.len(), self.members.len());
        if k == 0 || n <= k || !shape_fits(k, n - k) {
            return field("parity.k", k as u64);
        }
        let m = n - k;
        let position = usize::from(self.position);
        if position < k || position >= k + m {
            return field("parity.position", position as u64);
        }
        if self.device_index >= self.device_count {
            return field("parity.device_index", self.device_index.into());
        }
        for (i, &d) in self.members.iter().enumerate() {
            if d >= self.device_count || self.members[..i].contains(&d) {
                return field("parity.members", d.into());
            }
        }
        if self.members[position] != self.device_index {
            return field("parity.device_index", self.device_index.into());
        }
        if self.shard_bytes < HEADER_BYTES as u32
            || self.shard_bytes > shard_bytes_for(PAYLOAD_BYTES_MAX)
        {
            return field("parity.shard_bytes", self.shard_bytes.into());
        }
        let mut largest = 0;
        for e in &self.data {
            if shard_bytes_for(e.payload_bytes) > self.shard_bytes {
                return field("parity.data.payload_bytes", e.payload_bytes.into());
            }
            if e.payload_bytes == 0 && e.payload_crc != 0 {
                return field("parity.data.payload_crc", e.payload_crc.into());
            }
            if e.file_offset.checked_add(e.payload_bytes.into()).is_none() {
                return field("parity.data.file_offset", e.file_offset);
            }
            largest = largest.max(e.payload_bytes);
        }
        if shard_bytes_for(largest) != self.shard_bytes {
            return field("parity.shard_bytes", self.shard_bytes.into());
        }
        Ok(())
    }

    /// Write the header block at the start of `out` (at least 4096 bytes).
    /// Panics on an invalid header or a short buffer (caller bugs).
    pub fn encode_into(&self, out: &mut [u8]) {
        if let Err(e) = self.validate() {
            panic!("ParityHeader::encode_into of an invalid header (caller bug): {e}");
        }
        let b: &mut Block = block::start(out, &RECORD_MAGIC, "parity record");
        put_u32::<{ layout::KIND }>(b, PARITY_KIND);
        put::<{ layout::SET_ID }, { SetId::BYTES }>(b, self.set_id.0);
        put_u32::<{ layout::DEVICE_INDEX }>(b, self.device_index);
        put_u32::<{ layout::SHARD_BYTES }>(b, self.shard_bytes);
        put_u64::<{ layout::SEQUENCE }>(b, self.sequence);
        put_u64::<{ layout::STRIPE_ID }>(b, self.stripe_id);
        put_u32::<{ layout::PAYLOAD_CRC }>(b, self.payload_crc);
        put_u32::<{ layout::DEVICE_COUNT }>(b, self.device_count);
        b[layout::K] = self.k() as u8;
        b[layout::M] = self.m() as u8;
        b[layout::POSITION] = self.position;
        let mut at = layout::MEMBERS;
        for d in &self.members {
            b[at..at + 4].copy_from_slice(&d.to_le_bytes());
            at += layout::MEMBER_BYTES;
        }
        for e in &self.data {
            let t = &mut b[at..at + layout::ENTRY_BYTES];
            t[layout::E_SEQUENCE..][..8].copy_from_slice(&e.sequence.to_le_bytes());
            t[layout::E_FILE_ID..][..4].copy_from_slice(&e.file_id.to_le_bytes());
            t[layout::E_PAYLOAD_BYTES..][..4].copy_from_slice(&e.payload_bytes.to_le_bytes());
            t[layout::E_FILE_OFFSET..][..8].copy_from_slice(&e.file_offset.to_le_bytes());
            t[layout::E_PAYLOAD_CRC..][..4].copy_from_slice(&e.payload_crc.to_le_bytes());
            at += layout::ENTRY_BYTES;
        }
        block::seal(b);
    }

    /// Decode and check a parity record header: the frame (length, magic,
    /// CRC, version), kind 4, the shape, reserved bytes, then `validate`.
    pub fn decode(buf: &[u8]) -> Result<ParityHeader, FormatError> {
        let what = "parity record";
        let b = block::open(buf, &RECORD_MAGIC, what, layout::CRC)?;
        let kind = get_u32::<{ layout::KIND }>(b);
        if kind != PARITY_KIND {
            return Err(FormatError::Field {
                field: "record.kind",
                value: kind.into(),
            });
        }
        let (k, m) = (usize::from(b[layout::K]), usize::from(b[layout::M]));
        if !shape_fits(k, m) {
            return Err(FormatError::Field {
                field: "parity.k",
                value: ((k as u64) << 8) | m as u64,
            });
        }
        if b[layout::PAD] != 0 {
            return Err(FormatError::Reserved {
                what,
                offset: layout::PAD,
            });
        }
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let members: Vec<u32> = (0..k + m)
            .map(|i| u32_at(layout::MEMBERS + i * layout::MEMBER_BYTES))
            .collect();
        let table = layout::MEMBERS + (k + m) * layout::MEMBER_BYTES;
        let mut data = Vec::with_capacity(k);
        for i in 0..k {
            let at = table + i * layout::ENTRY_BYTES;
            if u32_at(at + layout::E_PAD) != 0 {
                block::check_zero(&b[..at + layout::E_PAD + 4], at + layout::E_PAD, what)?;
            }
            data.push(StripeData {
                sequence: u64_at(at + layout::E_SEQUENCE),
                file_id: u32_at(at + layout::E_FILE_ID),
                payload_bytes: u32_at(at + layout::E_PAYLOAD_BYTES),
                file_offset: u64_at(at + layout::E_FILE_OFFSET),
                payload_crc: u32_at(at + layout::E_PAYLOAD_CRC),
            });
        }
        block::check_zero(&b[..layout::CRC], table + k * layout::ENTRY_BYTES, what)?;
        let h = ParityHeader {
            set_id: SetId(get::<{ layout::SET_ID }, { SetId::BYTES }>(b)),
            device_index: get_u32::<{ layout::DEVICE_INDEX }>(b),
            device_count: get_u32::<{ layout::DEVICE_COUNT }>(b),
            sequence: get_u64::<{ layout::SEQUENCE }>(b),
            stripe_id: get_u64::<{ layout::STRIPE_ID }>(b),
            position: b[layout::POSITION],
            shard_bytes: get_u32::<{ layout::SHARD_BYTES }>(b),
            payload_crc: get_u32::<{ layout::PAYLOAD_CRC }>(b),
            members,
            data,
        };
        h.validate()?;
        Ok(h)
    }

    /// Whether `payload` (this record's parity shard) matches `payload_crc`.
    pub fn payload_ok(&self, payload: &[u8]) -> bool {
        payload.len() == self.shard_bytes as usize && crc32c(payload) == self.payload_crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BLOCK_BYTES;
    use proptest::prelude::*;

    fn sample() -> ParityHeader {
        ParityHeader {
            set_id: SetId([7; 16]),
            device_index: 3,
            device_count: 5,
            sequence: 41,
            stripe_id: 40,
            position: 4,
            shard_bytes: 4096 + (1 << 20),
            payload_crc: 0xdead_beef,
            members: vec![0, 1, 2, 4, 3],
            data: vec![
                StripeData {
                    sequence: 40,
                    file_id: 9,
                    file_offset: 1 << 20,
                    payload_bytes: 1 << 20,
                    payload_crc: 1,
                },
                StripeData {
                    sequence: 40,
                    file_id: 9,
                    file_offset: 2 << 20,
                    payload_bytes: 5,
                    payload_crc: 2,
                },
                StripeData {
                    sequence: 39,
                    file_id: 10,
                    file_offset: 0,
                    payload_bytes: 0,
                    payload_crc: 0,
                },
                StripeData {
                    sequence: 40,
                    file_id: 11,
                    file_offset: 7,
                    payload_bytes: 4096,
                    payload_crc: 3,
                },
            ],
        }
    }

    fn encoded(h: &ParityHeader) -> Vec<u8> {
        let mut b = vec![0xffu8; BLOCK_BYTES];
        h.encode_into(&mut b);
        b
    }

    #[test]
    fn round_trip_and_frame() {
        let h = sample();
        let b = encoded(&h);
        assert_eq!(&b[..8], b"PBIORECD");
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 4);
        assert_eq!((h.k(), h.m()), (4, 1));
        assert_eq!(ParityHeader::decode(&b).unwrap(), h);
        // The largest stripe that fits.
        let mut big = sample();
        big.device_count = 200;
        big.members = (0..113).collect();
        big.data = vec![big.data[0]; 111];
        big.position = 111;
        big.device_index = 111;
        assert!(shape_fits(111, 2) && !shape_fits(112, 2) && !shape_fits(1, 255));
        assert_eq!(ParityHeader::decode(&encoded(&big)).unwrap(), big);
    }

    #[test]
    fn rules() {
        let bad = |f: &dyn Fn(&mut ParityHeader), field: &str| {
            let mut h = sample();
            f(&mut h);
            match h.validate() {
                Err(FormatError::Field { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        };
        bad(&|h| h.position = 3, "parity.position");
        bad(&|h| h.position = 5, "parity.position");
        bad(&|h| h.members[1] = 0, "parity.members");
        bad(&|h| h.members[1] = 5, "parity.members");
        bad(&|h| h.device_index = 2, "parity.device_index");
        bad(&|h| h.device_index = 9, "parity.device_index");
        bad(&|h| h.shard_bytes = 2 << 20, "parity.shard_bytes");
        // The shard holds a whole data record, header block included.
        bad(&|h| h.shard_bytes = 1 << 20, "parity.data.payload_bytes");
        bad(&|h| h.shard_bytes = 4096, "parity.data.payload_bytes");
        bad(
            &|h| h.shard_bytes = 4096 + (1 << 20) + 1,
            "parity.shard_bytes",
        );
        bad(
            &|h| h.data[1].payload_bytes = 2 << 20,
            "parity.data.payload_bytes",
        );
        bad(&|h| h.data[2].payload_crc = 1, "parity.data.payload_crc");
        bad(
            &|h| h.data[3].file_offset = u64::MAX,
            "parity.data.file_offset",
        );
        bad(&|h| h.members.truncate(4), "parity.k");
        bad(&|h| h.data.clear(), "parity.k");
    }

    /// A data record (compressed: 5000 stored bytes of a 9000-byte
    /// payload) made a shard, padded to its stripe's shard length.
    fn data_shard() -> (Vec<u8>, crate::format::StripeRecord) {
        use crate::format::{Codec, RecordHeader, RecordKind, StripeRecord, Transform};
        let stored: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        let r = StripeRecord {
            device: 2,
            position: 1 << 20,
            file_id: 4,
            file_offset: 8192,
            payload_bytes: 9000,
            payload_crc: crc32c(&stored),
        };
        let h = RecordHeader {
            kind: RecordKind::Data,
            set_id: SetId([7; 16]),
            device_index: 2,
            sequence: 3,
            file_id: 4,
            segment_id: 0,
            file_offset: 8192,
            payload_bytes: 9000,
            file_size: 1 << 20,
            payload_crc: r.payload_crc,
            transform: Transform {
                codec: Codec::Zstd,
                stored_bytes: 5000,
                ..Transform::RAW
            },
        };
        let mut shard = vec![0u8; shard_bytes_for(9000) as usize];
        h.encode_into(&mut shard[..HEADER_BYTES]);
        shard[HEADER_BYTES..HEADER_BYTES + 5000].copy_from_slice(&stored);
        record_to_shard(&mut shard);
        (shard, r)
    }

    #[test]
    fn data_shards_are_checked_like_records_read() {
        let (shard, r) = data_shard();
        assert_eq!(&shard[..8], &[0; 8], "the magic is zeroed in a shard");
        let (h, media) = check_data_shard(&shard, SetId([7; 16]), &r).unwrap();
        assert_eq!((h.stored_len(), media), (5000, 4096 + 8192));
        // Another set, another file, a stored byte, the padding, a shard
        // too short for the record: each refused.
        assert!(check_data_shard(&shard, SetId([8; 16]), &r).is_err());
        let other = crate::format::StripeRecord {
            file_offset: 0,
            ..r
        };
        assert!(check_data_shard(&shard, SetId([7; 16]), &other).is_err());
        for at in [HEADER_BYTES + 17, HEADER_BYTES + 5000, 200] {
            let mut bad = shard.clone();
            bad[at] ^= 1;
            let got = check_data_shard(&bad, SetId([7; 16]), &r);
            assert!(got.is_err(), "byte {at} changed: {got:?}");
        }
        assert!(check_data_shard(&shard[..4096 + 4096], SetId([7; 16]), &r).is_err());
        // Back to the record: the magic restored.
        let mut record = shard.clone();
        shard_to_record(&mut record);
        assert_eq!(&record[..8], b"PBIORECD");
        assert_eq!(shard_bytes_for(u32::MAX), u32::MAX);
        assert_eq!(shard_bytes_for(0), 4096);
        assert_eq!(shard_bytes_for(1), 8192);
    }

    #[test]
    fn decode_rejects_damage_and_other_kinds() {
        let b = encoded(&sample());
        let mut c = b.clone();
        c[100] ^= 1;
        assert!(matches!(
            ParityHeader::decode(&c),
            Err(FormatError::Checksum { .. })
        ));
        // A data record header is not a parity record.
        let mut d = b.clone();
        d[12] = 1;
        block::seal(d.as_mut_slice().first_chunk_mut().unwrap());
        assert_eq!(
            ParityHeader::decode(&d),
            Err(FormatError::Field {
                field: "record.kind",
                value: 1
            })
        );
        // A byte after the tables.
        let mut r = b.clone();
        r[4000] = 1;
        block::seal(r.as_mut_slice().first_chunk_mut().unwrap());
        assert_eq!(
            ParityHeader::decode(&r),
            Err(FormatError::Reserved {
                what: "parity record",
                offset: 4000
            })
        );
        assert!(matches!(
            ParityHeader::decode(&b[..100]),
            Err(FormatError::Short { .. })
        ));
    }

    fn arb_header() -> impl Strategy<Value = ParityHeader> {
        (
            1usize..=20,
            1usize..=6,
            any::<u64>(),
            1u32..=(1 << 20),
            any::<u64>(),
        )
            .prop_flat_map(|(k, m, stripe_id, shard, seed)| {
                let n = k + m;
                (
                    Just((k, m, stripe_id, shard, seed)),
                    proptest::collection::vec(
                        (any::<u64>(), any::<u32>(), 0u32..=shard, any::<u32>()),
                        k,
                    ),
                    0..m,
                    (n as u32)..=1000,
                )
            })
            .prop_map(|((k, m, stripe_id, shard, seed), entries, p, count)| {
                // Distinct members: a rotation of a stride through 0..count.
                let members: Vec<u32> = (0..(k + m) as u32)
                    .map(|i| (i + (seed % u64::from(count)) as u32) % count)
                    .collect();
                let mut data: Vec<StripeData> = entries
                    .into_iter()
                    .map(|(seq, file_id, bytes, crc)| StripeData {
                        sequence: seq,
                        file_id,
                        file_offset: seq >> 1,
                        payload_bytes: bytes,
                        payload_crc: if bytes == 0 { 0 } else { crc },
                    })
                    .collect();
                data[0].payload_bytes = shard;
                data[0].payload_crc |= 1;
                let position = (k + p) as u8;
                ParityHeader {
                    set_id: SetId(seed.to_le_bytes().repeat(2).try_into().unwrap()),
                    device_index: members[k + p],
                    device_count: count,
                    sequence: seed >> 3,
                    stripe_id,
                    position,
                    shard_bytes: shard_bytes_for(shard),
                    payload_crc: seed as u32,
                    members,
                    data,
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip(h in arb_header()) {
            prop_assert_eq!(ParityHeader::decode(&encoded(&h)).unwrap(), h);
        }

        /// Random bytes, with and without a valid frame: never a panic,
        /// and whatever decodes re-encodes to the same block.
        #[test]
        fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..4200),
                                    framed in any::<bool>()) {
            if framed && bytes.len() >= BLOCK_BYTES {
                bytes[..8].copy_from_slice(b"PBIORECD");
                bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
                bytes[12..16].copy_from_slice(&PARITY_KIND.to_le_bytes());
                bytes[64] %= 8;
                bytes[65] %= 4;
                block::seal(bytes.as_mut_slice().first_chunk_mut().unwrap());
            }
            if let Ok(h) = ParityHeader::decode(&bytes) {
                prop_assert_eq!(&encoded(&h)[..], &bytes[..BLOCK_BYTES]);
            }
        }

        /// Any valid header with one byte changed (CRC fixed up) decodes to
        /// a different header or is rejected: never silently the same.
        #[test]
        fn one_byte_changed_is_seen(h in arb_header(), at in 0usize..4092, x in 1u8..=255) {
            let mut b = encoded(&h);
            b[at] ^= x;
            block::seal(b.as_mut_slice().first_chunk_mut().unwrap());
            if let Ok(g) = ParityHeader::decode(&b) {
                prop_assert_ne!(g, h);
            }
        }
    }
}
