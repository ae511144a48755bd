//! # deploywatch-loadgen — Prometheus remote-write 1.0 load generator
//!
//! Sends Prometheus-shaped remote-write 1.0 traffic (snappy-compressed protobuf
//! `WriteRequest`s, `POST`ed with the same headers Prometheus 2.x uses) to any URL,
//! so one run can compare deploywatch with Prometheus' own receiver
//! (`prometheus --web.enable-remote-write-receiver`, `/api/v1/write`) or
//! VictoriaMetrics (`/api/v1/write`) on the same machine and the same traffic.
//!
//! ## What it sends
//!
//! * `--series` active series that look like a Kubernetes scrape: for every pod
//!   77 series (`http_requests_total` per route × code, `http_request_duration_seconds_bucket`
//!   per route × `le`, `process_cpu_seconds_total`, `process_resident_memory_bytes`), with
//!   the labels `__name__`, `code`, `instance` (ip:port), `job` (service-N), `le`,
//!   `namespace`, `pod` (service-N-<version hash>-<5 chars>), `route` and `version` (vN),
//!   sorted by name as Prometheus sends them. Pods are spread round-robin over
//!   `--services` services and `--versions` versions.
//! * Every `TimeSeries` entry carries exactly one sample (as Prometheus 2.42 sends);
//!   a series never appears twice in one request. Counters grow by a Poisson-distributed
//!   integer per step, the CPU counter by a fraction of the step, RSS is a wandering gauge.
//! * The series are partitioned over `--connections` keep-alive HTTP/1.1 connections (like
//!   Prometheus' remote-write shards); each connection sends its own series in batches of
//!   `--series-per-request`, one request at a time. One pass over all of a connection's
//!   series is a *round*; round `r` carries the timestamp `start + r × interval`, so each
//!   series' timestamps strictly increase. Connections are kept within 2 rounds of each other
//!   (a scrape produces all series at the same time; this also keeps every connection inside
//!   Prometheus' "head max time − 1h" out-of-bounds window).
//!
//! ## Timestamps
//!
//! Event time starts at `--start-ms` (default: wall clock now − 50 min) and advances by
//! `--interval-ms` (15 s) per round, i.e. much faster than wall time. 50 min rather than
//! 1 h leaves a 10 min margin for receivers that reject samples older than 1 h relative to
//! the newest sample they hold (Prometheus' head: samples older than head max time − 1h are
//! "out of bounds"; if the receiver already scraped something at "now", now − 1h would sit on
//! the edge). With the default 15 s step the event time reaches the wall clock after 200 rounds
//! (e.g. 200 × 100 k = 20 M samples); after that timestamps lie in the future, which Prometheus
//! 2.42 accepts and VictoriaMetrics accepts up to 2 days ahead; deploywatch refuses samples
//! more than `limits.max_time_ahead` (10 min) ahead of its clock, so start it with e.g.
//! `--limits.max-time-ahead=30d` for longer runs. The summary prints the event
//! time range; to count what arrived in Prometheus query at that time, e.g.
//! `curl '127.0.0.1:19090/api/v1/query?query=count({__name__=~".%2B"})&time=<last ms/1000>'`.
//!
//! ## Generation cost
//!
//! Each series' labels are encoded to protobuf once at start-up; a request only appends the
//! per-sample bytes behind them and snappy-compresses the result (block format), about a
//! millisecond per 2000-series request, so the generator is not the bottleneck. Its own CPU time
//! is reported so contention on small machines is visible.
//!
//! ## Output
//!
//! A progress line on stderr every 5 s, and a summary at the end (requests by status code,
//! samples sent and accepted, samples/s, request latency p50/p90/p99/max from a log-bucket
//! histogram with ~3 % resolution, bytes sent). `--json` prints the summary as one JSON object
//! on stdout instead. The first body line of each non-2xx status is printed once. Exit code:
//! 0 all requests answered 2xx, 1 any non-2xx / connection error / timeout, 2 bad usage.
//!
//! `--pid PID` (repeatable) reads the process' CPU time (utime + stime from `/proc/PID/stat`,
//! converted with `getconf CLK_TCK`, 100 assumed if that fails — there is no libc here to
//! call `sysconf`) and `VmRSS`/`VmHWM` from `/proc/PID/status` before and after the run
//! (after a `--pid-settle` pause, default 1 s, so asynchronous flushes are counted), samples
//! `VmRSS` every 250 ms during the run, and reports accepted samples per CPU-second of PID
//! and its peak RSS. Ctrl-C stops the run and still prints the summary.
//!
//! ## Example: deploywatch vs Prometheus' receiver on one machine
//!
//! ```text
//! # deploywatch listening on 127.0.0.1:10997
//! deploywatch-loadgen --url http://127.0.0.1:10997/api/v1/write --duration 20s \
//!     --pid "$(pgrep -x deploywatch)"
//! # Prometheus 2.x receiver (empty scrape config)
//! prometheus --config.file=empty.yml --storage.tsdb.path=/tmp/prom \
//!     --web.listen-address=127.0.0.1:19090 --web.enable-remote-write-receiver &
//! deploywatch-loadgen --url http://127.0.0.1:19090/api/v1/write --duration 20s --pid $!
//! ```
//!
//! Compare the "samples per CPU-second" and "peak RSS" lines of the two runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{header, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// Prometheus remote-write 1.0 load generator: sends Kubernetes-shaped series to a
/// remote-write endpoint and reports throughput, latency and (with --pid) the receiver's
/// CPU and memory cost per sample.
#[derive(Parser, Debug, Clone)]
#[command(name = "deploywatch-loadgen", version)]
struct Args {
    /// Remote-write endpoint (plain http), e.g. http://127.0.0.1:10997/api/v1/write
    #[arg(long)]
    url: String,

    /// Number of active series (one sample per series per round)
    #[arg(long, default_value_t = 100_000)]
    series: usize,

    /// Series (= samples) per request; Prometheus <= 2.43 sends 500, later 2000
    #[arg(long, default_value_t = 2000)]
    series_per_request: usize,

    /// Keep-alive HTTP/1.1 connections, each sending its own share of the series sequentially
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Run time, e.g. 30s, 2m, 1500ms [default: 30s unless only --requests is given]
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Stop after this many requests in total (all connections)
    #[arg(long)]
    requests: Option<u64>,

    /// Event-time step between consecutive samples of one series, in ms
    #[arg(long, default_value_t = 15_000)]
    interval_ms: u64,

    /// Timestamp of the first round, ms since the epoch [default: now - 50 min]
    #[arg(long, allow_hyphen_values = true)]
    start_ms: Option<i64>,

    /// Number of services (job="service-N")
    #[arg(long, default_value_t = 10)]
    services: usize,

    /// Number of versions per service (version="vN")
    #[arg(long, default_value_t = 2)]
    versions: usize,

    /// Receiver process to measure (CPU time, RSS); repeatable
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,

    /// Wait this long after the run before reading --pid counters the second time
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pid_settle: Duration,

    /// Print the final summary as one JSON object on stdout
    #[arg(long)]
    json: bool,

    /// Per-request timeout (counted as a failed request)
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,

    /// Tokio worker threads of the generator
    #[arg(long, default_value_t = 2)]
    threads: usize,

    /// Seed for label hashes and values (same seed = same series)
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// A cardinality explosion: every request also carries this many NEW series of the
    /// service `exploding` (a `request_id` label with a fresh value each time), as an
    /// instrumentation bug that puts a request id in a label would
    #[arg(long, default_value_t = 0)]
    explode: usize,
}

/// Parses "30s", "1500ms", "2m", "1h" or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (use e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "bad duration unit {other:?} in {s:?} (use ms, s, m, h)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

// ---------------------------------------------------------------------------------------------
// Small deterministic RNG (splitmix64): fast, no dependency, reproducible with --seed.
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Poisson-distributed integer with mean `lambda` (Knuth below 30, normal approx. above).
    fn poisson(&mut self, lambda: f64) -> f64 {
        if lambda <= 0.0 {
            0.0
        } else if lambda < 30.0 {
            let limit = (-lambda).exp();
            let mut k = 0u32;
            let mut p = self.f64();
            while p > limit {
                k += 1;
                p *= self.f64();
            }
            f64::from(k)
        } else {
            // Irwin-Hall: the sum of 12 uniforms minus 6 is close to N(0, 1).
            let z: f64 = (0..12).map(|_| self.f64()).sum::<f64>() - 6.0;
            (lambda + lambda.sqrt() * z).round().max(0.0)
        }
    }
}

/// One-shot hash of a few integers (for label strings that must be stable across runs).
fn hash64(parts: &[u64]) -> u64 {
    let mut r = Rng(0x5EED);
    for &p in parts {
        r.0 ^= p;
        r.next_u64();
    }
    r.next_u64()
}

/// Kubernetes' "safe" alphabet for generated name suffixes (no vowels, no 0/1/3).
const K8S_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn k8s_suffix(mut h: u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            let c = K8S_ALPHABET[(h % K8S_ALPHABET.len() as u64) as usize] as char;
            h /= K8S_ALPHABET.len() as u64;
            c
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Protobuf encoding (remote-write 1.0), by hand:
//   WriteRequest { repeated TimeSeries timeseries = 1; }
//   TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//   Label        { string name = 1; string value = 2; }
//   Sample       { double value = 1; int64 timestamp = 2; }
// Tags: field 1 length-delimited = 0x0A, field 2 length-delimited = 0x12,
//       field 1 fixed64 = 0x09, field 2 varint = 0x10.
// ---------------------------------------------------------------------------------------------

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends one `TimeSeries.labels` entry (field 1 of TimeSeries) holding a Label message.
fn put_label(buf: &mut Vec<u8>, name: &str, value: &str) {
    let inner = 1
        + varint_len(name.len() as u64)
        + name.len()
        + 1
        + varint_len(value.len() as u64)
        + value.len();
    buf.push(0x0A);
    put_varint(buf, inner as u64);
    buf.push(0x0A);
    put_varint(buf, name.len() as u64);
    buf.extend_from_slice(name.as_bytes());
    buf.push(0x12);
    put_varint(buf, value.len() as u64);
    buf.extend_from_slice(value.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// Series model
// ---------------------------------------------------------------------------------------------

const ROUTES: [&str; 5] = [
    "/api/v1/orders",
    "/api/v1/orders/{id}",
    "/api/v1/cart",
    "/api/v1/users/{id}",
    "/healthz",
];
/// Relative traffic of each route.
const ROUTE_WEIGHT: [f64; 5] = [1.0, 0.6, 0.3, 0.2, 0.05];
const CODES: [&str; 3] = ["200", "404", "500"];
const CODE_SHARE: [f64; 3] = [0.95, 0.04, 0.01];
const LES: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
/// Cumulative share of requests at or below each bucket bound (a log-normal-ish latency).
const LE_SHARE: [f64; 12] = [
    0.05, 0.12, 0.30, 0.50, 0.70, 0.85, 0.93, 0.97, 0.99, 0.995, 0.999, 1.0,
];
const NAMESPACES: [&str; 3] = ["shop", "payments", "search"];
/// Series exposed by one pod.
const PER_POD: usize = ROUTES.len() * CODES.len() + ROUTES.len() * LES.len() + 2;

#[derive(Clone, Copy)]
enum Kind {
    /// Integer counter; Poisson increment with this mean per step.
    Counter { lambda: f64 },
    /// process_cpu_seconds_total: grows by `cores` × step × U(0.5, 1.5), 10 ms resolution.
    CpuSeconds { cores: f64 },
    /// process_resident_memory_bytes: mean-reverting random walk around `base`.
    Gauge { base: f64 },
}

struct Series {
    /// Pre-encoded label entries: `arena[label_off .. label_off + label_len]`.
    label_off: u32,
    label_len: u32,
    value: f64,
    kind: Kind,
}

impl Series {
    /// Moves the value one step forward.
    fn advance(&mut self, rng: &mut Rng, step_s: f64) {
        match self.kind {
            Kind::Counter { lambda } => self.value += rng.poisson(lambda),
            Kind::CpuSeconds { cores } => {
                let inc = cores * step_s * (0.5 + rng.f64());
                self.value = ((self.value + inc) * 100.0).round() / 100.0;
            }
            Kind::Gauge { base } => {
                let v =
                    self.value + (base - self.value) * 0.05 + base * 0.02 * (2.0 * rng.f64() - 1.0);
                self.value = ((v / 4096.0).round() * 4096.0).max(4096.0);
            }
        }
    }
}

/// The series one connection sends, with their label bytes in one contiguous arena.
#[derive(Default)]
struct Partition {
    arena: Vec<u8>,
    series: Vec<Series>,
}

/// Builds all series and deals series `i` to connection `i % connections`.
fn build_partitions(a: &Args) -> Vec<Partition> {
    let mut parts: Vec<Partition> = (0..a.connections).map(|_| Partition::default()).collect();
    let step_scale = a.interval_ms as f64 / 15_000.0; // rates below are "per 15 s"
    let mut rng = Rng(a.seed ^ 0xA5A5_A5A5);
    let mut labels: Vec<(&str, String)> = Vec::with_capacity(9);

    // Per-pod strings, recomputed when the pod changes.
    let mut cur_pod = usize::MAX;
    let (mut job, mut ns, mut pod_name, mut instance, mut version) = (
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    );
    let mut pod_rate = 0.0;

    for i in 0..a.series {
        let p = i / PER_POD;
        if p != cur_pod {
            cur_pod = p;
            let svc = p % a.services;
            let ver = (p / a.services) % a.versions;
            job = format!("service-{svc}");
            ns = NAMESPACES[svc % NAMESPACES.len()].to_string();
            version = format!("v{}", ver + 1);
            let rs_hash = k8s_suffix(hash64(&[a.seed, svc as u64, ver as u64]), 10);
            let pod_hash = k8s_suffix(hash64(&[a.seed, p as u64, 0xB0D]), 5);
            pod_name = format!("{job}-{rs_hash}-{pod_hash}");
            let ip = p as u64 + 2;
            instance = format!(
                "10.{}.{}.{}:8080",
                1 + ((ip >> 16) & 0x7f),
                (ip >> 8) & 0xff,
                ip & 0xff
            );
            // Requests per 15 s of this pod's busiest route: 5 .. 200.
            pod_rate = (5.0 + 195.0 * rng.f64()) * step_scale;
        }

        labels.clear();
        labels.push(("instance", instance.clone()));
        labels.push(("job", job.clone()));
        labels.push(("namespace", ns.clone()));
        labels.push(("pod", pod_name.clone()));
        labels.push(("version", version.clone()));

        let k = i % PER_POD;
        let n_req = ROUTES.len() * CODES.len();
        let n_bucket = ROUTES.len() * LES.len();
        let (kind, initial) = if k < n_req {
            let (r, c) = (k / CODES.len(), k % CODES.len());
            labels.push(("__name__", "http_requests_total".into()));
            labels.push(("code", CODES[c].into()));
            labels.push(("route", ROUTES[r].into()));
            let lambda = pod_rate * ROUTE_WEIGHT[r] * CODE_SHARE[c];
            (
                Kind::Counter { lambda },
                (lambda * (100.0 + 10_000.0 * rng.f64())).round(),
            )
        } else if k < n_req + n_bucket {
            let (r, b) = ((k - n_req) / LES.len(), (k - n_req) % LES.len());
            labels.push(("__name__", "http_request_duration_seconds_bucket".into()));
            labels.push(("code", "200".into()));
            labels.push(("le", LES[b].into()));
            labels.push(("route", ROUTES[r].into()));
            let lambda = pod_rate * ROUTE_WEIGHT[r] * CODE_SHARE[0] * LE_SHARE[b];
            (
                Kind::Counter { lambda },
                (lambda * (100.0 + 10_000.0 * rng.f64())).round(),
            )
        } else if k == n_req + n_bucket {
            labels.push(("__name__", "process_cpu_seconds_total".into()));
            let cores = 0.02 + 0.5 * rng.f64();
            (
                Kind::CpuSeconds { cores },
                (cores * 86_400.0 * rng.f64() * 100.0).round() / 100.0,
            )
        } else {
            labels.push(("__name__", "process_resident_memory_bytes".into()));
            let base = ((50.0 + 450.0 * rng.f64()) * 1048576.0 / 4096.0).round() * 4096.0;
            (Kind::Gauge { base }, base)
        };
        // Prometheus sends labels sorted by name.
        labels.sort_unstable_by(|x, y| x.0.cmp(y.0));

        let part = &mut parts[i % a.connections];
        let off = part.arena.len();
        for (n, v) in &labels {
            put_label(&mut part.arena, n, v);
        }
        part.series.push(Series {
            label_off: off as u32,
            label_len: (part.arena.len() - off) as u32,
            value: initial,
            kind,
        });
    }
    parts
}

/// Appends `n` series never seen before (`request_id` = `first`, `first + 1`, ...) of the
/// service `exploding`, one sample each at `ts`.
fn encode_explosion(raw: &mut Vec<u8>, first: u64, n: usize, ts: i64) {
    let mut labels = Vec::with_capacity(128);
    for id in first..first + n as u64 {
        labels.clear();
        put_label(&mut labels, "__name__", "http_requests_total");
        put_label(&mut labels, "instance", "10.9.9.9:8080");
        put_label(&mut labels, "job", "exploding");
        put_label(&mut labels, "request_id", &format!("{id:016x}"));
        put_label(&mut labels, "version", "v1");
        let ts_u = ts as u64;
        let sample_len = 1 + 8 + 1 + varint_len(ts_u);
        let series_len = labels.len() + 1 + varint_len(sample_len as u64) + sample_len;
        raw.push(0x0A);
        put_varint(raw, series_len as u64);
        raw.extend_from_slice(&labels);
        raw.push(0x12);
        put_varint(raw, sample_len as u64);
        raw.push(0x09);
        raw.extend_from_slice(&1.0f64.to_le_bytes());
        raw.push(0x10);
        put_varint(raw, ts_u);
    }
}

/// Appends one WriteRequest holding one sample at `ts` for each series of `batch`.
fn encode_batch(
    raw: &mut Vec<u8>,
    arena: &[u8],
    batch: &mut [Series],
    ts: i64,
    step_s: f64,
    rng: &mut Rng,
) {
    raw.clear();
    let ts_u = ts as u64; // int64 varint: two's complement, as protobuf does
    let sample_len = 1 + 8 + 1 + varint_len(ts_u);
    for s in batch.iter_mut() {
        s.advance(rng, step_s);
        let labels = &arena[s.label_off as usize..(s.label_off + s.label_len) as usize];
        let series_len = labels.len() + 1 + varint_len(sample_len as u64) + sample_len;
        raw.push(0x0A); // WriteRequest.timeseries
        put_varint(raw, series_len as u64);
        raw.extend_from_slice(labels); // TimeSeries.labels (pre-encoded)
        raw.push(0x12); // TimeSeries.samples
        put_varint(raw, sample_len as u64);
        raw.push(0x09); // Sample.value, fixed64
        raw.extend_from_slice(&s.value.to_le_bytes());
        raw.push(0x10); // Sample.timestamp, varint
        put_varint(raw, ts_u);
    }
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log buckets with 32 linear sub-buckets per power of two (<= ~3 % error),
// in microseconds, fixed 1920 counters whatever the run length.
// ---------------------------------------------------------------------------------------------

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; ((64 - SUB_BITS as usize) + 1) * SUB as usize],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            v as usize
        } else {
            let shift = (63 - v.leading_zeros()) - SUB_BITS;
            ((u64::from(shift) + 1) * SUB + ((v >> shift) - SUB)) as usize
        }
    }

    /// Highest value that falls into bucket `idx`.
    fn highest(idx: usize) -> u64 {
        let idx = idx as u64;
        if idx < SUB {
            idx
        } else {
            let shift = idx / SUB - 1;
            let lowest = (idx % SUB + SUB) << shift;
            lowest + ((1u64 << shift) - 1)
        }
    }

    fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    /// Quantile `q` in microseconds (bucket's highest value, capped at the exact max).
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::highest(i).min(self.max);
            }
        }
        self.max
    }
}

// ---------------------------------------------------------------------------------------------
// Shared run state
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Counters {
    requests: u64,
    ok: u64,
    by_status: BTreeMap<u16, u64>,
    conn_errors: u64,
    samples_sent: u64, // in requests that got an HTTP answer
    samples_ok: u64,   // in requests answered 2xx
    bytes_sent: u64,   // snappy body bytes of answered requests
    raw_bytes: u64,    // uncompressed protobuf bytes of answered requests
}

struct Stats {
    c: Counters,
    hist: Histogram,
    /// Statuses / error kinds whose first message was printed already.
    reported: Vec<String>,
}

/// How many rounds a connection may run ahead of the slowest one.
const MAX_LEAD_ROUNDS: u64 = 2;

struct Shared {
    authority: String,
    path: String,
    timeout: Duration,
    interval_ms: u64,
    start_ms: i64,
    series_per_request: usize,
    deadline: Option<Instant>,
    budget: Option<u64>,
    claimed: AtomicU64,
    stats: Mutex<Stats>,
    /// Rounds completed by each connection (u64::MAX once it has stopped).
    completed: Vec<AtomicU64>,
    round_done: Notify,
    last_ts: AtomicI64,
    stop_reason: Mutex<Option<&'static str>>,
    /// `--explode`: new series per request, and how many were sent so far.
    explode: usize,
    exploded: AtomicU64,
}

impl Shared {
    fn set_reason(&self, r: &'static str) {
        let mut g = self.stop_reason.lock().unwrap();
        if g.is_none() {
            *g = Some(r);
        }
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Prints `msg` the first time `key` is seen.
    fn report_once(stats: &mut Stats, key: String, msg: impl FnOnce() -> String) {
        if !stats.reported.contains(&key) {
            eprintln!("{}", msg());
            stats.reported.push(key);
        }
    }
}

/// Resolves once `stop` is true (never, if the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect {authority}"))?;
    stream.set_nodelay(true)?; // Go's net/http (Prometheus) sets TCP_NODELAY too
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

enum Outcome {
    Status { code: u16, first_line: String },
    Failed(String),
}

/// Sends one request on `sender`, reads the whole answer; returns outcome and latency.
async fn send_one(
    sender: &mut SendRequest<Full<Bytes>>,
    sh: &Shared,
    body: Bytes,
) -> (Outcome, Duration) {
    let req = Request::post(sh.path.as_str())
        .header(header::HOST, sh.authority.as_str())
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .header(header::USER_AGENT, "deploywatch-loadgen/0.1")
        .body(Full::new(body))
        .expect("static request parts are valid");
    let t0 = Instant::now();
    let fut = async {
        let resp = sender.send_request(req).await?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((code, body))
    };
    let out = match tokio::time::timeout(sh.timeout, fut).await {
        Ok(Ok((code, body))) => {
            let first_line = if (200..300).contains(&code) {
                String::new()
            } else {
                let text = String::from_utf8_lossy(&body);
                text.lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(300)
                    .collect()
            };
            Outcome::Status { code, first_line }
        }
        Ok(Err(e)) => Outcome::Failed(format!("http error: {e}")),
        Err(_) => Outcome::Failed(format!("timeout after {:?}", sh.timeout)),
    };
    (out, t0.elapsed())
}

/// Waits until no connection is more than MAX_LEAD_ROUNDS behind `round`.
/// Returns false if the run must stop meanwhile.
async fn wait_for_peers(sh: &Shared, round: u64, stop: &mut watch::Receiver<bool>) -> bool {
    loop {
        let notified = sh.round_done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable(); // register before checking, so no wakeup is missed
        let slowest = sh
            .completed
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX);
        if slowest.saturating_add(MAX_LEAD_ROUNDS) >= round {
            return true;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = stopped(stop) => return false,
            _ = sleep_until_opt(sh.deadline) => { sh.set_reason("duration"); return false }
        }
    }
}

/// One connection: sends its partition round after round until a stop condition.
async fn worker(id: usize, mut part: Partition, sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut rng = Rng(hash64(&[id as u64, 0x77]));
    let mut enc = snap::raw::Encoder::new();
    let mut raw: Vec<u8> = Vec::new();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let step_s = sh.interval_ms as f64 / 1000.0;
    let n = part.series.len();
    let spr = sh.series_per_request;

    let mut round: u64 = 0;
    'run: loop {
        if n == 0 {
            break; // fewer series than connections: nothing to send here
        }
        if !wait_for_peers(&sh, round, &mut stop).await {
            break;
        }
        let ts = sh
            .start_ms
            .saturating_add((round as i64).saturating_mul(sh.interval_ms as i64));
        let mut lo = 0;
        while lo < n {
            let hi = (lo + spr).min(n);
            if *stop.borrow() {
                break 'run;
            }
            if sh.past_deadline() {
                sh.set_reason("duration");
                break 'run;
            }
            if let Some(b) = sh.budget {
                if sh.claimed.fetch_add(1, Ordering::Relaxed) >= b {
                    sh.set_reason("requests");
                    break 'run;
                }
            }

            // Build the request body: labels are pre-encoded, only samples are new.
            encode_batch(
                &mut raw,
                &part.arena,
                &mut part.series[lo..hi],
                ts,
                step_s,
                &mut rng,
            );
            if sh.explode > 0 {
                let first = sh.exploded.fetch_add(sh.explode as u64, Ordering::Relaxed);
                encode_explosion(&mut raw, first, sh.explode, ts);
            }
            let mut out = vec![0u8; snap::raw::max_compress_len(raw.len())];
            let clen = match enc.compress(&raw, &mut out) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("snappy: {e}");
                    break 'run;
                }
            };
            out.truncate(clen);
            let body = Bytes::from(out);
            let samples = (hi - lo) as u64;
            lo = hi;

            // (Re)connect if needed; a closed idle keep-alive connection is not an error.
            if sender.as_ref().is_none_or(|s| s.is_closed()) {
                sender = None;
                let c = tokio::select! {
                    c = connect(&sh.authority) => c,
                    _ = stopped(&mut stop) => break 'run,
                };
                match c {
                    Ok(s) => sender = Some(s),
                    Err(e) => {
                        {
                            let mut st = sh.stats.lock().unwrap();
                            st.c.requests += 1;
                            st.c.conn_errors += 1;
                            Shared::report_once(&mut st, "connect".into(), || {
                                format!("connection error: {e:#}")
                            });
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            _ = stopped(&mut stop) => break 'run,
                        }
                        continue;
                    }
                }
            }
            let s = sender.as_mut().expect("connected above");
            if s.ready().await.is_err() {
                // Closed between the check and now: reconnect once.
                sender = connect(&sh.authority).await.ok();
            }
            let Some(s) = sender.as_mut() else {
                let mut st = sh.stats.lock().unwrap();
                st.c.requests += 1;
                st.c.conn_errors += 1;
                continue;
            };

            let body_len = body.len() as u64;
            let (outcome, lat) = tokio::select! {
                r = send_one(s, &sh, body) => r,
                _ = stopped(&mut stop) => break 'run, // Ctrl-C: abandon the request in flight
            };

            let mut st = sh.stats.lock().unwrap();
            st.c.requests += 1;
            match outcome {
                Outcome::Status { code, first_line } => {
                    st.hist.record(lat);
                    *st.c.by_status.entry(code).or_default() += 1;
                    st.c.samples_sent += samples;
                    st.c.bytes_sent += body_len;
                    st.c.raw_bytes += raw.len() as u64;
                    if (200..300).contains(&code) {
                        st.c.ok += 1;
                        st.c.samples_ok += samples;
                        sh.last_ts.fetch_max(ts, Ordering::Relaxed);
                    } else {
                        Shared::report_once(&mut st, format!("status {code}"), || {
                            format!("HTTP {code} from receiver: {first_line}")
                        });
                    }
                }
                Outcome::Failed(msg) => {
                    st.c.conn_errors += 1;
                    let key = msg.split(':').next().unwrap_or("").to_string();
                    Shared::report_once(&mut st, key, || format!("request failed: {msg}"));
                    sender = None; // start over on a fresh connection
                }
            }
        }
        sh.completed[id].store(round + 1, Ordering::Release);
        sh.round_done.notify_waiters();
        round += 1;
    }
    // Leaving: never hold the others back.
    sh.completed[id].store(u64::MAX, Ordering::Release);
    sh.round_done.notify_waiters();
}

// ---------------------------------------------------------------------------------------------
// /proc readings for --pid
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct ProcSnap {
    cpu_ticks: u64,
    rss_kb: Option<u64>,
    hwm_kb: Option<u64>,
}

/// Clock ticks per second for /proc/PID/stat; `getconf CLK_TCK`, else Linux' usual 100.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

fn read_cpu_ticks(pid: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: parse after its closing parenthesis.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn read_status_kb(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

fn read_proc(pid: &str) -> Result<ProcSnap> {
    Ok(ProcSnap {
        cpu_ticks: read_cpu_ticks(pid)?,
        rss_kb: read_status_kb(pid, "VmRSS"),
        hwm_kb: read_status_kb(pid, "VmHWM"),
    })
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

struct PidReport {
    pid: u32,
    before: ProcSnap,
    after: Option<ProcSnap>,
    peak_rss_sampled_kb: u64,
}

struct Summary {
    url: String,
    stop_reason: &'static str,
    elapsed: Duration,
    c: Counters,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
    first_ts: i64,
    last_ts: Option<i64>,
    interval_ms: u64,
    loadgen_cpu_s: Option<f64>,
    clk_tck: f64,
    pids: Vec<PidReport>,
}

impl Summary {
    fn samples_per_s(&self) -> f64 {
        self.c.samples_ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn pid_cpu_s(&self, p: &PidReport) -> Option<f64> {
        p.after
            .map(|a| a.cpu_ticks.saturating_sub(p.before.cpu_ticks) as f64 / self.clk_tck)
    }

    fn failed(&self) -> u64 {
        self.c.requests - self.c.ok
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn print_text(s: &Summary) {
    let c = &s.c;
    let secs = s.elapsed.as_secs_f64();
    println!("deploywatch-loadgen summary");
    println!("  target          {}", s.url);
    println!(
        "  elapsed         {secs:.2} s (stopped by {})",
        s.stop_reason
    );
    println!(
        "  requests        {} ({:.1}/s): 2xx {}, non-2xx {}, connection errors/timeouts {}",
        c.requests,
        c.requests as f64 / secs.max(1e-9),
        c.ok,
        c.by_status
            .iter()
            .filter(|(k, _)| !(200..300).contains(*k))
            .map(|(_, v)| v)
            .sum::<u64>(),
        c.conn_errors
    );
    let codes: Vec<String> = c
        .by_status
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!(
        "  by status       {}",
        if codes.is_empty() {
            "-".into()
        } else {
            codes.join(", ")
        }
    );
    println!(
        "  samples         sent {}, accepted (2xx) {}",
        c.samples_sent, c.samples_ok
    );
    println!(
        "  throughput      {:.0} samples/s accepted",
        s.samples_per_s()
    );
    println!(
        "  latency         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(s.p50_us),
        ms(s.p90_us),
        ms(s.p99_us),
        ms(s.max_us)
    );
    println!(
        "  bytes sent      {:.1} MiB snappy bodies ({:.1} MiB protobuf, {:.1}x), {:.0} B/sample",
        c.bytes_sent as f64 / 1048576.0,
        c.raw_bytes as f64 / 1048576.0,
        c.raw_bytes as f64 / (c.bytes_sent as f64).max(1.0),
        c.bytes_sent as f64 / (c.samples_sent as f64).max(1.0)
    );
    match s.last_ts {
        Some(l) => println!(
            "  event time      {} .. {} ms ({} rounds of {} ms; query Prometheus with &time={:.3})",
            s.first_ts,
            l,
            (l - s.first_ts) / s.interval_ms as i64 + 1,
            s.interval_ms,
            l as f64 / 1000.0
        ),
        None => println!("  event time      no sample accepted"),
    }
    if let Some(l) = s.last_ts {
        // Re-sending older timestamps for the same series is "out of order" for most receivers.
        println!(
            "  next run        to reuse this receiver's data pass --start-ms {}",
            l + s.interval_ms as i64
        );
    }
    if let Some(cpu) = s.loadgen_cpu_s {
        println!(
            "  loadgen cpu     {cpu:.2} s ({:.0}% of one core)",
            100.0 * cpu / secs.max(1e-9)
        );
    }
    for p in &s.pids {
        match (p.after, s.pid_cpu_s(p)) {
            (Some(a), Some(cpu)) => {
                println!(
                    "  pid {:<11} cpu {:.2} s ({:.0}% of one core) -> {:.0} samples per CPU-second",
                    p.pid,
                    cpu,
                    100.0 * cpu / secs.max(1e-9),
                    c.samples_ok as f64 / cpu.max(1e-9)
                );
                let f = |v: Option<u64>| {
                    v.map(|k| format!("{:.1} MiB", mib(k)))
                        .unwrap_or_else(|| "?".into())
                };
                println!(
                    "  pid {:<11} RSS before {}, after {}, peak sampled {:.1} MiB, VmHWM (peak since start) {}",
                    p.pid,
                    f(p.before.rss_kb),
                    f(a.rss_kb),
                    mib(p.peak_rss_sampled_kb),
                    f(a.hwm_kb)
                );
            }
            _ => println!("  pid {:<11} exited during the run", p.pid),
        }
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_f64(v: f64) -> String {
    if v.is_finite() {
        format!("{:.3}", v)
    } else {
        "null".into()
    }
}

fn json_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "null".into())
}

fn print_json(s: &Summary) {
    let c = &s.c;
    let mut o = String::new();
    o.push('{');
    let _ = write!(o, "\"url\":{},", json_str(&s.url));
    let _ = write!(o, "\"stop_reason\":{},", json_str(s.stop_reason));
    let _ = write!(o, "\"elapsed_s\":{},", json_f64(s.elapsed.as_secs_f64()));
    let _ = write!(
        o,
        "\"requests\":{},\"requests_2xx\":{},\"requests_failed\":{},",
        c.requests,
        c.ok,
        s.failed()
    );
    let _ = write!(o, "\"connection_errors\":{},", c.conn_errors);
    let codes: Vec<String> = c
        .by_status
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    let _ = write!(o, "\"by_status\":{{{}}},", codes.join(","));
    let _ = write!(
        o,
        "\"samples_sent\":{},\"samples_accepted\":{},",
        c.samples_sent, c.samples_ok
    );
    let _ = write!(o, "\"samples_per_s\":{},", json_f64(s.samples_per_s()));
    let _ = write!(
        o,
        "\"latency_ms\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"max\":{}}},",
        json_f64(ms(s.p50_us)),
        json_f64(ms(s.p90_us)),
        json_f64(ms(s.p99_us)),
        json_f64(ms(s.max_us))
    );
    let _ = write!(
        o,
        "\"bytes_sent\":{},\"raw_bytes\":{},",
        c.bytes_sent, c.raw_bytes
    );
    let _ = write!(
        o,
        "\"event_time_first_ms\":{},\"event_time_last_ms\":{},",
        s.first_ts,
        json_opt(s.last_ts)
    );
    let _ = write!(
        o,
        "\"loadgen_cpu_s\":{},",
        s.loadgen_cpu_s
            .map(json_f64)
            .unwrap_or_else(|| "null".into())
    );
    let pids: Vec<String> = s
        .pids
        .iter()
        .map(|p| {
            let cpu = s.pid_cpu_s(p);
            format!(
                "{{\"pid\":{},\"cpu_s\":{},\"samples_per_cpu_s\":{},\"rss_before_kb\":{},\"rss_after_kb\":{},\
                 \"rss_peak_sampled_kb\":{},\"vm_hwm_kb\":{}}}",
                p.pid,
                cpu.map(json_f64).unwrap_or_else(|| "null".into()),
                cpu.map(|c| json_f64(s.c.samples_ok as f64 / c.max(1e-9))).unwrap_or_else(|| "null".into()),
                json_opt(p.before.rss_kb),
                json_opt(p.after.and_then(|a| a.rss_kb)),
                p.peak_rss_sampled_kb,
                json_opt(p.after.and_then(|a| a.hwm_kb)),
            )
        })
        .collect();
    let _ = write!(o, "\"pids\":[{}]", pids.join(","));
    o.push('}');
    println!("{o}");
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = (|| -> Result<Summary> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads.max(1))
            .enable_all()
            .build()
            .context("start tokio runtime")?;
        rt.block_on(run(args))
    })();
    match result {
        Ok(s) => {
            if s.failed() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("deploywatch-loadgen: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<Summary> {
    // --- validate arguments and the target URL
    if args.series == 0 || args.series_per_request == 0 || args.connections == 0 {
        bail!("--series, --series-per-request and --connections must be > 0");
    }
    if args.interval_ms == 0 || args.services == 0 || args.versions == 0 {
        bail!("--interval-ms, --services and --versions must be > 0");
    }
    if args.series > u32::MAX as usize / 256 {
        bail!("--series too large");
    }
    let uri: Uri = args
        .url
        .parse()
        .with_context(|| format!("bad --url {:?}", args.url))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("--url scheme {other:?} is not supported (plain http only)"),
        None => bail!("--url needs a scheme, e.g. http://127.0.0.1:10997/api/v1/write"),
    }
    let host = uri.host().context("--url has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let authority = format!("{host}:{port}");
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let duration = match (args.duration, args.requests) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(30)),
    };
    let start_ms = args.start_ms.unwrap_or_else(|| now_ms() - 50 * 60 * 1000);

    // --- build the series (labels encoded once)
    let t_build = Instant::now();
    let parts = build_partitions(&args);
    let label_bytes: usize = parts.iter().map(|p| p.arena.len()).sum();
    let per_conn_requests: usize = parts
        .iter()
        .map(|p| p.series.len().div_ceil(args.series_per_request))
        .max()
        .unwrap_or(0);
    eprintln!(
        "deploywatch-loadgen: {} series ({} pods, {:.1} MiB of labels, built in {:.0} ms) over {} connections, \
         {} series/request (~{} requests per connection per round), event time from {} ms in {} ms steps \
         ({} rounds until wall clock), {} -> {}",
        args.series,
        args.series.div_ceil(PER_POD),
        label_bytes as f64 / 1048576.0,
        t_build.elapsed().as_secs_f64() * 1000.0,
        args.connections,
        args.series_per_request,
        per_conn_requests,
        start_ms,
        args.interval_ms,
        (now_ms() - start_ms).max(0) as u64 / args.interval_ms,
        match duration {
            Some(d) => format!("for {:?}", d),
            None => "no time limit".into(),
        },
        args.url
    );

    // --- receiver processes: first reading
    let clk_tck = clock_ticks();
    let mut pid_reports = Vec::new();
    for &pid in &args.pids {
        let before = read_proc(&pid.to_string()).with_context(|| format!("--pid {pid}"))?;
        pid_reports.push(PidReport {
            pid,
            before,
            after: None,
            peak_rss_sampled_kb: before.rss_kb.unwrap_or(0),
        });
    }
    let peaks: Arc<Vec<AtomicU64>> = Arc::new(
        pid_reports
            .iter()
            .map(|p| AtomicU64::new(p.peak_rss_sampled_kb))
            .collect(),
    );
    let sampler = {
        let peaks = peaks.clone();
        let pids: Vec<String> = args.pids.iter().map(|p| p.to_string()).collect();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                for (i, pid) in pids.iter().enumerate() {
                    if let Some(kb) = read_status_kb(pid, "VmRSS") {
                        peaks[i].fetch_max(kb, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let self_cpu_before = read_cpu_ticks("self").ok();

    // --- shared state, Ctrl-C, workers, progress
    let started = Instant::now();
    let shared = Arc::new(Shared {
        authority,
        path,
        timeout: args.timeout,
        interval_ms: args.interval_ms,
        start_ms,
        series_per_request: args.series_per_request,
        deadline: duration.map(|d| started + d),
        budget: args.requests,
        claimed: AtomicU64::new(0),
        stats: Mutex::new(Stats {
            c: Counters::default(),
            hist: Histogram::new(),
            reported: Vec::new(),
        }),
        completed: (0..args.connections).map(|_| AtomicU64::new(0)).collect(),
        round_done: Notify::new(),
        last_ts: AtomicI64::new(i64::MIN),
        stop_reason: Mutex::new(None),
        explode: args.explode,
        exploded: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctrl_c = {
        let sh = shared.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: stopping");
                sh.set_reason("ctrl-c");
                let _ = stop_tx.send(true);
            }
        })
    };
    let workers: Vec<_> = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| tokio::spawn(worker(i, p, shared.clone(), stop_rx.clone())))
        .collect();
    let progress = {
        let sh = shared.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs(5);
            let mut tick = tokio::time::interval_at((started + period).into(), period);
            let mut prev_samples = 0;
            loop {
                tick.tick().await;
                let st = sh.stats.lock().unwrap();
                let c = &st.c;
                eprintln!(
                    "[{:6.1}s] {} requests (2xx {}, failed {}), {} samples accepted, {:.0} samples/s (last 5 s), \
                     p50 {:.1} ms, p99 {:.1} ms",
                    started.elapsed().as_secs_f64(),
                    c.requests,
                    c.ok,
                    c.requests - c.ok,
                    c.samples_ok,
                    (c.samples_ok - prev_samples) as f64 / period.as_secs_f64(),
                    ms(st.hist.quantile(0.5)),
                    ms(st.hist.quantile(0.99))
                );
                prev_samples = c.samples_ok;
            }
        })
    };
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed();
    progress.abort();
    shared.set_reason(if args.requests.is_some() && duration.is_none() {
        "requests"
    } else {
        "duration"
    });
    let self_cpu_after = read_cpu_ticks("self").ok();

    // --- receiver processes: second reading, after letting asynchronous work settle
    if !pid_reports.is_empty() {
        tokio::select! {
            _ = tokio::time::sleep(args.pid_settle) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        for (i, p) in pid_reports.iter_mut().enumerate() {
            p.after = read_proc(&p.pid.to_string()).ok();
            if let Some(kb) = p.after.and_then(|a| a.rss_kb) {
                peaks[i].fetch_max(kb, Ordering::Relaxed);
            }
            p.peak_rss_sampled_kb = peaks[i].load(Ordering::Relaxed);
        }
    }
    sampler.abort();
    ctrl_c.abort();

    // --- summary
    let stop_reason = shared.stop_reason.lock().unwrap().unwrap_or("duration");
    let st = std::mem::replace(
        &mut *shared.stats.lock().unwrap(),
        Stats {
            c: Counters::default(),
            hist: Histogram::new(),
            reported: Vec::new(),
        },
    );
    let last = shared.last_ts.load(Ordering::Relaxed);
    let summary = Summary {
        url: args.url.clone(),
        stop_reason,
        elapsed,
        p50_us: st.hist.quantile(0.50),
        p90_us: st.hist.quantile(0.90),
        p99_us: st.hist.quantile(0.99),
        max_us: st.hist.max,
        c: st.c,
        first_ts: start_ms,
        last_ts: (last != i64::MIN).then_some(last),
        interval_ms: args.interval_ms,
        loadgen_cpu_s: match (self_cpu_before, self_cpu_after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / clk_tck),
            _ => None,
        },
        clk_tck,
        pids: pid_reports,
    };
    if args.json {
        print_json(&summary);
    } else {
        print_text(&summary);
    }
    if let Some(l) = summary.last_ts {
        if l > now_ms() {
            eprintln!("note: the last timestamps ({l} ms) lie in the future of the wall clock");
        }
    }
    Ok(summary)
}
