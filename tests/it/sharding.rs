//! Beyond one instance, with Prometheus doing the distribution (docs/scaling.md):
//! - shards by service: a real Prometheus with the remote_write entries and `hashmod`
//!   relabelling of k8s/prometheus-shards.yml sends each service to exactly one deploywatch,
//!   the one the documented formula names; and a shard fed only its services' share of a
//!   simulated stream judges them exactly as a single instance fed everything;
//! - an HA pair: two instances fed the same stream give the same deploy ids, verdicts and
//!   verdict times, and so the same alert labels, which Alertmanager deduplicates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use deploywatch::proto::prometheus as rw1;

use crate::harness::*;
use crate::k8s::{k8s_dir, yaml};
use crate::sim::{
    deploys, register_deploy, Effect, Feed, Service, Signal, Sim, Who, EPOCH, MIN, SEC,
};

/// The shard Prometheus' `hashmod` relabel action gives `value` among `n`: the last 8 bytes
/// of its MD5, big-endian, modulo n (MD5 from coreutils' md5sum, as docs/scaling.md does it).
pub fn hashmod(value: &str, n: u64) -> usize {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running md5sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("md5sum's output");
    let hex = String::from_utf8(out.stdout).unwrap();
    (u64::from_str_radix(&hex[16..32], 16).expect("a hex digest") % n) as usize
}

/// The owner of each service among `n` shards.
fn owners(services: &[&str], n: u64) -> HashMap<String, usize> {
    services
        .iter()
        .map(|s| (s.to_string(), hashmod(s, n)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Routing: a real Prometheus with the documented relabelling
// ---------------------------------------------------------------------------------------

/// Services (Prometheus jobs) spread over both of two shards by hashmod.
const JOBS: [&str; 6] = ["cart", "checkout", "search", "payments", "catalog", "auth"];

/// What every job's target exposes: two series the rules judge and one they do not.
fn exposition(n: u64) -> String {
    format!(
        "# TYPE http_requests_total counter\n\
         http_requests_total{{code=\"200\",version=\"v1\"}} {n}\n\
         # TYPE process_resident_memory_bytes gauge\n\
         process_resident_memory_bytes{{version=\"v1\"}} 1e8\n\
         # TYPE go_goroutines gauge\n\
         go_goroutines{{version=\"v1\"}} 12\n"
    )
}

/// k8s/prometheus-shards.yml with its relabel rules untouched, scraping `target` once per
/// job every second and writing to the given shards.
fn sharded_config(target: &str, shards: &[&Deploywatch]) -> String {
    let mut cfg = yaml(&k8s_dir().join("prometheus-shards.yml"));
    cfg["global"] = json!({"scrape_interval": "1s", "scrape_timeout": "1s",
                           "evaluation_interval": "1s"});
    cfg["scrape_configs"] = JOBS
        .iter()
        .map(|j| json!({"job_name": j, "static_configs": [{"targets": [target]}]}))
        .collect();
    let rw = cfg["remote_write"].as_array_mut().expect("remote_write");
    assert_eq!(rw.len(), shards.len(), "one remote_write per shard");
    for (w, dw) in rw.iter_mut().zip(shards) {
        w["url"] = json!(format!("{}/api/v1/write", dw.url()));
        w["queue_config"] = json!({"batch_send_deadline": "1s", "min_backoff": "100ms",
                                   "max_backoff": "1s"});
    }
    // JSON is YAML: Prometheus reads it as its config file.
    serde_json::to_string_pretty(&cfg).unwrap()
}

#[test]
fn prometheus_hashmod_sends_each_service_to_exactly_one_shard() {
    let shards = [Deploywatch::start(), Deploywatch::start()];
    let owner = owners(&JOBS, 2);
    let want: Vec<BTreeSet<String>> = (0..2)
        .map(|i| {
            JOBS.iter()
                .filter(|j| owner[**j] == i)
                .map(|j| j.to_string())
                .collect()
        })
        .collect();
    assert!(
        want.iter().all(|w| !w.is_empty()),
        "pick jobs that spread over both shards: {want:?}"
    );
    let mut n = 1;
    let target = MetricsTarget::start(&exposition(n));
    let prom = Prometheus::start(&sharded_config(&target.target(), &[&shards[0], &shards[1]]));

    // Each shard holds exactly the services the formula gives it, with exactly the series
    // the filter forwards: `up` (no version) and the two judged metrics of v1.
    let per_service = BTreeMap::from([("".to_string(), 1), ("v1".to_string(), 2)]);
    wait_for(
        "each shard to hold exactly its services",
        Duration::from_secs(60),
        || {
            n += 1;
            target.set(&exposition(n));
            for (i, dw) in shards.iter().enumerate() {
                let s = dw.services();
                let got: BTreeSet<String> = service_names(&s).into_iter().collect();
                if got != want[i] {
                    return Err(format!("shard {i} holds {got:?}, want {:?}", want[i]));
                }
                for svc in &want[i] {
                    let v = series_by_version(&s, svc);
                    if v != per_service {
                        return Err(format!("shard {i}, {svc}: series per version {v:?}"));
                    }
                }
            }
            Ok(())
        },
    );
    // Nothing refused by deploywatch, nothing failed on Prometheus' side.
    for dw in &shards {
        assert!(dw.samples_total("appended") > 0.0);
        for code in ["400", "413", "415", "503"] {
            assert_eq!(
                dw.metric("deploywatch_ingest_requests_total", &[("code", code)]),
                Some(0.0),
                "{code}"
            );
        }
    }
    let failed = prom
        .metric("prometheus_remote_storage_samples_failed_total", &[])
        .expect("prometheus_remote_storage_samples_failed_total");
    assert_eq!(failed, 0.0);
}

// ---------------------------------------------------------------------------------------
// Verdicts: a shard against a single instance, and an HA pair, on simulated pushes
// ---------------------------------------------------------------------------------------

const T: i64 = EPOCH + 30 * MIN;

/// Canaries at `T`: errors x10 (rollback), a clean one, CPU x1.6 (pause), p99 x2.
fn services() -> Vec<Sim> {
    let step =
        |signal, factor| Effect::step(Who::Version("v2".into()), signal, factor, T, i64::MAX);
    vec![
        Sim::new(
            Service::new("cart", 501, 3)
                .canary("v2", T, 1)
                .effect(step(Signal::Errors, 10.0)),
        ),
        Sim::new(Service::new("checkout", 502, 3).canary("v2", T, 1)),
        Sim::new(
            Service::new("search", 503, 3)
                .canary("v2", T, 1)
                .effect(step(Signal::Cpu, 1.6)),
        ),
        Sim::new(
            Service::new("payments", 504, 3)
                .canary("v2", T, 1)
                .effect(step(Signal::Latency, 2.0)),
        ),
    ]
}

const SERVICES: [&str; 4] = ["cart", "checkout", "search", "payments"];

/// Splits a request among `n` shards by the hashmod of its series' `job`, as the sharded
/// remote_write entries do; metadata goes to every shard, unrelabelled, as Prometheus sends it.
fn split(
    req: &rw1::WriteRequest,
    owner: &HashMap<String, usize>,
    n: usize,
) -> Vec<rw1::WriteRequest> {
    let mut out: Vec<rw1::WriteRequest> = (0..n)
        .map(|_| rw1::WriteRequest {
            metadata: req.metadata.clone(),
            ..Default::default()
        })
        .collect();
    for ts in &req.timeseries {
        let job = ts
            .labels
            .iter()
            .find(|l| l.name == "job")
            .map(|l| l.value.as_str())
            .expect("every simulated series has a job");
        out[owner[job]].timeseries.push(ts.clone());
    }
    out
}

/// What two instances must agree on for each deploy: identity, verdicts and their event
/// times, per-rule verdicts, and the timeline of judging.
fn essence(d: &Value) -> Value {
    let rules: BTreeMap<String, Value> = d["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_string(),
                r["verdict"].clone(),
            )
        })
        .collect();
    let changes: Vec<Value> = d["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        // Gate answers and alert deliveries are each replica's own doings, recorded at the
        // event time they happened to run at.
        .filter(|e| {
            let ev = e["event"].as_str().unwrap_or("");
            !ev.starts_with("gate_") && !ev.starts_with("alert_")
        })
        .map(|e| json!([e["at"], e["event"], e["verdict"], e["rule"]]))
        .collect();
    json!({
        "id": d["id"], "service": d["service"], "version": d["version"],
        "baseline_version": d["baseline_version"], "strategy": d["strategy"],
        "source": d["source"], "started_at": d["started_at"], "phase": d["phase"],
        "verdict": d["verdict"], "verdict_at": d["verdict_at"], "rules": rules,
        "timeline": changes,
    })
}

fn essences(dw: &Deploywatch, service: &str) -> Vec<Value> {
    deploys(dw, service)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(essence)
        .collect()
}

/// Pushes the simulated services to every instance of `to` (each gets the requests its
/// function picks), registering `cart`'s deploy at `T` where it is held, until `until`.
fn drive(
    until: i64,
    mut route: impl FnMut(&rw1::WriteRequest) -> Vec<(usize, rw1::WriteRequest)>,
    to: &[&Deploywatch],
    registered_on: &[usize],
) {
    let mut feed = Feed::new(services(), 5 * SEC);
    let mut registered = false;
    while feed.t + feed.window <= until {
        if !registered && feed.t >= T {
            for &i in registered_on {
                register_deploy(
                    to[i],
                    &json!({"service": "cart", "version": "v2", "baseline_version": "v1",
                            "strategy": "canary", "at": T, "commit": "3f2c9e1"}),
                )
                .unwrap();
            }
            registered = true;
        }
        let push = feed.next_push();
        for req in &push.requests {
            for (i, r) in route(req) {
                if r.timeseries.is_empty() && r.metadata.is_empty() {
                    continue;
                }
                let (status, body) = to[i].push_v1(&r);
                assert_eq!(status, 204, "push ending at {} to #{i}: {body}", push.end);
            }
        }
    }
}

#[test]
fn a_shard_judges_its_services_exactly_as_a_single_instance() {
    let single = Deploywatch::start();
    let shard0 = Deploywatch::start();
    let shard1 = Deploywatch::start();
    let owner = owners(&SERVICES, 2);
    assert!(
        (0..2).all(|i| owner.values().any(|&o| o == i)),
        "the services should spread over both shards: {owner:?}"
    );
    let cart = owner["cart"];
    drive(
        T + 8 * MIN,
        |req| {
            let mut v = vec![(0, req.clone())];
            v.extend(
                split(req, &owner, 2)
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| (i + 1, r)),
            );
            v
        },
        &[&single, &shard0, &shard1],
        &[0, cart + 1],
    );

    let shards = [&shard0, &shard1];
    let mut verdicts = BTreeMap::new();
    for svc in SERVICES {
        let (mine, other) = (shards[owner[svc]], shards[1 - owner[svc]]);
        let want = essences(&single, svc);
        assert!(
            !want.is_empty(),
            "the single instance has no deploy of {svc}"
        );
        assert_eq!(
            essences(mine, svc),
            want,
            "{svc} on its shard {}",
            owner[svc]
        );
        assert!(
            essences(other, svc).is_empty() && service(&other.services(), svc).is_none(),
            "{svc} reached the shard that does not own it"
        );
        verdicts.insert(svc, want[0]["verdict"].as_str().unwrap().to_string());
    }
    // The comparison covers more than `pending`.
    assert_eq!(verdicts["cart"], "rollback", "{verdicts:?}");
    assert!(
        verdicts.values().filter(|v| *v != "pending").count() >= 2,
        "{verdicts:?}"
    );
}

/// `deploywatch_deploy_verdict` samples as (labels, value): the labels an alert carries.
fn verdict_series(dw: &Deploywatch) -> BTreeMap<String, f64> {
    let scrape = parse_exposition(&dw.metrics_text());
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "deploywatch_deploy_verdict")
        .map(|s| {
            let labels: BTreeMap<String, String> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            (format!("{labels:?}"), v)
        })
        .collect()
}

#[test]
fn an_ha_pair_fed_the_same_stream_gives_the_same_deploys_verdicts_and_alerts() {
    // Both replicas send to the same Alertmanager, with the external URL of the Service in
    // front of them, as in docs/scaling.md.
    let am = Alertmanager::start();
    let args = [
        format!("--alertmanager.url={}", am.url()),
        "--web.external-url=http://deploywatch.monitoring:10997".to_string(),
    ];
    let a = Deploywatch::start_with_args(None, &args);
    let b = Deploywatch::start_with_args(None, &args);
    drive(
        T + 8 * MIN,
        |req| vec![(0, req.clone()), (1, req.clone())],
        &[&a, &b],
        &[0, 1],
    );
    let mut alerting = BTreeSet::new();
    for svc in SERVICES {
        let (x, y) = (essences(&a, svc), essences(&b, svc));
        assert!(!x.is_empty(), "no deploy of {svc}");
        assert_eq!(x, y, "{svc}: the two replicas disagree");
        for d in &x {
            if ["warn", "pause", "rollback"].contains(&d["verdict"].as_str().unwrap()) {
                alerting.insert(d["id"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(alerting.len() >= 2, "{alerting:?}");
    // The derived metrics, whose labels are the alerts' (service, version,
    // baseline_version, deploy_id), are the same on both.
    let (va, vb) = (verdict_series(&a), verdict_series(&b));
    assert!(va.len() >= SERVICES.len(), "{va:?}");
    assert_eq!(va, vb);

    // Both replicas delivered their alerts, and Alertmanager holds one per deploy: the
    // two copies carry the same labels, so they are one alert.
    wait_for(
        "both replicas to deliver an alert for every regressed deploy",
        Duration::from_secs(30),
        || {
            let sent = |dw: &Deploywatch| dw.metric("deploywatch_alerts_sent_total", &[]);
            let (sa, sb) = (sent(&a).unwrap_or(0.0), sent(&b).unwrap_or(0.0));
            let alerts = am.alerts()?;
            let regressions: Vec<&Value> = alerts
                .iter()
                .filter(|x| x["labels"]["alertname"] == "DeployRegression")
                .collect();
            let held: BTreeSet<String> = regressions
                .iter()
                .map(|x| x["labels"]["deploy_id"].as_str().unwrap_or("").to_string())
                .collect();
            // A replica that escalated a deploy resolves its lower alert in the same send;
            // the other replica, a push behind, may still fire it a moment longer.
            if sa >= alerting.len() as f64
                && sb >= alerting.len() as f64
                && held == alerting
                && regressions.len() == alerting.len()
            {
                Ok(())
            } else {
                Err(format!(
                    "sent {sa} and {sb}; Alertmanager holds {held:?}, want {alerting:?}"
                ))
            }
        },
    );
    let held = am.alerts().unwrap();
    let regressions: Vec<&Value> = held
        .iter()
        .filter(|x| x["labels"]["alertname"] == "DeployRegression")
        .collect();
    assert_eq!(
        regressions.len(),
        alerting.len(),
        "one alert per regressed deploy, not one per replica: {regressions:#?}"
    );
}
