//! Cache-line prefetch hints for the write path: an address in, nothing out. At 100 k series
//! every index slot and series a push touches is a cache miss; asking for the lines of the
//! entries a few steps ahead lets those misses overlap instead of queueing one by one
//! (docs/performance.md). The crate's only `unsafe`, and it cannot misbehave: a prefetch never
//! faults, whatever the address, and changes nothing a program can observe but timing.

#![allow(unsafe_code)]

/// Asks for the cache lines holding `bytes` bytes from `p` (at most a few lines).
#[inline(always)]
pub fn lines<T>(p: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = p as usize & !63;
        let end = p as usize + bytes;
        let mut a = start;
        while a < end {
            // SAFETY: PREFETCHT0 is a hint; it does not fault on any address (an invalid one
            // is ignored) and has no architectural effect. SSE is part of x86_64's baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(a as *const i8) };
            a += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, bytes);
    }
}
