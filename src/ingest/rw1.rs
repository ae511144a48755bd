//! Remote-Write 1.0: a decompressed `prometheus.WriteRequest` in, a [`Batch`] out. Hand-written
//! and borrowing: labels stay byte ranges of the body; UTF-8 is checked later, once per new
//! series, by the store.

use super::batch::{Batch, LabelRef, Sample, SeriesEntry};
use super::wire::{expect, Reader, FIXED64, LEN, VARINT};
use super::{check_labels, DecodeError, DecodeLimits};

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
                decode_series(
                    ts,
                    off as u32,
                    &mut batch.labels,
                    &mut batch.samples,
                    &mut batch.series,
                    &mut batch.extras,
                )?;
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

fn decode_series(
    msg: &[u8],
    base: u32,
    labels: &mut Vec<LabelRef>,
    samples: &mut Vec<Sample>,
    series: &mut Vec<SeriesEntry>,
    extras: &mut super::batch::Extras,
) -> Result<(), DecodeError> {
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
                extras.histograms += 1;
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
        raw_labels: (raw_start, raw_end),
        deferred: contiguous,
    });
    Ok(())
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
