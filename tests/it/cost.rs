//! The judge's per-push arithmetic has a bounded cost, counted rather than timed: the
//! sequential statistics every rule updates on every push (`stats::ratio`, `stats::mean`,
//! `stats::rate`) allocate nothing per update or query once built, so a deploy observed for
//! hours costs per push what it cost in its first minute, and their state does not grow with
//! the number of updates. (Their timings are not asserted anywhere: on shared machines a
//! time bound either fails at random or bounds nothing; the allocation count is exact.)
//!
//! Allocations are counted per thread by a counting global allocator, so the other tests
//! of this binary, running in parallel, do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use deploywatch::stats::mean::MeanEvidence;
use deploywatch::stats::rate::RateEvidence;
use deploywatch::stats::ratio::RatioEvidence;

struct Counting;

thread_local! {
    /// Allocations (and reallocations) made by this thread, and their bytes.
    static ALLOCS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

fn count(bytes: usize) {
    // `try_with`: during a thread's teardown the slot may be gone; those are not counted.
    let _ = ALLOCS.try_with(|c| {
        let (n, b) = c.get();
        c.set((n + 1, b + bytes as u64));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes this thread makes while running `f`, and its result.
fn allocations<T>(f: impl FnOnce() -> T) -> ((u64, u64), T) {
    let before = ALLOCS.with(Cell::get);
    let out = std::hint::black_box(f());
    let after = ALLOCS.with(Cell::get);
    ((after.0 - before.0, after.1 - before.1), out)
}

/// The counter counts: a Vec of 1,000 u64 is one allocation of 8,000 bytes.
#[test]
fn the_allocation_counter_counts() {
    let ((n, bytes), v) = allocations(|| vec![7u64; 1000]);
    assert_eq!(v.len(), 1000);
    assert_eq!((n, bytes), (1, 8000));
    let ((n, _), _) = allocations(|| 1 + 1);
    assert_eq!(n, 0);
}

/// Pushes a rule's evidence sees in a long observation: 4 hours of 5 s pushes.
const LONG: u64 = 4 * 3600 / 5;

#[test]
fn ratio_evidence_update_and_queries_allocate_nothing() {
    let mut r = RatioEvidence::new(&[1.5, 2.0]);
    let grid = r.grid().len();
    assert!(grid > 0);
    // The first updates and queries may size scratch space: that is the deploy's setup.
    for k in 0..10 {
        r.update(1.0 + (k % 3) as f64, 150.0, 4.0, 450.0);
    }
    let _ = (
        r.log_evidence_above(1.5),
        r.log_evidence_below(1.5),
        r.interval(0.01),
    );

    let ((n, bytes), acc) = allocations(|| {
        let mut acc = 0.0;
        for k in 0..LONG {
            r.update(1.0 + (k % 3) as f64, 150.0, 4.0, 450.0);
            acc += r.log_evidence_above(1.5) + r.log_evidence_below(2.0);
            if k % 12 == 0 {
                acc += r.interval(0.01).1;
            }
        }
        acc
    });
    assert!(acc.is_finite(), "{acc}");
    assert_eq!(
        (n, bytes),
        (0, 0),
        "RatioEvidence: {n} allocations ({bytes} bytes) in {LONG} updates and queries: \
         per-push cost must not allocate"
    );
    // Its state does not grow with the updates: the grid is what it was built with.
    assert_eq!(r.grid().len(), grid);
    let (events, exposure) = (r.events(), r.exposure());
    assert!(
        events.0 > 0.0 && exposure.0 > 0.0,
        "{events:?} {exposure:?}"
    );
    // Cloning it (what a snapshot copies) costs the same after 4 hours as new: a fixed
    // number of allocations of a fixed size.
    let (fresh, _) = allocations(|| RatioEvidence::new(&[1.5, 2.0]).clone());
    let (long, _) = allocations(|| r.clone());
    assert!(
        long.0 <= fresh.0 && long.1 <= fresh.1,
        "a clone after {LONG} updates costs {long:?}, a fresh one's {fresh:?}"
    );
}

#[test]
fn mean_evidence_update_and_queries_allocate_nothing() {
    let mut m = MeanEvidence::new(0.1, 0.01, 3);
    let ((n, bytes), acc) = allocations(|| {
        let mut acc = 0.0;
        for k in 0..LONG {
            m.update((k % 7) as f64 * 0.01);
            acc += m.log_evidence_above(0.05) + m.log_evidence_below(-0.05);
            acc += m.interval(0.01).1.min(1e9); // infinite before min_n points
        }
        acc
    });
    assert!(acc.is_finite(), "{acc}");
    assert_eq!(
        (n, bytes),
        (0, 0),
        "MeanEvidence: {n} allocations ({bytes} bytes) in {LONG} updates and queries"
    );
    assert_eq!(m.n(), LONG);
    assert_eq!(
        std::mem::size_of_val(&m),
        std::mem::size_of::<MeanEvidence>(),
        "constant-size state"
    );
}

#[test]
fn rate_evidence_update_and_queries_allocate_nothing() {
    let mut r = RateEvidence::new();
    r.update(17.0, 12_345.0);
    let ((n, bytes), acc) = allocations(|| {
        let mut acc = 0.0;
        for k in 0..LONG {
            r.update((k % 2) as f64, 100.0);
            acc += r.interval(0.01).1 + r.log_evidence(0.01) + r.log_evidence_share_above(0.3);
        }
        acc
    });
    assert!(acc.is_finite(), "{acc}");
    assert_eq!(
        (n, bytes),
        (0, 0),
        "RateEvidence: {n} allocations ({bytes} bytes) in {LONG} updates and queries"
    );
    assert_eq!(r.events(), 17.0 + (LONG / 2) as f64);
}
