//! Planner benchmark: 1,000,000 files (deterministic pseudo-random mixed
//! sizes) over 16 devices, every strategy and order, both balances.
//!
//! Prints wall time per plan (best and median of `RUNS`) and the peak heap
//! bytes per file the planner allocates on top of its input, measured with
//! a counting global allocator. Run: `cargo bench --bench planner`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use pbio::plan::{
    media_bytes, plan, Balance, DeviceSlot, FileItem, Options, Order, Plan, Strategy,
    CHUNK_BYTES_DEFAULT,
};

/// Counts live heap bytes and their high-water mark.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

fn note_alloc(size: usize) {
    let live = LIVE_BYTES.fetch_add(size, Ordering::Relaxed) + size;
    PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call forwards to `System` with the same layout and pointer;
// the counters are plain atomics and never affect the returned memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note_alloc(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            note_alloc(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            note_alloc(new_size);
        }
        new_ptr
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const FILE_COUNT: usize = 1_000_000;
const DEVICE_COUNT: usize = 16;
const RUNS: usize = 5;
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// xorshift64*: deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A file-server-like mix: 5% empty, 70% under 64 KiB, 20% under 16 MiB,
/// 4.9% under 1 GiB, 0.1% under 256 GiB.
fn generated_files() -> Vec<FileItem<'static>> {
    let mut rng = XorShift(SEED);
    (0..FILE_COUNT)
        .map(|_| {
            let size_bytes = match rng.next() % 1000 {
                0..=49 => 0,
                50..=749 => rng.next() % (64 << 10),
                750..=949 => rng.next() % (16 << 20),
                950..=998 => rng.next() % (1 << 30),
                _ => rng.next() % (256 << 30),
            };
            FileItem::dense(size_bytes)
        })
        .collect()
}

/// Max - min over devices: assigned bytes (bytes balance) or predicted
/// finish seconds (time balance).
fn spread(plan: &Plan, balance: Balance) -> String {
    match balance {
        Balance::Bytes => format!("{} B", plan.spread_bytes()),
        Balance::Time => {
            let secs = plan.devices.iter().filter_map(|d| d.finish_secs);
            let max = secs.clone().fold(f64::MIN, f64::max);
            let min = secs.fold(f64::MAX, f64::min);
            format!("{:.4} s of {max:.0} s", max - min)
        }
    }
}

fn main() {
    let files = generated_files();
    let total_bytes: u64 = files.iter().map(|f| f.size_bytes).sum();
    let media_total: u64 = files
        .iter()
        .map(|f| media_bytes(f.size_bytes, CHUNK_BYTES_DEFAULT))
        .sum();
    let devices: Vec<DeviceSlot> = (0..DEVICE_COUNT)
        .map(|i| DeviceSlot {
            // Twice an even share: room for the fastest device's time share
            // (16/136 of the total) too.
            capacity_bytes: media_total / DEVICE_COUNT as u64 * 2,
            // 200 MB/s .. 3.2 GB/s
            rate_bytes_per_sec: Some(200_000_000 * (i as u64 + 1)),
        })
        .collect();
    println!(
        "planner bench: {FILE_COUNT} files, {:.1} TiB, {DEVICE_COUNT} devices, chunk {} KiB, {RUNS} runs each",
        total_bytes as f64 / (1u64 << 40) as f64,
        CHUNK_BYTES_DEFAULT >> 10
    );
    println!(
        "{:<6} {:<5} {:<6} {:>9} {:>9} {:>10} {:>10} {:>8} {:>22}",
        "strat", "order", "bal", "best ms", "median ms", "peak B/f", "keep B/f", "segs", "spread"
    );

    for strategy in [Strategy::Split, Strategy::Fill] {
        for order in [Order::Desc, Order::Asc] {
            for balance in [Balance::Bytes, Balance::Time] {
                let opts = Options {
                    strategy,
                    order,
                    balance,
                    chunk_bytes: CHUNK_BYTES_DEFAULT,
                };
                let mut times_ms = Vec::with_capacity(RUNS);
                let mut peak_extra = 0usize;
                let mut kept = 0usize;
                let mut summary = (0usize, String::new());
                for _ in 0..RUNS {
                    let before = LIVE_BYTES.load(Ordering::Relaxed);
                    PEAK_BYTES.store(before, Ordering::Relaxed);
                    let start = Instant::now();
                    let result = plan(&files, &devices, &opts);
                    let elapsed = start.elapsed();
                    let peak = PEAK_BYTES.load(Ordering::Relaxed) - before;
                    kept = LIVE_BYTES.load(Ordering::Relaxed) - before;
                    peak_extra = peak_extra.max(peak);
                    times_ms.push(elapsed.as_secs_f64() * 1e3);
                    let plan = match result {
                        Ok(plan) => plan,
                        Err(e) => {
                            eprintln!("plan failed: {e}");
                            std::process::exit(1);
                        }
                    };
                    summary = (plan.segments.len(), spread(&plan, balance));
                    std::hint::black_box(&plan);
                }
                times_ms.sort_by(f64::total_cmp);
                println!(
                    "{:<6} {:<5} {:<6} {:>9.1} {:>9.1} {:>10.1} {:>10.1} {:>8} {:>22}",
                    format!("{strategy:?}"),
                    format!("{order:?}"),
                    format!("{balance:?}"),
                    times_ms[0],
                    times_ms[RUNS / 2],
                    peak_extra as f64 / FILE_COUNT as f64,
                    kept as f64 / FILE_COUNT as f64,
                    summary.0,
                    summary.1
                );
            }
        }
    }
    println!(
        "input (FileItem slice, caller-owned): {} B/file",
        std::mem::size_of::<FileItem>()
    );
}
