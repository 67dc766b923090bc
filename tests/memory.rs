//! Per-file memory of a backup's bookkeeping (issue 23), measured with a
//! counting allocator: what is allocated beyond what the walked entries
//! themselves hold. A step that held a decoded catalog entry per file (a
//! `CatalogFile`: 192 bytes plus its path and xattrs) would fail here.
//! No device and no timing: the entries are made up, the numbers are
//! bytes, the same on every machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use pbio::format::Stat;
use pbio::source::{Entry, EntryKind, Meta};

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counters
// only observe the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A tree like scripts/many-files.sh's: 1000 files a directory, every
/// other one empty, the rest 1 byte.
fn entries(files: usize) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(files + files / 1000 + 2);
    let meta = |mode| Meta {
        stat: Stat {
            mode,
            uid: 1000,
            gid: 1000,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 123_456_789,
            ctime_sec: 1_700_000_000,
            ctime_nsec: 123_456_789,
            dev: 0x803,
            ..Stat::default()
        },
        nlink: 1,
        ..Meta::default()
    };
    entries.push(Entry::new(
        b"many".to_vec(),
        PathBuf::from("/nonexistent/many"),
        EntryKind::Dir,
        meta(0o40755),
    ));
    for i in 0..files {
        if i % 1000 == 0 {
            entries.push(Entry::new(
                format!("many/d{:05}", i / 1000).into_bytes(),
                PathBuf::from("/nonexistent"),
                EntryKind::Dir,
                meta(0o40755),
            ));
        }
        let mut m = meta(0o100644);
        m.stat.ino = i as u64 + 100;
        entries.push(Entry::new(
            format!("many/d{:05}/f{:03}", i / 1000, i % 1000).into_bytes(),
            PathBuf::from("/nonexistent"),
            EntryKind::File {
                size_bytes: (i % 2) as u64,
                data: None,
            },
            m,
        ));
    }
    entries
}

/// Peak bytes allocated by `f` beyond what was live when it started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK_BYTES.load(Ordering::Relaxed) - base)
}

/// Planning a set (with its catalog size estimates) and encoding its
/// catalog, beyond the entries: at most 80 bytes a file for `plan_set`
/// (measured 55: the planner's items and plan; it built whole catalogs
/// before, over 300), 128 for the encoding (measured 99: the encoded bytes
/// and a 16-byte summary a file; a `CatalogFile` alone is 192).
#[test]
fn plan_and_catalog_encoding_stay_within_their_bytes_a_file() {
    const FILES: usize = 200_000;
    let entries = entries(FILES);
    let devices: Vec<(String, u64, Option<u64>)> = (0..4)
        .map(|i| (format!("/dev/loop{i}"), 8 << 30, None))
        .collect();
    let (items, items_peak) = peak_of(|| pbio::backup::file_items(&entries, None));
    let slots = vec![
        pbio::plan::DeviceSlot {
            capacity_bytes: 8 << 30,
            rate_bytes_per_sec: None
        };
        4
    ];
    let (_, planner_peak) =
        peak_of(|| pbio::plan::plan(&items, &slots, &pbio::plan::Options::default()));
    println!("file_items {items_peak}, plan::plan {planner_peak}");
    drop(items);
    let ((plan, _reserve), plan_peak) = peak_of(|| {
        pbio::backup::plan_set(&entries, None, &devices, &pbio::plan::Options::default())
            .expect("plans")
    });
    assert_eq!(
        plan.segments.len(),
        FILES / 2,
        "one segment per 1-byte file"
    );
    let catalog_devices: Vec<pbio::format::CatalogDevice> = devices
        .iter()
        .map(|(path, capacity, _)| pbio::format::CatalogDevice {
            path: path.clone().into_bytes(),
            capacity_bytes: *capacity,
            state: pbio::format::DeviceState::Complete,
            data_end: 4096,
        })
        .collect();
    let (encoded, encode_peak) = peak_of(|| {
        let head = pbio::backup::catalog_head(
            pbio::format::SetId([7; 16]),
            1,
            1 << 20,
            &catalog_devices,
            None,
            Vec::new(),
        );
        let file = |i| pbio::backup::catalog_file(&entries, i, None);
        head.encode_streamed(entries.len(), &file, None)
    });
    let decoded = pbio::format::Catalog::decode(&encoded).expect("decodes");
    assert_eq!(decoded.files.len(), entries.len());
    assert_eq!(decoded.files[2].path, b"many/d00000/f000");
    for (what, peak, limit) in [
        ("plan_set", plan_peak, 80),
        ("encode_streamed", encode_peak, 128),
    ] {
        let per_file = peak / entries.len();
        println!("{what}: {peak} bytes at peak, {per_file} a file");
        assert!(
            per_file <= limit,
            "{what} allocated {per_file} bytes a file at peak (more than {limit})"
        );
    }
}
