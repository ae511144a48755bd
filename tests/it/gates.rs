//! The gates as the rollout controllers call them: Argo Rollouts' `web` metric provider
//! (GET, JSON, 200 always, `result.verdict == "pass"`) and Flagger's webhooks (POST of
//! `{name, namespace, phase, checksum, metadata}`, success only for 200–202; the rollback
//! webhook inverted), for each verdict.

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
    let res = request(
        Method::GET,
        &format!("{}/api/v1/verdict?service={service}", dw.url()),
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

/// What Flagger's webhook caller does: POST its payload; success is 200–202.
fn flagger(dw: &Deploywatch, path: &str, service: &str, phase: &str) -> (u16, Value) {
    let payload = json!({
        "name": "podinfo", "namespace": "test", "phase": phase,
        "checksum": "85d557f47b", "metadata": {"service": service, "type": "rollout"}
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
