//! Issue 15: one bad sample must never take deploywatch down. Timestamps from the far future
//! or the far past are refused at the door (400 naming the first, counted, the rest of the
//! request stored) and a running canary does not notice; ±Inf and NaN never reach a deploy's
//! JSON or the history; a hostile snapshot is skipped on restart, never looped on.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use deploywatch::proto::prometheus as rw1;
use deploywatch::store::{snapshot, LabelSet, RingBuffer};

use crate::harness::{self, series, write_request, Deploywatch};
use crate::sim::{deploy, register_deploy, Driver, Feed, Service, EPOCH, MIN, SEC};

/// The canary goes out 30 minutes of event time after the simulator's epoch.
const T: i64 = EPOCH + 30 * MIN;

/// A clean canary of `calm` (the seed of explain's clean-canary test: it passes by
/// `T + 14m`), registered at `T` and played to `T + 4m`: running, not decided.
fn running_canary(dw: &Deploywatch) -> (Driver<'_>, String) {
    let svc = Service::new("calm", 504, 3).canary("v2", T, 1);
    let mut driver = Driver::new(dw, Feed::one(svc, 5 * SEC));
    driver.run_to(T);
    let id = register_deploy(
        dw,
        &json!({"service": "calm", "version": "v2", "baseline_version": "v1",
                "strategy": "canary", "at": T}),
    )
    .expect("registering the canary");
    driver.run_to(T + 4 * MIN);
    (driver, id)
}

/// The service's "now" as `/api/v1/services` shows it.
fn service_now(dw: &Deploywatch, name: &str) -> i64 {
    let services = dw.services();
    harness::service(&services, name)
        .and_then(|s| s["newest_sample_at"].as_i64())
        .unwrap_or_else(|| panic!("no newest sample for {name}: {services:#}"))
}

/// The reason of a refused remote-write request: its JSON body's `error`, one line.
fn reason(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

fn refused_requests(dw: &Deploywatch) -> f64 {
    dw.must_metric(
        "deploywatch_ingest_rejected_requests_total",
        &[("reason", "out_of_bounds")],
    )
}

/// Every class of hostile timestamp, each in a request beside good samples, over HTTP: the
/// answer is a 400 naming the hostile series and why, the refusal is counted by reason, the
/// good samples are stored, no series is created for the hostile one, the canary's service
/// "now" does not move and its timeline gains nothing; the canary then passes as it does
/// undisturbed.
#[test]
fn issue_15_hostile_timestamps_are_refused_the_rest_stored_and_a_running_canary_undisturbed() {
    let dw = Deploywatch::start();
    let (mut driver, id) = running_canary(&dw);
    let before = deploy(&dw, &id).unwrap();
    assert_ne!(before["phase"], "done", "{before:#}");
    let now = service_now(&dw, "calm");
    let wall = harness::now_ms();
    let classes: [(&str, i64, &str, &str); 8] = [
        (
            "i64_max",
            i64::MAX,
            "too_far_in_future",
            "too far in the future",
        ),
        ("i64_min", i64::MIN, "too_old", "Unix epoch"),
        (
            "microseconds",
            now * 1000,
            "too_far_in_future",
            "micro- or nanoseconds",
        ),
        (
            "nanoseconds",
            now * 1_000_000,
            "too_far_in_future",
            "micro- or nanoseconds",
        ),
        (
            "wall_clock_plus_11m",
            wall + 11 * MIN,
            "too_far_in_future",
            "limits.max_time_ahead",
        ),
        ("zero", 0, "too_old", "Unix epoch"),
        ("negative", -1_764_000_000_000, "too_old", "Unix epoch"),
        (
            "far_past",
            now - 30 * 24 * 60 * MIN,
            "too_old",
            "retention window",
        ),
    ];
    let mut series_before = None;
    for (k, (class, ts, outcome, words)) in classes.into_iter().enumerate() {
        // Good samples just behind the service's "now", so that they do not move it.
        let good_ts = now - 100 + k as i64;
        let req = write_request(vec![
            series(
                &[
                    ("__name__", "probe_good"),
                    ("job", "calm"),
                    ("version", "v2"),
                ],
                &[(good_ts, 1.0)],
            ),
            series(
                &[
                    ("__name__", "probe_hostile"),
                    ("class", class),
                    ("job", "calm"),
                    ("version", "v2"),
                ],
                &[(ts, 1.0)],
            ),
            series(
                &[
                    ("__name__", "probe_good"),
                    ("job", "calm"),
                    ("version", "v1"),
                ],
                &[(good_ts, 2.0)],
            ),
        ]);
        let appended = dw.samples_total("appended");
        let counted = dw.samples_total(outcome);
        let requests = refused_requests(&dw);
        let (status, body) = dw.push_v1(&req);
        assert_eq!(status, 400, "{class}: {body}");
        let line = reason(&body);
        assert!(!line.contains('\n'), "{class}: one line: {body:?}");
        assert!(
            line.contains(&format!("class=\"{class}\"")),
            "{class}: names the series: {line}"
        );
        assert!(line.contains(words), "{class}: says why ({words}): {line}");
        assert!(
            line.contains("the other 2 samples of the request were stored"),
            "{class}: {line}"
        );
        assert_eq!(dw.samples_total(outcome) - counted, 1.0, "{class}");
        assert_eq!(dw.samples_total("appended") - appended, 2.0, "{class}");
        assert_eq!(refused_requests(&dw) - requests, 1.0, "{class}");
        assert_eq!(
            service_now(&dw, "calm"),
            now,
            "{class}: the service's now moved"
        );
        let count = harness::service(&dw.services(), "calm").unwrap()["series"].clone();
        match &series_before {
            None => series_before = Some(count),
            Some(c) => assert_eq!(&count, c, "{class}: a series was created"),
        }
    }
    let after = deploy(&dw, &id).unwrap();
    assert_eq!(after["phase"], before["phase"], "{after:#}");
    assert_eq!(after["timeline"], before["timeline"], "{after:#}");
    assert_eq!(after["verdict"], before["verdict"]);

    driver.run_to(T + 14 * MIN);
    let d = deploy(&dw, &id).unwrap();
    assert_eq!(d["verdict"], "pass", "{d:#}");
    let events: Vec<&str> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or(""))
        .collect();
    assert!(
        !events.contains(&"observation_ended") && !events.contains(&"superseded"),
        "{events:?}"
    );
}

/// Every number in a JSON document, with its path; `null`s where a number was expected
/// show up as nulls at known numeric fields.
fn numeric_fields_are_numbers(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                if matches!(
                    k.as_str(),
                    "samples" | "confidence" | "share" | "before_samples" | "after_samples"
                ) && !x.is_number()
                {
                    out.push(format!("{p} = {x}"));
                }
                numeric_fields_are_numbers(x, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                numeric_fields_are_numbers(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// +Inf twice and NaN on the canary's request counter, -Inf and NaN on its memory gauge:
/// accepted (204) and counted, never stored; the canary is judged as it is without them
/// (it passes), its JSON and report hold only finite numbers, and after the deploy is
/// finished and deploywatch killed, the restart restores it from the history.
#[test]
fn issue_15_inf_and_nan_on_a_judged_canary_never_reach_its_json_and_the_history_loads() {
    let mut dw = Deploywatch::start();
    let (mut driver, id) = running_canary(&dw);
    let mut injected = 0u64;
    while driver.feed.t + driver.feed.window <= T + 14 * MIN {
        let mut push = driver.feed.next_push();
        let hostile_minute = (T + 5 * MIN..T + 8 * MIN).contains(&push.end);
        for req in &mut push.requests {
            let mut extra: Vec<rw1::TimeSeries> = Vec::new();
            if hostile_minute {
                for ts in &req.timeseries {
                    let is =
                        |n: &str, v: &str| ts.labels.iter().any(|l| l.name == n && l.value == v);
                    let Some(last) = ts.samples.last().map(|s| s.timestamp) else {
                        continue;
                    };
                    let values: &[f64] = if is("__name__", "http_requests_total") {
                        &[f64::INFINITY, f64::INFINITY, f64::NAN]
                    } else if is("__name__", "process_resident_memory_bytes") {
                        &[f64::NEG_INFINITY, f64::NAN]
                    } else {
                        continue;
                    };
                    if !is("version", "v2") {
                        continue;
                    }
                    extra.push(rw1::TimeSeries {
                        labels: ts.labels.clone(),
                        samples: values
                            .iter()
                            .enumerate()
                            .map(|(i, &value)| rw1::Sample {
                                value,
                                timestamp: last + 1 + i as i64,
                            })
                            .collect(),
                        ..Default::default()
                    });
                    injected += values.len() as u64;
                }
            }
            req.timeseries.extend(extra);
            let (status, body) = dw.push_v1(req);
            assert_eq!(status, 204, "{body}");
        }
    }
    assert!(injected > 0);
    assert_eq!(dw.samples_total("non_finite"), injected as f64);
    let d = deploy(&dw, &id).unwrap();
    assert_eq!(d["verdict"], "pass", "{d:#}");
    let mut bad = Vec::new();
    numeric_fields_are_numbers(&d, "deploy", &mut bad);
    let report = dw.get_json(&format!("/api/v1/deploys/{id}/report?format=json"));
    numeric_fields_are_numbers(&report, "report", &mut bad);
    assert!(bad.is_empty(), "non-numbers: {bad:?}");

    // v3 supersedes v2: v2 is finished and goes to the history with the next push.
    register_deploy(
        &dw,
        &json!({"service": "calm", "version": "v3", "baseline_version": "v2"}),
    )
    .expect("registering v3");
    driver.run_to(T + 15 * MIN);
    let d = deploy(&dw, &id).unwrap();
    assert_eq!(d["phase"], "done", "{d:#}");
    let history = std::fs::read_to_string(dw.dir().join("data/deploys.jsonl")).unwrap();
    assert!(history.contains(&id), "{history}");

    dw.kill9();
    dw.restart();
    let d = deploy(&dw, &id).unwrap();
    assert_eq!(
        (&d["phase"], &d["verdict"]),
        (&json!("done"), &json!("pass")),
        "{d:#}"
    );
    let mut bad = Vec::new();
    numeric_fields_are_numbers(&d, "deploy", &mut bad);
    assert!(bad.is_empty(), "non-numbers after the restart: {bad:?}");
}

/// A snapshot holding what an older deploywatch let in (samples at i64::MAX and i64::MIN,
/// negative and zero timestamps, ten years of hourly samples, an empty ring, non-finite
/// values, a series without the service label, one with invalid labels, a state section
/// with extreme times) is restored within seconds: the hostile parts are reported and
/// skipped, the good series is back with its service's "now" where it was, and pushes are
/// accepted again.
#[test]
fn issue_15_a_hostile_snapshot_is_skipped_and_the_restart_is_ready_within_seconds() {
    let mut dw = Deploywatch::start();
    let wall = harness::now_ms();
    let good = [
        ("__name__", "http_requests_total"),
        ("code", "200"),
        ("job", "calm"),
        ("version", "v1"),
    ];
    let good_samples: Vec<(i64, f64)> = (0..40)
        .map(|i| (wall - 10 * MIN + i * 15 * SEC, i as f64))
        .collect();
    let newest_good = good_samples.last().unwrap().0;
    let (status, body) = dw.push_v1(&write_request(vec![series(&good, &good_samples)]));
    assert_eq!(status, 204, "{body}");
    dw.kill9();

    // The good series as deploywatch held it, and the hostile ones beside it.
    let ring = |samples: &[(i64, f64)]| {
        let mut r = RingBuffer::new();
        for &(t, v) in samples {
            r.push(t, v, i64::MAX);
        }
        r
    };
    let labels = |pairs: &[(&str, &str)]| LabelSet::from_strs(pairs).as_bytes().to_vec();
    let hostile = |name: &str| labels(&[("__name__", name), ("job", "calm"), ("version", "v1")]);
    let ten_years: Vec<(i64, f64)> = (0..87_600)
        .map(|h| (wall - (87_600 - h) * 60 * MIN, 1.0))
        .collect();
    let spread: Vec<(i64, f64)> = (1..=5_000)
        .map(|k| (k * 1_000_000_000_000_000, 1.0))
        .collect();
    let mut invalid = labels(&[("__name__", "x"), ("job", "calm")]);
    invalid.extend_from_slice(&[0x0a, 0x03, 0xff, 0xfe, 0xfd]);
    let held = vec![
        (labels(&good), ring(&good_samples)),
        (
            hostile("at_i64_max"),
            ring(&[(newest_good - SEC, 1.0), (i64::MAX, 2.0)]),
        ),
        (
            hostile("at_i64_min"),
            ring(&[(i64::MIN, 1.0), (i64::MIN + 1, 2.0), (-1, 3.0), (0, 4.0)]),
        ),
        (hostile("ten_years_hourly"), ring(&ten_years)),
        (hostile("spread_over_i64"), ring(&spread)),
        (hostile("empty"), RingBuffer::new()),
        (
            hostile("non_finite"),
            ring(&[
                (wall - 5 * MIN, f64::INFINITY),
                (wall - 4 * MIN, f64::NAN),
                (wall - 3 * MIN, 1.0),
            ]),
        ),
        (
            labels(&[("__name__", "no_service")]),
            ring(&[(0, 1.0), (i64::MAX - 1, 1.0)]),
        ),
        (invalid, ring(&[(wall - MIN, 1.0)])),
    ];
    let state = serde_json::to_vec(&json!({
        "written_at": i64::MAX,
        "events": [["calm-v2-1", {"at": i64::MIN, "event": "alert_sent", "detail": "x"}]],
    }))
    .unwrap();
    let data = dw.dir().join("data");
    std::fs::write(
        data.join(snapshot::FILE_NAME),
        snapshot::encode(&held, &state),
    )
    .unwrap();
    let _ = std::fs::remove_file(data.join(snapshot::PREV_FILE_NAME));

    let started = Instant::now();
    dw.restart();
    let took = started.elapsed();
    println!("a hostile snapshot of 92,652 samples: ready after {took:?}");
    // docs/durability.md: a hostile snapshot costs what its samples within bounds cost.
    assert!(took < Duration::from_secs(15), "ready after {took:?}");
    let logs = dw.logs();
    assert!(logs.contains("not replayed"), "{logs}");
    assert!(logs.contains("invalid labels"), "{logs}");
    assert_eq!(service_now(&dw, "calm"), newest_good);
    let services = dw.services();
    let names = harness::service_names(&services);
    assert!(!names.contains(&String::new()), "{services:#}");
    let restored = dw.must_metric("deploywatch_restored_samples", &[]);
    // The good series, the i64::MAX series' good sample, the last two hours of the hourly
    // series (within the service's window) and the finite sample of the non-finite series.
    assert_eq!(restored, (40 + 1 + 2 + 1) as f64, "{logs}");
    assert!(dw.must_metric("deploywatch_restored_skipped_samples", &[]) > 90_000.0);
    let (status, body) = dw.push_v1(&write_request(vec![series(&good, &[(wall + SEC, 99.0)])]));
    assert_eq!(status, 204, "{body}");
    assert_eq!(service_now(&dw, "calm"), wall + SEC);
}

/// Over Remote-Write 2.0, non-finite values are accepted and reported written (the sender
/// has nothing to resend), counted, and not kept; a sample in microseconds is refused the
/// same way as over 1.0.
#[test]
fn issue_15_rw2_non_finite_values_are_written_and_counted_and_bad_times_refused() {
    let dw = Deploywatch::start();
    let t0 = EPOCH;
    let labels = [
        ("__name__", "queue_depth"),
        ("job", "calm"),
        ("version", "v1"),
    ];
    let mut syms = harness::Symbols::default();
    let ts = syms.series(
        &labels,
        &[
            (t0, 1.0),
            (t0 + 1000, f64::INFINITY),
            (t0 + 2000, f64::NAN),
            (t0 + 3000, 2.0),
        ],
    );
    let (status, headers, body) = dw.push_v2(&syms.request(vec![ts]));
    assert_eq!(status, 204, "{body}");
    let written = headers["X-Prometheus-Remote-Write-Samples-Written"]
        .to_str()
        .unwrap();
    assert_eq!(written, "4");
    assert_eq!(dw.samples_total("appended"), 2.0);
    assert_eq!(dw.samples_total("non_finite"), 2.0);
    assert_eq!(service_now(&dw, "calm"), t0 + 3000);

    let mut syms = harness::Symbols::default();
    let good = syms.series(&labels, &[(t0 + 4000, 3.0)]);
    let micro = syms.series(
        &[
            ("__name__", "queue_depth"),
            ("job", "calm"),
            ("version", "v2"),
        ],
        &[((t0 + 5000) * 1000, 3.0)],
    );
    let (status, _, body) = dw.push_v2(&syms.request(vec![good, micro]));
    assert_eq!(status, 400, "{body}");
    let body = reason(&body);
    assert!(body.contains("micro- or nanoseconds"), "{body}");
    assert!(body.contains(r#"version="v2""#), "{body}");
    assert_eq!(dw.samples_total("too_far_in_future"), 1.0);
    assert_eq!(service_now(&dw, "calm"), t0 + 4000);
    let services = dw.services();
    assert!(
        harness::version(&services, "calm", "v2").is_none(),
        "{services:#}"
    );
}
