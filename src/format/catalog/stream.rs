//! A catalog read entry by entry (issue 23): the same checks as
//! `Catalog::decode` (structure, then the rules of `validate`), but the
//! file and segment tables are never held decoded. `CatalogStream::open`
//! walks the encoding once for its structure (writing an index of 17
//! bytes a file: what the rules and a reader need of other files, kind,
//! whether its data is in an earlier set, size, and where its entry
//! starts), then applies the rules file by file and segment by segment;
//! afterwards `files()`, `segments()` and `file(id)` decode one entry at a
//! time.
//!
//! The encoding is either bytes in memory or a temporary file
//! (`Spilled`, what a reader of a device writes the catalog's records
//! into), read through a window of `WINDOW_BYTES`; then the index is a
//! temporary file too, read through a cache of 1.1 MiB, and nothing held
//! grows with the catalog.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::FileExt;

use super::decode::{
    check_frame, decode_tail, parse_fixed, Fixed, Reader, COUNTS_EXCEED, TRUNCATED,
};
use super::validate::{check_segment, Summary};
use super::{
    layout, Catalog, CatalogFile, CatalogSegment, FileKind, CATALOG_BYTES_MIN, CATALOG_CRC_BYTES,
    CATALOG_MAC_BYTES,
};
use crate::format::{FormatError, MacKey, HASH_BYTES};

/// Bytes of a sequential reader's window over a spilled catalog (grown
/// for an entry larger than it). Small under test, so that the samples'
/// entries cross windows.
const WINDOW_BYTES: usize = if cfg!(test) { 64 } else { 256 << 10 };
/// Bytes of the window `CatalogStream::file` reads one entry through.
const ENTRY_WINDOW_BYTES: usize = if cfg!(test) { 8 } else { 4 << 10 };

/// A catalog's encoding in an unlinked temporary file (`$TMPDIR`), so
/// that a reader holds a window of it, not all of it.
#[derive(Debug)]
pub struct Spilled {
    file: std::fs::File,
    len: u64,
}

impl Spilled {
    /// An empty spill file in `std::env::temp_dir()`, removed when dropped.
    pub fn new() -> std::io::Result<Spilled> {
        Ok(Spilled {
            file: tempfile::tempfile()?,
            len: 0,
        })
    }

    /// Append `bytes` to the encoding.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Write the whole encoding to `out`.
    // The lint sees the test's 64-byte window; the real one is 256 KiB.
    #[cfg_attr(test, allow(clippy::useless_vec))]
    pub fn copy_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut buf = vec![0; WINDOW_BYTES];
        let mut at = 0;
        while at < self.len {
            let n = (self.len - at).min(WINDOW_BYTES as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], at)?;
            out.write_all(&buf[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Where a catalog's encoding is read from.
#[derive(Clone, Copy, Debug)]
enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a Spilled),
}

impl<'a> Source<'a> {
    fn len(self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::File(f) => f.len,
        }
    }

    /// `[at, at + n)` of the encoding (the caller keeps it inside).
    fn read(self, at: u64, n: usize) -> Result<Cow<'a, [u8]>, FormatError> {
        match self {
            Source::Bytes(b) => Ok(Cow::Borrowed(&b[at as usize..at as usize + n])),
            Source::File(f) => {
                let mut buf = vec![0; n];
                read_spilled(f, &mut buf, at)?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    /// Hand `[0, end)` of the encoding to `each`, a window at a time.
    // The lint sees the test's 64-byte window; the real one is 256 KiB.
    #[cfg_attr(test, allow(clippy::useless_vec))]
    fn each_window(self, end: u64, mut each: impl FnMut(&[u8])) -> Result<(), FormatError> {
        match self {
            Source::Bytes(b) => each(&b[..end as usize]),
            Source::File(f) => {
                let mut buf = vec![0; WINDOW_BYTES];
                let mut at = 0;
                while at < end {
                    let n = (end - at).min(WINDOW_BYTES as u64) as usize;
                    read_spilled(f, &mut buf[..n], at)?;
                    each(&buf[..n]);
                    at += n as u64;
                }
            }
        }
        Ok(())
    }
}

fn read_spilled(f: &Spilled, buf: &mut [u8], at: u64) -> Result<(), FormatError> {
    f.file
        .read_exact_at(buf, at)
        .map_err(|e| FormatError::Spill {
            offset: at,
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        })
}

/// Entries decoded one after the other from `[at, end)` of a source:
/// borrowed from bytes in memory, or through a window of a spilled file.
/// An entry cut by the window's end is decoded again from a window that
/// starts at it (twice as large when it filled the last one), so the
/// result is the same as decoding the whole table at once.
struct Cursor<'a> {
    source: Source<'a>,
    at: u64,
    end: u64,
    window: Vec<u8>,
    window_at: u64,
    window_bytes: usize,
}

impl<'a> Cursor<'a> {
    fn new(source: Source<'a>, at: u64, end: u64, window_bytes: usize) -> Cursor<'a> {
        Cursor {
            source,
            at,
            end,
            window: Vec::new(),
            window_at: 0,
            window_bytes,
        }
    }

    fn next<T>(
        &mut self,
        decode: impl Fn(&mut Reader<'_>) -> Result<T, FormatError>,
    ) -> Result<T, FormatError> {
        let file = match self.source {
            Source::Bytes(b) => {
                let mut r = Reader(&b[self.at as usize..self.end as usize]);
                let item = decode(&mut r)?;
                self.at = self.end - r.0.len() as u64;
                return Ok(item);
            }
            Source::File(file) => file,
        };
        let mut want = None;
        loop {
            let window_end = self.window_at + self.window.len() as u64;
            let inside = self.window_at <= self.at && self.at < window_end;
            if want.is_some() || !inside {
                let n = (self.end - self.at).min(want.unwrap_or(self.window_bytes) as u64);
                self.window.resize(n as usize, 0);
                read_spilled(file, &mut self.window, self.at)?;
                self.window_at = self.at;
            }
            let avail = &self.window[(self.at - self.window_at) as usize..];
            let whole = self.window_at + self.window.len() as u64 == self.end;
            let mut r = Reader(avail);
            match decode(&mut r) {
                Ok(item) => {
                    self.at += (avail.len() - r.0.len()) as u64;
                    return Ok(item);
                }
                // Out of bytes before the table's end: read more.
                Err(e) if !whole && (e == TRUNCATED || e == COUNTS_EXCEED) => {
                    want = Some((avail.len() * 2).max(self.window_bytes));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// What a reader needs of a file without decoding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSummary {
    pub kind: FileKind,
    /// Its data is in an earlier set (`origin` >= 1).
    pub earlier: bool,
    pub size_bytes: u64,
}

/// A decoded and validated catalog whose files and segments stay encoded.
#[derive(Debug)]
pub struct CatalogStream<'a> {
    /// Every field but `files` and `segments` (left empty).
    head: Catalog,
    file_count: u32,
    segment_count: u32,
    source: Source<'a>,
    /// The file table: `[start, end)` of the encoding.
    files: (u64, u64),
    /// The segment table.
    segments: (u64, u64),
    /// Per file: its kind, size and where its entry starts (`Index`).
    index: Index,
    /// Blocks of a spilled file table cached for `file`.
    blocks: Blocks,
}

impl<'a> CatalogStream<'a> {
    /// Check `buf` as `Catalog::decode` does (the same catalogs are
    /// accepted, the same refused) without holding its files or segments
    /// decoded.
    pub fn open(buf: &'a [u8]) -> Result<CatalogStream<'a>, FormatError> {
        Self::open_source(Source::Bytes(buf))
    }

    /// `open` of a spilled encoding, read through a window.
    pub fn open_spilled(spilled: &'a Spilled) -> Result<CatalogStream<'a>, FormatError> {
        Self::open_source(Source::File(spilled))
    }

    fn open_source(source: Source<'a>) -> Result<CatalogStream<'a>, FormatError> {
        let len = source.len();
        let first_bytes = len.min(WINDOW_BYTES as u64) as usize;
        let first = source.read(0, first_bytes)?;
        let crc_at = len.saturating_sub(CATALOG_CRC_BYTES as u64);
        let stored = if len >= CATALOG_BYTES_MIN as u64 {
            let b = source.read(crc_at, CATALOG_CRC_BYTES)?;
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        } else {
            0
        };
        check_frame(&first, len, stored, || {
            let mut crc = 0;
            source.each_window(crc_at, |w| crc = crc32c::crc32c_append(crc, w))?;
            Ok(crc)
        })?;
        let tables_end = crc_at - CATALOG_MAC_BYTES as u64;
        let mut mac = [0u8; HASH_BYTES];
        mac.copy_from_slice(&source.read(tables_end, CATALOG_MAC_BYTES)?);
        // The device table, from a prefix read longer until it holds it.
        let mut prefix = first;
        let Fixed {
            mut head,
            file_count,
            segment_count,
            devices_end,
        } = loop {
            let upto = (prefix.len() as u64).min(tables_end) as usize;
            match parse_fixed(&prefix[..upto], tables_end, mac) {
                Err(e) if e == TRUNCATED && (upto as u64) < tables_end => {
                    let n = (upto as u64 * 2).min(tables_end) as usize;
                    prefix = source.read(0, n)?;
                }
                fixed => break fixed?,
            }
        };
        drop(prefix);
        // Pass 1: the structure, and what the rules need of each file.
        let mut index = IndexWriter::new(source, file_count)?;
        let files_at = devices_end as u64;
        let mut c = Cursor::new(source, files_at, tables_end, WINDOW_BYTES);
        for _ in 0..file_count {
            let start = c.at;
            let f = c.next(|r| r.file())?;
            let kind = f.kind.code() | if f.origin != 0 { ORIGIN_BIT } else { 0 };
            index.push(kind, f.size_bytes, start)?;
        }
        let files = (files_at, c.at);
        for _ in 0..segment_count {
            c.next(|r| r.segment())?;
        }
        let segments = (files.1, c.at);
        let tail = source.read(segments.1, (tables_end - segments.1) as usize)?;
        decode_tail(&mut Reader(&tail), &mut head, file_count)?;
        drop(tail);
        let stream = CatalogStream {
            head,
            file_count,
            segment_count,
            source,
            files,
            segments,
            index: index.finish()?,
            blocks: Blocks::default(),
        };
        stream.check_rules()?;
        Ok(stream)
    }

    /// Pass 2: the rules, in `validate`'s order.
    fn check_rules(&self) -> Result<(), FormatError> {
        let lookup = |i: usize| {
            let s = self.summary(i)?;
            Some(Summary {
                kind: s.kind,
                origin: u32::from(s.earlier),
                size_bytes: s.size_bytes,
            })
        };
        let head = &self.head;
        head.check_head(self.file_count as usize)?;
        let mut referenced = HashSet::new();
        for (index, f) in self.files().enumerate() {
            head.check_file(index, &f?, &lookup, &mut referenced)?;
        }
        head.check_rest(&lookup)?;
        let device_count = head.devices.len();
        for (index, s) in self.segments().enumerate() {
            check_segment(&s?, &lookup, device_count).map_err(|why| FormatError::CatalogEntry {
                table: "segment",
                index: index as u64,
                why,
            })?;
        }
        Ok(())
    }

    /// The catalog without its files and segments (set id, devices, chain,
    /// parity, MAC).
    pub fn head(&self) -> &Catalog {
        &self.head
    }

    pub fn file_count(&self) -> usize {
        self.file_count as usize
    }

    pub fn segment_count(&self) -> usize {
        self.segment_count as usize
    }

    /// File `id`'s kind, size and whether its data is in an earlier set,
    /// without decoding it; None past the last file.
    pub fn summary(&self, id: usize) -> Option<FileSummary> {
        Some(self.summary_at(id, None)?.0)
    }

    /// `summary` of file `id` and where its entry starts, the index read
    /// through `slot` (`Index::get_in`) or the shared cache.
    fn summary_at(
        &self,
        id: usize,
        slot: Option<&mut (u64, Vec<u8>)>,
    ) -> Option<(FileSummary, u64)> {
        let (code, size_bytes, at) = match slot {
            Some(slot) => self.index.get_in(id, slot)?,
            None => self.index.get(id)?,
        };
        let summary = FileSummary {
            kind: FileKind::from_code(code & !ORIGIN_BIT)?,
            earlier: code & ORIGIN_BIT != 0,
            size_bytes,
        };
        Some((summary, at))
    }

    /// File `id` decoded (its entry read alone, through a small cache of
    /// blocks of the file table: readers ask for files mostly in id
    /// order, a record after another); None past the last file.
    pub fn file(&self, id: usize) -> Option<Result<CatalogFile, FormatError>> {
        let (_, _, at) = self.index.get(id)?;
        let end = match self.index.get(id + 1) {
            Some((_, _, next)) => next,
            None => self.files.1,
        };
        if let (Source::File(spilled), true) = (self.source, at < end) {
            if let Some(bytes) = self.blocks.entry(spilled, at, end) {
                return Some(bytes.and_then(|b| Reader(&b).file()));
            }
        }
        let mut c = Cursor::new(self.source, at, self.files.1, ENTRY_WINDOW_BYTES);
        Some(c.next(|r| r.file()))
    }

    /// The MAC of the encoding with `key` (`Catalog::mac_for`, without
    /// encoding again).
    pub fn mac_for(&self, key: &MacKey) -> [u8; HASH_BYTES] {
        let macced = self.source.len() - (CATALOG_MAC_BYTES + CATALOG_CRC_BYTES) as u64;
        let mut hasher = blake3::Hasher::new_keyed(key);
        // A spill file that no longer reads gives a MAC that matches nothing.
        if self
            .source
            .each_window(macced, |w| {
                hasher.update(w);
            })
            .is_err()
        {
            return [0; HASH_BYTES];
        }
        *hasher.finalize().as_bytes()
    }

    /// The files in id order, one decoded at a time.
    pub fn files(&self) -> Entries<'a, CatalogFile> {
        Entries {
            c: Cursor::new(self.source, self.files.0, self.files.1, WINDOW_BYTES),
            left: self.file_count,
            next: |r| r.file(),
        }
    }

    /// The files `wanted(id, summary)` takes (asked in id order), each
    /// decoded with its id; the others passed over through the index,
    /// never decoded: a phase that takes a few kinds of files reads only
    /// theirs (issue 23). The window moves on as `files` does, so the
    /// files taken are read once, in order.
    pub fn files_where<W>(&self, wanted: W) -> FilesWhere<'_, 'a, W>
    where
        W: FnMut(usize, FileSummary) -> bool,
    {
        FilesWhere {
            stream: self,
            c: Cursor::new(self.source, self.files.0, self.files.1, WINDOW_BYTES),
            next: 0,
            wanted,
            slot: (u64::MAX, Vec::new()),
        }
    }

    /// The segments in table order, one decoded at a time.
    pub fn segments(&self) -> Entries<'a, CatalogSegment> {
        Entries {
            c: Cursor::new(self.source, self.segments.0, self.segments.1, WINDOW_BYTES),
            left: self.segment_count,
            next: |r| r.segment(),
        }
    }
}

const _: () = assert!(layout::TABLES < WINDOW_BYTES);

/// Bytes of one file's entry in an `Index`: its kind's code (with
/// `ORIGIN_BIT`), its size and where its entry starts, u64 LE each.
const INDEX_ENTRY_BYTES: usize = 17;
/// Entries of an `Index` in one cached block of its file.
const INDEX_BLOCK_ENTRIES: usize = if cfg!(test) { 2 } else { 1024 };
const INDEX_BLOCK_BYTES: usize = INDEX_BLOCK_ENTRIES * INDEX_ENTRY_BYTES;
/// Blocks of an `Index` file cached (direct-mapped): 1.1 MiB.
const INDEX_CACHED_BLOCKS: usize = 64;

/// What a reader needs of every file by id, `INDEX_ENTRY_BYTES` a file:
/// in memory for a catalog in memory; for a spilled catalog in a spill
/// file of its own, read through a small cache of blocks (readers look
/// files up mostly in id order), so that nothing held grows with the
/// catalog.
#[derive(Debug)]
enum Index {
    Memory(Vec<u8>),
    File {
        file: std::fs::File,
        count: usize,
        /// Per slot: the block it holds (`u64::MAX`: none) and its bytes.
        cache: std::sync::Mutex<Vec<(u64, Vec<u8>)>>,
    },
}

impl Index {
    /// File `id`'s (kind code, size, start); None past the last file
    /// (or when the index file no longer reads).
    fn get(&self, id: usize) -> Option<(u8, u64, u64)> {
        match self {
            Index::Memory(_) => self.get_in(id, &mut (u64::MAX, Vec::new())),
            Index::File { cache, .. } => {
                let block = id / INDEX_BLOCK_ENTRIES;
                let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                self.get_in(id, &mut cache[block % INDEX_CACHED_BLOCKS])
            }
        }
    }

    /// `get` through `slot` (the block it holds, `u64::MAX`: none, and its
    /// bytes), read into it when it holds another: a reader going through
    /// the files in order keeps its own slot, and takes no lock.
    fn get_in(&self, id: usize, slot: &mut (u64, Vec<u8>)) -> Option<(u8, u64, u64)> {
        match self {
            Index::Memory(bytes) => {
                let at = id.checked_mul(INDEX_ENTRY_BYTES)?;
                Some(index_entry(bytes.get(at..at + INDEX_ENTRY_BYTES)?))
            }
            Index::File { file, count, .. } => {
                if id >= *count {
                    return None;
                }
                let block = (id / INDEX_BLOCK_ENTRIES) as u64;
                if slot.0 != block {
                    let entries =
                        (*count - block as usize * INDEX_BLOCK_ENTRIES).min(INDEX_BLOCK_ENTRIES);
                    slot.1.resize(entries * INDEX_ENTRY_BYTES, 0);
                    slot.0 = u64::MAX;
                    file.read_exact_at(&mut slot.1, block * INDEX_BLOCK_BYTES as u64)
                        .ok()?;
                    slot.0 = block;
                }
                let at = (id % INDEX_BLOCK_ENTRIES) * INDEX_ENTRY_BYTES;
                Some(index_entry(&slot.1[at..at + INDEX_ENTRY_BYTES]))
            }
        }
    }
}

fn index_entry(b: &[u8]) -> (u8, u64, u64) {
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    (b[0], u64_at(1), u64_at(9))
}

/// An `Index` written file by file during `open`'s first pass.
enum IndexWriter {
    Memory(Vec<u8>),
    File {
        out: std::io::BufWriter<std::fs::File>,
        count: usize,
    },
}

impl IndexWriter {
    fn new(source: Source<'_>, file_count: u32) -> Result<IndexWriter, FormatError> {
        Ok(match source {
            Source::Bytes(_) => {
                IndexWriter::Memory(Vec::with_capacity(file_count as usize * INDEX_ENTRY_BYTES))
            }
            Source::File(_) => IndexWriter::File {
                out: std::io::BufWriter::with_capacity(
                    WINDOW_BYTES,
                    tempfile::tempfile().map_err(index_error)?,
                ),
                count: 0,
            },
        })
    }

    fn push(&mut self, code: u8, size_bytes: u64, start: u64) -> Result<(), FormatError> {
        let mut entry = [0u8; INDEX_ENTRY_BYTES];
        entry[0] = code;
        entry[1..9].copy_from_slice(&size_bytes.to_le_bytes());
        entry[9..].copy_from_slice(&start.to_le_bytes());
        match self {
            IndexWriter::Memory(bytes) => bytes.extend_from_slice(&entry),
            IndexWriter::File { out, count } => {
                out.write_all(&entry).map_err(index_error)?;
                *count += 1;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Index, FormatError> {
        Ok(match self {
            IndexWriter::Memory(bytes) => Index::Memory(bytes),
            IndexWriter::File { out, count } => Index::File {
                file: out.into_inner().map_err(|e| index_error(e.into_error()))?,
                count,
                cache: std::sync::Mutex::new(vec![(u64::MAX, Vec::new()); INDEX_CACHED_BLOCKS]),
            },
        })
    }
}

/// A spill file of the index that does not write or read back.
fn index_error(e: std::io::Error) -> FormatError {
    FormatError::Spill {
        offset: 0,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// Bytes of one cached block of a spilled file table (`Blocks`).
const BLOCK_BYTES: u64 = if cfg!(test) { 256 } else { 64 << 10 };
/// Blocks cached (direct-mapped): 1 MiB.
const BLOCKS_CACHED: usize = 16;

/// A few blocks of a spilled catalog read for `CatalogStream::file`, so
/// that looking up files near each other reads the spill file once a
/// block, not once an entry.
#[derive(Debug, Default)]
struct Blocks(std::sync::Mutex<Vec<(u64, Vec<u8>)>>);

impl Blocks {
    /// `[at, end)` of `spilled`, from a cached block when it lies within
    /// one (None when it does not: the caller reads it alone).
    fn entry(&self, spilled: &Spilled, at: u64, end: u64) -> Option<Result<Vec<u8>, FormatError>> {
        let block = at / BLOCK_BYTES;
        if (end - 1) / BLOCK_BYTES != block {
            return None;
        }
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.is_empty() {
            cache.resize(BLOCKS_CACHED, (u64::MAX, Vec::new()));
        }
        let slot = &mut cache[block as usize % BLOCKS_CACHED];
        let start = block * BLOCK_BYTES;
        if slot.0 != block {
            slot.0 = u64::MAX;
            let n = (spilled.len - start).min(BLOCK_BYTES);
            slot.1.resize(n as usize, 0);
            if let Err(e) = read_spilled(spilled, &mut slot.1, start) {
                return Some(Err(e));
            }
            slot.0 = block;
        }
        let from = (at - start) as usize;
        Some(Ok(slot.1[from..from + (end - at) as usize].to_vec()))
    }
}

/// An `Index` keeps a file's kind code and this bit when its data is in an
/// earlier set (kind codes are below it).
const ORIGIN_BIT: u8 = 0x80;

/// `CatalogStream::files_where`: the files a phase takes, with their ids.
/// An entry or index that no longer reads (a spill file's I/O error)
/// ends it, as an error.
pub struct FilesWhere<'s, 'a, W> {
    stream: &'s CatalogStream<'a>,
    c: Cursor<'a>,
    next: usize,
    wanted: W,
    /// Its own block of the index (`Index::get_in`).
    slot: (u64, Vec<u8>),
}

impl<W: FnMut(usize, FileSummary) -> bool> Iterator for FilesWhere<'_, '_, W> {
    type Item = (usize, Result<CatalogFile, FormatError>);

    fn next(&mut self) -> Option<Self::Item> {
        let count = self.stream.file_count();
        while self.next < count {
            let id = self.next;
            self.next += 1;
            let Some((summary, at)) = self.stream.summary_at(id, Some(&mut self.slot)) else {
                self.next = count;
                let error = FormatError::Catalog("the catalog's index no longer reads");
                return Some((id, Err(error)));
            };
            if !(self.wanted)(id, summary) {
                continue;
            }
            self.c.at = at;
            let file = self.c.next(|r| r.file());
            if file.is_err() {
                self.next = count;
            }
            return Some((id, file));
        }
        None
    }
}

/// The entries of one table, decoded one at a time. `open` decoded them
/// all once, so an error here is not expected (but for a spill file that
/// no longer reads); it is returned, not panicked on, all the same.
pub struct Entries<'a, T> {
    c: Cursor<'a>,
    left: u32,
    next: fn(&mut Reader<'_>) -> Result<T, FormatError>,
}

impl<T> Iterator for Entries<'_, T> {
    type Item = Result<T, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let item = self.c.next(self.next);
        if item.is_err() {
            self.left = 0;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}
