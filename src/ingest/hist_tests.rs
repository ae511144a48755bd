//! Native histograms through both decoders: what is decoded (buckets by index, counts
//! summed from deltas) and what is refused, with the reason named.

use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::proto::{prometheus as pb, write_v2 as v2};
use crate::store::STALE_NAN_BITS;

use pb::histogram::{Count, ResetHint as PbHint, ZeroCount};

fn label(n: &str, v: &str) -> pb::Label {
    pb::Label {
        name: n.into(),
        value: v.into(),
    }
}

fn spans(s: &[(i32, u32)]) -> Vec<pb::BucketSpan> {
    s.iter()
        .map(|&(offset, length)| pb::BucketSpan { offset, length })
        .collect()
}

/// An integer histogram: (offset, length) spans and deltas per side.
#[allow(clippy::too_many_arguments)]
fn int_hist(
    ts: i64,
    schema: i32,
    count: u64,
    sum: f64,
    zero_count: u64,
    neg: (&[(i32, u32)], &[i64]),
    pos: (&[(i32, u32)], &[i64]),
    hint: PbHint,
) -> pb::Histogram {
    pb::Histogram {
        count: Some(Count::CountInt(count)),
        sum,
        schema,
        zero_threshold: 1e-128,
        zero_count: Some(ZeroCount::ZeroCountInt(zero_count)),
        negative_spans: spans(neg.0),
        negative_deltas: neg.1.to_vec(),
        positive_spans: spans(pos.0),
        positive_deltas: pos.1.to_vec(),
        reset_hint: hint as i32,
        timestamp: ts,
        ..Default::default()
    }
}

/// A float histogram: (offset, length) spans and absolute counts per side.
fn float_hist(
    ts: i64,
    count: f64,
    zero_count: f64,
    neg: (&[(i32, u32)], &[f64]),
    pos: (&[(i32, u32)], &[f64]),
) -> pb::Histogram {
    pb::Histogram {
        count: Some(Count::CountFloat(count)),
        sum: 4.25,
        schema: -1,
        zero_threshold: 0.001,
        zero_count: Some(ZeroCount::ZeroCountFloat(zero_count)),
        negative_spans: spans(neg.0),
        negative_counts: neg.1.to_vec(),
        positive_spans: spans(pos.0),
        positive_counts: pos.1.to_vec(),
        reset_hint: PbHint::No as i32,
        timestamp: ts,
        ..Default::default()
    }
}

/// The valid integer histogram most tests start from: both sides, gaps between spans, a
/// zero count inside a span, a zero bucket. Negative: index 1 = 4, 2 = 0; positive: -2 = 1,
/// -1 = 3, 3 = 2, 4 = 2, 5 = 5; zero bucket 2: 19 observations.
fn sample_int(ts: i64) -> pb::Histogram {
    int_hist(
        ts,
        3,
        19,
        12.5,
        2,
        (&[(1, 2)], &[4, -4]),
        (&[(-2, 2), (3, 1), (0, 2)], &[1, 2, -1, 0, 3]),
        PbHint::Yes,
    )
}

/// One series to send: labels, float samples, histograms.
struct Ser {
    labels: Vec<(&'static str, &'static str)>,
    samples: Vec<(i64, f64)>,
    histograms: Vec<pb::Histogram>,
}

fn ser(name: &'static str, samples: &[(i64, f64)], histograms: Vec<pb::Histogram>) -> Ser {
    Ser {
        labels: vec![("__name__", name), ("job", "api")],
        samples: samples.to_vec(),
        histograms,
    }
}

fn v1_request(series: &[Ser]) -> Vec<u8> {
    pb::WriteRequest {
        timeseries: series
            .iter()
            .map(|s| pb::TimeSeries {
                labels: s.labels.iter().map(|(n, v)| label(n, v)).collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|&(timestamp, value)| pb::Sample { value, timestamp })
                    .collect(),
                histograms: s.histograms.clone(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
    .encode_to_vec()
}

/// The RW 2.0 `Histogram` with the same fields 1 to 15: the wire format is the same.
fn to_v2(h: &pb::Histogram) -> v2::Histogram {
    v2::Histogram::decode(&h.encode_to_vec()[..]).unwrap()
}

fn v2_request(series: &[Ser], edit: impl Fn(&mut v2::Histogram)) -> Vec<u8> {
    let mut symbols: Vec<String> = vec![String::new()];
    let mut intern = |s: &str| match symbols.iter().position(|x| x == s) {
        Some(i) => i as u32,
        None => {
            symbols.push(s.into());
            symbols.len() as u32 - 1
        }
    };
    let timeseries = series
        .iter()
        .map(|s| v2::TimeSeries {
            labels_refs: s
                .labels
                .iter()
                .flat_map(|(n, v)| [intern(n), intern(v)])
                .collect(),
            samples: s
                .samples
                .iter()
                .map(|&(timestamp, value)| v2::Sample {
                    value,
                    timestamp,
                    start_timestamp: 0,
                })
                .collect(),
            histograms: s
                .histograms
                .iter()
                .map(|h| {
                    let mut h = to_v2(h);
                    edit(&mut h);
                    h
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
    .encode_to_vec()
}

fn request(p: Protocol, series: &[Ser]) -> Vec<u8> {
    match p {
        Protocol::V1 => v1_request(series),
        Protocol::V2 => v2_request(series, |_| {}),
    }
}

/// A decoded histogram with its buckets: (index, count) per side.
#[derive(Debug, PartialEq)]
struct H {
    ts: i64,
    schema: i8,
    reset_hint: ResetHint,
    float: bool,
    count: f64,
    sum_bits: u64,
    zero_threshold: f64,
    zero_count: f64,
    negative: Vec<(i32, f64)>,
    positive: Vec<(i32, f64)>,
}

/// Per series: its (timestamp, value) samples and its histograms.
type Got = Vec<(Vec<(i64, f64)>, Vec<H>)>;

fn owned(b: &Batch) -> Got {
    let side = |r: (u32, u32)| -> Vec<(i32, f64)> {
        b.histogram_buckets(r)
            .iter()
            .map(|k| (k.index, k.count))
            .collect()
    };
    b.series
        .iter()
        .map(|s| {
            (
                b.series_samples(s)
                    .iter()
                    .map(|x| (x.ts, x.value))
                    .collect(),
                b.series_histograms(s)
                    .iter()
                    .map(|h| H {
                        ts: h.ts,
                        schema: h.schema,
                        reset_hint: h.reset_hint,
                        float: h.float,
                        count: h.count,
                        sum_bits: h.sum.to_bits(),
                        zero_threshold: h.zero_threshold,
                        zero_count: h.zero_count,
                        negative: side(h.negative),
                        positive: side(h.positive),
                    })
                    .collect(),
            )
        })
        .collect()
}

fn decode_msg(p: Protocol, msg: &[u8], limits: &DecodeLimits) -> Result<Got, DecodeError> {
    let mut d = Decoder::default();
    let body = snap::raw::Encoder::new().compress_vec(msg).unwrap();
    let res = d.decode(p, &body, limits).map(|b| owned(b));
    if res.is_err() {
        let b = d.batch();
        assert!(
            b.series.is_empty() && b.histograms.is_empty() && b.buckets.is_empty(),
            "a refused request leaves nothing"
        );
    }
    res
}

fn decode(p: Protocol, series: &[Ser]) -> Result<Got, DecodeError> {
    decode_msg(p, &request(p, series), &DecodeLimits::default())
}

const BOTH: [Protocol; 2] = [Protocol::V1, Protocol::V2];

fn want_int(ts: i64) -> H {
    H {
        ts,
        schema: 3,
        reset_hint: ResetHint::Yes,
        float: false,
        count: 19.0,
        sum_bits: 12.5f64.to_bits(),
        zero_threshold: 1e-128,
        zero_count: 2.0,
        negative: vec![(1, 4.0), (2, 0.0)],
        positive: vec![(-2, 1.0), (-1, 3.0), (3, 2.0), (4, 2.0), (5, 5.0)],
    }
}

#[test]
fn integer_histograms_round_trip() {
    let gauge = int_hist(3000, -4, 0, 0.0, 0, (&[], &[]), (&[], &[]), PbHint::Gauge);
    for p in BOTH {
        let got = decode(
            p,
            &[ser(
                "latency",
                &[],
                vec![sample_int(1000), sample_int(2000), gauge.clone()],
            )],
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].0.is_empty());
        let h = &got[0].1;
        assert_eq!(h.len(), 3, "{p:?}");
        assert_eq!(h[0], want_int(1000), "{p:?}");
        assert_eq!(h[1], want_int(2000), "{p:?}");
        assert_eq!(
            h[2],
            H {
                ts: 3000,
                schema: -4,
                reset_hint: ResetHint::Gauge,
                float: false,
                count: 0.0,
                sum_bits: 0,
                zero_threshold: 1e-128,
                zero_count: 0.0,
                negative: vec![],
                positive: vec![],
            },
            "{p:?}"
        );
    }
}

#[test]
fn float_histograms_round_trip() {
    // Negative: index -1 = 3; positive: 0 = 1, 3 = 2.5, 4 = 3.5; zero bucket 0.5.
    let h = float_hist(
        7000,
        10.5,
        0.5,
        (&[(-1, 1)], &[3.0]),
        (&[(0, 1), (2, 2)], &[1.0, 2.5, 3.5]),
    );
    for p in BOTH {
        let got = decode(p, &[ser("latency", &[], vec![h.clone()])]).unwrap();
        assert_eq!(
            got[0].1,
            vec![H {
                ts: 7000,
                schema: -1,
                reset_hint: ResetHint::No,
                float: true,
                count: 10.5,
                sum_bits: 4.25f64.to_bits(),
                zero_threshold: 0.001,
                zero_count: 0.5,
                negative: vec![(-1, 3.0)],
                positive: vec![(0, 1.0), (3, 2.5), (4, 3.5)],
            }],
            "{p:?}"
        );
    }
}

#[test]
fn the_default_histogram_is_an_empty_integer_one() {
    for p in BOTH {
        let got = decode(p, &[ser("latency", &[], vec![pb::Histogram::default()])]).unwrap();
        let h = &got[0].1[0];
        assert!(!h.float && h.count == 0.0 && h.negative.is_empty() && h.positive.is_empty());
        assert_eq!(h.reset_hint, ResetHint::Unknown);
    }
}

#[test]
fn stale_markers_are_accepted_whatever_their_counts() {
    let stale = f64::from_bits(STALE_NAN_BITS);
    // As Prometheus sends it: counts 0, no buckets.
    let sent = int_hist(
        5000,
        0,
        0,
        stale,
        0,
        (&[], &[]),
        (&[], &[]),
        PbHint::Unknown,
    );
    // Counts that would not add up, and a negative bucket count.
    let odd = int_hist(
        6000,
        0,
        3,
        stale,
        0,
        (&[], &[]),
        (&[(0, 2)], &[1, -2]),
        PbHint::No,
    );
    let mut float = float_hist(7000, 0.0, 0.0, (&[], &[]), (&[(0, 1)], &[f64::NAN]));
    float.sum = stale;
    for p in BOTH {
        let got = decode(
            p,
            &[ser(
                "latency",
                &[],
                vec![sent.clone(), odd.clone(), float.clone()],
            )],
        )
        .unwrap();
        let h = &got[0].1;
        assert_eq!(h.len(), 3);
        assert!(h.iter().all(|h| h.sum_bits == STALE_NAN_BITS), "{p:?}");
        assert!(crate::store::is_stale_marker(f64::from_bits(h[0].sum_bits)));
        assert_eq!(h[1].positive, vec![(0, 1.0), (1, -1.0)]);
        assert!(h[2].float);
    }
    // Any other NaN sum is no stale marker: counts are checked.
    let mut nan = odd.clone();
    nan.sum = f64::NAN;
    for p in BOTH {
        let e = decode(p, &[ser("latency", &[], vec![nan.clone()])]).unwrap_err();
        assert!(e.to_string().contains("negative count"), "{e}");
    }
}

#[test]
fn floats_and_histograms_in_one_request_are_both_kept() {
    let series = [
        ser("up", &[(1000, 1.0), (2000, 0.0)], vec![]),
        ser("latency", &[], vec![sample_int(1000)]),
        // Prometheus never sends both in one series; both are recorded.
        ser(
            "both",
            &[(3000, 2.5)],
            vec![sample_int(3000), sample_int(4000)],
        ),
        ser("down", &[(4000, 7.0)], vec![]),
    ];
    for p in BOTH {
        let mut d = Decoder::default();
        let b = d
            .decode(
                p,
                &snap::raw::Encoder::new()
                    .compress_vec(&request(p, &series))
                    .unwrap(),
                &DecodeLimits::default(),
            )
            .unwrap();
        let ranges: Vec<_> = b
            .series
            .iter()
            .map(|s| (s.samples.clone(), s.histograms.clone()))
            .collect();
        assert_eq!(
            ranges,
            vec![(0..2, 0..0), (2..2, 0..1), (2..3, 1..3), (3..4, 3..3)],
            "{p:?}"
        );
        assert_eq!(b.buckets.len(), 3 * 7);
        let got = owned(b);
        assert_eq!(got[0].0, vec![(1000, 1.0), (2000, 0.0)]);
        assert_eq!(got[1].1, vec![want_int(1000)]);
        assert_eq!(got[2].0, vec![(3000, 2.5)]);
        assert_eq!(got[2].1, vec![want_int(3000), want_int(4000)]);
        assert_eq!(got[3], (vec![(4000, 7.0)], vec![]));
        if p == Protocol::V1 {
            // Labels are still deferred where contiguous: histograms take the general path.
            assert!(b.series.iter().all(|s| s.deferred));
            b.ensure_all_labels().unwrap();
            let names: Vec<_> = b.series_labels(&b.series[2]).map(|(n, _)| n).collect();
            assert_eq!(names, [&b"__name__"[..], b"job"]);
        }
    }
}

/// Appends a protobuf field: a tag, then `payload` as is (a varint, 8 bytes or, for
/// `wt` = 2, a length prefix and the bytes).
fn field(out: &mut Vec<u8>, n: u32, wt: u8, payload: &[u8]) {
    varint(out, ((n << 3) | wt as u32) as u64);
    if wt == 2 {
        varint(out, payload.len() as u64);
    }
    out.extend_from_slice(payload);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[test]
fn unpacked_and_split_values_and_fields_in_any_order_decode_as_prost_reads_them() {
    // sample_int's fields by hand: deltas and spans interleaved, positive deltas split
    // over a packed field and unpacked ones, count last.
    let mut h = Vec::new();
    let span = |o: i32, l: u32| {
        let mut s = Vec::new();
        let mut v = Vec::new();
        varint(&mut v, zigzag(o as i64) & 0xffff_ffff);
        field(&mut s, 1, 0, &v);
        v.clear();
        varint(&mut v, l as u64);
        field(&mut s, 2, 0, &v);
        s
    };
    let vi = |x: u64| {
        let mut v = Vec::new();
        varint(&mut v, x);
        v
    };
    field(&mut h, 15, 0, &vi(1000));
    field(&mut h, 12, 0, &vi(zigzag(1)));
    field(&mut h, 11, 2, &span(-2, 2));
    let mut packed = Vec::new();
    for d in [2i64, -1] {
        varint(&mut packed, zigzag(d));
    }
    field(&mut h, 12, 2, &packed);
    field(&mut h, 9, 0, &vi(zigzag(4)));
    field(&mut h, 11, 2, &span(3, 1));
    field(&mut h, 8, 2, &span(1, 2));
    field(&mut h, 12, 0, &vi(zigzag(0)));
    field(&mut h, 9, 0, &vi(zigzag(-4)));
    field(&mut h, 11, 2, &span(0, 2));
    field(&mut h, 12, 2, &vi(zigzag(3)));
    field(&mut h, 3, 1, &12.5f64.to_le_bytes());
    field(&mut h, 4, 0, &vi(zigzag(3)));
    field(&mut h, 5, 1, &1e-128f64.to_le_bytes());
    field(&mut h, 6, 0, &vi(2));
    field(&mut h, 14, 0, &vi(1));
    field(&mut h, 1, 0, &vi(19));
    // prost reads the same histogram.
    assert_eq!(pb::Histogram::decode(&h[..]).unwrap(), sample_int(1000));

    let mut ts = Vec::new();
    field(&mut ts, 1, 2, &label("__name__", "latency").encode_to_vec());
    field(&mut ts, 4, 2, &h);
    let mut req = Vec::new();
    field(&mut req, 1, 2, &ts);
    let got = decode_msg(Protocol::V1, &req, &DecodeLimits::default()).unwrap();
    assert_eq!(got[0].1, vec![want_int(1000)]);

    // Float counts unpacked (wire type 1), in RW 2.0 with field 17 (ignored).
    let mut f = Vec::new();
    field(&mut f, 2, 1, &3.0f64.to_le_bytes());
    field(&mut f, 11, 2, &span(0, 2));
    field(&mut f, 13, 1, &1.0f64.to_le_bytes());
    field(&mut f, 13, 1, &2.0f64.to_le_bytes());
    field(&mut f, 17, 0, &vi(99));
    let mut ts = Vec::new();
    field(&mut ts, 1, 2, &[1, 2]);
    field(&mut ts, 3, 2, &f);
    let mut req = Vec::new();
    for s in ["", "__name__", "latency"] {
        field(&mut req, 4, 2, s.as_bytes());
    }
    field(&mut req, 5, 2, &ts);
    let got = decode_msg(Protocol::V2, &req, &DecodeLimits::default()).unwrap();
    let h = &got[0].1[0];
    assert!(h.float);
    assert_eq!(h.positive, vec![(0, 1.0), (1, 2.0)]);
    assert_eq!(h.count, 3.0);
}

/// Sends `bad` as the first histogram of series 1 (series 0 is valid) over both
/// protocols; returns the errors.
fn refused(bad: &pb::Histogram) -> Vec<DecodeError> {
    BOTH.iter()
        .map(|&p| {
            let series = [
                ser("up", &[(1000, 1.0)], vec![sample_int(1000)]),
                ser("latency", &[], vec![bad.clone(), sample_int(2000)]),
            ];
            decode(p, &series).expect_err("refused")
        })
        .collect()
}

#[track_caller]
fn assert_refused(bad: &pb::Histogram, reason: &str) {
    for e in refused(bad) {
        let m = e.to_string();
        assert!(matches!(e, DecodeError::Histogram(_)), "{m}");
        assert!(
            m.starts_with("invalid native histogram: series 1 histogram 0: "),
            "{m}"
        );
        assert!(m.contains(reason), "want {reason:?} in {m:?}");
    }
}

#[test]
fn schemas_outside_the_exponential_ones_are_refused() {
    for schema in [-4, 0, 8] {
        let mut h = sample_int(1);
        h.schema = schema;
        for p in BOTH {
            assert!(decode(p, &[ser("x", &[], vec![h.clone()])]).is_ok());
        }
    }
    for schema in [9, -5, -53, i32::MAX, i32::MIN] {
        let mut h = sample_int(1);
        h.schema = schema;
        assert_refused(&h, &format!("unknown schema {schema}"));
    }
    // Custom bucket boundaries (RW 2.0), whatever the schema says.
    let series = [ser("x", &[], vec![sample_int(1)])];
    for schema in [-53, 0] {
        let msg = v2_request(&series, |h| {
            h.schema = schema;
            h.custom_values = vec![0.1, 0.5];
        });
        let e = decode_msg(Protocol::V2, &msg, &DecodeLimits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("invalid native histogram: series 0 histogram 0: unknown schema {schema}: custom bucket boundaries are not supported")
        );
    }
}

#[test]
fn bad_spans_are_refused() {
    let mut h = sample_int(1);
    h.positive_spans = spans(&[(-2, 2), (-1, 1), (0, 2)]);
    assert_refused(
        &h,
        "positive span 1 has offset -1: only the first may be negative",
    );
    let mut h = sample_int(1);
    h.negative_spans = spans(&[(1, 3)]);
    assert_refused(&h, "negative spans need 3 buckets, have 2");
    let mut h = sample_int(1);
    h.positive_deltas.push(0);
    assert_refused(&h, "positive spans need 5 buckets, have 6");
    let mut h = sample_int(1);
    h.positive_spans.clear();
    assert_refused(&h, "positive spans need 0 buckets, have 5");
    // An index past i32.
    let h = int_hist(
        1,
        0,
        2,
        1.0,
        0,
        (&[], &[]),
        (&[(i32::MAX, 2)], &[1, 0]),
        PbHint::No,
    );
    assert_refused(&h, "positive bucket index 2147483648 out of range");
}

#[test]
fn bad_counts_are_refused() {
    // A delta taking the running count below zero.
    let h = int_hist(
        1,
        0,
        1,
        1.0,
        0,
        (&[], &[]),
        (&[(0, 2)], &[2, -3]),
        PbHint::No,
    );
    assert_refused(&h, "positive bucket 1 has a negative count -1");
    let h = int_hist(1, 0, 1, 1.0, 0, (&[(5, 1)], &[-1]), (&[], &[]), PbHint::No);
    assert_refused(&h, "negative bucket 5 has a negative count -1");
    // Deltas whose running sum overflows.
    let h = int_hist(
        1,
        0,
        1,
        1.0,
        0,
        (&[], &[]),
        (&[(0, 2)], &[i64::MAX, 1]),
        PbHint::No,
    );
    assert_refused(&h, "positive bucket 1: count overflows");
    // Float counts: negative, NaN, infinite.
    for c in [-1.0, f64::NAN, f64::INFINITY] {
        let h = float_hist(1, 10.0, 0.0, (&[], &[]), (&[(0, 2)], &[1.0, c]));
        assert_refused(
            &h,
            &format!("positive bucket 1 has count {c}, expected a finite count >= 0"),
        );
        let h = float_hist(1, 10.0, c, (&[], &[]), (&[], &[]));
        assert_refused(&h, &format!("zero count {c}, expected a finite count >= 0"));
        let h = float_hist(1, c, 0.0, (&[], &[]), (&[], &[]));
        assert_refused(&h, &format!("count {c}, expected a finite count >= 0"));
    }
    for t in [-1.0, f64::NAN, f64::INFINITY] {
        let mut h = sample_int(1);
        h.zero_threshold = t;
        assert_refused(
            &h,
            &format!("zero threshold {t}, expected a finite number >= 0"),
        );
    }
}

#[test]
fn the_count_must_cover_the_buckets() {
    // Integer: exactly the total, or (with a NaN sum) at least it.
    let mut h = sample_int(1);
    h.count = Some(Count::CountInt(20));
    assert_refused(
        &h,
        "count 20 differs from 19, the observations in its zero bucket and buckets (sum is not NaN)",
    );
    h.sum = f64::NAN;
    for p in BOTH {
        let got = decode(p, &[ser("x", &[], vec![h.clone()])]).unwrap();
        assert_eq!(got[0].1[0].count, 20.0);
    }
    h.count = Some(Count::CountInt(18));
    assert_refused(
        &h,
        "count 18 is less than 19, the observations in its zero bucket and buckets",
    );
    // Float: at least the total, less a relative 1e-9 of rounding.
    let short = |count: f64| float_hist(1, count, 0.5, (&[], &[]), (&[(0, 2)], &[1.0, 2.0]));
    for count in [3.5, 100.0, 3.5 * (1.0 - 1e-12)] {
        for p in BOTH {
            assert!(
                decode(p, &[ser("x", &[], vec![short(count)])]).is_ok(),
                "{count}"
            );
        }
    }
    assert_refused(
        &short(3.4),
        "count 3.4 is less than 3.5, the observations in its zero bucket and buckets",
    );
}

#[test]
fn other_malformed_histograms_are_refused() {
    let mut h = sample_int(1);
    h.positive_counts = vec![1.0];
    assert_refused(&h, "mixes integer and float counts");
    let mut h = float_hist(1, 1.0, 1.0, (&[], &[]), (&[], &[]));
    h.count = Some(Count::CountInt(1));
    assert_refused(&h, "mixes integer and float counts");
    let mut h = sample_int(1);
    h.reset_hint = 4;
    assert_refused(&h, "unknown reset hint 4");
    h.reset_hint = -1;
    assert_refused(&h, "unknown reset hint -1");
}

#[test]
fn the_bucket_limit_holds_per_side() {
    let small = DecodeLimits {
        max_histogram_buckets: 4,
        ..DecodeLimits::default()
    };
    let h = |n: u32| {
        int_hist(
            1,
            0,
            0,
            1.0,
            0,
            (&[], &[]),
            (&[(0, n)], &vec![0; n as usize]),
            PbHint::No,
        )
    };
    for p in BOTH {
        let ok = [ser("x", &[], vec![h(4)])];
        assert!(decode_msg(p, &request(p, &ok), &small).is_ok());
        let over = [ser("x", &[], vec![h(4), h(5)])];
        let e = decode_msg(p, &request(p, &over), &small).unwrap_err();
        assert_eq!(
            e,
            DecodeError::Limit("series 0 histogram 1 has 5 positive buckets, more than 4".into())
        );
    }
    // The shipped limit.
    assert_eq!(DecodeLimits::default().max_histogram_buckets, 1 << 16);
    let n = (1u32 << 16) + 1;
    let mut big = int_hist(
        1,
        0,
        0,
        1.0,
        0,
        (&[(0, n)], &vec![0; n as usize]),
        (&[], &[]),
        PbHint::No,
    );
    for p in BOTH {
        let e = decode(p, &[ser("x", &[], vec![big.clone()])]).unwrap_err();
        assert!(
            matches!(e, DecodeError::Limit(ref m) if m.contains("65537 negative buckets")),
            "{e}"
        );
    }
    big.negative_spans = spans(&[(0, n - 1)]);
    big.negative_deltas.pop();
    for p in BOTH {
        let got = decode(p, &[ser("x", &[], vec![big.clone()])]).unwrap();
        assert_eq!(got[0].1[0].negative.len(), 1 << 16);
    }
}

#[test]
fn the_buckets_of_a_whole_request_are_bounded() {
    let n = 1u32 << 16;
    let h = int_hist(
        1,
        0,
        0,
        1.0,
        0,
        (&[], &[]),
        (&[(0, n)], &vec![0; n as usize]),
        PbHint::No,
    );
    // 64 histograms of 65,536 buckets: exactly the request's limit.
    let at_limit = vec![h.clone(); super::MAX_REQUEST_BUCKETS / n as usize];
    assert!(decode(Protocol::V1, &[ser("x", &[], at_limit.clone())]).is_ok());
    let mut over = at_limit;
    over.push(h);
    let e = decode(Protocol::V1, &[ser("x", &[], over)]).unwrap_err();
    assert!(
        matches!(e, DecodeError::Limit(ref m) if m.contains("histogram 64: the request has more than 4194304")),
        "{e}"
    );
}

/// Buckets as Prometheus expands them, from the message: an independent reading.
fn expand(spans: &[pb::BucketSpan], counts: &[f64]) -> Vec<(i32, f64)> {
    let mut out = Vec::new();
    let mut index = 0i32;
    let mut k = 0;
    for s in spans {
        index += s.offset;
        for _ in 0..s.length {
            out.push((index, counts[k]));
            k += 1;
            index += 1;
        }
    }
    out
}

fn running(deltas: &[i64]) -> Vec<f64> {
    deltas
        .iter()
        .scan(0i64, |c, d| {
            *c += d;
            Some(*c as f64)
        })
        .collect()
}

/// Spans (a first offset, then gaps and lengths) and their bucket counts.
fn side() -> impl Strategy<Value = (Vec<(i32, u32)>, Vec<u64>)> {
    (
        -50i32..50,
        proptest::collection::vec((0i32..5, 0u32..4), 0..5),
    )
        .prop_flat_map(|(first, rest)| {
            let mut spans: Vec<(i32, u32)> = rest;
            if let Some(s) = spans.first_mut() {
                s.0 = first;
            }
            let n: u32 = spans.iter().map(|s| s.1).sum();
            (
                Just(spans),
                proptest::collection::vec(0u64..1000, n as usize),
            )
        })
}

fn deltas(counts: &[u64]) -> Vec<i64> {
    let mut prev = 0i64;
    counts
        .iter()
        .map(|&c| {
            let d = c as i64 - prev;
            prev = c as i64;
            d
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Valid integer and float histograms decode to the buckets an independent expansion
    /// of their spans gives, over both protocols.
    #[test]
    fn valid_histograms_decode_to_their_buckets(
        neg in side(),
        pos in side(),
        zero in 0u64..100,
        schema in -4i32..=8,
        float in any::<bool>(),
        ts in any::<i64>(),
    ) {
        let total = zero + neg.1.iter().sum::<u64>() + pos.1.iter().sum::<u64>();
        let h = if float {
            let f = |c: &[u64]| c.iter().map(|&c| c as f64 / 4.0).collect::<Vec<_>>();
            let mut h = float_hist(ts, total as f64 / 4.0, zero as f64 / 4.0,
                (&neg.0, &f(&neg.1)), (&pos.0, &f(&pos.1)));
            h.schema = schema;
            h
        } else {
            int_hist(ts, schema, total, 1.5, zero, (&neg.0, &deltas(&neg.1)),
                (&pos.0, &deltas(&pos.1)), PbHint::Unknown)
        };
        let want_side = |sp: &[pb::BucketSpan], d: &[i64], c: &[f64]| {
            if float { expand(sp, c) } else { expand(sp, &running(d)) }
        };
        let want_neg = want_side(&h.negative_spans, &h.negative_deltas, &h.negative_counts);
        let want_pos = want_side(&h.positive_spans, &h.positive_deltas, &h.positive_counts);
        for p in BOTH {
            let got = decode(p, &[ser("x", &[(1, 1.0)], vec![h.clone()])]).unwrap();
            let g = &got[0].1[0];
            prop_assert_eq!(g.float, float);
            prop_assert_eq!(g.ts, ts);
            prop_assert_eq!(g.schema as i32, schema);
            prop_assert_eq!(&g.negative, &want_neg);
            prop_assert_eq!(&g.positive, &want_pos);
            let scale = if float { 4.0 } else { 1.0 };
            prop_assert_eq!(g.count, total as f64 / scale);
            prop_assert_eq!(g.zero_count, zero as f64 / scale);
        }
    }

    /// Histogram messages mutated byte-wise never panic either decoder.
    #[test]
    fn mutated_histograms_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let series = [ser("x", &[(1, 1.0)], vec![sample_int(1), float_hist(2, 3.0, 0.0, (&[], &[]), (&[(1, 2)], &[1.0, 2.0]))])];
        for p in BOTH {
            let mut raw = request(p, &series);
            for (i, b) in &flips {
                let at = i.index(raw.len());
                raw[at] = *b;
            }
            let mut d = Decoder::default();
            if let Ok(b) = d.decode_decompressed(p, &raw, &DecodeLimits::default()) {
                let _ = b.ensure_all_labels();
                for h in &b.histograms {
                    for r in [h.negative, h.positive] {
                        prop_assert!(r.0 <= r.1 && r.1 as usize <= b.buckets.len());
                        let idx: Vec<i32> = b.histogram_buckets(r).iter().map(|k| k.index).collect();
                        prop_assert!(idx.windows(2).all(|w| w[0] < w[1]), "ascending indexes");
                    }
                }
            }
        }
    }
}
