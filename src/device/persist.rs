//! Making stores to a DAX mapping durable: cache-line flushes and a fence.
//!
//! This is the only module with the CPU instructions (and their `unsafe`).
//! The choice follows PMDK's libpmem2 (`x86_64/init.c`): CPUID leaf 7
//! (sub-leaf 0) EBX bit 24 says CLWB is there, bit 23 CLFLUSHOPT; CLFLUSH is
//! baseline x86_64. Every 64-byte line of the range is flushed, then one
//! SFENCE orders the (weakly ordered) CLWB/CLFLUSHOPT before whatever comes
//! next. CLFLUSH is itself ordered and needs no fence, but one costs nothing
//! here. A mapping that is not DAX is not made durable by any of this: it
//! needs msync (see `device::pmem`).

/// Cache-line size flushed per instruction.
pub const CACHE_LINE_BYTES: usize = 64;

/// CPUID.(EAX=7,ECX=0):EBX bit for CLFLUSHOPT.
pub const EBX_CLFLUSHOPT: u32 = 1 << 23;
/// CPUID.(EAX=7,ECX=0):EBX bit for CLWB.
pub const EBX_CLWB: u32 = 1 << 24;

/// The flush instruction in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Write back, line may stay cached (best).
    Clwb,
    /// Flush, weakly ordered.
    ClflushOpt,
    /// Flush, strongly ordered (baseline).
    Clflush,
}

impl Flush {
    pub fn name(self) -> &'static str {
        match self {
            Flush::Clwb => "clwb",
            Flush::ClflushOpt => "clflushopt",
            Flush::Clflush => "clflush",
        }
    }
}

/// How stores to a memory-mapped device are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// DAX: cache-line flushes and a fence.
    Flush(Flush),
    /// Page cache: msync.
    Msync,
}

impl Durability {
    pub fn describe(self) -> String {
        match self {
            Durability::Flush(f) => format!("DAX mapping, {} + sfence", f.name()),
            Durability::Msync => "non-DAX mapping, msync(MS_SYNC)".to_string(),
        }
    }
}

/// The flush to use given CPUID leaf 7 EBX (pure: testable with any bits).
pub fn select(leaf7_ebx: u32) -> Flush {
    if leaf7_ebx & EBX_CLWB != 0 {
        Flush::Clwb
    } else if leaf7_ebx & EBX_CLFLUSHOPT != 0 {
        Flush::ClflushOpt
    } else {
        Flush::Clflush
    }
}

/// CPUID leaf 7 EBX of this CPU (0 where leaf 7 does not exist).
#[cfg(target_arch = "x86_64")]
pub fn leaf7_ebx() -> u32 {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU; leaf 0 gives the highest
    // leaf, and leaf 7 is only asked for when it is within that.
    unsafe {
        if __cpuid(0).eax < 7 {
            return 0;
        }
        __cpuid_count(7, 0).ebx
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn leaf7_ebx() -> u32 {
    0
}

/// The flush this CPU supports best.
pub fn detect() -> Flush {
    select(leaf7_ebx())
}

/// Whether this build can flush cache lines itself (else: msync only).
pub const fn available() -> bool {
    cfg!(target_arch = "x86_64")
}

/// Flush every cache line of `[ptr, ptr + len)` with `flush`, then SFENCE.
///
/// # Safety
/// `ptr..ptr + len` must lie within one live mapping of this process.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn flush_range(flush: Flush, ptr: *const u8, len: usize) {
    use core::arch::asm;
    use core::arch::x86_64::{_mm_clflush, _mm_sfence};
    if len == 0 {
        return;
    }
    let start = (ptr as usize) & !(CACHE_LINE_BYTES - 1);
    let end = ptr as usize + len;
    let mut line = start;
    while line < end {
        let p = line as *const u8;
        match flush {
            // SAFETY: `p` is within the caller's mapping (the caller's
            // contract); CLWB only writes back the line, changes no memory
            // contents, flags or stack.
            Flush::Clwb => unsafe {
                asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags))
            },
            // SAFETY: as for CLWB; CLFLUSHOPT evicts the line after writing it back.
            Flush::ClflushOpt => unsafe {
                asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags))
            },
            // SAFETY: `p` is within the caller's mapping; CLFLUSH is baseline x86_64.
            Flush::Clflush => unsafe { _mm_clflush(p) },
        }
        line += CACHE_LINE_BYTES;
    }
    // SAFETY: SFENCE only orders stores; SSE is baseline x86_64.
    unsafe { _mm_sfence() };
}

/// # Safety
/// As on x86_64 (never called: `available()` is false here).
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn flush_range(_flush: Flush, _ptr: *const u8, _len: usize) {
    unreachable!("no cache-line flush on this architecture: msync is used")
}

/// Flush every cache line of `bytes`, then SFENCE: the safe form of
/// `flush_range` for memory this process can name as a slice (a slice is
/// always within one live allocation). Does nothing where `available()` is
/// false (there, msync is the only way to persist).
pub fn flush_slice(flush: Flush, bytes: &[u8]) {
    if !available() || bytes.is_empty() {
        return;
    }
    // SAFETY: a slice lies within one live allocation of this process.
    unsafe { flush_range(flush, bytes.as_ptr(), bytes.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_prefers_clwb_then_clflushopt_then_clflush() {
        assert_eq!(select(0), Flush::Clflush);
        assert_eq!(select(EBX_CLFLUSHOPT), Flush::ClflushOpt);
        assert_eq!(select(EBX_CLWB), Flush::Clwb);
        assert_eq!(select(EBX_CLWB | EBX_CLFLUSHOPT), Flush::Clwb);
        // Other leaf-7 bits do not matter.
        assert_eq!(select(!(EBX_CLWB | EBX_CLFLUSHOPT)), Flush::Clflush);
        assert_eq!(select(!EBX_CLWB), Flush::ClflushOpt);
    }

    #[test]
    fn flush_of_this_cpu_runs() {
        if !available() {
            return;
        }
        let buf = [7u8; 3 * CACHE_LINE_BYTES + 5];
        for flush in [detect(), Flush::Clflush] {
            flush_slice(flush, &buf[3..]);
        }
        assert!(buf.iter().all(|&b| b == 7));
    }
}
