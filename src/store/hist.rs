//! Per-series native histogram ring: `(timestamp ms, histogram)` samples flow in through
//! `push` in event-time order — schema, zero bucket, sparse buckets by index, count, sum,
//! reset hint, integer or float — and flow out, decoded into a caller's buffer, through
//! `last`, `at_or_before` and `for_each_in`; whole buffers flow out and back in through
//! `encode_into`/`decode_from` for snapshots. Depends on `std` and the ingest types only.

#![forbid(unsafe_code)]

// # Design
//
// Like the float ring (`ring.rs`), samples are packed into chunks that retention drops
// whole, each decodable on its own: a chunk's first sample is coded against an empty
// histogram. Chunks are byte streams of varints, not bit streams: a histogram sample is
// dozens of numbers, most of them small deltas, and a byte per number is already within a
// few bits of the entropy of a bucket's increase per scrape.
//
// ```text
// sample:   ts     chunk's first: in the chunk header; then zigzag varint(Δts − previous Δts)
//           flags  u8: bit 0 float histogram, bits 1-2 reset hint, bit 3 layout follows,
//                  bit 4 values as integer deltas, bit 5 sum unchanged
//           layout (when it differs from the previous sample's): zigzag schema,
//                  zero threshold as 8 raw bytes, then per side (negative, positive):
//                  varint spans, each zigzag(offset) varint(length), offsets as Prometheus
//                  sends them (the first absolute, the others the gap after the previous)
//           values count, zero count, every bucket (negative, then positive):
//                  integer mode: zigzag varint(value − the previous sample's value at the
//                  same bucket index, 0 where it had none)
//                  otherwise: varint(bits(value) XOR bits(previous))
//           sum    unless unchanged: u8 (leading zero bytes << 4 | trailing zero bytes) of
//                  bits(sum) XOR bits(previous sum), then the bytes between
// ```

use std::collections::VecDeque;

use super::ring::{put_varint, Append};
use crate::ingest::{Bucket, HistogramSample, ResetHint};

/// Samples per chunk: 1 h at 30 s, half an hour at 15 s.
const MAX_CHUNK_SAMPLES: u32 = 120;
/// Byte cap of a chunk (a histogram of hundreds of buckets fills it sooner).
const MAX_CHUNK_BYTES: usize = 8 * 1024;
/// Snapshot format tag of a histogram ring.
const FORMAT_TAG: u8 = 0xe1;
/// Buckets per side a decoded chunk may declare (as the decoder's limit).
const MAX_BUCKETS: u64 = 1 << 16;

const F_FLOAT: u8 = 1;
const F_LAYOUT: u8 = 1 << 3;
const F_INT: u8 = 1 << 4;
const F_SUM_SAME: u8 = 1 << 5;

/// One native histogram, decoded: what a sample holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NativeHistogram {
    pub schema: i8,
    pub reset_hint: ResetHint,
    pub float: bool,
    pub count: f64,
    pub sum: f64,
    pub zero_threshold: f64,
    pub zero_count: f64,
    /// Populated buckets by ascending index.
    pub negative: Vec<Bucket>,
    pub positive: Vec<Bucket>,
}

impl NativeHistogram {
    /// Prometheus' stale marker for a histogram series: the sum is the stale NaN.
    pub fn is_stale(&self) -> bool {
        super::is_stale_marker(self.sum)
    }

    /// The sample `h` of a decoded batch whose buckets are `buckets`.
    pub fn set_from(&mut self, h: &HistogramSample, buckets: &[Bucket]) {
        self.schema = h.schema;
        self.reset_hint = h.reset_hint;
        self.float = h.float;
        self.count = h.count;
        self.sum = h.sum;
        self.zero_threshold = h.zero_threshold;
        self.zero_count = h.zero_count;
        self.negative.clear();
        self.negative
            .extend_from_slice(&buckets[h.negative.0 as usize..h.negative.1 as usize]);
        self.positive.clear();
        self.positive
            .extend_from_slice(&buckets[h.positive.0 as usize..h.positive.1 as usize]);
    }

    /// As a decoded batch holds it at `ts` (its bucket ranges set by
    /// [`crate::ingest::Batch::push_histogram`]).
    pub fn sample(&self, ts: i64) -> HistogramSample {
        HistogramSample {
            ts,
            schema: self.schema,
            reset_hint: self.reset_hint,
            float: self.float,
            count: self.count,
            sum: self.sum,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count,
            negative: (0, 0),
            positive: (0, 0),
        }
    }

    fn clear(&mut self) {
        self.schema = 0;
        self.reset_hint = ResetHint::Unknown;
        self.float = false;
        self.count = 0.0;
        self.sum = 0.0;
        self.zero_threshold = 0.0;
        self.zero_count = 0.0;
        self.negative.clear();
        self.positive.clear();
    }

    fn same_layout(&self, o: &NativeHistogram) -> bool {
        self.schema == o.schema
            && self.zero_threshold.to_bits() == o.zero_threshold.to_bits()
            && same_indices(&self.negative, &o.negative)
            && same_indices(&self.positive, &o.positive)
    }

    /// Every count an integer that an f64 holds exactly (and not -0.0).
    fn integer_valued(&self) -> bool {
        let int = |v: f64| {
            v.fract() == 0.0 && v.abs() <= (1u64 << 53) as f64 && v.to_bits() != (-0.0f64).to_bits()
        };
        int(self.count)
            && int(self.zero_count)
            && self.negative.iter().all(|b| int(b.count))
            && self.positive.iter().all(|b| int(b.count))
    }
}

fn same_indices(a: &[Bucket], b: &[Bucket]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.index == y.index)
}

fn hint_bits(h: ResetHint) -> u8 {
    match h {
        ResetHint::Unknown => 0,
        ResetHint::Yes => 1,
        ResetHint::No => 2,
        ResetHint::Gauge => 3,
    }
}

fn hint_of(bits: u8) -> ResetHint {
    match bits & 3 {
        0 => ResetHint::Unknown,
        1 => ResetHint::Yes,
        2 => ResetHint::No,
        _ => ResetHint::Gauge,
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// A closed chunk.
struct Chunk {
    first_ts: i64,
    last_ts: i64,
    count: u32,
    data: Box<[u8]>,
}

/// The encoder's (and decoder's) running state within a chunk.
#[derive(Default, Clone)]
struct State {
    n: u32,
    ts: i64,
    dts: i64,
    h: NativeHistogram,
}

/// Compressed, append-only, retention-bounded native histogram samples of one series.
#[derive(Default)]
pub struct HistRing {
    closed: VecDeque<Chunk>,
    open: Vec<u8>,
    open_first_ts: i64,
    /// The newest sample (and the open chunk's coding state).
    st: State,
    /// The sample before the newest, for a step boundary just passed.
    before: Option<(i64, NativeHistogram)>,
    len: usize,
}

impl HistRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `(ts, h)`: as [`super::RingBuffer::push`], an older or equal timestamp is not
    /// stored, and closed chunks older than `ts - retention_ms` are dropped.
    pub fn push(&mut self, ts: i64, h: &NativeHistogram, retention_ms: i64) -> Append {
        if self.len > 0 {
            if ts < self.st.ts {
                return Append::OutOfOrder;
            }
            if ts == self.st.ts {
                return Append::Duplicate;
            }
        }
        // The newest becomes the one before it, and what the new one is coded against
        // (an empty histogram for a chunk's first).
        if self.len > 0 {
            let before = self
                .before
                .get_or_insert_with(|| (0, NativeHistogram::default()));
            before.0 = self.st.ts;
            before.1.clone_from(&self.st.h);
        }
        let empty = NativeHistogram::default();
        let prev = match &self.before {
            Some((_, b)) if self.st.n > 0 => b,
            _ => {
                self.open_first_ts = ts;
                &empty
            }
        };
        encode(&mut self.open, &mut self.st, prev, ts, h);
        self.len += 1;
        if self.st.n >= MAX_CHUNK_SAMPLES || self.open.len() >= MAX_CHUNK_BYTES {
            self.close_open();
        }
        self.drop_closed_before(ts.saturating_sub(retention_ms));
        Append::Appended
    }

    fn close_open(&mut self) {
        let data = std::mem::take(&mut self.open).into_boxed_slice();
        if self.closed.len() == self.closed.capacity() {
            self.closed.reserve_exact(1);
        }
        self.closed.push_back(Chunk {
            first_ts: self.open_first_ts,
            last_ts: self.st.ts,
            count: self.st.n,
            data,
        });
        self.st.n = 0;
    }

    fn drop_closed_before(&mut self, cutoff: i64) {
        while let Some(c) = self.closed.front() {
            if c.last_ts >= cutoff {
                break;
            }
            self.len -= c.count as usize;
            self.closed.pop_front();
        }
    }

    /// Drops the oldest closed chunks until at most `max` samples remain (plus the open
    /// chunk's growth).
    pub fn keep_at_most(&mut self, max: usize) {
        while self.len > max {
            let Some(c) = self.closed.pop_front() else {
                break;
            };
            self.len -= c.count as usize;
        }
    }

    /// Drops whole chunks whose newest sample is older than `ts`; the buffer empties when
    /// even the newest is.
    pub fn truncate_before(&mut self, ts: i64) {
        self.drop_closed_before(ts);
        if self.len == 0 || (self.st.ts < ts && self.closed.is_empty()) {
            *self = HistRing::default();
        }
    }

    /// The newest sample, O(1).
    pub fn last(&self) -> Option<(i64, &NativeHistogram)> {
        (self.len > 0).then_some((self.st.ts, &self.st.h))
    }

    pub fn first_ts(&self) -> Option<i64> {
        match self.closed.front() {
            Some(c) => Some(c.first_ts),
            None => (self.st.n > 0).then_some(self.open_first_ts),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The newest sample at or before `t`, decoded into `out`; its timestamp.
    pub fn at_or_before(&self, t: i64, out: &mut NativeHistogram) -> Option<i64> {
        let (last_ts, last) = self.last()?;
        if last_ts <= t {
            out.clone_from(last);
            return Some(last_ts);
        }
        if let Some((bts, b)) = &self.before {
            if *bts <= t {
                out.clone_from(b);
                return Some(*bts);
            }
        }
        let mut found = None;
        self.for_each_in(i64::MIN, t, |ts, h| {
            found = Some(ts);
            out.clone_from(h);
        });
        found
    }

    /// Calls `f` with every sample in `from..=to`, oldest first; chunks outside the range
    /// are skipped undecoded.
    pub fn for_each_in(&self, from: i64, to: i64, mut f: impl FnMut(i64, &NativeHistogram)) {
        let mut it = self.range(from, to);
        while let Some((ts, h)) = it.current() {
            f(ts, h);
            it.advance();
        }
    }

    /// A cursor over the samples in `from..=to`, oldest first, positioned on the first.
    pub fn range(&self, from: i64, to: i64) -> HistCursor<'_> {
        let mut c = HistCursor {
            ring: self,
            next_chunk: if from > to {
                usize::MAX
            } else {
                self.closed.partition_point(|c| c.last_ts < from)
            },
            chunk: None,
            st: State::default(),
            prev: NativeHistogram::default(),
            from,
            to,
            valid: false,
        };
        c.advance();
        c
    }
    /// Heap bytes held (capacity), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        let h = |x: &NativeHistogram| {
            (x.negative.capacity() + x.positive.capacity()) * std::mem::size_of::<Bucket>()
        };
        self.closed.capacity() * std::mem::size_of::<Chunk>()
            + self.closed.iter().map(|c| c.data.len()).sum::<usize>()
            + self.open.capacity()
            + h(&self.st.h)
            + self.before.as_ref().map_or(0, |(_, b)| h(b))
    }

    /// Bytes of encoded samples (closed and open chunks), for the bytes-per-sample figure.
    pub fn encoded_bytes(&self) -> usize {
        self.closed.iter().map(|c| c.data.len()).sum::<usize>() + self.open.len()
    }

    /// Appends a self-describing encoding of the whole buffer to `out`:
    ///
    /// ```text
    /// u8 0xe1 | varint chunks | chunks × (i64le first_ts, varint count, varint len, data)
    /// ```
    /// (the open chunk last, if it holds samples).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FORMAT_TAG);
        let open = u64::from(self.st.n > 0);
        put_varint(out, self.closed.len() as u64 + open);
        let mut chunk = |first_ts: i64, count: u32, data: &[u8]| {
            out.extend_from_slice(&first_ts.to_le_bytes());
            put_varint(out, u64::from(count));
            put_varint(out, data.len() as u64);
            out.extend_from_slice(data);
        };
        for c in &self.closed {
            chunk(c.first_ts, c.count, &c.data);
        }
        if self.st.n > 0 {
            chunk(self.open_first_ts, self.st.n, &self.open);
        }
    }

    /// Inverse of [`encode_into`](Self::encode_into): the buffer and the bytes consumed, or
    /// `None` for corrupt or truncated input. Every chunk is decoded and checked (its count,
    /// strictly increasing timestamps across chunks, no trailing bytes).
    pub fn decode_from(bytes: &[u8]) -> Option<(HistRing, usize)> {
        let mut pos = 0;
        if *bytes.first()? != FORMAT_TAG {
            return None;
        }
        pos += 1;
        let chunks = get_varint(bytes, &mut pos)?;
        let mut ring = HistRing::default();
        for k in 0..chunks {
            let first_ts = i64::from_le_bytes(bytes.get(pos..pos + 8)?.try_into().ok()?);
            pos += 8;
            let count = u32::try_from(get_varint(bytes, &mut pos)?).ok()?;
            let len = usize::try_from(get_varint(bytes, &mut pos)?).ok()?;
            let data = bytes.get(pos..pos.checked_add(len)?)?;
            pos += len;
            if count == 0 || count > MAX_CHUNK_SAMPLES {
                return None;
            }
            // Decode it whole, checking it as we go.
            let mut st = State::default();
            let mut prev = NativeHistogram::default();
            let mut p = 0;
            let mut before: Option<(i64, NativeHistogram)> = None;
            for i in 0..count {
                if i == 0 {
                    prev.clear();
                } else {
                    prev.clone_from(&st.h);
                    before = Some((st.ts, st.h.clone()));
                }
                let prev_ts = st.ts;
                decode(data, &mut p, &mut st, &prev, first_ts)?;
                if i > 0 && st.ts <= prev_ts {
                    return None;
                }
            }
            if p != data.len() || (ring.len > 0 && first_ts <= ring.st.ts) {
                return None;
            }
            let last = k + 1 == chunks;
            if before.is_none() && ring.len > 0 {
                before = Some((ring.st.ts, ring.st.h.clone()));
            }
            ring.len += count as usize;
            ring.before = before;
            if last && count < MAX_CHUNK_SAMPLES && data.len() < MAX_CHUNK_BYTES {
                // The open chunk: appends continue it.
                ring.open = data.to_vec();
                ring.open_first_ts = first_ts;
                ring.st = st;
            } else {
                ring.closed.push_back(Chunk {
                    first_ts,
                    last_ts: st.ts,
                    count,
                    data: data.into(),
                });
                ring.st = State { n: 0, ..st };
            }
        }
        Some((ring, pos))
    }
}

/// A position among a [`HistRing`]'s samples (a lending iterator: the sample is decoded
/// into the cursor and borrowed from it).
pub struct HistCursor<'a> {
    ring: &'a HistRing,
    /// The next closed chunk to enter (`closed.len()`: the open one; beyond: none).
    next_chunk: usize,
    /// The chunk being read: its bytes, first timestamp, samples, and the read position.
    chunk: Option<(&'a [u8], i64, u32, usize)>,
    st: State,
    prev: NativeHistogram,
    from: i64,
    to: i64,
    valid: bool,
}

impl HistCursor<'_> {
    /// The sample under the cursor, if any is left.
    pub fn current(&self) -> Option<(i64, &NativeHistogram)> {
        self.valid.then_some((self.st.ts, &self.st.h))
    }

    /// Moves to the next sample in range.
    pub fn advance(&mut self) {
        self.valid = false;
        loop {
            if self.chunk.is_none() && !self.enter_next() {
                return;
            }
            let (data, first_ts, count, mut pos) = self.chunk.expect("entered");
            if self.st.n >= count {
                self.chunk = None;
                continue;
            }
            if self.st.n == 0 {
                self.prev.clear();
            } else {
                self.prev.clone_from(&self.st.h);
            }
            if decode(data, &mut pos, &mut self.st, &self.prev, first_ts).is_none() {
                debug_assert!(false, "a chunk this ring wrote does not decode");
                self.next_chunk = usize::MAX;
                self.chunk = None;
                return;
            }
            self.chunk = Some((data, first_ts, count, pos));
            if self.st.ts > self.to {
                self.next_chunk = usize::MAX;
                self.chunk = None;
                return;
            }
            if self.st.ts >= self.from {
                self.valid = true;
                return;
            }
        }
    }

    fn enter_next(&mut self) -> bool {
        let ring = self.ring;
        let closed = ring.closed.len();
        let (data, first_ts, count): (&[u8], i64, u32) = match self.next_chunk {
            k if k < closed => {
                let c = &ring.closed[k];
                (&c.data, c.first_ts, c.count)
            }
            k if k == closed && ring.st.n > 0 => (&ring.open, ring.open_first_ts, ring.st.n),
            _ => return false,
        };
        self.next_chunk += 1;
        if first_ts > self.to {
            self.next_chunk = usize::MAX;
            return false;
        }
        self.st.n = 0;
        self.chunk = Some((data, first_ts, count, 0));
        true
    }
}

/// Appends the coding of `(ts, h)` to `out` against `prev` (the chunk's previous sample, or
/// an empty histogram for its first), updating `st` to the new sample.
fn encode(out: &mut Vec<u8>, st: &mut State, prev: &NativeHistogram, ts: i64, h: &NativeHistogram) {
    if st.n == 1 {
        let dts = ts.wrapping_sub(st.ts);
        put_varint(out, zigzag(dts));
        st.dts = dts;
    } else if st.n > 1 {
        let dts = ts.wrapping_sub(st.ts);
        put_varint(out, zigzag(dts.wrapping_sub(st.dts)));
        st.dts = dts;
    }
    let layout = st.n == 0 || !h.same_layout(prev);
    let int = h.integer_valued() && prev.integer_valued();
    let sum_same = st.n > 0 && h.sum.to_bits() == prev.sum.to_bits();
    let mut flags = hint_bits(h.reset_hint) << 1;
    if h.float {
        flags |= F_FLOAT;
    }
    if layout {
        flags |= F_LAYOUT;
    }
    if int {
        flags |= F_INT;
    }
    if sum_same {
        flags |= F_SUM_SAME;
    }
    out.push(flags);
    if layout {
        put_varint(out, zigzag(i64::from(h.schema)));
        out.extend_from_slice(&h.zero_threshold.to_bits().to_le_bytes());
        put_spans(out, &h.negative);
        put_spans(out, &h.positive);
    }
    let value = |out: &mut Vec<u8>, v: f64, p: f64| {
        if int {
            put_varint(out, zigzag((v as i64).wrapping_sub(p as i64)));
        } else {
            put_varint(out, v.to_bits() ^ p.to_bits());
        }
    };
    value(out, h.count, prev.count);
    value(out, h.zero_count, prev.zero_count);
    for (side, prev_side) in [(&h.negative, &prev.negative), (&h.positive, &prev.positive)] {
        let mut j = 0;
        for b in side {
            value(out, b.count, count_at(prev_side, &mut j, b.index));
        }
    }
    if !sum_same {
        put_xor(out, h.sum.to_bits() ^ prev.sum.to_bits());
    }
    st.n += 1;
    st.ts = ts;
    st.h.clone_from(h);
}

/// Decodes one sample at `data[*pos..]` against `prev` into `st`.
fn decode(
    data: &[u8],
    pos: &mut usize,
    st: &mut State,
    prev: &NativeHistogram,
    first_ts: i64,
) -> Option<()> {
    let ts = match st.n {
        0 => first_ts,
        1 => {
            let dts = unzigzag(get_varint(data, pos)?);
            st.dts = dts;
            st.ts.wrapping_add(dts)
        }
        _ => {
            let dts = st.dts.wrapping_add(unzigzag(get_varint(data, pos)?));
            st.dts = dts;
            st.ts.wrapping_add(dts)
        }
    };
    let flags = *data.get(*pos)?;
    *pos += 1;
    if flags & !0x3f != 0 {
        return None;
    }
    let layout = flags & F_LAYOUT != 0;
    let int = flags & F_INT != 0;
    if st.n == 0 && (!layout || flags & F_SUM_SAME != 0) {
        return None;
    }
    let h = &mut st.h;
    h.float = flags & F_FLOAT != 0;
    h.reset_hint = hint_of(flags >> 1);
    if layout {
        h.schema = i8::try_from(unzigzag(get_varint(data, pos)?)).ok()?;
        h.zero_threshold = f64::from_bits(u64::from_le_bytes(
            data.get(*pos..*pos + 8)?.try_into().ok()?,
        ));
        *pos += 8;
        get_spans(data, pos, &mut h.negative)?;
        get_spans(data, pos, &mut h.positive)?;
    } else {
        h.schema = prev.schema;
        h.zero_threshold = prev.zero_threshold;
        h.negative.clone_from(&prev.negative);
        h.positive.clone_from(&prev.positive);
    }
    let value = |data: &[u8], pos: &mut usize, p: f64| -> Option<f64> {
        let u = get_varint(data, pos)?;
        Some(if int {
            (p as i64).wrapping_add(unzigzag(u)) as f64
        } else {
            f64::from_bits(u ^ p.to_bits())
        })
    };
    h.count = value(data, pos, prev.count)?;
    h.zero_count = value(data, pos, prev.zero_count)?;
    for (side, prev_side) in [
        (&mut h.negative, &prev.negative),
        (&mut h.positive, &prev.positive),
    ] {
        let mut j = 0;
        for b in side.iter_mut() {
            b.count = value(data, pos, count_at(prev_side, &mut j, b.index))?;
        }
    }
    h.sum = if flags & F_SUM_SAME != 0 {
        prev.sum
    } else {
        f64::from_bits(get_xor(data, pos)? ^ prev.sum.to_bits())
    };
    st.n += 1;
    st.ts = ts;
    Some(())
}

/// The count of bucket `index` in `buckets` (ascending), 0 where it has none; `j` walks
/// forward from the previous lookup (indices are asked in ascending order).
fn count_at(buckets: &[Bucket], j: &mut usize, index: i32) -> f64 {
    while *j < buckets.len() && buckets[*j].index < index {
        *j += 1;
    }
    buckets
        .get(*j)
        .filter(|x| x.index == index)
        .map_or(0.0, |x| x.count)
}

/// Buckets' indices as Prometheus spans: `(offset, length)`, the first offset absolute.
fn put_spans(out: &mut Vec<u8>, buckets: &[Bucket]) {
    let mut spans: Vec<(i64, u64)> = Vec::new();
    let mut next = 0i64;
    for (k, b) in buckets.iter().enumerate() {
        let i = i64::from(b.index);
        match spans.last_mut() {
            Some((_, len)) if i == next => *len += 1,
            _ => spans.push((if k == 0 { i } else { i - next }, 1)),
        }
        next = i + 1;
    }
    put_varint(out, spans.len() as u64);
    for (offset, len) in spans {
        put_varint(out, zigzag(offset));
        put_varint(out, len);
    }
}

fn get_spans(data: &[u8], pos: &mut usize, out: &mut Vec<Bucket>) -> Option<()> {
    out.clear();
    let n = get_varint(data, pos)?;
    let mut next = 0i64;
    let mut total = 0u64;
    for k in 0..n {
        let offset = unzigzag(get_varint(data, pos)?);
        let len = get_varint(data, pos)?;
        total = total.checked_add(len)?;
        if total > MAX_BUCKETS || (k > 0 && offset < 0) || len == 0 {
            return None;
        }
        let mut i = if k == 0 {
            offset
        } else {
            next.checked_add(offset)?
        };
        for _ in 0..len {
            out.push(Bucket {
                index: i32::try_from(i).ok()?,
                count: 0.0,
            });
            i += 1;
        }
        next = i;
    }
    Some(())
}

/// An XOR of two f64s: a byte with its leading and trailing zero bytes, then the rest.
fn put_xor(out: &mut Vec<u8>, x: u64) {
    if x == 0 {
        out.push(0x80);
        return;
    }
    let lead = x.leading_zeros() / 8;
    let trail = x.trailing_zeros() / 8;
    out.push(((lead as u8) << 4) | trail as u8);
    let bytes = x.to_be_bytes();
    out.extend_from_slice(&bytes[lead as usize..8 - trail as usize]);
}

fn get_xor(data: &[u8], pos: &mut usize) -> Option<u64> {
    let head = *data.get(*pos)?;
    *pos += 1;
    if head == 0x80 {
        return Some(0);
    }
    let (lead, trail) = ((head >> 4) as usize, (head & 0x0f) as usize);
    if lead + trail >= 8 {
        return None;
    }
    let mid = data.get(*pos..*pos + 8 - lead - trail)?;
    *pos += mid.len();
    let mut bytes = [0u8; 8];
    bytes[lead..8 - trail].copy_from_slice(mid);
    let x = u64::from_be_bytes(bytes);
    // The canonical form only: what `put_xor` writes for this value.
    (x != 0
        && (x.leading_zeros() / 8) as usize == lead
        && (x.trailing_zeros() / 8) as usize == trail)
        .then_some(x)
}

fn get_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let b = *data.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A latency histogram scraped every `step` ms: buckets fill as requests arrive, new
    /// buckets appear, now and then a reset (a restart), a stale marker, a float histogram.
    fn history(seed: u64, n: usize) -> Vec<(i64, NativeHistogram)> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::new();
        let mut h = NativeHistogram {
            schema: 3,
            zero_threshold: 2.938735877055719e-39,
            ..Default::default()
        };
        let mut ts = 1_700_000_000_000i64;
        for _ in 0..n {
            ts += 15_000 + (rng.f64() * 40.0) as i64 - 20;
            let r = rng.f64();
            if r < 0.02 {
                // A restart: everything from zero, maybe another schema.
                h.negative.clear();
                h.positive.clear();
                h.count = 0.0;
                h.sum = 0.0;
                h.zero_count = 0.0;
                h.reset_hint = ResetHint::Yes;
                h.schema = [0, 1, 3, 5, 8, -4][(rng.f64() * 6.0) as usize];
            } else {
                h.reset_hint = if r < 0.5 {
                    ResetHint::No
                } else {
                    ResetHint::Unknown
                };
            }
            let stale = rng.f64() < 0.02;
            h.float = rng.f64() < 0.1;
            // Requests of this scrape, each into its bucket.
            let reqs = (rng.f64() * 60.0) as usize;
            for _ in 0..reqs {
                let v = (rng.f64() * 3.0).exp() * 0.01;
                let idx = (v.log2() * f64::powi(2.0, h.schema as i32)).ceil() as i32;
                let side = if rng.f64() < 0.01 {
                    &mut h.negative
                } else {
                    &mut h.positive
                };
                match side.binary_search_by_key(&idx, |b| b.index) {
                    Ok(k) => side[k].count += 1.0,
                    Err(k) => side.insert(
                        k,
                        Bucket {
                            index: idx,
                            count: 1.0,
                        },
                    ),
                }
                h.count += 1.0;
                h.sum += v;
            }
            if rng.f64() < 0.05 {
                h.zero_count += 1.0;
                h.count += 1.0;
            }
            let mut sample = h.clone();
            if h.float && rng.f64() < 0.5 {
                // A float histogram with fractional counts (a rate, a recording rule).
                for b in sample.positive.iter_mut() {
                    b.count *= 0.37;
                }
                sample.count *= 0.37;
            }
            if stale {
                sample = NativeHistogram {
                    sum: f64::from_bits(crate::store::STALE_NAN_BITS),
                    ..Default::default()
                };
            }
            if rng.f64() < 0.01 {
                sample.sum = f64::NAN;
            }
            out.push((ts, sample));
        }
        out
    }

    fn same(a: &NativeHistogram, b: &NativeHistogram) -> bool {
        a.schema == b.schema
            && a.reset_hint == b.reset_hint
            && a.float == b.float
            && a.count.to_bits() == b.count.to_bits()
            && a.sum.to_bits() == b.sum.to_bits()
            && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
            && a.zero_count.to_bits() == b.zero_count.to_bits()
            && a.negative.len() == b.negative.len()
            && a.positive.len() == b.positive.len()
            && a.negative
                .iter()
                .chain(&a.positive)
                .zip(b.negative.iter().chain(&b.positive))
                .all(|(x, y)| x.index == y.index && x.count.to_bits() == y.count.to_bits())
    }

    /// `n` samples of [`history`] and a ring holding them.
    fn filled(seed: u64, n: usize) -> (Vec<(i64, NativeHistogram)>, HistRing) {
        let hist = history(seed, n);
        let mut ring = HistRing::new();
        for (t, h) in &hist {
            assert_eq!(ring.push(*t, h, i64::MAX), Append::Appended);
        }
        (hist, ring)
    }

    fn all(ring: &HistRing) -> Vec<(i64, NativeHistogram)> {
        let mut v = Vec::new();
        ring.for_each_in(i64::MIN, i64::MAX, |t, h| v.push((t, h.clone())));
        v
    }

    #[test]
    fn samples_come_back_bit_exact_across_chunks_and_snapshots() {
        for seed in 1..20 {
            let hist = history(seed, 700);
            let mut ring = HistRing::new();
            for (t, h) in &hist {
                assert_eq!(ring.push(*t, h, i64::MAX), Append::Appended);
            }
            assert_eq!(ring.len(), hist.len());
            assert!(ring.closed.len() >= 5, "several chunks");
            let got = all(&ring);
            assert_eq!(got.len(), hist.len());
            for ((t, h), (u, g)) in hist.iter().zip(&got) {
                assert_eq!(t, u);
                assert!(same(h, g), "seed {seed} at {t}: {h:?} came back as {g:?}");
            }
            // A snapshot round trip, and appends continue after it.
            let mut bytes = Vec::new();
            ring.encode_into(&mut bytes);
            let (mut back, used) = HistRing::decode_from(&bytes).expect("decodes");
            assert_eq!(used, bytes.len());
            let more = history(seed + 100, 50);
            let shift = hist.last().unwrap().0 - more[0].0 + 1;
            for (t, h) in &more {
                assert_eq!(back.push(t + shift, h, i64::MAX), Append::Appended);
                ring.push(t + shift, h, i64::MAX);
            }
            let (a, b) = (all(&ring), all(&back));
            assert_eq!(a.len(), b.len());
            assert!(a
                .iter()
                .zip(&b)
                .all(|(x, y)| x.0 == y.0 && same(&x.1, &y.1)));
            assert!(same(back.last().unwrap().1, ring.last().unwrap().1));
        }
    }

    #[test]
    fn the_sample_at_or_before_a_time_is_found_anywhere() {
        let (hist, ring) = filled(7, 400);
        let mut out = NativeHistogram::default();
        assert_eq!(ring.at_or_before(hist[0].0 - 1, &mut out), None);
        for k in [0, 1, 119, 120, 121, 250, 398, 399] {
            let (t, h) = &hist[k];
            assert_eq!(ring.at_or_before(*t, &mut out), Some(*t));
            assert!(same(&out, h));
            // Just before the next one.
            if let Some((next, _)) = hist.get(k + 1) {
                assert_eq!(ring.at_or_before(next - 1, &mut out), Some(*t));
            }
        }
        // A range in the middle.
        let mut seen = Vec::new();
        ring.for_each_in(hist[100].0, hist[260].0, |t, _| seen.push(t));
        assert_eq!(
            seen,
            hist[100..=260].iter().map(|x| x.0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn old_equal_and_expired_samples_are_treated_as_floats_are() {
        let hist = history(3, 300);
        let mut ring = HistRing::new();
        for (t, h) in &hist[..200] {
            ring.push(*t, h, 3_600_000);
        }
        assert_eq!(
            ring.push(hist[199].0, &hist[0].1, 3_600_000),
            Append::Duplicate
        );
        assert_eq!(
            ring.push(hist[10].0, &hist[0].1, 3_600_000),
            Append::OutOfOrder
        );
        // 200 samples at 15 s is 50 minutes: an hour's retention drops nothing yet.
        assert_eq!(ring.len(), 200);
        for (t, h) in &hist[200..] {
            ring.push(*t, h, 3_600_000);
        }
        // 75 minutes in: whole chunks older than an hour went, nothing newer.
        let kept = all(&ring);
        let dropped = hist.len() - kept.len();
        assert!(dropped > 0 && kept.len() == ring.len());
        assert_eq!(kept[0].0, hist[dropped].0);
        assert_eq!(ring.first_ts(), Some(hist[dropped].0));
        assert!(hist[dropped - 1].0 < hist[299].0 - 3_600_000);
        ring.truncate_before(hist[299].0 + 1);
        assert!(ring.is_empty());
        assert_eq!(ring.last().map(|x| x.0), None);
    }

    #[test]
    fn a_damaged_snapshot_is_refused_never_a_panic() {
        let (_, ring) = filled(11, 300);
        let mut bytes = Vec::new();
        ring.encode_into(&mut bytes);
        for cut in 0..bytes.len() {
            assert!(
                HistRing::decode_from(&bytes[..cut]).is_none(),
                "truncated at {cut}"
            );
        }
        let mut rng = Rng::new(5);
        for _ in 0..3000 {
            let mut b = bytes.clone();
            let i = (rng.f64() * b.len() as f64) as usize;
            b[i] ^= 1 << (rng.f64() * 8.0) as u32;
            // Anything but a panic; what decodes keeps its invariants.
            if let Some((r, _)) = HistRing::decode_from(&b) {
                let v = all(&r);
                assert_eq!(v.len(), r.len());
                assert!(v.windows(2).all(|w| w[0].0 < w[1].0));
            }
        }
    }
}
