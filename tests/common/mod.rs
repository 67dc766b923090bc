//! Shared helpers for integration tests (`mod common;` from `tests/*.rs`).
//!
//! Also compiled into the library's unit tests (`crate::source::test_fixture`)
//! so the walker and the restore tree are tested against the same fixture.
//!
//! Uses only std, libc and nix: nothing here depends on pbio itself, so it
//! can judge pbio's output independently.
#![allow(dead_code)]

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Logical size of the fixture's sparse file.
pub const SPARSE_FILE_BYTES: u64 = 8 << 20;
/// Owner given to one fixture file (when running as root).
pub const OTHER_ID: u32 = 1234;
/// A sparse file in `a` may use at most this many more allocated bytes in
/// `b` (extent-tree blocks and allocator rounding differ between copies).
pub const SPARSE_SLACK_BYTES: u64 = 64 << 10;

/// splitmix64: small, fast, deterministic; good enough for test content.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

fn os(bytes: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

fn write_random(path: &Path, size_bytes: u64, rng: &mut Rng) {
    let mut file = fs::File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size_bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    utimensat(
        None,
        path,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(sec, nsec),
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap_or_else(|e| panic!("utimensat {path:?}: {e}"));
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Build the acceptance tree under `root` (created if missing):
///
/// - `large.bin`: `large_file_bytes` of pseudo-random content;
/// - `small_files` files of 1 B..64 KiB random content under
///   `small/dNN/eNN/`, modes cycling 0o644 / 0o600 / 0o755;
/// - `empty`; `sparse.img` (8 MiB logical, data at 0..64K,
///   3M..3M+4K+100 and the last 5000 bytes);
/// - `link-to-large` -> `large.bin`, `small/up-link` -> `../large.bin`,
///   `dangling` -> `does/not/exist`;
/// - `hard-a` and `small/hard-b`: one inode, two names;
/// - a file `caf\xe9` and a directory `dir\xff` (non-UTF-8) holding a file;
/// - `setuid-prog` mode 0o4755; `owned-by-1234` uid/gid 1234 (root only);
/// - `old` with an mtime before 1970;
/// - explicit, distinct mtimes (with nanoseconds) on every entry, root
///   included, directories set last and deepest first.
///
/// Deterministic for given arguments. Panics on any failure (test helper).
pub fn make_fixture_tree(root: &Path, small_files: usize, large_file_bytes: u64) {
    let mut rng = Rng::new(0x5eed ^ (small_files as u64) ^ large_file_bytes.rotate_left(17));
    fs::create_dir_all(root).unwrap();

    write_random(&root.join("large.bin"), large_file_bytes, &mut rng);

    let small = root.join("small");
    for k in 0..small_files {
        let dir = small.join(format!("d{:02}/e{:02}", k % 7, (k / 7) % 5));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("f{k:06}"));
        let size_bytes = rng.range(1, 64 << 10);
        write_random(&path, size_bytes, &mut rng);
        set_mode(&path, [0o644, 0o600, 0o755][k % 3]);
    }
    fs::create_dir_all(&small).unwrap();
    set_mode(&small, 0o750);

    fs::File::create(root.join("empty")).unwrap();

    let sparse = fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(SPARSE_FILE_BYTES).unwrap();
    for (offset, len) in [
        (0u64, 64u64 << 10),
        (3 << 20, (4 << 10) + 100),
        (SPARSE_FILE_BYTES - 5000, 5000),
    ] {
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf);
        sparse.write_all_at(&buf, offset).unwrap();
    }
    sparse.sync_all().unwrap();
    drop(sparse);

    std::os::unix::fs::symlink("large.bin", root.join("link-to-large")).unwrap();
    std::os::unix::fs::symlink("../large.bin", small.join("up-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();

    write_random(&root.join("hard-a"), 3000, &mut rng);
    fs::hard_link(root.join("hard-a"), small.join("hard-b")).unwrap();

    write_random(&root.join(os(b"caf\xe9")), 1234, &mut rng);
    let odd_dir = root.join(os(b"dir\xff"));
    fs::create_dir(&odd_dir).unwrap();
    write_random(&odd_dir.join(os(b"inner\xfe.txt")), 77, &mut rng);

    let setuid = root.join("setuid-prog");
    write_random(&setuid, 500, &mut rng);
    set_mode(&setuid, 0o4755);

    let owned = root.join("owned-by-1234");
    write_random(&owned, 100, &mut rng);
    if is_root() {
        std::os::unix::fs::lchown(&owned, Some(OTHER_ID), Some(OTHER_ID)).unwrap();
    }
    set_mode(&owned, 0o640);

    write_random(&root.join("old"), 10, &mut rng);

    // mtimes: everything else first, then directories deepest first.
    let mut dirs = Vec::new();
    for (rel, metadata) in lstat_tree(root) {
        let path = join_rel(root, &rel);
        if metadata.is_dir() {
            dirs.push((rel, path));
            continue;
        }
        let sec = if rel == b"old" {
            -31_536_000
        } else {
            rng.range(1_000_000_000, 1_700_000_000) as i64
        };
        set_mtime(&path, sec, rng.range(0, 999_999_999) as i64);
    }
    dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(depth(rel)));
    for (_, path) in dirs {
        set_mtime(
            &path,
            rng.range(1_000_000_000, 1_700_000_000) as i64,
            rng.range(0, 999_999_999) as i64,
        );
    }
}

fn depth(rel: &[u8]) -> usize {
    if rel.is_empty() {
        0
    } else {
        1 + rel.iter().filter(|&&b| b == b'/').count()
    }
}

fn join_rel(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(os(rel))
    }
}

/// Every name under `root` (root itself as the empty path), lstat'ed,
/// keyed by '/'-separated relative path bytes. Never follows symlinks.
pub fn lstat_tree(root: &Path) -> BTreeMap<Vec<u8>, fs::Metadata> {
    let mut out = BTreeMap::new();
    let metadata = fs::symlink_metadata(root).unwrap_or_else(|e| panic!("lstat {root:?}: {e}"));
    let mut stack = vec![(Vec::new(), root.to_path_buf(), metadata)];
    while let Some((rel, path, metadata)) = stack.pop() {
        if metadata.is_dir() {
            for dir_entry in fs::read_dir(&path).unwrap_or_else(|e| panic!("readdir {path:?}: {e}"))
            {
                let dir_entry = dir_entry.unwrap();
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(dir_entry.file_name().as_bytes());
                let metadata = fs::symlink_metadata(dir_entry.path()).unwrap();
                stack.push((child, dir_entry.path(), metadata));
            }
        }
        out.insert(rel, metadata);
    }
    out
}

fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".to_string()
    } else {
        rel.escape_ascii().to_string()
    }
}

fn type_name(metadata: &fs::Metadata) -> &'static str {
    let t = metadata.file_type();
    if t.is_file() {
        "file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "special"
    }
}

/// Is the file sparse (fewer bytes allocated than its size)?
pub fn is_sparse(metadata: &fs::Metadata) -> bool {
    metadata.blocks() * 512 < metadata.len()
}

/// First offset where the contents of two equal-sized files differ.
fn first_difference(a: &Path, b: &Path) -> Result<Option<u64>, String> {
    let mut fa = fs::File::open(a).map_err(|e| format!("open {a:?}: {e}"))?;
    let mut fb = fs::File::open(b).map_err(|e| format!("open {b:?}: {e}"))?;
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| format!("read {a:?}: {e}"))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| format!("read {b:?}: {e}"))?;
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            return Ok(Some(offset + i as u64));
        }
        if na != nb {
            return Ok(Some(offset + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += n as u64;
    }
}

fn read_full(file: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Compare two trees (lstat, never following symlinks), roots included,
/// and describe every difference; an empty Vec means identical.
///
/// Compared: presence, type, mode (full st_mode), uid, gid, mtime (seconds
/// and nanoseconds), for files size and content, for symlinks the target
/// bytes; hard-link structure (names sharing an inode in `a` must share one
/// in `b`, and the other way round; nlink itself is not compared, since
/// links leading outside a tree are not part of it); sparseness: a file
/// sparse in `a` must have at most `SPARSE_SLACK_BYTES` more allocated in
/// `b` than in `a` (a dense `a` file may be sparser in `b`: not reported).
/// Not compared: atime, ctime, inode numbers, directory sizes.
pub fn compare_trees(a: &Path, b: &Path) -> Vec<String> {
    let ta = lstat_tree(a);
    let tb = lstat_tree(b);
    let mut diffs = Vec::new();
    for rel in ta.keys().filter(|rel| !tb.contains_key(*rel)) {
        diffs.push(format!("{}: missing in b", show(rel)));
    }
    for rel in tb.keys().filter(|rel| !ta.contains_key(*rel)) {
        diffs.push(format!("{}: extra in b", show(rel)));
    }
    for (rel, ma) in &ta {
        let Some(mb) = tb.get(rel) else { continue };
        let name = show(rel);
        if type_name(ma) != type_name(mb) {
            diffs.push(format!(
                "{name}: type {} != {}",
                type_name(ma),
                type_name(mb)
            ));
            continue;
        }
        if ma.mode() != mb.mode() {
            diffs.push(format!("{name}: mode {:#o} != {:#o}", ma.mode(), mb.mode()));
        }
        if ma.uid() != mb.uid() {
            diffs.push(format!("{name}: uid {} != {}", ma.uid(), mb.uid()));
        }
        if ma.gid() != mb.gid() {
            diffs.push(format!("{name}: gid {} != {}", ma.gid(), mb.gid()));
        }
        if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            diffs.push(format!(
                "{name}: mtime {}.{:09} != {}.{:09}",
                ma.mtime(),
                ma.mtime_nsec(),
                mb.mtime(),
                mb.mtime_nsec()
            ));
        }
        let (pa, pb) = (join_rel(a, rel), join_rel(b, rel));
        if ma.is_file() {
            if ma.len() != mb.len() {
                diffs.push(format!("{name}: size {} != {}", ma.len(), mb.len()));
            } else {
                match first_difference(&pa, &pb) {
                    Ok(None) => {}
                    Ok(Some(offset)) => {
                        diffs.push(format!("{name}: content differs at byte {offset}"))
                    }
                    Err(e) => diffs.push(format!("{name}: cannot compare content: {e}")),
                }
            }
            let (alloc_a, alloc_b) = (ma.blocks() * 512, mb.blocks() * 512);
            if is_sparse(ma) && alloc_b > alloc_a + SPARSE_SLACK_BYTES {
                diffs.push(format!(
                    "{name}: sparse file not sparse: {alloc_b} bytes allocated, {alloc_a} in a"
                ));
            }
        } else if ma.file_type().is_symlink() {
            let (la, lb) = (fs::read_link(&pa), fs::read_link(&pb));
            match (la, lb) {
                (Ok(la), Ok(lb)) if la == lb => {}
                (la, lb) => diffs.push(format!("{name}: symlink target {la:?} != {lb:?}")),
            }
        }
    }
    diffs.extend(link_differences(&ta, &tb, "a", "b"));
    diffs.extend(link_differences(&tb, &ta, "b", "a"));
    diffs
}

/// Groups of names sharing one inode in `x` that do not share one in `y`.
fn link_differences(
    x: &BTreeMap<Vec<u8>, fs::Metadata>,
    y: &BTreeMap<Vec<u8>, fs::Metadata>,
    x_name: &str,
    y_name: &str,
) -> Vec<String> {
    let mut groups: HashMap<(u64, u64), Vec<&Vec<u8>>> = HashMap::new();
    for (rel, metadata) in x.iter().filter(|(_, m)| m.is_file() && m.nlink() > 1) {
        groups
            .entry((metadata.dev(), metadata.ino()))
            .or_default()
            .push(rel);
    }
    let mut groups: Vec<Vec<&Vec<u8>>> = groups.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    let mut diffs = Vec::new();
    for group in groups {
        let first = group[0];
        for other in &group[1..] {
            let linked = match (y.get(first), y.get(*other)) {
                (Some(m1), Some(m2)) => (m1.dev(), m1.ino()) == (m2.dev(), m2.ino()),
                // Missing names are reported already.
                _ => true,
            };
            if !linked {
                diffs.push(format!(
                    "{} and {}: hard links of each other in {x_name}, not in {y_name}",
                    show(first),
                    show(other)
                ));
            }
        }
    }
    diffs
}
