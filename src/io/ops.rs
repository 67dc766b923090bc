//! Submission entries: the one place pbio builds io_uring SQEs.
//!
//! Building an entry is safe when the memory it names is a `Lease` (the
//! ring that takes the entry keeps the lease's allocation alive until the
//! ring is gone, see `Uring::push`); an entry over memory the caller owns
//! otherwise (a device mapping, a transport's own state, a reader's
//! window) is built by an `unsafe fn` whose caller promises the memory
//! stays valid, and untouched by the CPU, until the completion is reaped.

use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::Arc;

use io_uring::{opcode, squeue, types};

use super::buffers::{Lease, Memory};

/// One submission entry, ready for `Uring::push`.
pub struct Sqe {
    pub(super) entry: squeue::Entry,
    /// The pool allocation the entry points into (a lease's), if any.
    pub(super) memory: Option<Arc<Memory>>,
}

impl Sqe {
    fn raw(entry: squeue::Entry) -> Sqe {
        Sqe {
            entry,
            memory: None,
        }
    }

    fn leased(entry: squeue::Entry, lease: &Lease) -> Sqe {
        Sqe {
            entry,
            memory: Some(lease.memory().clone()),
        }
    }

    /// The value its completion carries.
    pub fn user_data(self, user_data: u64) -> Sqe {
        Sqe {
            entry: self.entry.user_data(user_data),
            ..self
        }
    }

    /// Link the next entry to this one (IOSQE_IO_LINK): it starts only
    /// after this one succeeded. Push linked entries with `push_all`.
    pub fn linked(self) -> Sqe {
        Sqe {
            entry: self.entry.flags(squeue::Flags::IO_LINK),
            ..self
        }
    }
}

fn slice_of(lease: &Lease, range: &Range<usize>) -> (*mut u8, u32) {
    assert!(range.start <= range.end && range.end <= lease.len());
    (lease.ptr_at(range.start), (range.end - range.start) as u32)
}

/// `ReadFixed`: `range` of a registered lease from `fd` at `offset`.
pub fn read_fixed(fd: RawFd, lease: &mut Lease, range: Range<usize>, offset: u64) -> Sqe {
    let (ptr, len) = slice_of(lease, &range);
    let entry = opcode::ReadFixed::new(types::Fd(fd), ptr, len, lease.index())
        .offset(offset)
        .build();
    Sqe::leased(entry, lease)
}

/// `WriteFixed`: `range` of a registered lease to `fd` at `offset`
/// (`u64::MAX`: at the file position).
pub fn write_fixed(fd: RawFd, lease: &Lease, range: Range<usize>, offset: u64) -> Sqe {
    let (ptr, len) = slice_of(lease, &range);
    let entry = opcode::WriteFixed::new(types::Fd(fd), ptr, len, lease.index())
        .offset(offset)
        .build();
    Sqe::leased(entry, lease)
}

/// `Read` (the lease need not be registered): `range` of `lease` from `fd`
/// at `offset` (`u64::MAX`: at the file position).
pub fn read_at(fd: RawFd, lease: &mut Lease, range: Range<usize>, offset: u64) -> Sqe {
    let (ptr, len) = slice_of(lease, &range);
    let entry = opcode::Read::new(types::Fd(fd), ptr, len)
        .offset(offset)
        .build();
    Sqe::leased(entry, lease)
}

/// `Write` (the lease need not be registered): `range` to `fd` at `offset`.
pub fn write_at(fd: RawFd, lease: &Lease, range: Range<usize>, offset: u64) -> Sqe {
    let (ptr, len) = slice_of(lease, &range);
    let entry = opcode::Write::new(types::Fd(fd), ptr, len)
        .offset(offset)
        .build();
    Sqe::leased(entry, lease)
}

/// The operations a small-file restore submits (`open_direct`,
/// `write_direct`, `close_direct`): a ring probes for them
/// (`Uring::supports`) before anything depends on them.
pub const FILE_OPS: [u8; 3] = [
    opcode::OpenAt::CODE,
    opcode::Write::CODE,
    opcode::Close::CODE,
];

/// `OpenAt` of `name` relative to the directory `dir` with `flags` and
/// `mode`, installed as the ring's direct descriptor `slot` (no process
/// descriptor is made; `write_direct` and `close_direct` use the slot).
///
/// # Safety
/// `name` must point to a NUL-terminated string that stays valid and
/// unchanged until the completion of this entry is reaped; `dir` must
/// stay open until then.
pub unsafe fn open_direct(
    dir: RawFd,
    name: *const libc::c_char,
    flags: i32,
    mode: u32,
    slot: u32,
) -> Sqe {
    let slot = types::DestinationSlot::try_from_slot_target(slot)
        .expect("a direct descriptor slot below the kernel's limit");
    Sqe::raw(
        opcode::OpenAt::new(types::Fd(dir), name)
            .flags(flags)
            .mode(mode)
            .file_index(Some(slot))
            .build(),
    )
}

/// `Write` of `range` of `lease` to the direct descriptor `slot` at `offset`.
pub fn write_direct(slot: u32, lease: &Lease, range: Range<usize>, offset: u64) -> Sqe {
    let (ptr, len) = slice_of(lease, &range);
    let entry = opcode::Write::new(types::Fixed(slot), ptr, len)
        .offset(offset)
        .build();
    Sqe::leased(entry, lease)
}

/// `Write` of `len` bytes from `ptr` to the direct descriptor `slot` at `offset`.
///
/// # Safety
/// `ptr..ptr + len` must stay valid, and not be written by the CPU,
/// until the completion of this entry is reaped.
pub unsafe fn write_direct_from(slot: u32, ptr: *const u8, len: u32, offset: u64) -> Sqe {
    Sqe::raw(
        opcode::Write::new(types::Fixed(slot), ptr, len)
            .offset(offset)
            .build(),
    )
}

/// `Close` of the direct descriptor `slot`.
pub fn close_direct(slot: u32) -> Sqe {
    Sqe::raw(opcode::Close::new(types::Fixed(slot)).build())
}

/// `Read` of `len` bytes from `fd` at `offset` into `ptr`.
///
/// # Safety
/// `ptr..ptr + len` must stay valid, and not be accessed by the CPU,
/// until the completion of this entry is reaped.
pub unsafe fn read_into(fd: RawFd, ptr: *mut u8, len: u32, offset: u64) -> Sqe {
    Sqe::raw(
        opcode::Read::new(types::Fd(fd), ptr, len)
            .offset(offset)
            .build(),
    )
}

/// `SendMsg` of `msg` on socket `fd` (MSG_NOSIGNAL).
///
/// # Safety
/// `msg`, its iovecs and the memory they name must stay valid and
/// unchanged until the completion of this entry is reaped.
pub unsafe fn send_msg(fd: RawFd, msg: *const libc::msghdr) -> Sqe {
    Sqe::raw(
        opcode::SendMsg::new(types::Fd(fd), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build(),
    )
}

/// `Recv` of at most `len` bytes on socket `fd` into `ptr`.
///
/// # Safety
/// As `read_into`.
pub unsafe fn recv(fd: RawFd, ptr: *mut u8, len: u32) -> Sqe {
    Sqe::raw(opcode::Recv::new(types::Fd(fd), ptr, len).build())
}

/// `LinkTimeout`: cancels the entry linked before it if that has not
/// completed within `timeout`.
///
/// # Safety
/// `timeout` must stay valid until the completion of this entry is reaped.
pub unsafe fn link_timeout(timeout: *const types::Timespec) -> Sqe {
    Sqe::raw(opcode::LinkTimeout::new(timeout).build())
}

pub use io_uring::types::Timespec;
