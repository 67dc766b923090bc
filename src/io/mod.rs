//! The io_uring transport: ring setup in one builder (`Uring::new`), one
//! submit/reap loop (`Uring::push`, `submit_and_wait`, `reap`), the
//! registered buffer pool handing out typed leases (`BufferPool`,
//! `Lease`), and every submission entry pbio builds (`read_fixed`,
//! `write_fixed`, `send_msg`, ...). The only `unsafe` push of an entry
//! is `Uring::push`.
//!
//! Below `device/`: this module knows descriptors, memory and entries,
//! never a device kind.

pub mod buffers;
mod ops;
mod ring;

pub use buffers::{BufferPool, Lease};
pub use ops::{
    close_direct, link_timeout, open_direct, read_at, read_fixed, read_into, recv, send_msg,
    write_at, write_direct, write_direct_from, write_fixed, Sqe, Timespec, FILE_OPS,
};
pub use ring::{Completion, RingSetup, Uring, USER_DATA_TRANSPORT};
