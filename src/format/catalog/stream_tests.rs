//! `CatalogStream` against `Catalog::decode`: the same catalogs accepted
//! (with the same files, segments and the rest), the same refused.

use proptest::prelude::*;

use super::tests::{incremental_sample, reseal, sample};
use super::*;
use crate::format::FormatError;

/// What `CatalogStream` yields, gathered back into a `Catalog`: the same
/// from the bytes in memory and from a spill file (read through windows
/// of 64 bytes under test, so that entries cross them).
fn gathered(buf: &[u8]) -> Result<Catalog, FormatError> {
    let mut spilled = Spilled::new().unwrap();
    spilled.append(buf).unwrap();
    let from_file = gathered_from(CatalogStream::open_spilled(&spilled));
    let from_bytes = gathered_from(CatalogStream::open(buf));
    assert_eq!(from_file, from_bytes);
    from_bytes
}

fn gathered_from(s: Result<CatalogStream<'_>, FormatError>) -> Result<Catalog, FormatError> {
    let s = s?;
    let mut c = s.head().clone();
    assert!(c.files.is_empty() && c.segments.is_empty());
    c.files = s.files().collect::<Result<_, _>>()?;
    c.segments = s.segments().collect::<Result<_, _>>()?;
    // Each file alone, and its summary, as in the table.
    for (id, f) in c.files.iter().enumerate() {
        assert_eq!(s.file(id), Some(Ok(f.clone())));
        let summary = s.summary(id).unwrap();
        assert_eq!(
            (summary.kind, summary.earlier, summary.size_bytes),
            (f.kind, f.origin != 0, f.size_bytes)
        );
    }
    // Backwards too (other blocks cached, entries inside one block and
    // across two), and only some files, by id and by kind, in id order.
    for (id, f) in c.files.iter().enumerate().rev() {
        assert_eq!(s.file(id), Some(Ok(f.clone())));
    }
    let odd: Vec<_> = s.files_where(|id, _| id % 2 == 1).collect();
    let want = c.files.iter().enumerate().filter(|(id, _)| id % 2 == 1);
    let want: Vec<_> = want.map(|(id, f)| (id, Ok(f.clone()))).collect();
    assert_eq!(odd, want);
    for kind in c.files.iter().map(|f| f.kind) {
        let of_kind: Vec<_> = s.files_where(|_, summary| summary.kind == kind).collect();
        let want = c.files.iter().enumerate().filter(|(_, f)| f.kind == kind);
        let want: Vec<_> = want.map(|(id, f)| (id, Ok(f.clone()))).collect();
        assert_eq!(of_kind, want);
    }
    assert_eq!(s.file(c.files.len()), None);
    assert_eq!(s.summary(c.files.len()), None);
    assert_eq!(
        (c.files.len(), c.segments.len()),
        (s.file_count(), s.segment_count())
    );
    Ok(c)
}

fn samples() -> Vec<Catalog> {
    let mut parity = sample();
    let record = |device, position, file_offset| StripeRecord {
        device,
        position,
        file_id: 1,
        file_offset,
        payload_bytes: 1 << 20,
        payload_crc: 0xabcd,
    };
    parity.parity = Some(CatalogParity {
        m: 1,
        stripes: vec![CatalogStripe {
            data: vec![record(0, 4096, 0)],
            parity: vec![StripeRecord {
                file_id: 0,
                file_offset: 0,
                // A parity record's length is its stripe's shard.
                payload_bytes: crate::format::parity::shard_bytes_for(1 << 20),
                ..record(1, 1 << 30, 0)
            }],
        }],
    });
    let mut empty = sample();
    empty.files.clear();
    empty.segments.clear();
    // With the stored section (amendment ten), alone and after parity.
    let mut stored = sample();
    stored.stored_bytes = vec![0, 3 << 20, 0, 0, 0];
    let mut parity_stored = parity.clone();
    parity_stored.stored_bytes = stored.stored_bytes.clone();
    vec![
        sample(),
        incremental_sample(),
        parity,
        empty,
        stored,
        parity_stored,
    ]
}

#[test]
fn the_same_catalog_as_decode() {
    let key = [0x5a; 32];
    for mut c in samples() {
        c.seal(Some(&key));
        let buf = c.encode();
        assert_eq!(Catalog::decode(&buf), Ok(c.clone()));
        assert_eq!(gathered(&buf), Ok(c.clone()));
        let s = CatalogStream::open(&buf).unwrap();
        assert_eq!(s.mac_for(&key), c.mac_for(&key));
        assert_ne!(s.mac_for(&[0x5b; 32]), c.mac);
        let mut spilled = Spilled::new().unwrap();
        spilled.append(&buf).unwrap();
        let s = CatalogStream::open_spilled(&spilled).unwrap();
        assert_eq!(s.mac_for(&key), c.mac_for(&key));
    }
}

/// Rules that name another file by id, broken after the structure
/// passed: refused as `decode` refuses them, with the same error.
#[test]
fn rules_on_other_files_refuse_as_decode() {
    type Edit = fn(&mut Catalog);
    let edits: [Edit; 4] = [
        // A hard link to a directory.
        |c| {
            let dir = c
                .files
                .iter()
                .position(|f| f.kind == FileKind::Directory)
                .unwrap();
            let link = c
                .files
                .iter_mut()
                .find(|f| f.kind == FileKind::HardLink)
                .unwrap();
            link.hardlink_to = dir as u32;
        },
        // A segment past its file's size.
        |c| c.segments[0].length = c.files[c.segments[0].file_id as usize].size_bytes + 1,
        // A segment on a device the set does not have.
        |c| c.segments[0].device = c.devices.len() as u32,
        // A segment of a file without data.
        |c| {
            let dir = c
                .files
                .iter()
                .position(|f| f.kind == FileKind::Directory)
                .unwrap();
            c.segments[0].file_id = dir as u32;
        },
    ];
    for edit in edits {
        let mut c = sample();
        edit(&mut c);
        let Err(refused) = c.validate() else {
            panic!("the edit breaks a rule");
        };
        // Encoded past the rules, as a forger would.
        let buf = c.encode_unchecked();
        assert_eq!(Catalog::decode(&buf), Err(refused.clone()));
        assert_eq!(CatalogStream::open(&buf).map(|_| ()), Err(refused.clone()));
        let mut spilled = Spilled::new().unwrap();
        spilled.append(&buf).unwrap();
        let from_file = CatalogStream::open_spilled(&spilled).map(|_| ());
        assert_eq!(from_file, Err(refused));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any byte of a valid catalog changed (its CRC made right again):
    /// the stream accepts exactly what `decode` accepts, and yields the
    /// same entries.
    #[test]
    fn a_changed_byte_is_refused_or_read_as_decode(
        which in 0..4usize,
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let c = &samples()[which];
        let mut buf = c.encode();
        let body = buf.len() - CATALOG_CRC_BYTES;
        buf[at.index(body)] = value;
        reseal(&mut buf);
        let decoded = Catalog::decode(&buf);
        prop_assert_eq!(gathered(&buf), decoded);
    }

    /// Bytes cut from the end or from the middle: refused as `decode` does.
    #[test]
    fn a_cut_catalog_is_refused_as_decode(
        which in 0..4usize,
        from in any::<prop::sample::Index>(),
        len in 1..40usize,
    ) {
        let c = &samples()[which];
        let mut buf = c.encode();
        let body = buf.len() - CATALOG_CRC_BYTES;
        let from = from.index(body);
        buf.drain(from..(from + len).min(body));
        reseal(&mut buf);
        prop_assert_eq!(gathered(&buf), Catalog::decode(&buf));
    }
}
