//! Decode: an HTTP remote-write body (RW 1.0 or 2.0, snappy block-compressed) in, a flat
//! [`Batch`] of labelled float samples and native histogram samples out. Two pure steps:
//! decompress within the size limit, then parse protobuf without copying. Native histograms
//! are checked as Prometheus checks them (`hist`). Nothing here touches shared state.

pub mod batch;
mod hist;
pub mod rw1;
pub mod rw2;
pub mod wire;

pub use batch::{Batch, Bucket, Extras, HistogramSample, LabelRef, ResetHint, Sample, SeriesEntry};

use crate::config::LimitsConfig;

/// Why a request body was refused. Every variant is the client's problem and stays so when
/// retried, except `TooLarge` which it may fix by sending smaller batches.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("unsupported content type {0:?}: expected application/x-protobuf (RW 1.0) or application/x-protobuf;proto=io.prometheus.write.v2.Request (RW 2.0)")]
    UnsupportedContentType(String),
    #[error("unsupported content encoding {0:?}: expected snappy")]
    UnsupportedEncoding(String),
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("empty body: expected a snappy-compressed protobuf message")]
    Empty,
    #[error("snappy: {0}")]
    Snappy(String),
    #[error("protobuf: message truncated")]
    Truncated,
    #[error("protobuf: {0}")]
    Malformed(&'static str),
    #[error("protobuf: {msg} field {field} has wire type {got}, expected {want}")]
    WireType {
        msg: &'static str,
        field: u32,
        got: u8,
        want: u8,
    },
    #[error("invalid labels: {0}")]
    Labels(String),
    #[error("limit exceeded: {0}")]
    Limit(String),
    #[error("invalid native histogram: {0}")]
    Histogram(String),
}

/// The protocol of a remote-write request, chosen by its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V1,
    V2,
}

impl Protocol {
    /// Chooses the protocol from the request's headers. A missing Content-Type or
    /// Content-Encoding means RW 1.0 with snappy, as Prometheus always compresses.
    pub fn negotiate(
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> Result<Protocol, DecodeError> {
        if let Some(enc) = content_encoding {
            if !enc.trim().eq_ignore_ascii_case("snappy") {
                return Err(DecodeError::UnsupportedEncoding(enc.to_string()));
            }
        }
        let Some(ct) = content_type else {
            return Ok(Protocol::V1);
        };
        let mut parts = ct.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !media.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(DecodeError::UnsupportedContentType(ct.to_string()));
        }
        let mut proto = Protocol::V1;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("proto") {
                proto = match v.trim().trim_matches('"') {
                    "prometheus.WriteRequest" => Protocol::V1,
                    "io.prometheus.write.v2.Request" => Protocol::V2,
                    _ => return Err(DecodeError::UnsupportedContentType(ct.to_string())),
                };
            }
        }
        Ok(proto)
    }
}

/// The limits that decoding enforces.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    pub max_body_bytes: usize,
    pub max_series_per_request: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    /// Most buckets on either side (negative, positive) of one native histogram sample.
    pub max_histogram_buckets: usize,
}

/// [`DecodeLimits::max_histogram_buckets`] for pushes, not configurable: far above what
/// instrumented services send (tens to a few hundred buckets), it bounds what one hostile
/// histogram can make the decoder do.
pub const MAX_HISTOGRAM_BUCKETS: usize = 1 << 16;

/// Most native histogram buckets one request may decode to (64 MiB of them): a body of
/// one-byte deltas would otherwise decode to 16 times its size.
pub const MAX_REQUEST_BUCKETS: usize = 1 << 22;

impl From<&LimitsConfig> for DecodeLimits {
    fn from(l: &LimitsConfig) -> Self {
        DecodeLimits {
            max_body_bytes: l.max_body_bytes,
            max_series_per_request: l.max_series_per_request,
            max_labels_per_series: l.max_labels_per_series,
            max_label_name_length: l.max_label_name_length,
            max_label_value_length: l.max_label_value_length,
            max_histogram_buckets: MAX_HISTOGRAM_BUCKETS,
        }
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits::from(&crate::config::Config::embedded().limits)
    }
}

/// Decoding scratch space, reused request after request (one per worker thread).
#[derive(Default)]
pub struct Decoder {
    batch: Batch,
    symbols: Vec<(u32, u32)>,
    series_msgs: Vec<(u32, u32)>,
}

impl Decoder {
    /// Decompresses and decodes one request body. On error the batch is left empty.
    pub fn decode(
        &mut self,
        protocol: Protocol,
        body: &[u8],
        limits: &DecodeLimits,
    ) -> Result<&mut Batch, DecodeError> {
        // `buf` keeps its length: `decompress` overwrites it without zeroing it first.
        self.batch.clear_keep_buf();
        self.batch.limits = limits.clone();
        let res = self.decode_inner(protocol, body, limits);
        if res.is_err() {
            self.batch.clear();
        }
        res.map(|()| &mut self.batch)
    }

    /// Decodes one message that is already decompressed (the protobuf bytes of a
    /// `WriteRequest` or v2 `Request`), under the same limits as [`Decoder::decode`]. For the
    /// fuzz targets and tests, which exercise the parsers without the snappy layer.
    pub fn decode_decompressed(
        &mut self,
        protocol: Protocol,
        message: &[u8],
        limits: &DecodeLimits,
    ) -> Result<&mut Batch, DecodeError> {
        self.batch.clear();
        self.batch.limits = limits.clone();
        let res = if message.len() > limits.max_body_bytes {
            Err(DecodeError::TooLarge {
                size: message.len(),
                limit: limits.max_body_bytes,
            })
        } else {
            self.batch.buf.extend_from_slice(message);
            self.parse(protocol, limits)
        };
        if res.is_err() {
            self.batch.clear();
        }
        res.map(|()| &mut self.batch)
    }

    fn decode_inner(
        &mut self,
        protocol: Protocol,
        body: &[u8],
        limits: &DecodeLimits,
    ) -> Result<(), DecodeError> {
        decompress(body, limits.max_body_bytes, &mut self.batch.buf)?;
        self.parse(protocol, limits)
    }

    /// Parses the decompressed message in `batch.buf`.
    fn parse(&mut self, protocol: Protocol, limits: &DecodeLimits) -> Result<(), DecodeError> {
        match protocol {
            Protocol::V1 => rw1::decode(&mut self.batch, limits),
            Protocol::V2 => rw2::decode(
                &mut self.batch,
                &mut self.symbols,
                &mut self.series_msgs,
                limits,
            ),
        }
    }

    /// The last successfully decoded batch.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }
}

/// Decompresses a snappy block into `out`, checking the announced length against `limit`
/// before allocating.
pub fn decompress(body: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    if body.len() > limit {
        return Err(DecodeError::TooLarge {
            size: body.len(),
            limit,
        });
    }
    let len = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if len > limit {
        return Err(DecodeError::TooLarge { size: len, limit });
    }
    // Reuse the previous request's bytes as they are: only growth is zeroed, not the whole
    // buffer on every request (the decoder overwrites all `len` bytes).
    if out.len() < len {
        out.resize(len, 0);
    } else {
        out.truncate(len);
    }
    let n = snap::raw::Decoder::new()
        .decompress(body, out)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    out.truncate(n);
    Ok(())
}

/// `a.cmp(b)` for short byte strings: label names differ within their first bytes, so a
/// byte loop beats a call to `memcmp`.
#[inline]
fn cmp_bytes(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Checks one series' labels: at least one, names non-empty and strictly ascending (so unique),
/// within the length and count limits. UTF-8 is checked by the store for new series only.
pub(crate) fn check_labels(
    buf: &[u8],
    labels: &[LabelRef],
    s: &SeriesEntry,
    index: usize,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    let ls = &labels[s.labels.start as usize..s.labels.end as usize];
    if ls.is_empty() {
        return Err(DecodeError::Labels(format!("series {index} has no labels")));
    }
    if ls.len() > limits.max_labels_per_series {
        return Err(DecodeError::Limit(format!(
            "series {index} has {} labels, more than {}",
            ls.len(),
            limits.max_labels_per_series
        )));
    }
    let text = |r: (u32, u32)| String::from_utf8_lossy(&buf[r.0 as usize..r.1 as usize]);
    let mut prev: &[u8] = &[];
    for (i, l) in ls.iter().enumerate() {
        let name = &buf[l.name.0 as usize..l.name.1 as usize];
        let vlen = (l.value.1 - l.value.0) as usize;
        if name.is_empty() {
            return Err(DecodeError::Labels(format!(
                "series {index}: empty label name"
            )));
        }
        if name.len() > limits.max_label_name_length {
            return Err(DecodeError::Limit(format!(
                "series {index}: label name of {} bytes, longer than {}",
                name.len(),
                limits.max_label_name_length
            )));
        }
        if vlen > limits.max_label_value_length {
            return Err(DecodeError::Limit(format!(
                "series {index}: value of label {:?} has {vlen} bytes, longer than {}",
                text(l.name),
                limits.max_label_value_length
            )));
        }
        if i > 0 {
            match cmp_bytes(prev, name) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Err(DecodeError::Labels(format!(
                        "series {index}: duplicate label name {:?}",
                        text(l.name)
                    )))
                }
                std::cmp::Ordering::Greater => {
                    return Err(DecodeError::Labels(format!(
                        "series {index}: labels not sorted: {:?} after {:?}",
                        text(l.name),
                        String::from_utf8_lossy(prev)
                    )))
                }
            }
        }
        prev = name;
    }
    Ok(())
}

#[cfg(test)]
mod hist_tests;
#[cfg(test)]
mod tests;
