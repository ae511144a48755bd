//! Gates for rollout controllers: Argo Rollouts' `web` metric provider and Flagger's webhooks
//! in, each asking about one deploy — a service and a version; a status code each controller
//! reads correctly, and that deploy's DEPLOY JSON with its reason and report link, out.
//!
//! A gate answers for the deploy of the version asked about, never for whichever deploy of
//! the service is newest: a deploy that ended answers only for its own version, so the
//! previous deploy's `rollback` never blocks the next version and its `pass` never promotes
//! it. Answers are read from what the judge last published ([`Deploys::for_gate`]), so a gate
//! never waits for a push judging that deploy. Every call is counted
//! (`deploywatch_gate_requests_total`); an answer is recorded in the deploy's timeline when it
//! differs from that gate's last one, so callers polling every few seconds (or anyone,
//! unauthenticated) do not grow it.
//!
//! [`Deploys::for_gate`]: crate::deploy::tracker::Deploys::for_gate

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{body_error, ApiError};
use super::params::Params;
use crate::app::App;
use crate::config::UnknownService;
use crate::deploy::Verdict;

/// The endpoints as counted.
const VERDICT: &str = "/api/v1/verdict";
const GATE: &str = "/api/v1/gate";
const ROLLBACK_HOOK: &str = "/api/v1/rollback-hook";

/// How long an answer waits for its gate answer to be recorded in the deploy's timeline.
/// The recording takes the deploy's lock, which a push judging it holds (seconds, for a
/// big canary's first steps); past this the answer goes out and the recording finishes
/// behind it.
const RECORD_WAIT: Duration = Duration::from_millis(50);

/// Flagger's webhook payload (`name`, `namespace`, `phase`, `checksum`, `metadata`). Flagger
/// writes an empty metadata map as `null`.
#[derive(Debug, Deserialize, Default)]
struct FlaggerPayload {
    name: Option<String>,
    namespace: Option<String>,
    phase: Option<String>,
    metadata: Option<HashMap<String, String>>,
}

/// What each field of Flagger's payload must be.
fn flagger_field(path: &str) -> &'static str {
    match path {
        "." => "Flagger's webhook payload: a JSON object with name, namespace, phase, checksum and metadata",
        "metadata" => "an object of strings (the webhook's metadata)",
        _ => "a string",
    }
}

fn parse_payload(body: &[u8]) -> Result<FlaggerPayload, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(FlaggerPayload::default());
    }
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
        .map_err(|e| ApiError::BadRequest(body_error(&e, flagger_field)))
}

/// The deploy a call asks about.
struct Ask {
    service: String,
    version: Option<String>,
}

/// The service from Flagger's payload (`metadata.service`, else `name`) and the version
/// (`metadata.version`, else the query's `version`).
fn ask_of(p: &FlaggerPayload, params: &Params) -> Result<Ask, ApiError> {
    let meta = |k: &str| {
        p.metadata
            .as_ref()
            .and_then(|m| m.get(k))
            .filter(|v| !v.trim().is_empty())
            .cloned()
    };
    let service = meta("service")
        .or_else(|| p.name.clone().filter(|n| !n.trim().is_empty()))
        .ok_or_else(|| ApiError::BadRequest("name: required (or metadata.service)".into()))?;
    let version = match meta("version") {
        Some(v) => Some(v),
        None => params.get("version")?.map(str::to_string),
    };
    Ok(Ask { service, version })
}

/// The verdict endpoint's query: the deploy it asks about.
fn verdict_ask(params: &Params) -> Result<Ask, ApiError> {
    params.only("GET /api/v1/verdict", &["service", "version"])?;
    Ok(Ask {
        service: params.required("service")?.to_string(),
        version: params.get("version")?.map(str::to_string),
    })
}

/// A Flagger webhook call to `endpoint`: its query checked against `allowed`, its payload
/// read, and the deploy it asks about.
fn flagger_call(
    endpoint: &str,
    allowed: &[&str],
    params: &Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<(FlaggerPayload, Ask), ApiError> {
    params.only(endpoint, allowed)?;
    let p = parse_payload(&super::deploys::read_body(body)?)?;
    let ask = ask_of(&p, params)?;
    Ok((p, ask))
}

/// What a gate answers on: the verdict, the body (DEPLOY JSON, or a `pending` stand-in) and
/// the deploy's id when there is a deploy.
struct Answer {
    verdict: Verdict,
    body: Value,
    id: Option<String>,
}

/// Finds the deploy asked about, as last published; a `pending` stand-in saying why when
/// there is none; a `404` for a service never seen under `gates.unknown_service: refuse`.
async fn answer(app: &Arc<App>, ask: Ask) -> Result<Answer, ApiError> {
    let refuse = app.config.load().gates.unknown_service == UnknownService::Refuse;
    let reading = app.clone();
    // Takes no deploy's lock; the history's, rarely held for a compaction's rename, is
    // waited for on the blocking pool rather than a runtime worker.
    super::off_worker(move || {
        let (deploys, store) = (&reading.deploys, &reading.store);
        let Ask { service, version } = ask;
        let found = deploys.for_gate(&service, version.as_deref());
        if let Some(d) = found.deploy {
            return Ok(Answer {
                verdict: d.verdict,
                body: serde_json::to_value(&*d).unwrap_or_default(),
                id: Some(d.id.clone()),
            });
        }
        let seen = found.newest.is_some()
            || store.service(&service).is_some()
            || deploys.services().contains(&service);
        if !seen && refuse {
            let mut known: Vec<String> = store.services().iter().map(|s| s.name.to_string()).collect();
            known.extend(deploys.services());
            known.sort();
            known.dedup();
            return Err(ApiError::UnknownService { service, known });
        }
        let reason = match (&version, &found.newest) {
            _ if !seen => format!(
                "deploywatch has not seen the service {service:?}: no series and no deploy of it (GET /api/v1/services lists the services it sees); pending until its pods report"
            ),
            (Some(v), Some(n)) => format!(
                "no deploy of {service} at version {v} is known yet: its pods have not reported (or it is not registered); the newest deploy of {service}, {}, does not answer for {v}",
                n.version
            ),
            (Some(v), None) => format!(
                "no deploy of {service} at version {v} is known yet: its pods have not reported (or it is not registered)"
            ),
            (None, Some(n)) => format!(
                "no deploy of {service} is being observed: the last one, {}, ended with verdict {}; ask with version= for a deploy of a given version",
                n.version, n.verdict
            ),
            (None, None) => format!(
                "no deploy of {service} is known yet: its new version may not have reported"
            ),
        };
        Ok(Answer {
            verdict: Verdict::Pending,
            body: json!({
                "id": null,
                "service": service,
                "version": version,
                "phase": "warmup",
                "verdict": "pending",
                "verdict_at": null,
                "reason": reason,
                "report_url": null,
            }),
            id: None,
        })
    })
    .await
}

/// Counts a refused call (`invalid`, or `unknown_service` for a `404`) and passes it on.
fn refused<T>(app: &App, endpoint: &str, r: Result<T, ApiError>) -> Result<T, ApiError> {
    if let Err(e) = &r {
        let answer = match e {
            ApiError::UnknownService { .. } => "unknown_service",
            _ => "invalid",
        };
        app.metrics.gates.count(endpoint, answer);
    }
    r
}

/// Records a gate's answer in the deploy's timeline when it changed (on the blocking pool,
/// under the deploy's lock), waiting for it at most [`RECORD_WAIT`].
async fn record(app: &Arc<App>, id: String, gate: &'static str, answer: String, detail: String) {
    let recording = app.clone();
    let task = tokio::task::spawn_blocking(move || {
        recording
            .deploys
            .record_gate_answer(&id, gate, &answer, detail)
    });
    let _ = tokio::time::timeout(RECORD_WAIT, task).await;
}

/// `GET /api/v1/verdict?service=S[&version=V]`: the deploy of that service and version as
/// DEPLOY JSON, `200` (Argo Rollouts' web provider treats anything else as an error, and a
/// non-JSON body as success); `pending` for a version not seen yet. Without `version`, the
/// service's deploy still being observed, else `pending`.
pub async fn verdict(State(app): State<Arc<App>>, params: Params) -> Result<Json<Value>, ApiError> {
    let ask = refused(&app, VERDICT, verdict_ask(&params))?;
    let a = refused(&app, VERDICT, answer(&app, ask).await)?;
    app.metrics.gates.count(VERDICT, a.verdict.as_str());
    Ok(Json(a.body))
}

/// `POST /api/v1/gate[?version=V][&require=pass]`: Flagger's `rollout`, `pre-rollout`,
/// `confirm-rollout` and `confirm-promotion` webhooks. 200 (go on) unless the verdict is
/// pause or rollback (412); with `require=pass`, 200 only on pass. Flagger counts only
/// 200–202 as success.
pub async fn gate(
    State(app): State<Arc<App>>,
    params: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let call = flagger_call("POST /api/v1/gate", &["version", "require"], &params, body)
        .and_then(|(p, ask)| Ok((p, ask, params.one_of("require", &["pass"])?.is_some())));
    let (p, ask, require_pass) = refused(&app, GATE, call)?;
    let (service, version) = (ask.service.clone(), ask.version.clone());
    let Answer {
        verdict,
        mut body,
        id,
    } = refused(&app, GATE, answer(&app, ask).await)?;
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
    let (name, namespace, phase) = (
        p.name.unwrap_or_default(),
        p.namespace.unwrap_or_default(),
        p.phase.unwrap_or_default(),
    );
    body["gate"] = json!({
        "allowed": go,
        "require": if require_pass { "pass" } else { "no pause or rollback" },
        "service": service,
        "version": version,
        "phase": phase,
        "canary": format!("{namespace}/{name}"),
    });
    if let Some(id) = id {
        let detail = format!(
            "Flagger {} webhook for {namespace}/{name}: {} (verdict {verdict})",
            if phase.is_empty() { "gate" } else { &phase },
            if go { "go on" } else { "halt" }
        );
        let gate = if require_pass {
            "gate?require=pass"
        } else {
            "gate"
        };
        let answer = format!("{} {verdict}", if go { "go" } else { "halt" });
        record(&app, id, gate, answer, detail).await;
    }
    Ok((status, Json(body)))
}

/// `POST /api/v1/rollback-hook[?version=V]`: Flagger's `rollback` webhook, whose meaning is
/// inverted: 200 makes Flagger roll back, so it answers 200 only when that deploy's verdict
/// is `rollback`, else 409.
pub async fn rollback_hook(
    State(app): State<Arc<App>>,
    params: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let call = flagger_call("POST /api/v1/rollback-hook", &["version"], &params, body);
    let (p, ask) = refused(&app, ROLLBACK_HOOK, call)?;
    let Answer { verdict, body, id } = refused(&app, ROLLBACK_HOOK, answer(&app, ask).await)?;
    app.metrics.gates.count(ROLLBACK_HOOK, verdict.as_str());
    let roll_back = verdict == Verdict::Rollback;
    if let (Some(id), true) = (id, roll_back) {
        let detail = format!(
            "Flagger rollback webhook for {}/{}: roll back",
            p.namespace.unwrap_or_default(),
            p.name.unwrap_or_default()
        );
        record(&app, id, "rollback-hook", "roll back".into(), detail).await;
    }
    let status = if roll_back {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(body)))
}
