//! Property tests over random sets: sizes 0 to 1 TiB (a quarter of the
//! files sparse, with random data ranges), 1 to 64 devices, random
//! capacities and rates, every strategy, order and balance. Balance and
//! capacity are checked in stored and media bytes computed by `check`.
//!
//! Case counts: `PBIO_PROPTEST_CASES` (default 48 per test) and, for the
//! test with up to 1,000,000 files, `PBIO_PROPTEST_BIG_CASES` (default 2).

use proptest::prelude::{any, prop_assert, prop_oneof, proptest, Just};
use proptest::strategy::Strategy as Gen;
use proptest::test_runner::{Config, FileFailurePersistence};

use super::check::{self, check_plan, shares};
use super::*;

const FILES_MAX: usize = 3000;
const DEVICES_MAX: usize = 64;
const TIB: u64 = 1 << 40;

fn cases(var: &str, default: u32) -> Config {
    let cases = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        // Failing cases are saved next to this file
        // (src/plan/proptests.regressions), inside the planner's folder.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    }
}

fn size_bytes() -> impl Gen<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        4 => 1u64..=256 * 1024,
        4 => 1u64..=64 << 20,
        2 => 1u64..=4 << 30,
        1 => 1u64..=TIB,
    ]
}

/// A file as generated: its size and, one time in four, the data ranges
/// of a sparse file (as the walker gives them: block-aligned starts, ends
/// on a block or at the file's end, at least one block of hole between).
type FileSpec = (u64, Option<Vec<(u64, u64)>>);

fn files() -> impl Gen<Value = Vec<FileSpec>> {
    proptest::collection::vec(
        (size_bytes(), 0u32..4, any::<u64>())
            .prop_map(|(size, kind, seed)| (size, (kind == 0).then(|| data_ranges(size, seed)))),
        0..=FILES_MAX,
    )
}

/// Up to 8 data ranges in a file of `size` bytes, from `seed`.
fn data_ranges(size: u64, mut seed: u64) -> Vec<(u64, u64)> {
    seed |= 1;
    let mut next = move || {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let blocks = size.div_ceil(BLOCK_BYTES);
    let count = next() % 9;
    let mut starts: Vec<u64> = (0..count)
        .filter(|_| blocks > 0)
        .map(|_| next() % blocks)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (i, &block) in starts.iter().enumerate() {
        let limit = starts.get(i + 1).map_or(blocks, |&b| b);
        // Leave at least one block of hole before the next range.
        let room = limit - block - u64::from(i + 1 < starts.len());
        if room == 0 {
            continue;
        }
        let length_blocks = 1 + next() % room;
        let start = block * BLOCK_BYTES;
        let end = ((block + length_blocks) * BLOCK_BYTES).min(size);
        ranges.push((start, end - start));
    }
    ranges
}

/// The planner's view of generated files (borrowing their ranges).
fn items(specs: &[FileSpec]) -> Vec<FileItem<'_>> {
    specs
        .iter()
        .map(|(size, data)| FileItem {
            size_bytes: *size,
            data: data.as_deref(),
        })
        .collect()
}

fn options() -> impl Gen<Value = Options> {
    (
        prop_oneof![Just(Strategy::Split), Just(Strategy::Fill)],
        prop_oneof![Just(Order::Desc), Just(Order::Asc)],
        prop_oneof![Just(Balance::Bytes), Just(Balance::Time)],
        prop_oneof![Just(4096u64), Just(64 * 1024), Just(1 << 20)],
    )
        .prop_map(|(strategy, order, balance, chunk_bytes)| Options {
            strategy,
            order,
            balance,
            chunk_bytes,
        })
}

/// Rates between 1 MB/s and 10 GB/s, as `Some`.
fn rates(n: usize) -> impl Gen<Value = Vec<Option<u64>>> {
    proptest::collection::vec((1_000_000u64..=10_000_000_000).prop_map(Some), n)
}

fn total_media(files: &[FileItem], chunk: u64) -> u64 {
    files
        .iter()
        .map(|f| check::media(f, 0, f.size_bytes, chunk))
        .sum()
}

/// The most any one segment stores.
fn largest_segment(files: &[FileItem], plan: &Plan) -> u64 {
    plan.segments
        .iter()
        .map(|s| check::stored(&files[s.file as usize], s.offset, s.offset + s.length))
        .max()
        .unwrap_or(0)
}

/// Balance properties that hold when no device runs out of room.
fn check_balance(files: &[FileItem], devices: &[DeviceSlot], opts: &Options, plan: &Plan) {
    let chunk = opts.chunk_bytes;
    let total: u128 = files
        .iter()
        .map(|f| u128::from(check::stored(f, 0, f.size_bytes)))
        .sum();
    let assigned: Vec<u128> = plan
        .devices
        .iter()
        .map(|d| u128::from(d.assigned_bytes))
        .collect();
    // Few cuts: Split cuts fewer than N files into about 2 pieces per T;
    // Fill makes at most one rounded-down cut per device plus fewer than
    // N + 1 full-chunk tail pieces.
    // Sparse files stored bytes, not lengths: a piece cut by stored bytes
    // ends on the chunk boundary before its first byte over, so two pieces
    // in a row (not one) store a full piece; Split may then cut up to
    // about 5N.
    let whole_files = files.iter().filter(|f| f.size_bytes > 0).count();
    let extra_segments = plan.segments.len() - whole_files;
    let sparse = files.iter().any(|f| f.data.is_some());
    let limit = if sparse { 5 } else { 2 };
    assert!(
        extra_segments <= limit * devices.len() + 2,
        "{extra_segments} extra segments over {} devices",
        devices.len()
    );
    match (opts.strategy, opts.balance) {
        (Strategy::Split, Balance::Bytes) => {
            // The fullest device took its last item while least filled.
            assert!(
                plan.spread_bytes() <= largest_segment(files, plan),
                "split spread {} > largest item {}",
                plan.spread_bytes(),
                largest_segment(files, plan)
            );
        }
        (Strategy::Split, Balance::Time) => {
            // Same in time: for all m, j: a_m / r_m <= (a_j + largest) / r_j.
            let largest = u128::from(largest_segment(files, plan));
            for (m, dm) in devices.iter().enumerate() {
                for (j, dj) in devices.iter().enumerate() {
                    let rm = u128::from(dm.rate_bytes_per_sec.unwrap());
                    let rj = u128::from(dj.rate_bytes_per_sec.unwrap());
                    assert!(
                        assigned[m] * rj <= (assigned[j] + largest) * rm,
                        "split time balance: device {m} vs {j}"
                    );
                }
            }
        }
        (Strategy::Fill, balance) => {
            let share = shares(total, devices, balance);
            for (i, (&a, &s)) in assigned.iter().zip(&share).enumerate() {
                assert!(
                    a.abs_diff(s) <= u128::from(chunk),
                    "fill: device {i} has {a}, share {s}, chunk {chunk}"
                );
            }
            if balance == Balance::Bytes {
                assert!(
                    plan.spread_bytes() <= chunk,
                    "fill spread {} > chunk",
                    plan.spread_bytes()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(cases("PBIO_PROPTEST_CASES", 48))]

    /// Ample capacity (every device could hold the whole set): every
    /// strategy succeeds, covers every byte once, and balances.
    #[test]
    fn ample_capacity(
        specs in files(),
        opts in options(),
        n in 1usize..=DEVICES_MAX,
        rate_seed in rates(DEVICES_MAX),
    ) {
        let files = items(&specs);
        let capacity = total_media(&files, opts.chunk_bytes) + 1;
        let devices: Vec<DeviceSlot> = (0..n)
            .map(|i| DeviceSlot { capacity_bytes: capacity, rate_bytes_per_sec: rate_seed[i] })
            .collect();
        let plan = plan(&files, &devices, &opts).expect("ample capacity fits");
        check_plan(&files, &devices, &opts, &plan);
        check_balance(&files, &devices, &opts, &plan);
    }

    /// Random capacities (from nothing to twice an even share): a plan
    /// never overfills a device; a failure reports at least what is
    /// missing overall; Fill fits whenever total capacity exceeds the
    /// media needed by one record per device.
    #[test]
    fn random_capacity(
        specs in files(),
        opts in options(),
        capacity_permille in proptest::collection::vec(0u64..=2000, 1..=DEVICES_MAX),
        rate_seed in rates(DEVICES_MAX),
    ) {
        let files = items(&specs);
        let chunk = opts.chunk_bytes;
        let media = total_media(&files, chunk);
        let n = capacity_permille.len() as u64;
        let devices: Vec<DeviceSlot> = capacity_permille
            .iter()
            .enumerate()
            .map(|(i, &p)| DeviceSlot {
                capacity_bytes: ((u128::from(media) * u128::from(p)) / (1000 * u128::from(n))) as u64,
                rate_bytes_per_sec: rate_seed[i],
            })
            .collect();
        let capacity: u64 = devices.iter().map(|d| d.capacity_bytes).sum();
        match plan(&files, &devices, &opts) {
            Ok(plan) => check_plan(&files, &devices, &opts, &plan),
            Err(PlanError::DoesNotFit { missing_bytes }) => {
                prop_assert!(missing_bytes >= 1);
                prop_assert!(missing_bytes >= media.saturating_sub(capacity));
                if opts.strategy == Strategy::Fill {
                    prop_assert!(
                        capacity < media + n * (chunk + HEADER_BYTES),
                        "fill failed with {capacity} capacity for {media} media"
                    );
                }
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}

/// Deterministic pseudo-random sizes (xorshift64*): mostly small files,
/// some large, a few huge, some empty.
fn generated_files(count: usize, mut seed: u64) -> Vec<FileItem<'static>> {
    seed |= 1;
    let mut next = move || {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    (0..count)
        .map(|_| {
            let r = next();
            let size_bytes = match r % 100 {
                0..=4 => 0,
                5..=79 => next() % (256 * 1024),
                80..=97 => next() % (64 << 20),
                98 => next() % (4 << 30),
                _ => next() % TIB,
            };
            FileItem::dense(size_bytes)
        })
        .collect()
}

proptest! {
    #![proptest_config(cases("PBIO_PROPTEST_BIG_CASES", 2))]

    /// Up to a million files, ample capacity.
    #[test]
    fn million_files(
        count in 100_000usize..=1_000_000,
        seed in any::<u64>(),
        opts in options(),
        n in 1usize..=DEVICES_MAX,
        rate_seed in rates(DEVICES_MAX),
    ) {
        let files = generated_files(count, seed);
        let capacity = total_media(&files, opts.chunk_bytes) + 1;
        let devices: Vec<DeviceSlot> = (0..n)
            .map(|i| DeviceSlot { capacity_bytes: capacity, rate_bytes_per_sec: rate_seed[i] })
            .collect();
        let plan = plan(&files, &devices, &opts).expect("ample capacity fits");
        check_plan(&files, &devices, &opts, &plan);
        check_balance(&files, &devices, &opts, &plan);
    }
}
