//! Property tests: round trips of arbitrary valid values, and decoders fed
//! arbitrary bytes, valid encodings with random damage, and damage with the
//! checksum repaired (so the parser behind the checksum sees it too). A
//! decoder never panics; whatever it accepts re-encodes to the same bytes
//! (every encoding is canonical).

use super::block::{self, Block};
use super::catalog::tests::reseal as reseal_catalog;
use super::*;
use proptest::prelude::*;

fn label() -> impl Strategy<Value = Label> {
    let common = (
        any::<SetId>(),
        (1u32..=u32::MAX).prop_flat_map(|count| (0..count, Just(count))),
        12u32..=26,
        9u32..=16,
        any::<u64>(),
        // A MAC, or none (zero).
        prop_oneof![Just([0u8; 32]), any::<[u8; 32]>()],
    );
    let writing = Just((LabelState::Writing, 0u64, 0u64, 0u64, [0u8; 32]));
    let complete = (1u64..1 << 40, 0u64..1 << 40).prop_flat_map(|(data_blocks, gap_blocks)| {
        let data_end = data_blocks * BLOCK_BYTES as u64;
        let catalog_offset = data_end + gap_blocks * BLOCK_BYTES as u64;
        (
            Just(LabelState::Complete),
            Just(catalog_offset),
            (catalog::CATALOG_BYTES_MIN as u64)..=u64::MAX - catalog_offset,
            Just(data_end),
            any::<[u8; 32]>(),
        )
    });
    (common, prop_oneof![writing, complete]).prop_map(
        |(
            (set_id, (device_index, device_count), chunk_shift, block_shift, created_unix_ns, mac),
            (state, catalog_offset, catalog_bytes, data_end, catalog_digest),
        )| Label {
            set_id,
            device_index,
            device_count,
            chunk_bytes: 1 << chunk_shift,
            block_bytes: 1 << block_shift,
            created_unix_ns,
            state,
            catalog_offset,
            catalog_bytes,
            data_end,
            catalog_digest,
            mac,
            seal: crate::format::seal::LabelSeal::NONE,
        },
    )
}

fn header() -> impl Strategy<Value = RecordHeader> {
    let kind = prop_oneof![
        Just(RecordKind::Data),
        Just(RecordKind::Catalog),
        Just(RecordKind::End)
    ];
    (
        kind,
        any::<SetId>(),
        any::<u32>(),
        any::<u64>(),
        any::<(u32, u32)>(),
        0..=PAYLOAD_BYTES_MAX,
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(
            |(kind, set_id, device_index, sequence, ids, payload, size, at, crc)| {
                let (file_id, segment_id) = if kind == RecordKind::Data {
                    ids
                } else {
                    (0, 0)
                };
                let payload_bytes = match kind {
                    RecordKind::Data => payload,
                    RecordKind::Catalog => payload.max(1),
                    RecordKind::End => 0,
                };
                let file_size = if kind == RecordKind::End {
                    0
                } else {
                    size.max(payload_bytes.into())
                };
                // Any offset that keeps the payload inside the file.
                let file_offset = at_most(at, file_size - u64::from(payload_bytes));
                RecordHeader {
                    kind,
                    set_id,
                    device_index,
                    sequence,
                    file_id,
                    segment_id,
                    file_offset,
                    payload_bytes,
                    file_size,
                    payload_crc: if payload_bytes == 0 { 0 } else { crc },
                    transform: crate::format::Transform::RAW,
                }
            },
        )
}

/// `x` reduced to `0..=max`.
fn at_most(x: u64, max: u64) -> u64 {
    match max.checked_add(1) {
        Some(m) => x % m,
        None => x,
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Valid xattrs: distinct names (the set sorts them) of 1..=255 bytes
/// without NUL, values up to a few hundred bytes, sometimes the longest
/// name or value allowed.
fn xattrs() -> impl Strategy<Value = Vec<Xattr>> {
    prop::collection::btree_map(
        prop_oneof![
            4 => prop::collection::vec(1u8..=255, 1..24),
            1 => prop::collection::vec(1u8..=255, XATTR_NAME_MAX..=XATTR_NAME_MAX),
        ],
        prop_oneof![
            8 => bytes(300),
            1 => Just(vec![0xa5; XATTR_VALUE_MAX]),
        ],
        0..4,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(name, value)| Xattr { name, value })
            .collect()
    })
}

/// One file, and a number that picks the target of a hard link.
fn file_entry() -> impl Strategy<Value = (CatalogFile, usize)> {
    (
        1u8..=8,
        prop::collection::vec(any::<u8>(), 1..40),
        any::<(u32, u32, u32)>(),
        any::<(i64, i64)>(),
        (0u32..1_000_000_000, 0u32..1_000_000_000),
        any::<(u64, u64)>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 1..20),
        any::<usize>(),
        any::<[u8; 32]>(),
        (any::<(u8, u32)>(), any::<(u64, u32)>(), xattrs()),
    )
        .prop_map(
            |(
                code,
                path,
                (mode, uid, gid),
                (mtime_sec, ctime_sec),
                (mtime_nsec, ctime_nsec),
                (dev, ino),
                size,
                target,
                pick,
                digest,
                ((origin, origin_file_id), (rdev, flags), xattrs),
            )| {
                let kind = FileKind::from_code(code).unwrap_or(FileKind::Regular);
                let data = kind.has_data();
                let file = CatalogFile {
                    path,
                    kind,
                    stat: Stat {
                        mode,
                        uid,
                        gid,
                        mtime_sec,
                        mtime_nsec,
                        ctime_sec,
                        ctime_nsec,
                        dev,
                        ino,
                        rdev: if kind.has_rdev() { rdev } else { 0 },
                        flags: if kind.has_flags() { flags } else { 0 },
                    },
                    size_bytes: if data { size >> (size % 64) } else { 0 },
                    link_target: if kind == FileKind::Symlink {
                        target
                    } else {
                        Vec::new()
                    },
                    hardlink_to: 0,
                    digest: if data { digest } else { [0; 32] },
                    // Reduced to the catalog's ancestors in `catalog()`.
                    origin: if data { origin.into() } else { 0 },
                    origin_file_id,
                    xattrs: if kind == FileKind::HardLink {
                        Vec::new()
                    } else {
                        xattrs
                    },
                };
                (file, pick)
            },
        )
}

fn catalog() -> impl Strategy<Value = Catalog> {
    (
        (any::<SetId>(), any::<u64>(), 12u32..=26),
        prop::collection::vec((bytes(16), any::<u64>()), 1..5),
        prop::collection::vec(file_entry(), 0..24),
        prop::collection::vec(any::<(u32, u64, u64, u32, u64, u32)>(), 0..32),
        (
            prop::collection::vec(any::<SetId>(), 0..4),
            prop::collection::vec(bytes(12), 0..4),
            prop::collection::vec((any::<u32>(), bytes(12)), 0..4),
        ),
        prop_oneof![Just([0u8; 32]), any::<[u8; 32]>()],
    )
        .prop_map(
            |(
                (set_id, created_unix_ns, chunk_shift),
                devices,
                entries,
                raw_segments,
                (raw_ancestors, raw_removed, raw_renamed),
                mac,
            )| {
                let devices: Vec<CatalogDevice> = devices
                    .into_iter()
                    .map(|(path, capacity_bytes)| CatalogDevice {
                        path,
                        capacity_bytes,
                        state: match capacity_bytes % 3 {
                            0 => DeviceState::Complete,
                            1 => DeviceState::Full,
                            _ => DeviceState::Failed,
                        },
                        data_end: capacity_bytes / 2,
                    })
                    .collect();
                // Distinct ancestors other than the set itself.
                let mut ancestors: Vec<SetId> = Vec::new();
                for id in raw_ancestors {
                    if id != set_id && !ancestors.contains(&id) {
                        ancestors.push(id);
                    }
                }
                let (mut files, picks): (Vec<CatalogFile>, Vec<usize>) =
                    entries.into_iter().unzip();
                // Origins name an ancestor; each reference is to distinct data.
                let mut referenced = std::collections::HashSet::new();
                for f in files.iter_mut() {
                    if f.origin != 0 && !ancestors.is_empty() {
                        f.origin = 1 + f.origin % ancestors.len() as u32;
                    } else {
                        f.origin = 0;
                    }
                    if f.origin == 0 || !referenced.insert((f.origin, f.origin_file_id)) {
                        f.origin = 0;
                        f.origin_file_id = 0;
                    }
                }
                let regular: Vec<u32> = (0..files.len() as u32)
                    .filter(|&i| files[i as usize].kind.can_be_hard_linked())
                    .collect();
                // Hard links name a regular or special file, or become
                // directories when there is none.
                for (f, pick) in files.iter_mut().zip(picks) {
                    if f.kind == FileKind::HardLink {
                        if regular.is_empty() {
                            f.kind = FileKind::Directory;
                        } else {
                            f.hardlink_to = regular[pick % regular.len()];
                        }
                    }
                }
                // Segments belong to files whose data is in this set.
                let here: Vec<u32> = (0..files.len() as u32)
                    .filter(|&i| {
                        let f = &files[i as usize];
                        f.kind.has_data() && f.origin == 0
                    })
                    .collect();
                let segments = if here.is_empty() {
                    Vec::new()
                } else {
                    raw_segments
                        .into_iter()
                        .map(|(pick, offset, length, device, position, records)| {
                            let file_id = here[pick as usize % here.len()];
                            let size = files[file_id as usize].size_bytes;
                            let offset = at_most(offset, size);
                            CatalogSegment {
                                file_id,
                                offset,
                                length: at_most(length, size - offset),
                                device: device % devices.len() as u32,
                                position,
                                records,
                            }
                        })
                        .collect()
                };
                let referenced: Vec<u32> = (0..files.len() as u32)
                    .filter(|&i| files[i as usize].origin != 0)
                    .collect();
                let (removed, renamed) = if ancestors.is_empty() {
                    (Vec::new(), Vec::new())
                } else {
                    let removed = raw_removed.into_iter().filter(|p| !p.is_empty()).collect();
                    let mut renamed: Vec<Renamed> = Vec::new();
                    for (pick, from) in raw_renamed {
                        if referenced.is_empty() || from.is_empty() {
                            continue;
                        }
                        let file_id = referenced[pick as usize % referenced.len()];
                        if renamed.iter().all(|r| r.file_id != file_id) {
                            renamed.push(Renamed { file_id, from });
                        }
                    }
                    (removed, renamed)
                };
                Catalog {
                    set_id,
                    created_unix_ns,
                    chunk_bytes: 1 << chunk_shift,
                    devices,
                    files,
                    segments,
                    ancestors,
                    removed,
                    renamed,
                    parity: None,
                    stored_bytes: Vec::new(),
                    mac,
                }
            },
        )
}

/// A damage to an encoding.
#[derive(Clone, Debug)]
enum Damage {
    Set(usize, u8),
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Damage::Flip(i, bit)),
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<usize>().prop_map(Damage::Remove),
    ]
}

fn apply(buf: &mut Vec<u8>, damages: &[Damage]) {
    for d in damages {
        let n = buf.len();
        match *d {
            Damage::Set(i, b) if n > 0 => buf[i % n] = b,
            Damage::Flip(i, bit) if n > 0 => buf[i % n] ^= 1 << bit,
            Damage::Truncate(i) => buf.truncate(i % (n + 1)),
            Damage::Insert(i, b) => buf.insert(i % (n + 1), b),
            Damage::Remove(i) if n > 0 => {
                buf.remove(i % n);
            }
            _ => {}
        }
    }
}

fn encode_label(l: &Label) -> Vec<u8> {
    let mut buf = vec![0; BLOCK_BYTES];
    l.encode_into(&mut buf);
    buf
}

fn encode_header(h: &RecordHeader) -> Vec<u8> {
    let mut buf = vec![0; BLOCK_BYTES];
    h.encode_into(&mut buf);
    buf
}

/// Decode a block as a label and as a header: no panic, and whatever is
/// accepted re-encodes to the same block.
fn check_block(buf: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(l) = Label::decode(buf) {
        prop_assert_eq!(&encode_label(&l)[..], &buf[..BLOCK_BYTES]);
    }
    if let Ok(h) = RecordHeader::decode(buf) {
        prop_assert_eq!(&encode_header(&h)[..], &buf[..BLOCK_BYTES]);
    }
    Ok(())
}

/// A block whose frame is right (magic, version, CRC) and whose field area
/// is `fields`: the field rules are what decides.
fn framed(magic: &[u8; 8], fields: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; BLOCK_BYTES];
    let b: &mut Block = buf.first_chunk_mut().unwrap_or_else(|| unreachable!());
    let end = (12 + fields.len()).min(block::CRC);
    b[12..end].copy_from_slice(&fields[..end - 12]);
    b[..8].copy_from_slice(magic);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    block::seal(b);
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn label_round_trips(l in label()) {
        let buf = encode_label(&l);
        prop_assert_eq!(Label::decode(&buf), Ok(l));
    }

    #[test]
    fn header_round_trips(h in header()) {
        prop_assert_eq!(h.validate(), Ok(()));
        let buf = encode_header(&h);
        prop_assert_eq!(RecordHeader::decode(&buf), Ok(h));
        prop_assert_eq!(h.media_bytes() % BLOCK_BYTES as u64, 0);
    }

    /// A file's first record keeps the xattrs that fit after its path, in
    /// order, and flags the rest as cut; the others carry none (writers
    /// never flag those as cut; a decoder keeps the bit as it is). Whatever
    /// the header holds decodes back and re-encodes to the same bytes.
    #[test]
    fn file_info_xattrs_round_trip(
        h in header(),
        path in prop::collection::vec(any::<u8>(), 1..4200),
        xattrs in xattrs(),
        first in any::<bool>(),
        cut in any::<bool>(),
    ) {
        let h = RecordHeader { kind: RecordKind::Data, ..h };
        prop_assume!(h.validate().is_ok());
        let info = FileInfo {
            data_bytes: 1,
            path,
            xattrs: first.then_some(xattrs.clone()),
            xattrs_cut: cut,
            ..FileInfo::default()
        };
        let mut buf = vec![0u8; BLOCK_BYTES];
        h.encode_with_info(Some(&info), &mut buf);
        prop_assert_eq!(RecordHeader::decode(&buf), Ok(h));
        let got = RecordHeader::decode_info(&buf).expect("info");
        let stored = FileInfo {
            path: info.path[..info.path.len().min(record::layout::PATH_BYTES_MAX)].to_vec(),
            path_truncated: info.path.len() > record::layout::PATH_BYTES_MAX,
            ..info.clone()
        };
        prop_assert!(got.same_file(&stored));
        if !first {
            prop_assert_eq!(got.xattrs.clone(), None);
            prop_assert_eq!(got.xattrs_cut, cut);
        } else {
            let kept = got.xattrs.clone().unwrap_or_default();
            // Kept in order, a subsequence of the file's.
            let mut rest = xattrs.iter();
            for x in &kept {
                prop_assert!(rest.any(|y| y == x));
            }
            prop_assert_eq!(got.xattrs_cut, cut || kept.len() < xattrs.len());
        }
        let mut again = vec![0u8; BLOCK_BYTES];
        h.encode_with_info(Some(&got), &mut again);
        prop_assert_eq!(again, buf);
    }

    #[test]
    fn catalog_round_trips(c in catalog()) {
        prop_assert_eq!(c.validate(), Ok(()));
        let buf = c.encode();
        let decoded = Catalog::decode(&buf);
        prop_assert_eq!(&decoded, &Ok(c));
        // And back: the bytes a decoded catalog encodes to are the bytes it
        // was read from (no field lost or moved by the in-memory shape).
        if let Ok(d) = decoded {
            prop_assert_eq!(d.encode(), buf);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in bytes(5000)) {
        check_block(&buf)?;
        let _ = Catalog::decode(&buf);
    }

    #[test]
    fn arbitrary_fields_in_a_valid_frame(fields in bytes(80), which in any::<bool>()) {
        let magic = if which { &LABEL_MAGIC } else { &RECORD_MAGIC };
        check_block(&framed(magic, &fields))?;
    }

    #[test]
    fn damaged_blocks_never_panic(
        l in label(),
        h in header(),
        damages in prop::collection::vec(damage(), 1..4),
        repair in any::<bool>(),
    ) {
        for mut buf in [encode_label(&l), encode_header(&h)] {
            apply(&mut buf, &damages);
            if repair && buf.len() >= BLOCK_BYTES {
                block::seal(buf.first_chunk_mut().unwrap_or_else(|| unreachable!()));
            }
            check_block(&buf)?;
        }
    }

    #[test]
    fn damaged_catalogs_never_panic(
        c in catalog(),
        damages in prop::collection::vec(damage(), 1..6),
        repair in any::<bool>(),
    ) {
        let mut buf = c.encode();
        apply(&mut buf, &damages);
        if repair && buf.len() >= catalog::CATALOG_BYTES_MIN {
            reseal_catalog(&mut buf);
        }
        if let Ok(decoded) = Catalog::decode(&buf) {
            prop_assert_eq!(decoded.encode(), buf);
        }
    }

    #[test]
    fn digest_ignores_record_order(mut records in prop::collection::vec(any::<(u64, u32, [u8; 32])>(), 0..64), seed in any::<u64>()) {
        let want = file_digest(&mut records.clone());
        let n = records.len();
        if n > 1 {
            records.rotate_left(seed as usize % n);
            records.swap(0, (seed >> 32) as usize % n);
        }
        prop_assert_eq!(file_digest(&mut records), want);
    }

    /// Any change to one record (its offset, length or any bit of its
    /// payload's hash) changes the digest.
    #[test]
    fn digest_sees_every_record_change(
        records in prop::collection::vec(any::<(u64, u32, [u8; 32])>(), 1..32),
        pick in any::<usize>(),
        bit in 0usize..(64 + 32 + 256),
    ) {
        let mut changed = records.clone();
        let r = &mut changed[pick % records.len()];
        match bit {
            0..=63 => r.0 ^= 1 << bit,
            64..=95 => r.1 ^= 1 << (bit - 64),
            _ => r.2[(bit - 96) / 8] ^= 1 << ((bit - 96) % 8),
        }
        // Changing a record into a copy of another one is not a change of the multiset.
        let mut a = records.clone();
        let mut b = changed.clone();
        a.sort_unstable();
        b.sort_unstable();
        prop_assume!(a != b);
        prop_assert_ne!(file_digest(&mut changed), file_digest(&mut records.clone()));
    }

    /// Every single flipped bit of a valid label (its MAC and catalog
    /// digest included) is detected: magic or checksum.
    #[test]
    fn label_single_bit_flips_are_detected(l in label(), bit in 0usize..BLOCK_BYTES * 8) {
        let mut buf = encode_label(&l);
        buf[bit / 8] ^= 1 << (bit % 8);
        let got = Label::decode(&buf);
        prop_assert!(
            matches!(got, Err(FormatError::BadMagic { .. }) | Err(FormatError::Checksum { .. })),
            "bit {}: {:?}", bit, got
        );
    }

    /// Every single flipped bit of a valid catalog (its MAC included) is
    /// detected; with the CRC repaired (a forger without the key), a change
    /// before the MAC is still caught by the MAC.
    #[test]
    fn catalog_single_bit_flips_are_detected(
        mut c in catalog(),
        key in any::<[u8; 32]>(),
        pick in any::<usize>(),
    ) {
        let key = mac_key(&key);
        c.seal(Some(&key));
        let good = c.encode();
        let bit = pick % (good.len() * 8);
        let mut buf = good.clone();
        buf[bit / 8] ^= 1 << (bit % 8);
        let got = Catalog::decode(&buf);
        prop_assert!(
            matches!(got, Err(FormatError::BadMagic { .. }) | Err(FormatError::Checksum { .. })),
            "bit {}: {:?}", bit, got
        );
        // A flipped CRC bit is repaired back into the good catalog.
        prop_assume!(bit / 8 < good.len() - catalog::CATALOG_CRC_BYTES);
        reseal_catalog(&mut buf);
        if let Ok(forged) = Catalog::decode(&buf) {
            prop_assert!(!hash_eq(&forged.mac_for(&key), &forged.mac), "bit {}", bit);
        }
    }

    /// A sealed label carries the MAC of its fields; decoded, it checks.
    #[test]
    fn sealed_labels_check(l in label(), key in any::<[u8; 32]>()) {
        let key = mac_key(&key);
        let sealed = l.sealed(Some(&key));
        let decoded = Label::decode(&encode_label(&sealed));
        prop_assert_eq!(decoded, Ok(sealed));
        prop_assert!(hash_eq(&sealed.mac_for(&key), &sealed.mac));
    }
}
