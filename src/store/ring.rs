//! Per-series compressed sample ring: `(timestamp ms, f64)` samples flow in through `push` in
//! event-time order, ordered samples flow out through `iter`/`range`, and whole-buffer snapshots
//! flow out and back in through `encode_into`/`decode_from`. Depends on `std` only, no `unsafe`.

#![forbid(unsafe_code)]

// # Design
//
// Samples are packed into chunks of at most `MAX_CHUNK_SAMPLES` samples (or
// `MAX_CHUNK_BYTES` bytes). The newest ("open") chunk is written bit by bit into a growable
// `Vec<u8>` plus a 64-bit accumulator; when it is full it is shrunk into a `Box<[u8]>` and moved
// into a `VecDeque` of closed chunks, which retention drops from the front whole.
//
// Each chunk is decodable on its own: every adaptive statistic below restarts at a chunk's first
// sample, and the encoder and the decoder update the same state (`Codec`) with the same rules, so
// no per-sample mode flags are stored.
//
// ## Chunk bit stream (MSB first)
//
// ```text
// sample 0:  value: 64 raw bits                     (its timestamp is Chunk::first_ts)
// sample 1:  ts:    LP(delta)                       then VALUE
// sample n≥2 ts:    RICE(zigzag(delta - prev_delta)) then VALUE
//
// LP(u), u != 0:   6 bits (bitlen(u)-1), then the low bitlen(u)-1 bits of u (top 1 implied)
// RICE_k(u):       (u >> k) ones, a 0, then the low k bits of u;    if (u >> k) >= 16:
//                  16 ones then LP(u) (for values: 16 ones, a 0 bit, LP(u))
//                  k adapts to a decaying mean of recent u (LOCO-I style), so it costs about the
//                  entropy of the residuals whatever their scale.
// VALUE:           if the previous value is an integer in ±2^53 and the adaptive mode (below) is
//                  "integer":   RICE_k(zigzag(v - prediction))
//                             | 16 ones, 1 bit 1, XOR      (the new value is not such an integer)
//                  otherwise:   XOR
// XOR (Gorilla):   x = bits(v) ^ bits(prev)
//                  '0' x == 0 | '10' + bits inside the previous leading/trailing-zero window
//                  | '11' + 6 bits leading zeros + 6 bits (significant bits - 1) + significant bits
// ```
//
// "Integer" means an integer at the chunk's current decimal scale s (0..=3): the value is
// exactly i / 10^s as f64 division rounds it, so counters kept in hundredths (CPU seconds are
// clock ticks / 100) are coded by their integer steps, not by XOR. s starts at 0 in every chunk
// and, after a value that is no integer at s, both sides move to the smallest scale at which it
// is one (`Codec::set_prev_val`); no scale is ever written. Format version 1 (tag 0xd1) had
// only s = 0 and is still read.
//
// Integer mode picks one of three codings per sample, from decaying cost estimates that both
// sides compute after each integer→integer step: delta-of-delta (counters with a steady rate),
// delta (gauges doing a random walk, histogram buckets that rarely move) or XOR (e.g. byte
// gauges that move in whole 4 KiB pages: their XOR has long trailing zero runs).
//
// All timestamp arithmetic wraps (mod 2^64), so any strictly increasing i64 sequence, including
// jumps from `i64::MIN` to `i64::MAX`, round-trips exactly. Values round-trip bit-exactly
// (every NaN payload, -0.0, infinities), because integers only take the integer path when
// `(i as f64).to_bits() == bits`.

use std::collections::VecDeque;

/// Samples per chunk. 240 samples = 1 h at a 15 s scrape interval. Why not smaller: each chunk
/// carries ~45 bytes of fixed cost (32 B `Chunk` slot in the deque, 8 B raw first value, ~3 B
/// first delta, 2 B count), i.e. ~0.19 B/sample at 240 against ~0.38 B/sample at 120, which is a
/// large share of a ~1 B/sample budget. Why not larger: retention drops whole chunks, so a series
/// holds on average half a chunk (30 min) beyond its retention, and a range query decodes up to
/// two partially covered chunks (≤ 480 samples, a few µs).
const MAX_CHUNK_SAMPLES: u32 = 240;
/// Byte cap of a chunk, so incompressible float series (~8-10 B/sample) keep ~100-sample chunks
/// instead of 2.4 KB ones.
const MAX_CHUNK_BYTES: usize = 1024;

/// Unary prefix length at which a Rice code escapes to a length-prefixed raw number.
const RICE_LIMIT: u32 = 16;
/// Decay of the running means / costs: new = old - old/8 + x (memory of ~8 samples).
const DECAY_SHIFT: u32 = 3;
/// Initial timestamp residual sum: mean 2, i.e. Rice k = 1 for the first residuals of a chunk.
const TS_MEAN_START: u32 = 2 << DECAY_SHIFT;
/// No XOR window established yet in this chunk.
const NO_WINDOW: u8 = 0xff;
/// Snapshot format tag (version 2: values may be decimal-scaled integers, see `as_scaled`).
const FORMAT_TAG: u8 = 0xd2;
/// Version 1, before decimal scaling: still read (and re-encoded) so that an upgrade keeps
/// the snapshot it finds.
const FORMAT_TAG_V1: u8 = 0xd1;
/// Largest decimal scale tried: values that are exact multiples of 10^-3 take the integer path.
const MAX_SCALE: u8 = 3;
const POW10: [f64; MAX_SCALE as usize + 1] = [1.0, 10.0, 100.0, 1000.0];

/// Outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    Appended,
    Duplicate,
    OutOfOrder,
}

/// Compressed, append-only, retention-bounded sample buffer of one series.
pub struct RingBuffer {
    /// Closed chunks, oldest first, all older than the open chunk.
    closed: VecDeque<Chunk>,
    /// Open chunk (may hold 0 samples) and the newest sample.
    head: Head,
    /// Retained samples (closed + open).
    len: usize,
    /// `last_ts` of the oldest closed chunk (`i64::MAX` without one): the retention check on
    /// every push reads it here instead of in the deque's own allocation, one cache line
    /// fewer per sample for a series that has closed chunks.
    oldest_last: i64,
}

/// A closed, immutable chunk.
struct Chunk {
    first_ts: i64,
    last_ts: i64,
    /// Bit stream zero-padded to whole bytes, followed by the sample count as u16 little-endian.
    data: Box<[u8]>,
}

impl Chunk {
    fn count(&self) -> u32 {
        let n = self.data.len();
        u16::from_le_bytes([self.data[n - 2], self.data[n - 1]]) as u32
    }
    fn bits(&self) -> &[u8] {
        &self.data[..self.data.len() - 2]
    }
}

/// The open chunk: its writer, its first timestamp and the encoder state.
struct Head {
    w: BitWriter,
    first_ts: i64,
    /// `st.n` is the open chunk's sample count; `st.prev_ts`/`st.prev_val` is the newest sample
    /// of the whole buffer (kept when the chunk closes), meaningful while `len > 0`.
    st: Codec,
}

impl Head {
    fn new() -> Self {
        Head {
            w: BitWriter::default(),
            first_ts: 0,
            st: Codec::fresh(0, 0),
        }
    }
    fn full(&self) -> bool {
        self.st.n >= MAX_CHUNK_SAMPLES || self.w.buf.len() >= MAX_CHUNK_BYTES
    }
    fn append(&mut self, ts: i64, bits: u64) {
        if self.st.n == 0 {
            self.first_ts = ts;
        }
        self.st.encode(&mut self.w, ts, bits);
    }
    fn reader(&self) -> BitReader<'_> {
        BitReader::new(&self.w.buf, self.w.acc, self.w.acc_bits)
    }
}

impl Default for RingBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl RingBuffer {
    /// An empty buffer; does not allocate.
    pub fn new() -> Self {
        RingBuffer {
            closed: VecDeque::new(),
            head: Head::new(),
            len: 0,
            oldest_last: i64::MAX,
        }
    }

    /// Appends (ts, v). ts < last ts => OutOfOrder (not stored). ts == last ts => Duplicate
    /// (not stored; a retried push repeats samples; the first value wins).
    /// After appending, drops whole chunks whose newest sample is older than ts - retention_ms.
    pub fn push(&mut self, ts: i64, v: f64, retention_ms: i64) -> Append {
        if self.len > 0 {
            let last = self.head.st.prev_ts;
            if ts < last {
                return Append::OutOfOrder;
            }
            if ts == last {
                return Append::Duplicate;
            }
        }
        self.append_unchecked(ts, v.to_bits());
        self.drop_closed_before(ts.saturating_sub(retention_ms));
        Append::Appended
    }

    /// Appends a sample known to be newer than the newest one; closes the chunk when full.
    fn append_unchecked(&mut self, ts: i64, bits: u64) {
        self.head.append(ts, bits);
        self.len += 1;
        if self.head.full() {
            self.close_head();
        }
    }

    /// Moves the open chunk, shrunk to fit, into `closed`; keeps the newest sample in `head.st`.
    fn close_head(&mut self) {
        let h = &mut self.head;
        let mut data = std::mem::take(&mut h.w.buf);
        let tail = h.w.acc.to_be_bytes();
        data.extend_from_slice(&tail[..h.w.acc_bits.div_ceil(8) as usize]);
        data.extend_from_slice(&(h.st.n as u16).to_le_bytes());
        if self.closed.len() == self.closed.capacity() {
            // Grow the deque one slot at a time: chunks close rarely (once per hour at 15 s), and
            // doubling would leave up to half of a long-lived series' slots empty.
            self.closed.reserve_exact(1);
        }
        self.closed.push_back(Chunk {
            first_ts: h.first_ts,
            last_ts: h.st.prev_ts,
            data: data.into_boxed_slice(),
        });
        h.w = BitWriter::default();
        h.st = Codec::with_format(h.st.prev_ts, h.st.prev_val, h.st.decimal);
        self.sync_oldest();
    }

    /// Re-reads [`Self::oldest_last`] after `closed` changed at its front or became non-empty.
    fn sync_oldest(&mut self) {
        self.oldest_last = self.closed.front().map_or(i64::MAX, |c| c.last_ts);
    }

    /// Drops closed chunks whose newest sample is < `cutoff`.
    fn drop_closed_before(&mut self, cutoff: i64) {
        if self.oldest_last >= cutoff {
            return;
        }
        while let Some(c) = self.closed.front() {
            if c.last_ts >= cutoff {
                break;
            }
            self.len -= c.count() as usize;
            self.closed.pop_front();
        }
        self.sync_oldest();
    }

    /// Drops the oldest closed chunks until at most `max` samples (plus the open chunk's
    /// growth) remain: the per-series bound on memory, beside retention.
    pub fn keep_at_most(&mut self, max: usize) {
        while self.len > max {
            let Some(c) = self.closed.pop_front() else {
                break;
            };
            self.len -= c.count() as usize;
        }
        self.sync_oldest();
    }

    /// Newest sample, O(1).
    pub fn last(&self) -> Option<(i64, f64)> {
        (self.len > 0).then(|| (self.head.st.prev_ts, f64::from_bits(self.head.st.prev_val)))
    }

    /// Oldest retained sample's timestamp.
    pub fn first_ts(&self) -> Option<i64> {
        match self.closed.front() {
            Some(c) => Some(c.first_ts),
            None => (self.head.st.n > 0).then_some(self.head.first_ts),
        }
    }

    /// Retained samples.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Samples with from <= ts <= to, oldest first; skips chunks outside the range without
    /// decoding them (binary search on the closed chunks' newest timestamps).
    pub fn range(&self, from: i64, to: i64) -> RangeIter<'_> {
        let next_chunk = if from > to {
            usize::MAX
        } else {
            self.closed.partition_point(|c| c.last_ts < from)
        };
        RangeIter {
            rb: self,
            next_chunk,
            cur: None,
            from,
            to,
        }
    }

    /// All samples, oldest first.
    pub fn iter(&self) -> RangeIter<'_> {
        self.range(i64::MIN, i64::MAX)
    }

    /// Drop whole chunks whose newest sample is < ts (retention sweep for idle series). If that
    /// drops the open chunk too, the buffer becomes empty and behaves like a new one.
    pub fn truncate_before(&mut self, ts: i64) {
        self.drop_closed_before(ts);
        if self.closed.is_empty() && self.len > 0 && self.head.st.prev_ts < ts {
            // Only the open chunk (or nothing, if it had just closed) is left, and it is too old.
            self.head = Head::new();
            self.len = 0;
        }
        if self.len == 0 {
            self.head = Head::new();
        }
    }

    /// Heap bytes held (capacity, not length), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.closed.capacity() * std::mem::size_of::<Chunk>()
            + self.closed.iter().map(|c| c.data.len()).sum::<usize>()
            + self.head.w.buf.capacity()
    }

    /// Appends a self-describing encoding of the whole buffer to `out`:
    ///
    /// ```text
    /// u8 0xd2 | varint n_closed | n_closed × (i64le first_ts, i64le last_ts, varint len, data)
    ///         | varint head_samples | if > 0: i64le first_ts, varint len, bit stream bytes
    /// ```
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Buffers are only ever built in the current format; version 1 exists for tests.
        out.push(if self.head.st.decimal {
            FORMAT_TAG
        } else {
            FORMAT_TAG_V1
        });
        put_varint(out, self.closed.len() as u64);
        for c in &self.closed {
            out.extend_from_slice(&c.first_ts.to_le_bytes());
            out.extend_from_slice(&c.last_ts.to_le_bytes());
            put_varint(out, c.data.len() as u64);
            out.extend_from_slice(&c.data);
        }
        let h = &self.head;
        put_varint(out, h.st.n as u64);
        if h.st.n > 0 {
            out.extend_from_slice(&h.first_ts.to_le_bytes());
            let tail = h.w.acc.to_be_bytes();
            let tail = &tail[..h.w.acc_bits.div_ceil(8) as usize];
            put_varint(out, (h.w.buf.len() + tail.len()) as u64);
            out.extend_from_slice(&h.w.buf);
            out.extend_from_slice(tail);
        }
    }

    /// Inverse of [`encode_into`](Self::encode_into). Returns the buffer and the number of bytes
    /// consumed, or `None` for any corrupt or truncated input. Every chunk is fully decoded and
    /// checked (sample count, strictly increasing timestamps, first/last timestamps, padding), so
    /// a decoded buffer upholds the same invariants as one built by `push`.
    pub fn decode_from(bytes: &[u8]) -> Option<(RingBuffer, usize)> {
        let mut p = Parser { b: bytes, pos: 0 };
        // Version 1 chunks are decoded and their samples appended anew (re-encoded).
        let decimal = match p.byte()? {
            FORMAT_TAG => true,
            FORMAT_TAG_V1 => false,
            _ => return None,
        };
        let n_closed = p.varint()?;
        // Each chunk takes ≥ 19 bytes, which bounds the allocation for hostile counts.
        if n_closed > (bytes.len() / 19) as u64 {
            return None;
        }
        let mut rb = RingBuffer::new();
        rb.closed.reserve_exact(n_closed as usize);
        let mut newest: Option<(i64, u64)> = None;
        for _ in 0..n_closed {
            let first_ts = p.i64le()?;
            let last_ts = p.i64le()?;
            let len = usize::try_from(p.varint()?).ok()?;
            let data = p.take(len)?;
            if len < 2 {
                return None;
            }
            let count = u16::from_le_bytes([data[len - 2], data[len - 1]]) as u32;
            let rd = BitReader::new(&data[..len - 2], 0, 0);
            let last = validate_chunk(rd, first_ts, count, newest.map(|s| s.0), decimal)?;
            if last.0 != last_ts {
                return None;
            }
            newest = Some(last);
            if decimal {
                rb.len += count as usize;
                rb.closed.push_back(Chunk {
                    first_ts,
                    last_ts,
                    data: data.into(),
                });
            } else {
                let mut rd = BitReader::new(&data[..len - 2], 0, 0);
                let mut st = Codec::with_format(0, 0, false);
                for _ in 0..count {
                    let (ts, bits) = st.decode(&mut rd, first_ts)?;
                    rb.append_unchecked(ts, bits);
                }
            }
        }
        rb.sync_oldest();
        if let (true, Some((ts, bits))) = (decimal, newest) {
            rb.head.st = Codec::fresh(ts, bits);
        }
        let n_head = p.varint()?;
        if n_head > 0 {
            let n_head = u32::try_from(n_head).ok()?;
            let first_ts = p.i64le()?;
            let len = usize::try_from(p.varint()?).ok()?;
            let data = p.take(len)?;
            // Check the whole stream first, then re-encode it sample by sample (the encoding is
            // deterministic, so this rebuilds the exact open-chunk state).
            validate_chunk(
                BitReader::new(data, 0, 0),
                first_ts,
                n_head,
                newest.map(|s| s.0),
                decimal,
            )?;
            let mut rd = BitReader::new(data, 0, 0);
            let mut st = Codec::with_format(0, 0, decimal);
            for _ in 0..n_head {
                let (ts, bits) = st.decode(&mut rd, first_ts)?;
                rb.append_unchecked(ts, bits);
            }
        }
        Some((rb, p.pos))
    }
}

/// Decodes a whole chunk and checks it: exactly `count ≥ 1` samples, strictly increasing
/// timestamps newer than `after`, only zero padding (< 8 bits) left. Returns the newest sample.
fn validate_chunk(
    mut rd: BitReader<'_>,
    first_ts: i64,
    count: u32,
    after: Option<i64>,
    decimal: bool,
) -> Option<(i64, u64)> {
    if count == 0 || count > u16::MAX as u32 {
        return None;
    }
    let mut st = Codec::with_format(0, 0, decimal);
    let mut prev = after;
    let mut last = (0, 0);
    for _ in 0..count {
        last = st.decode(&mut rd, first_ts)?;
        if prev.is_some_and(|p| last.0 <= p) {
            return None;
        }
        prev = Some(last.0);
    }
    rd.at_padding_end().then_some(last)
}

/// Iterator over `(ts, value)` of a [`RingBuffer`], oldest first.
pub struct RangeIter<'a> {
    rb: &'a RingBuffer,
    /// Next chunk to open: `0..closed.len()` are closed chunks, `closed.len()` is the open one,
    /// anything larger means done.
    next_chunk: usize,
    cur: Option<Cursor<'a>>,
    from: i64,
    to: i64,
}

/// Decoding position inside one chunk.
struct Cursor<'a> {
    rd: BitReader<'a>,
    st: Codec,
    first_ts: i64,
    left: u32,
}

impl RangeIter<'_> {
    fn finish(&mut self) {
        self.next_chunk = usize::MAX;
        self.cur = None;
    }
}

impl<'a> Iterator for RangeIter<'a> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        loop {
            if let Some(c) = &mut self.cur {
                if c.left > 0 {
                    c.left -= 1;
                    match c.st.decode(&mut c.rd, c.first_ts) {
                        Some((ts, bits)) => {
                            if ts < self.from {
                                continue;
                            }
                            if ts > self.to {
                                self.finish();
                                return None;
                            }
                            return Some((ts, f64::from_bits(bits)));
                        }
                        None => {
                            // Unreachable for buffers built by push/decode_from.
                            self.finish();
                            return None;
                        }
                    }
                }
                self.cur = None;
            }
            let rb: &'a RingBuffer = self.rb;
            let n_closed = rb.closed.len();
            let (first_ts, rd, left) = if self.next_chunk < n_closed {
                let c = &rb.closed[self.next_chunk];
                (c.first_ts, BitReader::new(c.bits(), 0, 0), c.count())
            } else if self.next_chunk == n_closed && rb.head.st.n > 0 {
                (rb.head.first_ts, rb.head.reader(), rb.head.st.n)
            } else {
                self.finish();
                return None;
            };
            if first_ts > self.to {
                self.finish();
                return None;
            }
            self.next_chunk += 1;
            self.cur = Some(Cursor {
                rd,
                st: Codec::fresh(0, 0),
                first_ts,
                left,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Codec: the state shared, rule for rule, by the encoder and the decoder.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum IntMode {
    Dod,
    Delta,
    Xor,
}

#[derive(Clone, Copy)]
struct Codec {
    prev_ts: i64,
    /// Expected timestamp delta (the scrape interval), see `after_ts`.
    ts_base: i64,
    /// Previous value's bits.
    prev_val: u64,
    /// `as_scaled(prev_val, scale)` cached (the f64<->i64 round trip is on the decode
    /// critical path).
    prev_int: i64,
    prev_is_int: bool,
    /// Decimal scale of the integer path: a value `v` is the integer `v × 10^scale`. Starts
    /// at 0 in every chunk; after a value that is no integer at the current scale, both sides
    /// move to the smallest scale at which it is one (see `set_prev_val`).
    scale: u8,
    /// Scales other than 0 are used (format version 2); off only to read version 1.
    decimal: bool,
    /// Previous integer delta (0 unless the last two values were both integers).
    int_delta: i64,
    /// Samples coded so far in this chunk.
    n: u32,
    /// Decaying sums (≈ 8 × mean) of the zigzagged timestamp / integer-value residuals.
    ts_mean: u32,
    val_mean: u32,
    /// Decaying sums of the estimated bit cost of each integer coding.
    c_dod: u16,
    c_delta: u16,
    c_xor: u16,
    /// Current XOR window (leading / trailing zeros), or NO_WINDOW.
    xor_lead: u8,
    xor_trail: u8,
}

#[inline]
fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

#[inline]
fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

#[inline]
fn bitlen(u: u64) -> u32 {
    64 - u.leading_zeros()
}

/// Rice parameter from a decaying sum: bitlen(mean / 2), the best of the variants measured on the
/// realistic series in the tests (0.25×, 0.375×, 0.5×, 0.625×, 0.75×, 1× mean).
#[inline]
fn rice_k(sum: u32) -> u32 {
    bitlen(((sum as u64) * 2) >> (DECAY_SHIFT + 2))
}

/// Updates a decaying sum with residual `u`. A single contribution is capped at 16 × (mean + 1)
/// so one outlier (a counter reset, a missed scrape) cannot inflate k for many samples; a real
/// change of scale still gets through in a few samples.
#[inline]
fn update_mean(sum: u32, u: u64) -> u32 {
    let cap = (((sum >> DECAY_SHIFT) as u64) + 1) << 4;
    let c = u.min(cap).min(1 << 24) as u32;
    sum - (sum >> DECAY_SHIFT) + c
}

/// A delta within ±125 ms of a whole number of seconds becomes that number: Prometheus scrape
/// intervals are whole seconds, and the first delta of a chunk carries two samples' jitter.
#[inline]
fn round_interval(delta: i64) -> i64 {
    if (1000..1 << 40).contains(&delta) {
        let r = (delta + 500) / 1000 * 1000;
        if (delta - r).abs() <= 125 {
            return r;
        }
    }
    delta
}

#[inline]
fn decay_cost(c: u16, cost: u32) -> u16 {
    c - (c >> DECAY_SHIFT) + cost as u16
}

/// Estimated XOR cost of `x` assuming window reuse.
#[inline]
fn xor_cost(x: u64) -> u32 {
    if x == 0 {
        1
    } else {
        2 + 64 - x.leading_zeros() - x.trailing_zeros()
    }
}

/// `Some(i)` if `bits` is exactly the f64 of an integer `i` with |i| ≤ 2^53 (not -0.0).
#[inline]
fn as_int(bits: u64) -> Option<i64> {
    let i = f64::from_bits(bits) as i64;
    ((i as f64).to_bits() == bits && i.unsigned_abs() <= 1 << 53).then_some(i)
}

/// `Some(i)` if `bits` is exactly `i / 10^scale` as f64 division rounds it, |i| ≤ 2^53 (and
/// not -0.0). Scale 0 is [`as_int`]. Counters kept in hundredths (`process_cpu_seconds_total`
/// is clock ticks / 100) are such values: as integers their steps cost a few bits, as XOR of
/// their floats ~40.
#[inline]
fn as_scaled(bits: u64, scale: u8) -> Option<i64> {
    if scale == 0 {
        return as_int(bits);
    }
    let p = POW10[scale as usize];
    let x = (f64::from_bits(bits) * p).round();
    // NaN, infinities and |x| > 2^53 are no such integers.
    if x.is_nan() || x.abs() > (1u64 << 53) as f64 {
        return None;
    }
    let i = x as i64;
    (from_scaled(i, scale) == bits).then_some(i)
}

/// The value bits of the integer `i` at `scale` (inverse of [`as_scaled`]).
#[inline]
fn from_scaled(i: i64, scale: u8) -> u64 {
    if scale == 0 {
        (i as f64).to_bits()
    } else {
        (i as f64 / POW10[scale as usize]).to_bits()
    }
}

#[inline]
fn mask(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

fn write_lp(w: &mut BitWriter, u: u64) {
    debug_assert!(u != 0);
    let l = bitlen(u);
    w.write((l - 1) as u64, 6);
    w.write(u & mask(l - 1), l - 1);
}

fn read_lp(r: &mut BitReader<'_>) -> Option<u64> {
    let l = r.read(6)? as u32 + 1;
    Some((1u64 << (l - 1)) | r.read(l - 1)?)
}

/// Writes RICE_k(u) if its unary part is short enough; returns false (nothing written) if not.
#[inline]
fn write_rice(w: &mut BitWriter, u: u64, k: u32) -> bool {
    let q = u >> k;
    if q >= RICE_LIMIT as u64 {
        return false;
    }
    let q = q as u32;
    // q ones, a zero, k low bits — at most 16 + 1 + 26 bits, one write.
    let ones = ((1u64 << q) - 1) << 1;
    w.write((ones << k) | (u & mask(k)), q + 1 + k);
    true
}

impl Codec {
    fn fresh(prev_ts: i64, prev_val: u64) -> Self {
        Self::with_format(prev_ts, prev_val, true)
    }

    /// Fresh state for reading format version `1` (`decimal` false) or `2`.
    fn with_format(prev_ts: i64, prev_val: u64, decimal: bool) -> Self {
        let int = as_int(prev_val);
        Codec {
            prev_ts,
            ts_base: 0,
            prev_val,
            prev_int: int.unwrap_or(0),
            prev_is_int: int.is_some(),
            int_delta: 0,
            n: 0,
            ts_mean: TS_MEAN_START,
            val_mean: 0,
            c_dod: 0,
            c_delta: 0,
            c_xor: 0,
            xor_lead: NO_WINDOW,
            xor_trail: 0,
            scale: 0,
            decimal,
        }
    }

    #[inline]
    fn int_mode(&self) -> IntMode {
        if self.c_xor < self.c_dod.min(self.c_delta) {
            IntMode::Xor
        } else if self.c_dod <= self.c_delta {
            IntMode::Dod
        } else {
            IntMode::Delta
        }
    }

    /// State update after a timestamp step of `delta` coded as residual `u` (both sides).
    /// The expected interval only moves on a large change (> 1/4: a missed scrape, a new scrape
    /// interval, irregular data), so jitter does not accumulate into it.
    #[inline]
    fn after_ts(&mut self, delta: i64, u: u64) {
        self.ts_mean = update_mean(self.ts_mean, u);
        if delta.wrapping_sub(self.ts_base).unsigned_abs() > (self.ts_base as u64) >> 2 {
            self.ts_base = round_interval(delta);
        }
    }

    /// State update after an integer → integer step `p` → `x` (both sides call this).
    #[inline]
    fn after_int(&mut self, p: i64, x: i64, xor: u64) {
        let r_dod = x.wrapping_sub(p.wrapping_add(self.int_delta));
        let r_delta = x.wrapping_sub(p);
        let preferred = if self.c_dod <= self.c_delta {
            r_dod
        } else {
            r_delta
        };
        self.val_mean = update_mean(self.val_mean, zigzag(preferred));
        self.c_dod = decay_cost(self.c_dod, 1 + bitlen(zigzag(r_dod)));
        self.c_delta = decay_cost(self.c_delta, 1 + bitlen(zigzag(r_delta)));
        self.c_xor = decay_cost(self.c_xor, xor_cost(xor));
        self.int_delta = r_delta;
    }

    // ---- encoder ----

    fn encode(&mut self, w: &mut BitWriter, ts: i64, bits: u64) {
        let new = as_scaled(bits, self.scale);
        match self.n {
            0 => w.write(bits, 64),
            1 => {
                let delta = ts.wrapping_sub(self.prev_ts);
                write_lp(w, delta as u64); // != 0: timestamps strictly increase
                self.ts_base = round_interval(delta);
                self.encode_value(w, bits, new);
            }
            _ => {
                let delta = ts.wrapping_sub(self.prev_ts);
                let u = zigzag(delta.wrapping_sub(self.ts_base));
                if !write_rice(w, u, rice_k(self.ts_mean)) {
                    w.write(mask(RICE_LIMIT), RICE_LIMIT);
                    write_lp(w, u);
                }
                self.after_ts(delta, u);
                self.encode_value(w, bits, new);
            }
        }
        self.prev_ts = ts;
        self.set_prev_val(bits, new);
        self.n += 1;
    }

    /// Records the newest value; `int` is `as_scaled(bits, self.scale)`. A value that is no
    /// integer at the current scale moves the scale to the smallest one where it is (if any),
    /// on both sides alike, so the next value is predicted in those units.
    #[inline]
    fn set_prev_val(&mut self, bits: u64, int: Option<i64>) {
        self.prev_val = bits;
        let int = match int {
            None if self.decimal => self.rescale(bits),
            int => int,
        };
        self.prev_int = int.unwrap_or(0);
        self.prev_is_int = int.is_some();
    }

    #[cold]
    fn rescale(&mut self, bits: u64) -> Option<i64> {
        (0..=MAX_SCALE).find_map(|s| {
            let i = as_scaled(bits, s)?;
            self.scale = s;
            Some(i)
        })
    }

    #[inline]
    fn encode_value(&mut self, w: &mut BitWriter, bits: u64, new: Option<i64>) {
        let xor = self.prev_val ^ bits;
        if !self.prev_is_int {
            self.int_delta = 0;
            self.encode_xor(w, xor);
            return;
        }
        let p = self.prev_int;
        match self.int_mode() {
            IntMode::Xor => self.encode_xor(w, xor),
            mode => match new {
                Some(x) => {
                    let pred = if mode == IntMode::Dod {
                        p + self.int_delta
                    } else {
                        p
                    };
                    let u = zigzag(x - pred);
                    if !write_rice(w, u, rice_k(self.val_mean)) {
                        // escape, then 0: a large integer residual
                        w.write(mask(RICE_LIMIT) << 1, RICE_LIMIT + 1);
                        write_lp(w, u);
                    }
                }
                None => {
                    // escape, then 1: not an integer, XOR follows
                    w.write(mask(RICE_LIMIT + 1), RICE_LIMIT + 1);
                    self.encode_xor(w, xor);
                }
            },
        }
        match new {
            Some(x) => self.after_int(p, x, xor),
            None => self.int_delta = 0,
        }
    }

    #[inline]
    fn encode_xor(&mut self, w: &mut BitWriter, x: u64) {
        if x == 0 {
            w.write(0, 1);
            return;
        }
        let lead = x.leading_zeros();
        let trail = x.trailing_zeros();
        let sig = 64 - lead - trail;
        let (wl, wt) = (self.xor_lead as u32, self.xor_trail as u32);
        // Reuse the window if x fits and the window wastes < 13 bits vs. a new one.
        if self.xor_lead != NO_WINDOW && lead >= wl && trail >= wt && 64 - wl - wt <= sig + 12 {
            w.write(0b10, 2);
            w.write(x >> wt, 64 - wl - wt);
        } else {
            w.write((0b11 << 12) | ((lead as u64) << 6) | (sig - 1) as u64, 14);
            w.write(x >> trail, sig);
            self.xor_lead = lead as u8;
            self.xor_trail = trail as u8;
        }
    }

    // ---- decoder (mirror image of the encoder) ----

    #[inline]
    fn decode(&mut self, r: &mut BitReader<'_>, first_ts: i64) -> Option<(i64, u64)> {
        let (ts, (bits, int)) = match self.n {
            0 => {
                let bits = r.read(64)?;
                (first_ts, (bits, as_scaled(bits, self.scale)))
            }
            1 => {
                let delta = read_lp(r)? as i64;
                self.ts_base = round_interval(delta);
                (self.prev_ts.wrapping_add(delta), self.decode_value(r)?)
            }
            _ => {
                let k = rice_k(self.ts_mean);
                let q = r.read_unary(RICE_LIMIT)?;
                let u = if q < RICE_LIMIT {
                    ((q as u64) << k) | r.read(k)?
                } else {
                    read_lp(r)?
                };
                let delta = self.ts_base.wrapping_add(unzigzag(u));
                self.after_ts(delta, u);
                (self.prev_ts.wrapping_add(delta), self.decode_value(r)?)
            }
        };
        self.prev_ts = ts;
        self.set_prev_val(bits, int);
        self.n += 1;
        Some((ts, bits))
    }

    #[inline]
    /// Decodes a value; returns its bits and `as_scaled` of them at the current scale.
    fn decode_value(&mut self, r: &mut BitReader<'_>) -> Option<(u64, Option<i64>)> {
        let prev = self.prev_val;
        if !self.prev_is_int {
            self.int_delta = 0;
            let bits = prev ^ self.decode_xor(r)?;
            return Some((bits, as_scaled(bits, self.scale)));
        }
        let p = self.prev_int;
        let mode = self.int_mode();
        let (bits, new) = if mode == IntMode::Xor {
            let bits = prev ^ self.decode_xor(r)?;
            (bits, as_scaled(bits, self.scale))
        } else {
            let k = rice_k(self.val_mean);
            let q = r.read_unary(RICE_LIMIT)?;
            let u = if q < RICE_LIMIT {
                ((q as u64) << k) | r.read(k)?
            } else if r.read(1)? == 0 {
                read_lp(r)?
            } else {
                let bits = prev ^ self.decode_xor(r)?;
                if as_scaled(bits, self.scale).is_some() {
                    return None; // the encoder never escapes for an integer
                }
                self.int_delta = 0;
                return Some((bits, None));
            };
            let pred = if mode == IntMode::Dod {
                p.wrapping_add(self.int_delta)
            } else {
                p
            };
            let x = pred.wrapping_add(unzigzag(u));
            if x.unsigned_abs() > 1 << 53 {
                return None;
            }
            let bits = from_scaled(x, self.scale);
            if self.scale > 0 && as_scaled(bits, self.scale) != Some(x) {
                // Two integers can divide to one float; the encoder only ever writes the one
                // `as_scaled` gives back.
                return None;
            }
            (bits, Some(x))
        };
        match new {
            Some(x) => self.after_int(p, x, prev ^ bits),
            None => self.int_delta = 0,
        }
        Some((bits, new))
    }

    #[inline]
    fn decode_xor(&mut self, r: &mut BitReader<'_>) -> Option<u64> {
        if r.read(1)? == 0 {
            return Some(0);
        }
        if r.read(1)? == 0 {
            if self.xor_lead == NO_WINDOW {
                return None;
            }
            let (wl, wt) = (self.xor_lead as u32, self.xor_trail as u32);
            Some(r.read(64 - wl - wt)? << wt)
        } else {
            let h = r.read(12)? as u32;
            let (lead, sig) = (h >> 6, (h & 63) + 1);
            if lead + sig > 64 {
                return None;
            }
            let trail = 64 - lead - sig;
            self.xor_lead = lead as u8;
            self.xor_trail = trail as u8;
            Some(r.read(sig)? << trail)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bit I/O
// ---------------------------------------------------------------------------------------------

/// MSB-first bit writer: whole 64-bit words go to `buf`, the rest waits in `acc`.
#[derive(Default)]
struct BitWriter {
    buf: Vec<u8>,
    /// Pending bits, left-aligned.
    acc: u64,
    /// Number of pending bits, < 64.
    acc_bits: u32,
}

impl BitWriter {
    /// Writes the low `n` bits of `v` (`n` ≤ 64, higher bits of `v` must be zero).
    #[inline]
    fn write(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 64 && (n == 64 || v >> n == 0));
        if n == 0 {
            return;
        }
        let free = 64 - self.acc_bits;
        if n < free {
            self.acc |= v << (free - n);
            self.acc_bits += n;
        } else {
            let rest = n - free; // < 64
            self.acc |= v >> rest;
            self.buf.extend_from_slice(&self.acc.to_be_bytes());
            self.acc = if rest == 0 { 0 } else { v << (64 - rest) };
            self.acc_bits = rest;
        }
    }
}

/// MSB-first bit reader over `data` followed by `tail_bits` left-aligned bits of `tail` (the open
/// chunk's unflushed accumulator).
struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte of `data` not yet counted in `avail`.
    pos: usize,
    /// Left-aligned bit buffer; its top `avail` bits are the next bits of the stream. Bits below
    /// those are either zero or copies of the stream bits that follow (the fast refill loads whole
    /// words and only counts whole bytes; OR-ing the same bits again later is harmless).
    buf: u64,
    avail: u32,
    tail: u64,
    tail_bits: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], tail: u64, tail_bits: u32) -> Self {
        BitReader {
            data,
            pos: 0,
            buf: 0,
            avail: 0,
            tail,
            tail_bits,
        }
    }

    /// Ensures `avail` ≥ 57 unless the stream is exhausted.
    #[inline]
    fn refill(&mut self) {
        if self.avail > 56 {
            return;
        }
        if let Some(b) = self.data.get(self.pos..self.pos + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(b);
            self.buf |= u64::from_be_bytes(word) >> self.avail;
            let take = (64 - self.avail) >> 3;
            self.pos += take as usize;
            self.avail += take * 8;
        } else {
            self.refill_slow();
        }
    }

    #[cold]
    fn refill_slow(&mut self) {
        while self.avail <= 56 {
            if let Some(&b) = self.data.get(self.pos) {
                self.buf |= (b as u64) << (56 - self.avail);
                self.pos += 1;
                self.avail += 8;
            } else {
                if self.tail_bits > 0 {
                    self.buf |= self.tail >> self.avail;
                    let take = (64 - self.avail).min(self.tail_bits);
                    self.avail += take;
                    self.tail = if take >= 64 { 0 } else { self.tail << take };
                    self.tail_bits -= take;
                }
                return;
            }
        }
    }

    /// Reads `n` ≤ 64 bits.
    #[inline]
    fn read(&mut self, n: u32) -> Option<u64> {
        if n > 56 {
            return self.read_long(n);
        }
        self.read_short(n)
    }

    #[cold]
    #[inline(never)]
    fn read_long(&mut self, n: u32) -> Option<u64> {
        let hi = self.read_short(n - 32)?;
        Some((hi << 32) | self.read_short(32)?)
    }

    /// Reads `n` ≤ 56 bits.
    #[inline]
    fn read_short(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        self.refill();
        if self.avail < n {
            return None;
        }
        let v = self.buf >> (64 - n);
        self.buf <<= n;
        self.avail -= n;
        Some(v)
    }

    /// Reads up to `limit` (≤ 32) one bits; consumes the terminating zero if fewer than `limit`.
    #[inline]
    fn read_unary(&mut self, limit: u32) -> Option<u32> {
        self.refill();
        let ones = (!self.buf).leading_zeros().min(limit);
        let used = if ones < limit { ones + 1 } else { limit };
        if self.avail < used {
            return None;
        }
        self.buf <<= used;
        self.avail -= used;
        Some(ones)
    }

    /// True if fewer than 8 bits are left and all of them are zero (byte padding).
    fn at_padding_end(&mut self) -> bool {
        self.refill();
        let left = self.avail as usize + (self.data.len() - self.pos) * 8 + self.tail_bits as usize;
        left < 8 && self.buf == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot helpers
// ---------------------------------------------------------------------------------------------

/// LEB128, as the snapshot file also writes its lengths.
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn i64le(&mut self) -> Option<i64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Some(i64::from_le_bytes(a))
    }
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return None;
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;
    const DAY: i64 = 86_400_000;

    fn collect(rb: &RingBuffer) -> Vec<(i64, u64)> {
        rb.iter().map(|(t, v)| (t, v.to_bits())).collect()
    }

    /// Pushes everything with a retention that keeps all of it. (A span wider than i64::MAX ms
    /// cannot be expressed as a retention; those samples bypass the retention step.)
    fn build(samples: &[(i64, u64)]) -> RingBuffer {
        let mut rb = RingBuffer::new();
        for &(t, b) in samples {
            match t.checked_sub(samples[0].0) {
                Some(keep_all) => {
                    assert_eq!(rb.push(t, f64::from_bits(b), keep_all), Append::Appended)
                }
                None => {
                    assert!(rb.last().unwrap().0 < t);
                    rb.append_unchecked(t, b);
                }
            }
        }
        rb
    }

    fn roundtrip(samples: &[(i64, u64)]) -> RingBuffer {
        let rb = build(samples);
        assert_eq!(collect(&rb), samples);
        assert_eq!(rb.len(), samples.len());
        let mut out = vec![0xAA]; // decode must honour the start offset the caller passes
        rb.encode_into(&mut out);
        out.extend_from_slice(b"trailing");
        let (rb2, used) = RingBuffer::decode_from(&out[1..]).expect("decode");
        assert_eq!(used, out.len() - 1 - 8);
        assert_eq!(collect(&rb2), samples);
        assert_eq!(rb2.len(), rb.len());
        assert_eq!(
            rb2.last().map(|(t, v)| (t, v.to_bits())),
            samples.last().copied()
        );
        // The rebuilt open chunk must be bit-identical and keep encoding identically.
        let (mut e1, mut e2) = (Vec::new(), Vec::new());
        rb.encode_into(&mut e1);
        rb2.encode_into(&mut e2);
        assert_eq!(e1, e2);
        rb
    }

    fn regular(n: usize, f: impl Fn(usize) -> f64) -> Vec<(i64, u64)> {
        (0..n)
            .map(|i| (1_700_000_000_000 + i as i64 * 15_000, f(i).to_bits()))
            .collect()
    }

    #[test]
    fn empty_buffer() {
        let rb = RingBuffer::new();
        assert!(rb.is_empty());
        assert_eq!(rb.len(), 0);
        assert_eq!(rb.last(), None);
        assert_eq!(rb.first_ts(), None);
        assert_eq!(rb.iter().count(), 0);
        assert_eq!(rb.range(i64::MIN, i64::MAX).count(), 0);
        assert_eq!(rb.heap_bytes(), 0);
        roundtrip(&[]);
        let mut rb = RingBuffer::default();
        rb.truncate_before(i64::MAX);
        assert!(rb.is_empty());
    }

    #[test]
    fn one_sample() {
        let rb = roundtrip(&[(42, 1.5f64.to_bits())]);
        assert_eq!(rb.last(), Some((42, 1.5)));
        assert_eq!(rb.first_ts(), Some(42));
        assert_eq!(rb.range(42, 42).count(), 1);
        assert_eq!(rb.range(43, 100).count(), 0);
        assert_eq!(rb.range(0, 41).count(), 0);
    }

    #[test]
    fn duplicates_and_out_of_order() {
        let mut rb = RingBuffer::new();
        assert_eq!(rb.push(1000, 1.0, DAY), Append::Appended);
        assert_eq!(rb.push(2000, 2.0, DAY), Append::Appended);
        assert_eq!(rb.push(2000, 9.0, DAY), Append::Duplicate);
        assert_eq!(rb.push(1500, 9.0, DAY), Append::OutOfOrder);
        assert_eq!(rb.push(i64::MIN, 9.0, DAY), Append::OutOfOrder);
        assert_eq!(rb.push(3000, 3.0, DAY), Append::Appended);
        assert_eq!(
            rb.iter().collect::<Vec<_>>(),
            vec![(1000, 1.0), (2000, 2.0), (3000, 3.0)]
        );
        assert_eq!(rb.last(), Some((3000, 3.0)));
        assert_eq!(rb.len(), 3);
    }

    #[test]
    fn duplicate_across_chunk_boundary() {
        let s = regular(MAX_CHUNK_SAMPLES as usize, |i| i as f64);
        let mut rb = build(&s);
        assert_eq!(rb.head.st.n, 0, "chunk closed exactly at the cap");
        let (t, _) = s[s.len() - 1];
        assert_eq!(rb.push(t, 5.0, DAY), Append::Duplicate);
        assert_eq!(rb.push(t - 1, 5.0, DAY), Append::OutOfOrder);
        assert_eq!(rb.last(), Some((t, (s.len() - 1) as f64)));
    }

    #[test]
    fn retention_drops_whole_chunks() {
        let per = MAX_CHUNK_SAMPLES as i64;
        let retention = 2 * 3_600_000; // 2 h
        let mut rb = RingBuffer::new();
        let n = 10 * per;
        for i in 0..n {
            assert_eq!(rb.push(i * 15_000, i as f64, retention), Append::Appended);
            let newest = i * 15_000;
            // every retained chunk's newest sample is within retention ...
            let first = rb.first_ts().unwrap();
            assert!(rb.closed.iter().all(|c| c.last_ts >= newest - retention));
            // ... and nothing within retention was dropped
            assert!(first <= (newest - retention).max(0));
            assert_eq!(rb.len(), rb.iter().count());
        }
        let all: Vec<_> = rb.iter().collect();
        assert_eq!(all.last().unwrap().0, (n - 1) * 15_000);
        assert!(all.windows(2).all(|w| w[1].0 - w[0].0 == 15_000));
        // 2 h inclusive = 481 samples retained, plus less than one chunk of older slack
        assert!(
            rb.len() >= 481 && rb.len() < 481 + per as usize,
            "len {}",
            rb.len()
        );
    }

    #[test]
    fn the_cached_oldest_chunk_bound_follows_every_change() {
        let inv = |rb: &RingBuffer| {
            assert_eq!(
                rb.oldest_last,
                rb.closed.front().map_or(i64::MAX, |c| c.last_ts)
            )
        };
        let mut rb = RingBuffer::new();
        inv(&rb);
        for i in 0..(5 * MAX_CHUNK_SAMPLES as i64) {
            rb.push(i * 15_000, i as f64, 3 * 3_600_000);
            inv(&rb);
        }
        assert!(rb.closed.len() >= 2, "chunks closed and some retained");
        let mut out = Vec::new();
        rb.encode_into(&mut out);
        let (back, _) = RingBuffer::decode_from(&out).unwrap();
        inv(&back);
        rb.keep_at_most(10);
        inv(&rb);
        rb.truncate_before(i64::MAX);
        inv(&rb);
    }

    #[test]
    fn truncate_before_idle_series() {
        let s = regular(3 * MAX_CHUNK_SAMPLES as usize + 10, |i| i as f64);
        let mut rb = build(&s);
        let cut = s[MAX_CHUNK_SAMPLES as usize].0; // first sample of chunk 1
        rb.truncate_before(cut); // drops chunk 0 only (its newest is < cut)
        assert_eq!(rb.first_ts(), Some(cut));
        assert_eq!(rb.len(), s.len() - MAX_CHUNK_SAMPLES as usize);
        rb.truncate_before(cut + 1); // chunk 1's newest is >= cut + 1: kept
        assert_eq!(rb.first_ts(), Some(cut));
        let last = s.last().unwrap().0;
        rb.truncate_before(last); // open chunk's newest == last: kept
        assert_eq!(rb.first_ts(), Some(s[3 * MAX_CHUNK_SAMPLES as usize].0));
        assert_eq!(rb.len(), 10);
        rb.truncate_before(last + 1);
        assert!(rb.is_empty());
        assert_eq!(rb.last(), None);
        assert_eq!(rb.first_ts(), None);
        assert_eq!(
            rb.heap_bytes(),
            rb.closed.capacity() * std::mem::size_of::<Chunk>()
        );
        // behaves like a new buffer afterwards
        assert_eq!(rb.push(5, 1.0, DAY), Append::Appended);
        assert_eq!(collect(&rb), vec![(5, 1f64.to_bits())]);
    }

    #[test]
    fn range_at_chunk_boundaries() {
        let c = MAX_CHUNK_SAMPLES as usize;
        let s = regular(3 * c + 7, |i| (i * 3) as f64 + 0.25);
        let rb = roundtrip(&s);
        assert_eq!(rb.closed.len(), 3);
        let idx = [
            0,
            1,
            c - 1,
            c,
            c + 1,
            2 * c - 1,
            2 * c,
            3 * c - 1,
            3 * c,
            3 * c + 6,
        ];
        for &a in &idx {
            for &b in &idx {
                for (da, db) in [(0i64, 0i64), (-1, 1), (1, -1), (-7500, 7500)] {
                    let (from, to) = (s[a].0 + da, s[b].0 + db);
                    let got: Vec<_> = rb.range(from, to).map(|(t, v)| (t, v.to_bits())).collect();
                    let want: Vec<_> = s
                        .iter()
                        .copied()
                        .filter(|&(t, _)| from <= t && t <= to)
                        .collect();
                    assert_eq!(got, want, "range({from}, {to})");
                }
            }
        }
        assert_eq!(rb.range(i64::MIN, s[0].0 - 1).count(), 0);
        assert_eq!(rb.range(s.last().unwrap().0 + 1, i64::MAX).count(), 0);
        assert_eq!(rb.range(10, 5).count(), 0);
    }

    #[test]
    fn stale_nan_and_nan_payloads_bit_exact() {
        let mut s = regular(600, |i| (i * 150) as f64);
        for i in [3, 4, 100, 239, 240, 241, 599] {
            s[i].1 = STALE_NAN;
        }
        s[10].1 = f64::NAN.to_bits();
        s[11].1 = 0xfff8_dead_beef_0001; // negative quiet NaN with payload
        s[12].1 = 0x7ff0_0000_0000_0001; // signalling NaN
        s[13].1 = (-0.0f64).to_bits();
        s[14].1 = 0.0f64.to_bits();
        let rb = roundtrip(&s);
        let got = collect(&rb);
        assert_eq!(got[3].1, STALE_NAN);
        assert_eq!(got[240].1, STALE_NAN); // first sample of a chunk
        assert_eq!(
            rb.range(s[13].0, s[13].0).next().unwrap().1.to_bits(),
            (-0.0f64).to_bits()
        );
    }

    #[test]
    fn huge_timestamp_gaps() {
        let s = vec![
            (i64::MIN, 1.0f64.to_bits()),
            (i64::MIN + 1, 2.0f64.to_bits()),
            (-1, 3.0f64.to_bits()),
            (0, 4.0f64.to_bits()),
            (15_000, 5.0f64.to_bits()),
            (15_001, 6.0f64.to_bits()),
            (i64::MAX - 1, 7.0f64.to_bits()),
            (i64::MAX, 8.0f64.to_bits()),
        ];
        roundtrip(&s);
        roundtrip(&[(i64::MIN, 0), (i64::MAX, 1)]);
        // jitter, missed scrapes, then a long outage, within one chunk
        let mut s = Vec::new();
        let mut t = 1_700_000_000_000i64;
        for i in 0..300 {
            t += match i {
                50 => 45_000,
                100 => 365 * DAY,
                150 => 1,
                _ => 15_000 + (i % 7) - 3,
            };
            s.push((t, (i as f64).to_bits()));
        }
        roundtrip(&s);
        // retention with saturating arithmetic at the extremes
        let mut rb = RingBuffer::new();
        rb.push(i64::MIN, 1.0, i64::MAX);
        rb.push(i64::MAX, 1.0, i64::MAX);
        assert_eq!(rb.len(), 2);
        rb.push(i64::MAX - 5, 1.0, -1);
    }

    #[test]
    fn negative_values_infinities_and_mixed() {
        let vals: Vec<f64> = vec![
            -1.0,
            -2.0,
            -4.0,
            -1e15,
            9007199254740992.0,
            -9007199254740992.0,
            9007199254740994.0,
            1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            0.5,
            1.0,
            2.0,
            2.5,
            3.0,
            f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            f64::MAX,
            f64::MIN,
            7.0,
            7.0,
            7.0,
            -7.0,
            1.0,
            0.1,
            0.2,
            0.30000000000000004,
            100.0,
            200.0,
            300.0,
            3.5,
            400.0,
        ];
        let s = regular(vals.len(), |i| vals[i]);
        roundtrip(&s);
        // values switching between integer and float on every sample, across chunks
        let s = regular(700, |i| {
            if i % 2 == 0 {
                (i * 100) as f64
            } else {
                i as f64 * 1.1
            }
        });
        roundtrip(&s);
        // runs of each kind
        let s = regular(700, |i| {
            if (i / 37) % 2 == 0 {
                (i * i) as f64
            } else {
                (i as f64).sqrt()
            }
        });
        roundtrip(&s);
        // negative counter-like and a reset
        let s = regular(500, |i| {
            if i < 250 {
                -(i as f64) * 150.0
            } else {
                (i - 250) as f64
            }
        });
        roundtrip(&s);
    }

    /// A snapshot written before decimal scaling (format 0xd1) is still read: its samples
    /// come back bit for bit and are kept in the current encoding.
    #[test]
    fn version_1_encoding_is_read_and_re_encoded() {
        let samples: Vec<(i64, u64)> = regular(700, |i| match i % 5 {
            0 => i as f64,
            1 => i as f64 / 100.0,
            2 => 0.1 * i as f64,
            3 => f64::NAN,
            _ => -(i as f64) / 1000.0,
        });
        let mut v1 = RingBuffer::new();
        v1.head.st = Codec::with_format(0, 0, false);
        for &(t, b) in &samples {
            v1.append_unchecked(t, b);
        }
        assert!(
            v1.closed.len() >= 2,
            "several closed chunks and an open one"
        );
        assert_eq!(collect_with(&v1, false), samples);
        let mut old = Vec::new();
        v1.encode_into(&mut old);
        assert_eq!(old[0], FORMAT_TAG_V1);
        let (rb, used) = RingBuffer::decode_from(&old).expect("version 1 decodes");
        assert_eq!(used, old.len());
        assert_eq!(collect(&rb), samples);
        let (mut new, mut pushed) = (Vec::new(), Vec::new());
        rb.encode_into(&mut new);
        build(&samples).encode_into(&mut pushed);
        assert_eq!(new, pushed, "re-encoded as if pushed now");
        assert_eq!(new[0], FORMAT_TAG);
        assert!(
            new.len() < old.len(),
            "hundredths and thousandths now cost less"
        );
    }

    /// Samples of a buffer decoded with the given format's codec (`iter` reads the current one).
    fn collect_with(rb: &RingBuffer, decimal: bool) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        let chunks = rb
            .closed
            .iter()
            .map(|c| (c.first_ts, BitReader::new(c.bits(), 0, 0), c.count()))
            .chain((rb.head.st.n > 0).then(|| (rb.head.first_ts, rb.head.reader(), rb.head.st.n)));
        for (first_ts, mut rd, n) in chunks {
            let mut st = Codec::with_format(0, 0, decimal);
            for _ in 0..n {
                out.push(st.decode(&mut rd, first_ts).unwrap());
            }
        }
        out
    }

    #[test]
    fn fixed_overhead_small() {
        let size = std::mem::size_of::<RingBuffer>();
        let mut rb = RingBuffer::new();
        assert_eq!(rb.heap_bytes(), 0);
        rb.push(1, 1.0, DAY);
        let one = size + rb.heap_bytes();
        println!("size_of::<RingBuffer>() = {size} B, with one sample = {one} B");
        assert!(one <= 200, "{one}");
    }

    #[test]
    fn corrupt_input_rejected() {
        let s = regular(500, |i| (i * 7) as f64 + if i % 3 == 0 { 0.5 } else { 0.0 });
        let rb = build(&s);
        let mut enc = Vec::new();
        rb.encode_into(&mut enc);
        for cut in 0..enc.len() {
            assert!(
                RingBuffer::decode_from(&enc[..cut]).is_none(),
                "truncated at {cut}"
            );
        }
        let mut rejected = 0;
        for i in 0..enc.len() {
            for bit in 0..8 {
                let mut e = enc.clone();
                e[i] ^= 1 << bit;
                match RingBuffer::decode_from(&e) {
                    None => rejected += 1,
                    Some((rb2, _)) => {
                        // A flip the checks cannot see must still yield a consistent buffer.
                        assert_eq!(rb2.iter().count(), rb2.len());
                    }
                }
            }
        }
        println!("single bit flips rejected: {rejected}/{}", enc.len() * 8);
    }

    // ---- property tests ----

    /// Strictly increasing timestamps with arbitrary gaps (jitter, regular, huge), arbitrary
    /// value bits mixed with integers, stale markers and small repeats.
    fn series() -> impl Strategy<Value = Vec<(i64, u64)>> {
        let gap = prop_oneof![
            6 => 14_990u64..15_010,
            2 => 1u64..100,
            1 => 1u64..u64::MAX,
            1 => Just(1u64),
        ];
        let val = prop_oneof![
            3 => any::<u64>(),
            3 => (-1000i64..1000).prop_map(|i| (i as f64).to_bits()),
            2 => any::<i64>().prop_map(|i| ((i >> 10) as f64).to_bits()),
            1 => Just(STALE_NAN),
            1 => any::<u32>().prop_map(|m| (m as f64 / 1024.0).to_bits()),
            // Decimal values at every scale, so the codec's scale moves up and down.
            2 => (-100_000i64..100_000, 1usize..=4).prop_map(|(i, s)| (i as f64 / [1.0, 10.0, 100.0, 1000.0, 1e4][s]).to_bits()),
        ];
        (any::<i64>(), prop::collection::vec((gap, val), 0..800)).prop_map(|(start, steps)| {
            let mut out = Vec::with_capacity(steps.len());
            let mut t = start;
            for (i, (g, v)) in steps.into_iter().enumerate() {
                if i > 0 {
                    match (t as i128)
                        .checked_add(g as i128)
                        .filter(|&x| x <= i64::MAX as i128)
                    {
                        Some(x) => t = x as i64,
                        None => break,
                    }
                }
                out.push((t, v));
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn prop_push_iter_roundtrip(s in series()) {
            let rb = build(&s);
            prop_assert_eq!(collect(&rb), s.clone());
            prop_assert_eq!(rb.len(), s.len());
            prop_assert_eq!(rb.first_ts(), s.first().map(|x| x.0));
            prop_assert_eq!(rb.last().map(|(t, v)| (t, v.to_bits())), s.last().copied());
        }

        #[test]
        fn prop_range_matches_filter(s in series(), a in any::<prop::sample::Index>(),
                                     b in any::<prop::sample::Index>(), da in -3i64..3, db in -3i64..3,
                                     wild in any::<(i64, i64)>()) {
            let rb = build(&s);
            let mut queries = vec![wild, (i64::MIN, i64::MAX)];
            if !s.is_empty() {
                let (x, y) = (s[a.index(s.len())].0, s[b.index(s.len())].0);
                queries.push((x.saturating_add(da), y.saturating_add(db)));
                queries.push((x.min(y), x.max(y)));
            }
            for (from, to) in queries {
                let got: Vec<_> = rb.range(from, to).map(|(t, v)| (t, v.to_bits())).collect();
                let want: Vec<_> = s.iter().copied().filter(|&(t, _)| from <= t && t <= to).collect();
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn prop_encode_decode_roundtrip(s in series(), cut in any::<prop::sample::Index>()) {
            let mut rb = build(&s);
            // also snapshot a buffer that retention has trimmed
            if !s.is_empty() {
                rb.truncate_before(s[cut.index(s.len())].0);
            }
            let want = collect(&rb);
            let mut enc = Vec::new();
            rb.encode_into(&mut enc);
            let (rb2, used) = RingBuffer::decode_from(&enc).expect("decodes");
            prop_assert_eq!(used, enc.len());
            prop_assert_eq!(collect(&rb2), want);
            prop_assert_eq!(rb2.len(), rb.len());
            prop_assert_eq!(rb2.first_ts(), rb.first_ts());
            let mut enc2 = Vec::new();
            rb2.encode_into(&mut enc2);
            prop_assert_eq!(enc2, enc);
        }

        #[test]
        fn prop_decode_arbitrary_bytes_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 0..600),
                                                    tag in any::<bool>()) {
            if tag && !bytes.is_empty() { bytes[0] = FORMAT_TAG; } // get past the tag check
            if let Some((rb, used)) = RingBuffer::decode_from(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert_eq!(rb.iter().count(), rb.len());
            }
        }

        #[test]
        fn prop_decode_mutated_snapshot_never_panics(s in series(), flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4)) {
            let rb = build(&s);
            let mut enc = Vec::new();
            rb.encode_into(&mut enc);
            for (i, bit) in flips { let i = i.index(enc.len()); enc[i] ^= 1 << bit; }
            if let Some((rb, _)) = RingBuffer::decode_from(&enc) {
                let v = collect(&rb);
                prop_assert_eq!(v.len(), rb.len());
                prop_assert!(v.windows(2).all(|w| w[0].0 < w[1].0));
            }
        }
    }

    // ---- compression on realistic Prometheus-like data ----

    struct SplitMix64(u64);
    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            crate::rng::splitmix64(&mut self.0)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        /// Uniform integer in lo..=hi.
        fn int(&mut self, lo: i64, hi: i64) -> i64 {
            lo + (self.next() % (hi - lo + 1) as u64) as i64
        }
        fn poisson(&mut self, lambda: f64) -> u64 {
            let l = (-lambda).exp();
            let (mut k, mut p) = (0, 1.0);
            loop {
                p *= self.unit();
                if p <= l {
                    return k;
                }
                k += 1;
            }
        }
        fn normal(&mut self) -> f64 {
            let (u1, u2) = (self.unit().max(1e-300), self.unit());
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        }
    }

    pub(crate) const SAMPLES_2H: usize = 480;
    const JITTER_MS: i64 = 5; // set to 0 to model Prometheus' timestamp alignment

    /// Scrape timestamps: 15 s interval, ±JITTER_MS ms of jitter.
    fn timestamps(rng: &mut SplitMix64) -> Vec<i64> {
        let t0 = 1_700_000_000_000 + rng.int(0, 14_999);
        (0..SAMPLES_2H as i64)
            .map(|i| t0 + i * 15_000 + rng.int(-JITTER_MS, JITTER_MS))
            .collect()
    }

    /// A request counter growing by Poisson(150) per scrape.
    fn counter(seed: u64) -> Vec<Vec<(i64, f64)>> {
        let mut rng = SplitMix64(seed);
        let ts = timestamps(&mut rng);
        let mut v = rng.int(0, 50_000_000) as f64;
        vec![ts
            .iter()
            .map(|&t| {
                v += rng.poisson(150.0) as f64;
                (t, v)
            })
            .collect()]
    }

    /// All `_bucket` series of one latency histogram (12 buckets, ~20 observations per scrape,
    /// log-normal latencies around 50 ms): low and high buckets barely change.
    fn histogram(seed: u64) -> Vec<Vec<(i64, f64)>> {
        const LE: [f64; 12] = [
            0.005,
            0.01,
            0.025,
            0.05,
            0.1,
            0.25,
            0.5,
            1.0,
            2.5,
            5.0,
            10.0,
            f64::INFINITY,
        ];
        let mut rng = SplitMix64(seed);
        let ts = timestamps(&mut rng);
        let mut counts = [0u64; 12];
        let base = rng.int(0, 1_000_000) as u64;
        let mut out = vec![Vec::new(); 12];
        for &t in &ts {
            for _ in 0..rng.poisson(20.0) {
                let lat = 0.05 * (0.8 * rng.normal()).exp();
                for (c, le) in counts.iter_mut().zip(LE) {
                    if lat <= le {
                        *c += 1;
                    }
                }
            }
            for (b, series) in out.iter_mut().enumerate() {
                series.push((t, (counts[b] + base * b as u64 / 12) as f64));
            }
        }
        out
    }

    /// process_resident_memory_bytes: ~2e8, whole 4 KiB pages, small noise and slow drift.
    fn rss_gauge(seed: u64) -> Vec<Vec<(i64, f64)>> {
        let mut rng = SplitMix64(seed);
        let ts = timestamps(&mut rng);
        let mut pages = 200_000_000 / 4096 + rng.int(-5000, 5000);
        vec![ts
            .iter()
            .map(|&t| {
                if rng.unit() < 0.5 {
                    pages += rng.int(-16, 17); // noise with a slight upward drift
                }
                (t, (pages * 4096) as f64)
            })
            .collect()]
    }

    /// process_cpu_seconds_total: clock ticks / 100, ~0.3 s of CPU per 15 s with noise.
    fn cpu_seconds(seed: u64) -> Vec<Vec<(i64, f64)>> {
        let mut rng = SplitMix64(seed);
        let ts = timestamps(&mut rng);
        let mut ticks = rng.int(0, 10_000_000);
        vec![ts
            .iter()
            .map(|&t| {
                ticks += 30 + rng.int(-20, 20);
                (t, ticks as f64 / 100.0)
            })
            .collect()]
    }

    /// Constant gauges: up, a CPU count, a start time in seconds, a float config value.
    fn constant(seed: u64) -> Vec<Vec<(i64, f64)>> {
        let mut rng = SplitMix64(seed);
        [1.0, 8.0, 1_699_990_000.0, 0.75]
            .iter()
            .map(|&v| timestamps(&mut rng).into_iter().map(|t| (t, v)).collect())
            .collect()
    }

    /// Generates all series of one kind from a seed.
    type Gen = fn(u64) -> Vec<Vec<(i64, f64)>>;

    /// (encoded payload bytes, heap bytes, samples) over many series of one kind.
    fn measure(kind: Gen) -> (usize, usize, usize) {
        let (mut payload, mut heap, mut n) = (0, 0, 0);
        for seed in 0..20 {
            for s in kind(seed * 7919 + 1) {
                let mut rb = RingBuffer::new();
                for &(t, v) in &s {
                    assert_eq!(rb.push(t, v, DAY), Append::Appended);
                }
                let got: Vec<_> = rb.iter().map(|(t, v)| (t, v.to_bits())).collect();
                let want: Vec<_> = s.iter().map(|&(t, v)| (t, v.to_bits())).collect();
                assert_eq!(got, want);
                payload += rb.closed.iter().map(|c| c.data.len()).sum::<usize>()
                    + rb.head.w.buf.len()
                    + rb.head.w.acc_bits.div_ceil(8) as usize;
                heap += rb.heap_bytes();
                n += s.len();
            }
        }
        (payload, heap, n)
    }

    #[test]
    fn realistic_bytes_per_sample() {
        let kinds: [(&str, Gen); 5] = [
            ("counter (Poisson +150)", counter),
            ("histogram _bucket", histogram),
            ("gauge RSS ~2e8 (pages)", rss_gauge),
            ("constant gauge", constant),
            ("cpu seconds (ticks/100)", cpu_seconds),
        ];
        let mut sum = 0.0;
        println!(
            "2 h of 15 s samples (±{JITTER_MS} ms jitter); heap = payload + chunk slots + capacity"
        );
        for (name, kind) in kinds {
            let (payload, heap, n) = measure(kind);
            let per = heap as f64 / n as f64;
            println!(
                "{name:<26} payload {:.3} B/sample, heap {:.3} B/sample",
                payload as f64 / n as f64,
                per
            );
            sum += per;
        }
        let avg = sum / kinds.len() as f64;
        let (_, cpu_heap, cpu_n) = measure(cpu_seconds);
        assert!(
            (cpu_heap as f64 / cpu_n as f64) < 2.0,
            "hundredths take the integer path, not XOR"
        );
        let fixed = std::mem::size_of::<RingBuffer>();
        println!("mixed average (heap) {avg:.3} B/sample; fixed overhead {fixed} B + 8 B heap for one sample");
        assert!(avg <= 2.0, "average {avg}");
        assert!(fixed + 8 <= 200);
    }
}
