//! Worked examples from the claims, with every assignment written out,
//! plus the error cases. Sizes 10, 7, 5, 3, 2, 1 GiB are files 0..=5.

use super::check::check_plan;
use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn example_files() -> Vec<FileItem<'static>> {
    [10, 7, 5, 3, 2, 1]
        .iter()
        .map(|&g| FileItem::dense(g * GIB))
        .collect()
}

fn ample_devices(n: usize) -> Vec<DeviceSlot> {
    vec![
        DeviceSlot {
            capacity_bytes: 100 * GIB,
            rate_bytes_per_sec: None,
        };
        n
    ]
}

fn opts(strategy: Strategy, order: Order) -> Options {
    Options {
        strategy,
        order,
        balance: Balance::Bytes,
        chunk_bytes: MIB,
    }
}

/// (file, offset MiB, length MiB, device), in write order.
type Expected = [(u32, u64, u64, u32)];

fn run(files: &[FileItem], devices: &[DeviceSlot], opts: Options, expected: &Expected) -> Plan {
    let plan = plan(files, devices, &opts).expect("example plans");
    check_plan(files, devices, &opts, &plan);
    let got: Vec<(u32, u64, u64, u32)> = plan
        .segments
        .iter()
        .map(|s| {
            assert_eq!(s.offset % MIB, 0);
            assert_eq!(s.length % MIB, 0);
            (s.file, s.offset / MIB, s.length / MIB, s.device)
        })
        .collect();
    assert_eq!(got, expected, "{opts:?}");
    plan
}

fn assigned_mib(plan: &Plan) -> Vec<u64> {
    plan.devices
        .iter()
        .map(|d| d.assigned_bytes / MIB)
        .collect()
}

// N = 2: T = 28 GiB / 2 = 14 GiB; no file exceeds T.

#[test]
fn split_two_devices_desc() {
    let plan = run(
        &example_files(),
        &ample_devices(2),
        opts(Strategy::Split, Order::Desc),
        &[
            (0, 0, 10240, 0), // 10 -> d0 (tie: lowest index)   d0 10, d1 0
            (1, 0, 7168, 1),  // 7 -> d1                         d0 10, d1 7
            (2, 0, 5120, 1),  // 5 -> d1 (7 < 10)                d0 10, d1 12
            (3, 0, 3072, 0),  // 3 -> d0                         d0 13, d1 12
            (4, 0, 2048, 1),  // 2 -> d1                         d0 13, d1 14
            (5, 0, 1024, 0),  // 1 -> d0                         d0 14, d1 14
        ],
    );
    assert_eq!(plan.threshold_bytes, 14 * GIB);
    assert_eq!(assigned_mib(&plan), [14336, 14336]);
    assert_eq!(plan.devices[0].files, 3);
    assert_eq!(plan.devices[1].files, 3);
}

#[test]
fn split_two_devices_asc() {
    let plan = run(
        &example_files(),
        &ample_devices(2),
        opts(Strategy::Split, Order::Asc),
        &[
            (5, 0, 1024, 0),  // 1 -> d0    d0 1,  d1 0
            (4, 0, 2048, 1),  // 2 -> d1    d0 1,  d1 2
            (3, 0, 3072, 0),  // 3 -> d0    d0 4,  d1 2
            (2, 0, 5120, 1),  // 5 -> d1    d0 4,  d1 7
            (1, 0, 7168, 0),  // 7 -> d0    d0 11, d1 7
            (0, 0, 10240, 1), // 10 -> d1   d0 11, d1 17
        ],
    );
    assert_eq!(assigned_mib(&plan), [11264, 17408]);
}

#[test]
fn fill_two_devices_desc() {
    // Rooms start at 14 GiB; every file fits whole in the largest room.
    let plan = run(
        &example_files(),
        &ample_devices(2),
        opts(Strategy::Fill, Order::Desc),
        &[
            (0, 0, 10240, 0), // rooms 14,14 -> d0     rooms 4, 14
            (1, 0, 7168, 1),  // -> d1                 rooms 4, 7
            (2, 0, 5120, 1),  // -> d1                 rooms 4, 2
            (3, 0, 3072, 0),  // -> d0                 rooms 1, 2
            (4, 0, 2048, 1),  // -> d1                 rooms 1, 0
            (5, 0, 1024, 0),  // -> d0                 rooms 0, 0
        ],
    );
    assert_eq!(assigned_mib(&plan), [14336, 14336]);
}

#[test]
fn fill_two_devices_asc() {
    // 1 -> d0, 2 -> d1, 3 -> d0, 5 -> d1, 7 -> d0: rooms 3 GiB, 7 GiB.
    // 10 GiB fits no room: 7 GiB to d1 (largest room), the other 3 to d0.
    let plan = run(
        &example_files(),
        &ample_devices(2),
        opts(Strategy::Fill, Order::Asc),
        &[
            (5, 0, 1024, 0),
            (4, 0, 2048, 1),
            (0, 7168, 3072, 0), // tie on length with file 3: file 0 first
            (3, 0, 3072, 0),
            (2, 0, 5120, 1),
            (0, 0, 7168, 1), // tie on length with file 1: file 0 first
            (1, 0, 7168, 0),
        ],
    );
    assert_eq!(assigned_mib(&plan), [14336, 14336]);
    assert_eq!(plan.devices[0].files, 4);
    assert_eq!(plan.devices[1].files, 3);
}

// N = 3: T = floor(30064771072 / 3) = 10021590357 bytes = 9557 MiB + 349525.
// Split pieces are T rounded down to the chunk: 9557 MiB; 10 GiB = 10240 MiB
// is cut into 9557 + 683 MiB.

const T3: u64 = 10_021_590_357;

#[test]
fn split_three_devices_desc() {
    let plan = run(
        &example_files(),
        &ample_devices(3),
        opts(Strategy::Split, Order::Desc),
        &[
            (0, 0, 9557, 0),   // d0 9557
            (1, 0, 7168, 1),   // d1 7168
            (2, 0, 5120, 2),   // d2 5120
            (3, 0, 3072, 2),   // d2 8192
            (4, 0, 2048, 1),   // d1 9216
            (5, 0, 1024, 2),   // d2 9216
            (0, 9557, 683, 1), // d1 = d2 = 9216: lowest index -> d1 9899
        ],
    );
    assert_eq!(plan.threshold_bytes, T3);
    assert_eq!(assigned_mib(&plan), [9557, 9899, 9216]);
    // Spread 683 MiB <= the largest item (9557 MiB).
    assert_eq!(plan.spread_bytes(), 683 * MIB);
}

#[test]
fn split_three_devices_asc() {
    let plan = run(
        &example_files(),
        &ample_devices(3),
        opts(Strategy::Split, Order::Asc),
        &[
            (0, 9557, 683, 0), // d0 683
            (5, 0, 1024, 1),   // d1 1024
            (4, 0, 2048, 2),   // d2 2048
            (3, 0, 3072, 0),   // d0 3755
            (2, 0, 5120, 1),   // d1 6144
            (1, 0, 7168, 2),   // d2 9216
            (0, 0, 9557, 0),   // d0 13312
        ],
    );
    assert_eq!(assigned_mib(&plan), [13312, 6144, 9216]);
    assert_eq!(plan.devices[0].files, 2); // two pieces of file 0, and file 3
}

#[test]
fn fill_three_devices_desc() {
    // Rooms in MiB (each share is 9557.33 MiB):
    // 10240 > room: 9557 to d0 (room 0.33); the 683 rest fits d1.
    // 7168 -> d2; 5120 -> d1 (room 8874.33); 3072 -> d1 (3754.33);
    // 2048 -> d2 (2389.33). 1024: largest room d1 682.33 -> 682 to d1,
    // then d2 341.33 -> 341, then every room is 0.33: the last 1 MiB
    // (one chunk) goes to d0, the lowest index.
    let plan = run(
        &example_files(),
        &ample_devices(3),
        opts(Strategy::Fill, Order::Desc),
        &[
            (0, 0, 9557, 0),
            (1, 0, 7168, 2),
            (2, 0, 5120, 1),
            (3, 0, 3072, 1),
            (4, 0, 2048, 2),
            (0, 9557, 683, 1),
            (5, 0, 682, 1),
            (5, 682, 341, 2),
            (5, 1023, 1, 0),
        ],
    );
    assert_eq!(assigned_mib(&plan), [9558, 9557, 9557]);
    assert!(plan.spread_bytes() <= MIB);
}

#[test]
fn fill_three_devices_asc() {
    // 1024 -> d0, 2048 -> d1, 3072 -> d2, 5120 -> d0 (room 8533.33),
    // 7168 -> d1 (room 7509.33). 10240: d2 room 6485.33 -> 6485 MiB,
    // d0 room 3413.33 -> 3413, d1 room 341.33 -> 341, last 1 MiB -> d0.
    let plan = run(
        &example_files(),
        &ample_devices(3),
        opts(Strategy::Fill, Order::Asc),
        &[
            (0, 10239, 1, 0),
            (0, 9898, 341, 1),
            (5, 0, 1024, 0),
            (4, 0, 2048, 1),
            (3, 0, 3072, 2),
            (0, 6485, 3413, 0),
            (2, 0, 5120, 0),
            (0, 0, 6485, 2),
            (1, 0, 7168, 1),
        ],
    );
    assert_eq!(assigned_mib(&plan), [9558, 9557, 9557]);
    assert_eq!(plan.devices[0].files, 3); // files 5, 2 and 0 (two pieces)
    assert_eq!(plan.devices[0].segments, 4);
}

// Time balance, rates 1:3 (100 MiB/s and 300 MiB/s): shares 7 and 21 GiB.

fn rated_devices() -> Vec<DeviceSlot> {
    [100 * MIB, 300 * MIB]
        .iter()
        .map(|&rate| DeviceSlot {
            capacity_bytes: 100 * GIB,
            rate_bytes_per_sec: Some(rate),
        })
        .collect()
}

#[test]
fn split_time_balance_desc() {
    // Earliest predicted finish (assigned + item) / rate, in GiB per unit:
    // 10: d0 10 vs d1 3.3 -> d1; 7: 7 vs 5.7 -> d1; 5: 5 vs 7.3 -> d0;
    // 3: 8 vs 6.7 -> d1; 2: 7 vs 7.3 -> d0; 1: 8 vs 7 -> d1.
    let mut o = opts(Strategy::Split, Order::Desc);
    o.balance = Balance::Time;
    let plan = run(
        &example_files(),
        &rated_devices(),
        o,
        &[
            (0, 0, 10240, 1),
            (1, 0, 7168, 1),
            (2, 0, 5120, 0),
            (3, 0, 3072, 1),
            (4, 0, 2048, 0),
            (5, 0, 1024, 1),
        ],
    );
    assert_eq!(assigned_mib(&plan), [7168, 21504]);
    let finish: Vec<f64> = plan
        .devices
        .iter()
        .map(|d| d.finish_secs.unwrap())
        .collect();
    // d0: 7168 MiB + 7168 headers (28 MiB) at 100 MiB/s = 71.96 s;
    // d1: 21504 MiB + 84 MiB of headers at 300 MiB/s = 71.96 s.
    assert!((finish[0] - finish[1]).abs() < 1e-9, "{finish:?}");
    assert!((finish[0] - (7 * GIB + 7168 * 4096) as f64 / (100 * MIB) as f64).abs() < 1e-9);
}

#[test]
fn fill_time_balance_desc() {
    // Rooms 7 and 21 GiB: 10 -> d1 (11 left), 7 -> d1 (4), 5 -> d0 (2),
    // 3 -> d1 (1), 2 -> d0 (0), 1 -> d1 (0).
    let mut o = opts(Strategy::Fill, Order::Desc);
    o.balance = Balance::Time;
    let plan = run(
        &example_files(),
        &rated_devices(),
        o,
        &[
            (0, 0, 10240, 1),
            (1, 0, 7168, 1),
            (2, 0, 5120, 0),
            (3, 0, 3072, 1),
            (4, 0, 2048, 0),
            (5, 0, 1024, 1),
        ],
    );
    assert_eq!(assigned_mib(&plan), [7168, 21504]);
}

#[test]
fn fill_time_balance_splits_by_share() {
    // One 4 GiB file over rates 1:3: shares 1 and 3 GiB. The largest room
    // is d1's, which takes its 3 GiB; d0 takes the last 1 GiB.
    let files = [FileItem::dense(4 * GIB)];
    let mut o = opts(Strategy::Fill, Order::Desc);
    o.balance = Balance::Time;
    run(
        &files,
        &rated_devices(),
        o,
        &[(0, 0, 3072, 1), (0, 3072, 1024, 0)],
    );
}

// Errors.

#[test]
fn no_devices() {
    for strategy in [Strategy::Split, Strategy::Fill] {
        let err = plan(&example_files(), &[], &opts(strategy, Order::Desc)).unwrap_err();
        assert_eq!(err, PlanError::NoDevices);
    }
}

#[test]
fn bad_chunk() {
    for chunk in [0, 1, 2048, 3 * 4096, 4097, (1 << 20) + 4096] {
        let o = Options {
            chunk_bytes: chunk,
            ..Options::default()
        };
        let err = plan(&example_files(), &ample_devices(2), &o).unwrap_err();
        assert_eq!(err, PlanError::BadChunk(chunk));
    }
    let o = Options {
        chunk_bytes: 4096,
        ..Options::default()
    };
    assert!(plan(&example_files(), &ample_devices(2), &o).is_ok());
}

#[test]
fn missing_rate() {
    let mut devices = rated_devices();
    devices.push(DeviceSlot {
        capacity_bytes: GIB,
        rate_bytes_per_sec: Some(0),
    });
    devices.push(DeviceSlot {
        capacity_bytes: GIB,
        rate_bytes_per_sec: None,
    });
    let o = Options {
        balance: Balance::Time,
        ..Options::default()
    };
    assert_eq!(
        plan(&example_files(), &devices, &o),
        Err(PlanError::MissingRate { device: 2 })
    );
    // Bytes mode ignores rates but still predicts finish times when known.
    devices[2].capacity_bytes = 100 * GIB;
    devices[3].capacity_bytes = 100 * GIB;
    let plan = plan(&example_files(), &devices, &Options::default()).unwrap();
    assert!(plan.devices[0].finish_secs.is_some());
    assert!(plan.devices[2].finish_secs.is_none());
    assert!(plan.devices[3].finish_secs.is_none());
}

#[test]
fn does_not_fit_too_big() {
    // 28 GiB of files, 2 x 10 GiB of capacity: 8 GiB of payload plus
    // 28672 headers (one per MiB) short.
    let devices = vec![
        DeviceSlot {
            capacity_bytes: 10 * GIB,
            rate_bytes_per_sec: None,
        };
        2
    ];
    let missing = 8 * GIB + 28672 * HEADER_BYTES;
    for strategy in [Strategy::Split, Strategy::Fill] {
        for order in [Order::Desc, Order::Asc] {
            let err = plan(&example_files(), &devices, &opts(strategy, order)).unwrap_err();
            let PlanError::DoesNotFit { missing_bytes } = err else {
                panic!("{err:?}");
            };
            // At least what is missing overall; Split may report a larger
            // single shortfall (its items cannot be cut further).
            assert!(
                missing_bytes >= missing,
                "{strategy:?} {order:?}: {missing_bytes}"
            );
            if strategy == Strategy::Fill {
                // Fill cuts to fit, so only the unusable tail of each
                // device's room (under one record) adds to the figure.
                assert!(
                    missing_bytes < missing + 2 * (MIB + HEADER_BYTES),
                    "{order:?}"
                );
            }
        }
    }
}

#[test]
fn does_not_fit_one_record_short() {
    // One 3 MiB file, one device with room for 2 records: one record
    // (1 MiB + header) short, whichever strategy.
    let files = [FileItem::dense(3 * MIB)];
    let devices = [DeviceSlot {
        capacity_bytes: 2 * (MIB + HEADER_BYTES),
        rate_bytes_per_sec: None,
    }];
    for strategy in [Strategy::Split, Strategy::Fill] {
        assert_eq!(
            plan(&files, &devices, &opts(strategy, Order::Desc)),
            Err(PlanError::DoesNotFit {
                missing_bytes: MIB + HEADER_BYTES
            }),
            "{strategy:?}"
        );
    }
}

#[test]
fn split_cannot_cut_to_fit_but_fill_can() {
    // Three 4 MiB files over two devices holding 6 MiB (+ headers) each.
    // The set fits exactly in total; Split places two whole files and the
    // third (4 MiB) is 2 MiB + 2 headers short of either device's free
    // room. Fill splits the third file 2 + 2.
    let files = vec![FileItem::dense(4 * MIB); 3];
    let devices = vec![
        DeviceSlot {
            capacity_bytes: 6 * (MIB + HEADER_BYTES),
            rate_bytes_per_sec: None,
        };
        2
    ];
    assert_eq!(
        plan(&files, &devices, &opts(Strategy::Split, Order::Desc)),
        Err(PlanError::DoesNotFit {
            missing_bytes: 2 * (MIB + HEADER_BYTES)
        })
    );
    run(
        &files,
        &devices,
        opts(Strategy::Fill, Order::Desc),
        &[(0, 0, 4, 0), (1, 0, 4, 1), (2, 0, 2, 0), (2, 2, 2, 1)],
    );
}

#[test]
fn split_full_device_passes_to_next_least_filled() {
    // d0 holds one 1 MiB record only; everything after goes to d1, d2.
    let files = vec![FileItem::dense(MIB); 5];
    let mut devices = ample_devices(3);
    devices[0].capacity_bytes = MIB + HEADER_BYTES;
    let plan = run(
        &files,
        &devices,
        opts(Strategy::Split, Order::Desc),
        &[
            (0, 0, 1, 0),
            (1, 0, 1, 1),
            (2, 0, 1, 2),
            (3, 0, 1, 1),
            (4, 0, 1, 2),
        ],
    );
    assert_eq!(plan.devices[0].media_bytes, MIB + HEADER_BYTES);
}

#[test]
fn fill_reshares_when_a_device_fills_early() {
    // 30 MiB over 3 devices (share 10 MiB) where d0 holds only 4 records:
    // the 26 MiB d0 cannot take are re-shared 13 + 13 over d1 and d2.
    let files = [FileItem::dense(30 * MIB)];
    let mut devices = ample_devices(3);
    devices[0].capacity_bytes = 4 * (MIB + HEADER_BYTES);
    let plan = run(
        &files,
        &devices,
        opts(Strategy::Fill, Order::Desc),
        &[(0, 4, 13, 1), (0, 17, 13, 2), (0, 0, 4, 0)],
    );
    assert_eq!(assigned_mib(&plan), [4, 13, 13]);
}

// Chunk alignment and small cases.

#[test]
fn chunk_alignment() {
    // 10 MiB + 5 bytes and 3 MiB - 1 over 3 devices: T is not a chunk
    // multiple; every cut is.
    let files = [FileItem::dense(10 * MIB + 5), FileItem::dense(3 * MIB - 1)];
    for strategy in [Strategy::Split, Strategy::Fill] {
        for order in [Order::Desc, Order::Asc] {
            let o = opts(strategy, order);
            let plan = plan(&files, &ample_devices(3), &o).unwrap();
            check_plan(&files, &ample_devices(3), &o, &plan);
            for s in &plan.segments {
                assert_eq!(s.offset % MIB, 0);
                let size = files[s.file as usize].size_bytes;
                assert!(s.length % MIB == 0 || s.offset + s.length == size);
            }
        }
    }
    // Split: T = 4.33 MiB, pieces of 4 MiB: 4, 4, 2 MiB + 5 of file 0.
    let plan = plan(
        &files,
        &ample_devices(3),
        &opts(Strategy::Split, Order::Desc),
    )
    .unwrap();
    let cuts: Vec<(u32, u64, u64)> = plan
        .segments
        .iter()
        .map(|s| (s.file, s.offset, s.length))
        .collect();
    assert_eq!(
        cuts,
        [
            (0, 0, 4 * MIB),
            (0, 4 * MIB, 4 * MIB),
            (1, 0, 3 * MIB - 1),
            (0, 8 * MIB, 2 * MIB + 5)
        ]
    );
}

#[test]
fn threshold_below_chunk() {
    // T = 6 KiB < chunk (64 KiB): segments may be one chunk, over T.
    let files = [
        FileItem::dense(10_000),
        FileItem::dense(8_000),
        FileItem::dense(100),
    ];
    let o = Options {
        strategy: Strategy::Split,
        order: Order::Desc,
        balance: Balance::Bytes,
        chunk_bytes: 64 * 1024,
    };
    let plan = plan(&files, &ample_devices(3), &o).unwrap();
    check_plan(&files, &ample_devices(3), &o, &plan);
    assert_eq!(plan.threshold_bytes, 6033);
    assert_eq!(plan.segments.len(), 3);
    assert_eq!(plan.segments[0].length, 10_000);
}

#[test]
fn empty_and_zero_sized() {
    let files = [FileItem::dense(0), FileItem::dense(0)];
    for strategy in [Strategy::Split, Strategy::Fill] {
        let o = opts(strategy, Order::Desc);
        let plan = plan(&files, &ample_devices(2), &o).unwrap();
        assert!(plan.segments.is_empty());
        assert_eq!(plan.threshold_bytes, 0);
        assert!(plan
            .devices
            .iter()
            .all(|d| d.assigned_bytes == 0 && d.files == 0));
        let plan = super::plan(&[], &ample_devices(2), &o).unwrap();
        assert!(plan.segments.is_empty());
    }
}

#[test]
fn single_device() {
    for strategy in [Strategy::Split, Strategy::Fill] {
        let o = opts(strategy, Order::Desc);
        let plan = plan(&example_files(), &ample_devices(1), &o).unwrap();
        check_plan(&example_files(), &ample_devices(1), &o, &plan);
        assert_eq!(plan.segments.len(), 6);
        assert_eq!(plan.devices[0].assigned_bytes, 28 * GIB);
        assert_eq!(plan.devices[0].files, 6);
    }
}

#[test]
fn media_bytes_examples() {
    assert_eq!(media_bytes(0, MIB), 0);
    assert_eq!(media_bytes(1, MIB), 2 * 4096);
    assert_eq!(media_bytes(MIB, MIB), MIB + 4096);
    assert_eq!(media_bytes(MIB + 1, MIB), MIB + 4096 + 2 * 4096);
    // Cutting on chunk boundaries never changes the footprint.
    assert_eq!(
        media_bytes(3 * MIB + 7, MIB),
        media_bytes(2 * MIB, MIB) + media_bytes(MIB + 7, MIB)
    );
}

#[test]
fn fill_reshares_around_a_device_too_small_for_a_record() {
    // d1 cannot take a single 1 MiB record: its share goes to d0 and d2
    // from the start, so the 20 MiB file is cut once, not in chunks.
    let files = [FileItem::dense(20 * MIB)];
    let mut devices = ample_devices(3);
    devices[1].capacity_bytes = MIB;
    let plan = run(
        &files,
        &devices,
        opts(Strategy::Fill, Order::Desc),
        &[(0, 0, 10, 0), (0, 10, 10, 2)],
    );
    assert_eq!(assigned_mib(&plan), [10, 0, 10]);
}

#[test]
fn sparse_files_weigh_what_they_store() {
    // A 1 GiB file with 64 MiB of data (16 runs of 4 MiB, spread out), and
    // 64 MiB of dense files, over two devices: each device stores about
    // 64 MiB, whatever the sparse file's length.
    let data: Vec<(u64, u64)> = (0..16).map(|i| (i * 64 * MIB, 4 * MIB)).collect();
    let mut files = vec![FileItem::sparse(GIB, &data)];
    files.extend(std::iter::repeat_n(FileItem::dense(4 * MIB), 16));
    // The same set with a dense 64 MiB file in its place.
    let mut dense = files.clone();
    dense[0] = FileItem::dense(64 * MIB);
    for strategy in [Strategy::Fill, Strategy::Split] {
        for order in [Order::Desc, Order::Asc] {
            let o = opts(strategy, order);
            let p = plan(&files, &ample_devices(2), &o).expect("fits");
            check_plan(&files, &ample_devices(2), &o, &p);
            assert_eq!(p.threshold_bytes, 64 * MIB, "{strategy:?} {order:?}");
            let q = plan(&dense, &ample_devices(2), &o).expect("fits");
            let stored = |p: &Plan| {
                p.devices
                    .iter()
                    .map(|d| d.assigned_bytes)
                    .collect::<Vec<_>>()
            };
            assert_eq!(stored(&p), stored(&q), "{strategy:?} {order:?}");
            // Split in ascending order places the largest item last:
            // within that item (its claim), not within a chunk.
            if (strategy, order) != (Strategy::Split, Order::Asc) {
                assert!(
                    p.spread_bytes() <= 4 * MIB,
                    "{strategy:?} {order:?}: {:?}",
                    p.devices
                );
            }
            let media: Vec<u64> = p.devices.iter().map(|d| d.media_bytes).collect();
            assert!(media.iter().all(|&m| m < 100 * MIB), "{media:?}");
        }
    }
    // Fill pours the sparse file (first, largest) into device 0 whole: it
    // stores 64 MiB = T there.
    let p = plan(
        &files,
        &ample_devices(2),
        &opts(Strategy::Fill, Order::Desc),
    )
    .unwrap();
    assert_eq!(p.segments[0].length, GIB);
    assert_eq!(p.devices[0].assigned_bytes, 64 * MIB);
    assert_eq!(p.devices[1].assigned_bytes, 64 * MIB);
}

#[test]
fn an_all_hole_file_still_gets_its_segment() {
    let files = [FileItem::sparse(GIB, &[]), FileItem::dense(3 * MIB)];
    for strategy in [Strategy::Fill, Strategy::Split] {
        let o = opts(strategy, Order::Desc);
        let p = plan(&files, &ample_devices(2), &o).unwrap();
        check_plan(&files, &ample_devices(2), &o, &p);
        let hole: Vec<_> = p.segments.iter().filter(|s| s.file == 0).collect();
        assert_eq!(hole.len(), 1, "{strategy:?}");
        assert_eq!(hole[0].length, GIB);
        let total: u64 = p.devices.iter().map(|d| d.assigned_bytes).sum();
        assert_eq!(total, 3 * MIB);
    }
}
