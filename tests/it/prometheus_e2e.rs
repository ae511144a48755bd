//! A real Prometheus (Debian's 2.42) scrapes a metrics target every second and
//! remote-writes to deploywatch; deploywatch must see the service, its versions and their
//! series exactly, with fresh timestamps, and a new version when the target rolls over.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    now_ms, series_by_version, service, service_names, wait_for, Deploywatch, MetricsTarget,
    Prometheus,
};

/// The synthetic series Prometheus adds per scrape; they carry `job` but no `version`.
const SYNTHETIC: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Series the target exposes per version.
const TARGET_SERIES: u64 = 9;

/// What a `checkout` instance running `version` exposes: request counters by code and
/// route, a classic latency histogram and a gauge. `n` moves the counters along.
fn exposition(version: &str, n: u64) -> String {
    let mut s = String::new();
    s.push_str("# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\n");
    for (code, route, per) in [("200", "/a", 10), ("500", "/a", 1), ("200", "/b", 5)] {
        s.push_str(&format!(
            "http_requests_total{{code=\"{code}\",route=\"{route}\",version=\"{version}\"}} {}\n",
            per * n
        ));
    }
    s.push_str(
        "# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n",
    );
    for (le, per) in [("0.1", 6), ("0.5", 9), ("+Inf", 10)] {
        s.push_str(&format!(
            "http_request_duration_seconds_bucket{{le=\"{le}\",version=\"{version}\"}} {}\n",
            per * n
        ));
    }
    s.push_str(&format!(
        "http_request_duration_seconds_sum{{version=\"{version}\"}} {}\n",
        0.4 * n as f64
    ));
    s.push_str(&format!(
        "http_request_duration_seconds_count{{version=\"{version}\"}} {}\n",
        10 * n
    ));
    s.push_str("# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\n");
    s.push_str(&format!(
        "process_resident_memory_bytes{{version=\"{version}\"}} 5.24288e+07\n"
    ));
    s
}

fn prometheus_config(target: &str, deploywatch: &str) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: checkout
    static_configs:
      - targets: ["{target}"]
{remote_write}"#,
        remote_write = crate::harness::remote_write_to(deploywatch)
    )
}

/// `newest_sample_at` of `checkout`, if any.
fn newest(services: &Value) -> Option<i64> {
    service(services, "checkout")?["newest_sample_at"].as_i64()
}

/// Waits until `checkout`'s series per version are exactly `want` and its newest sample is
/// published (a push creates its series before it publishes their newest timestamp: a
/// read in between sees the series without it).
fn wait_for_versions(dw: &Deploywatch, want: &BTreeMap<String, u64>) -> Value {
    wait_for(
        &format!("deploywatch to show checkout with series per version {want:?}"),
        Duration::from_secs(90),
        || {
            let s = dw.services();
            if &series_by_version(&s, "checkout") == want && newest(&s).is_some() {
                Ok(s)
            } else {
                Err(format!("{s}"))
            }
        },
    )
}

#[test]
fn prometheus_remote_writes_scraped_series_and_a_new_version() {
    let dw = Deploywatch::start();
    let mut n = 1;
    let target = MetricsTarget::start(&exposition("v1", n));
    let prom = Prometheus::start(&prometheus_config(&target.target(), &dw.url()));

    // v1: the target's series, plus Prometheus' synthetic series in version "".
    let want_v1 = BTreeMap::from([
        ("".to_string(), SYNTHETIC.len() as u64),
        ("v1".to_string(), TARGET_SERIES),
    ]);
    let s = wait_for_versions(&dw, &want_v1);
    assert_eq!(
        service_names(&s),
        ["checkout"],
        "only the scraped job arrives: {s:#}"
    );
    assert_eq!(
        service(&s, "checkout").unwrap()["series"],
        TARGET_SERIES + SYNTHETIC.len() as u64
    );

    // Event time is the scrape time: close to the wall clock, and moving.
    let first = newest(&s).expect("checkout has a newest_sample_at");
    let skew = (now_ms() - first).abs();
    assert!(
        skew < 30_000,
        "newest_sample_at {first} is {skew} ms away from the wall clock"
    );
    let later = wait_for(
        "checkout's newest_sample_at to advance",
        Duration::from_secs(60),
        || {
            n += 1;
            target.set(&exposition("v1", n));
            match newest(&dw.services()) {
                Some(t) if t > first => Ok(t),
                other => Err(format!("newest_sample_at {other:?}, was {first}")),
            }
        },
    );
    assert!(
        (now_ms() - later).abs() < 30_000,
        "newest_sample_at {later} is stale"
    );

    // The target rolls over to v2: its v1 series go stale, v2 series appear.
    target.set(&exposition("v2", n + 1));
    let want_v2 = BTreeMap::from([
        ("".to_string(), SYNTHETIC.len() as u64),
        ("v1".to_string(), TARGET_SERIES),
        ("v2".to_string(), TARGET_SERIES),
    ]);
    let s = wait_for_versions(&dw, &want_v2);
    assert_eq!(service_names(&s), ["checkout"], "{s:#}");
    assert_eq!(
        service(&s, "checkout").unwrap()["series"],
        2 * TARGET_SERIES + SYNTHETIC.len() as u64,
        "{s:#}"
    );
    let v2_first = s["services"][0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "v2")
        .and_then(|v| v["first_sample_at"].as_i64())
        .expect("v2 has a first_sample_at");
    assert!(
        v2_first > first,
        "v2 first seen at {v2_first}, before v1's newest {first}"
    );

    // Prometheus marks each vanished v1 series stale at the next scrape.
    wait_for(
        "stale markers for the vanished v1 series",
        Duration::from_secs(60),
        || {
            let stale = dw.must_metric("deploywatch_ingest_stale_markers_total", &[]);
            if stale >= TARGET_SERIES as f64 {
                Ok(())
            } else {
                Err(format!("{stale} stale markers"))
            }
        },
    );

    // Everything Prometheus sent was accepted: nothing refused, nothing failed on its side.
    for code in ["400", "413", "415", "503"] {
        assert_eq!(
            dw.metric("deploywatch_ingest_requests_total", &[("code", code)]),
            Some(0.0),
            "remote-write requests answered {code}"
        );
    }
    assert!(dw.samples_total("appended") > 0.0);
    assert_eq!(dw.samples_total("out_of_order"), 0.0);
    let failed = prom
        .metric("prometheus_remote_storage_samples_failed_total", &[])
        .expect("Prometheus exposes prometheus_remote_storage_samples_failed_total");
    assert_eq!(failed, 0.0, "Prometheus failed to send samples");
    let sent = prom
        .metric("prometheus_remote_storage_samples_total", &[])
        .expect("Prometheus exposes prometheus_remote_storage_samples_total");
    assert!(sent > 0.0, "Prometheus counted no samples sent");
    assert!(target.scrapes() > 0);
}
