use super::*;

#[test]
fn xattr_differences_name_each_added_removed_and_changed_attribute() {
    let x = |name: &str, value: &str| Xattr {
        name: name.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    };
    let set = [x("user.a", "1"), x("user.b", "2"), x("user.d", "4")];
    assert!(xattr_differences(&set, set.to_vec()).is_empty());
    assert!(xattr_differences(&[], Vec::new()).is_empty());
    // Disk given unsorted: sorted before comparing.
    let disk = vec![x("user.e", "5"), x("user.b", "two"), x("user.a", "1")];
    let found = xattr_differences(&set, disk);
    let some = |v: &str| Some(v.as_bytes().to_vec());
    assert_eq!(
        found,
        [
            What::Xattr {
                name: b"user.b".to_vec(),
                set: some("2"),
                disk: some("two")
            },
            What::Xattr {
                name: b"user.d".to_vec(),
                set: some("4"),
                disk: None
            },
            What::Xattr {
                name: b"user.e".to_vec(),
                set: None,
                disk: some("5")
            },
        ]
    );
    assert_eq!(
        found[0].to_string(),
        "xattr user.b changed: 1 bytes in the set, 3 on disk"
    );
    assert_eq!(
        found[1].to_string(),
        "xattr user.d removed on disk (in the set)"
    );
    assert_eq!(found[2].code(), "xattr");
}

#[test]
fn records_follow_chunks_holes_and_the_record_size_of_each_segment() {
    let mib = 1 << 20;
    // Dense 2.5 MiB in 1 MiB chunks, no segments (data elsewhere).
    assert_eq!(
        records(&[], &[(0, 5 * mib / 2)], 5 * mib / 2, mib),
        [
            (0, mib as u32),
            (mib, mib as u32),
            (2 * mib, (mib / 2) as u32)
        ]
    );
    // Two segments; the second on a tape writing 256 KiB records.
    let segs = [(0, 2 * mib, 2), (2 * mib, mib, 4)];
    let r = records(&segs, &[(0, 3 * mib)], 3 * mib, mib);
    assert_eq!(r.len(), 6);
    assert_eq!(r[2], (2 * mib, (mib / 4) as u32));
    // A sparse file: a hole in the middle of a chunk splits it.
    let data = [(0, 4096), (3 * 4096, 4096)];
    assert_eq!(
        records(&[(0, 4 * 4096, 2)], &data, 4 * 4096, mib),
        [(0, 4096), (3 * 4096, 4096)]
    );
    // A range held twice (failed device's copy) counts once.
    let segs = [(0, mib, 1), (0, mib, 1)];
    assert_eq!(records(&segs, &[(0, mib)], mib, mib).len(), 1);
    // Empty file: no records.
    assert!(records(&[(0, 0, 0)], &[(0, 0)], 0, mib).is_empty());
}
