use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::proto::{prometheus as pb, write_v2 as v2};

fn label(n: &str, v: &str) -> pb::Label {
    pb::Label {
        name: n.into(),
        value: v.into(),
    }
}

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> pb::TimeSeries {
    pb::TimeSeries {
        labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| pb::Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

/// A decoded series: its labels and its (timestamp, value bits) samples.
type Decoded = (Vec<(String, String)>, Vec<(i64, u64)>);

fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(b).unwrap()
}

fn decode_v1(req: &pb::WriteRequest) -> Result<Vec<Decoded>, DecodeError> {
    decode_body(Protocol::V1, &snappy(&req.encode_to_vec()))
}

fn decode_body(p: Protocol, body: &[u8]) -> Result<Vec<Decoded>, DecodeError> {
    let mut d = Decoder::default();
    let b = d.decode(p, body, &DecodeLimits::default())?;
    // Labels Prometheus sends contiguously are parsed on demand: parse them all.
    b.ensure_all_labels()?;
    Ok(b.series
        .iter()
        .map(|s| {
            (
                b.series_labels(s)
                    .map(|(n, v)| {
                        (
                            String::from_utf8_lossy(n).into(),
                            String::from_utf8_lossy(v).into(),
                        )
                    })
                    .collect(),
                b.series_samples(s)
                    .iter()
                    .map(|x| (x.ts, x.value.to_bits()))
                    .collect(),
            )
        })
        .collect())
}

#[test]
fn rw1_round_trip_keeps_labels_samples_and_stale_bits() {
    let stale = f64::from_bits(crate::store::STALE_NAN_BITS);
    let req = pb::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("job", "a")], &[(1000, 1.0)]),
            series(&[("__name__", "up"), ("job", "a")], &[(2000, stale)]),
            series(
                &[("__name__", "x"), ("empty", ""), ("job", "b")],
                &[(5, -2.5), (6, 7.0)],
            ),
        ],
        metadata: vec![pb::MetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "h".into(),
            unit: String::new(),
        }],
    };
    let got = decode_v1(&req).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0].0,
        vec![("__name__".into(), "up".into()), ("job".into(), "a".into())]
    );
    assert_eq!(got[1].1, vec![(2000, crate::store::STALE_NAN_BITS)]);
    // An empty label value is the absent label, as in Prometheus.
    assert_eq!(got[2].0.len(), 2);
    assert_eq!(
        got[2].1,
        vec![(5, (-2.5f64).to_bits()), (6, 7.0f64.to_bits())]
    );
    let mut d = Decoder::default();
    let b = d
        .decode(
            Protocol::V1,
            &snappy(&req.encode_to_vec()),
            &DecodeLimits::default(),
        )
        .unwrap();
    assert_eq!(b.extras.metadata, 1);
    assert!(
        b.series.iter().all(|s| s.deferred),
        "Prometheus-shaped labels are deferred"
    );
    // Consecutive entries of one series have equal raw label bytes.
    assert_eq!(
        b.bytes(b.series[0].raw_labels),
        b.bytes(b.series[1].raw_labels)
    );
}

#[test]
fn rw2_round_trip_resolves_symbols() {
    let req = v2::Request {
        symbols: vec![
            "".into(),
            "__name__".into(),
            "up".into(),
            "job".into(),
            "a".into(),
        ],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![v2::Sample {
                value: 1.5,
                timestamp: 42,
                start_timestamp: 0,
            }],
            ..Default::default()
        }],
    };
    let got = decode_body(Protocol::V2, &snappy(&req.encode_to_vec())).unwrap();
    assert_eq!(
        got,
        vec![(
            vec![("__name__".into(), "up".into()), ("job".into(), "a".into())],
            vec![(42, 1.5f64.to_bits())]
        )]
    );
}

#[test]
fn rw2_rejects_bad_refs_and_symbol_table() {
    let mut req = v2::Request {
        symbols: vec!["".into(), "a".into()],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 7],
            ..Default::default()
        }],
    };
    let e = decode_body(Protocol::V2, &snappy(&req.encode_to_vec())).unwrap_err();
    assert!(
        matches!(e, DecodeError::Labels(ref m) if m.contains("outside the symbol table")),
        "{e}"
    );
    req.timeseries[0].labels_refs = vec![1];
    assert!(decode_body(Protocol::V2, &snappy(&req.encode_to_vec())).is_err());
    req.symbols[0] = "x".into();
    req.timeseries[0].labels_refs = vec![1, 1];
    let e = decode_body(Protocol::V2, &snappy(&req.encode_to_vec())).unwrap_err();
    assert!(e.to_string().contains("symbols[0]"), "{e}");
}

#[test]
fn invalid_labels_are_named() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("job", "a"), ("__name__", "up")], "not sorted"),
        (vec![("job", "a"), ("job", "b")], "duplicate"),
        (vec![("", "a")], "empty label name"),
        (vec![], "no labels"),
    ];
    for (labels, want) in cases {
        let req = pb::WriteRequest {
            timeseries: vec![series(&labels, &[(1, 1.0)])],
            metadata: vec![],
        };
        let e = decode_v1(&req).unwrap_err();
        assert!(e.to_string().contains(want), "{labels:?}: {e}");
    }
}

#[test]
fn limits_are_enforced() {
    let limits = DecodeLimits {
        max_series_per_request: 1,
        max_label_value_length: 3,
        ..DecodeLimits::default()
    };
    let two = pb::WriteRequest {
        timeseries: vec![series(&[("a", "1")], &[]), series(&[("a", "2")], &[])],
        metadata: vec![],
    };
    let mut d = Decoder::default();
    let e = d
        .decode(Protocol::V1, &snappy(&two.encode_to_vec()), &limits)
        .and_then(|b| b.ensure_all_labels())
        .unwrap_err();
    assert!(matches!(e, DecodeError::Limit(_)), "{e}");
    let long = pb::WriteRequest {
        timeseries: vec![series(&[("a", "1234")], &[])],
        metadata: vec![],
    };
    let e = d
        .decode(Protocol::V1, &snappy(&long.encode_to_vec()), &limits)
        .and_then(|b| b.ensure_all_labels())
        .unwrap_err();
    assert!(matches!(e, DecodeError::Limit(_)), "{e}");
    let limits = DecodeLimits {
        max_body_bytes: 10,
        ..DecodeLimits::default()
    };
    let big = snappy(&[0u8; 100]);
    assert!(matches!(
        d.decode(Protocol::V1, &big, &limits),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn bad_bodies_are_bad_requests() {
    assert_eq!(decode_body(Protocol::V1, b""), Err(DecodeError::Empty));
    assert!(matches!(
        decode_body(Protocol::V1, b"\xff\xff\xff\xff\xff\xff"),
        Err(DecodeError::Snappy(_))
    ));
    let good = snappy(
        &pb::WriteRequest {
            timeseries: vec![series(&[("a", "b")], &[(1, 1.0)])],
            metadata: vec![],
        }
        .encode_to_vec(),
    );
    assert!(matches!(
        decode_body(Protocol::V1, &good[..good.len() - 3]),
        Err(DecodeError::Snappy(_))
    ));
    // Field 1 of WriteRequest as a varint.
    assert!(matches!(
        decode_body(Protocol::V1, &snappy(&[0x08, 0x01])),
        Err(DecodeError::WireType { .. })
    ));
    // A length running past the end.
    assert!(matches!(
        decode_body(Protocol::V1, &snappy(&[0x0a, 0x10, 0x0a])),
        Err(DecodeError::Truncated)
    ));
}

#[test]
fn decode_decompressed_matches_decode_and_checks_the_size_limit() {
    let req = pb::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("job", "a")], &[(1000, 1.0)]),
            series(&[("__name__", "x"), ("job", "b")], &[(5, -2.5), (6, 7.0)]),
        ],
        metadata: vec![],
    };
    let msg = req.encode_to_vec();
    let limits = DecodeLimits::default();
    let mut d = Decoder::default();
    let via_snappy = decode_body(Protocol::V1, &snappy(&msg)).unwrap();
    let b = d.decode_decompressed(Protocol::V1, &msg, &limits).unwrap();
    b.ensure_all_labels().unwrap();
    assert_eq!(b.series.len(), 2);
    assert_eq!(b.sample_count(), 3);
    assert_eq!(b.buf, msg);
    assert_eq!(via_snappy.len(), 2);
    let small = DecodeLimits {
        max_body_bytes: msg.len() - 1,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        d.decode_decompressed(Protocol::V1, &msg, &small),
        Err(DecodeError::TooLarge { .. })
    ));
    assert_eq!(
        d.batch().series.len(),
        0,
        "a refused message leaves the batch empty"
    );
}

#[test]
fn content_negotiation() {
    use Protocol::*;
    assert_eq!(
        Protocol::negotiate(Some("application/x-protobuf"), Some("snappy")),
        Ok(V1)
    );
    assert_eq!(
        Protocol::negotiate(Some("application/x-protobuf"), None),
        Ok(V1)
    );
    assert_eq!(Protocol::negotiate(None, None), Ok(V1));
    assert_eq!(
        Protocol::negotiate(
            Some("application/x-protobuf;proto=prometheus.WriteRequest"),
            None
        ),
        Ok(V1)
    );
    assert_eq!(
        Protocol::negotiate(
            Some("application/x-protobuf; proto=io.prometheus.write.v2.Request"),
            Some("snappy")
        ),
        Ok(V2)
    );
    assert!(matches!(
        Protocol::negotiate(Some("application/x-protobuf;proto=foo.Bar"), None),
        Err(DecodeError::UnsupportedContentType(_))
    ));
    assert!(matches!(
        Protocol::negotiate(Some("text/plain"), None),
        Err(DecodeError::UnsupportedContentType(_))
    ));
    assert!(matches!(
        Protocol::negotiate(Some("application/x-protobuf"), Some("gzip")),
        Err(DecodeError::UnsupportedEncoding(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes, raw or snappy-wrapped, never panic either decoder.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), wrap in any::<bool>()) {
        let body = if wrap { snappy(&bytes) } else { bytes };
        let mut d = Decoder::default();
        if let Ok(b) = d.decode(Protocol::V1, &body, &DecodeLimits::default()) {
            let _ = b.ensure_all_labels();
        }
        let _ = d.decode(Protocol::V2, &body, &DecodeLimits::default());
    }

    /// Any request prost encodes decodes to what was encoded: Prometheus' layout takes the
    /// fast path, and what prost writes differently (a zero timestamp or value left out, a
    /// ten-byte negative timestamp, long labels) the general one.
    #[test]
    fn rw1_decodes_what_prost_encodes(
        reqs in proptest::collection::vec(
            (
                proptest::collection::btree_map("[a-z_]{1,12}", "[ -~]{0,140}", 1..6),
                proptest::collection::vec(
                    (prop_oneof![Just(0i64), any::<i64>(), 1_600_000_000_000i64..1_800_000_000_000],
                     prop_oneof![Just(0.0f64), Just(-0.0), Just(f64::NAN), any::<f64>()]),
                    0..4,
                ),
            ),
            1..6,
        )
    ) {
        let mut reqs = reqs;
        for (ls, _) in &mut reqs {
            ls.insert("__name__".into(), "m".into());
        }
        let req = pb::WriteRequest {
            timeseries: reqs.iter().map(|(ls, ss)| pb::TimeSeries {
                labels: ls.iter().map(|(n, v)| label(n, v)).collect(),
                samples: ss.iter().map(|&(timestamp, value)| pb::Sample { value, timestamp }).collect(),
                ..Default::default()
            }).collect(),
            metadata: vec![],
        };
        let got = decode_v1(&req).unwrap();
        // prost's own reading of the same bytes is the oracle (it leaves out -0.0, say).
        let back = pb::WriteRequest::decode(&req.encode_to_vec()[..]).unwrap();
        let want: Vec<_> = back.timeseries.iter().map(|ts| (
            ts.labels.iter().filter(|l| !l.value.is_empty()).map(|l| (l.name.clone(), l.value.clone())).collect::<Vec<_>>(),
            ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect::<Vec<_>>(),
        )).collect();
        prop_assert_eq!(got, want);
    }

    /// Valid requests mutated byte-wise never panic and either decode or fail cleanly.
    #[test]
    fn mutated_requests_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let req = pb::WriteRequest {
            timeseries: vec![
                series(&[("__name__", "up"), ("job", "a"), ("version", "v1")], &[(1000, 1.0)]),
                series(&[("__name__", "x"), ("job", "b")], &[(5, -2.5), (6, 7.0)]),
            ],
            metadata: vec![],
        };
        let mut raw = req.encode_to_vec();
        for (i, b) in &flips {
            let at = i.index(raw.len());
            raw[at] = *b;
        }
        let mut d = Decoder::default();
        if let Ok(b) = d.decode(Protocol::V1, &snappy(&raw), &DecodeLimits::default()) {
            let _ = b.ensure_all_labels();
        }
        let _ = d.decode(Protocol::V2, &snappy(&raw), &DecodeLimits::default());
    }
}

/// A batch built from encoded label fields is what the RW 1.0 decoder makes of the same
/// series: raw label bytes the store finds known series by, labels parsed and checked on
/// demand with the decoder's errors.
#[test]
fn batch_built_from_encoded_labels_equals_the_decoded_request() {
    let a = series(
        &[("__name__", "up"), ("job", "api")],
        &[(1000, 1.0), (2000, 0.0)],
    );
    let b = series(&[("__name__", "x"), ("job", "api")], &[(1500, f64::NAN)]);
    let req = pb::WriteRequest {
        timeseries: vec![a.clone(), b.clone()],
        ..Default::default()
    };
    let mut d = Decoder::default();
    let limits = DecodeLimits::default();
    let decoded = d
        .decode(Protocol::V1, &snappy(&req.encode_to_vec()), &limits)
        .unwrap();
    let mut built = Batch::default();
    built.reset(&limits);
    for ts in [&a, &b] {
        let fields = pb::TimeSeries {
            labels: ts.labels.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let samples: Vec<Sample> = ts
            .samples
            .iter()
            .map(|s| Sample {
                ts: s.timestamp,
                value: s.value,
            })
            .collect();
        built.push_encoded(&fields, &samples);
    }
    assert_eq!(built.series.len(), decoded.series.len());
    for (x, y) in built.series.iter().zip(&decoded.series) {
        assert!(x.deferred && y.deferred);
        assert_eq!(built.bytes(x.raw_labels), decoded.bytes(y.raw_labels));
        let bits = |b: &Batch, s: &SeriesEntry| -> Vec<(i64, u64)> {
            b.series_samples(s)
                .iter()
                .map(|s| (s.ts, s.value.to_bits()))
                .collect()
        };
        assert_eq!(bits(&built, x), bits(decoded, y));
    }
    built.ensure_all_labels().unwrap();
    let names: Vec<&[u8]> = built
        .series_labels(&built.series[1])
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, [&b"__name__"[..], b"job"]);

    // Unsorted labels fail as the decoder's would.
    let mut bad = Batch::default();
    bad.reset(&limits);
    let fields = pb::TimeSeries {
        labels: vec![label("job", "a"), label("__name__", "up")],
        ..Default::default()
    }
    .encode_to_vec();
    bad.push_encoded(&fields, &[Sample { ts: 1, value: 1.0 }]);
    assert!(matches!(
        bad.ensure_all_labels(),
        Err(DecodeError::Labels(_))
    ));
}
