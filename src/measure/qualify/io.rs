//! Synchronous positioned I/O on a device's own descriptor, for the probes
//! that are about single operations (alignment, the largest I/O, one
//! durable write, the pattern): throughput and latency under load go
//! through the bench rings instead (`measure::bench`).

use std::io;
use std::os::fd::BorrowedFd;

use crate::device::Device;

/// Retries of one call interrupted by a signal (EINTR/EAGAIN).
const RETRIES_MAX: u32 = 1000;

/// A heap buffer whose usable part starts at an address aligned to
/// `align` bytes (O_DIRECT wants aligned memory). Safe code only: the
/// storage is over-allocated and the aligned start looked up.
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeroed bytes starting at a multiple of `align` (a power of two).
    pub fn new(len: usize, align: usize) -> AlignedBuf {
        assert!(align.is_power_of_two());
        let storage = vec![0u8; len + align];
        let start = storage.as_ptr().align_offset(align);
        assert!(start < align, "a byte pointer can always be aligned");
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Positioned reads and writes on a device's descriptor (O_DIRECT when the
/// device was opened so).
pub struct DevIo<'a> {
    fd: BorrowedFd<'a>,
}

fn retry<T>(mut call: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    let mut tries = 0;
    loop {
        match call() {
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) if tries < RETRIES_MAX => {
                tries += 1
            }
            other => return other.map_err(io::Error::from),
        }
    }
}

impl<'a> DevIo<'a> {
    pub fn new(device: &'a dyn Device) -> DevIo<'a> {
        // SAFETY: the descriptor belongs to `device`, which is borrowed for
        // 'a, so it stays open (and is not reused) while this borrow lives.
        let fd = unsafe { BorrowedFd::borrow_raw(device.fd()) };
        DevIo { fd }
    }

    /// One pwrite; returns what the kernel took (may be short).
    pub fn pwrite(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        retry(|| nix::sys::uio::pwrite(self.fd, buf, offset as libc::off_t))
    }

    /// One pread; returns what the kernel gave (may be short).
    pub fn pread(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        retry(|| nix::sys::uio::pread(self.fd, buf, offset as libc::off_t))
    }

    /// Write all of `buf` at `offset` (short writes continue; a write that
    /// moves nothing is ENOSPC).
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.pwrite(&buf[done..], offset + done as u64)? {
                0 => return Err(io::Error::from_raw_os_error(libc::ENOSPC)),
                n => done += n,
            }
        }
        Ok(())
    }

    /// Read all of `buf` at `offset` (short reads continue; end of device is EIO).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.pread(&mut buf[done..], offset + done as u64)? {
                0 => return Err(io::Error::from_raw_os_error(libc::EIO)),
                n => done += n,
            }
        }
        Ok(())
    }

    /// One `pwritev2(..., RWF_DSYNC)`: the write is durable when it returns
    /// (the kernel sends a FUA write or a write plus a cache flush).
    pub fn pwrite_dsync(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut tries = 0;
        loop {
            // SAFETY: one iovec describing `buf`, which lives across the
            // call; the kernel only reads from it. The fd is open ('a).
            let n = unsafe {
                libc::pwritev2(
                    self.fd.as_raw_fd(),
                    &iov,
                    1,
                    offset as libc::off_t,
                    libc::RWF_DSYNC,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN) if tries < RETRIES_MAX => tries += 1,
                _ => return Err(e),
            }
        }
    }

    /// Drop cached pages of the device (buffered file devices: a read after
    /// this comes from the medium, not from memory).
    pub fn drop_cache(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        nix::fcntl::posix_fadvise(
            self.fd.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers() {
        for align in [512usize, 4096, 65536] {
            let mut b = AlignedBuf::new(10_000, align);
            assert_eq!(b.as_slice().as_ptr() as usize % align, 0);
            assert_eq!(b.len(), 10_000);
            b.as_mut_slice().fill(7);
            assert!(b.as_slice().iter().all(|&x| x == 7));
        }
    }
}
