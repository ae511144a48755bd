//! Seed inputs, built from the proto types and the repository's own files so the corpus is
//! reproducible. `cargo test` in this crate checks `fuzz/seeds/` against them;
//! `UPDATE_SEEDS=1 cargo test` rewrites it.

use deploywatch::proto::{prometheus as pb, write_v2 as v2};
use prost::Message;

/// Flags byte of the raw decoder targets: bit 0 selects the shipped default limits.
const SMALL: u8 = 0;
const DEFAULT: u8 = 1;

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

const STALE: u64 = 0x7ff0_0000_0000_0002;

/// An integer native histogram as Prometheus sends one: schema 3, buckets on both sides
/// with gaps between spans, a zero bucket; 19 observations.
fn native_int(ts: i64) -> pb::Histogram {
    use pb::histogram::{Count, ResetHint, ZeroCount};
    let span = |offset, length| pb::BucketSpan { offset, length };
    pb::Histogram {
        count: Some(Count::CountInt(19)),
        sum: 12.5,
        schema: 3,
        zero_threshold: 1e-128,
        zero_count: Some(ZeroCount::ZeroCountInt(2)),
        negative_spans: vec![span(1, 2)],
        negative_deltas: vec![4, -4],
        positive_spans: vec![span(-2, 2), span(3, 1), span(0, 2)],
        positive_deltas: vec![1, 2, -1, 0, 3],
        reset_hint: ResetHint::No as i32,
        timestamp: ts,
        ..Default::default()
    }
}

/// A float native histogram: 10.5 observations.
fn native_float(ts: i64) -> pb::Histogram {
    use pb::histogram::{Count, ResetHint, ZeroCount};
    let span = |offset, length| pb::BucketSpan { offset, length };
    pb::Histogram {
        count: Some(Count::CountFloat(10.5)),
        sum: 4.25,
        schema: -1,
        zero_threshold: 0.001,
        zero_count: Some(ZeroCount::ZeroCountFloat(0.5)),
        negative_spans: vec![span(-1, 1)],
        negative_counts: vec![3.0],
        positive_spans: vec![span(0, 1), span(2, 2)],
        positive_counts: vec![1.0, 2.5, 3.5],
        reset_hint: ResetHint::Gauge as i32,
        timestamp: ts,
        ..Default::default()
    }
}

/// A native histogram stale marker, as Prometheus sends one.
fn native_stale(ts: i64) -> pb::Histogram {
    pb::Histogram {
        count: Some(pb::histogram::Count::CountInt(0)),
        sum: f64::from_bits(STALE),
        timestamp: ts,
        ..Default::default()
    }
}

/// RW 1.0 `WriteRequest`s: what Prometheus sends, and the odd shapes the decoder handles.
pub fn rw1_messages() -> Vec<(&'static str, Vec<u8>)> {
    let up = [
        ("__name__", "up"),
        ("instance", "a:9090"),
        ("job", "api"),
        ("version", "v1"),
    ];
    let canary = [
        ("__name__", "http_requests_total"),
        ("code", "500"),
        ("job", "api"),
        ("version", "v2"),
    ];
    let typical = pb::WriteRequest {
        timeseries: vec![
            series(&up, &[(1_764_000_000_000, 1.0)]),
            series(&up, &[(1_764_000_015_000, f64::from_bits(STALE))]),
            series(
                &canary,
                &[(1_764_000_000_000, 3.0), (1_764_000_015_000, 5.0)],
            ),
            series(
                &[("__name__", "x"), ("empty", ""), ("job", "b")],
                &[(5, -2.5)],
            ),
        ],
        metadata: vec![pb::MetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "h".into(),
            unit: String::new(),
        }],
    };
    let mut extras = series(&up, &[(7, 7.0)]);
    extras.exemplars.push(pb::Exemplar {
        labels: vec![label("trace_id", "abc")],
        value: 1.0,
        timestamp: 7,
    });
    extras.histograms.push(pb::Histogram::default());
    let with_extras = pb::WriteRequest {
        timeseries: vec![extras],
        metadata: vec![],
    };
    // Labels interleaved with samples: parsed at once, not deferred.
    let mut interleaved = Vec::new();
    let ts = series(&up[..2], &[(1, 1.0)]);
    let l0 = ts.labels[0].encode_to_vec();
    let s0 = ts.samples[0].encode_to_vec();
    let l1 = ts.labels[1].encode_to_vec();
    for (tag, b) in [(0x0a, &l0), (0x12, &s0), (0x0a, &l1)] {
        interleaved.push(tag);
        interleaved.push(b.len() as u8);
        interleaved.extend_from_slice(b);
    }
    let mut interleaved_req = vec![0x0a, interleaved.len() as u8];
    interleaved_req.extend_from_slice(&interleaved);
    let latency = [
        ("__name__", "http_request_duration_seconds"),
        ("job", "api"),
        ("version", "v1"),
    ];
    let mut ints = series(&latency, &[]);
    ints.histograms = vec![
        native_int(1_764_000_000_000),
        native_int(1_764_000_015_000),
        native_stale(1_764_000_030_000),
    ];
    let mut floats = series(&latency[..2], &[]);
    floats.histograms = vec![native_float(1_764_000_000_000)];
    let histograms = pb::WriteRequest {
        timeseries: vec![series(&up, &[(1_764_000_000_000, 1.0)]), ints, floats],
        metadata: vec![],
    };
    vec![
        ("typical", typical.encode_to_vec()),
        ("extras", with_extras.encode_to_vec()),
        ("histograms", histograms.encode_to_vec()),
        ("interleaved", interleaved_req),
        (
            "unsorted",
            pb::WriteRequest {
                timeseries: vec![series(&[("job", "a"), ("__name__", "up")], &[(1, 1.0)])],
                metadata: vec![],
            }
            .encode_to_vec(),
        ),
    ]
}

/// RW 2.0 `Request`s.
pub fn rw2_messages() -> Vec<(&'static str, Vec<u8>)> {
    let symbols: Vec<String> = ["", "__name__", "up", "job", "api", "version", "v2", "help"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let sample = |ts, value| v2::Sample {
        value,
        timestamp: ts,
        start_timestamp: 0,
    };
    let typical = v2::Request {
        symbols: symbols.clone(),
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4, 5, 6],
                samples: vec![
                    sample(1_764_000_000_000, 1.0),
                    sample(1_764_000_015_000, 2.0),
                ],
                metadata: Some(v2::Metadata {
                    help_ref: 7,
                    ..Default::default()
                }),
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![sample(1_764_000_000_000, f64::from_bits(STALE))],
                histograms: vec![v2::Histogram::default()],
                exemplars: vec![v2::Exemplar::default()],
                ..Default::default()
            },
        ],
    };
    // Unpacked label references (field 1 as varints), as some senders write them.
    let mut unpacked_series = Vec::new();
    for r in [1u8, 2, 3, 4] {
        unpacked_series.extend_from_slice(&[0x08, r]);
    }
    let s = sample(9, 9.0).encode_to_vec();
    unpacked_series.push(0x12);
    unpacked_series.push(s.len() as u8);
    unpacked_series.extend_from_slice(&s);
    let mut unpacked = v2::Request {
        symbols: symbols.clone(),
        timeseries: vec![],
    }
    .encode_to_vec();
    unpacked.push(0x2a);
    unpacked.push(unpacked_series.len() as u8);
    unpacked.extend_from_slice(&unpacked_series);
    // Native histograms: fields 1 to 15 are RW 1.0's.
    let v2_histogram =
        |h: pb::Histogram| v2::Histogram::decode(&h.encode_to_vec()[..]).expect("the same fields");
    let histograms = v2::Request {
        symbols,
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                histograms: vec![
                    v2_histogram(native_int(1_764_000_000_000)),
                    v2_histogram(native_stale(1_764_000_015_000)),
                ],
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4, 5, 6],
                histograms: vec![v2_histogram(native_float(1_764_000_000_000))],
                ..Default::default()
            },
        ],
    };
    vec![
        ("typical", typical.encode_to_vec()),
        ("unpacked", unpacked),
        ("histograms", histograms.encode_to_vec()),
    ]
}

fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(b)
        .expect("snappy compresses")
}

fn with_flags(flags: u8, b: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(b);
    v
}

fn deploy_bodies() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("minimal", r#"{"service":"api","version":"v2"}"#),
        (
            "full",
            r#"{"service":"api","version":"v2","baseline_version":"v1","strategy":"canary","at":1764000000000,"commit":"abc123","author":"ci","url":"https://ci/1","changes":[{"component":"db","summary":"index","files":["a.rs","b.rs"]}]}"#,
        ),
        ("blue_green", r#"{"service":"web","version":"2026.11.1","strategy":"blue-green","changes":[]}"#),
        ("unicode", "{\"service\":\"caf\\u00e9\",\"version\":\"v\u{e9}\",\"author\":\"\\ud83d\\ude00\"}"),
    ]
    .into_iter()
    .map(|(n, s)| (n, s.as_bytes().to_vec()))
    .collect()
}

/// Every seed: (target, file name, bytes).
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, m) in rw1_messages() {
        out.push(("rw1_decode", format!("{name}-small"), with_flags(SMALL, &m)));
        out.push((
            "rw1_decode",
            format!("{name}-default"),
            with_flags(DEFAULT, &m),
        ));
        // snappy_body flags: bits 1..2 pick the content type, bit 3 the encoding header.
        out.push((
            "snappy_body",
            format!("rw1-{name}"),
            with_flags(0b0001, &snappy(&m)),
        ));
    }
    for (name, m) in rw2_messages() {
        out.push(("rw2_decode", format!("{name}-small"), with_flags(SMALL, &m)));
        out.push((
            "rw2_decode",
            format!("{name}-default"),
            with_flags(DEFAULT, &m),
        ));
        out.push((
            "snappy_body",
            format!("rw2-{name}"),
            with_flags(0b0011, &snappy(&m)),
        ));
    }
    // A snappy stream whose header announces more than the limit.
    out.push((
        "snappy_body",
        "too-large".into(),
        with_flags(0, &[0xff, 0xff, 0xff, 0x7f, 0x00]),
    ));
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let read = |p: &str| std::fs::read(format!("{root}/{p}")).expect("repository file");
    out.push(("rule_file", "default.yml".into(), read("rules/default.yml")));
    out.push((
        "config_file",
        "deploywatch.yml".into(),
        read("examples/deploywatch.yml"),
    ));
    out.push((
        "config_file",
        "small.yml".into(),
        b"global:\n  retention: 1h30m\nlimits:\n  max_body_bytes: 4MiB\nstorage:\n  snapshot_interval: 500ms\n  history_retention: 2w\n".to_vec(),
    ));
    for (name, b) in deploy_bodies() {
        out.push(("deploy_json", name.into(), b));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// `fuzz/seeds/<target>/<name>` holds exactly `all()`; `UPDATE_SEEDS=1` rewrites it.
    #[test]
    fn seeds_are_current() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
        let update = std::env::var_os("UPDATE_SEEDS").is_some();
        if update {
            let _ = std::fs::remove_dir_all(&dir);
        }
        for (target, name, bytes) in super::all() {
            let p = dir.join(target).join(&name);
            if update {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, &bytes).unwrap();
            } else {
                let on_disk = std::fs::read(&p).unwrap_or_else(|e| {
                    panic!("{}: {e} (run UPDATE_SEEDS=1 cargo test)", p.display())
                });
                assert_eq!(
                    on_disk,
                    bytes,
                    "{} is stale (UPDATE_SEEDS=1 cargo test)",
                    p.display()
                );
            }
        }
    }
}
