//! Aligned I/O buffers: allocated once when a device opens, registered
//! with its ring, never reallocated on the data path.
//!
//! A buffer is handed out as a `Lease`: the one owner of a slot, giving
//! its bytes (`bytes`, `bytes_mut`) and its registered index, and going
//! back to the pool when dropped. I/O is submitted with the lease
//! (`io::read_fixed(fd, &mut lease, ..)`), so no raw pointer into a pool
//! crosses a module boundary. The allocation is shared (`Arc`) by the
//! pool, its leases and every ring that registered it: it is freed only
//! after the last of them is gone, so the kernel never holds a pointer
//! into freed memory.
//!
//! This is the one place where pbio hands out raw memory to the kernel; the
//! unsafe blocks here are small and each says why it is sound.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use crate::format::BLOCK_BYTES;

/// The allocation behind a pool, shared with its leases and rings.
pub(crate) struct Memory {
    base: NonNull<u8>,
    layout: Layout,
    slot_bytes: usize,
    count: usize,
    /// Slots not leased, as indexes.
    free: Mutex<Vec<usize>>,
}

// SAFETY: the allocation is owned outright; a slot's bytes are reached
// only through its one `Lease` (or the pool's `&mut self` accessors), so
// sharing the handle across threads is sound.
unsafe impl Send for Memory {}
// SAFETY: as above; the free list is behind a mutex.
unsafe impl Sync for Memory {}

impl Memory {
    fn ptr(&self, index: usize) -> *mut u8 {
        assert!(index < self.count);
        // SAFETY: index < count, so the offset stays inside the allocation.
        unsafe { self.base.as_ptr().add(index * self.slot_bytes) }
    }

    /// iovecs for `Submitter::register_buffers`, one per slot.
    pub(crate) fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.count)
            .map(|i| libc::iovec {
                iov_base: self.ptr(i).cast(),
                iov_len: self.slot_bytes,
            })
            .collect()
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: base was allocated with exactly this layout; the last
        // handle (pool, lease or ring registration) is gone.
        unsafe { dealloc(self.base.as_ptr(), self.layout) }
    }
}

/// One contiguous allocation split into `count` slots of `slot_bytes`,
/// each aligned to `BLOCK_BYTES`.
pub struct BufferPool {
    memory: Arc<Memory>,
}

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
            memory: Arc::new(Memory {
                base,
                layout,
                slot_bytes,
                count,
                free: Mutex::new((0..count).rev().collect()),
            }),
        }
    }

    pub fn count(&self) -> usize {
        self.memory.count
    }

    pub fn slot_bytes(&self) -> usize {
        self.memory.slot_bytes
    }

    pub(crate) fn memory(&self) -> &Arc<Memory> {
        &self.memory
    }

    /// Lease a free slot (the lowest index first); None: all are leased.
    pub fn lease(&self) -> Option<Lease> {
        let index = self.memory.free.lock().expect("pool free list").pop()?;
        Some(Lease {
            memory: self.memory.clone(),
            index,
        })
    }

    /// Lease every slot, in index order (lease `i` is slot `i`).
    pub fn lease_all(&self) -> Vec<Lease> {
        let leases: Vec<Lease> = std::iter::from_fn(|| self.lease()).collect();
        assert_eq!(
            leases.len(),
            self.count(),
            "lease_all on a pool with leases out"
        );
        debug_assert!(leases.iter().enumerate().all(|(i, l)| l.index == i));
        leases
    }

    /// Slot `index`'s address, for the slot accessors below.
    fn ptr(&self, index: usize) -> *mut u8 {
        self.memory.ptr(index)
    }

    /// The slot as a mutable slice. The caller must not hold it while an
    /// operation on this slot is in flight, nor lease the slot meanwhile.
    pub fn slot_mut(&mut self, index: usize) -> &mut [u8] {
        let ptr = self.ptr(index);
        // SAFETY: ptr..ptr+slot_bytes lies inside our allocation, is
        // initialised (alloc_zeroed), and &mut self gives exclusive access
        // (the slot-index accessors and leases are not mixed on one pool).
        unsafe { std::slice::from_raw_parts_mut(ptr, self.slot_bytes()) }
    }

    pub fn slot(&self, index: usize) -> &[u8] {
        let ptr = self.ptr(index);
        // SAFETY: as slot_mut, shared.
        unsafe { std::slice::from_raw_parts(ptr, self.slot_bytes()) }
    }
}

/// One slot of a pool, owned: its bytes and its registered index. Returned
/// to the pool when dropped. Not `Clone`: one owner per slot.
pub struct Lease {
    memory: Arc<Memory>,
    index: usize,
}

impl Lease {
    /// The index the slot is registered under (`ReadFixed`/`WriteFixed`).
    pub fn index(&self) -> u16 {
        self.index as u16
    }

    pub fn len(&self) -> usize {
        self.memory.slot_bytes
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the slot lies inside the live allocation (kept by the
        // Arc), is initialised, and only this lease reaches it.
        unsafe { std::slice::from_raw_parts(self.memory.ptr(self.index), self.len()) }
    }

    /// Bytes `range` of the slot, and only those: a shared borrow of
    /// that range alone (`bytes` borrows the whole slot), for a reader of
    /// one record while others hold other ranges of the same slot.
    pub fn slice(&self, range: std::ops::Range<usize>) -> &[u8] {
        assert!(range.start <= range.end && range.end <= self.len());
        // SAFETY: the range lies inside the slot (asserted), which lies
        // inside the live allocation (kept by the Arc) and is initialised.
        unsafe { std::slice::from_raw_parts(self.ptr_at(range.start), range.len()) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`; &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.memory.ptr(self.index), self.len()) }
    }

    /// The allocation the slot lies in (kept alive by a ring it is submitted to).
    pub(crate) fn memory(&self) -> &Arc<Memory> {
        &self.memory
    }

    /// The address of byte `at` of the slot, for an SQE built in `io`.
    pub(crate) fn ptr_at(&self, at: usize) -> *mut u8 {
        assert!(at <= self.len());
        // SAFETY: at <= slot_bytes: inside the slot (or one past its end).
        unsafe { self.memory.ptr(self.index).add(at) }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut free) = self.memory.free.lock() {
            free.push(self.index);
        }
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
        assert_eq!(pool.memory().iovecs().len(), 3);
    }

    #[test]
    fn leases_are_exclusive_and_come_back() {
        let pool = BufferPool::new(2, 4096);
        let mut a = pool.lease().unwrap();
        let mut b = pool.lease().unwrap();
        assert_eq!((a.index(), b.index()), (0, 1));
        assert!(pool.lease().is_none());
        a.bytes_mut().fill(1);
        b.bytes_mut().fill(2);
        assert!(a.bytes().iter().all(|&x| x == 1));
        drop(a);
        let c = pool.lease().unwrap();
        assert_eq!(c.index(), 0);
        assert!(c.bytes().iter().all(|&x| x == 1));
        // The memory outlives the pool while a lease holds it.
        drop(pool);
        assert!(b.bytes().iter().all(|&x| x == 2));
        drop((b, c));
    }
}
