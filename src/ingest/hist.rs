//! Native histograms: one `Histogram` message (RW 1.0 and 2.0 share its fields; 2.0 adds
//! `custom_values` = 16 and `start_timestamp` = 17) in, a [`HistogramSample`] and its buckets
//! out, checked as Prometheus' `Histogram.Validate` checks them. Only series that carry
//! histograms come here: the float path never does.
//!
//! Two passes over the message, allocating nothing: the first reads the scalars and counts
//! each side's deltas or counts (so the bucket limit holds before anything is pushed); the
//! second walks each side's spans beside its values, which may be spread over several fields
//! in any order, packed or not.

use super::batch::{Bucket, HistogramSample, ResetHint};
use super::wire::{expect, Reader, FIXED64, LEN, VARINT};
use super::{DecodeError, DecodeLimits};
use crate::store::STALE_NAN_BITS;

const MSG: &str = "Histogram";

/// The lowest and highest exponential schemas (Prometheus 2.42 and later).
const MIN_SCHEMA: i32 = -4;
const MAX_SCHEMA: i32 = 8;

/// A valid float count or zero threshold. False for NaN.
#[inline]
fn finite_nonnegative(x: f64) -> bool {
    x >= 0.0 && x.is_finite()
}

#[inline]
fn zigzag32(v: u64) -> i32 {
    // As prost reads a sint32: the varint truncated to 32 bits, then unzigzagged.
    let v = v as u32;
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

#[inline]
fn zigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// One side of a histogram: its field numbers and its name in errors.
#[derive(Clone, Copy)]
struct Side {
    name: &'static str,
    spans: u32,
    deltas: u32,
    counts: u32,
}

const NEGATIVE: Side = Side {
    name: "negative",
    spans: 8,
    deltas: 9,
    counts: 10,
};
const POSITIVE: Side = Side {
    name: "positive",
    spans: 11,
    deltas: 12,
    counts: 13,
};

/// Decodes and checks one `Histogram` message, appending its buckets to `buckets`. `v2`:
/// the RW 2.0 message (fields 16 and 17 known). `series` and `nth` (the histogram's place
/// within its series) name it in errors. On error `buckets` may hold a partial tail: the
/// caller refuses the whole request.
#[inline(never)]
pub(super) fn decode(
    msg: &[u8],
    v2: bool,
    series: usize,
    nth: usize,
    buckets: &mut Vec<Bucket>,
    limits: &DecodeLimits,
) -> Result<HistogramSample, DecodeError> {
    let invalid =
        |m: String| DecodeError::Histogram(format!("series {series} histogram {nth}: {m}"));
    let mut h = HistogramSample {
        ts: 0,
        schema: 0,
        reset_hint: ResetHint::Unknown,
        float: false,
        count: 0.0,
        sum: 0.0,
        zero_threshold: 0.0,
        zero_count: 0.0,
        negative: (0, 0),
        positive: (0, 0),
    };
    let mut schema = 0i32;
    let mut count_int = 0u64;
    let mut zero_count_int = 0u64;
    // Whether integer (count_int, zero_count_int, deltas) or float (count_float,
    // zero_count_float, counts) fields carried a value: a histogram is one or the other.
    let mut has_int = false;
    let mut has_float = false;
    let mut custom_values = false;
    // Deltas or counts per side: [negative, positive].
    let mut values = [0usize; 2];

    let mut r = Reader::new(msg);
    while !r.is_empty() {
        let (field, wt) = r.tag()?;
        match field {
            1 => {
                expect(MSG, 1, wt, VARINT)?;
                count_int = r.varint()?;
                has_int = true;
            }
            2 => {
                expect(MSG, 2, wt, FIXED64)?;
                h.count = f64::from_bits(r.fixed64()?);
                has_float = true;
            }
            3 => {
                expect(MSG, 3, wt, FIXED64)?;
                h.sum = f64::from_bits(r.fixed64()?);
            }
            4 => {
                expect(MSG, 4, wt, VARINT)?;
                schema = zigzag32(r.varint()?);
            }
            5 => {
                expect(MSG, 5, wt, FIXED64)?;
                h.zero_threshold = f64::from_bits(r.fixed64()?);
            }
            6 => {
                expect(MSG, 6, wt, VARINT)?;
                zero_count_int = r.varint()?;
                has_int = true;
            }
            7 => {
                expect(MSG, 7, wt, FIXED64)?;
                h.zero_count = f64::from_bits(r.fixed64()?);
                has_float = true;
            }
            // Spans are read in the second pass.
            8 | 11 => {
                expect(MSG, field, wt, LEN)?;
                r.bytes()?;
            }
            9 | 12 => {
                let n = count_values(&mut r, field, wt, VARINT)?;
                values[(field == 12) as usize] += n;
                has_int |= n > 0;
            }
            10 | 13 => {
                let n = count_values(&mut r, field, wt, FIXED64)?;
                values[(field == 13) as usize] += n;
                has_float |= n > 0;
            }
            14 => {
                expect(MSG, 14, wt, VARINT)?;
                // An enum is an int32 on the wire, as prost reads it.
                h.reset_hint = match r.varint()? as i32 {
                    0 => ResetHint::Unknown,
                    1 => ResetHint::Yes,
                    2 => ResetHint::No,
                    3 => ResetHint::Gauge,
                    v => return Err(invalid(format!("unknown reset hint {v}"))),
                };
            }
            15 => {
                expect(MSG, 15, wt, VARINT)?;
                h.ts = r.varint()? as i64;
            }
            // repeated double custom_values = 16 (RW 2.0): custom bucket boundaries.
            16 if v2 => {
                custom_values |= count_values(&mut r, field, wt, FIXED64)? > 0;
            }
            _ => r.skip(wt)?,
        }
    }

    for (side, n) in [(NEGATIVE, values[0]), (POSITIVE, values[1])] {
        if n > limits.max_histogram_buckets {
            return Err(DecodeError::Limit(format!(
                "series {series} histogram {nth} has {n} {} buckets, more than {}",
                side.name, limits.max_histogram_buckets
            )));
        }
    }
    // And the whole request: a bucket is 16 bytes decoded from as little as one.
    if buckets.len() + values[0] + values[1] > super::MAX_REQUEST_BUCKETS {
        return Err(DecodeError::Limit(format!(
            "series {series} histogram {nth}: the request has more than {} native histogram buckets",
            super::MAX_REQUEST_BUCKETS
        )));
    }
    if custom_values {
        return Err(invalid(format!(
            "unknown schema {schema}: custom bucket boundaries are not supported"
        )));
    }
    if !(MIN_SCHEMA..=MAX_SCHEMA).contains(&schema) {
        return Err(invalid(format!("unknown schema {schema}")));
    }
    h.schema = schema as i8;
    if has_int && has_float {
        return Err(invalid("mixes integer and float counts".into()));
    }
    h.float = has_float;
    if !finite_nonnegative(h.zero_threshold) {
        return Err(invalid(format!(
            "zero threshold {}, expected a finite number >= 0",
            h.zero_threshold
        )));
    }
    // A stale marker ends the series whatever its counts say (Prometheus sends zeros).
    let stale = h.sum.to_bits() == STALE_NAN_BITS;

    // Observations in the buckets of both sides.
    let mut total_int = 0u128;
    let mut total_float = 0.0f64;
    for (side, n) in [(NEGATIVE, values[0]), (POSITIVE, values[1])] {
        let start = buckets.len() as u32;
        let mut spans = Spans::new(msg, side.spans);
        // The spans' lengths must add up to the values sent; later offsets are gaps.
        let mut need = 0u64;
        let mut i = 0usize;
        while let Some((offset, length)) = spans.next()? {
            if i > 0 && offset < 0 {
                return Err(invalid(format!(
                    "{} span {i} has offset {offset}: only the first may be negative",
                    side.name
                )));
            }
            need += length as u64;
            i += 1;
        }
        if need != n as u64 {
            return Err(invalid(format!(
                "{} spans need {need} buckets, have {n}",
                side.name
            )));
        }
        let mut vals = Repeated::new(msg, if h.float { side.counts } else { side.deltas });
        let mut spans = Spans::new(msg, side.spans);
        // The index of the next bucket: each offset moves it on from the previous span's end.
        let mut index = 0i64;
        let mut running = 0i64;
        while let Some((offset, length)) = spans.next()? {
            index += offset as i64;
            for _ in 0..length {
                let raw = vals.next(h.float)?.ok_or(DecodeError::Malformed(
                    "histogram values changed between passes",
                ))?;
                let Ok(at) = i32::try_from(index) else {
                    return Err(invalid(format!(
                        "{} bucket index {index} out of range",
                        side.name
                    )));
                };
                let count = if h.float {
                    let c = f64::from_bits(raw);
                    if !(stale || finite_nonnegative(c)) {
                        return Err(invalid(format!(
                            "{} bucket {at} has count {c}, expected a finite count >= 0",
                            side.name
                        )));
                    }
                    total_float += c;
                    c
                } else {
                    running = running.checked_add(zigzag64(raw)).ok_or_else(|| {
                        invalid(format!("{} bucket {at}: count overflows", side.name))
                    })?;
                    if !stale && running < 0 {
                        return Err(invalid(format!(
                            "{} bucket {at} has a negative count {running}",
                            side.name
                        )));
                    }
                    total_int += running.unsigned_abs() as u128;
                    running as f64
                };
                buckets.push(Bucket { index: at, count });
                index += 1;
            }
        }
        let range = (start, buckets.len() as u32);
        if side.spans == NEGATIVE.spans {
            h.negative = range;
        } else {
            h.positive = range;
        }
    }

    if h.float {
        for (what, c) in [("zero count", h.zero_count), ("count", h.count)] {
            if !(stale || finite_nonnegative(c)) {
                return Err(invalid(format!("{what} {c}, expected a finite count >= 0")));
            }
        }
        let total = h.zero_count + total_float;
        // Float counts carry rounding: allow a relative 1e-9 short.
        if !stale && h.count < total * (1.0 - 1e-9) {
            return Err(invalid(format!(
                "count {} is less than {total}, the observations in its zero bucket and buckets",
                h.count
            )));
        }
    } else {
        h.count = count_int as f64;
        h.zero_count = zero_count_int as f64;
        let total = zero_count_int as u128 + total_int;
        let count = count_int as u128;
        if !stale {
            // A NaN observation lands in no bucket: then the count may exceed the total.
            if h.sum.is_nan() && count < total {
                return Err(invalid(format!(
                    "count {count} is less than {total}, the observations in its zero bucket and buckets"
                )));
            }
            if !h.sum.is_nan() && count != total {
                return Err(invalid(format!(
                    "count {count} differs from {total}, the observations in its zero bucket and buckets (sum is not NaN)"
                )));
            }
        }
    }
    Ok(h)
}

/// Counts the values of one field of a repeated scalar (`scalar` its unpacked wire type,
/// VARINT or FIXED64), packed or not, and moves past it.
fn count_values(r: &mut Reader, field: u32, wt: u8, scalar: u8) -> Result<usize, DecodeError> {
    if wt != LEN {
        expect(MSG, field, wt, scalar)?;
        if scalar == VARINT {
            r.varint()?;
        } else {
            r.fixed64()?;
        }
        return Ok(1);
    }
    let (b, _) = r.bytes()?;
    if scalar == FIXED64 {
        if b.len() % 8 != 0 {
            return Err(DecodeError::Malformed(
                "packed doubles not a multiple of 8 bytes",
            ));
        }
        Ok(b.len() / 8)
    } else {
        if b.last().is_some_and(|&x| x >= 0x80) {
            return Err(DecodeError::Truncated);
        }
        // Every varint ends with the one byte that has no continuation bit.
        Ok(b.iter().filter(|&&x| x < 0x80).count())
    }
}

/// The values of one repeated scalar field in order, over as many fields as were sent, each
/// packed or not (wire types were checked by the first pass): raw varints or double bits.
struct Repeated<'a> {
    r: Reader<'a>,
    packed: Reader<'a>,
    field: u32,
}

impl<'a> Repeated<'a> {
    fn new(msg: &'a [u8], field: u32) -> Self {
        Repeated {
            r: Reader::new(msg),
            packed: Reader::new(&[]),
            field,
        }
    }

    fn next(&mut self, fixed: bool) -> Result<Option<u64>, DecodeError> {
        loop {
            if !self.packed.is_empty() {
                let v = if fixed {
                    self.packed.fixed64()?
                } else {
                    self.packed.varint()?
                };
                return Ok(Some(v));
            }
            if self.r.is_empty() {
                return Ok(None);
            }
            let (field, wt) = self.r.tag()?;
            if field != self.field {
                self.r.skip(wt)?;
            } else if wt == LEN {
                self.packed = Reader::new(self.r.bytes()?.0);
            } else {
                let v = if fixed {
                    self.r.fixed64()?
                } else {
                    self.r.varint()?
                };
                return Ok(Some(v));
            }
        }
    }
}

/// The `BucketSpan`s (offset, length) of one side, in order.
struct Spans<'a> {
    r: Reader<'a>,
    field: u32,
}

impl<'a> Spans<'a> {
    fn new(msg: &'a [u8], field: u32) -> Self {
        Spans {
            r: Reader::new(msg),
            field,
        }
    }

    fn next(&mut self) -> Result<Option<(i32, u32)>, DecodeError> {
        while !self.r.is_empty() {
            let (field, wt) = self.r.tag()?;
            if field != self.field {
                self.r.skip(wt)?;
                continue;
            }
            let (b, _) = self.r.bytes()?;
            let (mut offset, mut length) = (0i32, 0u32);
            let mut s = Reader::new(b);
            while !s.is_empty() {
                let (f, wt) = s.tag()?;
                match f {
                    1 => {
                        expect("BucketSpan", 1, wt, VARINT)?;
                        offset = zigzag32(s.varint()?);
                    }
                    2 => {
                        expect("BucketSpan", 2, wt, VARINT)?;
                        length = s.varint()? as u32;
                    }
                    _ => s.skip(wt)?,
                }
            }
            return Ok(Some((offset, length)));
        }
        Ok(None)
    }
}
