//! Gates for rollout controllers: Argo Rollouts' `web` metric provider and Flagger's webhooks
//! in; a status code each controller reads correctly, and the DEPLOY JSON with its reason and
//! report link, out. Every call is counted (`deploywatch_gate_requests_total`); an answer
//! is recorded in the deploy's timeline when it differs from that gate's last one, so
//! callers polling every few seconds (or anyone, unauthenticated) do not grow it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::deploys::current;
use crate::app::App;
use crate::deploy::Verdict;

/// Flagger's webhook payload (`name`, `namespace`, `phase`, `checksum`, `metadata`).
#[derive(Debug, Deserialize, Default)]
struct FlaggerPayload {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
pub struct GateQuery {
    require: Option<String>,
}

fn parse_payload(body: &[u8]) -> Result<FlaggerPayload, (StatusCode, Json<Value>)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(FlaggerPayload::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("body: expected Flagger's webhook payload: {e}")})),
        )
    })
}

/// The endpoints as counted.
const GATE: &str = "/api/v1/gate";
const ROLLBACK_HOOK: &str = "/api/v1/rollback-hook";

/// A refused call: counted, answered as it is.
fn invalid(
    app: &App,
    endpoint: &str,
    answer: (StatusCode, Json<Value>),
) -> (StatusCode, Json<Value>) {
    app.metrics.gates.count(endpoint, "invalid");
    answer
}

fn no_service() -> (StatusCode, Json<Value>) {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "name: required (or metadata.service)"})),
    )
}

fn service_of(p: &FlaggerPayload) -> Option<String> {
    p.metadata
        .get("service")
        .cloned()
        .or_else(|| (!p.name.is_empty()).then(|| p.name.clone()))
}

/// `POST /api/v1/gate[?require=pass]`: Flagger's `rollout`, `pre-rollout`, `confirm-rollout`
/// and `confirm-promotion` webhooks. 200 (go on) unless the verdict is pause or rollback
/// (412); with `require=pass`, 200 only on pass. Flagger counts only 200–202 as success.
pub async fn gate(
    State(app): State<Arc<App>>,
    Query(q): Query<GateQuery>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let p = match parse_payload(&body) {
        Ok(p) => p,
        Err(e) => return invalid(&app, GATE, e),
    };
    let Some(service) = service_of(&p) else {
        return invalid(&app, GATE, no_service());
    };
    let require_pass = q.require.as_deref() == Some("pass");
    // The deploy's lock (held while a push judges it) is waited for off the workers.
    let reading = app.clone();
    let (verdict, mut body, id) = super::off_worker(move || current(&reading, &service)).await;
    app.metrics.gates.count(GATE, verdict.as_str());
    let go = if require_pass {
        verdict == Verdict::Pass
    } else {
        verdict < Verdict::Pause
    };
    let status = if go {
        StatusCode::OK
    } else {
        StatusCode::PRECONDITION_FAILED
    };
    body["gate"] = json!({
        "allowed": go,
        "require": if require_pass { "pass" } else { "no pause or rollback" },
        "phase": p.phase,
        "canary": format!("{}/{}", p.namespace, p.name),
    });
    if let Some(id) = id {
        let detail = format!(
            "Flagger {} webhook for {}/{}: {} (verdict {verdict})",
            if p.phase.is_empty() { "gate" } else { &p.phase },
            p.namespace,
            p.name,
            if go { "go on" } else { "halt" }
        );
        let gate = if require_pass {
            "gate?require=pass"
        } else {
            "gate"
        };
        let answer = format!("{} {verdict}", if go { "go" } else { "halt" });
        let recording = app.clone();
        super::off_worker(move || {
            recording
                .deploys
                .record_gate_answer(&id, gate, &answer, detail)
        })
        .await;
    }
    (status, Json(body))
}

/// `POST /api/v1/rollback-hook`: Flagger's `rollback` webhook, whose meaning is inverted:
/// 200 makes Flagger roll back, so it answers 200 only when the verdict is `rollback`, else
/// 409.
pub async fn rollback_hook(State(app): State<Arc<App>>, body: Bytes) -> (StatusCode, Json<Value>) {
    let p = match parse_payload(&body) {
        Ok(p) => p,
        Err(e) => return invalid(&app, ROLLBACK_HOOK, e),
    };
    let Some(service) = service_of(&p) else {
        return invalid(&app, ROLLBACK_HOOK, no_service());
    };
    let reading = app.clone();
    let (verdict, body, id) = super::off_worker(move || current(&reading, &service)).await;
    app.metrics.gates.count(ROLLBACK_HOOK, verdict.as_str());
    let roll_back = verdict == Verdict::Rollback;
    if let (Some(id), true) = (id, roll_back) {
        let detail = format!(
            "Flagger rollback webhook for {}/{}: roll back",
            p.namespace, p.name
        );
        let recording = app.clone();
        super::off_worker(move || {
            recording
                .deploys
                .record_gate_answer(&id, "rollback-hook", "roll back", detail)
        })
        .await;
    }
    let status = if roll_back {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (status, Json(body))
}
