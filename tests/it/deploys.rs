//! The deploy endpoints as CI/CD and users see them: registration, validation, identity of a
//! registered and a detected deploy, listing, and the derived metrics.

use serde_json::{json, Value};

use crate::harness::*;
use hyper::Method;

/// Pushes one scrape of `version`'s request counter for `job` at event time `ts`.
fn push_scrape(dw: &Deploywatch, job: &str, version: &str, ts: i64, count: f64) {
    let req = write_request(vec![series(
        &[
            ("__name__", "http_requests_total"),
            ("code", "200"),
            ("instance", &format!("{version}:80")),
            ("job", job),
            ("version", version),
        ],
        &[(ts, count)],
    )]);
    let (status, body) = dw.push_v1(&req);
    assert_eq!(status, 204, "{body}");
}

#[test]
fn a_bad_registration_names_the_field_and_changes_nothing() {
    let dw = Deploywatch::start();
    for (body, field) in [
        (json!({"version": "v2"}), "service"),
        (json!({"service": "a"}), "version"),
        (json!({"service": "a", "version": ""}), "version"),
        (
            json!({"service": "a", "version": "v2", "at": 1764000000}),
            "at",
        ),
        (
            json!({"service": "a", "version": "v2", "strategy": "yolo"}),
            "strategy",
        ),
        (
            json!({"service": "a", "version": "v2", "colour": "red"}),
            "colour",
        ),
        (
            json!({"service": "a", "version": "v2", "baseline_version": "v2"}),
            "baseline_version",
        ),
    ] {
        let res = dw.post_json("/api/v1/deploys", &body);
        assert_eq!(res.status, 400, "{body}: {}", res.text());
        assert!(res.text().contains(field), "{body}: {}", res.text());
    }
    let res = request(
        Method::POST,
        &format!("{}/api/v1/deploys", dw.url()),
        &[],
        b"{not json".to_vec(),
    );
    assert_eq!(res.status, 400);
    assert_eq!(dw.get_json("/api/v1/deploys"), json!({"deploys": []}));
}

#[test]
fn registered_deploys_are_listed_newest_first_and_found_by_id() {
    let dw = Deploywatch::start();
    let t0 = 1_764_000_000_000i64;
    push_scrape(&dw, "checkout", "v1", t0, 10.0);
    let res = dw.post_json(
        "/api/v1/deploys",
        &json!({"service": "checkout", "version": "v2", "commit": "3f2c9e1", "author": "ci",
                "changes": [{"component": "redis-pool", "summary": "pool size 50 -> 500",
                             "files": ["src/cache/pool.rs"]}]}),
    );
    assert_eq!(res.status, 201, "{}", res.text());
    let id = serde_json::from_slice::<Value>(&res.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = dw.get_json(&format!("/api/v1/deploys/{id}"));
    assert_eq!(d["service"], "checkout");
    assert_eq!(d["version"], "v2");
    // The baseline defaults to the version serving, the start to the service's "now".
    assert_eq!(d["baseline_version"], "v1");
    assert_eq!(d["started_at"], t0);
    assert_eq!(d["strategy"], "canary");
    assert_eq!(d["source"], "api");
    assert_eq!(d["verdict"], "pending");
    assert_eq!(d["commit"], "3f2c9e1");
    assert_eq!(d["changes"][0]["component"], "redis-pool");
    assert_eq!(d["timeline"][0]["event"], "deploy_started");

    let res = dw.post_json(
        "/api/v1/deploys",
        &json!({"service": "search", "version": "v7", "strategy": "rolling", "at": t0 + 5000}),
    );
    assert_eq!(res.status, 201);
    let list = dw.get_json("/api/v1/deploys");
    let services: Vec<&str> = list["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["search", "checkout"]);
    let only = dw.get_json("/api/v1/deploys?service=checkout");
    assert_eq!(only["deploys"].as_array().unwrap().len(), 1);
    let res = request(
        Method::GET,
        &format!("{}/api/v1/deploys/nope", dw.url()),
        &[],
        vec![],
    );
    assert_eq!(res.status, 404);

    // The derived metrics carry the deploys.
    assert_eq!(
        dw.metric(
            "deploywatch_deploy_verdict",
            &[("service", "checkout"), ("deploy_id", &id)]
        ),
        Some(0.0)
    );
    assert_eq!(
        dw.metric(
            "deploywatch_deploy_started_timestamp_seconds",
            &[("service", "checkout"), ("commit", "3f2c9e1")]
        ),
        Some(t0 as f64 / 1000.0)
    );
}

#[test]
fn a_registered_deploy_and_the_same_version_in_the_data_are_one_deploy() {
    let dw = Deploywatch::start();
    let t0 = 1_764_000_000_000i64;
    for i in 0..10 {
        push_scrape(&dw, "cart", "v1", t0 + i * 15_000, (i * 100) as f64);
    }
    // Registered first, seen in the data afterwards.
    let res = dw.post_json(
        "/api/v1/deploys",
        &json!({"service": "cart", "version": "v2"}),
    );
    assert_eq!(res.status, 201);
    for i in 10..20 {
        push_scrape(&dw, "cart", "v1", t0 + i * 15_000, (i * 100) as f64);
        push_scrape(&dw, "cart", "v2", t0 + i * 15_000 + 1, (i * 10) as f64);
    }
    // Seen in the data first (detected), registered afterwards: metadata joins it.
    for i in 20..30 {
        push_scrape(&dw, "cart", "v1", t0 + i * 15_000, (i * 100) as f64);
        push_scrape(&dw, "cart", "v3", t0 + i * 15_000 + 2, (i * 10) as f64);
    }
    let detected = dw.get_json("/api/v1/deploys?service=cart");
    let v3 = &detected["deploys"][0];
    assert_eq!(v3["version"], "v3");
    assert_eq!(v3["source"], "detected");
    assert_eq!(v3["strategy"], "canary", "the old version still reports");
    let res = dw.post_json(
        "/api/v1/deploys",
        &json!({"service": "cart", "version": "v3", "commit": "abc"}),
    );
    assert_eq!(res.status, 201);
    let id = serde_json::from_slice::<Value>(&res.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id, v3["id"].as_str().unwrap());
    let all = dw.get_json("/api/v1/deploys?service=cart");
    let versions: Vec<&str> = all["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v3", "v2"], "one deploy per version");
    assert_eq!(all["deploys"][0]["commit"], "abc");
    assert_eq!(all["deploys"][0]["source"], "api");
    // v2 was superseded by v3.
    assert_eq!(all["deploys"][1]["phase"], "done");
    let events: Vec<&str> = all["deploys"][1]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"superseded"), "{events:?}");
}

#[test]
fn versions_running_when_deploywatch_starts_are_not_deploys() {
    let dw = Deploywatch::start();
    let t0 = 1_764_000_000_000i64;
    for i in 0..8 {
        push_scrape(&dw, "api", "v1", t0 + i * 15_000, i as f64);
        push_scrape(&dw, "api", "v2", t0 + i * 15_000 + 3, i as f64);
    }
    assert_eq!(dw.get_json("/api/v1/deploys"), json!({"deploys": []}));
    // The verdict endpoint answers 200 and JSON even so.
    let v = dw.get_json("/api/v1/verdict?service=api");
    assert_eq!(v["verdict"], "pending");
}

/// Event time, not push boundaries: the same samples pushed every 5 s, 15 s or 60 s give
/// the same deploy: verdict, `verdict_at`, per-rule values and the whole timeline. (A new
/// series joining a rule once counted from its newest sample; a push holding later samples
/// then lost their increments and delayed a rollback by a step.)
#[test]
fn verdicts_and_timelines_do_not_depend_on_how_pushes_batch_the_samples() {
    use crate::sim::{register_deploy, Driver, Effect, Feed, Service, Signal, Who, MIN, SEC};
    let t = crate::sim::EPOCH + 30 * MIN;
    let play = |window: i64| -> Value {
        let dw = Deploywatch::start();
        let svc = Service::new("checkout", 71, 3)
            .canary("v2", t, 1)
            .effect(Effect::step(
                Who::Version("v2".into()),
                Signal::Errors,
                10.0,
                t,
                i64::MAX,
            ));
        let mut driver = Driver::new(&dw, Feed::one(svc, window));
        driver.run_to(t);
        let id = register_deploy(
            &dw,
            &json!({"service": "checkout", "version": "v2", "baseline_version": "v1", "at": t}),
        )
        .unwrap();
        driver.run_to(t + 8 * MIN);
        let mut d = crate::sim::deploy(&dw, &id).unwrap();
        // Links carry the port of each run's deploywatch.
        d.as_object_mut().unwrap().remove("report_url");
        d
    };
    let five = play(5 * SEC);
    assert_eq!(five["verdict"], "rollback", "{five:#}");
    for window in [15 * SEC, 60 * SEC] {
        let other = play(window);
        assert_eq!(
            other["verdict_at"], five["verdict_at"],
            "pushes every {window} ms"
        );
        assert_eq!(other["rules"], five["rules"], "pushes every {window} ms");
        assert_eq!(
            other["timeline"], five["timeline"],
            "pushes every {window} ms"
        );
    }
}

/// Issue 15: finished deploys leave memory for the history. 10 services roll out 25
/// versions each (every version supersedes the one before): every deploy is still listed
/// and readable with its report, before and after a restart; memory holds the 10 active
/// deploys and at most each service's newest finished one; `/metrics` carries the
/// derived series of the deploys held only, not of the 230 long finished.
#[test]
fn issue_15_many_finished_deploys_stay_listed_while_memory_and_metrics_stay_bounded() {
    let mut dw = Deploywatch::start();
    let services: Vec<String> = (0..10).map(|i| format!("svc{i}")).collect();
    // Event time ends now: versions two minutes apart, four scrapes each.
    let t0 = deploywatch::now_ms() - 25 * 2 * 60_000;
    let mut t = t0;
    let mut count = 0.0;
    for v in 0..25 {
        let version = format!("v{v}");
        for _ in 0..4 {
            count += 10.0;
            let req = write_request(
                services
                    .iter()
                    .map(|job| {
                        series(
                            &[
                                ("__name__", "http_requests_total"),
                                ("code", "200"),
                                ("instance", &format!("{version}:80")),
                                ("job", job),
                                ("version", &version),
                            ],
                            &[(t, count)],
                        )
                    })
                    .collect(),
            );
            let (status, body) = dw.push_v1(&req);
            assert_eq!(status, 204, "{body}");
            t += 30_000;
        }
    }
    // v0 ran before deploywatch saw the services: 24 deploys each.
    let check = |dw: &Deploywatch| {
        let list = dw.get_json("/api/v1/deploys")["deploys"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(list.len(), 10 * 24);
        let oldest = list.last().unwrap();
        assert_eq!(oldest["phase"], "done");
        let id = oldest["id"].as_str().unwrap();
        assert_eq!(&dw.get_json(&format!("/api/v1/deploys/{id}")), oldest);
        let report = dw.get_json(&format!("/api/v1/deploys/{id}/report?format=json"));
        assert_eq!(report["deploy"]["id"], id);
        assert_eq!(
            dw.get_json("/api/v1/deploys?service=svc3")["deploys"]
                .as_array()
                .unwrap()
                .len(),
            24
        );
        list
    };
    let list = check(&dw);
    assert_eq!(dw.must_metric("deploywatch_deploys_active", &[]), 10.0);
    assert!(dw.must_metric("deploywatch_deploys_in_memory", &[]) <= 20.0);
    assert_eq!(dw.must_metric("deploywatch_history_deploys", &[]), 230.0);
    // The derived metrics: one deploy per service (its newest), none of the finished ones.
    let scrape = parse_exposition(&dw.metrics_text());
    let ids: Vec<String> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "deploywatch_deploy_verdict")
        .map(|s| s.labels.get("deploy_id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 10, "{ids:?}");
    let newest: Vec<&str> = list
        .iter()
        .filter(|d| d["phase"] != "done")
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(
            newest.contains(&id.as_str()),
            "{id} is not an active deploy"
        );
    }
    // Reloaded from the history after a restart: nothing lost.
    dw.terminate(std::time::Duration::from_secs(30));
    dw.restart();
    check(&dw);
    assert_eq!(dw.must_metric("deploywatch_history_deploys", &[]), 230.0);
}

/// Issue 15: a version counts as deployed once it serves — once it is on a series the rules
/// judge. A new value of the version label on another metric of the job (a sidecar's build
/// info, a batch job's build number) starts no deploy and does not supersede the running
/// canary; a new version on `http_requests_total` still does.
#[test]
fn issue_15_a_stray_version_label_does_not_cancel_a_detected_canary() {
    let dw = Deploywatch::start();
    let t0 = 1_764_000_000_000i64;
    let scrape = |pods: &[&str], stray: &[(&str, &str)], i: i64| {
        let ts = t0 + i * 15_000;
        let mut all: Vec<_> = pods
            .iter()
            .map(|v| {
                series(
                    &[
                        ("__name__", "http_requests_total"),
                        ("code", "200"),
                        ("instance", &format!("{v}:80")),
                        ("job", "checkout"),
                        ("version", v),
                    ],
                    &[(ts, (i * 100) as f64)],
                )
            })
            .collect();
        for (metric, version) in stray {
            all.push(series(
                &[
                    ("__name__", metric),
                    ("instance", "v2:9901"),
                    ("job", "checkout"),
                    ("version", version),
                ],
                &[(ts + 1, 1.0)],
            ));
        }
        let (status, body) = dw.push_v1(&write_request(all));
        assert_eq!(status, 204, "{body}");
    };
    let deploys = || {
        dw.get_json("/api/v1/deploys?service=checkout")["deploys"]
            .as_array()
            .unwrap()
            .clone()
    };
    // v1 serves for 5 minutes, then v2 joins it: a detected canary.
    for i in 0..20 {
        scrape(&["v1"], &[], i);
    }
    for i in 20..24 {
        scrape(&["v1", "v2"], &[], i);
    }
    let list = deploys();
    assert_eq!(list.len(), 1, "{list:?}");
    let canary = list[0].clone();
    assert_eq!(
        (&canary["version"], &canary["source"], &canary["strategy"]),
        (&json!("v2"), &json!("detected"), &json!("canary"))
    );
    // A sidecar's build info and a batch job's counter bring new version values.
    for i in 24..40 {
        let build = format!("build-{i}");
        let stray = [
            ("envoy_build_info", "abc123"),
            ("batch_job_runs_total", build.as_str()),
        ];
        scrape(&["v1", "v2"], &stray, i);
    }
    // They are stored (the service shows them), but they are no deploy…
    let services = dw.services();
    assert!(version(&services, "checkout", "abc123").is_some());
    assert!(version(&services, "checkout", "build-30").is_some());
    let list = deploys();
    assert_eq!(
        list.len(),
        1,
        "a stray version label started a deploy: {list:?}"
    );
    // …and the canary runs on, neither superseded nor ended.
    let v2 = dw.get_json(&format!(
        "/api/v1/deploys/{}",
        canary["id"].as_str().unwrap()
    ));
    assert_ne!(v2["phase"], "done", "{v2}");
    let events: Vec<&str> = v2["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(!events.contains(&"superseded"), "{events:?}");
    let verdict = dw.get_json("/api/v1/verdict?service=checkout");
    assert_eq!(verdict["version"], "v2", "{verdict}");
    // A real new version, serving requests, is a deploy and supersedes the canary; its
    // baseline is a version that serves, not the stray one that reported last.
    for i in 40..44 {
        scrape(
            &["v1", "v2", "v3"],
            &[("batch_job_runs_total", "build-99")],
            i,
        );
    }
    let list = deploys();
    assert_eq!(list.len(), 2, "{list:?}");
    let v3 = &list[0];
    assert_eq!(
        (&v3["version"], &v3["source"], &v3["strategy"]),
        (&json!("v3"), &json!("detected"), &json!("canary"))
    );
    assert_eq!(v3["started_at"], t0 + 40 * 15_000);
    assert!(
        v3["baseline_version"] == "v1" || v3["baseline_version"] == "v2",
        "{v3}"
    );
    assert_eq!(list[1]["version"], "v2");
    assert_eq!(list[1]["phase"], "done");
}
