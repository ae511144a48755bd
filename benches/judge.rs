//! Push-to-verdict: the time of one remote-write push (decode + store + judge) for a service
//! with ~1,000 series (1,008: 14 pods × 72 series) and a canary deploy registered through the
//! API, judged by the default rules. Each push is one 15 s scrape of all the service's series.
//!
//! ```sh
//! cargo bench --bench judge             # criterion (mean/median), then p50/p99 of single pushes
//! ```
//!
//! Two store histories are compared: the deploy registered at 5 min and pushes measured from
//! 10 min of event time on, and the deploy registered at 55 min and pushes measured from 60 min
//! on. Both judge a deploy of the same age; only the retained history differs.

use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use prost::Message;

use deploywatch::app::{App, Runtime};
use deploywatch::config::Config;
use deploywatch::deploy::{Registration, Strategy};
use deploywatch::ingest::Protocol;
use deploywatch::proto::prometheus as pb;
use deploywatch::rules::RuleSet;

const STEP: i64 = 15_000;
const T0: i64 = 1_700_000_000_000;
const ROUTES: usize = 5;
const LE: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
/// Cumulative share of requests at or below each bound (a latency distribution around 60 ms).
const CDF: [f64; 12] = [
    0.02, 0.06, 0.2, 0.42, 0.7, 0.93, 0.985, 0.996, 0.999, 0.9997, 1.0, 1.0,
];
const V1_PODS: usize = 10;
const V2_PODS: usize = 4;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        deploywatch::rng::splitmix64(&mut self.0)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One pod's series and their running values.
struct Pod {
    version: &'static str,
    name: String,
    instance: String,
    /// Per route: requests 2xx, requests 5xx, cumulative bucket counts.
    ok: [f64; ROUTES],
    err: [f64; ROUTES],
    buckets: [[f64; 12]; ROUTES],
    cpu: f64,
    mem: f64,
}

/// The service "checkout": v1 pods always, v2 pods from the deploy on.
struct Service {
    pods: Vec<Pod>,
    rng: Rng,
    deploy_at: i64,
}

fn label(n: &str, v: &str) -> pb::Label {
    pb::Label {
        name: n.into(),
        value: v.into(),
    }
}

impl Service {
    fn new(deploy_at: i64) -> Service {
        let pods = (0..V1_PODS + V2_PODS)
            .map(|p| {
                let version = if p < V1_PODS { "v1" } else { "v2" };
                Pod {
                    version,
                    name: format!("checkout-{version}-7d9f8b-{p:05}"),
                    instance: format!("10.1.0.{p}:8080"),
                    ok: [0.0; ROUTES],
                    err: [0.0; ROUTES],
                    buckets: [[0.0; 12]; ROUTES],
                    cpu: 0.0,
                    mem: 200e6,
                }
            })
            .collect();
        Service {
            pods,
            rng: Rng(7),
            deploy_at,
        }
    }

    /// The snappy-compressed RW 1.0 body of the scrape at `ts`.
    fn scrape(&mut self, ts: i64) -> Vec<u8> {
        let mut series = Vec::with_capacity(1008);
        let deployed = ts >= self.deploy_at;
        for pod in &mut self.pods {
            if pod.version == "v2" && !deployed {
                continue;
            }
            let common = |name: &str, extra: &[(&str, &str)]| {
                let mut l = vec![
                    label("__name__", name),
                    label("instance", &pod.instance),
                    label("job", "checkout"),
                    label("namespace", "prod"),
                    label("pod", &pod.name),
                    label("version", pod.version),
                ];
                l.extend(extra.iter().map(|(n, v)| label(n, v)));
                l.sort_by(|a, b| a.name.cmp(&b.name));
                l
            };
            let sample = |v: f64| {
                vec![pb::Sample {
                    value: v,
                    timestamp: ts,
                }]
            };
            let mut total = 0.0;
            for r in 0..ROUTES {
                let route = format!("/api/v1/route{r}");
                // ~20 requests/s per route and pod, 0.3 % errors.
                let n = (300.0 * (0.8 + 0.4 * self.rng.unit())).round();
                let e = (n * 0.003 * 2.0 * self.rng.unit()).round();
                pod.ok[r] += n - e;
                pod.err[r] += e;
                total += n;
                let mut below = 0.0;
                for (i, &c) in CDF.iter().enumerate() {
                    let jitter = if i + 1 < CDF.len() {
                        (c * n * (0.98 + 0.04 * self.rng.unit())).round().min(n)
                    } else {
                        n
                    };
                    below = f64::max(below, jitter);
                    pod.buckets[r][i] += below;
                }
                for (code, v) in [("200", pod.ok[r]), ("500", pod.err[r])] {
                    series.push(pb::TimeSeries {
                        labels: common("http_requests_total", &[("code", code), ("route", &route)]),
                        samples: sample(v),
                        ..Default::default()
                    });
                }
                for (i, le) in LE.iter().enumerate() {
                    series.push(pb::TimeSeries {
                        labels: common(
                            "http_request_duration_seconds_bucket",
                            &[("le", le), ("route", &route)],
                        ),
                        samples: sample(pod.buckets[r][i]),
                        ..Default::default()
                    });
                }
            }
            pod.cpu = ((pod.cpu + total * 0.0004 * (0.9 + 0.2 * self.rng.unit())) * 100.0).round()
                / 100.0;
            pod.mem += ((self.rng.unit() - 0.5) * 64.0).round() * 4096.0;
            series.push(pb::TimeSeries {
                labels: common("process_cpu_seconds_total", &[]),
                samples: sample(pod.cpu),
                ..Default::default()
            });
            series.push(pb::TimeSeries {
                labels: common("process_resident_memory_bytes", &[]),
                samples: sample(pod.mem),
                ..Default::default()
            });
        }
        let req = pb::WriteRequest {
            timeseries: series,
            metadata: vec![],
        };
        snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap()
    }
}

/// An app holding `history_min` minutes of the service, with a canary registered
/// `history_min - 5` minutes in; returns the app, the generator and the next scrape time.
fn setup(history_min: i64, dir: &std::path::Path) -> (App, Service, i64) {
    let app = App::new(
        Runtime {
            config_path: None,
            external_url: "http://localhost:10997".into(),
            storage_path: dir.to_path_buf(),
            alertmanager_urls: vec![],
            limit_flags: Default::default(),
        },
        Config::embedded(),
        RuleSet::embedded(),
    );
    let deploy_at = T0 + (history_min - 5) * 60_000;
    let mut svc = Service::new(deploy_at);
    let mut ts = T0;
    while ts < T0 + history_min * 60_000 {
        if ts == deploy_at {
            app.deploys
                .register(
                    &app.store,
                    Registration {
                        service: "checkout".into(),
                        version: "v2".into(),
                        baseline_version: Some("v1".into()),
                        strategy: Some(Strategy::Canary),
                        at: Some(deploy_at),
                        commit: String::new(),
                        author: String::new(),
                        url: String::new(),
                        changes: vec![],
                    },
                )
                .unwrap();
        }
        let body = svc.scrape(ts);
        app.push(Protocol::V1, &body).unwrap();
        ts += STEP;
    }
    (app, svc, ts)
}

/// Times `n` pushes after `setup(history_min)`; returns each push's duration.
fn timed_pushes(history_min: i64, n: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let (app, mut svc, ts) = setup(history_min, dir.path());
    let bodies: Vec<_> = (0..n).map(|k| svc.scrape(ts + k as i64 * STEP)).collect();
    bodies
        .iter()
        .map(|b| {
            let t = Instant::now();
            let o = app.push(Protocol::V1, b).unwrap();
            let d = t.elapsed();
            assert_eq!(o.store.samples_appended, 1008);
            d
        })
        .collect()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("push_to_verdict_1008_series");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for history in [10i64, 60] {
        g.bench_function(format!("after_{history}min"), |b| {
            // A fresh app per 40 pushes keeps every measured push 5–15 min into the deploy.
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let k = left.min(40);
                    total += timed_pushes(history, k).iter().sum::<Duration>();
                    left -= k;
                }
                total
            })
        });
    }
    g.finish();

    // Percentiles over single pushes: 10 fresh apps × 40 pushes per history length.
    for history in [10i64, 60] {
        let mut all: Vec<Duration> = (0..10).flat_map(|_| timed_pushes(history, 40)).collect();
        all.sort();
        println!(
            "push_to_verdict after {history} min: {} pushes of 1008 samples: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}; loadavg {}",
            all.len(),
            pct(&all, 0.5),
            pct(&all, 0.9),
            pct(&all, 0.99),
            all.last().unwrap(),
            loadavg()
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    // `JUDGE_TRACE=10 judge-…`: print each push's duration after 10 min of history and exit
    // (for profiling with `perf record`); otherwise criterion, then the percentiles.
    if let Some(h) = std::env::var("JUDGE_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        for (k, d) in timed_pushes(h, 40).iter().enumerate() {
            println!("push {k}: {d:?}");
        }
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
