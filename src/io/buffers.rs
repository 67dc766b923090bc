//! Aligned I/O buffers: allocated once when a device opens, registered
//! with its ring, never reallocated on the data path.
//!
//! This is the one place where pbio hands out raw memory to the kernel; the
//! unsafe blocks here are small and each says why it is sound.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use crate::format::BLOCK_BYTES;

/// One contiguous allocation split into `count` slots of `slot_bytes`,
/// each aligned to `BLOCK_BYTES`.
pub struct BufferPool {
    base: NonNull<u8>,
    layout: Layout,
    slot_bytes: usize,
    count: usize,
}

// SAFETY: the pool owns its allocation outright; access to slots is
// mediated by &/&mut self, so moving it across threads is sound.
unsafe impl Send for BufferPool {}

impl BufferPool {
    /// Allocate `count` zeroed slots of `slot_bytes` (a multiple of BLOCK_BYTES).
    pub fn new(count: usize, slot_bytes: usize) -> BufferPool {
        assert!(count > 0);
        assert!(slot_bytes > 0 && slot_bytes.is_multiple_of(BLOCK_BYTES));
        let total = count.checked_mul(slot_bytes).expect("pool size overflows");
        let layout = Layout::from_size_align(total, BLOCK_BYTES).expect("pool layout");
        // SAFETY: layout has non-zero size (asserted above).
        let ptr = unsafe { alloc_zeroed(layout) };
        let base = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        BufferPool {
            base,
            layout,
            slot_bytes,
            count,
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Raw pointer to slot `index` (for SQEs). Stays valid while the pool lives.
    pub fn ptr(&self, index: usize) -> *mut u8 {
        assert!(index < self.count);
        // SAFETY: index < count, so the offset stays inside the allocation.
        unsafe { self.base.as_ptr().add(index * self.slot_bytes) }
    }

    /// The slot as a mutable slice. The caller must not hold it while an
    /// operation on this slot is in flight (the engine's slot state machine
    /// guarantees this: a slot is touched by the CPU only between a
    /// completion and the next submission).
    pub fn slot_mut(&mut self, index: usize) -> &mut [u8] {
        let ptr = self.ptr(index);
        // SAFETY: ptr..ptr+slot_bytes lies inside our allocation, is
        // initialised (alloc_zeroed), and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(ptr, self.slot_bytes) }
    }

    pub fn slot(&self, index: usize) -> &[u8] {
        let ptr = self.ptr(index);
        // SAFETY: as slot_mut, shared.
        unsafe { std::slice::from_raw_parts(ptr, self.slot_bytes) }
    }

    /// iovecs for `Submitter::register_buffers`, one per slot.
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.count)
            .map(|i| libc::iovec {
                iov_base: self.ptr(i).cast(),
                iov_len: self.slot_bytes,
            })
            .collect()
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        // SAFETY: base was allocated with exactly this layout. Rings that
        // registered the pool are dropped before it (owners declare the ring
        // field first), so the kernel holds no reference any more.
        unsafe { dealloc(self.base.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_aligned_and_disjoint() {
        let mut pool = BufferPool::new(3, 8192);
        for i in 0..3 {
            assert_eq!(pool.ptr(i) as usize % BLOCK_BYTES, 0);
            pool.slot_mut(i).fill(i as u8 + 1);
        }
        for i in 0..3 {
            assert!(pool.slot(i).iter().all(|&b| b == i as u8 + 1));
        }
        assert_eq!(pool.iovecs().len(), 3);
    }
}
