//! Trustworthy in line: crash and resume (`kill -9` in the middle of a canary), corrupt
//! snapshots at start, a bounded soak with a cardinality explosion, and concurrent
//! pushers, reloads and scrapes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{self, wait_for, Alertmanager, Deploywatch};
use crate::sim::{deploy, register_deploy, Driver, Effect, Feed, Service, Signal, Who, MIN, SEC};

/// The deploy happens 30 minutes of event time after the simulator's epoch.
const T: i64 = crate::sim::EPOCH + 30 * MIN;
/// Snapshots every second, so a test can wait for one.
const CONFIG: &str = "storage:\n  snapshot_interval: 1s\n";

/// A canary whose errors are ×10 from the deploy on.
fn bad_canary(seed: u64) -> Service {
    Service::new("checkout", seed, 3)
        .canary("v2", T, 1)
        .effect(Effect::step(
            Who::Version("v2".into()),
            Signal::Errors,
            10.0,
            T,
            i64::MAX,
        ))
}

fn register(dw: &Deploywatch) -> String {
    register_deploy(
        dw,
        &json!({"service": "checkout", "version": "v2", "baseline_version": "v1",
                "strategy": "canary", "at": T, "commit": "3f2c9e1",
                "changes": [{"component": "redis-pool", "summary": "pool size 50 -> 500"}]}),
    )
    .expect("registering the deploy")
}

/// Samples the store holds: appended by pushes plus replayed from a snapshot at start.
fn held(dw: &Deploywatch) -> f64 {
    dw.samples_total("appended") + dw.must_metric("deploywatch_restored_samples", &[])
}

/// Waits until a snapshot was written after `since` (wall clock).
fn wait_snapshot_after(dw: &Deploywatch, since: std::time::SystemTime) {
    let since = since
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    wait_for("a snapshot after the last push", Duration::from_secs(20), || {
        let t = dw.must_metric("deploywatch_snapshot_last_success_timestamp_seconds", &[]);
        if t > since {
            Ok(())
        } else {
            Err(format!("last snapshot at {t}, need > {since}"))
        }
    });
}

fn events(d: &Value) -> Vec<String> {
    d["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn kill_9_mid_canary_resumes_with_baseline_and_timeline_and_resends_the_alert() {
    let end = T + 8 * MIN;
    // The uninterrupted run.
    let reference = {
        let dw = Deploywatch::start_with_config(CONFIG);
        let mut driver = Driver::new(&dw, Feed::one(bad_canary(71), 5 * SEC));
        driver.run_to(T);
        let id = register(&dw);
        driver.run_to(end);
        deploy(&dw, &id).expect("the reference deploy")
    };
    assert_eq!(reference["verdict"], "rollback", "{reference:#}");

    let am = Alertmanager::start();
    let mut dw = Deploywatch::start_with_args(
        Some(CONFIG),
        &[format!("--alertmanager.url={}", am.url())],
    );
    let mut feed = Feed::one(bad_canary(71), 5 * SEC);
    let id;
    {
        let mut driver = Driver::new(&dw, feed);
        driver.run_to(T);
        id = register(&dw);
        // Into the warm-up: the deploy is judged, no verdict yet.
        driver.run_to(T + 30 * SEC);
        feed = driver.feed;
    }
    assert_eq!(deploy(&dw, &id).unwrap()["verdict"], "pending");
    // 1. A crash right after a snapshot covered every accepted sample.
    wait_snapshot_after(&dw, std::time::SystemTime::now());
    let held_before = held(&dw);
    dw.kill9();
    dw.restart();
    assert!(
        dw.logs().contains("State restored."),
        "the restart says it restored: {}",
        dw.logs()
    );
    assert_eq!(held(&dw), held_before, "nothing lost: the snapshot followed the last push");
    let resumed = deploy(&dw, &id).expect("the deploy survives the crash");
    assert_eq!(resumed["started_at"], T);
    assert_eq!(resumed["baseline_version"], "v1");
    assert_eq!(resumed["source"], "api", "the registration came back from the journal");
    let ev = events(&resumed);
    assert!(
        ev.contains(&"deploy_started".into()) && ev.contains(&"resumed".into()),
        "{ev:?}"
    );
    {
        let mut driver = Driver::new(&dw, feed);
        while deploy(&dw, &id).unwrap()["verdict"] != "rollback" {
            assert!(driver.now() < end, "no rollback after the restart");
            let next = driver.now() + 5 * SEC;
            driver.run_to(next);
        }
        feed = driver.feed;
    }
    let after_first = deploy(&dw, &id).unwrap();
    let delta = after_first["verdict_at"].as_i64().unwrap() - reference["verdict_at"].as_i64().unwrap();
    eprintln!("crash 1 (during the warm-up): verdict_at differs from the uninterrupted run by {delta} ms");
    assert!(delta.abs() <= 15_000, "verdict_at off by {delta} ms: {after_first:#}");
    wait_for(
        "Alertmanager to list the rollback alert",
        Duration::from_secs(20),
        || {
            let a: Vec<Value> = am
                .alerts()?
                .into_iter()
                .filter(|a| a["labels"]["deploy_id"] == id.as_str())
                .collect();
            match &a[..] {
                [one] if one["labels"]["action"] == "rollback" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );

    // 2. A crash with no snapshot awaited, right after a burst of pushes: what arrived
    //    after the last snapshot (at most one snapshot interval) is lost, nothing more.
    let burst = {
        let mut driver = Driver::new(&dw, feed);
        let next = driver.now() + 30 * SEC;
        driver.run_to(next);
        feed = driver.feed;
        driver.samples_sent as f64
    };
    let held_before = held(&dw);
    let killed_at = Instant::now();
    dw.kill9();
    dw.restart();
    let lost = held_before - held(&dw);
    eprintln!(
        "crash 2 (no snapshot awaited): {lost} of {held_before} samples lost ({:?} to restart)",
        killed_at.elapsed()
    );
    assert!(
        (0.0..=burst).contains(&lost),
        "lost {lost} samples; only the last burst of {burst} may be"
    );
    // The process that lost its memory re-sends the firing alert.
    let url = am.url();
    wait_for(
        "the restarted deploywatch to re-send the firing alert",
        Duration::from_secs(20),
        || match dw.metric("deploywatch_alerts_sent_total", &[("alertmanager", &url)]) {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("sent {other:?}")),
        },
    );
    let alerts: Vec<Value> = am
        .alerts()
        .unwrap()
        .into_iter()
        .filter(|a| a["labels"]["deploy_id"] == id.as_str())
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["action"], "rollback");
    {
        let mut driver = Driver::new(&dw, feed);
        driver.run_to(end);
    }
    let last = deploy(&dw, &id).unwrap();
    assert_eq!(last["verdict"], reference["verdict"]);
    let delta = last["verdict_at"].as_i64().unwrap() - reference["verdict_at"].as_i64().unwrap();
    assert!(delta.abs() <= 15_000, "verdict_at off by {delta} ms");
    assert_eq!(last["id"], reference["id"]);
    let ev = events(&last);
    assert!(ev.contains(&"alert_firing".into()), "the alert event survives: {ev:?}");
}

#[test]
fn a_corrupt_or_truncated_snapshot_is_reported_counted_and_skipped() {
    let mut dw = Deploywatch::start_with_config(CONFIG);
    let mut driver = Driver::new(&dw, Feed::one(bad_canary(5), 5 * SEC));
    driver.run_to(crate::sim::EPOCH + 5 * MIN);
    drop(driver);
    wait_snapshot_after(&dw, std::time::SystemTime::now());
    let (status, _) = dw.terminate(Duration::from_secs(30));
    assert!(status.success());
    let data = dw.dir().join("data");
    let snap = data.join("snapshot.bin");
    let good = std::fs::read(&snap).expect("a final snapshot");
    for (what, bytes) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("flipped", {
            let mut b = good.clone();
            let at = b.len() / 3;
            b[at] ^= 0x5a;
            b
        }),
    ] {
        std::fs::write(&snap, &bytes).unwrap();
        let _ = std::fs::remove_file(data.join("snapshot.prev.bin"));
        dw.restart();
        let logs = dw.logs();
        assert!(
            logs.contains("Skipping an unreadable snapshot") && logs.contains("corrupt"),
            "{what}: the start says so: {logs}"
        );
        assert_eq!(
            dw.must_metric("deploywatch_snapshot_corrupt_total", &[]),
            1.0,
            "{what}"
        );
        assert!(data.join("snapshot.bin.corrupt").exists(), "{what}: moved aside");
        // It runs: a push is accepted and the service is seen.
        let (status, body) = dw.push_v1(&harness::write_request(vec![harness::series(
            &[("__name__", "up"), ("job", "after"), ("instance", "x")],
            &[(crate::sim::EPOCH, 1.0)],
        )]));
        assert_eq!(status, 204, "{body}");
        dw.kill9();
    }
    // With the newest snapshot damaged, the previous one is used.
    std::fs::write(data.join("snapshot.prev.bin"), &good).unwrap();
    std::fs::write(&snap, &good[..10]).unwrap();
    dw.restart();
    assert!(dw.must_metric("deploywatch_restored_series", &[]) > 0.0);
    assert_eq!(dw.must_metric("deploywatch_snapshot_corrupt_total", &[]), 1.0);
}
