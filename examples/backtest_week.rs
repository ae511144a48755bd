//! Fills a Prometheus with a week of one service for measuring `deploywatch backtest`
//! (issue 8's target: a week of one service at 15 s resolution, ≈ 1,000 series, in under a
//! minute). Bounded and deterministic: 16 pods × 62 series (`http_requests_total` by route
//! and code, the classic latency histogram by route, CPU and memory), scraped every 15 s,
//! remote-written (RW 1.0, 2,000 samples a request, in event-time order) to Prometheus'
//! receiver. A deploy every day at 12:00: one canary pod of the new version for 20 minutes,
//! then the others roll over; the fourth day's version fails 5 % of its requests instead
//! of 1 %. Pods that go away get stale markers, as Prometheus writes them.
//!
//! ```sh
//! prometheus --web.enable-remote-write-receiver --storage.tsdb.path=/tmp/bt/tsdb \
//!   --config.file=<(echo 'global: {}') --web.listen-address=127.0.0.1:19190 &
//! cargo run --release --example backtest_week -- http://127.0.0.1:19190
//! cargo build --release && time target/release/deploywatch backtest \
//!   --prometheus.url http://127.0.0.1:19190 --selector '{job="shop"}' \
//!   --from 2025-11-10T00:00:00Z --to 2025-11-17T00:00:00Z
//! ```
//! Optional second and third arguments: days (default 7) and pods (default 16).

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;

use deploywatch::proto::prometheus::{Label, TimeSeries};

/// 2025-11-10T00:00:00Z.
const START: i64 = 1_762_732_800_000;
const STEP: i64 = 15_000;
const DAY: i64 = 86_400_000;
const ROUTES: [&str; 4] = ["/products", "/cart", "/checkout", "/search"];
const ROUTE_RPS: [f64; 4] = [4.0, 2.5, 2.0, 1.5];
const CODES: [&str; 3] = ["200", "404", "500"];
const LES: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
/// Share of requests at or below each bound (a lognormal around 50 ms).
const CDF: [f64; 12] = [
    0.0, 0.002, 0.05, 0.5, 0.92, 0.995, 0.999, 1.0, 1.0, 1.0, 1.0, 1.0,
];
const PER_REQUEST: usize = 2000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// About `mean` (normal approximation), never negative.
    fn count(&mut self, mean: f64) -> f64 {
        let n = (self.f64() + self.f64() + self.f64() - 1.5) * 2.0; // ~N(0,1)
        (mean + n * mean.sqrt()).round().max(0.0)
    }
}

/// One pod: its series' encoded label fields and counter state.
struct Pod {
    labels: Vec<Vec<u8>>,
    counters: Vec<f64>,
    cpu: f64,
    error_p: f64,
}

fn pod(slot: usize, version: usize, error_p: f64) -> Pod {
    let name = format!("shop-v{version}-{slot:05x}");
    let instance = format!("10.0.{}.{}:8080", version, slot + 2);
    let base = |extra: Vec<(&str, String)>| -> Vec<u8> {
        let mut l: Vec<(String, String)> = vec![
            ("instance".into(), instance.clone()),
            ("job".into(), "shop".into()),
            ("namespace".into(), "prod".into()),
            ("pod".into(), name.clone()),
            ("version".into(), format!("v{version}")),
        ];
        l.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        l.sort();
        TimeSeries {
            labels: l
                .into_iter()
                .map(|(name, value)| Label { name, value })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let mut labels = Vec::new();
    for r in ROUTES {
        for c in CODES {
            labels.push(base(vec![
                ("__name__", "http_requests_total".into()),
                ("code", c.into()),
                ("route", r.into()),
            ]));
        }
    }
    for r in ROUTES {
        for le in LES {
            labels.push(base(vec![
                ("__name__", "http_request_duration_seconds_bucket".into()),
                ("le", le.into()),
                ("route", r.into()),
            ]));
        }
    }
    labels.push(base(vec![("__name__", "process_cpu_seconds_total".into())]));
    labels.push(base(vec![(
        "__name__",
        "process_resident_memory_bytes".into(),
    )]));
    let n = labels.len();
    Pod {
        labels,
        counters: vec![0.0; n],
        cpu: 0.0,
        error_p,
    }
}

/// Appends one `TimeSeries` entry with one sample.
fn entry(out: &mut Vec<u8>, label_fields: &[u8], ts: i64, v: f64) {
    let mut sample = [0u8; 20];
    sample[0] = 0x09;
    sample[1..9].copy_from_slice(&v.to_bits().to_le_bytes());
    sample[9] = 0x10;
    let n = 10 + put_varint(&mut sample[10..], ts as u64);
    let inner = label_fields.len() + 2 + n;
    out.push(0x0a);
    let mut len = [0u8; 10];
    let k = put_varint(&mut len, inner as u64);
    out.extend_from_slice(&len[..k]);
    out.extend_from_slice(label_fields);
    out.push(0x12);
    out.push(n as u8);
    out.extend_from_slice(&sample[..n]);
}

fn put_varint(buf: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = format!(
        "{}/api/v1/write",
        args.get(1)
            .expect("usage: backtest_week PROMETHEUS_URL [DAYS] [PODS]")
            .trim_end_matches('/')
    );
    let days: i64 = args.get(2).map(|d| d.parse().expect("days")).unwrap_or(7);
    let pods_n: usize = args.get(3).map(|d| d.parse().expect("pods")).unwrap_or(16);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut version = 1;
    let mut pods: Vec<Pod> = (0..pods_n).map(|s| pod(s, version, 0.01)).collect();
    let mut stale: Vec<Vec<u8>> = Vec::new();
    let (mut body, mut entries, mut samples, mut requests) = (Vec::new(), 0usize, 0u64, 0u64);
    let started = Instant::now();
    let mut enc = snap::raw::Encoder::new();
    let end = START + days * DAY;
    let mut t = START;
    while t < end {
        // Daily deploy at 12:00: slot 0 first (a canary), the others 20 minutes later.
        let since_noon = (t - START).rem_euclid(DAY) - DAY / 2;
        let replace: Vec<usize> = if since_noon == 0 {
            version += 1;
            vec![0]
        } else if since_noon == 20 * 60_000 {
            (1..pods_n).collect()
        } else {
            vec![]
        };
        for s in replace {
            let error_p = if version == 5 { 0.05 } else { 0.01 };
            let old = std::mem::replace(&mut pods[s], pod(s, version, error_p));
            stale.extend(old.labels);
        }
        for l in stale.drain(..) {
            entry(&mut body, &l, t, f64::from_bits(0x7ff0_0000_0000_0002));
            entries += 1;
            if entries == PER_REQUEST {
                send(&client, &url, &mut enc, &mut body).await;
                samples += entries as u64;
                requests += 1;
                entries = 0;
            }
        }
        for (slot, p) in pods.iter_mut().enumerate() {
            let ts = t + (slot as i64 * 937) % STEP; // each target at its own offset
            let mut k = 0;
            let mut total = 0.0;
            let mut per_route = [0.0; 4];
            for (r, rps) in ROUTE_RPS.iter().enumerate() {
                let n = rng.count(rps * 15.0);
                per_route[r] = n;
                total += n;
                let err = (n * p.error_p + (rng.f64() - 0.5) * 2.0)
                    .round()
                    .clamp(0.0, n);
                let nf = (n * 0.02).round().min(n - err);
                for inc in [n - err - nf, nf, err] {
                    p.counters[k] += inc;
                    k += 1;
                }
            }
            for n in per_route {
                for f in CDF {
                    p.counters[k] += (n * f).round();
                    k += 1;
                }
            }
            p.cpu += 15.0 * (0.05 + 0.002 * total / 15.0) * (0.9 + 0.2 * rng.f64());
            p.counters[k] = p.cpu;
            p.counters[k + 1] = 2.0e8 + 4.0e6 * rng.f64();
            for (l, v) in p.labels.iter().zip(&p.counters) {
                entry(&mut body, l, ts, *v);
                entries += 1;
                if entries == PER_REQUEST {
                    send(&client, &url, &mut enc, &mut body).await;
                    samples += entries as u64;
                    requests += 1;
                    entries = 0;
                }
            }
        }
        t += STEP;
        if (t - START) % DAY == 0 {
            eprintln!(
                "day {} written: {samples} samples, {requests} requests, {:.1}s",
                (t - START) / DAY,
                started.elapsed().as_secs_f64()
            );
        }
    }
    if entries > 0 {
        send(&client, &url, &mut enc, &mut body).await;
        samples += entries as u64;
        requests += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wrote {samples} samples in {requests} requests in {secs:.1}s ({:.0} samples/s), {} to {}",
        samples as f64 / secs,
        deploywatch::logging::rfc3339_ms(START),
        deploywatch::logging::rfc3339_ms(end)
    );
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    enc: &mut snap::raw::Encoder,
    body: &mut Vec<u8>,
) {
    let compressed = enc.compress_vec(body).expect("snappy");
    body.clear();
    let req = hyper::Request::post(url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(Full::new(Bytes::from(compressed)))
        .expect("a request");
    let res = client.request(req).await.expect("Prometheus answers");
    let status = res.status();
    let text = res.into_body().collect().await.expect("a body").to_bytes();
    assert!(
        status.is_success(),
        "Prometheus refused a write ({status}): {}",
        String::from_utf8_lossy(&text)
    );
}
