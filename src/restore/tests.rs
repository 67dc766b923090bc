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
        kind: RecordKind::Data,
        set_id: c.set_id,
        device_index: 0,
        sequence: 0,
        file_id: 1,
        segment_id: 0,
        file_offset: 5 << 20,
        payload_bytes: 1 << 20,
        file_size: 10 << 20,
        payload_crc: 1,
        transform: crate::format::Transform::RAW,
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
