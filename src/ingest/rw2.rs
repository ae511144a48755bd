//! Remote-Write 2.0: a decompressed `io.prometheus.write.v2.Request` in, a [`Batch`] out.
//! Label references are resolved against the request's symbol table into byte ranges of
//! the body, so the store sees the same shape as for 1.0.

use super::batch::{Batch, LabelRef, SeriesEntry};
use super::rw1::decode_sample;
use super::wire::{expect, Reader, LEN, VARINT};
use super::{check_labels, hist, DecodeError, DecodeLimits};

/// Decodes `batch.buf` (a v2 `Request`). `symbols` is scratch space reused across calls.
pub fn decode(
    batch: &mut Batch,
    symbols: &mut Vec<(u32, u32)>,
    series_msgs: &mut Vec<(u32, u32)>,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    symbols.clear();
    series_msgs.clear();
    let buf = &batch.buf[..];
    // Fields may come in any order: collect symbols and series first.
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (field, wt) = r.tag()?;
        match field {
            4 => {
                expect("Request", 4, wt, LEN)?;
                let (b, off) = r.bytes()?;
                symbols.push((off as u32, (off + b.len()) as u32));
            }
            5 => {
                expect("Request", 5, wt, LEN)?;
                let (b, off) = r.bytes()?;
                if series_msgs.len() >= limits.max_series_per_request {
                    return Err(DecodeError::Limit(format!(
                        "more than {} series in one request",
                        limits.max_series_per_request
                    )));
                }
                series_msgs.push((off as u32, (off + b.len()) as u32));
            }
            _ => r.skip(wt)?,
        }
    }
    if !series_msgs.is_empty() {
        match symbols.first() {
            Some(&(a, b)) if a == b => {}
            Some(_) => {
                return Err(DecodeError::Malformed(
                    "symbols[0] must be the empty string",
                ))
            }
            None => return Err(DecodeError::Malformed("series present but no symbol table")),
        }
    }
    for (i, &(a, b)) in series_msgs.iter().enumerate() {
        let label_start = batch.labels.len() as u32;
        let sample_start = batch.samples.len() as u32;
        let histogram_start = batch.histograms.len() as u32;
        let mut r = Reader::new(&buf[a as usize..b as usize]);
        while !r.is_empty() {
            let (field, wt) = r.tag()?;
            match field {
                // repeated uint32 labels_refs = 1, packed or not.
                1 => match wt {
                    LEN => {
                        let (packed, _) = r.bytes()?;
                        let mut p = Reader::new(packed);
                        while !p.is_empty() {
                            let name = p.varint()?;
                            if p.is_empty() {
                                return Err(DecodeError::Labels(format!(
                                    "series {i}: odd number of label references"
                                )));
                            }
                            let value = p.varint()?;
                            push_label(&mut batch.labels, symbols, name, value, i)?;
                        }
                    }
                    VARINT => {
                        // Unpacked: two consecutive fields form a pair.
                        let name = r.varint()?;
                        let (f2, wt2) = r.tag()?;
                        if f2 != 1 || wt2 != VARINT {
                            return Err(DecodeError::Labels(format!(
                                "series {i}: odd number of label references"
                            )));
                        }
                        let value = r.varint()?;
                        push_label(&mut batch.labels, symbols, name, value, i)?;
                    }
                    _ => {
                        return Err(DecodeError::WireType {
                            msg: "TimeSeries",
                            field: 1,
                            got: wt,
                            want: LEN,
                        })
                    }
                },
                2 => {
                    expect("TimeSeries", 2, wt, LEN)?;
                    let (sb, _) = r.bytes()?;
                    batch.samples.push(decode_sample(sb)?);
                }
                3 => {
                    expect("TimeSeries", 3, wt, LEN)?;
                    let (hb, _) = r.bytes()?;
                    let nth = batch.histograms.len() - histogram_start as usize;
                    let h = hist::decode(hb, true, i, nth, &mut batch.buckets, limits)?;
                    batch.histograms.push(h);
                }
                4 => {
                    expect("TimeSeries", 4, wt, LEN)?;
                    r.bytes()?;
                    batch.extras.exemplars += 1;
                }
                5 => {
                    expect("TimeSeries", 5, wt, LEN)?;
                    r.bytes()?;
                    batch.extras.metadata += 1;
                }
                _ => r.skip(wt)?,
            }
        }
        batch.series.push(SeriesEntry {
            labels: label_start..batch.labels.len() as u32,
            samples: sample_start..batch.samples.len() as u32,
            histograms: histogram_start..batch.histograms.len() as u32,
            raw_labels: (0, 0),
            deferred: false,
        });
        let s = batch.series.last().expect("just pushed");
        check_labels(buf, &batch.labels, s, i, limits)?;
    }
    Ok(())
}

#[inline]
fn push_label(
    labels: &mut Vec<LabelRef>,
    symbols: &[(u32, u32)],
    name: u64,
    value: u64,
    series: usize,
) -> Result<(), DecodeError> {
    let sym = |r: u64| {
        symbols.get(r as usize).copied().ok_or_else(|| {
            DecodeError::Labels(format!(
                "series {series}: label reference {r} outside the symbol table ({} symbols)",
                symbols.len()
            ))
        })
    };
    let name = sym(name)?;
    let value = sym(value)?;
    if value.0 != value.1 {
        labels.push(LabelRef { name, value });
    }
    Ok(())
}
