//! Media format throughput: record header and label encode/decode, CRC32C
//! over a 1 MiB payload, file digests, and a 1,000,000-file catalog.
//!
//! Run: `cargo bench --bench format`. Each figure is the best of several
//! rounds (the least disturbed by the rest of the machine).

use pbio::format::{
    crc32c, file_digest, payload_hash, Catalog, CatalogDevice, CatalogFile, CatalogSegment,
    DeviceState, FileKind, Label, LabelState, RecordHeader, RecordKind, SetId, Stat, BLOCK_BYTES,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

/// The best of `ROUNDS` timings of `f`; what `f` returns is dropped
/// after the clock stops.
fn best<T>(mut f: impl FnMut() -> T) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let out = f();
            let elapsed = start.elapsed();
            drop(black_box(out));
            elapsed
        })
        .min()
        .unwrap_or_default()
}

fn ns_per(d: Duration, ops: usize) -> f64 {
    d.as_nanos() as f64 / ops as f64
}

fn header() -> RecordHeader {
    RecordHeader {
        kind: RecordKind::Data,
        set_id: SetId([0x42; 16]),
        device_index: 1,
        sequence: 0,
        file_id: 7,
        segment_id: 9,
        file_offset: 0,
        payload_bytes: 1 << 20,
        file_size: 1 << 30,
        payload_crc: 0x1234_5678,
        transform: pbio::format::Transform::RAW,
    }
}

fn bench_header() {
    const OPS: usize = 200_000;
    let mut block = vec![0u8; BLOCK_BYTES];
    let mut h = header();
    let encode = best(|| {
        for i in 0..OPS {
            h.sequence = i as u64;
            black_box(&h).encode_into(black_box(&mut block));
        }
    });
    let decode = best(|| {
        for _ in 0..OPS {
            black_box(RecordHeader::decode(black_box(&block)).is_ok());
        }
    });
    let both = best(|| {
        for i in 0..OPS {
            h.sequence = i as u64;
            black_box(&h).encode_into(&mut block);
            black_box(RecordHeader::decode(black_box(&block)).is_ok());
        }
    });
    println!(
        "record header encode           {:8.1} ns/op",
        ns_per(encode, OPS)
    );
    println!(
        "record header decode           {:8.1} ns/op",
        ns_per(decode, OPS)
    );
    println!(
        "record header encode+decode    {:8.1} ns/op",
        ns_per(both, OPS)
    );

    let label = Label {
        set_id: SetId([1; 16]),
        device_index: 0,
        device_count: 2,
        chunk_bytes: 1 << 20,
        block_bytes: 4096,
        created_unix_ns: 1,
        state: LabelState::Complete,
        catalog_offset: 1 << 30,
        catalog_bytes: 1 << 20,
        data_end: 1 << 30,
        catalog_digest: [2; 32],
        mac: [3; 32],
        seal: pbio::format::seal::LabelSeal::NONE,
    };
    let both = best(|| {
        for _ in 0..OPS {
            black_box(&label).encode_into(&mut block);
            black_box(Label::decode(black_box(&block)).is_ok());
        }
    });
    println!(
        "label encode+decode            {:8.1} ns/op",
        ns_per(both, OPS)
    );
}

fn bench_crc() {
    const MIB: usize = 1 << 20;
    const PASSES: usize = 2000;
    let payload: Vec<u8> = (0..MIB).map(|i| (i * 31 + i / 4096) as u8).collect();
    let d = best(|| {
        for _ in 0..PASSES {
            black_box(crc32c(black_box(&payload)));
        }
    });
    let gb_per_s = (MIB * PASSES) as f64 / d.as_secs_f64() / 1e9;
    println!("crc32c over 1 MiB              {gb_per_s:8.2} GB/s");
    // The per-record BLAKE3 of the file digest (one thread).
    const HASH_PASSES: usize = 200;
    let d = best(|| {
        for _ in 0..HASH_PASSES {
            black_box(payload_hash(black_box(&payload)));
        }
    });
    let gb_per_s = (MIB * HASH_PASSES) as f64 / d.as_secs_f64() / 1e9;
    println!("blake3 over 1 MiB              {gb_per_s:8.2} GB/s");
}

fn bench_digest() {
    // A 1 GiB file in 1 MiB records, handed over out of order.
    let records: Vec<(u64, u32, [u8; 32])> = (0..1024u64)
        .rev()
        .map(|i| (i << 20, 1 << 20, [i as u8; 32]))
        .collect();
    let d = best(|| {
        let mut r = records.clone();
        black_box(file_digest(black_box(&mut r)));
    });
    println!(
        "file_digest, 1024 records      {:8.1} us",
        d.as_secs_f64() * 1e6
    );
}

/// A tree of 1,000,000 entries: 1,000 directories of 999 regular files,
/// each file one segment, alternating between 4 devices.
fn big_catalog() -> Catalog {
    const DIRS: u32 = 1000;
    const PER_DIR: u32 = 999;
    let mut files = Vec::with_capacity((DIRS * (PER_DIR + 1)) as usize);
    let mut segments = Vec::with_capacity((DIRS * PER_DIR) as usize);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for d in 0..DIRS {
        let dir = format!("home/user/projects/pbio-test/dir{d:04}");
        files.push(CatalogFile {
            path: dir.clone().into_bytes(),
            kind: FileKind::Directory,
            stat: Stat {
                mode: 0o40755,
                uid: 1000,
                gid: 1000,
                mtime_sec: 1_700_000_000 + i64::from(d),
                mtime_nsec: (next() % 1_000_000_000) as u32,
                ctime_sec: 1_700_000_000 + i64::from(d),
                ctime_nsec: 0,
                dev: 0x803,
                ino: u64::from(d) + 2,
                rdev: 0,
                flags: 0,
            },
            size_bytes: 0,
            link_target: Vec::new(),
            hardlink_to: 0,
            digest: [0; 32],
            origin: 0,
            origin_file_id: 0,
            xattrs: Vec::new(),
        });
        for f in 0..PER_DIR {
            let size_bytes = next() % (1 << 20);
            let mut digest = [0u8; 32];
            for chunk in digest.chunks_exact_mut(8) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
            let file_id = files.len() as u32;
            files.push(CatalogFile {
                path: format!("{dir}/file{f:06}.dat").into_bytes(),
                kind: FileKind::Regular,
                stat: Stat {
                    mode: 0o100644,
                    uid: 1000,
                    gid: 1000,
                    mtime_sec: 1_700_000_000 + (next() % 10_000_000) as i64,
                    mtime_nsec: (next() % 1_000_000_000) as u32,
                    ctime_sec: 1_700_000_000 + (next() % 10_000_000) as i64,
                    ctime_nsec: (next() % 1_000_000_000) as u32,
                    dev: 0x803,
                    ino: u64::from(file_id) + 2,
                    rdev: 0,
                    flags: 0,
                },
                size_bytes,
                link_target: Vec::new(),
                hardlink_to: 0,
                xattrs: Vec::new(),
                digest,
                origin: 0,
                origin_file_id: 0,
            });
            segments.push(CatalogSegment {
                file_id,
                offset: 0,
                length: size_bytes,
                device: file_id % 4,
                position: u64::from(file_id) * (1 << 20),
                records: 1,
            });
        }
    }
    Catalog {
        set_id: SetId([7; 16]),
        created_unix_ns: 1_700_000_000_000_000_000,
        chunk_bytes: 1 << 20,
        devices: (0..4)
            .map(|i| CatalogDevice {
                path: format!("/dev/nvme{i}n1").into_bytes(),
                capacity_bytes: 4 << 40,
                state: DeviceState::Complete,
                data_end: 3 << 40,
            })
            .collect(),
        files,
        segments,
        ancestors: Vec::new(),
        removed: Vec::new(),
        renamed: Vec::new(),
        parity: None,
        stored_bytes: Vec::new(),
        mac: [0; 32],
    }
}

fn bench_catalog() {
    let catalog = big_catalog();
    let encode = best(|| black_box(&catalog).encode());
    let encoded = catalog.encode();
    let decode = best(|| Catalog::decode(black_box(&encoded)));
    assert!(
        Catalog::decode(&encoded).as_ref() == Ok(&catalog),
        "catalog did not round-trip"
    );
    let validate = best(|| assert!(black_box(&catalog).validate().is_ok()));
    let mib = encoded.len() as f64 / (1 << 20) as f64;
    println!(
        "catalog: {} files, {} segments, {:.1} MiB encoded ({:.1} bytes/file)",
        catalog.files.len(),
        catalog.segments.len(),
        mib,
        encoded.len() as f64 / catalog.files.len() as f64
    );
    println!(
        "catalog encode (incl. validate) {:7.1} ms",
        encode.as_secs_f64() * 1e3
    );
    println!(
        "catalog decode (incl. validate) {:7.1} ms",
        decode.as_secs_f64() * 1e3
    );
    println!(
        "catalog validate alone          {:7.1} ms",
        validate.as_secs_f64() * 1e3
    );
}

fn main() {
    bench_header();
    bench_crc();
    bench_digest();
    bench_catalog();
}
