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
//! A memory-mapped device (pmem) is not read at all: its records are
//! handed out as slices of the mapping itself, without a copy.
//!
//! A sequential device (tape) is read one block at a time, each block one
//! record, through the same kind of ring: while one block is handed to the
//! caller the next is being read. Positions there are logical object
//! numbers (blocks and filemarks from the beginning of the tape); a
//! filemark is passed over, two in a row (or the end of recorded data)
//! end the stream.

use io_uring::{opcode, types, IoUring};

use crate::device::nbd::{pipe::Pipe, proto};
use crate::device::{Access, BlockIo, Device, TapeOp};
use crate::format::{FormatError, RecordHeader, BLOCK_BYTES, HEADER_BYTES};
use crate::io::buffers::BufferPool;

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
        /// The bytes between the payload's end and the next block boundary:
        /// zero on a good record (not covered by the payload CRC).
        padding: &'a [u8],
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
        let block_max = dev
            .block_bytes_max()
            .map_or(record_max, |m| (m as usize).min(record_max))
            .max(HEADER_BYTES);
        let mut pool = BufferPool::new(2, block_max.div_ceil(BLOCK_BYTES) * BLOCK_BYTES);
        let streamed = stream_sequential(dev, start, end, &mut pool, &mut each);
        let reclaimed = each(Item::Reclaim);
        return streamed.and(reclaimed.map(|_| ()));
    }
    if let Some(mapping) = dev.mapping() {
        let streamed = stream_mapped(dev, mapping, start, end, record_max, &mut each);
        let reclaimed = each(Item::Reclaim);
        return streamed.and(reclaimed.map(|_| ()));
    }
    let window = (WINDOW_BYTES / record_max).max(1) * record_max;
    // Owned here, so that it outlives the caller's use of the items: the
    // last Reclaim comes after the windows are done, whatever ended them.
    let mut pool = BufferPool::new(2, window);
    let streamed = stream_windows(dev, start, end, record_max, &mut pool, &mut each);
    let reclaimed = each(Item::Reclaim);
    streamed.and(reclaimed.map(|_| ()))
}

fn stream_windows<E>(
    dev: &dyn Device,
    start: u64,
    end: u64,
    record_max: usize,
    pool: &mut BufferPool,
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
    let mut reader = WindowReader::new(dev).map_err(|e| io_err(start, e))?;

    // Begin reading [pos, pos+len) into buffer b; `wait` finishes it (one
    // window read in flight at a time).
    let submit = |reader: &mut WindowReader<'_>,
                  pool: &BufferPool,
                  b: usize,
                  pos: u64|
     -> Result<u32, StreamError> {
        let len = ((end - pos) as usize).min(pool.slot_bytes()) as u32;
        // The buffer slot b belongs to `pool`, which outlives the read: it
        // is always waited for before slot b is touched or this returns.
        reader
            .start(dev, pool.ptr(b), len, pos)
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
    let mut want = submit(&mut reader, pool, current, pos)?;
    let mut items: Vec<(u64, Result<RecordHeader, FormatError>)> = Vec::new();
    loop {
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
                &mut pool.slot_mut(current)[have..want as usize],
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
        let buf = pool.slot(current);
        // Parse: every record complete in memory; a bad block advances by
        // one block.
        items.clear();
        let mut offset = 0usize;
        let limit = have;
        while offset < limit && offset + HEADER_BYTES <= have {
            match RecordHeader::decode(&buf[offset..offset + HEADER_BYTES]) {
                Ok(h) => {
                    let media = h.media_bytes() as usize;
                    if media > record_max {
                        items.push((
                            pos + offset as u64,
                            Err(FormatError::Field {
                                field: "payload_bytes",
                                value: h.payload_bytes as u64,
                            }),
                        ));
                        offset += BLOCK_BYTES;
                        continue;
                    }
                    if offset + media > have {
                        if pos + (offset + media) as u64 > end {
                            // A record running past the end of the stream: treat as bad.
                            items.push((
                                pos + offset as u64,
                                Err(FormatError::Field {
                                    field: "payload_bytes",
                                    value: h.payload_bytes as u64,
                                }),
                            ));
                            offset += BLOCK_BYTES;
                            continue;
                        }
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
            want = submit(&mut reader, pool, 1 - current, next)?;
        }
        let mut stop = false;
        let mut outcome = Ok(());
        for (position, parsed) in items.drain(..) {
            let flow = match parsed {
                Ok(header) => {
                    let start = (position - pos) as usize;
                    let at = start + HEADER_BYTES;
                    let end = at + header.payload_bytes as usize;
                    let padded = start + header.media_bytes() as usize;
                    each(Item::Record {
                        position,
                        header,
                        header_block: &buf[start..at],
                        payload: &buf[at..end],
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

/// The one window read in flight of `stream_windows`: a `Read` on the
/// device's fd, or on a network device (NBD) read requests through a pipe
/// on the same ring, the window cut in pieces that are in flight together.
enum WindowReader<'d> {
    Fd(IoUring),
    Nbd {
        ring: IoUring,
        pipe: Box<Pipe<'d>>,
        len: u32,
    },
}

/// Largest NBD read request of a window.
const NBD_PIECE_BYTES: u32 = 1 << 20;

impl<'d> WindowReader<'d> {
    fn new(dev: &'d dyn Device) -> std::io::Result<WindowReader<'d>> {
        Ok(match dev.nbd() {
            None => WindowReader::Fd(IoUring::new(2)?),
            Some(nbd) => WindowReader::Nbd {
                ring: IoUring::new(8)?,
                pipe: Box::new(Pipe::new(nbd)),
                len: 0,
            },
        })
    }

    /// `ptr` must stay valid for `len` bytes until `wait` returned.
    fn start(&mut self, dev: &dyn Device, ptr: *mut u8, len: u32, pos: u64) -> std::io::Result<()> {
        match self {
            WindowReader::Fd(ring) => {
                let entry = opcode::Read::new(types::Fd(dev.fd()), ptr, len)
                    .offset(pos)
                    .build()
                    .user_data(0);
                // SAFETY: the caller keeps the buffer until `wait`, and the
                // device fd stays open.
                unsafe { ring.submission().push(&entry) }.expect("ring has room for one read");
                ring.submit()?;
            }
            WindowReader::Nbd { pipe, len: l, .. } => {
                let piece =
                    NBD_PIECE_BYTES.min(dev.nbd().map_or(u32::MAX, |n| n.request_bytes_max()));
                let mut at = 0u32;
                let mut handle = 0u64;
                while at < len {
                    let n = piece.min(len - at);
                    // SAFETY (pointer arithmetic): at + n <= len.
                    let p = unsafe { ptr.add(at as usize) };
                    pipe.submit(handle, proto::CMD_READ, p, n, pos + at as u64);
                    at += n;
                    handle += 1;
                }
                *l = len;
            }
        }
        Ok(())
    }

    /// The result of the read begun: bytes, or -errno.
    fn wait(&mut self) -> std::io::Result<i32> {
        match self {
            WindowReader::Fd(ring) => loop {
                match ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) => return Err(e),
                }
                if let Some(c) = ring.completion().next() {
                    return Ok(c.result());
                }
            },
            WindowReader::Nbd { ring, pipe, len } => {
                let mut done = Vec::new();
                let mut failure: Option<String> = None;
                let mut result = *len as i32;
                while pipe.outstanding() > 0 && failure.is_none() || pipe.ops_in_flight() > 0 {
                    if let Some(e) = pipe.turn(ring, &mut done)? {
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
/// (which lives as long as `dev`), parsed as `stream_windows` parses a
/// window; nothing is read or copied.
fn stream_mapped<E>(
    dev: &dyn Device,
    mapping: crate::device::Mapping,
    start: u64,
    end: u64,
    record_max: usize,
    each: &mut impl FnMut(Item<'_>) -> Result<Flow, E>,
) -> Result<(), E>
where
    E: From<StreamError>,
{
    assert_eq!(start % BLOCK_BYTES as u64, 0);
    let end = end.min(dev.capacity_bytes()).min(mapping.len as u64) / BLOCK_BYTES as u64
        * BLOCK_BYTES as u64;
    if start >= end {
        return Ok(());
    }
    // SAFETY: [0, end) is within the device's mapping, which stays mapped
    // while `dev` is borrowed (longer than this call and its items); no
    // one writes to it while it is being read (the device is open for reading).
    let media: &[u8] = unsafe { std::slice::from_raw_parts(mapping.base, end as usize) };
    let mut pos = start as usize;
    let end = end as usize;
    let bad = |h: &RecordHeader| FormatError::Field {
        field: "payload_bytes",
        value: h.payload_bytes as u64,
    };
    while pos + HEADER_BYTES <= end {
        let item = match RecordHeader::decode(&media[pos..pos + HEADER_BYTES]) {
            Ok(h)
                if (h.media_bytes() as usize) > record_max
                    || pos + h.media_bytes() as usize > end =>
            {
                let e = bad(&h);
                (
                    BLOCK_BYTES,
                    Item::Bad {
                        position: pos as u64,
                        error: e,
                    },
                )
            }
            Ok(header) => {
                let at = pos + HEADER_BYTES;
                let payload_end = at + header.payload_bytes as usize;
                let padded = pos + header.media_bytes() as usize;
                (
                    header.media_bytes() as usize,
                    Item::Record {
                        position: pos as u64,
                        header,
                        header_block: &media[pos..at],
                        payload: &media[at..payload_end],
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
/// read into the two slots of `pool` (owned by the caller, so that it
/// outlives the last `Reclaim`).
fn stream_sequential<E>(
    dev: &dyn Device,
    start: u64,
    end: u64,
    pool: &mut BufferPool,
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
    let read_bytes = pool.slot_bytes();
    let pool = &*pool;
    let mut ring = IoUring::new(2).map_err(|e| io_err(start, e))?;
    let tape = |op, position| dev.tape_op(op).map_err(|e| io_err(position, e));
    tape(TapeOp::Rewind, 0)?;
    if start > 0 {
        tape(TapeOp::ForwardBlocks(start as u32), 0)?;
    }

    // Begin reading the block at `position` into buffer `b`: submitted,
    // or already answered by the device.
    let begin = |ring: &mut IoUring, pool: &BufferPool, b: usize, position: u64| {
        match dev.before_block_read(pool.slot_bytes() as u32) {
            BlockIo::Done { result } => Ok(Some(result)),
            BlockIo::Submit { sqe_offset, bytes } => {
                let entry = opcode::Read::new(types::Fd(dev.fd()), pool.ptr(b), bytes)
                    .offset(sqe_offset)
                    .build()
                    .user_data(b as u64);
                // SAFETY: slot b of `pool` outlives the read: every read
                // begun is completed (`complete`) before its buffer is
                // touched again or the pool dropped; the fd stays open.
                unsafe { ring.submission().push(&entry) }.expect("ring has room for one read");
                ring.submit().map_err(|e| io_err(position, e))?;
                Ok(None)
            }
        }
    };
    // Finish the read begun: its result as the device reports it.
    let complete = |ring: &mut IoUring, begun: Option<i32>, position: u64| {
        if let Some(result) = begun {
            return Ok(result);
        }
        let result = loop {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(io_err(position, e)),
            }
            if let Some(c) = ring.completion().next() {
                break c.result();
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
    let mut begun = begin(&mut ring, pool, current, position)?;
    loop {
        let result = complete(&mut ring, begun, position)?;
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
            Some(begin(&mut ring, pool, 1 - current, next)?)
        } else {
            None
        };
        let buf = pool.slot(current);
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
                    let payload_end = at + header.payload_bytes as usize;
                    each(Item::Record {
                        position,
                        header,
                        header_block: &buf[..at],
                        payload: &buf[at..payload_end],
                        padding: &buf[payload_end..n],
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
