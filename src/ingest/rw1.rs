//! Remote-Write 1.0: a decompressed `prometheus.WriteRequest` in, a [`Batch`] out. Hand-written
//! and borrowing: labels stay byte ranges of the body; UTF-8 is checked later, once per new
//! series, by the store.

use std::ops::Range;

use super::batch::{Batch, Bucket, HistogramSample, LabelRef, Sample, SeriesEntry};
use super::wire::{expect, Reader, FIXED64, LEN, VARINT};
use super::{check_labels, hist, DecodeError, DecodeLimits};

/// Decodes `batch.buf` (a `WriteRequest`) into the batch's arrays.
pub fn decode(batch: &mut Batch, limits: &DecodeLimits) -> Result<(), DecodeError> {
    let buf = &batch.buf[..];
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (field, wt) = r.tag()?;
        match field {
            // repeated TimeSeries timeseries = 1
            1 => {
                expect("WriteRequest", 1, wt, LEN)?;
                let (ts, off) = r.bytes()?;
                if batch.series.len() >= limits.max_series_per_request {
                    return Err(DecodeError::Limit(format!(
                        "more than {} series in one request",
                        limits.max_series_per_request
                    )));
                }
                let histograms = decode_series(
                    ts,
                    off as u32,
                    batch.histograms.len() as u32,
                    &mut batch.labels,
                    &mut batch.samples,
                    &mut batch.series,
                    &mut batch.extras,
                )?;
                if histograms {
                    let i = batch.series.len() - 1;
                    batch.series[i].histograms = decode_histograms(
                        ts,
                        i,
                        &mut batch.histograms,
                        &mut batch.buckets,
                        limits,
                    )?;
                }
                let s = batch.series.last().expect("just pushed");
                if !s.deferred {
                    check_labels(buf, &batch.labels, s, batch.series.len() - 1, limits)?;
                }
            }
            // repeated MetricMetadata metadata = 3
            3 => {
                expect("WriteRequest", 3, wt, LEN)?;
                r.bytes()?;
                batch.extras.metadata += 1;
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(())
}

/// Decodes one `TimeSeries` but its histograms; returns whether it has any (field 4), for
/// the caller to decode them (the fast path never sees one). `histograms_at` is where its
/// histograms would start in [`Batch::histograms`].
fn decode_series(
    msg: &[u8],
    base: u32,
    histograms_at: u32,
    labels: &mut Vec<LabelRef>,
    samples: &mut Vec<Sample>,
    series: &mut Vec<SeriesEntry>,
    extras: &mut super::batch::Extras,
) -> Result<bool, DecodeError> {
    if decode_series_as_sent(
        msg,
        base,
        labels.len() as u32,
        histograms_at,
        samples,
        series,
    ) {
        return Ok(false);
    }
    let mut histograms = false;
    let sample_start = samples.len() as u32;
    // The label fields' byte span. In everything Prometheus sends they are contiguous: then
    // they are not parsed here but on demand, only for series the store does not know.
    let mut raw_start = u32::MAX;
    let mut raw_end = 0u32;
    let mut label_fields = 0u32;
    let mut contiguous = true;
    let mut r = Reader::new(msg);
    while !r.is_empty() {
        let field_start = r.pos() as u32;
        let (field, wt) = r.tag()?;
        match field {
            1 => {
                expect("TimeSeries", 1, wt, LEN)?;
                r.bytes()?;
                if label_fields > 0 && raw_end != base + field_start {
                    contiguous = false;
                }
                label_fields += 1;
                raw_start = raw_start.min(base + field_start);
                raw_end = base + r.pos() as u32;
            }
            2 => {
                expect("TimeSeries", 2, wt, LEN)?;
                let (sb, _) = r.bytes()?;
                samples.push(decode_sample(sb)?);
            }
            3 => {
                expect("TimeSeries", 3, wt, LEN)?;
                r.bytes()?;
                extras.exemplars += 1;
            }
            4 => {
                expect("TimeSeries", 4, wt, LEN)?;
                r.bytes()?;
                histograms = true;
            }
            _ => r.skip(wt)?,
        }
    }
    if label_fields == 0 {
        return Err(DecodeError::Labels(format!(
            "series {} has no labels",
            series.len()
        )));
    }
    let label_start = labels.len() as u32;
    if !contiguous {
        // Label fields interleaved with others: parse them now, field by field.
        let mut r = Reader::new(msg);
        while !r.is_empty() {
            let (field, wt) = r.tag()?;
            if field == 1 {
                let (lb, off) = r.bytes()?;
                push_label(decode_label(lb, base + off as u32)?, labels);
            } else {
                r.skip(wt)?;
            }
        }
    }
    series.push(SeriesEntry {
        labels: label_start..labels.len() as u32,
        samples: sample_start..samples.len() as u32,
        histograms: histograms_at..histograms_at,
        raw_labels: (raw_start, raw_end),
        deferred: contiguous,
    });
    Ok(histograms)
}

/// Decodes the histograms (field 4) of series `index`, a `TimeSeries` whose other fields
/// were read; returns their range in `histograms`.
#[inline(never)]
fn decode_histograms(
    msg: &[u8],
    index: usize,
    histograms: &mut Vec<HistogramSample>,
    buckets: &mut Vec<Bucket>,
    limits: &DecodeLimits,
) -> Result<Range<u32>, DecodeError> {
    let first = histograms.len() as u32;
    let mut r = Reader::new(msg);
    while !r.is_empty() {
        let (field, wt) = r.tag()?;
        if field == 4 {
            let (hb, _) = r.bytes()?;
            let nth = histograms.len() - first as usize;
            histograms.push(hist::decode(hb, false, index, nth, buckets, limits)?);
        } else {
            r.skip(wt)?;
        }
    }
    Ok(first..histograms.len() as u32)
}

/// The fast path for a `TimeSeries` laid out as Prometheus writes it: label fields (`0x0a`,
/// a one-byte length) back to back, then `Sample` fields (`0x12`, a one-byte length) each
/// holding `0x09` + value and `0x10` + timestamp varint. Returns `false`, having changed
/// nothing, for any other layout (a series with histograms, field 4, among them); the
/// general path then decodes it, with the same result for this layout (the fuzz target
/// `rw1_decode` compares both against prost).
#[inline(always)]
fn decode_series_as_sent(
    msg: &[u8],
    base: u32,
    label_start: u32,
    histograms_at: u32,
    samples: &mut Vec<Sample>,
    series: &mut Vec<SeriesEntry>,
) -> bool {
    let n = msg.len();
    let mut p = 0;
    while p + 1 < n && msg[p] == 0x0a && msg[p + 1] < 0x80 {
        p += 2 + msg[p + 1] as usize;
    }
    if p == 0 || p > n {
        return false;
    }
    let labels_end = p;
    let sample_start = samples.len();
    while p < n {
        let sample = match msg.get(p..p + 2) {
            Some(&[0x12, len]) if len < 0x80 => msg
                .get(p + 2..p + 2 + len as usize)
                .and_then(sample_as_sent),
            _ => None,
        };
        let Some(sample) = sample else {
            samples.truncate(sample_start);
            return false;
        };
        samples.push(sample);
        p += 2 + msg[p + 1] as usize;
    }
    series.push(SeriesEntry {
        labels: label_start..label_start,
        samples: sample_start as u32..samples.len() as u32,
        histograms: histograms_at..histograms_at,
        raw_labels: (base, base + labels_end as u32),
        deferred: true,
    });
    true
}

/// `0x09` + 8 value bytes (absent when the value is 0, as proto3 writers omit it), then
/// `0x10` + a timestamp varint that ends the message.
#[inline(always)]
fn sample_as_sent(s: &[u8]) -> Option<Sample> {
    let (value, ts_bytes) = match s {
        [0x09, v @ ..] if v.len() >= 10 && v[8] == 0x10 => (
            f64::from_bits(u64::from_le_bytes(v[..8].try_into().ok()?)),
            &v[9..],
        ),
        [0x10, rest @ ..] => (0.0, rest),
        _ => return None,
    };
    let mut ts: u64 = 0;
    for (i, &b) in ts_bytes.iter().enumerate().take(10) {
        ts |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            // The varint must end exactly at the end of the message.
            return (i + 1 == ts_bytes.len()).then_some(Sample {
                ts: ts as i64,
                value,
            });
        }
    }
    None
}

/// Keeps a label unless its value is empty: Prometheus treats that as an absent label.
#[inline]
fn push_label(l: LabelRef, labels: &mut Vec<LabelRef>) {
    if l.value.0 != l.value.1 {
        labels.push(l);
    }
}

/// Parses contiguous `Label` fields (`bytes`, which start at `base` in the body).
pub(super) fn parse_label_fields(
    bytes: &[u8],
    base: u32,
    labels: &mut Vec<LabelRef>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let (field, wt) = r.tag()?;
        expect("TimeSeries", field, wt, LEN)?;
        let (lb, off) = r.bytes()?;
        push_label(decode_label(lb, base + off as u32)?, labels);
    }
    Ok(())
}

#[inline]
fn decode_label(msg: &[u8], base: u32) -> Result<LabelRef, DecodeError> {
    // Fast path: exactly `name` (field 1) then `value` (field 2), each shorter than 128
    // bytes — what every Prometheus sends. Anything else takes the general path below,
    // which gives the same result for this layout.
    if let [0x0a, l, rest @ ..] = msg {
        let l = *l as usize;
        if l < 0x80 && rest.len() >= l + 2 && rest[l] == 0x12 {
            let m = rest[l + 1] as usize;
            if m < 0x80 && rest.len() == l + 2 + m {
                let n0 = base + 2;
                let v0 = n0 + l as u32 + 2;
                return Ok(LabelRef {
                    name: (n0, n0 + l as u32),
                    value: (v0, v0 + m as u32),
                });
            }
        }
    }
    decode_label_general(msg, base)
}

#[inline(never)]
fn decode_label_general(msg: &[u8], base: u32) -> Result<LabelRef, DecodeError> {
    let mut name = (base, base);
    let mut value = (base, base);
    let mut r = Reader::new(msg);
    while !r.is_empty() {
        let (field, wt) = r.tag()?;
        match field {
            1 => {
                expect("Label", 1, wt, LEN)?;
                let (b, off) = r.bytes()?;
                name = (base + off as u32, base + (off + b.len()) as u32);
            }
            2 => {
                expect("Label", 2, wt, LEN)?;
                let (b, off) = r.bytes()?;
                value = (base + off as u32, base + (off + b.len()) as u32);
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(LabelRef { name, value })
}

/// Decodes a `Sample` message; its layout is the same in 1.0 and 2.0.
#[inline]
pub(super) fn decode_sample(msg: &[u8]) -> Result<Sample, DecodeError> {
    let mut s = Sample { ts: 0, value: 0.0 };
    let mut r = Reader::new(msg);
    while !r.is_empty() {
        let (field, wt) = r.tag()?;
        match field {
            1 => {
                expect("Sample", 1, wt, FIXED64)?;
                s.value = f64::from_bits(r.fixed64()?);
            }
            2 => {
                expect("Sample", 2, wt, VARINT)?;
                s.ts = r.varint()? as i64;
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(s)
}
