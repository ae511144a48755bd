//! TEMPORARY uncompressed stand-in with the final API; replaced by the Gorilla ring buffer.
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    Appended,
    Duplicate,
    OutOfOrder,
}

#[derive(Default)]
pub struct RingBuffer {
    s: VecDeque<(i64, f64)>,
}

pub struct RangeIter<'a> {
    it: std::collections::vec_deque::Iter<'a, (i64, f64)>,
    from: i64,
    to: i64,
}
impl Iterator for RangeIter<'_> {
    type Item = (i64, f64);
    fn next(&mut self) -> Option<(i64, f64)> {
        for &(t, v) in self.it.by_ref() {
            if t > self.to {
                return None;
            }
            if t >= self.from {
                return Some((t, v));
            }
        }
        None
    }
}

impl RingBuffer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, ts: i64, v: f64, retention_ms: i64) -> Append {
        if let Some(&(t, _)) = self.s.back() {
            if ts < t {
                return Append::OutOfOrder;
            }
            if ts == t {
                return Append::Duplicate;
            }
        }
        self.s.push_back((ts, v));
        while self.s.front().is_some_and(|&(t, _)| t < ts - retention_ms) {
            self.s.pop_front();
        }
        Append::Appended
    }
    pub fn last(&self) -> Option<(i64, f64)> {
        self.s.back().copied()
    }
    pub fn first_ts(&self) -> Option<i64> {
        self.s.front().map(|s| s.0)
    }
    pub fn len(&self) -> usize {
        self.s.len()
    }
    pub fn is_empty(&self) -> bool {
        self.s.is_empty()
    }
    pub fn range(&self, from: i64, to: i64) -> RangeIter<'_> {
        RangeIter {
            it: self.s.iter(),
            from,
            to,
        }
    }
    pub fn iter(&self) -> RangeIter<'_> {
        self.range(i64::MIN, i64::MAX)
    }
    pub fn truncate_before(&mut self, ts: i64) {
        while self.s.front().is_some_and(|&(t, _)| t < ts) {
            self.s.pop_front();
        }
    }
    pub fn heap_bytes(&self) -> usize {
        self.s.capacity() * 16
    }
}
