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

mod reply;

use crate::io::{self, Lease, Sqe, Timespec, Uring};

use super::proto::{self, ReplyHead};
use super::NbdDevice;
use crate::device::{Device, TransportError};

/// The connection a pipe runs on: an `NbdDevice`, or in tests and the fuzz
/// target a stand-in that has no socket (`feed` drives the pipe there).
pub trait Link {
    fn fd(&self) -> std::os::fd::RawFd;
    fn timeout(&self) -> std::time::Duration;
    fn structured_replies(&self) -> bool;
    /// End the operations in flight on the connection.
    fn shutdown(&self);
    fn reconnect(&self) -> std::io::Result<()>;
    /// The largest request the server takes (no limit by default: a
    /// stand-in takes anything).
    fn request_bytes_max(&self) -> u32 {
        u32::MAX
    }
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
    fn request_bytes_max(&self) -> u32 {
        NbdDevice::request_bytes_max(self)
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
    fatal: Option<TransportError>,
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

    /// Queue a read request into `range` of `lease`, which the caller
    /// keeps, untouched, until the request completes.
    pub fn submit_read_into(
        &mut self,
        handle: u64,
        lease: &mut Lease,
        range: std::ops::Range<usize>,
        offset: u64,
    ) {
        assert!(range.start <= range.end && range.end <= lease.len());
        let len = (range.end - range.start) as u32;
        self.submit(
            handle,
            proto::CMD_READ,
            lease.ptr_at(range.start),
            len,
            offset,
        )
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
            self.fatal = Some(TransportError::Stopped(why.to_string()));
        }
        self.dev.shutdown();
    }

    fn fail(&mut self, why: TransportError) -> TransportError {
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
    pub fn sqes(&mut self, out: &mut Vec<Sqe>) -> Result<(), TransportError> {
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
    ) -> std::io::Result<Option<TransportError>> {
        let mut failure = None;
        if self.alive() {
            let mut sqes = Vec::new();
            if let Err(e) = self.sqes(&mut sqes) {
                self.abort(&e.to_string());
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
                self.abort(&e.to_string());
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
    ) -> Result<(), TransportError> {
        debug_assert!(user_data & TAG != 0);
        self.ops -= 1;
        match user_data {
            OP_TIMEOUT => {}
            OP_SEND => {
                self.send_busy = false;
                if let Some(settled) = self.settled("send", result) {
                    return settled;
                }
                self.advance_send(result as usize);
            }
            OP_RECV => {
                self.recv_busy = false;
                if let Some(settled) = self.settled("receive", result) {
                    return settled;
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
                    return Err(self.fail(TransportError::Protocol(e)));
                }
            }
            other => unreachable!("not a pipe user_data {other:#x}"),
        }
        Ok(())
    }

    /// What a send or receive that ended with `result` leaves to do: None,
    /// act on it; or the answer to return now, the connection being
    /// already lost or failed, or lost by this operation's error.
    fn settled(&mut self, op: &str, result: i32) -> Option<Result<(), TransportError>> {
        if self.broken.is_some() || self.fatal.is_some() {
            return Some(self.fatal.clone().map_or(Ok(()), Err));
        }
        if result < 0 {
            let why = self.io_text(op, result);
            self.lose(why);
            return Some(Ok(()));
        }
        None
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
    /// Replace the lost connection and queue every request again.
    fn reconnect(&mut self, why: String) -> Result<(), TransportError> {
        self.episodes += 1;
        if self.episodes > RECONNECTS_MAX {
            let episodes = self.episodes;
            return Err(self.fail(TransportError::LostAgain { why, episodes }));
        }
        if let Err(e) = self.dev.reconnect() {
            let error = e.to_string();
            return Err(self.fail(TransportError::Reconnect { why, error }));
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
    fn submit_read_into(
        &mut self,
        handle: u64,
        lease: &mut Lease,
        range: std::ops::Range<usize>,
        offset: u64,
    ) {
        Pipe::submit_read_into(self, handle, lease, range, offset)
    }
    fn request_bytes_max(&self) -> u32 {
        self.dev.request_bytes_max()
    }
    fn sqes(&mut self, out: &mut Vec<Sqe>) -> Result<(), TransportError> {
        Pipe::sqes(self, out)
    }
    fn on_cqe(
        &mut self,
        user_data: u64,
        result: i32,
        done: &mut Vec<(u64, i32)>,
    ) -> Result<(), TransportError> {
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
    ) -> std::io::Result<Option<TransportError>> {
        Pipe::turn_on(self, ring, done)
    }
}

#[cfg(test)]
mod tests;
