//! Health, readiness and a gate while pushes saturate the receiver (issue 15, "slow work off
//! the answer"). Starts the release `deploywatch` on a temporary `--storage.path`, registers
//! a canary (`service-0` v2 against v1) so every push is judged, saturates
//! `POST /api/v1/write` with `deploywatch-loadgen` (more connections than
//! `limits.max_inflight_requests`, Prometheus-shaped 2,000-series requests into the judged
//! service), and meanwhile probes `GET /-/ready`, `GET /-/healthy` and
//! `GET /api/v1/verdict?service=service-0` as a kubelet and a rollout controller would (a
//! new connection per probe), then prints each probe's p50/p99/max latency against the
//! 100 ms p99 target, with the pushes' own throughput and latency.
//!
//! Run: `cargo bench --bench responsive`. Knobs (environment): `DW_BENCH_SECS` (default
//! 20), `DW_BENCH_CONNECTIONS` (pushing connections, default 64), `DW_BENCH_SERIES` (active
//! series, default 40000), `DW_BENCH_STEP_MS` (event time per round, default 250),
//! `DW_BENCH_BIN` (another `deploywatch` binary to measure, e.g. an
//! older build, with the same flags).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TARGET_P99_MS: f64 = 100.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One HTTP/1.1 exchange on a new connection; the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that is not ours skips the run.
    if let Some(filter) = std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        if !"responsive".contains(&filter) {
            return;
        }
    }
    let secs: u64 = env_or("DW_BENCH_SECS", 20);
    let connections: usize = env_or("DW_BENCH_CONNECTIONS", 64);
    let series: usize = env_or("DW_BENCH_SERIES", 40_000);
    let bin = std::env::var("DW_BENCH_BIN").unwrap_or(env!("CARGO_BIN_EXE_deploywatch").into());
    let loadgen = env!("CARGO_BIN_EXE_deploywatch-loadgen");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let log = std::fs::File::create(dir.path().join("deploywatch.log")).unwrap();
    let mut server = Command::new(&bin)
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg("--limits.max-time-ahead=1d")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting deploywatch");
    let started = Instant::now();
    while !matches!(http(addr, "GET", "/-/ready", ""), Ok((200, _))) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "deploywatch did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The load's event time starts 20 minutes back and advances `DW_BENCH_STEP_MS` (250) per
    // round; the canary starts a minute into it, so it is judged from the first minute on.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start_ms = now - 20 * 60_000;
    let step_ms: u64 = env_or("DW_BENCH_STEP_MS", 250);
    let (status, body) = http(
        addr,
        "POST",
        "/api/v1/deploys",
        &format!(
            r#"{{"service":"service-0","version":"v2","baseline_version":"v1","strategy":"canary","at":{}}}"#,
            start_ms + 60_000
        ),
    )
    .unwrap();
    assert_eq!(status, 201, "registering the canary: {body}");

    let mut load = Command::new(loadgen)
        .args(["--url", &format!("http://{addr}/api/v1/write")])
        .args(["--series", &series.to_string()])
        .args(["--services", "1", "--versions", "2"])
        .args(["--connections", &connections.to_string()])
        .args(["--duration", &format!("{secs}s")])
        .args(["--interval-ms", &step_ms.to_string()])
        .args(["--start-ms", &start_ms.to_string()])
        .args(["--threads", "1"])
        .args(["--pid", &server.id().to_string()])
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting deploywatch-loadgen");

    let loading = Arc::new(AtomicBool::new(true));
    let probes = [
        ("GET /-/ready", "/-/ready"),
        ("GET /-/healthy", "/-/healthy"),
        ("GET /api/v1/verdict", "/api/v1/verdict?service=service-0"),
    ];
    let prober = {
        let loading = loading.clone();
        std::thread::spawn(move || {
            // Let the pushes ramp up first.
            std::thread::sleep(Duration::from_secs(1));
            let mut lat: Vec<Vec<f64>> = vec![Vec::new(); probes.len()];
            let mut failed = 0u64;
            while loading.load(Ordering::Relaxed) {
                for (i, (_, path)) in probes.iter().enumerate() {
                    let t = Instant::now();
                    match http(addr, "GET", path, "") {
                        Ok((200, _)) => lat[i].push(t.elapsed().as_secs_f64() * 1e3),
                        _ => failed += 1,
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (lat, failed)
        })
    };
    let mut out = String::new();
    load.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = load.wait();
    loading.store(false, Ordering::Relaxed);
    let (mut lat, failed) = prober.join().unwrap();

    let (_, verdict) = http(addr, "GET", "/api/v1/verdict?service=service-0", "").unwrap();
    let v: serde_json::Value = serde_json::from_str(&verdict).unwrap_or_default();
    // How long the judging of a push took (its lock held meanwhile), from the server.
    let (_, metrics) = http(addr, "GET", "/metrics", "").unwrap();
    let bucket = |le: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "deploywatch_evaluation_duration_seconds_bucket{{le=\"{le}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let (all, under_100ms, under_1s) = (bucket("+Inf"), bucket("0.1"), bucket("1"));
    let _ = server.kill();
    let _ = server.wait();

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let per_request = series.div_ceil(connections).min(2000);
    println!(
        "responsive: {secs} s of pushes ({connections} connections, {series} series, {per_request} per request, one judged canary) on {cpus} CPUs, load {}",
        load_avg.split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    println!("  binary: {bin}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    println!(
        "  pushes: {} requests ({} 2xx, by status {}), {:.0} samples/s accepted; push latency p50 {} ms, p99 {} ms",
        summary["requests"],
        summary["requests_2xx"],
        summary["by_status"],
        summary["samples_per_s"].as_f64().unwrap_or(f64::NAN),
        summary["latency_ms"]["p50"],
        summary["latency_ms"]["p99"],
    );
    println!(
        "  the canary at the end: phase {}, verdict {} ({}), judged on every push",
        v["phase"], v["verdict"], v["reason"]
    );
    println!(
        "  judging per push (the service's lock held): {} pushes, {} over 100 ms, {} over 1 s",
        all,
        all - under_100ms,
        all - under_1s
    );
    let mut worst = 0f64;
    for (i, (name, _)) in probes.iter().enumerate() {
        let l = &mut lat[i];
        l.sort_by(|a, b| a.total_cmp(b));
        let p99 = quantile(l, 0.99);
        worst = worst.max(p99);
        println!(
            "  {name:<22} n {:>5}  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            l.len(),
            quantile(l, 0.5),
            p99,
            l.last().copied().unwrap_or(f64::NAN),
        );
    }
    if failed > 0 {
        println!("  probes failed: {failed}");
    }
    println!(
        "  target p99 < {TARGET_P99_MS} ms: {}",
        if worst < TARGET_P99_MS && failed == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
