//! Remote read: matchers and a time range in, the series Prometheus holds for them out.
//! `POST {url}/api/v1/read` with a snappy-compressed `prometheus.ReadRequest` asking for
//! `SAMPLES` (what Prometheus 2.42 answers with a snappy `ReadResponse`), one query per call.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use super::BacktestError;
use crate::cli::http::HttpClient;
use crate::proto::prometheus::{
    read_request::ResponseType, LabelMatcher, Query, ReadRequest, ReadResponse, TimeSeries,
};

/// The largest decompressed answer accepted (Prometheus' default sample limit, 5e7, at
/// ~20 bytes a sample is ~1 GB; one chunk of a backtest is far below).
const MAX_ANSWER_BYTES: usize = 1 << 30;

/// A Prometheus server's remote-read endpoint.
pub struct RemoteRead {
    client: HttpClient,
    url: String,
}

impl RemoteRead {
    /// `base` is the server's URL (`http://prometheus:9090`), as for `--prometheus.url`.
    pub fn new(base: &str, timeout: Duration) -> RemoteRead {
        RemoteRead {
            client: HttpClient::new(timeout),
            url: format!("{}/api/v1/read", base.trim_end_matches('/')),
        }
    }

    /// The series matching `matchers` with their samples in `[start, end]` (Unix ms, both
    /// inclusive, as Prometheus reads them).
    pub async fn query(
        &self,
        matchers: &[LabelMatcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<TimeSeries>, BacktestError> {
        let req = ReadRequest {
            queries: vec![Query {
                start_timestamp_ms: start,
                end_timestamp_ms: end,
                matchers: matchers.to_vec(),
                hints: None,
            }],
            accepted_response_types: vec![ResponseType::Samples as i32],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .map_err(|e| BacktestError::Encode(e.to_string()))?;
        let answer = self
            .client
            .post_bytes(
                &self.url,
                &[
                    ("content-type", "application/x-protobuf"),
                    ("content-encoding", "snappy"),
                    ("x-prometheus-remote-read-version", "0.1.0"),
                ],
                Bytes::from(body),
            )
            .await
            .map_err(|e| BacktestError::Unreachable(e.to_string()))?;
        if answer.status != 200 {
            return Err(BacktestError::Refused {
                url: self.url.clone(),
                status: answer.status,
                reason: answer.text(),
            });
        }
        decode_answer(&answer.body).map_err(|reason| BacktestError::BadAnswer {
            url: self.url.clone(),
            reason,
        })
    }
}

/// A snappy `ReadResponse` with one query's result in, its series out.
fn decode_answer(body: &[u8]) -> Result<Vec<TimeSeries>, String> {
    let len = snap::raw::decompress_len(body).map_err(|e| format!("snappy: {e}"))?;
    if len > MAX_ANSWER_BYTES {
        return Err(format!(
            "answer of {len} bytes decompressed is over {MAX_ANSWER_BYTES}; use a shorter --read-chunk"
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: {e}"))?;
    let res = ReadResponse::decode(&raw[..]).map_err(|e| format!("protobuf: {e}"))?;
    let mut results = res.results.into_iter();
    let first = results.next().map(|r| r.timeseries).unwrap_or_default();
    if results.next().is_some() {
        return Err("more results than queries".into());
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::prometheus::{Label, QueryResult, Sample};

    #[test]
    fn decodes_a_snappy_read_response_and_refuses_garbage() {
        let res = ReadResponse {
            results: vec![QueryResult {
                timeseries: vec![TimeSeries {
                    labels: vec![Label {
                        name: "job".into(),
                        value: "a".into(),
                    }],
                    samples: vec![Sample {
                        value: 1.5,
                        timestamp: 7,
                    }],
                    ..Default::default()
                }],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&res.encode_to_vec())
            .unwrap();
        let series = decode_answer(&body).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].samples[0].timestamp, 7);
        assert!(decode_answer(b"not snappy at all").is_err());
        let two = ReadResponse {
            results: vec![QueryResult::default(), QueryResult::default()],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&two.encode_to_vec())
            .unwrap();
        assert!(decode_answer(&body).unwrap_err().contains("more results"));
    }
}
