//! Writes one valid label, record header (with file info; and a
//! compressed record with its stored bytes), catalog and
//! NBD reply stream into fuzz/corpus/<target>/seed, so the fuzzers start from real
//! structures, and restore_tree's unmutated set (its set is made by the
//! target itself): `cargo run --example fuzz_seeds`.

use pbio::format::{
    Catalog, CatalogDevice, CatalogFile, CatalogSegment, DeviceState, FileInfo, FileKind, Label,
    LabelState, RecordHeader, RecordKind, Renamed, Stat, Xattr,
};

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |target: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("seed"), bytes)
    };
    let set_id = pbio::format::SetId([7u8; 16]);
    // A keyed set: label and catalog carry MACs.
    let key = pbio::format::mac_key(b"fuzz seed key, 32 bytes or more.");
    let mut block = [0u8; 4096];
    Label {
        set_id,
        device_index: 1,
        device_count: 3,
        chunk_bytes: 1 << 20,
        block_bytes: 512,
        created_unix_ns: 1_700_000_000_000_000_000,
        state: LabelState::Complete,
        catalog_offset: 1 << 20,
        catalog_bytes: 777,
        data_end: 1 << 20,
        catalog_digest: [0x5C; 32],
        mac: [0; 32],
        seal: pbio::format::seal::LabelSeal::NONE,
    }
    .sealed(Some(&key))
    .encode_into(&mut block);
    write("label", &block)?;
    let header = RecordHeader {
        kind: RecordKind::Data,
        set_id,
        device_index: 1,
        sequence: 9,
        file_id: 2,
        segment_id: 3,
        file_offset: 1 << 20,
        payload_bytes: 4000,
        file_size: 3 << 20,
        payload_crc: 0xdead_beef,
        transform: pbio::format::Transform::RAW,
    };
    let info = FileInfo {
        mode: 0o100644,
        uid: 1000,
        gid: 1000,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 5,
        data_bytes: 3 << 20,
        path: b"tree/dir/file.bin".to_vec(),
        path_truncated: false,
        // A file's first record carries its extended attributes.
        xattrs: Some(vec![
            Xattr {
                name: b"security.capability".to_vec(),
                value: vec![1, 0, 0, 2, 0x20, 0, 0, 0],
            },
            Xattr {
                name: b"user.comment".to_vec(),
                value: b"seed".to_vec(),
            },
        ]),
        xattrs_cut: false,
    };
    header.encode_with_info(Some(&info), &mut block);
    write("record", &block)?;
    // A compressed record (zstd), its stored bytes after the header: the
    // record target decompresses them.
    let text = b"seed text, compressible seed text, ".repeat(100);
    let mut stored = Vec::new();
    let setting = pbio::format::codec::Compression {
        codec: pbio::format::Codec::Zstd,
        level: 1,
    };
    let n = pbio::format::codec::compress(setting, &text, &mut stored).expect("it shrinks");
    let compressed = RecordHeader {
        payload_bytes: text.len() as u32,
        payload_crc: pbio::format::crc32c(&stored[..n]),
        transform: pbio::format::Transform {
            codec: pbio::format::Codec::Zstd,
            stored_bytes: n as u32,
            ..pbio::format::Transform::RAW
        },
        ..header
    };
    let mut record = vec![0u8; 4096];
    compressed.encode_with_info(Some(&info), &mut record);
    record.extend_from_slice(&stored[..n]);
    let dir = root.join("record");
    std::fs::write(dir.join("seed-zstd"), &record)?;
    // A parity record of a 3+1 stripe (`--parity 1` on four devices).
    let mut block = [0u8; 4096];
    let data = |file_id, payload_bytes| pbio::format::parity::StripeData {
        sequence: 5,
        file_id,
        file_offset: 1 << 20,
        payload_bytes,
        payload_crc: 0x1234,
    };
    pbio::format::parity::ParityHeader {
        set_id,
        device_index: 2,
        device_count: 4,
        sequence: 6,
        stripe_id: 9,
        position: 3,
        shard_bytes: pbio::format::parity::shard_bytes_for(1 << 20),
        payload_crc: 0xabcd,
        members: vec![0, 1, 3, 2],
        data: vec![data(1, 1 << 20), data(2, 4096), data(3, 100)],
    }
    .encode_into(&mut block);
    write("parity", &block)?;
    let file = |path: &[u8], kind, size_bytes| CatalogFile {
        path: path.to_vec(),
        kind,
        stat: Stat {
            mode: if kind == FileKind::Directory {
                0o40755
            } else {
                0o100644
            },
            uid: 0,
            gid: 0,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 0,
            ctime_sec: 1_700_000_001,
            ctime_nsec: 7,
            dev: 0x803,
            ino: 42,
            rdev: 0,
            flags: 0,
        },
        size_bytes,
        link_target: Vec::new(),
        hardlink_to: 0,
        digest: [0; 32],
        origin: 0,
        origin_file_id: 0,
        xattrs: Vec::new(),
    };
    let mut link = file(b"tree/link", FileKind::Symlink, 0);
    link.link_target = b"file.bin".to_vec();
    let mut hard = file(b"tree/hard", FileKind::HardLink, 0);
    hard.hardlink_to = 1;
    // An incremental set: one file's data is in the parent set, under its old name.
    let mut moved = file(b"tree/moved", FileKind::Regular, 5000);
    (moved.origin, moved.origin_file_id) = (1, 4);
    let image = file(b"sdb", FileKind::BlockDevice, 1 << 20);
    // Special files, a hard link to the fifo, metadata beyond stat.
    let mut fifo = file(b"tree/fifo", FileKind::Fifo, 0);
    fifo.stat.mode = 0o10644;
    let mut null = file(b"tree/null", FileKind::CharDevice, 0);
    (null.stat.mode, null.stat.rdev) = (0o20666, libc::makedev(1, 3));
    let mut node = file(b"tree/loop200", FileKind::BlockNode, 0);
    (node.stat.mode, node.stat.rdev) = (0o60660, libc::makedev(7, 200));
    let mut fifo_link = file(b"tree/fifo-link", FileKind::HardLink, 0);
    fifo_link.hardlink_to = 6;
    let mut dir = file(b"tree", FileKind::Directory, 0);
    dir.xattrs = vec![Xattr {
        name: b"system.posix_acl_default".to_vec(),
        value: vec![2, 0, 0, 0, 1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff],
    }];
    let mut data_file = file(b"tree/file.bin", FileKind::Regular, 3 << 20);
    data_file.stat.flags = 0x10; // immutable
    let mut catalog = Catalog {
        set_id,
        created_unix_ns: 1,
        chunk_bytes: 1 << 20,
        devices: vec![
            CatalogDevice {
                path: b"/dev/loop0".to_vec(),
                capacity_bytes: 1 << 30,
                state: DeviceState::Complete,
                data_end: 1 << 20,
            },
            CatalogDevice {
                path: b"/dev/loop1".to_vec(),
                capacity_bytes: 1 << 30,
                state: DeviceState::Failed,
                data_end: 4096,
            },
        ],
        files: vec![
            dir, data_file, link, hard, moved, image, fifo, null, node, fifo_link,
        ],
        segments: vec![
            CatalogSegment {
                file_id: 1,
                offset: 0,
                length: 2 << 20,
                device: 0,
                position: 4096,
                records: 2,
            },
            CatalogSegment {
                file_id: 1,
                offset: 2 << 20,
                length: 1 << 20,
                device: 1,
                position: 4096,
                records: 1,
            },
            CatalogSegment {
                file_id: 5,
                offset: 0,
                length: 1 << 20,
                device: 1,
                position: (1 << 20) + 8192,
                records: 1,
            },
        ],
        ancestors: vec![pbio::format::SetId([8u8; 16])],
        removed: vec![b"tree/old".to_vec()],
        renamed: vec![Renamed {
            file_id: 4,
            from: b"tree/old".to_vec(),
        }],
        parity: None,
        stored_bytes: Vec::new(),
        mac: [0; 32],
    };
    catalog.seal(Some(&key));
    write("catalog", &catalog.encode())?;
    // The same with the stored section (FORMAT.md 6.1, amendment nine):
    // the regular file compressed, the block device stored raw.
    catalog.stored_bytes = vec![0, 1 << 19, 0, 0, 0, 1 << 20, 0, 0, 0, 0];
    catalog.seal(Some(&key));
    let dir = root.join("catalog");
    std::fs::write(dir.join("seed-stored"), catalog.encode())?;
    // nbd_reply: control byte (structured, first read 4096 bytes, one-byte
    // fragments), then a structured data chunk and hole for handle 0, a
    // simple reply for handle 2 (the write).
    let mut nbd = vec![0b0000_0001u8];
    let be = |v: &mut Vec<u8>, b: &[u8]| v.extend_from_slice(b);
    be(&mut nbd, &0x668e_33efu32.to_be_bytes());
    be(&mut nbd, &0u16.to_be_bytes());
    be(&mut nbd, &1u16.to_be_bytes());
    be(&mut nbd, &0u64.to_be_bytes());
    be(&mut nbd, &(8u32 + 2048).to_be_bytes());
    be(&mut nbd, &0u64.to_be_bytes());
    nbd.extend(std::iter::repeat_n(0xabu8, 2048));
    be(&mut nbd, &0x668e_33efu32.to_be_bytes());
    be(&mut nbd, &1u16.to_be_bytes());
    be(&mut nbd, &2u16.to_be_bytes());
    be(&mut nbd, &0u64.to_be_bytes());
    be(&mut nbd, &12u32.to_be_bytes());
    be(&mut nbd, &2048u64.to_be_bytes());
    be(&mut nbd, &2048u32.to_be_bytes());
    be(&mut nbd, &0x6744_6698u32.to_be_bytes());
    be(&mut nbd, &0u32.to_be_bytes());
    be(&mut nbd, &2u64.to_be_bytes());
    write("nbd_reply", &nbd)?;
    // restore_tree: mode 0 (single-byte mutations), none given.
    write("restore_tree", &[0])?;
    println!("seeds written under {}", root.display());
    Ok(())
}
