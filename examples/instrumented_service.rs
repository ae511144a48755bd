//! A small HTTP service instrumented with the official Prometheus client library
//! (`prometheus-client`), standing in for one pod of a real service: the real-stack test
//! (tests/it/real_stack.rs) runs several of them and has a real Prometheus scrape them.
//!
//! - `GET /api/<route>` (products, cart, search) answers 500 with probability
//!   `--error-ratio`, else 200, after a lognormal latency whose median is `--latency-ms`.
//! - `GET /metrics` serves, in OpenMetrics text when the scraper asks for it (Prometheus
//!   does) and in the classic text format otherwise:
//!   `http_requests_total{code,method,route}` (the `code="500"` child appears at the first
//!   error, as with every client library), `http_request_duration_seconds{method,route}`
//!   with the Go client's default buckets, and `process_cpu_seconds_total` and
//!   `process_resident_memory_bytes` read from /proc/self at scrape time.
//!
//! With `--native-histograms`, `http_request_duration_seconds` is a native histogram
//! instead, as the Go client keeps one with `NativeHistogramBucketFactor: 1.1` and no
//! classic buckets: exponential buckets of schema 3 (bucket `i` holds the durations in
//! (2^((i-1)/8), 2^(i/8)] seconds), a zero bucket of threshold 2^-128, a count and a sum.
//! A scraper that asks for the Prometheus protobuf exposition
//! (`application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited`,
//! as Prometheus does with `--enable-feature=native-histograms`) gets every family that way,
//! length-delimited `MetricFamily` messages (see [`client_model`]); the text formats, which
//! cannot carry native buckets, show the histogram's count and sum under `le="+Inf"` only,
//! as the Go client does.
//!
//! The exposition carries no `version` label: the version is the target's (a pod label that
//! Kubernetes users relabel onto every series), given to Prometheus by service discovery.
//!
//! ```text
//! cargo run --example instrumented_service -- --listen 127.0.0.1:9100 --version v1 \
//!     --error-ratio 0.005 --latency-ms 40 [--native-histograms]
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use prost::Message;

use deploywatch::rng::Rng;

/// The routes served under `/api/`.
const ROUTES: [&str; 3] = ["products", "cart", "search"];
/// The statuses `/api/` answers with.
const CODES: [StatusCode; 2] = [StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR];
/// The Go client's `prometheus.DefBuckets`.
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Spread of the latency's logarithm: the 99th percentile is about twice the median.
const LATENCY_SIGMA: f64 = 0.3;
/// What /proc counts in: clock ticks (USER_HZ) and pages, as on every Linux x86-64/arm64.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
const PAGE_SIZE: i64 = 4096;

/// The families' names (as registered: the text encoders append `_total` to counters) and
/// help, shared by the registry and the protobuf exposition.
const REQUESTS: (&str, &str) = ("http_requests", "HTTP requests served");
const DURATIONS: (&str, &str) = ("http_request_duration_seconds", "HTTP request latency");
const CPU: (&str, &str) = (
    "process_cpu_seconds",
    "Total user and system CPU time spent in seconds",
);
const RSS: (&str, &str) = (
    "process_resident_memory_bytes",
    "Resident memory size in bytes",
);

/// What Prometheus asks for, and gets, when it scrapes the protobuf exposition.
const PROTOBUF_MEDIA_TYPE: &str = "application/vnd.google.protobuf";
const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

#[derive(Parser)]
#[command(about = "An HTTP service instrumented with prometheus-client, for tests")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9100.
    #[arg(long)]
    listen: SocketAddr,
    /// The version this process runs (logged and answered; the label is the scraper's).
    #[arg(long)]
    version: String,
    /// Probability that a request is answered 500.
    #[arg(long, default_value_t = 0.005)]
    error_ratio: f64,
    /// Median latency of a request, in milliseconds.
    #[arg(long, default_value_t = 40.0)]
    latency_ms: f64,
    /// Keep the request durations as a native histogram (schema 3, no classic buckets) and
    /// serve the protobuf exposition to a scraper that asks for it.
    #[arg(long)]
    native_histograms: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    code: String,
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// `http_request_duration_seconds`, classic or native.
enum Durations {
    Classic(HistogramFamily),
    Native(Family<RouteLabels, NativeHistogram>),
}

impl Durations {
    fn observe(&self, labels: &RouteLabels, seconds: f64) {
        match self {
            Durations::Classic(f) => f.get_or_create(labels).observe(seconds),
            Durations::Native(f) => f.get_or_create(labels).observe(seconds),
        }
    }
}

struct App {
    args: Args,
    rng: Mutex<Rng>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
}

/// `process_cpu_seconds_total` and `process_resident_memory_bytes`, read on each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((cpu_seconds, rss_bytes)) = read_proc_self() else {
            return Ok(()); // Not on Linux: no process metrics, as in the Go client.
        };
        let cpu = ConstCounter::new(cpu_seconds);
        cpu.encode(encoder.encode_descriptor(CPU.0, CPU.1, None, cpu.metric_type())?)?;
        let rss = ConstGauge::new(rss_bytes);
        rss.encode(encoder.encode_descriptor(RSS.0, RSS.1, None, rss.metric_type())?)?;
        Ok(())
    }
}

/// CPU seconds (user + system) from /proc/self/stat and resident bytes from /proc/self/statm.
fn read_proc_self() -> Option<(f64, i64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: the
    // first is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / CLOCK_TICKS_PER_SECOND, resident_pages * PAGE_SIZE))
}

// ---------------------------------------------------------------------------------------
// The native histogram
// ---------------------------------------------------------------------------------------

/// The bucket schema: each power of two split into 2^3 buckets, the largest growth factor
/// (2^(1/8) ≈ 1.09) within the Go client's `NativeHistogramBucketFactor: 1.1`.
const NATIVE_SCHEMA: i32 = 3;
/// The zero bucket holds observations within ±2^-128, the Go client's default.
const NATIVE_ZERO_THRESHOLD: f64 = f64::from_bits((1023 - 128) << 52);

/// Where schema 3 splits [0.5, 1): 2^(j/8 - 1) for j = 0..8. A fraction in
/// (bound j-1, bound j] lies in sub-bucket j (0.5 itself in sub-bucket 0, the top of the
/// power of two below); one above the last bound in sub-bucket 8, which ends at 1.
static SUB_BUCKET_BOUNDS: LazyLock<[f64; 8]> =
    LazyLock::new(|| std::array::from_fn(|j| (j as f64 / 8.0 - 1.0).exp2()));

/// The index of the schema-3 bucket holding `v` (finite, above the zero threshold): the `i`
/// with 2^((i-1)/8) < v <= 2^(i/8). Exact at powers of two, where a logarithm may not be.
fn bucket_index(v: f64) -> i32 {
    // v = frac × 2^exp with frac in [0.5, 1), read off the bits (C's frexp): v is a normal
    // number, being above the zero threshold.
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac = f64::from_bits((bits & ((1 << 52) - 1)) | (1022 << 52));
    // The first bound at or above frac; past the last one, the bucket ending at 2^exp.
    let sub = SUB_BUCKET_BOUNDS
        .iter()
        .position(|&b| frac <= b)
        .unwrap_or(SUB_BUCKET_BOUNDS.len());
    (exp - 1) * (1 << NATIVE_SCHEMA) + sub as i32
}

/// A native histogram: observations counted per exponential bucket index, with a zero
/// bucket, a count and a sum, as the Go client keeps one.
#[derive(Debug, Default)]
struct NativeHistogram(Mutex<NativeCounts>);

#[derive(Debug, Default)]
struct NativeCounts {
    count: u64,
    sum: f64,
    zero_count: u64,
    /// Populated buckets by index: observations above the zero threshold, and below its
    /// negative (none, for durations).
    positive: BTreeMap<i32, u64>,
    negative: BTreeMap<i32, u64>,
}

impl NativeHistogram {
    /// Counts `v`; a NaN or infinite one in the count and sum only.
    fn observe(&self, v: f64) {
        let mut h = self.0.lock();
        h.count += 1;
        h.sum += v;
        if v.abs() <= NATIVE_ZERO_THRESHOLD {
            h.zero_count += 1;
        } else if v.is_finite() {
            let side = if v > 0.0 {
                &mut h.positive
            } else {
                &mut h.negative
            };
            *side.entry(bucket_index(v.abs())).or_default() += 1;
        }
    }

    /// The histogram as the protobuf exposition carries it: no classic buckets, the
    /// populated buckets as spans of consecutive indices and count deltas.
    fn to_proto(&self) -> client_model::Histogram {
        let h = self.0.lock();
        let (mut positive_span, positive_delta) = spans_and_deltas(&h.positive);
        let (negative_span, negative_delta) = spans_and_deltas(&h.negative);
        if positive_span.is_empty() && negative_span.is_empty() && h.zero_count == 0 {
            // No observation yet: nothing but the zero threshold tells a native histogram
            // from a classic one without buckets. That is what Prometheus 2.42 goes by (a
            // threshold, zero count or bucket deltas above 0; checked: with a threshold of
            // 0 and no observation it stores `_bucket{le="+Inf"}`, `_count` and `_sum`).
            // Later versions also take a span for a sign, and the Go client sends one of no
            // buckets here: so do we.
            positive_span.push(client_model::BucketSpan {
                offset: 0,
                length: 0,
            });
        }
        client_model::Histogram {
            sample_count: h.count,
            sample_sum: h.sum,
            schema: NATIVE_SCHEMA,
            zero_threshold: NATIVE_ZERO_THRESHOLD,
            zero_count: h.zero_count,
            negative_span,
            negative_delta,
            positive_span,
            positive_delta,
            ..Default::default()
        }
    }
}

/// Spans of consecutive bucket indices (the first one's offset is its index, a later one's
/// the gap since the previous span) and each bucket's count less the one before it.
fn spans_and_deltas(buckets: &BTreeMap<i32, u64>) -> (Vec<client_model::BucketSpan>, Vec<i64>) {
    let mut spans: Vec<client_model::BucketSpan> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let (mut next_index, mut previous_count) = (None, 0i64);
    for (&index, &count) in buckets {
        match (spans.last_mut(), next_index) {
            (Some(span), Some(next)) if index == next => span.length += 1,
            _ => spans.push(client_model::BucketSpan {
                offset: next_index.map_or(index, |next| index - next),
                length: 1,
            }),
        }
        next_index = Some(index + 1);
        deltas.push(count as i64 - previous_count);
        previous_count = count as i64;
    }
    (spans, deltas)
}

impl TypedMetric for NativeHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

/// In the text formats, which have no native buckets, the count and sum with the `+Inf`
/// bucket alone, as the Go client writes a histogram without classic buckets.
impl EncodeMetric for NativeHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (count, sum) = {
            let h = self.0.lock();
            (h.count, h.sum)
        };
        encoder.encode_histogram::<NoLabelSet>(sum, count, &[(f64::INFINITY, count)], None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

// ---------------------------------------------------------------------------------------
// The protobuf exposition
// ---------------------------------------------------------------------------------------

/// The messages of Prometheus' protobuf exposition (package `io.prometheus.client` of
/// prometheus/client_model's metrics.proto), with the fields this service sends.
mod client_model {
    /// A metric name, its help and type, and its children.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub help: String,
        #[prost(enumeration = "MetricType", tag = "3")]
        pub r#type: i32,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        Counter = 0,
        Gauge = 1,
        Summary = 2,
        Untyped = 3,
        Histogram = 4,
        GaugeHistogram = 5,
    }

    /// One child: its labels and the value of its family's type. No timestamp: the
    /// scraper's.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Gauge>,
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Counter>,
        #[prost(int64, tag = "6")]
        pub timestamp_ms: i64,
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Gauge {
        #[prost(double, tag = "1")]
        pub value: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Counter {
        #[prost(double, tag = "1")]
        pub value: f64,
    }

    /// A classic histogram (`bucket`), a native one (schema, zero bucket, spans and
    /// deltas), or both.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, tag = "1")]
        pub sample_count: u64,
        #[prost(double, tag = "2")]
        pub sample_sum: f64,
        #[prost(message, repeated, tag = "3")]
        pub bucket: Vec<Bucket>,
        /// Overrides `sample_count` when above 0 (a float histogram).
        #[prost(double, tag = "4")]
        pub sample_count_float: f64,
        #[prost(sint32, tag = "5")]
        pub schema: i32,
        #[prost(double, tag = "6")]
        pub zero_threshold: f64,
        #[prost(uint64, tag = "7")]
        pub zero_count: u64,
        #[prost(double, tag = "8")]
        pub zero_count_float: f64,
        #[prost(message, repeated, tag = "9")]
        pub negative_span: Vec<BucketSpan>,
        /// Each bucket's count less the previous bucket's (the first one's less 0).
        #[prost(sint64, repeated, tag = "10")]
        pub negative_delta: Vec<i64>,
        #[prost(double, repeated, tag = "11")]
        pub negative_count: Vec<f64>,
        #[prost(message, repeated, tag = "12")]
        pub positive_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "13")]
        pub positive_delta: Vec<i64>,
        #[prost(double, repeated, tag = "14")]
        pub positive_count: Vec<f64>,
    }

    /// A classic bucket: the observations up to `upper_bound`, cumulative.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bucket {
        #[prost(uint64, tag = "1")]
        pub cumulative_count: u64,
        #[prost(double, tag = "2")]
        pub upper_bound: f64,
    }

    /// `length` consecutive buckets, starting `offset` indices after the previous span's
    /// end (the first span: at index `offset`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, tag = "1")]
        pub offset: i32,
        #[prost(uint32, tag = "2")]
        pub length: u32,
    }
}

/// A family for the protobuf exposition; `None` if it has no child yet (as the Go client
/// leaves out a vector with no children).
fn family(
    name: String,
    help: &str,
    r#type: client_model::MetricType,
    metric: Vec<client_model::Metric>,
) -> Option<client_model::MetricFamily> {
    (!metric.is_empty()).then(|| client_model::MetricFamily {
        name,
        help: help.to_string(),
        r#type: r#type as i32,
        metric,
    })
}

fn label_pairs(pairs: &[(&str, &str)]) -> Vec<client_model::LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| client_model::LabelPair {
            name: name.to_string(),
            value: value.to_string(),
        })
        .collect()
}

/// Every family the text formats carry, as length-delimited `MetricFamily` messages: the
/// requests and durations read from the registry's families (every child the handler can
/// have created), the process metrics from /proc. Offered with native histograms only
/// ([`negotiate`]): classic ones are not encoded here.
fn protobuf_exposition(app: &App) -> Vec<u8> {
    use client_model::{Counter, Gauge, Metric, MetricType};
    let mut requests = Vec::new();
    let mut durations = Vec::new();
    for route in ROUTES.map(|r| format!("/api/{r}")) {
        for code in CODES.map(|c| c.as_u16().to_string()) {
            let labels = RequestLabels {
                code: code.clone(),
                method: "GET".into(),
                route: route.clone(),
            };
            if let Some(c) = app.requests.get(&labels) {
                requests.push(Metric {
                    label: label_pairs(&[("code", &code), ("method", "GET"), ("route", &route)]),
                    counter: Some(Counter {
                        value: c.get() as f64,
                    }),
                    ..Default::default()
                });
            }
        }
        if let Durations::Native(f) = &app.durations {
            let labels = RouteLabels {
                method: "GET".into(),
                route: route.clone(),
            };
            if let Some(h) = f.get(&labels) {
                durations.push(Metric {
                    label: label_pairs(&[("method", "GET"), ("route", &route)]),
                    histogram: Some(h.to_proto()),
                    ..Default::default()
                });
            }
        }
    }
    let mut families = vec![
        family(
            format!("{}_total", REQUESTS.0),
            REQUESTS.1,
            MetricType::Counter,
            requests,
        ),
        family(
            DURATIONS.0.to_string(),
            DURATIONS.1,
            MetricType::Histogram,
            durations,
        ),
    ];
    if let Some((cpu_seconds, rss_bytes)) = read_proc_self() {
        families.push(family(
            format!("{}_total", CPU.0),
            CPU.1,
            MetricType::Counter,
            vec![Metric {
                counter: Some(Counter { value: cpu_seconds }),
                ..Default::default()
            }],
        ));
        families.push(family(
            RSS.0.to_string(),
            RSS.1,
            MetricType::Gauge,
            vec![Metric {
                gauge: Some(Gauge {
                    value: rss_bytes as f64,
                }),
                ..Default::default()
            }],
        ));
    }
    let mut body = Vec::new();
    for f in families.into_iter().flatten() {
        f.encode_length_delimited(&mut body)
            .expect("a Vec grows as needed");
    }
    body
}

// ---------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------

/// `GET /api/{route}`: a lognormal wait, then 200 or (with the error ratio) 500.
async fn api(State(app): State<Arc<App>>, Path(route): Path<String>) -> Response {
    if !ROUTES.contains(&route.as_str()) {
        return (StatusCode::NOT_FOUND, "no such route\n").into_response();
    }
    let started = Instant::now();
    let (latency, fail) = {
        let mut rng = app.rng.lock();
        // Box-Muller: one standard normal draw.
        let z = (-2.0 * rng.open01().ln()).sqrt() * (std::f64::consts::TAU * rng.f64()).cos();
        let ms = app.args.latency_ms * (LATENCY_SIGMA * z).exp();
        (
            Duration::from_secs_f64(ms / 1000.0),
            rng.f64() < app.args.error_ratio,
        )
    };
    tokio::time::sleep(latency).await;
    let code = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let route = format!("/api/{route}");
    app.requests
        .get_or_create(&RequestLabels {
            code: code.as_u16().to_string(),
            method: "GET".into(),
            route: route.clone(),
        })
        .inc();
    app.durations.observe(
        &RouteLabels {
            method: "GET".into(),
            route: route.clone(),
        },
        started.elapsed().as_secs_f64(),
    );
    let body = format!("{route} from {} : {}\n", app.args.version, code.as_u16());
    (code, body).into_response()
}

/// The expositions a scraper can get.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Protobuf,
    OpenMetrics,
    Text,
}

/// The format the `Accept` header prefers, by its q-values; on a tie, the first of
/// protobuf (only offered with native histograms), OpenMetrics and text. Prometheus 2.42
/// asks for protobuf first when its native histograms are enabled, else OpenMetrics.
fn negotiate(accept: &str, protobuf_offered: bool) -> Format {
    let mut best = (Format::Text, 0.0);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut proto, mut encoding) = (1.0, "", "");
        for param in parts {
            match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("q", v)) => q = v.parse().unwrap_or(0.0),
                Some(("proto", v)) => proto = v,
                Some(("encoding", v)) => encoding = v,
                _ => {}
            }
        }
        let format = match media_type.as_str() {
            PROTOBUF_MEDIA_TYPE
                if protobuf_offered
                    && proto == "io.prometheus.client.MetricFamily"
                    && encoding == "delimited" =>
            {
                Format::Protobuf
            }
            "application/openmetrics-text" => Format::OpenMetrics,
            "text/plain" | "text/*" | "*/*" => Format::Text,
            _ => continue,
        };
        let rank = |f: Format| {
            [Format::Text, Format::OpenMetrics, Format::Protobuf]
                .iter()
                .position(|&g| g == f)
        };
        if q > best.1 || (q == best.1 && q > 0.0 && rank(format) > rank(best.0)) {
            best = (format, q);
        }
    }
    best.0
}

/// `GET /metrics`: protobuf or OpenMetrics when the scraper prefers it, else the classic
/// text format.
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let native = matches!(app.durations, Durations::Native(_));
    let mut body = String::new();
    let (encoded, content_type) = match negotiate(accept, native) {
        Format::Protobuf => {
            return (
                [(header::CONTENT_TYPE, PROTOBUF_CONTENT_TYPE)],
                protobuf_exposition(&app),
            )
                .into_response()
        }
        Format::OpenMetrics => (
            prometheus_client::encoding::text::encode(&mut body, &app.registry),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        Format::Text => (
            prometheus_client::encoding::prometheus_text::encode(&mut body, &app.registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        ),
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding: {e}\n"),
        )
            .into_response(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let requests = Family::<RequestLabels, Counter>::default();
    let mut registry = Registry::default();
    registry.register(REQUESTS.0, REQUESTS.1, requests.clone());
    let durations = if args.native_histograms {
        let family = Family::<RouteLabels, NativeHistogram>::default();
        registry.register(DURATIONS.0, DURATIONS.1, family.clone());
        Durations::Native(family)
    } else {
        let family: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(DEFAULT_BUCKETS));
        registry.register(DURATIONS.0, DURATIONS.1, family.clone());
        Durations::Classic(family)
    };
    registry.register_collector(Box::new(ProcessCollector));

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()) << 32;
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "instrumented_service: cannot listen on {}: {e}",
                args.listen
            );
            std::process::exit(1);
        }
    };
    eprintln!(
        "instrumented_service {} listening on {} (error ratio {}, median latency {} ms, {} histograms)",
        args.version,
        args.listen,
        args.error_ratio,
        args.latency_ms,
        if args.native_histograms { "native" } else { "classic" },
    );
    let app = Arc::new(App {
        args,
        rng: Mutex::new(Rng::new(seed)),
        registry,
        requests,
        durations,
    });
    let router = axum::Router::new()
        .route("/api/{route}", get(api))
        .route("/metrics", get(metrics))
        .with_state(app);
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("instrumented_service: serving: {e}");
        std::process::exit(1);
    }
}
