//! Streaming a device's records in media order (restore, verify, scan).
//!
//! One io_uring per device, two windows: while the records of one window
//! are handed to the caller (CRC check, writing payloads to their files),
//! the next window is being read. A window is a whole number of the
//! largest records; every record complete in it is handed over, and the
//! next window starts at the first record that was not (so full-size
//! records are never read twice, and a boundary costs at most one partial
//! smaller record). Records are block aligned on media, so that position is
//! a valid O_DIRECT offset and nothing is copied to stitch records together.
//!
//! A window is an `Arc<Lease>`: a record's item carries a clone of it
//! and the payload's range (`Payload::Window`), so a consumer that writes
//! the payload out without a copy (restore's writer) owns what it writes
//! from until its write completes. Before a window is read into again the
//! stream delivers `Item::Reclaim` and then takes the window back with
//! `Arc::get_mut`: a consumer still holding it then is a bug, and the
//! stream panics rather than overwrite bytes someone may be writing.
//!
//! A memory-mapped device (pmem) is not read at all: its records are
//! handed out as slices of the mapping itself (`Payload::Mapped`, borrowed
//! from the device), without a copy.
//!
//! A sequential device (tape) is read one block at a time, each block one
//! record, through the same kind of ring: while one block is handed to the
//! caller the next is being read. Positions there are logical object
//! numbers (blocks and filemarks from the beginning of the tape); a
//! filemark is passed over, two in a row (or the end of recorded data)
//! end the stream.

use std::ops::Range;
use std::sync::Arc;

use crate::device::{Access, BlockIo, DataPath, Device, TapeOp, Transport};
use crate::format::{FormatError, RecordHeader, BLOCK_BYTES, HEADER_BYTES};
use crate::io::{self, BufferPool, Lease, Uring};

/// Default window: large sequential reads, tape- and disk-friendly.
pub const WINDOW_BYTES: usize = 8 << 20;

/// What the caller wants after a record or a bad block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// One item of the stream.
pub enum Item<'a> {
    /// A record whose header decoded; the payload is as read (CRC not yet checked).
    Record {
        position: u64,
        header: RecordHeader,
        /// The header block as read (for `RecordHeader::decode_info`).
        header_block: &'a [u8],
        payload: &'a [u8],
        /// Where `payload` lies, to be kept by a consumer that writes it
        /// out after the item is gone (until the next `Reclaim`).
        source: Payload<'a>,
        /// The bytes between the payload's end and the next block boundary:
        /// zero on a good record (not covered by the payload CRC).
        padding: &'a [u8],
        /// The payload's CRC32C was already found to match the header's
        /// (a tape block shorter than asked, checked by the reader:
        /// `tape::record_checks`): the consumer need not compute it again.
        crc_checked: bool,
    },
    /// The block at `position` is not a valid record header. The stream
    /// moves on by one block (a scan resynchronises) unless told to stop.
    Bad { position: u64, error: FormatError },
    /// The buffers of every item handed out so far are about to be reused
    /// or freed: anything still using them (queued writes of payloads) must
    /// finish now. Delivered before each buffer reuse and before `stream`
    /// returns, however it returns.
    Reclaim,
}

/// Where a record's payload lies.
#[derive(Clone)]
pub enum Payload<'a> {
    /// `range` of a stream window. The window is read into again only
    /// after `Item::Reclaim`, and only when no clone of it is left.
    Window {
        window: Arc<Lease>,
        range: Range<usize>,
    },
    /// A slice of the device's own mapping (pmem), borrowed from it.
    Mapped(&'a [u8]),
}

impl Payload<'_> {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Payload::Window { window, range } => &window.bytes()[range.clone()],
            Payload::Mapped(bytes) => bytes,
        }
    }
}

/// Whether every byte of `bytes` (a record's padding: under one block) is
/// zero. An OR over all of them, with no early exit, so that the compiler
/// vectorises it: the byte-by-byte `any` it replaces was 7% of the CPU
/// of a restore of small files, whose records are mostly padding.
pub fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// A window to read into: no payload handed out from it may be held any
/// longer (every holder lets go on `Item::Reclaim`).
fn exclusive(window: &mut Arc<Lease>) -> &mut Lease {
    Arc::get_mut(window).expect(
        "a stream window is still held (a Payload::Window kept past Item::Reclaim): \
         reading into it would change bytes a consumer may still be writing",
    )
}

#[derive(Debug, thiserror::Error)]
#[error("device {device}: read at offset {offset}: {error}")]
pub struct StreamError {
    pub device: String,
    pub offset: u64,
    pub error: std::io::Error,
}

/// Stream records from `start` to `end` (exclusive) of `dev`, records of at
/// most `HEADER_BYTES + chunk_bytes` media bytes.
pub fn stream<E>(
    dev: &dyn Device,
    start: u64,
    end: u64,
    chunk_bytes: u32,
    mut each: impl FnMut(Item<'_>) -> Result<Flow, E>,
) -> Result<(), E>
where
    E: From<StreamError>,
{
    let record_max = HEADER_BYTES + chunk_bytes as usize;
    if dev.access() == Access::Sequential {
        // One block per read: at most the largest record of the set, and
        // at most what the drive can write.
        let block_max = super::tape::block_read_bytes(dev, record_max);
        let pool = BufferPool::new(2, block_max.div_ceil(BLOCK_BYTES) * BLOCK_BYTES);
        let mut leases = two_leases(&pool);
        let streamed = stream_sequential(dev, start, end, block_max, &mut leases, &mut each);
        let reclaimed = each(Item::Reclaim);
        return streamed.and(reclaimed.map(|_| ()));
    }
    if let Some(media) = dev.mapped() {
        let streamed = stream_mapped(dev, media, start, end, record_max, &mut each);
        let reclaimed = each(Item::Reclaim);
        return streamed.and(reclaimed.map(|_| ()));
    }
    let window = (WINDOW_BYTES / record_max).max(1) * record_max;
    // Owned here, so that it outlives the caller's use of the items: the
    // last Reclaim comes after the windows are done, whatever ended them.
    let pool = BufferPool::new(2, window);
    let mut leases = two_leases(&pool);
    let streamed = stream_windows(dev, start, end, record_max, &pool, &mut leases, &mut each);
    let reclaimed = each(Item::Reclaim);
    streamed.and(reclaimed.map(|_| ()))
}

/// A header whose record does not fit where it stands.
fn too_long(header: &RecordHeader) -> FormatError {
    FormatError::Field {
        field: "payload_bytes",
        value: header.payload_bytes as u64,
    }
}

/// The two buffers of a stream: one handed out while the other is read.
fn two_leases(pool: &BufferPool) -> [Arc<Lease>; 2] {
    let mut all = pool.lease_all().into_iter();
    match (all.next(), all.next(), all.next()) {
        (Some(a), Some(b), None) => [Arc::new(a), Arc::new(b)],
        _ => unreachable!("a stream's pool has two slots"),
    }
}

/// The lease handed out (`current`) and the other, to read into.
fn pair(leases: &mut [Arc<Lease>; 2], current: usize) -> (&mut Arc<Lease>, &mut Arc<Lease>) {
    let [a, b] = leases;
    if current == 0 {
        (a, b)
    } else {
        (b, a)
    }
}

fn stream_windows<E>(
    dev: &dyn Device,
    start: u64,
    end: u64,
    record_max: usize,
    pool: &BufferPool,
    leases: &mut [Arc<Lease>; 2],
    each: &mut impl FnMut(Item<'_>) -> Result<Flow, E>,
) -> Result<(), E>
where
    E: From<StreamError>,
{
    assert_eq!(start % BLOCK_BYTES as u64, 0);
    let end = end.min(dev.capacity_bytes()) / BLOCK_BYTES as u64 * BLOCK_BYTES as u64;
    let io_err = |offset, error| StreamError {
        device: dev.path().display().to_string(),
        offset,
        error,
    };
    let mut reader = WindowReader::new(dev, pool).map_err(|e| io_err(start, e))?;

    // Begin reading [pos, pos+len) into `lease`; `wait` finishes it (one
    // window read in flight at a time). The lease is not touched before
    // its read is waited for, which is always before this returns.
    let submit = |reader: &mut WindowReader<'_>,
                  lease: &mut Arc<Lease>,
                  pos: u64|
     -> Result<u32, StreamError> {
        let len = ((end - pos) as usize).min(lease.len()) as u32;
        reader
            .start(dev, exclusive(lease), len, pos)
            .map_err(|e| io_err(pos, e))?;
        Ok(len)
    };
    let wait = |reader: &mut WindowReader<'_>, pos: u64| -> Result<i32, StreamError> {
        reader.wait().map_err(|e| io_err(pos, e))
    };

    let mut pos = start;
    let mut current = 0usize;
    if pos >= end {
        return Ok(());
    }
    let mut want = submit(&mut reader, &mut leases[current], pos)?;
    let mut items: Vec<(u64, Result<RecordHeader, FormatError>)> = Vec::new();
    loop {
        let (window, other) = pair(leases, current);
        // Wait for the window at `pos` in buffer `current`; finish short reads synchronously.
        let mut have = {
            let r = wait(&mut reader, pos)?;
            if r < 0 {
                return Err(io_err(pos, std::io::Error::from_raw_os_error(-r)).into());
            }
            r as usize
        };
        while have < want as usize {
            let got = super::read_at(
                dev,
                &mut exclusive(window).bytes_mut()[have..want as usize],
                pos + have as u64,
            )
            .map_err(|e| match e {
                super::MediaError::Io { offset, error, .. } => io_err(offset, error),
                other => io_err(pos, std::io::Error::other(other.to_string())),
            })?;
            if got == 0 {
                break;
            }
            have += got;
        }
        let buf = window.bytes();
        // Parse: every record complete in memory; a bad block advances by
        // one block.
        items.clear();
        let mut offset = 0usize;
        let limit = have;
        while offset < limit && offset + HEADER_BYTES <= have {
            match RecordHeader::decode(&buf[offset..offset + HEADER_BYTES]) {
                Ok(h) => {
                    let media = h.media_bytes() as usize;
                    // Larger than any record of the set, or running past
                    // the end of the stream: bad.
                    if media > record_max || pos + (offset + media) as u64 > end {
                        items.push((pos + offset as u64, Err(too_long(&h))));
                        offset += BLOCK_BYTES;
                        continue;
                    }
                    if offset + media > have {
                        break;
                    }
                    items.push((pos + offset as u64, Ok(h)));
                    offset += media;
                }
                Err(e) => {
                    items.push((pos + offset as u64, Err(e)));
                    offset += BLOCK_BYTES;
                }
            }
        }
        if offset == 0 {
            // Nothing more on the device (or a read that cannot make progress).
            break;
        }
        let next = pos + offset as u64;
        let more = next < end && have > 0;
        if more {
            // The other buffer held the previous window, handed out already.
            each(Item::Reclaim)?;
            want = submit(&mut reader, other, next)?;
        }
        let mut stop = false;
        let mut outcome = Ok(());
        for (position, parsed) in items.drain(..) {
            let flow = match parsed {
                Ok(header) => {
                    let start = (position - pos) as usize;
                    let at = start + HEADER_BYTES;
                    let end = at + header.stored_len() as usize;
                    let padded = start + header.media_bytes() as usize;
                    each(Item::Record {
                        position,
                        header,
                        header_block: &buf[start..at],
                        payload: &buf[at..end],
                        source: Payload::Window {
                            window: window.clone(),
                            range: at..end,
                        },
                        crc_checked: false,
                        padding: &buf[end..padded],
                    })
                }
                Err(error) => each(Item::Bad { position, error }),
            };
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => stop = true,
                Err(e) => {
                    outcome = Err(e);
                    stop = true;
                }
            }
            if stop {
                break;
            }
        }
        if stop || !more {
            if more {
                // Reap the read in flight before its buffer can be freed.
                wait(&mut reader, next)?;
            }
            return outcome;
        }
        pos = next;
        current = 1 - current;
    }
    Ok(())
}

/// The one window read in flight of `stream_windows`: on a descriptor,
/// the window cut in `PIECE_BYTES` reads that are in flight together (the
/// queue depth fio gets with bs=1M), into the window's registered buffer
/// (`ReadFixed`: no page pinning per read) where the kernel lets pbio
/// register it; on a pipelined device (NBD) read requests of its
/// transport on the same ring, cut alike.
enum WindowReader<'d> {
    Fd {
        ring: Uring,
        /// Whether the windows are the ring's registered buffers.
        fixed: bool,
        /// Bytes asked for by each piece of the read in flight (index:
        /// its `user_data`), and what each gave (bytes or -errno).
        asked: Vec<u32>,
        got: Vec<Option<i32>>,
    },
    Pipelined {
        ring: Uring,
        transport: Box<dyn Transport + 'd>,
        len: u32,
    },
}

/// Largest read request of a window (one piece).
const PIECE_BYTES: u32 = 1 << 20;

/// Pieces of one window read: the window cut in `PIECE_BYTES`.
fn pieces_max(window_bytes: usize) -> usize {
    window_bytes.div_ceil(PIECE_BYTES as usize)
}

impl<'d> WindowReader<'d> {
    fn new(dev: &'d dyn Device, pool: &BufferPool) -> std::io::Result<WindowReader<'d>> {
        Ok(match dev.data_path() {
            DataPath::Pipelined(transport) => WindowReader::Pipelined {
                ring: Uring::new(8)?,
                transport,
                len: 0,
            },
            DataPath::Descriptor | DataPath::Mapped(_) => {
                let pieces = pieces_max(pool.slot_bytes());
                let mut ring = Uring::new(pieces as u32)?;
                // Registering pins the windows once (charged to
                // RLIMIT_MEMLOCK); refused, each read pins its pages.
                let fixed = ring.register_buffers(pool).is_ok();
                WindowReader::Fd {
                    ring,
                    fixed,
                    asked: Vec::with_capacity(pieces),
                    got: Vec::with_capacity(pieces),
                }
            }
        })
    }

    /// Begin reading `len` bytes at `pos` into `lease`, which the caller
    /// leaves untouched until `wait` returned.
    fn start(
        &mut self,
        dev: &dyn Device,
        lease: &mut Lease,
        len: u32,
        pos: u64,
    ) -> std::io::Result<()> {
        match self {
            WindowReader::Fd {
                ring,
                fixed,
                asked,
                got,
            } => {
                asked.clear();
                got.clear();
                let mut at = 0u32;
                while at < len {
                    let n = PIECE_BYTES.min(len - at);
                    let range = at as usize..(at + n) as usize;
                    let offset = pos + u64::from(at);
                    let sqe = if *fixed {
                        io::read_fixed(dev.fd(), lease, range, offset)
                    } else {
                        io::read_at(dev.fd(), lease, range, offset)
                    };
                    ring.push(sqe.user_data(asked.len() as u64))?;
                    asked.push(n);
                    got.push(None);
                    at += n;
                }
                ring.submit()?;
            }
            WindowReader::Pipelined {
                transport, len: l, ..
            } => {
                let piece = PIECE_BYTES.min(transport.request_bytes_max());
                let mut at = 0u32;
                let mut handle = 0u64;
                while at < len {
                    let n = piece.min(len - at);
                    let range = at as usize..(at + n) as usize;
                    transport.submit_read_into(handle, lease, range, pos + at as u64);
                    at += n;
                    handle += 1;
                }
                *l = len;
            }
        }
        Ok(())
    }

    /// The result of the read begun: the bytes read from its start on, up
    /// to the first piece that came back short or failed (the caller reads
    /// on from there), or -errno when the first piece failed.
    fn wait(&mut self) -> std::io::Result<i32> {
        match self {
            WindowReader::Fd {
                ring, asked, got, ..
            } => {
                let mut done = Vec::with_capacity(asked.len());
                while got.iter().any(Option::is_none) {
                    ring.turn(&mut done)?;
                    for &(piece, result) in &done {
                        // user_data is a piece index this reader pushed.
                        got[piece as usize] = Some(result);
                    }
                }
                let mut have = 0i32;
                for (&n, &r) in asked.iter().zip(got.iter()) {
                    let r = r.expect("every piece was waited for");
                    if r < 0 {
                        return Ok(if have == 0 { r } else { have });
                    }
                    // The kernel never reads more than was asked.
                    have += r.min(n as i32);
                    if (r as u32) < n {
                        break;
                    }
                }
                Ok(have)
            }
            WindowReader::Pipelined {
                ring,
                transport,
                len,
            } => {
                let mut done = Vec::new();
                let mut failure = None;
                let mut result = *len as i32;
                while transport.outstanding() > 0 && failure.is_none()
                    || transport.ops_in_flight() > 0
                {
                    if let Some(e) = transport.turn(ring, &mut done)? {
                        failure.get_or_insert(e);
                    }
                    for (_, r) in done.drain(..) {
                        if r < 0 && result >= 0 {
                            result = r;
                        }
                    }
                }
                match failure {
                    Some(e) => Err(std::io::Error::other(e)),
                    None => Ok(result),
                }
            }
        }
    }
}

/// The memory-mapped side of `stream`: records are slices of the mapping
/// (`media`, borrowed from `dev`), parsed as `stream_windows` parses a
/// window; nothing is read or copied.
fn stream_mapped<E>(
    dev: &dyn Device,
    media: &[u8],
    start: u64,
    end: u64,
    record_max: usize,
    each: &mut impl FnMut(Item<'_>) -> Result<Flow, E>,
) -> Result<(), E>
where
    E: From<StreamError>,
{
    assert_eq!(start % BLOCK_BYTES as u64, 0);
    let end = end.min(dev.capacity_bytes()).min(media.len() as u64) / BLOCK_BYTES as u64
        * BLOCK_BYTES as u64;
    if start >= end {
        return Ok(());
    }
    let media = &media[..end as usize];
    let mut pos = start as usize;
    let end = end as usize;
    while pos + HEADER_BYTES <= end {
        let item = match RecordHeader::decode(&media[pos..pos + HEADER_BYTES]) {
            Ok(h)
                if (h.media_bytes() as usize) > record_max
                    || pos + h.media_bytes() as usize > end =>
            {
                (
                    BLOCK_BYTES,
                    Item::Bad {
                        position: pos as u64,
                        error: too_long(&h),
                    },
                )
            }
            Ok(header) => {
                let at = pos + HEADER_BYTES;
                let payload_end = at + header.stored_len() as usize;
                let padded = pos + header.media_bytes() as usize;
                (
                    header.media_bytes() as usize,
                    Item::Record {
                        position: pos as u64,
                        header,
                        header_block: &media[pos..at],
                        payload: &media[at..payload_end],
                        source: Payload::Mapped(&media[at..payload_end]),
                        crc_checked: false,
                        padding: &media[payload_end..padded],
                    },
                )
            }
            Err(error) => (
                BLOCK_BYTES,
                Item::Bad {
                    position: pos as u64,
                    error,
                },
            ),
        };
        pos += item.0;
        if each(item.1)? == Flow::Stop {
            break;
        }
    }
    Ok(())
}

/// What reading one tape block gave.
enum Block {
    Data(usize),
    Filemark,
    /// The block could not be read whole (larger than the buffer).
    TooLarge,
    /// The end of recorded data.
    EndOfData,
}

/// The tape side of `stream`: objects `start..end` (logical object
/// numbers; `end = u64::MAX`: to the end of recorded data), one block per
/// read into the two `leases` (owned by the caller, so that they outlive
/// the last `Reclaim`).
fn stream_sequential<E>(
    dev: &dyn Device,
    start: u64,
    end: u64,
    read_bytes: usize,
    leases: &mut [Arc<Lease>; 2],
    each: &mut impl FnMut(Item<'_>) -> Result<Flow, E>,
) -> Result<(), E>
where
    E: From<StreamError>,
{
    let io_err = |offset, error| StreamError {
        device: dev.path().display().to_string(),
        offset,
        error,
    };
    debug_assert!(read_bytes <= leases[0].len());
    let mut ring = Uring::new(2).map_err(|e| io_err(start, e))?;
    let tape = |op, position| dev.tape_op(op).map_err(|e| io_err(position, e));
    tape(TapeOp::Rewind, 0)?;
    if start > 0 {
        tape(TapeOp::ForwardBlocks(start as u32), 0)?;
    }

    // Begin reading the block at `position` into `lease`, asking `ask`
    // bytes: submitted, or already answered by the device. Every read
    // begun is completed (`complete`) before its lease is touched again
    // or dropped.
    let begin = |ring: &mut Uring, lease: &mut Arc<Lease>, position: u64, ask: usize| match dev
        .before_block_read(ask as u32)
    {
        BlockIo::Done { result } => Ok(Some(result)),
        BlockIo::Submit { sqe_offset, bytes } => {
            let entry = io::read_at(dev.fd(), exclusive(lease), 0..bytes as usize, sqe_offset);
            ring.push(entry).map_err(|e| io_err(position, e))?;
            ring.submit().map_err(|e| io_err(position, e))?;
            Ok(None)
        }
    };
    // Finish the read begun: its result as the device reports it.
    let complete = |ring: &mut Uring, begun: Option<i32>, position: u64| {
        if let Some(result) = begun {
            return Ok(result);
        }
        let mut done = Vec::new();
        let result = loop {
            ring.turn(&mut done).map_err(|e| io_err(position, e))?;
            if let Some(&(_, result)) = done.first() {
                break result;
            }
        };
        let done = dev.after_block_read(result);
        if let Some(at) = done.complete_at {
            let now = std::time::Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        }
        Ok(done.result)
    };
    let classify = |result: i32, filemarks: u32, position: u64| match result {
        n if n > 0 => Ok(Block::Data(n as usize)),
        0 if filemarks > 0 => Ok(Block::EndOfData),
        0 => Ok(Block::Filemark),
        e if -e == libc::ENOMEM => Ok(Block::TooLarge),
        // st: reading on after the end of data is an error.
        e if -e == libc::EIO && filemarks > 0 => Ok(Block::EndOfData),
        e => Err(io_err(position, std::io::Error::from_raw_os_error(-e))),
    };

    let mut position = start;
    let mut current = 0usize;
    let mut filemarks = 0u32;
    if position >= end {
        return Ok(());
    }
    let mut begun = begin(&mut ring, &mut leases[current], position, read_bytes)?;
    loop {
        let mut result = complete(&mut ring, begun, position)?;
        // A block shorter than asked that is not a whole record: read it
        // again asking exactly its length (a transport that lost the tail
        // of the short transfer: tape::record_checks). Nothing is in
        // flight here. One that is: its CRC is not computed again.
        let mut checked = false;
        if result > 0 && (result as usize) < read_bytes {
            checked = super::tape::record_checks(&leases[current].bytes()[..result as usize]);
            if !checked {
                tape(TapeOp::BackBlocks(1), position)?;
                let again = begin(&mut ring, &mut leases[current], position, result as usize)?;
                result = complete(&mut ring, again, position)?;
            }
        }
        let block = classify(result, filemarks, position)?;
        if matches!(block, Block::EndOfData) {
            return Ok(());
        }
        filemarks = match block {
            Block::Filemark => filemarks + 1,
            _ => 0,
        };
        let next = position + 1;
        let more = next < end;
        // Read ahead while this block is handed over, into the buffer of
        // the block handed over before.
        let ahead = if more {
            each(Item::Reclaim)?;
            Some(begin(
                &mut ring,
                &mut leases[1 - current],
                next,
                read_bytes,
            )?)
        } else {
            None
        };
        let buf = leases[current].bytes();
        let flow = match block {
            Block::Filemark | Block::EndOfData => Ok(Flow::Continue),
            Block::TooLarge => each(Item::Bad {
                position,
                error: FormatError::Field {
                    field: "tape block length",
                    value: read_bytes as u64 + 1,
                },
            }),
            Block::Data(n) => match RecordHeader::decode(&buf[..n]) {
                Ok(header) if header.media_bytes() as usize == n => {
                    let at = HEADER_BYTES;
                    let payload_end = at + header.stored_len() as usize;
                    each(Item::Record {
                        position,
                        header,
                        header_block: &buf[..at],
                        payload: &buf[at..payload_end],
                        source: Payload::Window {
                            window: leases[current].clone(),
                            range: at..payload_end,
                        },
                        padding: &buf[payload_end..n],
                        // An empty payload is not checked there.
                        crc_checked: checked && header.stored_len() > 0,
                    })
                }
                Ok(_) => each(Item::Bad {
                    position,
                    error: FormatError::Field {
                        field: "tape block length",
                        value: n as u64,
                    },
                }),
                Err(error) => each(Item::Bad { position, error }),
            },
        };
        let stop = !matches!(flow, Ok(Flow::Continue));
        if stop || !more {
            if let Some(ahead) = ahead {
                // Reap the read in flight before its buffer can be freed.
                complete(&mut ring, ahead, next)?;
            }
            return flow.map(|_| ());
        }
        begun = ahead.expect("a read was begun when there is more");
        position = next;
        current = 1 - current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records longer than half the read request on a drive that loses
    /// the tail of a short transfer (tgt's, item 7 of hw-tests/README.md):
    /// every record reaches the consumer whole, each read again asking
    /// exactly its length; the short ones, which arrive whole, are not.
    #[test]
    fn records_whose_tail_a_short_read_lost_are_read_again() {
        use crate::format::SetId;
        let dir = tempfile::tempdir().unwrap();
        let tape = super::super::tape::tests::scratch_tape(dir.path()).losing_residual_tails();
        // Requests of a header and 64 KiB; records of a header and 32 KiB
        // (more than half the request), and a last short one.
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13 + i / 509) as u8).collect();
        let mut pool = BufferPool::new(1, HEADER_BYTES + (64 << 10));
        let mut written = 0u32;
        super::super::catalog::each_catalog_record(
            pool.slot_mut(0),
            (SetId([0x6c; 16]), 0, 1),
            &data,
            32 << 10,
            |record| {
                written += 1;
                super::super::tape::write_tape_block(&tape, record, written as u64)
            },
        )
        .unwrap();
        let (mut whole, mut bad, mut reads_again) = (0u32, 0u32, Vec::new());
        let mut got = Vec::new();
        stream(&tape, 0, u64::MAX, 64 << 10, |item| {
            match item {
                Item::Record {
                    header, payload, ..
                } => {
                    if crate::format::crc32c(payload) == header.payload_crc {
                        whole += 1;
                        got.extend_from_slice(payload);
                    } else {
                        reads_again.push(header.file_offset);
                    }
                }
                Item::Bad { .. } => bad += 1,
                Item::Reclaim => {}
            }
            Ok::<_, StreamError>(Flow::Continue)
        })
        .unwrap();
        assert_eq!((whole, bad), (written, 0), "damaged at {reads_again:?}");
        assert_eq!(got, data);
    }

    /// A crafted short block (a payload byte changed after its CRC was
    /// taken) never checks: it is read again once, exactly, and then handed
    /// on as it is (the consumer reports its CRC), and the blocks after it
    /// still arrive whole and in order, on a drive that loses short
    /// transfers' tails and on one that does not.
    #[test]
    fn a_short_block_that_never_checks_is_read_again_once_and_handed_on() {
        use crate::format::SetId;
        for losing in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let tape = super::super::tape::tests::scratch_tape(dir.path());
            let tape = if losing {
                tape.losing_residual_tails()
            } else {
                tape
            };
            let data: Vec<u8> = (0..100_000u32).map(|i| (i * 29 + i / 127) as u8).collect();
            let mut pool = BufferPool::new(1, HEADER_BYTES + (64 << 10));
            let mut written = 0u32;
            super::super::catalog::each_catalog_record(
                pool.slot_mut(0),
                (SetId([0x6d; 16]), 0, 1),
                &data,
                32 << 10,
                |record| {
                    written += 1;
                    let mut block = record.to_vec();
                    if written == 2 {
                        block[HEADER_BYTES + 1000] ^= 0x40;
                    }
                    super::super::tape::write_tape_block(&tape, &block, written as u64)
                },
            )
            .unwrap();
            let mut offsets = Vec::new();
            let mut damaged = Vec::new();
            let mut got = Vec::new();
            let mut checked = Vec::new();
            stream(&tape, 0, u64::MAX, 64 << 10, |item| {
                if let Item::Record {
                    header,
                    payload,
                    crc_checked,
                    ..
                } = item
                {
                    offsets.push(header.file_offset);
                    let crc_ok = crate::format::crc32c(payload) == header.payload_crc;
                    // Said checked only when it checks: the consumer
                    // skips its CRC then.
                    assert!(!crc_checked || crc_ok, "losing {losing}: {header:?}");
                    if crc_checked {
                        checked.push(header.file_offset);
                    }
                    if crc_ok {
                        got.extend_from_slice(payload);
                    } else {
                        damaged.push(header.file_offset);
                    }
                }
                Ok::<_, StreamError>(Flow::Continue)
            })
            .unwrap();
            assert_eq!(
                offsets.len() as u32,
                written,
                "losing {losing}: {offsets:?}"
            );
            assert_eq!(damaged, vec![32 << 10], "losing {losing}");
            // Every block is shorter than the request: each one with a
            // payload that arrived whole was checked by the reader, and
            // says so (a drive that loses tails: those read again exactly
            // are not short, the last data record, under half the request,
            // is; the End record has no payload to check).
            let whole: Vec<u64> = if losing {
                vec![96 << 10]
            } else {
                vec![0, 64 << 10, 96 << 10]
            };
            assert_eq!(checked, whole, "losing {losing}");
            let mut want = data.clone();
            want.drain(32 << 10..64 << 10);
            assert_eq!(got, want, "losing {losing}");
        }
    }

    #[test]
    fn all_zero_finds_any_nonzero_byte() {
        assert!(all_zero(&[]));
        let mut bytes = vec![0u8; BLOCK_BYTES - 1];
        assert!(all_zero(&bytes));
        for at in [0, 1, 31, 32, 1000, BLOCK_BYTES - 2] {
            bytes[at] = 0x80;
            assert!(!all_zero(&bytes), "byte {at}");
            bytes[at] = 0;
        }
    }

    #[test]
    fn a_window_comes_back_once_every_payload_is_let_go() {
        let pool = BufferPool::new(2, 4096);
        let [mut a, _b] = two_leases(&pool);
        exclusive(&mut a).bytes_mut()[..4].copy_from_slice(b"abcd");
        let payload = Payload::Window {
            window: a.clone(),
            range: 1..3,
        };
        assert_eq!(payload.bytes(), b"bc");
        drop(payload);
        assert_eq!(&exclusive(&mut a).bytes()[..4], b"abcd");
    }

    #[test]
    #[should_panic(expected = "a stream window is still held")]
    fn a_window_held_past_reclaim_is_never_read_into() {
        let pool = BufferPool::new(2, 4096);
        let [mut a, _b] = two_leases(&pool);
        let _kept = Payload::Window {
            window: a.clone(),
            range: 0..1,
        };
        exclusive(&mut a);
    }
}
