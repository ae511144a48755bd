//! Trustworthy in line: crash and resume (`kill -9` in the middle of a canary), corrupt
//! snapshots at start, a bounded soak with a cardinality explosion, and concurrent
//! pushers, reloads and scrapes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::alerts::alerts_of;
use crate::harness::{self, wait_for, Alertmanager, Deploywatch};
use crate::sim::{
    deploy, register_deploy, Driver, Effect, Feed, Service, Signal, Sim, Who, MIN, SEC,
};

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
    wait_for(
        "a snapshot after the last push",
        Duration::from_secs(20),
        || {
            let t = dw.must_metric("deploywatch_snapshot_last_success_timestamp_seconds", &[]);
            if t > since {
                Ok(())
            } else {
                Err(format!("last snapshot at {t}, need > {since}"))
            }
        },
    );
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
    let mut dw =
        Deploywatch::start_with_args(Some(CONFIG), &[format!("--alertmanager.url={}", am.url())]);
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
    assert_eq!(
        held(&dw),
        held_before,
        "nothing lost: the snapshot followed the last push"
    );
    let resumed = deploy(&dw, &id).expect("the deploy survives the crash");
    assert_eq!(resumed["started_at"], T);
    assert_eq!(resumed["baseline_version"], "v1");
    assert_eq!(
        resumed["source"], "api",
        "the registration came back from the journal"
    );
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
    let delta =
        after_first["verdict_at"].as_i64().unwrap() - reference["verdict_at"].as_i64().unwrap();
    eprintln!(
        "crash 1 (during the warm-up): verdict_at differs from the uninterrupted run by {delta} ms"
    );
    assert!(
        delta.abs() <= 15_000,
        "verdict_at off by {delta} ms: {after_first:#}"
    );
    wait_for(
        "Alertmanager to list the rollback alert",
        Duration::from_secs(20),
        || {
            let a = alerts_of(&am, &id)?;
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
    let alerts = alerts_of(&am, &id).unwrap();
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
    assert!(
        ev.contains(&"alert_firing".into()),
        "the alert event survives: {ev:?}"
    );
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
        assert!(
            data.join("snapshot.bin.corrupt").exists(),
            "{what}: moved aside"
        );
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
    assert_eq!(
        dw.must_metric("deploywatch_snapshot_corrupt_total", &[]),
        1.0
    );
}

/// Verdict and verdict time of each simulated deploy, played alone or beside other load.
fn play_canaries(dw: &Deploywatch) -> Vec<(String, Value, Value)> {
    let bad = bad_canary(9);
    let clean = Service::new("search", 10, 3).canary("v2", T, 1);
    let mut driver = Driver::new(
        dw,
        Feed::new(
            vec![crate::sim::Sim::new(bad), crate::sim::Sim::new(clean)],
            5 * SEC,
        ),
    );
    driver.run_to(T + 20 * MIN);
    ["checkout", "search"]
        .iter()
        .map(|s| {
            let d = crate::sim::find_deploy(dw, s, "v2").expect("a detected deploy");
            (s.to_string(), d["verdict"].clone(), d["verdict_at"].clone())
        })
        .collect()
}

fn vm_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} of {pid}"))
}

#[test]
fn soak_a_minute_with_a_cardinality_explosion_stays_bounded_and_spares_other_services() {
    const MAX_ACTIVE: u64 = 40_000;
    const PER_SERVICE: u64 = 10_000;
    // The bound the limits give: 4 KiB per series at most (index, labels, a ring of a few
    // hundred samples), plus the process itself.
    const RSS_BOUND_KIB: u64 = MAX_ACTIVE * 4 + 96 * 1024;
    // The load generator's event time runs far ahead of the wall clock (15 s per round):
    // the soak is about bounded memory, not the time bounds of issue 15 (tests/it/hostile.rs).
    let config = format!(
        "storage:\n  snapshot_interval: 5s\nlimits:\n  max_active_series: {MAX_ACTIVE}\n  max_series_per_service: {PER_SERVICE}\n  max_time_ahead: 366d\n"
    );
    let reference = play_canaries(&Deploywatch::start_with_config(&config));
    assert_eq!(reference[0].1, "rollback", "{reference:?}");
    assert_eq!(reference[1].1, "pass", "{reference:?}");

    let dw = Deploywatch::start_with_config(&config);
    let loadgen = std::process::Command::new(env!("CARGO_BIN_EXE_deploywatch-loadgen"))
        .args([
            &format!("--url={}/api/v1/write", dw.url()),
            "--series=12000",
            "--services=3",
            "--versions=1",
            "--series-per-request=500",
            "--connections=2",
            "--threads=1",
            "--duration=60s",
            "--explode=50",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting the load generator");
    // The judged services play beside the load and the explosion.
    let during = play_canaries(&dw);
    let out = loadgen.wait_with_output().expect("the load generator ends");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("loadgen JSON");
    let peak_kib = vm_kib(dw.pid(), "VmHWM:");
    eprintln!(
        "soak: {} requests ({:?}), {} samples sent; peak RSS {} MiB (bound {} MiB)",
        summary["requests"],
        summary["by_status"],
        summary["samples_sent"],
        peak_kib / 1024,
        RSS_BOUND_KIB / 1024
    );
    assert!(
        peak_kib < RSS_BOUND_KIB,
        "peak RSS {peak_kib} KiB over {RSS_BOUND_KIB}"
    );
    assert_eq!(
        during, reference,
        "the other services' verdicts are unaffected"
    );
    assert_eq!(summary["connection_errors"], 0, "{summary}");
    assert_eq!(
        summary["requests_failed"].as_u64(),
        summary["by_status"]["400"].as_u64().or(Some(0)),
        "only the explosion's 400s fail: {summary}"
    );

    // The explosion is held to its service's limit; the rest is counted as rejected.
    let services = dw.services();
    let exploding = harness::series_by_version(&services, "exploding");
    assert_eq!(
        exploding.values().sum::<u64>(),
        PER_SERVICE,
        "{exploding:?}"
    );
    let rejected = dw.must_metric("deploywatch_store_series_rejected_total", &[]);
    assert!(rejected > 0.0);
    assert_eq!(
        dw.samples_total("series_limit"),
        rejected,
        "one sample per rejected series"
    );
    assert_eq!(
        dw.metric(
            "deploywatch_ingest_rejected_requests_total",
            &[("reason", "series_limit")]
        ),
        summary["by_status"]["400"].as_f64(),
        "every 400 is counted under its reason"
    );
    // Every sample of the steady load was stored, in the 204s and beside the refused
    // series in the 400s.
    let sent = summary["samples_sent"].as_f64().unwrap();
    let sim_samples = dw.samples_total("appended") - sent - PER_SERVICE as f64;
    assert!(
        sim_samples > 0.0,
        "appended {} vs sent {sent}",
        dw.samples_total("appended")
    );
    let steady: u64 = ["service-0", "service-1", "service-2"]
        .iter()
        .map(|s| {
            harness::series_by_version(&services, s)
                .values()
                .sum::<u64>()
        })
        .sum();
    assert_eq!(steady, 12_000, "every series of the steady load is held");
}

#[test]
fn concurrent_pushers_reloads_and_scrapes_lose_nothing_and_never_deadlock() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const PUSHERS: usize = 8;
    const PUSHES: i64 = 200;
    const SERIES: usize = 50;
    let dw = Deploywatch::start_with_config(CONFIG);
    let config_path = dw.dir().join("deploywatch.yml");
    let pushing = AtomicBool::new(true);
    let reloads = AtomicU64::new(0);
    let scrapes = AtomicU64::new(0);
    let (done, finished) = std::sync::mpsc::channel::<usize>();
    let started = Instant::now();
    std::thread::scope(|s| {
        for p in 0..PUSHERS {
            let (dw, done) = (&dw, done.clone());
            s.spawn(move || {
                for k in 0..PUSHES {
                    let ts = crate::sim::EPOCH + k * 15 * SEC;
                    let series = (0..SERIES)
                        .map(|i| {
                            let (job, pusher, i) =
                                (format!("svc-{}", p % 4), p.to_string(), i.to_string());
                            harness::series(
                                &[
                                    ("__name__", "m"),
                                    ("i", &i),
                                    ("job", &job),
                                    ("pusher", &pusher),
                                ],
                                &[(ts, k as f64)],
                            )
                        })
                        .collect();
                    let (status, body) = dw.push_v1(&harness::write_request(series));
                    assert_eq!(status, 204, "pusher {p}, push {k}: {body}");
                }
                done.send(p).unwrap();
            });
        }
        s.spawn(|| {
            let mut k = 0;
            while pushing.load(Ordering::Relaxed) {
                k += 1;
                let every = if k % 2 == 0 { "1s" } else { "2s" };
                std::fs::write(
                    &config_path,
                    format!("storage:\n  snapshot_interval: {every}\n"),
                )
                .unwrap();
                let res = harness::request(
                    hyper::Method::POST,
                    &format!("{}/-/reload", dw.url()),
                    &[],
                    vec![],
                );
                assert_eq!(res.status, 200, "reload: {}", res.text());
                reloads.fetch_add(1, Ordering::Relaxed);
            }
        });
        for path in ["/metrics", "/api/v1/services", "/api/v1/deploys", "/"] {
            let (dw, pushing, scrapes) = (&dw, &pushing, &scrapes);
            s.spawn(move || {
                while pushing.load(Ordering::Relaxed) {
                    let res = harness::request(
                        hyper::Method::GET,
                        &format!("{}{path}", dw.url()),
                        &[],
                        vec![],
                    );
                    assert_eq!(res.status, 200, "GET {path}");
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // The watchdog: a deadlock would hang the pushers; kill the process so they fail.
        for _ in 0..PUSHERS {
            if finished.recv_timeout(Duration::from_secs(120)).is_err() {
                pushing.store(false, Ordering::Relaxed);
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &dw.pid().to_string()])
                    .status();
                panic!("pushers did not finish within 120 s: a deadlock?");
            }
        }
        pushing.store(false, Ordering::Relaxed);
    });
    eprintln!(
        "concurrency: {} pushes, {} reloads, {} scrapes in {:?}",
        PUSHERS as i64 * PUSHES,
        reloads.load(Ordering::Relaxed),
        scrapes.load(Ordering::Relaxed),
        started.elapsed()
    );
    let expected = (PUSHERS * SERIES) as f64 * PUSHES as f64;
    assert_eq!(dw.samples_total("appended"), expected, "no sample lost");
    assert_eq!(dw.samples_total("duplicate"), 0.0);
    assert_eq!(dw.samples_total("out_of_order"), 0.0);
    assert_eq!(
        dw.must_metric("deploywatch_store_active_series", &[]),
        (PUSHERS * SERIES) as f64
    );
    let services = dw.services();
    for svc in 0..4 {
        let s = harness::service(&services, &format!("svc-{svc}")).expect("a service");
        assert_eq!(
            s["newest_sample_at"],
            crate::sim::EPOCH + (PUSHES - 1) * 15 * SEC,
            "{s}"
        );
    }
    assert!(reloads.load(Ordering::Relaxed) > 0 && scrapes.load(Ordering::Relaxed) > 0);
    assert_eq!(
        dw.must_metric(
            "deploywatch_config_reloads_total",
            &[("outcome", "success")]
        ),
        reloads.load(Ordering::Relaxed) as f64
    );
}

#[test]
fn sigterm_writes_a_final_snapshot_and_a_restart_loses_nothing() {
    // The default 30 s interval: no periodic snapshot happens during the test.
    let mut dw = Deploywatch::start();
    let mut driver = Driver::new(&dw, Feed::one(bad_canary(3), 5 * SEC));
    driver.run_to(crate::sim::EPOCH + 10 * MIN);
    drop(driver);
    let appended = dw.samples_total("appended");
    let (status, took) = dw.terminate(Duration::from_secs(40));
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(35), "shutdown took {took:?}");
    assert!(
        dw.logs().contains("Final snapshot written."),
        "{}",
        dw.logs()
    );
    dw.restart();
    assert_eq!(
        dw.must_metric("deploywatch_restored_samples", &[]),
        appended
    );
    assert_eq!(
        dw.must_metric("deploywatch_snapshot_corrupt_total", &[]),
        0.0
    );
}

/// Issue 16: a restart replays the snapshot through the judge, which finds the past again:
/// the deploy, its verdicts, its firing alert. They were logged (and the alert recorded)
/// when they happened; the restarted process says none of them again as if new — no
/// `Detected a deploy.`, `Verdict changed.` or `Alert DeployRegression is firing.` line for
/// them and no second `alert_firing` event — while what happens after the restart (another
/// service's deploy) is logged as usual.
#[test]
fn issue_16_a_restart_does_not_log_the_past_again() {
    let am = Alertmanager::start();
    let mut dw =
        Deploywatch::start_with_args(Some(CONFIG), &[format!("--alertmanager.url={}", am.url())]);
    // `checkout` deploys a bad canary at T (detected, not registered); `payments` one at
    // T + 3 minutes, after the restart.
    let later = T + 3 * MIN;
    let payments = Service::new("payments", 74, 3)
        .canary("v2", later, 1)
        .effect(Effect::step(
            Who::Version("v2".into()),
            Signal::Errors,
            10.0,
            later,
            i64::MAX,
        ));
    let feed = Feed::new(vec![Sim::new(bad_canary(73)), Sim::new(payments)], 5 * SEC);
    let mut driver = Driver::new(&dw, feed);
    driver.run_to(T);
    let first = loop {
        let next = driver.now() + 5 * SEC;
        assert!(next < later, "no verdict for checkout");
        driver.run_to(next);
        if let Ok(d) = crate::sim::find_deploy(&dw, "checkout", "v2") {
            if d["verdict"] != "pending" {
                break d;
            }
        }
    };
    let id = first["id"].as_str().unwrap().to_string();
    let alert_events = |d: &Value| {
        events(d)
            .iter()
            .filter(|e| e.as_str() == "alert_firing")
            .count()
    };
    wait_for(
        "the alert to fire",
        Duration::from_secs(20),
        || match alert_events(&deploy(&dw, &id)?) {
            0 => Err("no alert_firing event yet".to_string()),
            n => Ok(n),
        },
    );
    let feed = driver.feed;
    let before = deploy(&dw, &id).unwrap();
    let said = |dw: &Deploywatch, what: &str| dw.logs().matches(what).count();
    assert_eq!(said(&dw, "Detected a deploy."), 1);
    assert!(said(&dw, "Verdict changed.") >= 1);
    assert_eq!(said(&dw, "Alert DeployRegression is firing."), 1);
    wait_snapshot_after(&dw, std::time::SystemTime::now());
    dw.kill9();
    dw.restart();
    let url = am.url();
    wait_for(
        "the restarted deploywatch to re-send the firing alert",
        Duration::from_secs(20),
        || match dw.metric("deploywatch_alerts_sent_total", &[("alertmanager", &url)]) {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("sent {other:?}")),
        },
    );
    let restored = deploy(&dw, &id).unwrap();
    assert_eq!(restored["verdict"], before["verdict"]);
    let logs = dw.logs();
    assert!(logs.contains("State restored."), "{logs}");
    for past in [
        "Detected a deploy.",
        "Verdict changed.",
        "Alert DeployRegression is firing.",
    ] {
        assert!(
            !logs.contains(past),
            "{past:?} logged again after the restart:\n{logs}"
        );
    }
    assert_eq!(
        alert_events(&restored),
        alert_events(&before),
        "the alert is not recorded as firing anew: {:#}",
        restored["timeline"]
    );
    // What happens after the restart is news.
    let mut driver = Driver::new(&dw, feed);
    let news = loop {
        let next = driver.now() + 5 * SEC;
        assert!(
            next < later + 5 * MIN,
            "no payments verdict after the restart"
        );
        driver.run_to(next);
        if let Ok(d) = crate::sim::find_deploy(&dw, "payments", "v2") {
            if d["verdict"] != "pending" {
                break d;
            }
        }
    };
    let news_id = news["id"].as_str().unwrap();
    let logs = dw.logs();
    let lines = |what: &str| -> Vec<&str> { logs.lines().filter(|l| l.contains(what)).collect() };
    let detected = lines("Detected a deploy.");
    assert!(
        detected.len() == 1 && detected[0].contains(news_id),
        "{detected:?}"
    );
    let verdicts = lines("Verdict changed.");
    assert!(
        !verdicts.is_empty() && verdicts.iter().all(|l| l.contains(news_id)),
        "{verdicts:?}"
    );
}

/// Native histograms survive a crash: a canary three times slower, its latency as native
/// histograms, is rolled back on them after a `kill -9` in its warm-up, with every sample
/// (floats and histograms) replayed from the snapshot.
#[test]
fn kill_9_keeps_native_histograms_and_the_slow_canary_is_still_rolled_back() {
    let end = T + 10 * MIN;
    let mut svc = Service::new("checkout", 73, 3)
        .canary("v2", T, 1)
        .effect(Effect::step(
            Who::Version("v2".into()),
            Signal::Latency,
            3.0,
            T,
            i64::MAX,
        ));
    svc.native = deploywatch::demo::sim::Native::All;
    let held_all = |dw: &Deploywatch| {
        held(dw)
            + dw.must_metric(
                "deploywatch_ingest_histogram_samples_total",
                &[("outcome", "appended")],
            )
    };
    let mut dw = Deploywatch::start_with_config(CONFIG);
    let mut driver = Driver::new(&dw, Feed::one(svc, 5 * SEC));
    driver.run_to(T);
    let id = register(&dw);
    driver.run_to(T + 60 * SEC);
    let mut feed = driver.feed;
    let histograms = dw.must_metric(
        "deploywatch_ingest_histogram_samples_total",
        &[("outcome", "appended")],
    );
    assert!(histograms > 0.0, "no native histogram kept");
    wait_snapshot_after(&dw, std::time::SystemTime::now());
    let held_before = held_all(&dw);
    dw.kill9();
    dw.restart();
    assert_eq!(
        held_all(&dw),
        held_before,
        "the snapshot replayed every float and histogram sample"
    );
    {
        let mut driver = Driver::new(&dw, feed);
        while deploy(&dw, &id).unwrap()["verdict"] != "rollback" {
            assert!(
                driver.now() < end,
                "no rollback after the restart: {:#}",
                deploy(&dw, &id).unwrap()
            );
            let next = driver.now() + 5 * SEC;
            driver.run_to(next);
        }
        feed = driver.feed;
    }
    let _ = feed;
    let d = deploy(&dw, &id).unwrap();
    let latency = d["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "latency_p99")
        .unwrap();
    assert_eq!(latency["verdict"], "rollback", "{d:#}");
    assert_eq!(latency["histogram"], "native", "{d:#}");
}
