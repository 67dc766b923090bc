//! The catalog's parity section (`--parity M`, issue 19; docs/FORMAT.md
//! "Catalog", "Parity section"): present only in a set written with
//! parity, after the chain section, so a set without parity encodes to
//! exactly the bytes it always did and older catalogs decode unchanged.
//!
//! It lists every stripe: where each of its data records is (device and
//! media offset) and what it holds (file, offset, bytes, CRC), and where
//! each of its parity records is with the parity payload's CRC. A restore
//! needs nothing else to rebuild a missing data record from any `k` of the
//! stripe's `k + M` records.

use super::decode::Reader;
use super::encode::Sink;
use crate::format::parity::MEMBERS_MAX;
use crate::format::{FormatError, PAYLOAD_BYTES_MAX};

/// The parity of a set: `M` and its stripes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogParity {
    /// Parity records per stripe asked for (`--parity M`), at least 1.
    pub m: u32,
    pub stripes: Vec<CatalogStripe>,
}

/// One stripe: `k` data records, then its parity records (at most `m`:
/// a parity record that could not be written is left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogStripe {
    pub data: Vec<StripeRecord>,
    pub parity: Vec<StripeRecord>,
}

/// Where one record of a stripe is and what it holds. For a parity
/// record, `file_id`, `file_offset` are 0 and `payload_bytes` is the
/// stripe's shard length (`CatalogStripe::shard_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripeRecord {
    /// Device index in the set.
    pub device: u32,
    /// Media offset of the record's header on that device.
    pub position: u64,
    pub file_id: u32,
    pub file_offset: u64,
    pub payload_bytes: u32,
    pub payload_crc: u32,
}

impl CatalogStripe {
    /// Shard length: a data record as stored, header block included, at
    /// its largest (`format::parity::shard_bytes_for` the largest data
    /// payload; docs/FORMAT.md section 5.1).
    pub fn shard_bytes(&self) -> u32 {
        crate::format::parity::shard_bytes_for(
            self.data.iter().map(|d| d.payload_bytes).max().unwrap_or(0),
        )
    }
}

/// Fewest bytes one stripe takes (two counts, one data record of six
/// varints).
const STRIPE_BYTES_MIN: u64 = 8;

pub(super) fn encode(w: &mut impl Sink, p: &CatalogParity) {
    w.varint(p.m.into());
    w.varint(p.stripes.len() as u64);
    for s in &p.stripes {
        w.varint(s.data.len() as u64);
        w.varint(s.parity.len() as u64);
        for r in &s.data {
            w.varint(r.device.into());
            w.varint(r.position);
            w.varint(r.file_id.into());
            w.varint(r.file_offset);
            w.varint(r.payload_bytes.into());
            w.varint(r.payload_crc.into());
        }
        for r in &s.parity {
            w.varint(r.device.into());
            w.varint(r.position);
            w.varint(r.payload_crc.into());
        }
    }
}

pub(super) fn decode(r: &mut Reader) -> Result<CatalogParity, FormatError> {
    let m = r.varint_u32()?;
    let count = r.varint()?;
    if count.saturating_mul(STRIPE_BYTES_MIN) > r.0.len() as u64 {
        return Err(FormatError::Catalog(
            "parity stripe count exceeds the catalog's length",
        ));
    }
    let mut stripes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let k = r.varint()?;
        let n = r.varint()?;
        if k == 0 || k.saturating_add(n) > MEMBERS_MAX as u64 {
            return Err(FormatError::Catalog("parity stripe of an invalid shape"));
        }
        let mut data = Vec::with_capacity(k as usize);
        for _ in 0..k {
            data.push(StripeRecord {
                device: r.varint_u32()?,
                position: r.varint()?,
                file_id: r.varint_u32()?,
                file_offset: r.varint()?,
                payload_bytes: r.varint_u32()?,
                payload_crc: r.varint_u32()?,
            });
        }
        let mut parity = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (device, position, payload_crc) = (r.varint_u32()?, r.varint()?, r.varint_u32()?);
            parity.push(StripeRecord {
                device,
                position,
                file_id: 0,
                file_offset: 0,
                payload_bytes: 0,
                payload_crc,
            });
        }
        let mut stripe = CatalogStripe { data, parity };
        let shard = stripe.shard_bytes();
        for p in &mut stripe.parity {
            p.payload_bytes = shard;
        }
        stripes.push(stripe);
    }
    Ok(CatalogParity { m, stripes })
}

/// The rules of docs/FORMAT.md "Parity section": `m` at least 1; per
/// stripe 1..=k data records, at most `m` parity records, all on distinct
/// devices of the set; data payloads 1..=chunk_bytes inside their
/// file's size; no record (device, position) listed twice.
pub(super) fn validate(
    p: &CatalogParity,
    (device_count, chunk_bytes): (usize, u32),
    file_size: impl Fn(u32) -> Option<u64>,
) -> Result<(), &'static str> {
    if p.m == 0 || p.m as usize >= MEMBERS_MAX {
        return Err("parity M is 0 or too large");
    }
    let mut seen = std::collections::HashSet::new();
    for s in &p.stripes {
        if s.data.is_empty() || s.parity.len() > p.m as usize {
            return Err("a parity stripe has no data or more than M parity records");
        }
        let mut devices: Vec<u32> = s.data.iter().chain(&s.parity).map(|r| r.device).collect();
        devices.sort_unstable();
        if devices.windows(2).any(|w| w[0] == w[1]) {
            return Err("a parity stripe has two records on one device");
        }
        for r in s.data.iter().chain(&s.parity) {
            if r.device as usize >= device_count {
                return Err("a parity stripe names a device beyond the set");
            }
            if !seen.insert((r.device, r.position)) {
                return Err("a record is listed in two parity stripes");
            }
        }
        for d in &s.data {
            if d.payload_bytes == 0 || d.payload_bytes > chunk_bytes.min(PAYLOAD_BYTES_MAX) {
                return Err("a parity stripe's data record has an invalid length");
            }
            let end = d.file_offset.checked_add(d.payload_bytes.into());
            match (file_size(d.file_id), end) {
                (Some(size), Some(end)) if end <= size => {}
                _ => return Err("a parity stripe's data record lies outside its file"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::catalog::tests::sample;
    use crate::format::Catalog;

    fn with_parity() -> Catalog {
        let record = |device, position, file_offset| StripeRecord {
            device,
            position,
            file_id: 1,
            file_offset,
            payload_bytes: 1 << 20,
            payload_crc: 0xabcd,
        };
        let parity = |device, position| StripeRecord {
            file_id: 0,
            file_offset: 0,
            payload_bytes: crate::format::parity::shard_bytes_for(1 << 20),
            payload_crc: 0x1234,
            ..record(device, position, 0)
        };
        Catalog {
            parity: Some(CatalogParity {
                m: 1,
                stripes: vec![
                    CatalogStripe {
                        data: vec![record(0, 4096, 0)],
                        parity: vec![parity(1, 1 << 30)],
                    },
                    CatalogStripe {
                        data: vec![record(1, 4096, 6 << 20)],
                        parity: vec![parity(0, 1 << 30)],
                    },
                ],
            }),
            ..sample()
        }
    }

    #[test]
    fn round_trip_and_old_sets_unchanged() {
        let c = with_parity();
        let buf = c.encode();
        assert_eq!(Catalog::decode(&buf), Ok(c.clone()));
        // Without parity: exactly the encoding of a set before issue 19
        // (no parity section, nothing after the chain section).
        let old = sample();
        let old_buf = old.encode();
        assert!(old_buf.len() < buf.len());
        assert_eq!(Catalog::decode(&old_buf), Ok(old));
    }

    #[test]
    fn rules() {
        let bad = |f: fn(&mut CatalogParity)| {
            let mut c = with_parity();
            f(c.parity.as_mut().unwrap());
            assert!(c.validate().is_err());
            let mut buf = c.encode_unchecked();
            crate::format::catalog::tests::reseal(&mut buf);
            assert!(Catalog::decode(&buf).is_err());
        };
        bad(|p| p.m = 0);
        bad(|p| p.stripes[0].parity[0].device = 0); // two records on device 0
        bad(|p| p.stripes[0].data[0].device = 7); // no such device
        bad(|p| p.stripes[0].data[0].file_offset = 10 << 20); // beyond the file
        bad(|p| p.stripes[1].data[0].file_id = 2); // a symlink holds no data
        bad(|p| p.stripes[0].data.clear());
        bad(|p| p.stripes[0].data[0].payload_bytes = (1 << 20) + 4096); // over the chunk
    }
}
