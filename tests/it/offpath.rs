//! Issue 15, "slow work off the answer": pushes are decoded and judged on the blocking pool
//! and the deploy history is written by its own thread, so readiness and the gates answer
//! while several senders push into one judged service at once; and what was acknowledged
//! (samples answered 204, deploys finished and listed) survives a graceful restart.
//! Speed targets belong to `cargo bench --bench responsive`; the bounds here are generous.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;

use crate::harness::{self, series, write_request, Deploywatch};

const SENDERS: usize = 6;
const STEPS: i64 = 96;
const SERIES_PER_SENDER: usize = 150;
/// A new version every this many steps: its deploy starts, the one before finishes.
const STEPS_PER_VERSION: i64 = 12;
const STEP_MS: i64 = 15_000;
/// Generous: a probe on a loaded debug build on a shared machine.
const PROBE_BOUND: Duration = Duration::from_secs(5);

fn finished(dw: &Deploywatch) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = dw.get_json("/api/v1/deploys?service=shop")
        ["deploys"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|d| d["phase"] == "done")
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["version"].as_str().unwrap().to_string(),
                d["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn issue_15_ready_and_gates_answer_while_senders_push_in_parallel_and_a_restart_loses_nothing() {
    let mut dw = Deploywatch::start();
    // Event time ends about now.
    let t0 = deploywatch::now_ms() - STEPS * STEP_MS;
    let pushing = AtomicBool::new(true);
    let accepted = AtomicU64::new(0);
    let barrier = Barrier::new(SENDERS);
    let started = Instant::now();
    let (probes, slowest) = std::thread::scope(|s| {
        for sender in 0..SENDERS {
            let (dw, barrier, accepted) = (&dw, &barrier, &accepted);
            s.spawn(move || {
                for k in 0..STEPS {
                    let t = t0 + k * STEP_MS;
                    let version = format!("v{}", k / STEPS_PER_VERSION);
                    let req = write_request(
                        (0..SERIES_PER_SENDER)
                            .map(|i| {
                                let code = if i % 10 == 0 { "500" } else { "200" };
                                let (instance, route) =
                                    (format!("{sender}-{}:80", i / 10), format!("/r{}", i % 10));
                                series(
                                    &[
                                        ("__name__", "http_requests_total"),
                                        ("code", code),
                                        ("instance", &instance),
                                        ("job", "shop"),
                                        ("route", &route),
                                        ("version", &version),
                                    ],
                                    &[(t, (k * 10) as f64)],
                                )
                            })
                            .collect(),
                    );
                    let (status, body) = dw.push_v1(&req);
                    assert_eq!(status, 204, "sender {sender}, step {k}: {body}");
                    accepted.fetch_add(SERIES_PER_SENDER as u64, Ordering::Relaxed);
                    // Prometheus' shards send one scrape's samples at about the same time.
                    barrier.wait();
                }
            });
        }
        let prober = s.spawn(|| {
            let mut probes = 0u32;
            let mut slowest = Duration::ZERO;
            while pushing.load(Ordering::Relaxed) {
                for path in ["/-/ready", "/-/healthy", "/api/v1/verdict?service=shop"] {
                    let t = Instant::now();
                    let res =
                        harness::request(Method::GET, &format!("{}{path}", dw.url()), &[], vec![]);
                    let took = t.elapsed();
                    assert_eq!(res.status, 200, "GET {path}: {}", res.text());
                    assert!(
                        took < PROBE_BOUND,
                        "GET {path} took {took:?} while pushes were in flight"
                    );
                    slowest = slowest.max(took);
                    probes += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (probes, slowest)
        });
        // The senders are joined when the scope ends; stop the prober once they are done.
        let deadline = Instant::now() + Duration::from_secs(300);
        while accepted.load(Ordering::Relaxed) < (SENDERS * SERIES_PER_SENDER) as u64 * STEPS as u64
        {
            assert!(
                Instant::now() < deadline,
                "the pushes did not finish within 300 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pushing.store(false, Ordering::Relaxed);
        prober.join().unwrap()
    });
    eprintln!(
        "offpath: {} pushes from {SENDERS} senders in {:?}; {probes} probes, the slowest {slowest:?}",
        SENDERS as i64 * STEPS,
        started.elapsed()
    );
    assert!(probes >= 3, "the probes ran while the pushes did");

    // Everything acknowledged is there: every sample, every finished deploy.
    let acknowledged = accepted.load(Ordering::Relaxed) as f64;
    assert_eq!(dw.samples_total("appended"), acknowledged, "no sample lost");
    let versions = (STEPS / STEPS_PER_VERSION) as usize;
    let before = finished(&dw);
    // v0 ran before deploywatch saw the service; each later version's deploy finished when
    // the next one started, but the last.
    assert_eq!(before.len(), versions - 2, "{before:?}");
    let current: Value = dw.get_json("/api/v1/verdict?service=shop");
    assert_eq!(
        current["version"],
        format!("v{}", versions - 1),
        "{current}"
    );
    let reports: Vec<Value> = before
        .iter()
        .map(|(id, ..)| dw.get_json(&format!("/api/v1/deploys/{id}/report?format=json")))
        .collect();

    let (status, took) = dw.terminate(Duration::from_secs(40));
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(35), "shutdown took {took:?}");
    dw.restart();
    assert_eq!(
        dw.must_metric("deploywatch_restored_samples", &[]),
        acknowledged,
        "every acknowledged sample is back"
    );
    assert_eq!(finished(&dw), before, "every finished deploy is back");
    for ((id, ..), report) in before.iter().zip(&reports) {
        assert_eq!(
            &dw.get_json(&format!("/api/v1/deploys/{id}/report?format=json")),
            report,
            "the report of {id}"
        );
    }
    let history = std::fs::read_to_string(dw.dir().join("data").join("deploys.jsonl")).unwrap();
    assert_eq!(history.lines().count(), before.len(), "{history}");
}
