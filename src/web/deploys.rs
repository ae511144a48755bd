//! The deploy endpoints: registrations in (`POST /api/v1/deploys`), DEPLOY JSON out (the
//! derived verdict metrics are `export::deploys`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{body_error, ApiError};
use super::params::Params;
use crate::app::App;
use crate::deploy::tracker::RegisterOutcome;
use crate::deploy::{DeployError, DeployJson, DeployRequest};

/// What each field of a registration must be, by its path with list indices blanked.
fn registration_field(path: &str) -> &'static str {
    match path {
        "." => "a JSON object with at least \"service\" and \"version\"",
        "service" | "version" | "baseline_version" | "commit" | "author" | "url" => "a string",
        "strategy" => "canary, rolling or blue-green",
        "at" => "Unix milliseconds of event time (an integer)",
        "changes" => "a list of changes, each {\"component\", \"summary\", \"files\"}",
        "changes[]" => "a change: an object with component, summary and files",
        "changes[].component" | "changes[].summary" => "a string",
        "changes[].files" => "a list of file paths (strings)",
        "changes[].files[]" => "a file path (a string)",
        _ => "another value",
    }
}

/// A request body, or a `400` when it could not be read (over the size limit).
pub(super) fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| ApiError::BadRequest(format!("body: cannot be read: {}", e.body_text())))
}

/// `POST /api/v1/deploys`: a registration in; `201 {"id"}`, or `400` naming the field.
pub async fn register(
    State(app): State<Arc<App>>,
    params: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    params.only("POST /api/v1/deploys", &[])?;
    let body = read_body(body)?;
    // The shape first, in the user's terms; then the values (DeployRequest::parse).
    if let Err(e) = serde_path_to_error::deserialize::<_, DeployRequest>(
        &mut serde_json::Deserializer::from_slice(&body),
    ) {
        let e = body_error(&e, registration_field);
        return Err(DeployError::Invalid(e).into());
    }
    let reg = DeployRequest::parse(&body)?;
    let (service, version) = (reg.service.clone(), reg.version.clone());
    // The registration is synced to the journal before the 201: file I/O, on the blocking
    // pool rather than a runtime worker.
    let registering = app.clone();
    let r =
        super::off_worker(move || registering.deploys.register(&registering.store, reg)).await?;
    // A repeat (a retried pipeline step) is answered with the same id, 200, and logged
    // only when it changed something (README, "From a pipeline").
    let id = &r.id;
    let status = match r.outcome {
        RegisterOutcome::Created | RegisterOutcome::Adopted => {
            tracing::info!(deploy_id = %id, %service, %version, "Deploy registered.");
            StatusCode::CREATED
        }
        RegisterOutcome::Updated => {
            tracing::info!(deploy_id = %id, %service, %version, "Deploy registered again with new metadata.");
            StatusCode::OK
        }
        RegisterOutcome::Unchanged => {
            tracing::debug!(deploy_id = %id, %service, %version, "Deploy registered again; nothing changed.");
            StatusCode::OK
        }
    };
    let mut body = json!({ "id": id });
    if !r.ignored.is_empty() {
        body["ignored"] = json!(r.ignored);
    }
    Ok((status, Json(body)))
}

/// `GET /api/v1/deploys[?service=S]`.
pub async fn list(State(app): State<Arc<App>>, params: Params) -> Result<Json<Value>, ApiError> {
    let service = params
        .only("GET /api/v1/deploys", &["service"])?
        .get("service")?
        .map(str::to_string);
    let reading = app.clone();
    let deploys = super::off_worker(move || reading.deploys.list(service.as_deref())).await;
    Ok(Json(json!({ "deploys": deploys })))
}

/// `GET /api/v1/deploys/{id}`.
pub async fn get(
    State(app): State<Arc<App>>,
    params: Params,
    Path(id): Path<String>,
) -> Result<Json<DeployJson>, ApiError> {
    params.only("GET /api/v1/deploys/{id}", &[])?;
    // A held deploy is read under its lock, which a push judging it holds: waited for on
    // the blocking pool, not on a runtime worker.
    let reading = app.clone();
    let found = {
        let id = id.clone();
        super::off_worker(move || reading.deploys.get(&id)).await
    };
    found
        .map(Json)
        .ok_or_else(|| DeployError::NotFound(id).into())
}

/// `GET /api/v1/deploys/{id}/report[?format=json]`: the post-deploy report as Markdown, or
/// as JSON (times as Unix milliseconds, as everywhere in the API); for finished deploys
/// restored from the history, the report they were stored with.
pub async fn report(
    State(app): State<Arc<App>>,
    params: Params,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let format = params
        .only("GET /api/v1/deploys/{id}/report", &["format"])?
        .one_of("format", &["markdown", "md", "json"])?;
    let reading = app.clone();
    let found = {
        let id = id.clone();
        super::off_worker(move || reading.deploys.report(&id)).await?
    };
    let report = found.ok_or_else(|| ApiError::from(DeployError::NotFound(id)))?;
    Ok(match format {
        Some("json") => {
            let mut v = serde_json::to_value(&report).unwrap_or_default();
            times_as_ms(&mut v);
            Json(v).into_response()
        }
        _ => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            crate::report::markdown::render(&report),
        )
            .into_response(),
    })
}

/// The report keeps its times as RFC 3339 (the Markdown's, and its stored form in the
/// history); the API's JSON gives every time as Unix milliseconds of event time.
fn times_as_ms(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let time = k == "at" || k == "as_of" || k == "since" || k.ends_with("_at");
                match x {
                    Value::String(s) if time => {
                        if let Ok(t) = humantime::parse_rfc3339(s) {
                            let ms = match t.duration_since(std::time::UNIX_EPOCH) {
                                Ok(d) => d.as_millis() as i64,
                                Err(e) => -(e.duration().as_millis() as i64),
                            };
                            *x = json!(ms);
                        }
                    }
                    _ => times_as_ms(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(times_as_ms),
        _ => {}
    }
}
