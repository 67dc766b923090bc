use super::read::{record_refusal, DeviceRanges};
use super::select::uncovered;
use crate::format::catalog::tests::sample;
use crate::format::{Label, LabelState, RecordHeader, RecordKind};

#[test]
fn device_ranges_merge_and_contain() {
    let mut c = sample();
    // File 1: [0, 6M) on device 0 (two overlapping segments), [6M, 10M) on 1.
    let mut extra = c.segments[0];
    extra.offset = 1 << 20;
    extra.length = 2 << 20;
    c.segments.push(extra);
    let zero = DeviceRanges::new(&c, 0);
    assert_eq!(zero.0, vec![(1, 0, 6 << 20)]);
    assert!(zero.contains(1, 0, 1 << 20));
    assert!(zero.contains(1, 5 << 20, 1 << 20));
    assert!(!zero.contains(1, 5 << 20, (1 << 20) + 1));
    assert!(!zero.contains(1, 6 << 20, 1));
    assert!(!zero.contains(1, 1 << 40, 1 << 20));
    assert!(!zero.contains(1, u64::MAX, 2));
    assert!(!zero.contains(0, 0, 0));
    assert!(!zero.contains(4, 0, 0));
    let one = DeviceRanges::new(&c, 1);
    assert_eq!(one.0, vec![(1, 6 << 20, 10 << 20), (4, 0, 0)]);
    assert!(one.contains(1, 9 << 20, 1 << 20));
    assert!(!one.contains(1, 0, 4096));
    // The empty file's empty range.
    assert!(one.contains(4, 0, 0));
    assert!(!one.contains(4, 0, 1));
}

/// A raw Data record of file 1 of `c`, on device 0.
fn data_header(c: &crate::format::Catalog, file_offset: u64, payload_bytes: u32) -> RecordHeader {
    RecordHeader {
        kind: RecordKind::Data,
        set_id: c.set_id,
        device_index: 0,
        sequence: 0,
        file_id: 1,
        segment_id: 0,
        file_offset,
        payload_bytes,
        file_size: 10 << 20,
        payload_crc: 0,
        transform: crate::format::Transform::RAW,
    }
}

#[test]
fn records_are_checked_against_label_and_catalog() {
    let c = sample();
    let label = Label {
        set_id: c.set_id,
        device_index: 0,
        device_count: 2,
        chunk_bytes: c.chunk_bytes,
        block_bytes: 4096,
        created_unix_ns: c.created_unix_ns,
        state: LabelState::Complete,
        catalog_offset: 4096,
        catalog_bytes: 100,
        data_end: 4096,
        catalog_digest: [0; 32],
        mac: [0; 32],
        seal: crate::format::seal::LabelSeal::NONE,
    };
    let ranges = DeviceRanges::new(&c, 0);
    let good = RecordHeader {
        payload_crc: 1,
        ..data_header(&c, 5 << 20, 1 << 20)
    };
    assert_eq!(record_refusal(&good, &label, &c, &ranges), None);
    let refused = |h: RecordHeader, want: &str| {
        let why = record_refusal(&h, &label, &c, &ranges)
            .expect("refused")
            .to_string();
        assert!(why.contains(want), "{why}");
    };
    refused(
        RecordHeader {
            device_index: 1,
            ..good
        },
        "on device 1",
    );
    refused(
        RecordHeader {
            payload_bytes: (1 << 20) + 4096,
            file_offset: 0,
            ..good
        },
        "larger than the set's chunk",
    );
    refused(
        RecordHeader {
            file_id: 99,
            ..good
        },
        "file id 99 not in the catalog",
    );
    refused(RecordHeader { file_id: 0, ..good }, "has no data");
    refused(
        RecordHeader {
            file_size: 1 << 40,
            ..good
        },
        "says the file has",
    );
    // On the other device's segment, and beyond the file's end.
    refused(
        RecordHeader {
            file_offset: 6 << 20,
            ..good
        },
        "lies outside the segments",
    );
    refused(
        RecordHeader {
            file_offset: 10 << 20,
            ..good
        },
        "lies outside the segments",
    );
}

#[test]
fn uncovered_ranges() {
    assert_eq!(uncovered(0, 10, &[]), vec![(0, 10)]);
    assert_eq!(uncovered(0, 10, &[(0, 10)]), vec![]);
    assert_eq!(
        uncovered(0, 10, &[(2, 4), (6, 8)]),
        vec![(0, 2), (4, 6), (8, 10)]
    );
    assert_eq!(uncovered(5, 10, &[(0, 6), (6, 12)]), vec![]);
    assert_eq!(uncovered(5, 10, &[(0, 3), (12, 20)]), vec![(5, 10)]);
}

/// The restore workers open (here: decompress) records from a shared
/// window, write only the ones that decompress, and let go of the window
/// once collected, so the stream can read into it again.
#[test]
fn workers_place_good_records_and_let_go_of_the_window() {
    use super::transform::{OpenJob, Opened, Workers};
    use crate::format::codec::{compress, Compression};
    use crate::format::{Codec, Transform};
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    let c = sample();
    let plain = b"pbio restore worker ".repeat(800);
    let setting = Compression {
        codec: Codec::Zstd,
        level: 1,
    };
    let mut stored = Vec::new();
    let n = compress(setting, &plain, &mut stored).expect("text shrinks");
    let pool = crate::io::BufferPool::new(1, 64 << 10);
    let mut lease = pool.lease().expect("one slot");
    lease.bytes_mut()[..n].copy_from_slice(&stored[..n]);
    // A second record: the same length of bytes that are not zstd.
    lease.bytes_mut()[n..2 * n].fill(0x5a);
    let mut window = Arc::new(lease);
    let header = |file_offset: u64| RecordHeader {
        transform: Transform {
            codec: Codec::Zstd,
            stored_bytes: n as u32,
            ..Transform::RAW
        },
        ..data_header(&c, file_offset, plain.len() as u32)
    };
    let out = tempfile::tempfile().unwrap();
    let file: (Arc<std::fs::File>, Arc<str>) = (Arc::new(out.try_clone().unwrap()), "f".into());
    let mut workers = Workers::start(0).expect("threads start");
    let mut got = Vec::new();
    let mut keep = |o: Opened| -> Result<(), ()> {
        got.push(o);
        Ok(())
    };
    let far = 1 << 20;
    for (position, offset, range) in [(4096, 0, 0..n), (8192, far, n..2 * n)] {
        let job = OpenJob {
            position,
            header: header(offset),
            window: window.clone(),
            range,
            target: 7,
            destination: Some(file.clone()),
            // The first opened in place (this test holds no reference
            // into the window meanwhile), the second copied first.
            in_place: position == 4096,
            crc: false,
        };
        workers.send(job, &mut keep).unwrap();
    }
    workers.collect(true, &mut keep).unwrap();
    assert!(
        Arc::get_mut(&mut window).is_some(),
        "a job still holds the window"
    );
    assert_eq!(got.len(), 2);
    let mut placed = 0;
    for o in got {
        match o {
            Opened::Placed {
                target,
                record,
                crc_checked,
            } => {
                assert!(!crc_checked);
                assert_eq!(target, 7);
                let hash = crate::format::payload_hash(&plain);
                assert_eq!(record, (0, plain.len() as u32, hash));
                placed += 1;
            }
            Opened::Refused { position, why, .. } => {
                assert_eq!(position, 8192);
                assert!(why.to_string().contains("Zstd"), "{why}");
            }
            Opened::WriteFailed(why) => panic!("{why}"),
            Opened::Checksum { position, .. } => panic!("no CRC asked at {position}"),
        }
    }
    assert_eq!(placed, 1);
    let mut back = vec![0u8; plain.len()];
    out.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(back, plain);
    // Nothing of the refused record was written.
    assert_eq!(out.metadata().unwrap().len(), plain.len() as u64);
    drop(workers);
}

/// Raw records in clear on the workers (`OpenJob::crc`): one whose CRC32C
/// matches is hashed and written and comes back checked; one whose bytes
/// were changed after the CRC comes back as a checksum mismatch with the
/// CRC the worker computed, and nothing of it is written.
#[test]
fn workers_check_raw_records_crc_before_writing() {
    use super::transform::{OpenJob, Opened, Workers};
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    let c = sample();
    let n = 8192;
    let good: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
    let pool = crate::io::BufferPool::new(1, 64 << 10);
    let mut lease = pool.lease().expect("one slot");
    lease.bytes_mut()[..n].copy_from_slice(&good);
    lease.bytes_mut()[n..2 * n].copy_from_slice(&good);
    // The second record's bytes damaged after its CRC was taken.
    lease.bytes_mut()[n + 100] ^= 0x10;
    let damaged_crc = crate::format::crc32c(&lease.bytes()[n..2 * n]);
    let window = Arc::new(lease);
    let header = |file_offset: u64| RecordHeader {
        payload_crc: crate::format::crc32c(&good),
        ..data_header(&c, file_offset, n as u32)
    };
    let out = tempfile::tempfile().unwrap();
    let file: (Arc<std::fs::File>, Arc<str>) = (Arc::new(out.try_clone().unwrap()), "f".into());
    let mut workers = Workers::start(0).expect("threads start");
    let mut got = Vec::new();
    let mut keep = |o: Opened| -> Result<(), ()> {
        got.push(o);
        Ok(())
    };
    let far = 1 << 20;
    for (position, offset, range) in [(4096, 0, 0..n), (16384, far, n..2 * n)] {
        let job = OpenJob {
            position,
            header: header(offset),
            window: window.clone(),
            range,
            target: 3,
            destination: Some(file.clone()),
            in_place: false,
            crc: true,
        };
        workers.send(job, &mut keep).unwrap();
    }
    workers.collect(true, &mut keep).unwrap();
    drop(workers);
    assert_eq!(
        Arc::strong_count(&window),
        1,
        "a job still holds the window"
    );
    assert_eq!(got.len(), 2);
    let (mut placed, mut mismatched) = (0, 0);
    for o in got {
        match o {
            Opened::Placed {
                target,
                record,
                crc_checked,
            } => {
                assert!(crc_checked);
                assert_eq!(target, 3);
                let hash = crate::format::payload_hash(&good);
                assert_eq!(record, (0, n as u32, hash));
                placed += 1;
            }
            Opened::Checksum {
                position,
                header,
                computed,
            } => {
                assert_eq!(position, 16384);
                assert_eq!(header.file_offset, far);
                assert_eq!(computed, damaged_crc);
                assert_ne!(computed, header.payload_crc);
                mismatched += 1;
            }
            Opened::Refused { why, .. } => panic!("{why}"),
            Opened::WriteFailed(why) => panic!("{why}"),
        }
    }
    assert_eq!((placed, mismatched), (1, 1));
    let mut back = vec![0u8; n];
    out.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(back, good);
    // Nothing of the damaged record was written.
    assert_eq!(out.metadata().unwrap().len(), n as u64);
}
