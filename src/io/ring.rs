//! The one ring builder and the one submit/reap loop of pbio.
//!
//! Every ring in the program (backup, restore, bench, the rate probe) is
//! built here with the same setup flags, tried in fio's order and falling
//! back on EINVAL: COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN, then
//! COOP_TASKRUN, then none. What was chosen is kept (`Uring::setup`) and
//! reported by `pbio bench`. SINGLE_ISSUER: a ring is built, registered
//! and used on one thread (the thread of the device it serves).
//!
//! The loop is TigerBeetle's: `push` what is queued, `submit_and_wait`,
//! `reap` the completions into a Vec (copied out before anyone acts on
//! them), act, repeat.

use std::sync::Arc;
use std::time::Duration;

use io_uring::{types, IoUring};

use super::buffers::{BufferPool, Memory};
use super::ops::Sqe;

/// Which io_uring setup flags the ring got (tried in this order, falling
/// back on EINVAL as fio does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingSetup {
    /// COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN.
    DeferTaskrun,
    /// COOP_TASKRUN.
    CoopTaskrun,
    /// No flags.
    Plain,
}

impl RingSetup {
    pub fn name(self) -> &'static str {
        match self {
            RingSetup::DeferTaskrun => "coop_taskrun+single_issuer+defer_taskrun",
            RingSetup::CoopTaskrun => "coop_taskrun",
            RingSetup::Plain => "none",
        }
    }
}

/// Bit of `user_data` that marks an entry of a transport sharing the ring
/// (a device's pipelined connection); the ring's owner uses the values below.
pub const USER_DATA_TRANSPORT: u64 = 1 << 63;

/// A completion: the entry's `user_data` and its result (bytes or -errno).
pub type Completion = (u64, i32);

/// An io_uring with pbio's setup, counting the entries in flight.
/// Field order: `ring` before `memory`, so that registrations are released
/// (the ring closed) before the pools' memory can be freed.
pub struct Uring {
    ring: IoUring,
    setup: RingSetup,
    /// Pool allocations registered with, or pointed into by entries pushed
    /// to, this ring: kept until the ring is gone.
    memory: Vec<Arc<Memory>>,
    in_flight: usize,
}

impl Uring {
    /// Build a ring of at least `entries` submission entries with the best
    /// setup flags the kernel takes.
    pub fn new(entries: u32) -> std::io::Result<Uring> {
        let entries = entries.max(1).next_power_of_two();
        let with_defer = IoUring::builder()
            .setup_coop_taskrun()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries);
        let (ring, setup) = match with_defer {
            Ok(ring) => (ring, RingSetup::DeferTaskrun),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                match IoUring::builder().setup_coop_taskrun().build(entries) {
                    Ok(ring) => (ring, RingSetup::CoopTaskrun),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        (IoUring::new(entries)?, RingSetup::Plain)
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        Ok(Uring {
            ring,
            setup,
            memory: Vec::new(),
            in_flight: 0,
        })
    }

    /// The setup flags the kernel took.
    pub fn setup(&self) -> RingSetup {
        self.setup
    }

    /// Register `pool`'s slots as the ring's fixed buffers (one ring, one pool).
    pub fn register_buffers(&mut self, pool: &BufferPool) -> std::io::Result<()> {
        let memory = pool.memory();
        let iovecs = memory.iovecs();
        // SAFETY: the iovecs describe the pool's allocation, which this
        // ring keeps alive (`self.memory`) until after the ring is closed.
        unsafe { self.ring.submitter().register_buffers(&iovecs) }?;
        self.keep(memory);
        Ok(())
    }

    /// Give the ring `slots` empty direct descriptor slots (the targets
    /// of `open_direct`), replacing any it had.
    pub fn register_file_slots(&mut self, slots: u32) -> std::io::Result<()> {
        self.ring.submitter().register_files_sparse(slots)
    }

    /// Empty the direct descriptor `slot` (closing the file in it), now.
    pub fn clear_file_slot(&mut self, slot: u32) -> std::io::Result<()> {
        self.ring
            .submitter()
            .register_files_update(slot, &[-1])
            .map(|_| ())
    }

    /// Whether the kernel supports every operation of `codes` (e.g.
    /// `io::FILE_OPS`); false when it cannot say (no probe before 5.6).
    pub fn supports(&self, codes: &[u8]) -> bool {
        let mut probe = io_uring::Probe::new();
        if self.ring.submitter().register_probe(&mut probe).is_err() {
            return false;
        }
        codes.iter().all(|&c| probe.is_supported(c))
    }

    fn keep(&mut self, memory: &Arc<Memory>) {
        if !self.memory.iter().any(|m| Arc::ptr_eq(m, memory)) {
            self.memory.push(memory.clone());
        }
    }

    /// Entries pushed and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Free room in the submission queue.
    pub fn room(&mut self) -> usize {
        let mut sq = self.ring.submission();
        sq.sync();
        sq.capacity() - sq.len()
    }

    /// Queue one entry; when the submission queue is full, submit what is
    /// there first.
    pub fn push(&mut self, sqe: Sqe) -> std::io::Result<()> {
        if let Some(memory) = &sqe.memory {
            self.keep(memory);
        }
        loop {
            // SAFETY: this is pbio's one push. An `Sqe` is built only in
            // `io::ops`: from a lease, whose allocation this ring now keeps
            // alive until it is closed (`keep` above), or by an `unsafe`
            // constructor whose caller promised the memory it names stays
            // valid until the completion is reaped. Descriptors are the
            // caller's; a closed one fails the operation (EBADF).
            if unsafe { self.ring.submission().push(&sqe.entry) }.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            self.submit()?;
        }
    }

    /// Queue entries that must go in one submit (a linked chain), all or
    /// none: submits first if they do not fit. Drains `sqes`.
    pub fn push_all(&mut self, sqes: &mut Vec<Sqe>) -> std::io::Result<()> {
        if sqes.is_empty() {
            return Ok(());
        }
        if self.room() < sqes.len() {
            self.submit()?;
        }
        assert!(self.room() >= sqes.len(), "ring too small for a chain");
        for sqe in sqes.drain(..) {
            self.push(sqe)?;
        }
        Ok(())
    }

    /// Submit what is queued without waiting.
    pub fn submit(&mut self) -> std::io::Result<usize> {
        self.ring.submit()
    }

    /// Submit what is queued and wait for `want` completions (EINTR is
    /// retried).
    pub fn submit_and_wait(&mut self, want: usize) -> std::io::Result<usize> {
        loop {
            match self.ring.submit_and_wait(want) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                other => return other,
            }
        }
    }

    /// Submit what is queued and wait for `want` completions or `timeout`,
    /// whichever comes first (a timeout or a signal is not an error).
    pub fn submit_and_wait_timeout(
        &mut self,
        want: usize,
        timeout: Duration,
    ) -> std::io::Result<usize> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(want, &args) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::ETIME)) => Ok(0),
            other => other,
        }
    }

    /// Copy the completions out, appending to `out`; returns how many.
    pub fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        let before = out.len();
        out.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        let n = out.len() - before;
        self.in_flight -= n;
        n
    }

    /// Submit, wait for at least one completion and reap into `out`
    /// (cleared first): one turn of the loop.
    pub fn turn(&mut self, out: &mut Vec<Completion>) -> std::io::Result<usize> {
        out.clear();
        self.submit_and_wait(1)?;
        Ok(self.reap(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_and_a_read_back_through_leases() {
        use std::os::fd::AsRawFd;
        let file = tempfile::tempfile().unwrap();
        let pool = BufferPool::new(2, 4096);
        let mut ring = Uring::new(4).unwrap();
        ring.register_buffers(&pool).unwrap();
        let mut leases = pool.lease_all();
        leases[0].bytes_mut().fill(7);
        let fd = file.as_raw_fd();
        ring.push(super::super::write_fixed(fd, &leases[0], 0..4096, 8192).user_data(1))
            .unwrap();
        let mut done = Vec::new();
        ring.turn(&mut done).unwrap();
        assert_eq!(done, vec![(1, 4096)]);
        ring.push(super::super::read_fixed(fd, &mut leases[1], 0..4096, 8192).user_data(2))
            .unwrap();
        ring.turn(&mut done).unwrap();
        assert_eq!(done, vec![(2, 4096)]);
        assert!(leases[1].bytes().iter().all(|&b| b == 7));
        assert_eq!(ring.in_flight(), 0);
    }
}
