//! Alerts to Alertmanager (issue #4). Two halves:
//! - end to end: the deploywatch binary, fed by the scenario simulator, against Debian's
//!   Alertmanager 0.25 on loopback (labels and annotations as listed by `GET /api/v2/alerts`,
//!   resolution, an Alertmanager down and back, two Alertmanagers, a hanging one);
//! - timing on paused tokio time: the library's `AlertService` against an in-test HTTP
//!   server that records requests and answers what the test says (resend, endsAt, backoff,
//!   no retry on 4xx, batches of at most 64, shutdown flush).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};

use deploywatch::alert::{AlertConfig, AlertService, DeploySource};
use deploywatch::deploy::{DeployJson, Phase, RuleJson, SideJson, Source, Strategy, Verdict};
use deploywatch::export::Metrics;

use crate::harness::{self, wait_for, Alertmanager, Deploywatch, AMTOOL_BIN};
use crate::sim::{deploy, register_deploy, Driver, Effect, Feed, Service, Signal, Who, MIN, SEC};

/// The deploy happens 30 minutes of event time after the simulator's epoch.
const T: i64 = crate::sim::EPOCH + 30 * MIN;
const EXTERNAL_URL: &str = "http://deploywatch.example:10997";

// ---------------------------------------------------------------------------------------
// End to end, with a real Alertmanager
// ---------------------------------------------------------------------------------------

fn start_deploywatch(ams: &[String]) -> Deploywatch {
    let mut args: Vec<String> = ams
        .iter()
        .map(|u| format!("--alertmanager.url={u}"))
        .collect();
    args.push(format!("--web.external-url={EXTERNAL_URL}"));
    Deploywatch::start_with_args(None, &args)
}

/// A canary whose errors are ×10 from the deploy on: rollback within about a minute of
/// event time after the warm-up.
fn bad_canary(name: &str, seed: u64) -> Service {
    Service::new(name, seed, 3)
        .canary("v2", T, 1)
        .effect(Effect::step(
            Who::Version("v2".into()),
            Signal::Errors,
            10.0,
            T,
            i64::MAX,
        ))
}

/// Wall time of each push window, to show ingest is not slowed by alerting.
#[derive(Default)]
struct Latency {
    windows: Vec<Duration>,
}

impl Latency {
    fn max(&self) -> Duration {
        self.windows.iter().copied().max().unwrap_or_default()
    }
}

/// Plays the service up to the deploy, registers it and plays on until its verdict is
/// `rollback`; returns the deploy id. `before_deploy` runs between the warm-up and the
/// registration (e.g. to stop Alertmanager). `warmup` and `latency` get the push windows'
/// wall times before and after the registration.
fn play_to_rollback(
    driver: &mut Driver,
    service: &str,
    before_deploy: impl FnOnce(),
    warmup: &mut Latency,
    latency: &mut Latency,
) -> String {
    while driver.now() < T {
        let next = driver.now() + 5 * SEC;
        let t0 = Instant::now();
        driver.run_to(next.min(T));
        warmup.windows.push(t0.elapsed());
    }
    before_deploy();
    let id = register_deploy(
        driver.dw,
        &json!({"service": service, "version": "v2", "baseline_version": "v1",
                "strategy": "canary", "at": T, "commit": "3f2c9e1", "author": "ci"}),
    )
    .expect("registering the deploy");
    loop {
        let next = driver.now() + 5 * SEC;
        let t0 = Instant::now();
        driver.run_to(next);
        latency.windows.push(t0.elapsed());
        let d = deploy(driver.dw, &id).expect("reading the deploy");
        if d["verdict"] == "rollback" {
            break;
        }
        assert!(
            driver.now() < T + 10 * MIN,
            "the bad canary did not reach rollback within 10 minutes of event time: {d:#}"
        );
    }
    id
}

/// Active alerts of `deploy_id` in Alertmanager.
pub(crate) fn alerts_of(am: &Alertmanager, deploy_id: &str) -> Result<Vec<Value>, String> {
    Ok(am
        .alerts()?
        .into_iter()
        .filter(|a| a["labels"]["deploy_id"] == deploy_id)
        .collect())
}

/// Waits until Alertmanager lists exactly the rollback alert of `deploy_id` as active.
fn wait_rollback_alert(am: &Alertmanager, deploy_id: &str, timeout: Duration) -> Value {
    wait_for(
        &format!(
            "Alertmanager {} to list the rollback alert of {deploy_id}",
            am.url()
        ),
        timeout,
        || {
            let a = alerts_of(am, deploy_id)?;
            match &a[..] {
                [one] if one["labels"]["action"] == "rollback" => Ok(one.clone()),
                other => Err(format!("alerts of the deploy: {other:?}")),
            }
        },
    )
}

fn parse_rfc3339(s: &Value) -> std::time::SystemTime {
    humantime::parse_rfc3339_weak(s.as_str().expect("a time string"))
        .unwrap_or_else(|e| panic!("time {s}: {e}"))
}

fn timeline_events(dw: &Deploywatch, id: &str) -> Vec<String> {
    deploy(dw, id).expect("reading the deploy")["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn regression_alert_reaches_alertmanager_with_its_labels_and_resolves_when_superseded() {
    let am = Alertmanager::start();
    let dw = start_deploywatch(&[am.url()]);
    let mut driver = Driver::new(&dw, Feed::one(bad_canary("checkout", 401), 5 * SEC));
    let id = play_to_rollback(
        &mut driver,
        "checkout",
        || {},
        &mut Latency::default(),
        &mut Latency::default(),
    );

    let alert = wait_rollback_alert(&am, &id, Duration::from_secs(20));
    let labels = &alert["labels"];
    let want = json!({
        "alertname": "DeployRegression", "service": "checkout", "version": "v2",
        "baseline_version": "v1", "deploy_id": id, "severity": "critical", "action": "rollback"
    });
    assert_eq!(labels, &want, "labels of {alert:#}");
    let ann = &alert["annotations"];
    assert_eq!(ann["commit"], "3f2c9e1", "{alert:#}");
    assert_eq!(
        ann["report_url"],
        format!("{EXTERNAL_URL}/api/v1/deploys/{id}/report")
    );
    assert_eq!(
        alert["generatorURL"],
        format!("{EXTERNAL_URL}/deploys/{id}")
    );
    let summary = ann["summary"].as_str().unwrap_or("");
    assert!(
        summary.contains("checkout v2") && summary.contains("roll it back"),
        "{summary}"
    );
    let description = ann["description"].as_str().unwrap_or("");
    assert!(
        description.contains("error_rate (rollback): v1 ") && description.contains(" → v2 "),
        "the description gives the rule's before/after numbers: {description}"
    );
    assert!(
        description.contains("event time 2025-11-24T16:3"),
        "the description gives the verdict's event time: {description}"
    );
    assert!(ann["suspects"].is_string(), "{alert:#}");
    assert_eq!(alert["status"]["state"], "active", "{alert:#}");
    // Firing alerts end four resend intervals (4 × 1 m) after they were sent.
    let starts = parse_rfc3339(&alert["startsAt"]);
    let ends = parse_rfc3339(&alert["endsAt"]);
    let ahead = ends
        .duration_since(std::time::SystemTime::now())
        .expect("endsAt lies ahead");
    assert!(ahead > Duration::from_secs(200), "endsAt {ahead:?} ahead");
    assert!(starts <= std::time::SystemTime::now());
    assert!(timeline_events(&dw, &id).contains(&"alert_firing".to_string()));

    // A newer deploy supersedes the bad one: its alert is resolved in Alertmanager.
    let v3 = register_deploy(&dw, &json!({"service": "checkout", "version": "v3"}))
        .expect("registering v3");
    assert_ne!(v3, id);
    wait_for(
        "Alertmanager to see the alert resolved (no longer active)",
        Duration::from_secs(20),
        || match alerts_of(&am, &id)? {
            a if a.is_empty() => Ok(()),
            a => Err(format!("still active: {a:?}")),
        },
    );
    let events = timeline_events(&dw, &id);
    assert!(
        events.contains(&"alert_resolved".to_string()),
        "timeline: {events:?}"
    );
    let url = am.url();
    let sent = dw.must_metric("deploywatch_alerts_sent_total", &[("alertmanager", &url)]);
    assert!(sent >= 2.0, "sent {sent}");
    assert_eq!(
        dw.must_metric("deploywatch_alerts_failed_total", &[("alertmanager", &url)]),
        0.0
    );
    assert_eq!(
        dw.must_metric(
            "deploywatch_alerts_dropped_total",
            &[("alertmanager", &url)]
        ),
        0.0
    );
    assert_eq!(dw.must_metric("deploywatch_alertmanagers", &[]), 1.0);
}

#[test]
fn alertmanager_down_during_a_regression_gets_the_alert_when_back_and_ingest_stays_fast() {
    let mut am = Alertmanager::start();
    let url = am.url();
    let dw = start_deploywatch(std::slice::from_ref(&url));
    let mut driver = Driver::new(&dw, Feed::one(bad_canary("payments", 402), 5 * SEC));
    // Warm-up with Alertmanager up; then it goes away just before the deploy.
    let (mut up, mut down) = (Latency::default(), Latency::default());
    let id = play_to_rollback(&mut driver, "payments", || am.stop(), &mut up, &mut down);
    let down_max = down.max();

    // Deliveries fail and are retried; pushes keep going meanwhile.
    wait_for(
        "deploywatch to fail to deliver the alert",
        Duration::from_secs(20),
        || match dw.metric("deploywatch_alerts_failed_total", &[("alertmanager", &url)]) {
            Some(v) if v > 0.0 => Ok(()),
            v => Err(format!("failed_total {v:?}")),
        },
    );
    let mut slowest_push_while_down = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let next = driver.now() + 5 * SEC;
        let t0 = Instant::now();
        driver.run_to(next);
        slowest_push_while_down = slowest_push_while_down.max(t0.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        dw.must_metric("deploywatch_alerts_queue_length", &[("alertmanager", &url)]),
        1.0,
        "the queue holds the one alert's newest state"
    );
    assert!(
        dw.logs().contains("Cannot deliver alerts to Alertmanager"),
        "an actionable log line: {}",
        dw.logs()
    );

    // Back on the same port: the alert arrives at the next retry (backoff ≤ 5 s).
    am.restart();
    let back = Instant::now();
    let alert = wait_rollback_alert(&am, &id, Duration::from_secs(15));
    let took = back.elapsed();
    println!(
        "alert_after_alertmanager_back_ms={} slowest_push_window_up_ms={} slowest_push_window_down_ms={} slowest_push_window_later_ms={}",
        took.as_millis(),
        up.max().as_millis(),
        down_max.as_millis(),
        slowest_push_while_down.as_millis()
    );
    assert!(
        took < Duration::from_secs(8),
        "arrived {took:?} after Alertmanager was back"
    );
    let ends = parse_rfc3339(&alert["endsAt"]);
    assert!(
        ends > std::time::SystemTime::now() + Duration::from_secs(120),
        "the current state arrives (endsAt ahead), not a stale one: {alert:#}"
    );
    // Pushes answered fast while Alertmanager was down (a failed delivery is a refused
    // connection; sending is off the ingest path anyway).
    let bound = Duration::from_millis(1500).max(up.max() * 4);
    assert!(
        down_max < bound && slowest_push_while_down < bound,
        "push windows took up to {down_max:?} / {slowest_push_while_down:?} while Alertmanager was down (up: {:?})",
        up.max()
    );
    assert_eq!(
        dw.must_metric(
            "deploywatch_alerts_dropped_total",
            &[("alertmanager", &url)]
        ),
        0.0,
        "nothing lost"
    );
    wait_for("the queue to empty", Duration::from_secs(5), || {
        match dw.metric("deploywatch_alerts_queue_length", &[("alertmanager", &url)]) {
            Some(0.0) => Ok(()),
            v => Err(format!("queue length {v:?}")),
        }
    });
}

#[test]
fn both_alertmanagers_of_a_pair_receive_the_alert() {
    let a = Alertmanager::start();
    let b = Alertmanager::start();
    let dw = start_deploywatch(&[a.url(), b.url()]);
    let mut driver = Driver::new(&dw, Feed::one(bad_canary("cart", 403), 5 * SEC));
    let id = play_to_rollback(
        &mut driver,
        "cart",
        || {},
        &mut Latency::default(),
        &mut Latency::default(),
    );
    let x = wait_rollback_alert(&a, &id, Duration::from_secs(20));
    let y = wait_rollback_alert(&b, &id, Duration::from_secs(20));
    assert_eq!(x["labels"], y["labels"]);
    assert_eq!(x["annotations"], y["annotations"]);
    assert_eq!(x["startsAt"], y["startsAt"], "one alert, sent to both");
    assert_eq!(dw.must_metric("deploywatch_alertmanagers", &[]), 2.0);
}

#[test]
fn a_hanging_alertmanager_does_not_slow_ingest() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                held.lock().push(s);
            }
        });
    }
    let dw = start_deploywatch(&[url]);
    let mut driver = Driver::new(&dw, Feed::one(bad_canary("search", 404), 5 * SEC));
    let mut lat = Latency::default();
    let id = play_to_rollback(
        &mut driver,
        "search",
        || {},
        &mut Latency::default(),
        &mut lat,
    );
    // Keep pushing while a delivery is stuck.
    wait_for("deploywatch to connect", Duration::from_secs(10), || {
        if held.lock().is_empty() {
            Err("no connection yet".into())
        } else {
            Ok(())
        }
    });
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let next = driver.now() + 5 * SEC;
        let t0 = Instant::now();
        driver.run_to(next);
        slowest = slowest.max(t0.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(1500),
        "push windows took up to {slowest:?} with a hanging Alertmanager (before: {:?})",
        lat.max()
    );
    assert_eq!(deploy(&dw, &id).unwrap()["verdict"], "rollback");
}

#[test]
fn sigterm_flushes_pending_alerts_within_a_bounded_time() {
    // Alertmanager up: the verdict reached just before SIGTERM is delivered before exit.
    let am = Alertmanager::start();
    let mut dw = start_deploywatch(&[am.url()]);
    let mut driver = Driver::new(&dw, Feed::one(bad_canary("orders", 405), 5 * SEC));
    let id = play_to_rollback(
        &mut driver,
        "orders",
        || {},
        &mut Latency::default(),
        &mut Latency::default(),
    );
    drop(driver);
    let (status, took) = dw.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    let alert = wait_rollback_alert(&am, &id, Duration::from_secs(2));
    assert_eq!(alert["labels"]["service"], "orders");
    println!("sigterm_exit_with_alertmanager_up_ms={}", took.as_millis());

    // Alertmanager unreachable: deploywatch gives up after the 5 s bound, says so, exits.
    let nobody = format!("http://127.0.0.1:{}", harness::free_port());
    let mut dw = start_deploywatch(std::slice::from_ref(&nobody));
    let mut driver = Driver::new(&dw, Feed::one(bad_canary("orders", 405), 5 * SEC));
    play_to_rollback(
        &mut driver,
        "orders",
        || {},
        &mut Latency::default(),
        &mut Latency::default(),
    );
    drop(driver);
    wait_for("a failed delivery", Duration::from_secs(10), || {
        match dw.metric(
            "deploywatch_alerts_failed_total",
            &[("alertmanager", &nobody)],
        ) {
            Some(v) if v > 0.0 => Ok(()),
            v => Err(format!("failed_total {v:?}")),
        }
    });
    let (status, took) = dw.terminate(Duration::from_secs(15));
    println!(
        "sigterm_exit_with_alertmanager_down_ms={}",
        took.as_millis()
    );
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(7),
        "exit took {took:?}; the flush is bounded by 5 s"
    );
    assert!(
        dw.logs().contains("Alerts not delivered before exit"),
        "{}",
        dw.logs()
    );
}

#[test]
fn example_alertmanager_config_passes_amtool_and_routes_as_documented() {
    harness::require_alertmanager();
    let root = env!("CARGO_MANIFEST_DIR");
    let file = format!("{root}/examples/alertmanager.yml");
    let out = std::process::Command::new(AMTOOL_BIN)
        .args(["check-config", &file])
        .output()
        .expect("running amtool");
    assert!(
        out.status.success(),
        "amtool check-config {file}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (labels, want) in [
        (
            &["action=rollback", "severity=critical"][..],
            "deploy-rollback",
        ),
        (&["action=pause", "severity=critical"][..], "slack-deploys"),
        (&["action=notify", "severity=warning"][..], "slack-deploys"),
    ] {
        let out = std::process::Command::new(AMTOOL_BIN)
            .args(["config", "routes", "test", &format!("--config.file={file}")])
            .arg("alertname=DeployRegression")
            .args(labels)
            .output()
            .expect("running amtool");
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(got, want, "route for {labels:?}");
    }
    // The rollback receiver notifies a webhook and Slack; warnings go to Slack only.
    let text = std::fs::read_to_string(&file).unwrap();
    let rollback = text
        .split("- name: deploy-rollback")
        .nth(1)
        .expect("a rollback receiver");
    assert!(rollback.contains("webhook_configs") && rollback.contains("slack_configs"));
    let slack = text
        .split("- name: slack-deploys")
        .nth(1)
        .and_then(|s| s.split("- name:").next())
        .expect("a Slack receiver");
    assert!(slack.contains("slack_configs") && !slack.contains("webhook_configs"));
    assert!(text.contains("group_by: [service, deploy_id]"));
}

// ---------------------------------------------------------------------------------------
// Timing on paused time, against an in-test Alertmanager
// ---------------------------------------------------------------------------------------

/// Wall-clock base of the paused tests' clock.
const BASE_MS: i64 = 1_800_000_000_000;

/// A recording stand-in for Alertmanager: answers each request with the next scripted
/// status (200 once the script is empty, or `fallback`).
#[derive(Default)]
struct Recorder {
    /// (paused time since start, the alerts posted)
    requests: Mutex<Vec<(Duration, Vec<Value>)>>,
    script: Mutex<VecDeque<u16>>,
    fallback: Mutex<Option<u16>>,
}

struct TestAm {
    url: String,
    rec: Arc<Recorder>,
    start: tokio::time::Instant,
}

impl TestAm {
    async fn start() -> TestAm {
        let rec = Arc::new(Recorder::default());
        let start = tokio::time::Instant::now();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = {
            let rec = rec.clone();
            axum::Router::new().route(
                "/api/v2/alerts",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let rec = rec.clone();
                    async move {
                        let alerts: Vec<Value> = serde_json::from_slice(&body).unwrap();
                        rec.requests.lock().push((start.elapsed(), alerts));
                        let status = rec
                            .script
                            .lock()
                            .pop_front()
                            .or(*rec.fallback.lock())
                            .unwrap_or(200);
                        let body = match status {
                            400 => "\"start time must be before end time\"",
                            200 => "",
                            _ => "\"overloaded\"",
                        };
                        (axum::http::StatusCode::from_u16(status).unwrap(), body)
                    }
                }),
            )
        };
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestAm { url, rec, start }
    }

    fn requests(&self) -> Vec<(Duration, Vec<Value>)> {
        self.rec.requests.lock().clone()
    }

    /// The paused clock as wall-clock milliseconds.
    fn now_ms(&self) -> i64 {
        BASE_MS + self.start.elapsed().as_millis() as i64
    }
}

/// A deploy source the test controls.
#[derive(Default)]
struct FakeDeploys {
    deploys: Mutex<Vec<DeployJson>>,
    events: Mutex<Vec<(String, String, String)>>,
}

impl DeploySource for FakeDeploys {
    fn deploys(&self) -> Vec<DeployJson> {
        self.deploys.lock().clone()
    }
    fn record(&self, deploy_id: &str, event: &str, detail: String) {
        self.events
            .lock()
            .push((deploy_id.into(), event.into(), detail));
    }
}

fn fake_deploy(id: &str, verdict: Verdict, phase: Phase) -> DeployJson {
    DeployJson {
        id: id.into(),
        service: "checkout".into(),
        version: id.into(),
        baseline_version: Some("v1".into()),
        strategy: Strategy::Canary,
        source: Source::Api,
        started_at: crate::sim::EPOCH,
        phase,
        verdict,
        verdict_at: Some(crate::sim::EPOCH + 95 * SEC),
        commit: "3f2c9e1".into(),
        author: String::new(),
        url: String::new(),
        changes: vec![],
        rules: vec![RuleJson {
            rule: "error_rate".into(),
            verdict,
            canary: SideJson {
                value: Some(0.031),
                samples: 4120.0,
            },
            baseline: SideJson {
                value: Some(0.001),
                samples: 39877.0,
            },
            effect: Some(31.0),
            confidence: 0.9999,
            reason: String::new(),
            matched_series: 4,
            histogram: None,
        }],
        suspects: vec![],
        timeline: vec![],
        comparison: "side-by-side".into(),
        reason: String::new(),
        report_url: String::new(),
    }
}

struct Bench {
    am: TestAm,
    source: Arc<FakeDeploys>,
    service: Arc<AlertService>,
    metrics: Arc<Metrics>,
}

impl Bench {
    async fn start(deploys: Vec<DeployJson>) -> Bench {
        let am = TestAm::start().await;
        let metrics = Arc::new(Metrics::default());
        let config = AlertConfig::new(vec![am.url.clone()], EXTERNAL_URL, Duration::from_secs(60));
        let start = am.start;
        let clock = Arc::new(move || BASE_MS + start.elapsed().as_millis() as i64);
        let service = Arc::new(AlertService::with_clock(config, &metrics, clock));
        let source = Arc::new(FakeDeploys::default());
        *source.deploys.lock() = deploys;
        service.start(source.clone());
        Bench {
            am,
            source,
            service,
            metrics,
        }
    }

    fn counter(&self, which: &str) -> u64 {
        let m = self.metrics.alertmanager(&self.am.url);
        match which {
            "sent" => m.sent.get(),
            "failed" => m.failed.get(),
            "dropped" => m.dropped.get(),
            _ => unreachable!(),
        }
    }
}

fn ends_at_ms(alert: &Value) -> i64 {
    let t = parse_rfc3339(&alert["endsAt"]);
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn firing_alerts_are_resent_every_interval_with_ends_at_four_intervals_ahead() {
    let b = Bench::start(vec![fake_deploy("v2", Verdict::Rollback, Phase::Observing)]).await;
    tokio::time::sleep(Duration::from_secs(185)).await;
    let reqs = b.am.requests();
    let times: Vec<f64> = reqs.iter().map(|(t, _)| secs(*t)).collect();
    assert_eq!(
        reqs.len(),
        4,
        "sent at once and at 60, 120, 180 s: {times:?}"
    );
    for (k, (t, alerts)) in reqs.iter().enumerate() {
        assert!(
            (secs(*t) - 60.0 * k as f64).abs() <= 1.0,
            "request {k} at {t:?}: {times:?}"
        );
        assert_eq!(alerts.len(), 1);
        let sent_ms = BASE_MS + t.as_millis() as i64;
        let ahead = ends_at_ms(&alerts[0]) - sent_ms;
        assert!(
            (ahead - 4 * 60_000).abs() <= 1_000,
            "endsAt {ahead} ms after sending, want 4 intervals"
        );
        assert_eq!(
            alerts[0]["startsAt"], reqs[0].1[0]["startsAt"],
            "startsAt stays"
        );
    }
    // Superseded: sent resolved at once (endsAt = resolution time), then re-sent.
    *b.source.deploys.lock() = vec![fake_deploy("v2", Verdict::Rollback, Phase::Done)];
    let resolved_from = b.am.now_ms();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reqs = b.am.requests();
    assert_eq!(reqs.len(), 5, "resolved at once, not at the next resend");
    let ends = ends_at_ms(&reqs[4].1[0]);
    assert!(
        ends >= resolved_from && ends <= b.am.now_ms(),
        "resolved endsAt"
    );
    tokio::time::sleep(Duration::from_secs(20 * 60)).await;
    let n = b.am.requests().len();
    assert_eq!(
        n,
        5 + 14,
        "resolved alerts re-sent every minute for 15 minutes"
    );
    let events: Vec<String> = b.source.events.lock().iter().map(|e| e.1.clone()).collect();
    assert_eq!(events, ["alert_firing", "alert_resolved"]);
    assert_eq!(b.counter("sent"), n as u64);
    assert_eq!(b.counter("failed"), 0);
}

#[tokio::test(start_paused = true)]
async fn escalation_sends_the_old_label_set_resolved_and_the_new_one_firing() {
    let b = Bench::start(vec![fake_deploy("v2", Verdict::Warn, Phase::Observing)]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    *b.source.deploys.lock() = vec![fake_deploy("v2", Verdict::Pause, Phase::Observing)];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reqs = b.am.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let second = &reqs[1].1;
    assert_eq!(
        second.len(),
        2,
        "both label sets in one request: {second:?}"
    );
    let old = second
        .iter()
        .find(|a| a["labels"]["severity"] == "warning")
        .unwrap();
    let new = second
        .iter()
        .find(|a| a["labels"]["severity"] == "critical")
        .unwrap();
    assert_eq!(new["labels"]["action"], "pause");
    assert!(ends_at_ms(old) <= b.am.now_ms(), "the warning is resolved");
    assert!(ends_at_ms(new) > b.am.now_ms() + 200_000, "the pause fires");
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_with_exponential_backoff() {
    let b = Bench::start(vec![]).await;
    b.am.rec.script.lock().extend([503, 503, 503, 500, 502]);
    *b.source.deploys.lock() = vec![fake_deploy("v2", Verdict::Rollback, Phase::Observing)];
    tokio::time::sleep(Duration::from_secs(10)).await;
    let reqs = b.am.requests();
    assert_eq!(reqs.len(), 6, "five failures, then success");
    let gaps: Vec<u128> = reqs
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_millis())
        .collect();
    for (g, want) in gaps.iter().zip([100u128, 200, 400, 800, 1600]) {
        assert!(
            *g >= want && *g <= want + 50,
            "gaps {gaps:?} ms: want 100, 200, 400, 800, 1600"
        );
    }
    assert_eq!(b.counter("failed"), 5);
    assert_eq!(b.counter("sent"), 1);
    assert_eq!(b.counter("dropped"), 0);
    // Backoff is capped at 5 s while Alertmanager stays down.
    *b.am.rec.fallback.lock() = Some(503);
    *b.source.deploys.lock() = vec![fake_deploy("v3", Verdict::Warn, Phase::Observing)];
    let before = b.am.requests().len();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let reqs = b.am.requests();
    let late: Vec<u128> = reqs[before..]
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_millis())
        .collect();
    assert!(late.iter().all(|g| *g <= 5_050), "gaps {late:?}");
    assert!(
        late.iter().rev().take(5).all(|g| *g >= 5_000),
        "capped at 5 s: {late:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_retried_and_count_as_failed() {
    let b = Bench::start(vec![]).await;
    b.am.rec.script.lock().push_back(400);
    *b.source.deploys.lock() = vec![fake_deploy("v2", Verdict::Rollback, Phase::Observing)];
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(b.am.requests().len(), 1, "a 400 is not retried");
    assert_eq!(b.counter("failed"), 1);
    assert_eq!(b.counter("dropped"), 1);
    assert_eq!(b.counter("sent"), 0);
    // The next resend delivers the (still firing) alert.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(b.am.requests().len(), 2);
    assert_eq!(b.counter("sent"), 1);
}

#[tokio::test(start_paused = true)]
async fn batches_hold_at_most_64_alerts() {
    let deploys: Vec<DeployJson> = (0..150)
        .map(|i| fake_deploy(&format!("v{i:03}"), Verdict::Warn, Phase::Observing))
        .collect();
    let b = Bench::start(deploys).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sizes: Vec<usize> = b.am.requests().iter().map(|(_, a)| a.len()).collect();
    assert_eq!(sizes, [64, 64, 22]);
    let mut ids: Vec<String> =
        b.am.requests()
            .iter()
            .flat_map(|(_, a)| a.iter().map(|x| x["labels"]["deploy_id"].to_string()))
            .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 150);
    assert_eq!(b.counter("sent"), 150);
}

#[tokio::test(start_paused = true)]
async fn an_alertmanager_down_for_minutes_gets_the_current_state_when_back() {
    let b = Bench::start(vec![]).await;
    *b.am.rec.fallback.lock() = Some(503);
    *b.source.deploys.lock() = vec![fake_deploy("v2", Verdict::Warn, Phase::Observing)];
    tokio::time::sleep(Duration::from_secs(60)).await;
    *b.source.deploys.lock() = vec![fake_deploy("v2", Verdict::Rollback, Phase::Observing)];
    tokio::time::sleep(Duration::from_secs(9 * 60)).await;
    assert_eq!(
        b.service.queued(&b.am.url),
        Some(2),
        "warn (resolved) and rollback"
    );
    *b.am.rec.fallback.lock() = None;
    let back = b.am.start.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let reqs = b.am.requests();
    let ok: Vec<_> = reqs.iter().filter(|(t, _)| *t >= back).collect();
    assert_eq!(ok.len(), 1, "one request delivers the current state");
    let (at, alerts) = ok[0];
    assert!(
        *at - back <= Duration::from_millis(5_050),
        "arrived {:?} after",
        *at - back
    );
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let now = BASE_MS + at.as_millis() as i64;
    let firing = alerts
        .iter()
        .find(|a| a["labels"]["action"] == "rollback")
        .unwrap();
    assert!(
        ends_at_ms(firing) >= now + 3 * 60_000,
        "fresh endsAt: {firing}"
    );
    let old = alerts
        .iter()
        .find(|a| a["labels"]["action"] == "notify")
        .unwrap();
    assert!(ends_at_ms(old) < now, "the warning arrives resolved: {old}");
    assert!(b.counter("failed") > 50);
    assert_eq!(b.counter("dropped"), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_pending_alerts_within_the_bound() {
    let b = Bench::start(vec![]).await;
    // The verdict is reached just before the shutdown, between two ticks.
    tokio::time::sleep(Duration::from_millis(200)).await;
    *b.source.deploys.lock() = vec![fake_deploy("v2", Verdict::Rollback, Phase::Observing)];
    b.service.shutdown(&*b.source, Duration::from_secs(5)).await;
    let reqs = b.am.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].1[0]["labels"]["action"], "rollback");
    assert_eq!(b.counter("sent"), 1);

    // With Alertmanager down, shutdown gives up after the bound and counts the loss.
    let c = Bench::start(vec![]).await;
    *c.am.rec.fallback.lock() = Some(503);
    *c.source.deploys.lock() = vec![fake_deploy("v2", Verdict::Rollback, Phase::Observing)];
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = tokio::time::Instant::now();
    c.service.shutdown(&*c.source, Duration::from_secs(5)).await;
    assert!(
        t0.elapsed() <= Duration::from_millis(5_100),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(c.counter("dropped"), 1);
}
