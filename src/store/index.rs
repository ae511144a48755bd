//! The series index: a label set's 128-bit identity (`hash`, `fp`; see [`Slot`]) in, its
//! [`Series`] out, one table per shard. Open addressing with linear probing over a flat slot
//! array, so that the write path can compute where an entry's slot is and prefetch it
//! several entries ahead ([`Table::prefetch`]): the probe itself is then a cache hit.
//! Removal ([`Table::retain`], the sweep) rebuilds the table, so there are no tombstones.

use std::sync::Arc;

use super::{prefetch, Series};

/// Grow when more than 5/8 of the slots are taken: short probe runs (1.2–1.8 slots read on
/// a hit on average, between half that load and the bound), which rarely leave the prefetched
/// line. At 7/8 fresh series were measurably slower (docs/performance.md).
const MAX_LOAD_NUM: usize = 5;
const MAX_LOAD_DEN: usize = 8;
const MIN_SLOTS: usize = 16;

/// An index entry. A label set is identified by 128 bits computed from its canonical
/// bytes: `hash` (fixed seeds; it also places the entry) and `fp`, a second 64-bit hash
/// with independent seeds drawn at process start. A probe compares both in the slot itself
/// and does not read the stored label bytes: at 100 k series those are three cache lines
/// per sample that the lookup no longer misses on (see docs/performance.md).
///
/// This makes identity probabilistic, deliberately. Two different label sets are taken
/// for one series only if both 64-bit hashes collide; modelling them as independent random
/// functions, a lookup of a new set among `n` held ones errs with probability `n / 2^128`
/// (10^7 series: 3·10^-32), and over `N` distinct label sets ever seen the odds of any
/// collision are at most `N^2 / 2^129` (10^10 sets: 1.5·10^-19) — far below the odds of
/// a memory bit flip. `fp`'s seeds are random per process, so a sender cannot craft a
/// collision from the source code's constants. The consequence of a collision would be
/// samples appended to the wrong series, never memory unsafety.
#[derive(Default)]
struct Slot {
    hash: u64,
    fp: u64,
    series: Option<Arc<Series>>,
}

#[derive(Default)]
pub(super) struct Table {
    slots: Vec<Slot>,
    len: usize,
}

impl Table {
    /// Where `hash`'s probe starts. The low 6 bits chose the shard, so the position uses
    /// the bits above them.
    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        (hash >> 6) as usize & (self.slots.len().wrapping_sub(1))
    }

    /// Starts loading the cache lines where `hash`'s probe begins.
    #[inline(always)]
    pub(super) fn prefetch(&self, hash: u64) {
        if !self.slots.is_empty() {
            let p = &self.slots[self.home(hash)] as *const Slot;
            prefetch::lines(p, std::mem::size_of::<Slot>());
        }
    }

    #[inline]
    pub(super) fn find(&self, hash: u64, fp: u64) -> Option<&Arc<Series>> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        loop {
            let s = &self.slots[i];
            match &s.series {
                None => return None,
                Some(series) if s.hash == hash && s.fp == fp => return Some(series),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// Adds a series known to be absent.
    pub(super) fn insert(&mut self, hash: u64, fp: u64, series: Arc<Series>) {
        if (self.len + 1) * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM {
            self.grow();
        }
        self.place(Slot {
            hash,
            fp,
            series: Some(series),
        });
        self.len += 1;
    }

    fn place(&mut self, slot: Slot) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(slot.hash);
        while self.slots[i].series.is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    /// Keeps the series `keep` says yes to; the table is rebuilt at a size fitting them.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Arc<Series>) -> bool) {
        let kept: Vec<Slot> = std::mem::take(&mut self.slots)
            .into_iter()
            .filter(|s| s.series.as_ref().is_some_and(&mut keep))
            .collect();
        let mut size = MIN_SLOTS;
        while kept.len() * MAX_LOAD_DEN > size * MAX_LOAD_NUM {
            size *= 2;
        }
        self.rebuild(size, kept);
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::take(&mut self.slots);
        self.rebuild(size, old);
    }

    fn rebuild(&mut self, size: usize, from: Vec<Slot>) {
        self.slots.resize_with(size, Slot::default);
        self.len = 0;
        for slot in from {
            if slot.series.is_some() {
                self.place(slot);
                self.len += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LabelSet, SeriesData};
    use parking_lot::Mutex;
    use std::sync::atomic::AtomicBool;

    fn a_series() -> Arc<Series> {
        Arc::new(Series {
            data: Mutex::new(SeriesData::default()),
            service: 0,
            version: 0,
            labels: LabelSet::from_strs(&[("a", "b")]),
            seq: 0,
            removed: AtomicBool::new(false),
        })
    }

    #[test]
    fn finds_what_was_inserted_through_growth_collisions_and_retain() {
        let s = a_series();
        let mut t = Table::default();
        assert!(t.find(1, 1).is_none());
        // Keys whose probe starts collide (same bits above the shard bits), and spread ones.
        let keys: Vec<(u64, u64)> = (0..5_000u64)
            .map(|i| {
                if i % 3 == 0 {
                    (7 << 6, i)
                } else {
                    (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i)
                }
            })
            .collect();
        for (n, &(h, f)) in keys.iter().enumerate() {
            t.insert(h, f, s.clone());
            assert_eq!(t.len, n + 1);
            assert!(t.len * MAX_LOAD_DEN <= t.slots.len() * MAX_LOAD_NUM);
        }
        for &(h, f) in &keys {
            assert!(t.find(h, f).is_some(), "{h} {f}");
            assert!(
                t.find(h, f ^ 1 << 40).is_none(),
                "fp is part of the identity"
            );
        }
        // Retain keeps every other key, by fp; the rest are gone, the table shrinks.
        let mut seen = 0;
        let mut k = 0u64;
        t.retain(|_| {
            seen += 1;
            k += 1;
            k % 2 == 0
        });
        assert_eq!(seen, keys.len());
        assert_eq!(t.len, keys.len() / 2);
        let found = keys
            .iter()
            .filter(|&&(h, f)| t.find(h, f).is_some())
            .count();
        assert_eq!(found, keys.len() / 2);
        t.retain(|_| false);
        assert_eq!((t.len, t.slots.len()), (0, MIN_SLOTS));
        assert!(keys.iter().all(|&(h, f)| t.find(h, f).is_none()));
    }
}
