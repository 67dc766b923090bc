//! NBD requests over an io_uring: the pipelined transmission phase.
//!
//! The pipe is a state machine that lives inside a ring owned by someone
//! else (the backup ring of the device, a restore stream): callers queue
//! requests (`submit`, with a handle of their choosing and a buffer that
//! stays theirs until the request completes), take the SQEs the pipe wants
//! submitted (`sqes`), and hand it every completion whose `user_data`
//! carries `TAG` (`on_cqe`); the pipe reports completed requests as
//! `(handle, result)`, result being the request's length or `-errno`, as a
//! read or write SQE would have.
//!
//! On the wire: one `SendMsg` in flight at a time, gathering the queued
//! requests (28-byte header, and a write's payload straight from the
//! caller's buffer: no copy), so requests never interleave on the stream;
//! one `Recv` in flight while any request awaits its reply. Replies are
//! parsed out of a small staging buffer; a read's data is received
//! straight into the caller's buffer once its reply head has been parsed
//! (only the bytes that arrived together with the head are copied). Each
//! send and receive carries a linked timeout: no progress for the
//! device's timeout is a lost connection, so a silent server cannot hang
//! pbio.
//!
//! A lost connection shuts the socket down, waits until its own
//! operations are reaped, reconnects (`NbdDevice::reconnect`: bounded
//! attempts) and resends every request without a reply. A protocol breach
//! (bad magic, unknown handle, a chunk outside its request) is fatal at
//! once. Fatal errors are returned by `sqes`/`on_cqe`; the caller then
//! stops submitting, keeps reaping until `ops_in_flight()` is 0, and treats
//! the device as failed.

use std::collections::VecDeque;

use crate::io::{self, Lease, Sqe, Timespec, Uring};

use super::proto::{self, ReplyHead};
use super::NbdDevice;
use crate::device::Device;

/// The connection a pipe runs on: an `NbdDevice`, or in tests and the fuzz
/// target a stand-in that has no socket (`feed` drives the pipe there).
pub trait Link {
    fn fd(&self) -> std::os::fd::RawFd;
    fn timeout(&self) -> std::time::Duration;
    fn structured_replies(&self) -> bool;
    /// End the operations in flight on the connection.
    fn shutdown(&self);
    fn reconnect(&self) -> std::io::Result<()>;
}

impl Link for NbdDevice {
    fn fd(&self) -> std::os::fd::RawFd {
        Device::fd(self)
    }
    fn timeout(&self) -> std::time::Duration {
        NbdDevice::timeout(self)
    }
    fn structured_replies(&self) -> bool {
        NbdDevice::structured_replies(self)
    }
    fn shutdown(&self) {
        NbdDevice::shutdown(self)
    }
    fn reconnect(&self) -> std::io::Result<()> {
        NbdDevice::reconnect(self)
    }
}

/// Set in the `user_data` of every SQE the pipe makes.
pub const TAG: u64 = io::USER_DATA_TRANSPORT;
const OP_SEND: u64 = TAG | 1;
const OP_RECV: u64 = TAG | 2;
const OP_TIMEOUT: u64 = TAG | 3;

/// Most requests gathered into one send, and most payload bytes.
const GATHER_REQUESTS_MAX: usize = 64;
const GATHER_BYTES_MAX: usize = 8 << 20;
const STAGE_BYTES: usize = 64 << 10;
/// Reconnect episodes a pipe may go through before the device counts as failed.
const RECONNECTS_MAX: u32 = 5;

/// Handles are caller-chosen indices below this.
pub const HANDLES_MAX: u64 = 1 << 16;

struct Req {
    command: u16,
    offset: u64,
    len: u32,
    buf: *mut u8,
    header: [u8; proto::REQUEST_BYTES],
    /// Part of a send that was submitted on the current connection.
    sent: bool,
    /// Submission order (resends keep it).
    order: u64,
    /// Structured read replies: bytes covered so far; an error chunk seen.
    covered: u64,
    error: Option<i32>,
}

/// What the receive side expects next.
#[derive(Clone, Copy, Debug)]
enum Rx {
    Head,
    /// `left` bytes of read data for `handle` go to its buffer at `at`;
    /// after them the request is done (`done`) or more chunks follow.
    Data {
        handle: u64,
        at: usize,
        left: usize,
        done: bool,
    },
    /// A data chunk's 8-byte offset, then `len` bytes of data.
    DataOffset {
        handle: u64,
        flags: u16,
        len: usize,
    },
    /// A structured chunk's payload of `len` bytes (not read data), whole in the stage.
    Chunk {
        handle: u64,
        flags: u16,
        kind: u16,
        len: usize,
    },
}

pub struct Pipe<'d> {
    dev: &'d dyn Link,
    structured: bool,
    timeout: Box<Timespec>,
    reqs: Vec<Option<Box<Req>>>,
    queue: VecDeque<u64>,
    outstanding: usize,
    order: u64,
    // The send in flight.
    iov: Box<[libc::iovec]>,
    iov_start: usize,
    iov_end: usize,
    msg: Box<libc::msghdr>,
    send_busy: bool,
    // The receive side.
    stage: Box<[u8]>,
    lo: usize,
    hi: usize,
    rx: Rx,
    recv_busy: bool,
    /// The receive in flight writes into a request's buffer, not the stage.
    recv_direct: bool,
    ops: usize,
    /// The connection is lost (why); reconnect once nothing is in flight.
    broken: Option<String>,
    fatal: Option<String>,
    episodes: u32,
}

// The raw pointers (caller buffers, iovecs) are only used by the thread
// that owns the pipe and its ring.

impl<'d> Pipe<'d> {
    pub fn new(dev: &'d dyn Link) -> Pipe<'d> {
        let iov = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0
            };
            2 * GATHER_REQUESTS_MAX
        ]
        .into_boxed_slice();
        // SAFETY: an all-zero msghdr is a valid empty one.
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        Pipe {
            dev,
            structured: dev.structured_replies(),
            timeout: Box::new(Timespec::from(dev.timeout())),
            reqs: Vec::new(),
            queue: VecDeque::new(),
            outstanding: 0,
            order: 0,
            iov,
            iov_start: 0,
            iov_end: 0,
            msg: Box::new(msg),
            send_busy: false,
            stage: vec![0u8; STAGE_BYTES].into_boxed_slice(),
            lo: 0,
            hi: 0,
            rx: Rx::Head,
            recv_busy: false,
            recv_direct: false,
            ops: 0,
            broken: None,
            fatal: None,
            episodes: 0,
        }
    }

    /// Queue a write request of the first `len` bytes of `lease`, which
    /// the caller keeps, untouched, until the request completes.
    pub fn submit_write(&mut self, handle: u64, lease: &Lease, len: u32, offset: u64) {
        assert!(len as usize <= lease.len());
        self.submit(handle, proto::CMD_WRITE, lease.ptr_at(0), len, offset)
    }

    /// Queue a read request into the first `len` bytes of `lease`, which
    /// the caller keeps, untouched, until the request completes.
    pub fn submit_read(&mut self, handle: u64, lease: &mut Lease, len: u32, offset: u64) {
        assert!(len as usize <= lease.len());
        self.submit(handle, proto::CMD_READ, lease.ptr_at(0), len, offset)
    }

    /// Queue a request. `buf` (`len` bytes; null for a flush) must stay
    /// valid and untouched by the caller until the request completes.
    pub fn submit(&mut self, handle: u64, command: u16, buf: *mut u8, len: u32, offset: u64) {
        assert!(handle < HANDLES_MAX, "nbd pipe handle {handle} too large");
        let h = handle as usize;
        if self.reqs.len() <= h {
            self.reqs.resize_with(h + 1, || None);
        }
        assert!(self.reqs[h].is_none(), "nbd pipe handle {handle} reused");
        let mut header = [0u8; proto::REQUEST_BYTES];
        proto::encode_request(&mut header, 0, command, handle, offset, len);
        self.order += 1;
        self.reqs[h] = Some(Box::new(Req {
            command,
            offset,
            len,
            buf,
            header,
            sent: false,
            order: self.order,
            covered: 0,
            error: None,
        }));
        self.queue.push_back(handle);
        self.outstanding += 1;
    }

    /// Requests without their final reply.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Not failed for good.
    pub fn alive(&self) -> bool {
        self.fatal.is_none()
    }

    /// SQEs of the pipe not yet reaped.
    pub fn ops_in_flight(&self) -> usize {
        self.ops
    }

    /// Stop: shut the connection down so that the pipe's operations end;
    /// nothing more is submitted. Requests without replies stay incomplete.
    pub fn abort(&mut self, why: &str) {
        if self.fatal.is_none() {
            self.fatal = Some(why.to_string());
        }
        self.dev.shutdown();
    }

    fn fail(&mut self, why: String) -> String {
        self.fatal = Some(why.clone());
        self.dev.shutdown();
        why
    }

    fn lose(&mut self, why: String) {
        if self.broken.is_none() {
            self.broken = Some(why);
            self.dev.shutdown();
        }
    }

    /// The SQEs to submit now, in order (a linked pair must stay together).
    pub fn sqes(&mut self, out: &mut Vec<Sqe>) -> Result<(), String> {
        if let Some(f) = &self.fatal {
            return Err(f.clone());
        }
        if let Some(why) = self.broken.clone() {
            if self.ops > 0 {
                return Ok(());
            }
            self.reconnect(why)?;
        }
        let fd = self.dev.fd();
        if !self.send_busy {
            if self.iov_start == self.iov_end {
                self.gather();
            }
            if self.iov_start < self.iov_end {
                self.msg.msg_iov = self.iov[self.iov_start..].as_mut_ptr();
                self.msg.msg_iovlen = self.iov_end - self.iov_start;
                // SAFETY: the msghdr and its iovecs are the pipe's own boxed
                // state, and the payloads they name are requests' buffers
                // (kept by the callers until the requests complete); none
                // changes while the send is in flight (`send_busy`), and the
                // caller reaps the pipe's entries before dropping it.
                let send = unsafe { io::send_msg(fd, &*self.msg as *const libc::msghdr) };
                out.push(send.linked().user_data(OP_SEND));
                out.push(self.link_timeout());
                self.send_busy = true;
                self.ops += 2;
            }
        }
        let awaiting = self.outstanding > self.queue.len();
        if !self.recv_busy && awaiting {
            let (ptr, len, direct) = match self.rx {
                Rx::Data {
                    handle, at, left, ..
                } if self.lo == self.hi => {
                    let req = self.req(handle).expect("data state for a live request");
                    // SAFETY (pointer arithmetic): at + left <= req.len,
                    // checked when the chunk was accepted.
                    let ptr = unsafe { req.buf.add(at) };
                    (ptr, left.min(1 << 30) as u32, true)
                }
                _ => {
                    if self.lo > 0 {
                        self.stage.copy_within(self.lo..self.hi, 0);
                        self.hi -= self.lo;
                        self.lo = 0;
                    }
                    let free = STAGE_BYTES - self.hi;
                    debug_assert!(free > 0, "the stage has room (a head or chunk <= 64 KiB)");
                    // SAFETY (pointer arithmetic): hi < STAGE_BYTES.
                    let ptr = unsafe { self.stage.as_mut_ptr().add(self.hi) };
                    (ptr, free as u32, false)
                }
            };
            self.recv_direct = direct;
            // SAFETY: `ptr..ptr + len` is free room in the pipe's stage or
            // the rest of a read request's buffer (kept by the caller until
            // the request completes); nothing else touches it while the
            // receive is in flight (`recv_busy`).
            let recv = unsafe { io::recv(fd, ptr, len) };
            out.push(recv.linked().user_data(OP_RECV));
            out.push(self.link_timeout());
            self.recv_busy = true;
            self.ops += 2;
        }
        Ok(())
    }

    /// One turn of a pipe that has a ring to itself (restore windows,
    /// the rate probe): submit what it wants, wait for a completion, act
    /// on what came. Completed requests go to `done`. A connection beyond
    /// saving aborts the pipe and is returned (its operations are still
    /// reaped by later turns: call again while `ops_in_flight() > 0`);
    /// `Err` is the ring itself failing.
    pub fn turn_on(
        &mut self,
        ring: &mut Uring,
        done: &mut Vec<(u64, i32)>,
    ) -> std::io::Result<Option<String>> {
        let mut failure = None;
        if self.alive() {
            let mut sqes = Vec::new();
            if let Err(e) = self.sqes(&mut sqes) {
                self.abort(&e);
                failure = Some(e);
            }
            ring.push_all(&mut sqes)?;
        }
        if self.ops == 0 {
            return Ok(failure);
        }
        let mut cqes = Vec::new();
        ring.turn(&mut cqes)?;
        for (user_data, result) in cqes {
            if let Err(e) = self.on_cqe(user_data, result, done) {
                self.abort(&e);
                failure.get_or_insert(e);
            }
        }
        Ok(failure)
    }

    /// `turn_on` for a ring built without `io::Uring` (the media stream,
    /// until it takes one).
    pub fn turn(
        &mut self,
        ring: &mut io_uring::IoUring,
        done: &mut Vec<(u64, i32)>,
    ) -> std::io::Result<Option<String>> {
        let mut failure = None;
        if self.alive() {
            let mut sqes = Vec::new();
            if let Err(e) = self.sqes(&mut sqes) {
                self.abort(&e);
                failure = Some(e);
            }
            for sqe in sqes {
                io::push_unowned(ring, sqe);
            }
        }
        if self.ops == 0 {
            return Ok(failure);
        }
        loop {
            match ring.submit_and_wait(1) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        let cqes: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (user_data, result) in cqes {
            if let Err(e) = self.on_cqe(user_data, result, done) {
                self.abort(&e);
                failure.get_or_insert(e);
            }
        }
        Ok(failure)
    }

    fn link_timeout(&self) -> Sqe {
        // SAFETY: the timespec is boxed in the pipe, which lives until its
        // entries are reaped.
        unsafe { io::link_timeout(&*self.timeout as *const Timespec) }.user_data(OP_TIMEOUT)
    }

    /// Build the next send from the queue: headers and write payloads.
    fn gather(&mut self) {
        self.iov_start = 0;
        self.iov_end = 0;
        let mut bytes = 0usize;
        while let Some(&handle) = self.queue.front() {
            if self.iov_end + 2 > self.iov.len() {
                break;
            }
            let payload = {
                let req = self.reqs[handle as usize].as_ref().expect("queued request");
                if req.command == proto::CMD_WRITE {
                    req.len as usize
                } else {
                    0
                }
            };
            if self.iov_end > 0 && bytes + payload > GATHER_BYTES_MAX {
                break;
            }
            self.queue.pop_front();
            let req = self.reqs[handle as usize].as_mut().expect("queued request");
            req.sent = true;
            self.iov[self.iov_end] = libc::iovec {
                iov_base: req.header.as_mut_ptr().cast(),
                iov_len: proto::REQUEST_BYTES,
            };
            self.iov_end += 1;
            if payload > 0 {
                self.iov[self.iov_end] = libc::iovec {
                    iov_base: req.buf.cast(),
                    iov_len: payload,
                };
                self.iov_end += 1;
            }
            bytes += proto::REQUEST_BYTES + payload;
        }
    }

    fn req(&self, handle: u64) -> Option<&Req> {
        self.reqs.get(handle as usize)?.as_deref()
    }

    /// A completion of one of the pipe's SQEs. Completed requests are
    /// appended to `done`.
    pub fn on_cqe(
        &mut self,
        user_data: u64,
        result: i32,
        done: &mut Vec<(u64, i32)>,
    ) -> Result<(), String> {
        debug_assert!(user_data & TAG != 0);
        self.ops -= 1;
        match user_data {
            OP_TIMEOUT => {}
            OP_SEND => {
                self.send_busy = false;
                if self.broken.is_some() || self.fatal.is_some() {
                    return self.fatal.clone().map_or(Ok(()), Err);
                }
                if result < 0 {
                    let why = self.io_text("send", result);
                    self.lose(why);
                    return Ok(());
                }
                self.advance_send(result as usize);
            }
            OP_RECV => {
                self.recv_busy = false;
                if self.broken.is_some() || self.fatal.is_some() {
                    return self.fatal.clone().map_or(Ok(()), Err);
                }
                if result < 0 {
                    let why = self.io_text("receive", result);
                    self.lose(why);
                    return Ok(());
                }
                if result == 0 {
                    self.lose("the server closed the connection".into());
                    return Ok(());
                }
                let n = result as usize;
                if self.recv_direct {
                    let Rx::Data {
                        handle,
                        at,
                        left,
                        done: last,
                    } = self.rx
                    else {
                        unreachable!("a direct receive is in the data state")
                    };
                    self.rx = Rx::Data {
                        handle,
                        at: at + n,
                        left: left - n,
                        done: last,
                    };
                } else {
                    self.hi += n;
                }
                if let Err(e) = self.parse(done) {
                    return Err(self.fail(format!("protocol error: {e}")));
                }
            }
            other => unreachable!("not a pipe user_data {other:#x}"),
        }
        Ok(())
    }

    fn io_text(&self, op: &str, result: i32) -> String {
        if -result == libc::ECANCELED {
            format!(
                "{op}: no progress for {} s (timeout)",
                self.dev.timeout().as_secs()
            )
        } else {
            format!("{op}: {}", std::io::Error::from_raw_os_error(-result))
        }
    }

    /// Tests and fuzzing: mark every queued request sent (as `sqes` does
    /// when it gathers them, without a send) and hand the pipe `bytes` as
    /// if one receive had returned them: into the stage, or straight into
    /// a read's buffer where `sqes` would have received them there.
    /// Returns the first protocol error.
    pub fn feed(&mut self, mut bytes: &[u8], done: &mut Vec<(u64, i32)>) -> Result<(), String> {
        while let Some(h) = self.queue.pop_front() {
            self.reqs[h as usize].as_mut().expect("queued request").sent = true;
        }
        if let Some(f) = &self.fatal {
            return Err(f.clone());
        }
        while !bytes.is_empty() {
            let n = match self.rx {
                Rx::Data {
                    handle,
                    at,
                    left,
                    done: last,
                } if self.lo == self.hi && left > 0 => {
                    let n = left.min(bytes.len());
                    let req = self.req(handle).expect("data state for a live request");
                    // SAFETY: [at, at + n) is within the request's buffer
                    // (at + left <= len, checked when the chunk was accepted).
                    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), req.buf.add(at), n) };
                    self.rx = Rx::Data {
                        handle,
                        at: at + n,
                        left: left - n,
                        done: last,
                    };
                    n
                }
                _ => {
                    if self.lo > 0 {
                        self.stage.copy_within(self.lo..self.hi, 0);
                        self.hi -= self.lo;
                        self.lo = 0;
                    }
                    let n = (STAGE_BYTES - self.hi).min(bytes.len());
                    self.stage[self.hi..self.hi + n].copy_from_slice(&bytes[..n]);
                    self.hi += n;
                    n
                }
            };
            if n == 0 {
                return Err(
                    self.fail("protocol error: the stage is full and nothing parses".into())
                );
            }
            bytes = &bytes[n..];
            if let Err(e) = self.parse(done) {
                return Err(self.fail(format!("protocol error: {e}")));
            }
        }
        Ok(())
    }

    /// `n` bytes of the send in flight went out.
    fn advance_send(&mut self, mut n: usize) {
        while n > 0 && self.iov_start < self.iov_end {
            let v = &mut self.iov[self.iov_start];
            if n >= v.iov_len {
                n -= v.iov_len;
                self.iov_start += 1;
            } else {
                // SAFETY (pointer arithmetic): n < iov_len.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
                v.iov_len -= n;
                n = 0;
            }
        }
    }

    /// Parse everything the stage holds.
    fn parse(&mut self, done: &mut Vec<(u64, i32)>) -> Result<(), String> {
        loop {
            match self.rx {
                Rx::Data {
                    handle,
                    at,
                    left,
                    done: last,
                } => {
                    if left > 0 {
                        let n = left.min(self.hi - self.lo);
                        if n == 0 {
                            return Ok(());
                        }
                        let req = self.req(handle).expect("data state for a live request");
                        // SAFETY: [at, at + n) is within the request's
                        // buffer (checked when the chunk was accepted), which
                        // the caller keeps until the request completes; the
                        // stage does not overlap it.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                self.stage.as_ptr().add(self.lo),
                                req.buf.add(at),
                                n,
                            )
                        };
                        self.lo += n;
                        self.rx = Rx::Data {
                            handle,
                            at: at + n,
                            left: left - n,
                            done: last,
                        };
                        continue;
                    }
                    self.rx = Rx::Head;
                    if last {
                        self.finish(handle, done)?;
                    }
                }
                Rx::Head => {
                    let have = self.hi - self.lo;
                    if have < 4 {
                        return Ok(());
                    }
                    let b = &self.stage[self.lo..self.hi];
                    let need = proto::reply_head_bytes(u32::from_be_bytes(
                        b[..4].try_into().expect("4 bytes"),
                    ))
                    .map_err(|e| e.to_string())?;
                    if have < need {
                        return Ok(());
                    }
                    let head = proto::decode_reply_head(&b[..need], self.structured)
                        .map_err(|e| e.to_string())?;
                    self.lo += need;
                    self.on_head(head, done)?;
                }
                Rx::DataOffset { handle, flags, len } => {
                    if self.hi - self.lo < 8 {
                        return Ok(());
                    }
                    let o = u64::from_be_bytes(
                        self.stage[self.lo..self.lo + 8]
                            .try_into()
                            .expect("8 bytes"),
                    );
                    self.lo += 8;
                    let req = self.live(handle)?;
                    let at = proto::chunk_within(o, len as u64, req.offset, req.len)
                        .map_err(|e| e.to_string())?;
                    self.reqs[handle as usize].as_mut().expect("live").covered += len as u64;
                    self.rx = Rx::Data {
                        handle,
                        at,
                        left: len,
                        done: flags & proto::REPLY_FLAG_DONE != 0,
                    };
                }
                Rx::Chunk {
                    handle,
                    flags,
                    kind,
                    len,
                } => {
                    if self.hi - self.lo < len {
                        return Ok(());
                    }
                    let data = self.stage[self.lo..self.lo + len].to_vec();
                    self.lo += len;
                    self.rx = Rx::Head;
                    self.on_chunk(handle, flags, kind, &data, done)?;
                }
            }
        }
    }

    fn live(&self, handle: u64) -> Result<&Req, String> {
        match self.req(handle) {
            Some(r) if r.sent => Ok(r),
            _ => Err(format!(
                "reply for handle {handle:#x}, which is not awaiting one"
            )),
        }
    }

    fn on_head(&mut self, head: ReplyHead, done: &mut Vec<(u64, i32)>) -> Result<(), String> {
        match head {
            ReplyHead::Simple { error, handle } => {
                let req = self.live(handle)?;
                if error != 0 {
                    self.complete(handle, -proto::errno_of(error), done);
                } else if req.command == proto::CMD_READ && req.len > 0 {
                    let left = req.len as usize;
                    self.reqs[handle as usize].as_mut().expect("live").covered = left as u64;
                    self.rx = Rx::Data {
                        handle,
                        at: 0,
                        left,
                        done: true,
                    };
                } else {
                    self.finish(handle, done)?;
                }
            }
            ReplyHead::Structured {
                flags,
                kind,
                handle,
                length,
            } => {
                let req = self.live(handle)?;
                if kind == proto::REPLY_TYPE_OFFSET_DATA {
                    if req.command != proto::CMD_READ {
                        return Err(format!(
                            "read data in the reply to a non-read (handle {handle:#x})"
                        ));
                    }
                    if length < 8 {
                        return Err(format!("data chunk of {length} bytes"));
                    }
                    self.rx = Rx::DataOffset {
                        handle,
                        flags,
                        len: length as usize - 8,
                    };
                } else {
                    self.rx = Rx::Chunk {
                        handle,
                        flags,
                        kind,
                        len: length as usize,
                    };
                }
            }
        }
        Ok(())
    }

    /// A structured chunk other than read data, whole.
    fn on_chunk(
        &mut self,
        handle: u64,
        flags: u16,
        kind: u16,
        data: &[u8],
        done: &mut Vec<(u64, i32)>,
    ) -> Result<(), String> {
        let req = self.live(handle)?;
        let (offset, len) = (req.offset, req.len);
        match kind {
            proto::REPLY_TYPE_NONE => {
                if !data.is_empty() {
                    return Err(format!("NONE chunk of {} bytes", data.len()));
                }
                if flags & proto::REPLY_FLAG_DONE == 0 {
                    return Err("NONE chunk without the DONE flag".into());
                }
            }
            proto::REPLY_TYPE_OFFSET_HOLE => {
                if req.command != proto::CMD_READ {
                    return Err(format!(
                        "a hole in the reply to a non-read (handle {handle:#x})"
                    ));
                }
                let (o, n) = proto::decode_hole_chunk(data).map_err(|e| e.to_string())?;
                let at =
                    proto::chunk_within(o, n as u64, offset, len).map_err(|e| e.to_string())?;
                // SAFETY: [at, at + n) lies within the request's buffer
                // (chunk_within), which the caller keeps until completion.
                unsafe { std::ptr::write_bytes(req.buf.add(at), 0, n as usize) };
                self.reqs[handle as usize].as_mut().expect("live").covered += n as u64;
            }
            k if proto::is_error_chunk(k) => {
                let (e, _msg) = proto::decode_error_chunk(data).map_err(|e| e.to_string())?;
                self.reqs[handle as usize].as_mut().expect("live").error = Some(proto::errno_of(e));
            }
            k => return Err(format!("unexpected structured reply chunk type {k}")),
        }
        if flags & proto::REPLY_FLAG_DONE != 0 {
            self.finish(handle, done)?;
        }
        Ok(())
    }

    /// The last reply of `handle` arrived: check it and complete it.
    fn finish(&mut self, handle: u64, done: &mut Vec<(u64, i32)>) -> Result<(), String> {
        let req = self.live(handle)?;
        let result = match req.error {
            Some(errno) => -errno,
            None if req.command == proto::CMD_READ && req.covered != req.len as u64 => {
                return Err(format!(
                    "read reply for handle {handle:#x} covered {} of {} bytes",
                    req.covered, req.len
                ))
            }
            None => req.len as i32,
        };
        self.complete(handle, result, done);
        Ok(())
    }

    fn complete(&mut self, handle: u64, result: i32, done: &mut Vec<(u64, i32)>) {
        self.reqs[handle as usize] = None;
        self.outstanding -= 1;
        done.push((handle, result));
    }

    /// Replace the lost connection and queue every request again.
    fn reconnect(&mut self, why: String) -> Result<(), String> {
        self.episodes += 1;
        if self.episodes > RECONNECTS_MAX {
            return Err(self.fail(format!(
                "connection lost ({why}) for the {}th time",
                self.episodes
            )));
        }
        if let Err(e) = self.dev.reconnect() {
            return Err(self.fail(format!("connection lost ({why}); {e}")));
        }
        self.broken = None;
        self.iov_start = 0;
        self.iov_end = 0;
        self.lo = 0;
        self.hi = 0;
        self.rx = Rx::Head;
        let mut again: Vec<(u64, u64)> = Vec::new();
        for (h, r) in self.reqs.iter_mut().enumerate() {
            if let Some(r) = r {
                r.sent = false;
                r.covered = 0;
                r.error = None;
                again.push((r.order, h as u64));
            }
        }
        again.sort_unstable();
        self.queue = again.into_iter().map(|(_, h)| h).collect();
        Ok(())
    }
}

impl crate::device::Transport for Pipe<'_> {
    fn entries_max(&self) -> u32 {
        // A send and a receive, each with its linked timeout.
        4
    }
    fn submit_write(&mut self, handle: u64, lease: &Lease, len: u32, offset: u64) {
        Pipe::submit_write(self, handle, lease, len, offset)
    }
    fn submit_read(&mut self, handle: u64, lease: &mut Lease, len: u32, offset: u64) {
        Pipe::submit_read(self, handle, lease, len, offset)
    }
    fn sqes(&mut self, out: &mut Vec<Sqe>) -> Result<(), String> {
        Pipe::sqes(self, out)
    }
    fn on_cqe(
        &mut self,
        user_data: u64,
        result: i32,
        done: &mut Vec<(u64, i32)>,
    ) -> Result<(), String> {
        Pipe::on_cqe(self, user_data, result, done)
    }
    fn outstanding(&self) -> usize {
        Pipe::outstanding(self)
    }
    fn alive(&self) -> bool {
        Pipe::alive(self)
    }
    fn ops_in_flight(&self) -> usize {
        Pipe::ops_in_flight(self)
    }
    fn abort(&mut self, why: &str) {
        Pipe::abort(self, why)
    }
    fn turn(
        &mut self,
        ring: &mut Uring,
        done: &mut Vec<(u64, i32)>,
    ) -> std::io::Result<Option<String>> {
        Pipe::turn_on(self, ring, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A connection with no socket: the tests drive the pipe with `feed`.
    struct NoLink {
        structured: bool,
    }

    impl Link for NoLink {
        fn fd(&self) -> std::os::fd::RawFd {
            -1
        }
        fn timeout(&self) -> std::time::Duration {
            std::time::Duration::from_secs(30)
        }
        fn structured_replies(&self) -> bool {
            self.structured
        }
        fn shutdown(&self) {}
        fn reconnect(&self) -> std::io::Result<()> {
            Err(std::io::Error::other("no link"))
        }
    }

    fn simple(handle: u64, error: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&proto::SIMPLE_REPLY_MAGIC.to_be_bytes());
        v.extend_from_slice(&error.to_be_bytes());
        v.extend_from_slice(&handle.to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn chunk(handle: u64, flags: u16, kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&proto::STRUCTURED_REPLY_MAGIC.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&handle.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// Reads of `lens` bytes at `offset` of an export whose bytes are
    /// `byte(offset)`; the replies as a server sends them.
    fn byte(offset: u64) -> u8 {
        if (offset / 1000).is_multiple_of(3) {
            0 // zero runs a server may send as holes
        } else {
            (offset.wrapping_mul(31) >> 3) as u8 | 1
        }
    }

    fn expected(offset: u64, len: u32) -> Vec<u8> {
        (0..len as u64).map(|i| byte(offset + i)).collect()
    }

    /// Every request is answered; structured replies cut each read into
    /// chunks (data, or a hole where the bytes are zero) sent in a
    /// shuffled order, interleaved across requests; the byte stream then
    /// arrives in arbitrary fragments. Every buffer must end up exactly
    /// the export's bytes, every request complete once with its length.
    fn run(structured: bool, lens: &[u32], cuts: &[usize], seed: u64) -> Result<(), TestCaseError> {
        let link = NoLink { structured };
        let mut pipe = Pipe::new(&link);
        let offsets: Vec<u64> = lens
            .iter()
            .scan(4096u64, |at, &l| {
                let o = *at;
                *at += l as u64 + 777;
                Some(o)
            })
            .collect();
        let mut bufs: Vec<Vec<u8>> = lens.iter().map(|&l| vec![0xeeu8; l as usize]).collect();
        for (h, buf) in bufs.iter_mut().enumerate() {
            pipe.submit(
                h as u64,
                proto::CMD_READ,
                buf.as_mut_ptr(),
                buf.len() as u32,
                offsets[h],
            );
        }
        // Per request, its reply messages in order (the last one DONE).
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut messages: Vec<Vec<Vec<u8>>> = Vec::new();
        for (h, &len) in lens.iter().enumerate() {
            let (h, off) = (h as u64, offsets[h]);
            let data = expected(off, len);
            if !structured {
                messages.push(vec![simple(h, 0, &data)]);
                continue;
            }
            let mut pieces = Vec::new();
            let mut at = 0u32;
            while at < len {
                let n = ((next() % 5000) as u32 + 1).min(len - at);
                pieces.push((at, n));
                at += n;
            }
            // Shuffle the chunks of the request.
            for i in (1..pieces.len()).rev() {
                pieces.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            let mut msgs = Vec::new();
            for &(at, n) in &pieces {
                let slice = &data[at as usize..(at + n) as usize];
                let o = off + at as u64;
                if slice.iter().all(|&b| b == 0) && next() % 2 == 0 {
                    let mut p = o.to_be_bytes().to_vec();
                    p.extend_from_slice(&n.to_be_bytes());
                    msgs.push(chunk(h, 0, proto::REPLY_TYPE_OFFSET_HOLE, &p));
                } else {
                    let mut p = o.to_be_bytes().to_vec();
                    p.extend_from_slice(slice);
                    msgs.push(chunk(h, 0, proto::REPLY_TYPE_OFFSET_DATA, &p));
                }
            }
            // DONE on the last chunk, or a NONE chunk after them.
            match msgs.last_mut() {
                Some(last) if next() % 2 == 0 => last[5] |= proto::REPLY_FLAG_DONE as u8,
                _ => msgs.push(chunk(
                    h,
                    proto::REPLY_FLAG_DONE,
                    proto::REPLY_TYPE_NONE,
                    &[],
                )),
            }
            messages.push(msgs);
        }
        // Interleave the requests' messages, each request's in order.
        let mut stream = Vec::new();
        let mut cursors = vec![0usize; messages.len()];
        loop {
            let open: Vec<usize> = (0..messages.len())
                .filter(|&r| cursors[r] < messages[r].len())
                .collect();
            if open.is_empty() {
                break;
            }
            let r = open[(next() % open.len() as u64) as usize];
            stream.extend_from_slice(&messages[r][cursors[r]]);
            cursors[r] += 1;
        }
        // Fragments.
        let mut done = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts
                .get(i)
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            pipe.feed(&rest[..n], &mut done)
                .map_err(TestCaseError::fail)?;
            rest = &rest[n..];
            i += 1;
        }
        done.sort_unstable();
        let want: Vec<(u64, i32)> = lens
            .iter()
            .enumerate()
            .map(|(h, &l)| (h as u64, l as i32))
            .collect();
        prop_assert_eq!(done, want);
        prop_assert_eq!(pipe.outstanding(), 0);
        for (h, buf) in bufs.iter().enumerate() {
            prop_assert!(
                *buf == expected(offsets[h], lens[h]),
                "request {} read wrong bytes",
                h
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn replies_in_any_fragments_fill_exactly_the_buffers(
            structured in any::<bool>(),
            lens in proptest::collection::vec(0u32..20_000, 1..6),
            cuts in proptest::collection::vec(1usize..3000, 0..40),
            seed in any::<u64>(),
        ) {
            run(structured, &lens, &cuts, seed)?;
        }

        /// Whatever a server sends, the pipe answers with a result or an
        /// error, never a panic.
        #[test]
        fn garbage_never_panics(
            structured in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            magic in 0usize..3,
        ) {
            let link = NoLink { structured };
            let mut pipe = Pipe::new(&link);
            let mut buf = vec![0u8; 64];
            pipe.submit(0, proto::CMD_READ, buf.as_mut_ptr(), 64, 0);
            pipe.submit(1, proto::CMD_WRITE, buf.as_mut_ptr(), 64, 0);
            // Often start with a valid magic and handle, so that the
            // fuzzing reaches past the first check.
            let mut stream = match magic {
                0 => proto::SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec(),
                1 => proto::STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec(),
                _ => Vec::new(),
            };
            stream.extend_from_slice(&bytes);
            let mut done = Vec::new();
            let _ = pipe.feed(&stream, &mut done);
        }
    }

    #[test]
    fn errors_complete_requests_with_errno() {
        let link = NoLink { structured: true };
        let mut pipe = Pipe::new(&link);
        let mut buf = vec![0u8; 4096];
        pipe.submit(3, proto::CMD_WRITE, buf.as_mut_ptr(), 4096, 0);
        pipe.submit(4, proto::CMD_READ, buf.as_mut_ptr(), 4096, 0);
        let mut done = Vec::new();
        pipe.feed(&simple(3, 28, &[]), &mut done).unwrap();
        let mut e = 5u32.to_be_bytes().to_vec();
        e.extend_from_slice(&3u16.to_be_bytes());
        e.extend_from_slice(b"bad");
        pipe.feed(
            &chunk(4, proto::REPLY_FLAG_DONE, 1 << 15 | 1, &e),
            &mut done,
        )
        .unwrap();
        assert_eq!(done, [(3, -libc::ENOSPC), (4, -libc::EIO)]);
    }

    #[test]
    fn breaches_are_named() {
        let cases: [(Vec<u8>, &str); 5] = [
            (simple(9, 0, &[]), "not awaiting"),
            (vec![0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0], "bad reply magic"),
            (
                chunk(0, proto::REPLY_FLAG_DONE, proto::REPLY_TYPE_OFFSET_DATA, &{
                    let mut p = 0u64.to_be_bytes().to_vec();
                    p.extend_from_slice(&[1u8; 8192]);
                    p
                }),
                "outside the request",
            ),
            (
                chunk(0, proto::REPLY_FLAG_DONE, proto::REPLY_TYPE_NONE, &[]),
                "covered 0 of 4096",
            ),
            (
                chunk(0, 0, 77, &[]),
                "unexpected structured reply chunk type 77",
            ),
        ];
        for (stream, want) in cases {
            let link = NoLink { structured: true };
            let mut pipe = Pipe::new(&link);
            let mut buf = vec![0u8; 4096];
            pipe.submit(0, proto::CMD_READ, buf.as_mut_ptr(), 4096, 0);
            let mut done = Vec::new();
            let err = pipe.feed(&stream, &mut done).unwrap_err();
            assert!(err.contains(want), "{err} (want {want})");
            assert!(!pipe.alive());
        }
    }
}
