//! Tests of the catalog's encoding, decoding and rules; `sample` and
//! `reseal` are shared with other modules' tests.

use super::decode::{unzigzag, Reader, TRUNCATED};
use super::encode::{zigzag, Sink, Writer};
use super::*;
use crate::format::{crc32c, FormatError};

/// The stat of `file`'s entries; a test changes a field with `..STAT`.
pub(super) const STAT: Stat = Stat {
    mode: 0o100644,
    uid: 1000,
    gid: 100,
    mtime_sec: 1_700_000_000,
    mtime_nsec: 999_999_999,
    ctime_sec: 1_700_000_001,
    ctime_nsec: 5,
    dev: 0x803,
    ino: 12,
    rdev: 0,
    flags: 0,
};

pub(super) fn file(path: &str, kind: FileKind) -> CatalogFile {
    CatalogFile {
        path: path.as_bytes().to_vec(),
        kind,
        stat: STAT,
        size_bytes: 0,
        link_target: Vec::new(),
        hardlink_to: 0,
        digest: [0; 32],
        origin: 0,
        origin_file_id: 0,
        xattrs: Vec::new(),
    }
}

/// An incremental set over `sample`'s shape: two ancestors, a block
/// device stored here, files whose data is in the parent and in the
/// full set, a removed path and a rename.
pub(crate) fn incremental_sample() -> Catalog {
    let mut c = sample();
    c.ancestors = vec![SetId([0x22; 16]), SetId([0x33; 16])];
    c.files.push(CatalogFile {
        stat: Stat {
            mode: 0o60660,
            ..STAT
        },
        size_bytes: 1 << 30,
        digest: [9; 32],
        ..file("sda1", FileKind::BlockDevice)
    });
    c.files.push(CatalogFile {
        stat: Stat {
            ctime_sec: -1,
            ..STAT
        },
        size_bytes: 123_456,
        digest: [3; 32],
        origin: 1,
        origin_file_id: 7,
        ..file("d/renamed", FileKind::Regular)
    });
    c.files.push(CatalogFile {
        size_bytes: 5,
        digest: [4; 32],
        origin: 2,
        origin_file_id: 0,
        ..file("d/unchanged", FileKind::Regular)
    });
    // Special files, and a hard link to the fifo (files 8 to 11).
    c.files.push(CatalogFile {
        stat: Stat {
            mode: 0o10640,
            ..STAT
        },
        xattrs: vec![xattr("user.fifo", b"")],
        ..file("d/fifo", FileKind::Fifo)
    });
    c.files.push(CatalogFile {
        stat: Stat {
            mode: 0o20666,
            rdev: libc::makedev(1, 3),
            ..STAT
        },
        ..file("d/null", FileKind::CharDevice)
    });
    c.files.push(CatalogFile {
        stat: Stat {
            mode: 0o60660,
            rdev: libc::makedev(7, 200),
            ..STAT
        },
        ..file("d/loop200", FileKind::BlockNode)
    });
    c.files.push(CatalogFile {
        hardlink_to: 8,
        ..file("d/fifo-link", FileKind::HardLink)
    });
    c.segments.push(CatalogSegment {
        file_id: 5,
        offset: 0,
        length: 1 << 30,
        device: 0,
        position: 8192,
        records: 1024,
    });
    c.removed = vec![b"d/gone".to_vec(), b"d/old-name".to_vec()];
    c.renamed = vec![Renamed {
        file_id: 6,
        from: b"d/old-name".to_vec(),
    }];
    c
}

pub(super) fn xattr(name: &str, value: &[u8]) -> Xattr {
    Xattr {
        name: name.as_bytes().to_vec(),
        value: value.to_vec(),
    }
}

pub(crate) fn sample() -> Catalog {
    let mut files = vec![
        CatalogFile {
            stat: Stat {
                mode: 0o40755,
                flags: 0x1000, // FS_INDEX_FL
                ..STAT
            },
            xattrs: vec![
                xattr("system.posix_acl_access", &[2, 0, 0, 0, 1, 0, 6, 0]),
                xattr("system.posix_acl_default", &[2, 0, 0, 0]),
            ],
            ..file("d", FileKind::Directory)
        },
        CatalogFile {
            stat: Stat {
                flags: 0x10, // FS_IMMUTABLE_FL
                ..STAT
            },
            size_bytes: 10 << 20,
            digest: [7; 32],
            xattrs: vec![
                xattr("security.capability", &[1, 0, 0, 2, 0x20, 0, 0, 0]),
                xattr("trusted.t", b"\0\xff"),
                xattr("user.comment", b"hello"),
            ],
            ..file("d/big \u{e9}", FileKind::Regular)
        },
        CatalogFile {
            stat: Stat {
                mtime_sec: -5,
                ..STAT
            },
            link_target: b"big \xe9".to_vec(),
            ..file("d/link", FileKind::Symlink)
        },
        CatalogFile {
            hardlink_to: 1,
            ..file("d/other-name", FileKind::HardLink)
        },
        CatalogFile {
            digest: file_digest(&mut []),
            ..file("d/empty", FileKind::Regular)
        },
    ];
    files[1].path.push(0xff); // paths are raw bytes
    Catalog {
        set_id: SetId([0x11; 16]),
        created_unix_ns: u64::MAX,
        chunk_bytes: 1 << 20,
        devices: vec![
            CatalogDevice {
                path: b"dev0".to_vec(),
                capacity_bytes: 1000,
                state: DeviceState::Complete,
                data_end: 4096,
            },
            CatalogDevice {
                path: Vec::new(),
                capacity_bytes: u64::MAX,
                state: DeviceState::Complete,
                data_end: 4096,
            },
        ],
        files,
        segments: vec![
            CatalogSegment {
                file_id: 1,
                offset: 0,
                length: 6 << 20,
                device: 0,
                position: 4096,
                records: 6,
            },
            CatalogSegment {
                file_id: 1,
                offset: 6 << 20,
                length: 4 << 20,
                device: 1,
                position: 4096,
                records: 4,
            },
            CatalogSegment {
                file_id: 4,
                offset: 0,
                length: 0,
                device: 1,
                position: 0,
                records: 0,
            },
        ],
        ancestors: Vec::new(),
        removed: Vec::new(),
        renamed: Vec::new(),
        parity: None,
        stored_bytes: Vec::new(),
        mac: [0x5A; 32],
    }
}

/// Replace the trailing CRC so the bytes pass the checksum.
pub(crate) fn reseal(buf: &mut [u8]) {
    let n = buf.len() - CATALOG_CRC_BYTES;
    let crc = crc32c(&buf[..n]);
    buf[n..].copy_from_slice(&crc.to_le_bytes());
}

pub(super) fn entry_err(table: &'static str, index: u64, why: &'static str) -> FormatError {
    FormatError::CatalogEntry { table, index, why }
}

#[test]
fn round_trips() {
    let c = sample();
    let buf = c.encode();
    assert_eq!(Catalog::decode(&buf), Ok(c.clone()));
    let empty = Catalog {
        files: vec![],
        segments: vec![],
        ..c
    };
    let buf = empty.encode();
    // Two devices of 10 and 14 bytes, three empty chain counts.
    assert_eq!(buf.len(), CATALOG_BYTES_MIN + 10 + 14 + 3);
    assert_eq!(Catalog::decode(&buf), Ok(empty));
    let c = incremental_sample();
    assert_eq!(c.validate(), Ok(()));
    assert!(c.is_incremental() && !sample().is_incremental());
    assert_eq!(Catalog::decode(&c.encode()), Ok(c));
}

/// The stored section (FORMAT.md 6.1, amendment ten): one varint per
/// file after the chain (and parity) sections behind a zero tag byte;
/// a catalog without it (written before) reads as before, with no stored
/// bytes.
#[test]
fn stored_section_is_pinned_and_optional() {
    let old = sample();
    let old_buf = old.encode();
    let mut c = sample();
    c.stored_bytes = vec![0, 123, 0, 0, 0];
    let buf = c.encode();
    assert_eq!(Catalog::decode(&buf), Ok(c.clone()));
    let tail = CATALOG_MAC_BYTES + CATALOG_CRC_BYTES;
    let body = old_buf.len() - tail;
    assert_eq!(buf.len(), old_buf.len() + 6);
    assert_eq!(buf[..body], old_buf[..body]);
    assert_eq!(buf[body..body + 6], [0, 0, 123, 0, 0, 0]);
    assert_eq!(Catalog::decode(&old_buf), Ok(old));
    // Large values: varints.
    c.stored_bytes[1] = 10 << 20;
    assert_eq!(Catalog::decode(&c.encode()), Ok(c.clone()));
    // Refused: stored bytes for a directory, a hard link, an empty file's
    // ok (0); one entry short; a section in a catalog without files.
    let bad = |c: &Catalog, want: FormatError| {
        assert_eq!(c.validate(), Err(want.clone()));
        let mut buf = c.encode_unchecked();
        reseal(&mut buf);
        assert!(Catalog::decode(&buf).is_err());
    };
    let mut dir = c.clone();
    dir.stored_bytes[0] = 1;
    let why = "stored bytes for a file without data in this set";
    bad(&dir, entry_err("file", 0, why));
    let mut link = c.clone();
    link.stored_bytes[3] = 1;
    bad(&link, entry_err("file", 3, why));
    let mut short = c.clone();
    short.stored_bytes.pop();
    bad(
        &short,
        FormatError::Catalog("stored section not one entry per file"),
    );
    let empty = Catalog {
        files: Vec::new(),
        segments: Vec::new(),
        ..sample()
    };
    let mut buf = empty.encode();
    let at = buf.len() - tail;
    buf.insert(at, 0);
    reseal(&mut buf);
    assert_eq!(
        Catalog::decode(&buf),
        Err(FormatError::Catalog(
            "stored section in a catalog without files"
        ))
    );
    // Cut short: a varint missing.
    let mut buf = c.encode();
    let at = buf.len() - tail - 1;
    buf.remove(at);
    reseal(&mut buf);
    assert!(Catalog::decode(&buf).is_err());
}

#[test]
fn chain_section_layout_is_pinned() {
    let c = incremental_sample();
    let buf = c.encode();
    let body = buf.len() - CATALOG_MAC_BYTES - CATALOG_CRC_BYTES;
    let mut chain = vec![2u8];
    chain.extend_from_slice(&[0x22; 16]);
    chain.extend_from_slice(&[0x33; 16]);
    chain.extend_from_slice(&[2, 6]);
    chain.extend_from_slice(b"d/gone");
    chain.extend_from_slice(&[10]);
    chain.extend_from_slice(b"d/old-name");
    chain.extend_from_slice(&[1, 6, 10]);
    chain.extend_from_slice(b"d/old-name");
    assert_eq!(buf[body - chain.len()..body], chain[..]);
    // A referenced file: size, digest, origin 1, origin_file_id 7.
    let mut tail = Writer(Vec::new());
    tail.varint(123_456);
    tail.raw(&[3; 32]);
    tail.varint(1);
    tail.varint(7);
    let at = buf
        .windows(tail.0.len())
        .position(|w| w == tail.0)
        .expect("referenced file's data fields");
    // Just before them: ctime -1 (zigzag 1), nsec 5, dev 0x803, ino 12,
    // flags 0, no xattrs.
    assert_eq!(buf[at - 7..at], [1, 5, 0x83, 0x10, 12, 0, 0]);
    // A character device: ..., ino 12, flags 0, no xattrs, rdev 1:3.
    let mut tail = Writer(Vec::new());
    tail.raw(&[0x83, 0x10, 12, 0, 0]);
    tail.varint(libc::makedev(1, 3));
    assert!(buf.windows(tail.0.len()).any(|w| w == tail.0));
    // The fifo: ..., ino 12, flags 0, one xattr "user.fifo" = "", nothing more.
    let mut tail = vec![0x83, 0x10, 12, 0, 1, 9];
    tail.extend_from_slice(b"user.fifo");
    tail.push(0);
    tail.push(6);
    tail.extend_from_slice(b"d/null");
    assert!(buf.windows(tail.len()).any(|w| w == tail));
}

#[test]
fn layout_is_pinned() {
    let buf = sample().encode();
    assert_eq!(&buf[0..8], b"PBIOCATL");
    assert_eq!(buf[8..12], 1u32.to_le_bytes());
    assert_eq!(buf[12..16], (1u32 << 20).to_le_bytes());
    assert_eq!(buf[16..32], [0x11; 16]);
    assert_eq!(buf[32..40], u64::MAX.to_le_bytes());
    assert_eq!(buf[40..44], 2u32.to_le_bytes());
    assert_eq!(buf[44..48], 5u32.to_le_bytes());
    assert_eq!(buf[48..52], 3u32.to_le_bytes());
    // Device 0: path "dev0", capacity 1000 = varint e8 07, state 1
    // (complete), data_end 4096 = varint 80 20.
    assert_eq!(
        buf[52..62],
        [4, b'd', b'e', b'v', b'0', 0xe8, 0x07, 1, 0x80, 0x20]
    );
    // File 0: path "d", kind 2, mode 0o40755 = 16877 = ed 83 01, uid 1000,
    // gid 100, mtime zigzag(1_700_000_000), nsec 999_999_999.
    let mut f0 = vec![1, b'd', 2, 0xed, 0x83, 0x01, 0xe8, 0x07, 100];
    let mut w = Writer(Vec::new());
    w.varint(3_400_000_000);
    w.varint(999_999_999);
    f0.extend_from_slice(&w.0);
    assert_eq!(buf[76..76 + f0.len()], f0[..]);
    let n = buf.len();
    assert_eq!(buf[n - 36..n - 4], [0x5A; 32]);
    assert_eq!(buf[n - 4..], crc32c(&buf[..n - 4]).to_le_bytes());
}

#[test]
#[should_panic(expected = "invalid catalog")]
fn encode_of_invalid_catalog_panics() {
    let mut c = sample();
    c.files[0].path.clear();
    c.encode();
}

#[test]
fn frame_errors() {
    let good = sample().encode();
    for len in [0, 1, 8, CATALOG_BYTES_MIN - 1] {
        assert_eq!(
            Catalog::decode(&good[..len]),
            Err(FormatError::Short {
                have: len,
                need: CATALOG_BYTES_MIN
            })
        );
    }
    for i in 0..good.len() {
        let mut buf = good.clone();
        buf[i] ^= 0x40;
        let got = Catalog::decode(&buf);
        if i < 8 {
            assert_eq!(got, Err(FormatError::BadMagic { what: "catalog" }));
        } else {
            assert!(
                matches!(
                    got,
                    Err(FormatError::Checksum {
                        what: "catalog",
                        ..
                    })
                ),
                "{i}"
            );
        }
    }
    let mut buf = good.clone();
    buf[8] = 2;
    reseal(&mut buf);
    assert_eq!(Catalog::decode(&buf), Err(FormatError::Version(2)));
}

#[test]
fn truncation_and_trailing_bytes() {
    let good = sample().encode();
    let body_end = good.len() - CATALOG_CRC_BYTES;
    for len in CATALOG_BYTES_MIN..good.len() {
        // Cut, with the CRC still at the end and correct: only structure catches it.
        let mut buf = good[..len - CATALOG_CRC_BYTES].to_vec();
        buf.extend_from_slice(&[0; CATALOG_CRC_BYTES]);
        reseal(&mut buf);
        assert!(Catalog::decode(&buf).is_err(), "len {len}");
        assert!(Catalog::decode(&good[..len]).is_err(), "len {len}");
    }
    let mut buf = good[..body_end].to_vec();
    buf.extend_from_slice(&[0, 0, 0, 0, 0]);
    reseal(&mut buf);
    // Bytes after the chain section are read as a parity section
    // (`--parity` sets), which these are not.
    assert!(matches!(
        Catalog::decode(&buf),
        Err(FormatError::Catalog(_))
    ));
    // One byte short of the chain section's last count.
    let mut buf = good[..body_end - 1].to_vec();
    buf.extend_from_slice(&[0; 4]);
    reseal(&mut buf);
    assert_eq!(
        Catalog::decode(&buf),
        Err(FormatError::Catalog("truncated"))
    );
}

#[test]
fn counts_are_checked_before_allocating() {
    let good = sample().encode();
    for (off, count) in [
        (layout::DEVICE_COUNT, u32::MAX),
        (layout::FILE_COUNT, u32::MAX),
        (layout::SEGMENT_COUNT, u32::MAX),
        (layout::FILE_COUNT, 1 << 20),
    ] {
        let mut buf = good.clone();
        buf[off..off + 4].copy_from_slice(&count.to_le_bytes());
        reseal(&mut buf);
        assert_eq!(
            Catalog::decode(&buf),
            Err(FormatError::Catalog(
                "table counts exceed the catalog's length"
            ))
        );
    }
}

#[test]
fn chain_counts_are_checked_before_allocating() {
    let good = sample().encode();
    let body_end = good.len() - CATALOG_MAC_BYTES - CATALOG_CRC_BYTES;
    assert_eq!(good[body_end - 3..body_end], [0, 0, 0]);
    for at in 0..3 {
        let mut buf = good[..body_end - 3].to_vec();
        for k in 0..3 {
            if k == at {
                buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
            } else {
                buf.push(0);
            }
        }
        buf.extend_from_slice(&good[body_end..]);
        reseal(&mut buf);
        assert_eq!(
            Catalog::decode(&buf),
            Err(FormatError::Catalog(
                "table counts exceed the catalog's length"
            )),
            "count {at}"
        );
    }
}

#[test]
fn unknown_file_kind() {
    let good = sample().encode();
    // Tables start at 52; device 0 takes 10 bytes, device 1 takes 14;
    // file 0 is path length 1, 'd', then its kind byte.
    let kind_at = layout::TABLES + 10 + 14 + 2;
    assert_eq!(good[kind_at], FileKind::Directory.code());
    for code in [0u8, 9, 0xff] {
        let mut buf = good.clone();
        buf[kind_at] = code;
        reseal(&mut buf);
        assert_eq!(
            Catalog::decode(&buf),
            Err(FormatError::Field {
                field: "catalog.file.kind",
                value: code.into()
            })
        );
    }
}

/// An xattr count is checked against the bytes left before anything is
/// allocated; the longest name and value allowed round-trip.
#[test]
fn xattr_counts_and_limits() {
    let mut c = sample();
    c.files[4].xattrs = vec![Xattr {
        name: vec![b'n'; XATTR_NAME_MAX],
        value: vec![0xa5; XATTR_VALUE_MAX],
    }];
    assert_eq!(Catalog::decode(&c.encode()), Ok(c.clone()));
    // File 0 ("d"): its xattr count (2) follows ino 12 and flags 0x1000.
    let good = sample().encode();
    let mut w = Writer(Vec::new());
    w.raw(&[12]);
    w.varint(0x1000);
    w.raw(&[2, 23]);
    w.raw(b"system.posix_acl_access");
    let at = good
        .windows(w.0.len())
        .position(|x| x == w.0)
        .expect("file 0's xattrs")
        + 3;
    let mut buf = good[..at].to_vec();
    buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    buf.extend_from_slice(&good[at + 1..]);
    reseal(&mut buf);
    assert_eq!(
        Catalog::decode(&buf),
        Err(FormatError::Catalog(
            "table counts exceed the catalog's length"
        ))
    );
}

#[test]
fn varints() {
    for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
        let mut w = Writer(Vec::new());
        w.varint(v);
        let mut r = Reader(&w.0);
        assert_eq!(r.varint(), Ok(v));
        assert!(r.0.is_empty());
    }
    let bad: [(&[u8], FormatError); 6] = [
        (&[], TRUNCATED),
        (&[0x80], TRUNCATED),
        (
            &[0x80, 0x00],
            FormatError::Catalog("varint not in shortest form"),
        ),
        (
            &[0xff, 0x80, 0x00],
            FormatError::Catalog("varint not in shortest form"),
        ),
        (&[0xff; 10], FormatError::Catalog("varint exceeds 64 bits")),
        (
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            FormatError::Catalog("varint exceeds 64 bits"),
        ),
    ];
    for (bytes, want) in bad {
        assert_eq!(Reader(bytes).varint(), Err(want), "{bytes:x?}");
    }
    assert_eq!(
        Reader(&[0x80, 0x80, 0x80, 0x80, 0x10]).varint_u32(),
        Err(FormatError::Catalog("varint exceeds 32 bits"))
    );
    assert_eq!(
        Reader(&[0xff, 0xff, 0xff, 0xff, 0x0f]).varint_u32(),
        Ok(u32::MAX)
    );
    for v in [0, 1, -1, i64::MIN, i64::MAX, -1_700_000_000] {
        assert_eq!(unzigzag(zigzag(v)), v);
    }
    assert_eq!([zigzag(0), zigzag(-1), zigzag(1), zigzag(-2)], [0, 1, 2, 3]);
}

#[test]
fn digest_is_order_independent_and_pinned() {
    assert_eq!(file_digest(&mut []), *blake3::hash(b"").as_bytes());
    let mut records: Vec<DigestRecord> = (0..1000u64)
        .map(|i| (i << 20, 1 << 20, payload_hash(&i.to_le_bytes())))
        .collect();
    let mut manual = blake3::Hasher::new();
    for (o, l, h) in &records {
        manual.update(&o.to_le_bytes());
        manual.update(&l.to_le_bytes());
        manual.update(h);
    }
    let want = *manual.finalize().as_bytes();
    assert_eq!(file_digest(&mut records.clone()), want);
    records.reverse();
    records.swap(3, 500);
    assert_eq!(file_digest(&mut records), want);
    // A different payload hash changes it, whatever bit.
    for bit in 0..256 {
        let mut changed = records.clone();
        changed[7].2[bit / 8] ^= 1 << (bit % 8);
        assert_ne!(file_digest(&mut changed), want, "bit {bit}");
    }
    // One record, pinned: 44 bytes of offset, length, payload hash.
    let mut entry = Vec::new();
    entry.extend_from_slice(&4096u64.to_le_bytes());
    entry.extend_from_slice(&3u32.to_le_bytes());
    entry.extend_from_slice(blake3::hash(b"abc").as_bytes());
    assert_eq!(entry.len(), FILE_DIGEST_ENTRY_BYTES);
    assert_eq!(
        file_digest(&mut [(4096, 3, payload_hash(b"abc"))]),
        *blake3::hash(&entry).as_bytes()
    );
}

#[test]
fn mac_covers_the_encoding() {
    let key = crate::format::mac_key(b"0123456789abcdef0123456789abcdef");
    let mut c = incremental_sample();
    c.seal(Some(&key));
    let buf = c.encode();
    let n = buf.len();
    assert_eq!(buf[n - 36..n - 4], c.mac);
    assert_eq!(c.mac, *blake3::keyed_hash(&key, &buf[..n - 36]).as_bytes());
    assert_eq!(Catalog::decode(&buf), Ok(c.clone()));
    assert_eq!(c.mac_for(&key), c.mac);
    // The decoder does not judge the MAC: a wrong one still decodes,
    // and its holder sees it does not match.
    let mut forged = c.clone();
    forged.files[1].stat.mode ^= 1;
    let forged_bytes = forged.encode();
    let decoded = Catalog::decode(&forged_bytes).expect("decodes");
    assert_ne!(decoded.mac_for(&key), decoded.mac);
    // Without a key: zero.
    c.seal(None);
    assert_eq!(c.mac, [0; 32]);
    assert_eq!(c.encode()[n - 36..n - 4], [0; 32]);
    // Every byte before the MAC is covered.
    c.seal(Some(&key));
    let buf = c.encode();
    for i in 0..n - 36 {
        let mut damaged = buf.clone();
        damaged[i] ^= 0x01;
        reseal(&mut damaged);
        if let Ok(d) = Catalog::decode(&damaged) {
            assert_ne!(d.mac_for(&key), d.mac, "byte {i}");
        }
    }
}
