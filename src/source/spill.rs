//! The walk's entries spilled to an unlinked temporary file as they are
//! found (issue 23: a backup of ten million files in bounded memory,
//! PERF.md "#23 memory"). In memory stay an offset for every
//! `GROUP`-th entry and the data ranges of the sparse files (the planner
//! borrows them); an entry is read back by index through a few cached
//! windows of the file, so the rings (each reading its own ascending file
//! ids) and the catalog (reading them in order) read it in large reads.
//!
//! `EntryList` is what the planner's inputs, the catalog and the
//! incremental filter take: a slice of entries in memory (the tests, the
//! walks that keep them) or the spilled list.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock};

use super::{Entry, EntryKind, Meta, Top};

/// Entries listed by index: file id = index.
pub trait EntryList: Sync {
    /// How many entries.
    fn count(&self) -> usize;
    /// Entry `i` (`i < count()`).
    fn entry(&self, i: usize) -> Cow<'_, Entry>;
    /// The data ranges of entry `i` when it is a sparse file, held as long
    /// as the list is (what `plan::FileItem` borrows).
    fn sparse(&self, i: usize) -> Option<&[(u64, u64)]>;
}

impl EntryList for [Entry] {
    fn count(&self) -> usize {
        self.len()
    }
    fn entry(&self, i: usize) -> Cow<'_, Entry> {
        Cow::Borrowed(&self[i])
    }
    fn sparse(&self, i: usize) -> Option<&[(u64, u64)]> {
        match &self[i].kind {
            EntryKind::File { data, .. } => data.as_deref(),
            _ => None,
        }
    }
}

impl EntryList for Vec<Entry> {
    fn count(&self) -> usize {
        self.len()
    }
    fn entry(&self, i: usize) -> Cow<'_, Entry> {
        Cow::Borrowed(&self[i])
    }
    fn sparse(&self, i: usize) -> Option<&[(u64, u64)]> {
        self.as_slice().sparse(i)
    }
}

/// Entries between two offsets kept in memory: entry `i` is found by
/// skipping `i % GROUP` records from the offset of its group.
const GROUP: usize = 16;
/// Bytes of the spill file read at once into a window.
const WINDOW_BYTES: usize = 64 << 10;
/// Windows cached: one per ring reading its own ascending ids, and spare.
const WINDOWS: usize = 8;

/// A sparse file's id and data ranges.
type SparseFile = (u32, Box<[(u64, u64)]>);

/// Builds a `SpilledEntries`: entries appended in file-id order.
pub struct SpillWriter {
    out: BufWriter<File>,
    written: u64,
    count: usize,
    offsets: Vec<u64>,
    tops: Vec<Arc<Top>>,
    sparse: Vec<SparseFile>,
    buf: Vec<u8>,
    /// The first write that failed: reported by `finish`.
    error: Option<io::Error>,
}

impl SpillWriter {
    /// A new spill in the temporary directory (`TMPDIR`, else /tmp),
    /// unlinked at once.
    pub fn new() -> io::Result<SpillWriter> {
        let file = tempfile::tempfile()?;
        Ok(SpillWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            written: 0,
            count: 0,
            offsets: Vec::new(),
            tops: Vec::new(),
            sparse: Vec::new(),
            buf: Vec::with_capacity(256),
            error: None,
        })
    }

    /// How many entries were appended.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Append `entry` (file id `count()`). A write error is kept and
    /// returned by `finish`.
    pub fn push(&mut self, entry: &Entry) {
        let top = match self.tops.iter().rposition(|t| Arc::ptr_eq(t, &entry.top)) {
            Some(top) => top,
            None => {
                self.tops.push(Arc::clone(&entry.top));
                self.tops.len() - 1
            }
        };
        if let EntryKind::File {
            data: Some(data), ..
        } = &entry.kind
        {
            self.sparse
                .push((self.count as u32, data.clone().into_boxed_slice()));
        }
        if self.count.is_multiple_of(GROUP) {
            self.offsets.push(self.written);
        }
        self.buf.clear();
        encode(&mut self.buf, top as u64, entry);
        let len = (self.buf.len() as u32).to_le_bytes();
        if self.error.is_none() {
            let wrote = self
                .out
                .write_all(&len)
                .and_then(|()| self.out.write_all(&self.buf));
            if let Err(e) = wrote {
                self.error = Some(e);
            }
        }
        self.written += 4 + self.buf.len() as u64;
        self.count += 1;
    }

    /// The list, once every entry is written.
    pub fn finish(mut self) -> io::Result<SpilledEntries> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok(SpilledEntries {
            file,
            len_bytes: self.written,
            count: self.count,
            offsets: self.offsets,
            tops: self.tops,
            sparse: self.sparse,
            windows: Mutex::new(Vec::with_capacity(WINDOWS)),
            clock: std::sync::atomic::AtomicU64::new(0),
            failed: OnceLock::new(),
        })
    }
}

/// Reading the walk's entries back from their temporary file failed (an
/// I/O error of the temporary directory's filesystem, or bytes that do not
/// decode): the run cannot go on with the entry, and whoever holds the
/// list ends it with this error (`SpilledEntries::check`).
#[derive(Clone, Debug, thiserror::Error)]
#[error("reading back entry {index} of the walk from its temporary file (in {dir}): {error}")]
pub struct ReadBackError {
    /// The entry's index (file id).
    pub index: usize,
    /// The temporary directory (`TMPDIR`, else /tmp), escaped for the terminal.
    pub dir: String,
    pub error: Arc<io::Error>,
}

/// One cached piece of the spill file.
struct Window {
    start: u64,
    bytes: Vec<u8>,
    used: u64,
}

/// The walk's entries in an unlinked temporary file (see the module docs).
pub struct SpilledEntries {
    file: File,
    len_bytes: u64,
    count: usize,
    offsets: Vec<u64>,
    tops: Vec<Arc<Top>>,
    sparse: Vec<SparseFile>,
    windows: Mutex<Vec<Window>>,
    clock: std::sync::atomic::AtomicU64,
    /// The first entry that could not be read back (`at` went on with a
    /// stand-in): `check` returns it.
    failed: OnceLock<ReadBackError>,
}

impl std::fmt::Debug for SpilledEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpilledEntries")
            .field("count", &self.count)
            .field("len_bytes", &self.len_bytes)
            .finish()
    }
}

impl SpilledEntries {
    /// `entries` spilled (the tests, and callers that built them in memory).
    pub fn from_entries(entries: &[Entry]) -> io::Result<SpilledEntries> {
        let mut writer = SpillWriter::new()?;
        for entry in entries {
            writer.push(entry);
        }
        writer.finish()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Entry `i`, read back. Panics if `i` is out of range. If the
    /// temporary file cannot be read back, the error is kept (`check`
    /// returns it) and a stand-in is returned: an unnamed special entry,
    /// which the planner and the rings pass over; a run checks before it
    /// writes anything that depends on the entries (the catalog).
    pub fn at(&self, i: usize) -> Entry {
        self.try_at(i).unwrap_or_else(|_| Entry {
            path: Vec::new(),
            top: Arc::clone(&self.tops[0]),
            kind: EntryKind::Special,
            meta: Meta::default(),
        })
    }

    /// Entry `i`, read back (`i` in range), or why it cannot be (also
    /// kept for `check`).
    pub fn try_at(&self, i: usize) -> Result<Entry, ReadBackError> {
        assert!(i < self.count, "entry {i} of {}", self.count);
        self.try_get(i).map_err(|error| {
            let error = ReadBackError {
                index: i,
                dir: crate::units::shown_path(&std::env::temp_dir()),
                error: Arc::new(error),
            };
            let _ = self.failed.set(error.clone());
            error
        })
    }

    /// The first entry that could not be read back, if any (`at`).
    pub fn check(&self) -> Result<(), ReadBackError> {
        self.failed.get().map_or(Ok(()), |e| Err(e.clone()))
    }

    /// Entry `i`, or None past the last (`at`).
    pub fn get(&self, i: usize) -> Option<Entry> {
        (i < self.count).then(|| self.at(i))
    }

    /// The sparse files: file id and data ranges, ascending.
    pub fn sparse_files(&self) -> impl Iterator<Item = (u32, &[(u64, u64)])> + '_ {
        self.sparse.iter().map(|(i, data)| (*i, &data[..]))
    }

    /// Entries in file-id order.
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        (0..self.count).map(|i| self.at(i))
    }

    fn try_get(&self, i: usize) -> io::Result<Entry> {
        let group = i / GROUP;
        let start = self.offsets[group];
        let end = self
            .offsets
            .get(group + 1)
            .copied()
            .unwrap_or(self.len_bytes);
        let entry = self.with(start, (end - start) as usize, |mut bytes| {
            for _ in 0..i % GROUP {
                let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
                bytes = bytes.get(4 + len as usize..)?;
            }
            let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
            decode(bytes.get(4..4 + len as usize)?, &self.tops)
        })?;
        entry.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("entry {i} undecodable"))
        })
    }

    /// `f` of the `len` bytes at `at`, read through the windows (a record
    /// larger than a window is read on its own); no allocation when they
    /// are in a window.
    fn with<R>(&self, at: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
        let end = at + len as u64;
        if end > self.len_bytes {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "past the end of the entries written",
            ));
        }
        if len > WINDOW_BYTES {
            let mut bytes = vec![0; len];
            self.file.read_exact_at(&mut bytes, at)?;
            return Ok(f(&bytes));
        }
        let tick = self
            .clock
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = windows
            .iter_mut()
            .find(|w| w.start <= at && end <= w.start + w.bytes.len() as u64)
        {
            w.used = tick;
            let from = (at - w.start) as usize;
            return Ok(f(&w.bytes[from..from + len]));
        }
        let size = (self.len_bytes - at).min(WINDOW_BYTES as u64) as usize;
        let slot = if windows.len() < WINDOWS {
            windows.push(Window {
                start: 0,
                bytes: Vec::new(),
                used: 0,
            });
            windows.len() - 1
        } else {
            let lru = windows.iter().enumerate().min_by_key(|(_, w)| w.used);
            lru.map(|(i, _)| i).expect("windows")
        };
        let w = &mut windows[slot];
        w.bytes.resize(size, 0);
        w.start = at;
        w.used = tick;
        if let Err(e) = self.file.read_exact_at(&mut w.bytes, at) {
            w.bytes.clear();
            return Err(e);
        }
        Ok(f(&w.bytes[..len]))
    }
}

impl EntryList for SpilledEntries {
    fn count(&self) -> usize {
        self.count
    }
    fn entry(&self, i: usize) -> Cow<'_, Entry> {
        Cow::Owned(self.at(i))
    }
    fn sparse(&self, i: usize) -> Option<&[(u64, u64)]> {
        let i = i as u32;
        let at = self.sparse.binary_search_by_key(&i, |s| s.0).ok()?;
        Some(&self.sparse[at].1)
    }
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Signed as zigzag (times before 1970 are small too).
fn put_signed(out: &mut Vec<u8>, v: i64) {
    put(out, ((v << 1) ^ (v >> 63)) as u64);
}

const FILE: u8 = 0;
const DIR: u8 = 1;
const SYMLINK: u8 = 2;
const HARDLINK: u8 = 3;
const SPECIAL: u8 = 4;

/// One entry as spilled: varints and length-prefixed bytes.
fn encode(out: &mut Vec<u8>, top: u64, e: &Entry) {
    put(out, top);
    put_bytes(out, &e.path);
    match &e.kind {
        EntryKind::File { size_bytes, data } => {
            out.push(FILE);
            put(out, *size_bytes);
            match data {
                None => out.push(0),
                Some(ranges) => {
                    out.push(1);
                    put(out, ranges.len() as u64);
                    for &(o, l) in ranges {
                        put(out, o);
                        put(out, l);
                    }
                }
            }
        }
        EntryKind::Dir => out.push(DIR),
        EntryKind::Symlink { target } => {
            out.push(SYMLINK);
            put_bytes(out, target);
        }
        EntryKind::HardLink { target } => {
            out.push(HARDLINK);
            put(out, u64::from(*target));
        }
        EntryKind::Special => out.push(SPECIAL),
    }
    let s = &e.meta.stat;
    for v in [u64::from(s.mode), u64::from(s.uid), u64::from(s.gid)] {
        put(out, v);
    }
    put_signed(out, s.mtime_sec);
    put(out, u64::from(s.mtime_nsec));
    put_signed(out, s.ctime_sec);
    put(out, u64::from(s.ctime_nsec));
    for v in [s.dev, s.ino, s.rdev, u64::from(s.flags), e.meta.nlink] {
        put(out, v);
    }
    put(out, e.meta.xattrs.len() as u64);
    for x in &e.meta.xattrs {
        put_bytes(out, &x.name);
        put_bytes(out, &x.value);
    }
}

/// Reads what `encode` wrote.
struct Reader<'b> {
    bytes: &'b [u8],
}

impl<'b> Reader<'b> {
    fn get(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn get_u32(&mut self) -> Option<u32> {
        u32::try_from(self.get()?).ok()
    }
    fn signed(&mut self) -> Option<i64> {
        let v = self.get()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(b)
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = usize::try_from(self.get()?).ok()?;
        if len > self.bytes.len() {
            return None;
        }
        let (b, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(b.to_vec())
    }
}

/// What `encode` wrote, its source one of `tops`.
fn decode(bytes: &[u8], tops: &[Arc<Top>]) -> Option<Entry> {
    let mut r = Reader { bytes };
    let top = Arc::clone(tops.get(usize::try_from(r.get()?).ok()?)?);
    let path = r.bytes()?;
    let kind = match r.byte()? {
        FILE => {
            let size_bytes = r.get()?;
            let data = match r.byte()? {
                0 => None,
                _ => {
                    let n = usize::try_from(r.get()?).ok()?;
                    let mut ranges = Vec::with_capacity(n.min(1 << 16));
                    for _ in 0..n {
                        ranges.push((r.get()?, r.get()?));
                    }
                    Some(ranges)
                }
            };
            EntryKind::File { size_bytes, data }
        }
        DIR => EntryKind::Dir,
        SYMLINK => EntryKind::Symlink { target: r.bytes()? },
        HARDLINK => EntryKind::HardLink {
            target: r.get_u32()?,
        },
        SPECIAL => EntryKind::Special,
        _ => return None,
    };
    let stat = crate::format::Stat {
        mode: r.get_u32()?,
        uid: r.get_u32()?,
        gid: r.get_u32()?,
        mtime_sec: r.signed()?,
        mtime_nsec: r.get_u32()?,
        ctime_sec: r.signed()?,
        ctime_nsec: r.get_u32()?,
        dev: r.get()?,
        ino: r.get()?,
        rdev: r.get()?,
        flags: r.get_u32()?,
    };
    let nlink = r.get()?;
    let n = usize::try_from(r.get()?).ok()?;
    let mut xattrs = Vec::with_capacity(n.min(1 << 10));
    for _ in 0..n {
        let name = r.bytes()?;
        let value = r.bytes()?;
        xattrs.push(crate::format::Xattr { name, value });
    }
    let entry = Entry {
        path,
        top,
        kind,
        meta: Meta {
            stat,
            nlink,
            xattrs,
        },
    };
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sample(i: usize) -> Entry {
        let kind = match i % 5 {
            0 => EntryKind::Dir,
            1 => EntryKind::File {
                size_bytes: i as u64 * 1000,
                data: None,
            },
            2 => EntryKind::File {
                size_bytes: 1 << 40,
                data: Some(vec![(0, 4096), (1 << 30, 8192)]),
            },
            3 => EntryKind::Symlink {
                target: vec![b'x'; i % 300],
            },
            _ => EntryKind::HardLink { target: i as u32 },
        };
        let mut meta = Meta::default();
        meta.stat.mode = 0o100644;
        meta.stat.mtime_sec = -(i as i64);
        meta.stat.ctime_sec = i64::MAX - i as i64;
        meta.stat.ino = u64::MAX - i as u64;
        meta.nlink = 2;
        if i.is_multiple_of(7) {
            meta.xattrs.push(crate::format::Xattr {
                name: b"user.a".to_vec(),
                value: vec![i as u8; if i == 7 { 100_000 } else { 3 }],
            });
        }
        Entry::new(
            format!("top/d{}/f{i}", i / 100).into_bytes(),
            PathBuf::from("/src/top"),
            kind,
            meta,
        )
    }

    /// Every entry reads back as it was, in order and at random, with the
    /// sparse ranges in memory; a record larger than a window too.
    #[test]
    fn entries_read_back_as_written() {
        let entries: Vec<Entry> = (0..5000).map(sample).collect();
        let spilled = SpilledEntries::from_entries(&entries).unwrap();
        assert_eq!(spilled.len(), entries.len());
        for (i, e) in spilled.iter().enumerate() {
            assert_eq!(e, entries[i], "entry {i}");
            assert_eq!(e.source(), entries[i].source());
        }
        for i in (0..5000).rev().step_by(37) {
            assert_eq!(spilled.at(i), entries[i], "entry {i}");
            assert_eq!(spilled.sparse(i), entries.as_slice().sparse(i));
        }
    }

    /// A temporary file that cannot be read back (here: cut short under
    /// the list, as a failing filesystem would lose it) is an error that
    /// names the entry and the temporary directory, kept for `check`;
    /// `at` goes on with an unnamed special entry, never a panic.
    #[test]
    fn a_file_that_cannot_be_read_back_is_an_error() {
        let entries: Vec<Entry> = (0..3000).map(sample).collect();
        let spilled = SpilledEntries::from_entries(&entries).unwrap();
        assert_eq!(spilled.at(20), entries[20]);
        assert!(spilled.check().is_ok());
        spilled.file.set_len(0).unwrap();
        // Entry 20 is still in a window; the last group is not.
        assert_eq!(spilled.at(20), entries[20]);
        let e = spilled.try_at(2999).unwrap_err();
        assert_eq!(e.index, 2999);
        assert_eq!(e.error.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        let text = e.to_string();
        assert!(text.contains("entry 2999"), "{text}");
        assert!(
            text.contains(&crate::units::shown_path(&std::env::temp_dir())),
            "{text}"
        );
        let stand_in = spilled.at(2998);
        assert!(stand_in.path.is_empty());
        assert!(matches!(stand_in.kind, EntryKind::Special));
        // The first failure is the one kept.
        assert_eq!(spilled.check().unwrap_err().index, 2999);
    }
}
