//! Native histograms on a real stack, nothing simulated between the instrumented processes
//! and the verdicts.
//!
//! The pods are `examples/instrumented_service.rs --native-histograms`: they keep
//! `http_request_duration_seconds` as a native histogram only (schema 3, no classic
//! buckets) and serve it in the protobuf exposition. A real Prometheus (Debian's 2.42) with
//! `--enable-feature=native-histograms`, which makes it ask for that exposition, scrapes
//! them every 5 s through file-based discovery (as in `real_stack.rs`, whose pods, targets
//! file, config and load these tests share) and remote-writes to deploywatch with
//! `send_native_histograms: true`.
//!
//! - `native_histograms_from_real_pods_reach_prometheus_and_deploywatch` (about 40 s): what
//!   Prometheus stores is native (`histogram_quantile` over the histogram itself answers;
//!   no `_bucket`, `_count` or `_sum` series), the counters of the same protobuf scrape are
//!   there too, and Prometheus sends the histograms to deploywatch, which counts them.
//! - `real_prometheus_native_histograms_roll_back_a_slow_canary` (at most 5 min 45 s): two v1
//!   pods, and after 75 s of them alone a v2 canary with three times their latency and no
//!   more errors. Nobody tells deploywatch about the deploy; it must detect it and roll the
//!   canary back on `latency_p99`, judged from the native histograms.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    remote_write_native_histograms_to, version, wait_for, Deploywatch, Prometheus,
    PROMETHEUS_NATIVE_HISTOGRAMS,
};
use crate::real_stack::{
    describe, instrumented_service_bin, prometheus_config, write_targets, Load, Pod, Serving,
};
use crate::sim::{deploys, find_deploy};

/// v1 alone before the canary starts: past deploywatch's 60 s detection grace (versions
/// seen within a minute of a service's first sample were running before it started).
const BASELINE_ONLY: Duration = Duration::from_secs(75);
/// How long the slow canary may take to be rolled back, from its start: the latency rules'
/// warm-up (3 min per new instance), then a minute and a quarter for the evidence.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(255);
/// Time between two looks at the deploy.
const POLL_EVERY: Duration = Duration::from_secs(3);

const ERROR_RATIO: f64 = 0.005;
/// The median latency of v1 and of the canary: three times as slow, p99 too (the spread is
/// the same).
const V1_LATENCY_MS: f64 = 40.0;
const CANARY_LATENCY_MS: f64 = 120.0;

fn native(latency_ms: f64) -> Serving {
    Serving {
        error_ratio: ERROR_RATIO,
        latency_ms,
        native_histograms: true,
    }
}

/// Prometheus scraping the targets file and writing to `dw`, native histograms on both
/// sides.
fn start_prometheus(targets_file: &Path, dw: &Deploywatch) -> Prometheus {
    Prometheus::start_with_args(
        &prometheus_config(targets_file, &remote_write_native_histograms_to(&dw.url())),
        &[PROMETHEUS_NATIVE_HISTOGRAMS],
    )
}

/// Native histogram samples deploywatch kept.
fn native_histograms_at(dw: &Deploywatch) -> f64 {
    dw.must_metric(
        "deploywatch_ingest_histogram_samples_total",
        &[("outcome", "appended")],
    )
}

/// `q` evaluated by Prometheus: each series' labels and value, for the log.
fn query_values(prom: &Prometheus, q: &str) -> Vec<(Value, f64)> {
    prom.instant(q)
        .into_iter()
        .map(|s| {
            let v = s["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (s["metric"].clone(), v)
        })
        .collect()
}

/// The 99th percentile of a job's request durations over the last minute, by version,
/// from the native histograms Prometheus stored.
fn p99_by_version(prom: &Prometheus, job: &str) -> Vec<(String, f64)> {
    query_values(
        prom,
        &format!(
            "histogram_quantile(0.99, sum by (version) \
             (rate(http_request_duration_seconds{{job=\"{job}\"}}[1m])))"
        ),
    )
    .into_iter()
    .map(|(m, v)| (m["version"].as_str().unwrap_or("?").to_string(), v))
    .collect()
}

/// The names of a job's series whose names start with `http_request_duration_seconds`.
fn duration_series_names(prom: &Prometheus, job: &str) -> Vec<String> {
    prom.instant(&format!(
        "{{__name__=~\"http_request_duration_seconds.*\", job=\"{job}\"}}"
    ))
    .iter()
    .map(|s| s["metric"]["__name__"].as_str().unwrap_or("?").to_string())
    .collect()
}

#[test]
fn native_histograms_from_real_pods_reach_prometheus_and_deploywatch() {
    const JOB: &str = "shop-native-wire";
    let started = Instant::now();
    eprintln!(
        "native_stack: using {}",
        instrumented_service_bin().display()
    );
    let dir = tempfile::Builder::new()
        .prefix("deploywatch-it-native-wire-")
        .tempdir()
        .expect("creating a temporary directory");
    let targets_file = dir.path().join("targets.json");

    let dw = Deploywatch::start();
    let pod = Pod::start_serving(dir.path(), JOB, "v1", 0, native(V1_LATENCY_MS));
    write_targets(&targets_file, &[&pod]);
    let prom = start_prometheus(&targets_file, &dw);
    let mut load = Load::new();
    load.send_to(&pod);

    // Prometheus stored native histograms: the series carries histograms, not values, and
    // a quantile over its rate answers once two scrapes are in.
    let stored = wait_for(
        "Prometheus to store the pod's durations as native histograms",
        Duration::from_secs(60),
        || {
            let series = prom.instant(&format!("http_request_duration_seconds{{job=\"{JOB}\"}}"));
            let routes = series.iter().filter(|s| s["histogram"].is_array()).count();
            let p99 = p99_by_version(&prom, JOB);
            match p99.first() {
                Some((_, v)) if routes == 3 && v.is_finite() => Ok((series, *v)),
                _ => Err(format!("series {series:?}, p99 {p99:?}")),
            }
        },
    );
    let (series, p99) = stored;
    eprintln!(
        "native_stack: after {:?}, Prometheus holds {} native histograms, p99 {p99:.4} s: {}",
        started.elapsed(),
        series.len(),
        series[0]
    );
    // A lognormal with median 40 ms and σ 0.3 has its p99 at 80 ms; buckets are 9 % wide.
    assert!(
        (0.06..0.2).contains(&p99),
        "p99 of {p99} s from the native histograms, for a median of {V1_LATENCY_MS} ms"
    );
    let names = duration_series_names(&prom, JOB);
    assert!(
        names.iter().all(|n| n == "http_request_duration_seconds"),
        "classic histogram series beside the native ones: {names:?}"
    );
    // The rest of the protobuf scrape: counters and gauges as floats.
    for name in [
        "http_requests_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        let got = query_values(&prom, &format!("{name}{{job=\"{JOB}\"}}"));
        assert!(
            !got.is_empty() && got.iter().all(|(_, v)| v.is_finite()),
            "{name} of {JOB} in Prometheus: {got:?}"
        );
    }

    // Prometheus sent them, and deploywatch kept them, beside
    // the float series that show the service and its version.
    let stored = wait_for(
        "deploywatch to receive native histogram samples",
        Duration::from_secs(30),
        || {
            let stored = native_histograms_at(&dw);
            if stored > 0.0 {
                Ok(stored)
            } else {
                Err(format!("kept {stored}"))
            }
        },
    );
    let services = dw.services();
    assert!(
        version(&services, JOB, "v1").is_some(),
        "deploywatch does not see {JOB} at v1: {services:#}"
    );
    let sent = prom
        .metric("prometheus_remote_storage_histograms_total", &[])
        .expect("Prometheus 2.42 counts prometheus_remote_storage_histograms_total");
    let failed = prom
        .metric("prometheus_remote_storage_histograms_failed_total", &[])
        .expect("Prometheus 2.42 counts prometheus_remote_storage_histograms_failed_total");
    drop(load);
    eprintln!(
        "native_stack: Prometheus sent {sent} native histograms ({failed} failed); \
         deploywatch kept {stored}; {}; done in {:?}",
        pod.summary(),
        started.elapsed()
    );
    assert!(sent > 0.0, "Prometheus sent no native histogram");
    assert_eq!(failed, 0.0, "Prometheus failed to send native histograms");
}

#[test]
fn real_prometheus_native_histograms_roll_back_a_slow_canary() {
    const JOB: &str = "shop-native";
    let started = Instant::now();
    eprintln!(
        "native_stack: using {}",
        instrumented_service_bin().display()
    );
    let dir = tempfile::Builder::new()
        .prefix("deploywatch-it-native-stack-")
        .tempdir()
        .expect("creating a temporary directory");
    let targets_file = dir.path().join("targets.json");

    let dw = Deploywatch::start();
    let baseline: Vec<Pod> = (0..2)
        .map(|i| Pod::start_serving(dir.path(), JOB, "v1", i, native(V1_LATENCY_MS)))
        .collect();
    write_targets(&targets_file, &baseline.iter().collect::<Vec<_>>());
    let prom = start_prometheus(&targets_file, &dw);
    let mut load = Load::new();
    for pod in &baseline {
        load.send_to(pod);
    }

    wait_for(
        "deploywatch to see the service at v1",
        Duration::from_secs(60),
        || {
            let s = dw.services();
            version(&s, JOB, "v1").map(|_| ()).ok_or(s.to_string())
        },
    );
    eprintln!(
        "native_stack: v1 seen after {:?}; v1 alone for {BASELINE_ONLY:?}",
        started.elapsed()
    );
    std::thread::sleep(BASELINE_ONLY);
    let before = deploys(&dw, JOB).expect("listing deploys");
    assert!(before.is_empty(), "a deploy before any canary: {before:?}");

    // The canary: one v2 pod, three times as slow, added to the discovery file.
    let canary = Pod::start_serving(dir.path(), JOB, "v2", 0, native(CANARY_LATENCY_MS));
    let canary_at = Instant::now();
    load.send_to(&canary);
    let all: Vec<&Pod> = baseline.iter().chain([&canary]).collect();
    write_targets(&targets_file, &all);
    eprintln!("native_stack: canary started after {:?}", started.elapsed());

    // Watch the deploy until it is rolled back, or for ROLLBACK_TIMEOUT; what it shows then
    // is checked below, the judge's part last.
    let mut seen = None;
    while canary_at.elapsed() < ROLLBACK_TIMEOUT {
        std::thread::sleep(POLL_EVERY);
        let Ok(d) = find_deploy(&dw, JOB, "v2") else {
            continue;
        };
        if seen.is_none() {
            eprintln!(
                "native_stack: deploy detected {:?} after the canary started:\n{}",
                canary_at.elapsed(),
                describe(&d)
            );
        }
        let rolled_back = d["verdict"] == "rollback";
        seen = Some(d);
        if rolled_back {
            eprintln!(
                "native_stack: rolled back {:?} after the canary started",
                canary_at.elapsed()
            );
            break;
        }
    }
    let p99 = p99_by_version(&prom, JOB);
    let stored = native_histograms_at(&dw);
    drop(load);

    eprintln!("native_stack: after {:?}", started.elapsed());
    for pod in &all {
        eprintln!("native_stack: load {}", pod.summary());
    }
    eprintln!(
        "native_stack: p99 by version in Prometheus: {p99:?}; native histogram samples at \
         deploywatch: kept {stored}"
    );
    let deploy = seen.unwrap_or_else(|| {
        panic!(
            "no deploy of {JOB} to v2 detected within {ROLLBACK_TIMEOUT:?}:\n{:#}",
            dw.services()
        )
    });
    eprintln!("native_stack: the deploy:\n{}", describe(&deploy));

    // The regression was real: Prometheus, from the same native histograms, sees it.
    let of = |v: &str| p99.iter().find(|(ver, _)| ver == v).map(|(_, q)| *q);
    match (of("v1"), of("v2")) {
        (Some(v1), Some(v2)) => assert!(
            v2 > 2.0 * v1,
            "the canary's p99 {v2} s is not well above v1's {v1} s in Prometheus"
        ),
        _ => panic!("p99 by version in Prometheus: {p99:?}"),
    }
    // Detected from the data alone, as a canary against v1.
    assert_eq!(deploy["source"], "detected", "{}", describe(&deploy));
    assert_eq!(deploy["strategy"], "canary", "{}", describe(&deploy));
    assert_eq!(deploy["baseline_version"], "v1", "{}", describe(&deploy));
    // Prometheus sent everything it scraped, histograms included.
    for failed in [
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_histograms_failed_total",
    ] {
        let n = prom
            .metric(failed, &[])
            .unwrap_or_else(|| panic!("Prometheus 2.42 exposes {failed}"));
        assert_eq!(n, 0.0, "{failed}");
    }
    // deploywatch judged from native histograms it kept.
    assert!(stored > 0.0, "deploywatch kept no native histogram sample");
    // The verdict: rolled back, the 99th percentile's rule at `rollback` (the median is three
    // times v1's too, so latency_p50 may decide the deploy: the rule row is what tells).
    assert_eq!(
        deploy["verdict"],
        "rollback",
        "not rolled back within {ROLLBACK_TIMEOUT:?} of the canary's start:\n{}\n{:#}",
        describe(&deploy),
        dw.services()
    );
    let p99_rule = deploy["rules"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["rule"] == "latency_p99"))
        .unwrap_or_else(|| panic!("no latency_p99 rule:\n{}", describe(&deploy)));
    assert_eq!(p99_rule["verdict"], "rollback", "{}", describe(&deploy));
    // Judged from the native histograms, and said so.
    assert_eq!(p99_rule["histogram"], "native", "{}", describe(&deploy));
    eprintln!("native_stack: done in {:?}", started.elapsed());
}
