//! The gates as the rollout controllers call them: Argo Rollouts' `web` metric provider
//! (GET, JSON, 200 always, `result.verdict == "pass"`) and Flagger's webhooks (POST of
//! `{name, namespace, phase, checksum, metadata}`, success only for 200–202; the rollback
//! webhook inverted), for each verdict; and (issue 16) each gate answering for the deploy of
//! the version it asks about, across consecutive rollouts.

use hyper::Method;
use serde_json::{json, Value};

use crate::harness::*;
use crate::sim::{
    register_deploy, Driver, Effect, Feed, Service, Signal, Sim, Who, EPOCH, MIN, SEC,
};

const T: i64 = EPOCH + 30 * MIN;

/// What Argo Rollouts' web provider does: GET with its headers, parse JSON, evaluate
/// `result.verdict == "pass"`. Returns (status, body).
fn argo(dw: &Deploywatch, service: &str) -> (u16, Value) {
    argo_at(dw, &format!("service={service}"))
}

/// The same for the query `query` (`service=S&version=V`).
fn argo_at(dw: &Deploywatch, query: &str) -> (u16, Value) {
    let res = request(
        Method::GET,
        &format!("{}/api/v1/verdict?{query}", dw.url()),
        &[
            ("accept", "application/json"),
            ("user-agent", "argo-rollouts/1.7"),
        ],
        vec![],
    );
    let body: Value = serde_json::from_slice(&res.body)
        .unwrap_or_else(|e| panic!("Argo needs JSON ({e}): {}", res.text()));
    (res.status, body)
}

/// One measurement of `k8s/argo-rollouts-analysistemplate.yaml`'s metric, as Argo Rollouts
/// takes it: a non-2xx answer is an `Error`; else `successCondition: result.verdict ==
/// "pass"`, `failureCondition: result.verdict == "pause" || result.verdict == "rollback"`,
/// neither: `Inconclusive`.
fn argo_measurement(dw: &Deploywatch, service: &str, version: &str) -> &'static str {
    let (status, v) = argo_at(dw, &format!("service={service}&version={version}"));
    if !(200..300).contains(&status) {
        return "Error";
    }
    // The answer is for the version asked about, or a pending stand-in naming it.
    assert_eq!(v["version"], version, "{v}");
    match v["verdict"].as_str() {
        Some("pass") => "Successful",
        Some("pause" | "rollback") => "Failed",
        _ => "Inconclusive",
    }
}

/// What Flagger's webhook caller does: POST its payload; success is 200–202.
fn flagger(dw: &Deploywatch, path: &str, service: &str, phase: &str) -> (u16, Value) {
    flagger_with(
        dw,
        path,
        json!({"service": service, "type": "rollout"}),
        phase,
    )
}

/// The same with the webhook's `metadata` as given.
fn flagger_with(dw: &Deploywatch, path: &str, metadata: Value, phase: &str) -> (u16, Value) {
    let payload = json!({
        "name": "podinfo", "namespace": "test", "phase": phase,
        "checksum": "85d557f47b", "metadata": metadata
    });
    let res = request(
        Method::POST,
        &format!("{}{path}", dw.url()),
        &[("content-type", "application/json")],
        serde_json::to_vec(&payload).unwrap(),
    );
    let body: Value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
    (res.status, body)
}

/// Flagger's three webhooks for `service` at `version` (in `metadata.version`): the status
/// of the `rollout` gate, the `confirm-promotion` gate and the `rollback` hook.
fn flagger_hooks(dw: &Deploywatch, service: &str, version: &str) -> (u16, u16, u16) {
    let meta = json!({"service": service, "version": version});
    let call = |path: &str, phase: &str| {
        let (status, body) = flagger_with(dw, path, meta.clone(), phase);
        if status != 404 {
            assert_eq!(body["version"], version, "{path}: {body}");
        }
        status
    };
    (
        call("/api/v1/gate", "Progressing"),
        call("/api/v1/gate?require=pass", "Promoting"),
        call("/api/v1/rollback-hook", "Progressing"),
    )
}

/// Flagger counts 200–202 as success, anything else as failure.
fn flagger_success(status: u16) -> bool {
    (200..=202).contains(&status)
}

fn canary(name: &str, seed: u64, effect: Option<(Signal, f64)>) -> Service {
    let mut s = Service::new(name, seed, 3).canary("v2", T, 1);
    if let Some((signal, factor)) = effect {
        s = s.effect(Effect::step(
            Who::Version("v2".into()),
            signal,
            factor,
            T,
            i64::MAX,
        ));
    }
    s
}

#[test]
fn gates_answer_each_controller_correctly_for_each_verdict() {
    let dw = Deploywatch::start();
    let sims = vec![
        Sim::new(canary("gclean", 201, None)),
        Sim::new(canary("gbad", 202, Some((Signal::Errors, 10.0)))),
        Sim::new(canary("gcpu", 203, Some((Signal::Cpu, 1.6)))),
    ];
    let mut driver = Driver::new(&dw, Feed::new(sims, 5 * SEC));
    driver.run_to(T);

    // No deploy known: pending, and only the promotion gate says no.
    let (status, v) = argo(&dw, "gclean");
    assert_eq!((status, v["verdict"].as_str()), (200, Some("pending")));
    assert_eq!(flagger(&dw, "/api/v1/gate", "gclean", "Progressing").0, 200);
    assert_eq!(
        flagger(&dw, "/api/v1/gate?require=pass", "gclean", "Promoting").0,
        412
    );
    assert_eq!(
        flagger(&dw, "/api/v1/rollback-hook", "gclean", "Progressing").0,
        409
    );

    for svc in ["gclean", "gbad", "gcpu"] {
        register_deploy(&dw, &json!({"service": svc, "version": "v2", "baseline_version": "v1", "strategy": "canary", "at": T}))
            .unwrap();
    }
    // In warm-up: pending everywhere.
    driver.run_to(T + 30 * SEC);
    let (status, v) = argo(&dw, "gbad");
    assert_eq!(
        (status, v["verdict"].as_str(), v["phase"].as_str()),
        (200, Some("pending"), Some("warmup"))
    );
    assert!(
        v["report_url"].as_str().unwrap().ends_with("/report"),
        "{v}"
    );

    driver.run_to(T + 20 * MIN);
    let verdict = |svc: &str| argo(&dw, svc).1["verdict"].as_str().unwrap().to_string();
    assert_eq!(verdict("gclean"), "pass");
    assert_eq!(verdict("gbad"), "rollback");
    assert_eq!(verdict("gcpu"), "pause");

    // Argo: always 200 with JSON carrying the verdict, reason and report link.
    for svc in ["gclean", "gbad", "gcpu", "nobody"] {
        let (status, v) = argo(&dw, svc);
        assert_eq!(status, 200, "{svc}");
        assert!(
            v["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{svc}: {v}"
        );
    }
    let (_, bad) = argo(&dw, "gbad");
    assert!(
        bad["reason"].as_str().unwrap().starts_with("error_rate"),
        "{bad}"
    );

    // Flagger rollout/confirm-promotion gates and the inverted rollback hook.
    let cases = [
        // service, rollout gate, promotion gate, rollback hook
        ("gclean", 200, 200, 409),
        ("gcpu", 412, 412, 409),
        ("gbad", 412, 412, 200),
    ];
    for (svc, rollout, promote, rollback) in cases {
        let (s, body) = flagger(&dw, "/api/v1/gate", svc, "Progressing");
        assert_eq!(s, rollout, "{svc} rollout gate: {body}");
        assert_eq!(body["service"], svc);
        assert!(
            body["report_url"].is_string() && body["reason"].is_string(),
            "{body}"
        );
        assert_eq!(
            flagger(&dw, "/api/v1/gate?require=pass", svc, "Promoting").0,
            promote,
            "{svc} promotion gate"
        );
        assert_eq!(
            flagger(&dw, "/api/v1/rollback-hook", svc, "Progressing").0,
            rollback,
            "{svc} rollback hook"
        );
    }
    // The answers are in the deploy's timeline.
    let d = crate::sim::find_deploy(&dw, "gbad", "v2").unwrap();
    let events: Vec<&str> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"gate_answered"), "{events:?}");

    // A payload that is not Flagger's is a 400 naming what is wrong, never a silent go.
    let res = request(
        Method::POST,
        &format!("{}/api/v1/gate", dw.url()),
        &[],
        b"{\"namespace\": 3}".to_vec(),
    );
    assert_eq!(res.status, 400, "{}", res.text());
    let res = request(
        Method::POST,
        &format!("{}/api/v1/gate", dw.url()),
        &[],
        b"{}".to_vec(),
    );
    assert_eq!(res.status, 400, "{}", res.text());
}

/// Issue 15: a gate call appended to the deploy's timeline each time, so anyone calling it
/// grew the timeline (and the snapshot and history) without bound. 1000 calls leave one
/// `gate_answered` event per gate and answer, and are counted.
#[test]
fn issue_15_a_thousand_gate_calls_leave_the_timeline_bounded_and_are_counted() {
    let dw = Deploywatch::start();
    let res = dw.post_json(
        "/api/v1/deploys",
        &json!({"service": "podinfo", "version": "v2", "baseline_version": "v1"}),
    );
    assert_eq!(res.status, 201, "{}", res.text());
    let id = serde_json::from_slice::<Value>(&res.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let timeline = || -> Vec<String> {
        dw.get_json(&format!("/api/v1/deploys/{id}"))["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect()
    };
    let before = timeline().len();
    let phases = ["Progressing", "Promoting", "Initializing"];
    for i in 0..1000 {
        let (status, _) = flagger(&dw, "/api/v1/gate", "podinfo", phases[i % 3]);
        assert_eq!(status, 200);
    }
    for _ in 0..10 {
        assert_eq!(
            flagger(&dw, "/api/v1/rollback-hook", "podinfo", "Progressing").0,
            409
        );
        assert_eq!(argo(&dw, "podinfo").0, 200);
    }
    let after = timeline();
    let gates = after.iter().filter(|e| *e == "gate_answered").count();
    assert_eq!(gates, 1, "{after:?}");
    assert_eq!(after.len(), before + 1, "{after:?}");
    let count = |endpoint: &str, answer: &str| {
        dw.must_metric(
            "deploywatch_gate_requests_total",
            &[("endpoint", endpoint), ("answer", answer)],
        )
    };
    assert_eq!(count("/api/v1/gate", "pending"), 1000.0);
    assert_eq!(count("/api/v1/rollback-hook", "pending"), 10.0);
    assert_eq!(count("/api/v1/verdict", "pending"), 10.0);
    assert_eq!(count("/api/v1/gate", "invalid"), 0.0);
    let res = request(
        Method::POST,
        &format!("{}/api/v1/gate", dw.url()),
        &[],
        b"{}".to_vec(),
    );
    assert_eq!(res.status, 400);
    assert_eq!(count("/api/v1/gate", "invalid"), 1.0);
}

/// The timeline events of `service`'s deploy of `version`.
fn events(dw: &Deploywatch, service: &str, version: &str) -> Vec<String> {
    crate::sim::find_deploy(dw, service, version).unwrap()["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap(),
                e["detail"].as_str().unwrap()
            )
        })
        .collect()
}

/// Issue 16: two consecutive rollouts of `web` — v2 with ten times the errors, rolled back
/// (its pod goes away), then v3, clean — with Argo Rollouts' analysis and Flagger's
/// webhooks asking about each version as they would. Every gate answers for the deploy of
/// the version it asks about: v2's rollback never blocks v3 (nor triggers Flagger's rollback
/// of it), v3's pass never promotes a v4 not seen yet, a finished deploy still answers for
/// its own version, and a version not seen yet is pending.
#[test]
fn issue_16_two_rollouts_each_gate_answers_for_its_own_version() {
    let dw = Deploywatch::start();
    let (t2, t3) = (T, T + 15 * MIN);
    let web = Service::new("web", 216, 3)
        .canary("v2", t2, 1)
        .effect(Effect::step(
            Who::Version("v2".into()),
            Signal::Errors,
            10.0,
            t2,
            i64::MAX,
        ))
        .canary("v3", t3, 1)
        .with(|s| {
            // v2 is rolled back: its pod goes away 8 minutes in.
            for p in s.pods.iter_mut().filter(|p| p.version == "v2") {
                p.end = t2 + 8 * MIN;
            }
        });
    let mut driver = Driver::new(&dw, Feed::new(vec![Sim::new(web)], 5 * SEC));

    // Before v2's pod reports: v2 is pending; Flagger's rollout gate goes on, nothing is
    // promoted or rolled back.
    driver.run_to(t2 - MIN);
    assert_eq!(argo_measurement(&dw, "web", "v2"), "Inconclusive");
    let (_, v) = argo_at(&dw, "service=web&version=v2");
    assert_eq!(v["verdict"], "pending", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("v2"), "{v}");
    assert_eq!(flagger_hooks(&dw, "web", "v2"), (200, 412, 409));

    // v2 serves ten times the errors: Argo's measurement fails, Flagger halts and rolls back.
    driver.run_to(t2 + 7 * MIN);
    assert_eq!(argo_measurement(&dw, "web", "v2"), "Failed");
    assert_eq!(
        argo_at(&dw, "service=web&version=v2").1["verdict"],
        "rollback"
    );
    assert_eq!(flagger_hooks(&dw, "web", "v2"), (412, 412, 200));
    // Without a version: the deploy being observed, v2.
    let (_, v) = argo(&dw, "web");
    assert_eq!(
        (v["version"].as_str(), v["verdict"].as_str()),
        (Some("v2"), Some("rollback"))
    );
    // v3, not seen yet, is not v2: pending, and Flagger goes on with it.
    assert_eq!(argo_measurement(&dw, "web", "v3"), "Inconclusive");
    assert_eq!(flagger_hooks(&dw, "web", "v3"), (200, 412, 409));

    // v2's pod went away: the rollback is observed and v2's deploy has ended. It still
    // answers for v2; v3 (not reporting yet) is pending, neither blocked by v2's rollback
    // nor rolled back because of it.
    driver.run_to(t3 - MIN);
    let v2 = crate::sim::find_deploy(&dw, "web", "v2").unwrap();
    assert_eq!(
        (v2["phase"].as_str(), v2["verdict"].as_str()),
        (Some("done"), Some("rollback")),
        "{v2}"
    );
    assert!(events(&dw, "web", "v2")
        .iter()
        .any(|e| e.starts_with("rollback_observed")));
    assert_eq!(argo_measurement(&dw, "web", "v2"), "Failed");
    assert_eq!(flagger_hooks(&dw, "web", "v2"), (412, 412, 200));
    assert_eq!(argo_measurement(&dw, "web", "v3"), "Inconclusive");
    let (status, v3) = flagger_with(
        &dw,
        "/api/v1/gate?version=v3",
        json!({"service": "web"}),
        "Progressing",
    );
    assert_eq!(
        (status, v3["verdict"].as_str()),
        (200, Some("pending")),
        "{v3}"
    );
    assert_eq!(flagger_hooks(&dw, "web", "v3"), (200, 412, 409));
    // Without a version, nothing is being observed: pending, naming the deploy that ended.
    let (status, v) = argo(&dw, "web");
    assert_eq!(
        (status, v["verdict"].as_str()),
        (200, Some("pending")),
        "{v}"
    );
    assert!(v["reason"].as_str().unwrap().contains("v2"), "{v}");
    let (status, _) = flagger(&dw, "/api/v1/rollback-hook", "web", "Progressing");
    assert_eq!(
        status, 409,
        "v2's rollback must not roll back the next rollout"
    );

    // v3 is clean: Argo's analysis succeeds, Flagger promotes; nothing rolls back.
    driver.run_to(t3 + 20 * MIN);
    assert_eq!(argo_measurement(&dw, "web", "v3"), "Successful");
    let (status, gate) = flagger_with(
        &dw,
        "/api/v1/gate?require=pass",
        json!({"service": "web", "version": "v3"}),
        "Promoting",
    );
    assert!(flagger_success(status), "{gate}");
    assert_eq!(
        (
            gate["id"].as_str().is_some(),
            gate["gate"]["version"].as_str()
        ),
        (true, Some("v3"))
    );
    assert_eq!(flagger_hooks(&dw, "web", "v3"), (200, 200, 409));
    // The query parameter names the version when the metadata does not.
    let (status, _) = flagger_with(
        &dw,
        "/api/v1/gate?version=v3&require=pass",
        json!({"service": "web"}),
        "Promoting",
    );
    assert_eq!(status, 200);
    // Without a version: v3, being observed.
    assert_eq!(argo(&dw, "web").1["version"], "v3");
    // v2 still answers for v2.
    assert_eq!(argo_measurement(&dw, "web", "v2"), "Failed");
    assert_eq!(flagger_hooks(&dw, "web", "v2"), (412, 412, 200));
    // v3's pass never promotes the next version: v4, not seen yet, is pending.
    assert_eq!(argo_measurement(&dw, "web", "v4"), "Inconclusive");
    assert_eq!(flagger_hooks(&dw, "web", "v4"), (200, 412, 409));

    // Each deploy's timeline holds the answers given for it, and only those.
    let v2 = events(&dw, "web", "v2");
    let v3 = events(&dw, "web", "v3");
    assert!(
        v2.iter()
            .any(|e| e.contains("rollback webhook") && e.contains("roll back")),
        "{v2:#?}"
    );
    assert!(
        v3.iter()
            .any(|e| e.starts_with("gate_answered") && e.contains("go on (verdict pass)")),
        "{v3:#?}"
    );
    assert!(
        !v3.iter()
            .any(|e| e.contains("roll back") || e.contains("halt")),
        "{v3:#?}"
    );
}

/// Issue 16: with `gates.unknown_service: refuse`, a service deploywatch has never seen (a
/// typo in a rollout's gate) is a `404` naming it and the known services, on every gate;
/// a known service without a deploy, or a version not seen yet, is still `pending`. By
/// default an unknown service is `pending`, with a reason that says it was never seen.
#[test]
fn issue_16_unknown_services_are_refused_when_configured_and_unseen_versions_pending() {
    let dw = Deploywatch::start_with_config("gates:\n  unknown_service: refuse\n");
    let (status, body) = dw.push_v1(&write_request(vec![series(
        &[
            ("__name__", "http_requests_total"),
            ("code", "200"),
            ("job", "checkout"),
            ("version", "v1"),
        ],
        &[(now_ms() - 60_000, 1.0)],
    )]));
    assert_eq!(status, 204, "{body}");
    // Registered, never reported: known too.
    register_deploy(&dw, &json!({"service": "payments", "version": "v7"})).unwrap();

    let res = request(
        Method::GET,
        &format!("{}/api/v1/verdict?service=chekout&version=v2", dw.url()),
        &[],
        vec![],
    );
    assert_eq!(res.status, 404, "{}", res.text());
    assert!(res.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(v["service"], "chekout", "{v}");
    assert_eq!(v["known_services"], json!(["checkout", "payments"]), "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("\"chekout\"") && error.contains("checkout, payments"),
        "{error}"
    );
    for path in [
        "/api/v1/gate",
        "/api/v1/gate?require=pass",
        "/api/v1/rollback-hook",
    ] {
        let (status, body) = flagger(&dw, path, "chekout", "Progressing");
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!flagger_success(status));
        assert_eq!(
            body["known_services"],
            json!(["checkout", "payments"]),
            "{body}"
        );
    }
    assert_eq!(argo_measurement(&dw, "chekout", "v2"), "Error");
    assert_eq!(
        dw.must_metric(
            "deploywatch_gate_requests_total",
            &[("endpoint", "/api/v1/gate"), ("answer", "unknown_service")]
        ),
        2.0
    );

    // Known services: a version not seen yet is pending (200), never refused.
    assert_eq!(argo_measurement(&dw, "checkout", "v2"), "Inconclusive");
    assert_eq!(flagger_hooks(&dw, "checkout", "v2"), (200, 412, 409));
    let (status, v) = argo(&dw, "checkout");
    assert_eq!(
        (status, v["verdict"].as_str()),
        (200, Some("pending")),
        "{v}"
    );
    assert_eq!(argo_measurement(&dw, "payments", "v8"), "Inconclusive");
    let (_, v7) = argo_at(&dw, "service=payments&version=v7");
    assert_eq!(
        (v7["verdict"].as_str(), v7["id"].is_string()),
        (Some("pending"), true),
        "{v7}"
    );

    // By default: pending, saying the service was never seen.
    let dw = Deploywatch::start();
    let (status, v) = argo_at(&dw, "service=chekout&version=v2");
    assert_eq!(
        (status, v["verdict"].as_str()),
        (200, Some("pending")),
        "{v}"
    );
    assert!(
        v["reason"].as_str().unwrap().contains("has not seen"),
        "{v}"
    );
    assert_eq!(flagger_hooks(&dw, "chekout", "v2"), (200, 412, 409));
}

/// Issue 16: the gates' requests are checked like every API request: `service` is required
/// by the verdict endpoint, parameters a gate does not take and `require` values other than
/// `pass` are refused (`400`, JSON, counted as `invalid`) rather than ignored.
#[test]
fn issue_16_gate_requests_that_cannot_be_answered_are_400() {
    let dw = Deploywatch::start();
    let get = |query: &str| {
        request(
            Method::GET,
            &format!("{}/api/v1/verdict{query}", dw.url()),
            &[],
            vec![],
        )
    };
    for (query, says) in [
        ("", "service: required"),
        ("?version=v2", "service: required"),
        ("?service=", "service: must not be empty"),
        ("?service=web&version=", "version: must not be empty"),
        (
            "?service=web&verison=v2",
            "unknown query parameter \"verison\"",
        ),
    ] {
        let res = get(query);
        assert_eq!(res.status, 400, "{query}: {}", res.text());
        let v: Value = serde_json::from_slice(&res.body).unwrap();
        assert!(v["error"].as_str().unwrap().contains(says), "{query}: {v}");
    }
    for path in [
        "/api/v1/gate?require=all",
        "/api/v1/gate?requires=pass",
        "/api/v1/rollback-hook?require=pass",
    ] {
        let (status, body) = flagger(&dw, path, "web", "Progressing");
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("require"),
            "{path}: {body}"
        );
    }
    assert_eq!(
        dw.must_metric(
            "deploywatch_gate_requests_total",
            &[("endpoint", "/api/v1/verdict"), ("answer", "invalid")]
        ),
        5.0
    );
}
