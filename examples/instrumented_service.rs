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
//! The exposition carries no `version` label: the version is the target's (a pod label that
//! Kubernetes users relabel onto every series), given to Prometheus by service discovery.
//!
//! ```text
//! cargo run --example instrumented_service -- --listen 127.0.0.1:9100 --version v1 \
//!     --error-ratio 0.005 --latency-ms 40
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use deploywatch::rng::Rng;

/// The routes served under `/api/`.
const ROUTES: [&str; 3] = ["products", "cart", "search"];
/// The Go client's `prometheus.DefBuckets`.
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Spread of the latency's logarithm: the 99th percentile is about twice the median.
const LATENCY_SIGMA: f64 = 0.3;
/// What /proc counts in: clock ticks (USER_HZ) and pages, as on every Linux x86-64/arm64.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
const PAGE_SIZE: i64 = 4096;

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

struct App {
    args: Args,
    rng: Mutex<Rng>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
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
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds", // The encoder appends `_total` to counters.
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(rss_bytes);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            rss.metric_type(),
        )?)?;
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
    app.durations
        .get_or_create(&RouteLabels {
            method: "GET".into(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    let body = format!("{route} from {} : {}\n", app.args.version, code.as_u16());
    (code, body).into_response()
}

/// `GET /metrics`: OpenMetrics when the scraper accepts it, else the classic text format.
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut body = String::new();
    let (encoded, content_type) = if accept.contains("application/openmetrics-text") {
        (
            prometheus_client::encoding::text::encode(&mut body, &app.registry),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, &app.registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
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
    let durations: HistogramFamily =
        Family::new_with_constructor(|| Histogram::new(DEFAULT_BUCKETS));
    let mut registry = Registry::default();
    registry.register("http_requests", "HTTP requests served", requests.clone());
    registry.register(
        "http_request_duration_seconds",
        "HTTP request latency",
        durations.clone(),
    );
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
        "instrumented_service {} listening on {} (error ratio {}, median latency {} ms)",
        args.version, args.listen, args.error_ratio, args.latency_ms
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
