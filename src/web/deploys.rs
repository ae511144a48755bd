//! The deploy endpoints: registrations in (`POST /api/v1/deploys`), DEPLOY JSON out (the
//! derived verdict metrics are `export::deploys`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use crate::app::App;
use crate::deploy::{DeployError, DeployJson, DeployRequest, Verdict};

#[derive(Deserialize)]
pub struct ServiceQuery {
    service: Option<String>,
}

pub async fn register(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let reg = DeployRequest::parse(&body)?;
    let (service, version) = (reg.service.clone(), reg.version.clone());
    // The registration is synced to the journal before the 201: file I/O, on the blocking
    // pool rather than a runtime worker.
    let registering = app.clone();
    let id =
        super::off_worker(move || registering.deploys.register(&registering.store, reg)).await?;
    tracing::info!(deploy_id = %id, %service, %version, "Deploy registered.");
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

pub async fn list(
    State(app): State<Arc<App>>,
    Query(q): Query<ServiceQuery>,
) -> Json<serde_json::Value> {
    Json(json!({ "deploys": app.deploys.list(q.service.as_deref()) }))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<DeployJson>, ApiError> {
    app.deploys
        .get(&id)
        .map(Json)
        .ok_or_else(|| DeployError::NotFound(id).into())
}

#[derive(Deserialize)]
pub struct ReportQuery {
    format: Option<String>,
}

/// `GET /api/v1/deploys/{id}/report[?format=json]`: the post-deploy report as Markdown, or
/// as JSON; for finished deploys restored from the history, the report they were stored with.
pub async fn report(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let report = app
        .deploys
        .report(&id)?
        .ok_or_else(|| ApiError::from(DeployError::NotFound(id)))?;
    Ok(match q.format.as_deref() {
        Some("json") => Json(report).into_response(),
        None | Some("markdown") | Some("md") => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            crate::report::markdown::render(&report),
        )
            .into_response(),
        Some(other) => (
            StatusCode::BAD_REQUEST,
            format!("format: expected json or markdown, got {other:?}\n"),
        )
            .into_response(),
    })
}

/// `GET /api/v1/verdict?service=S`: the service's current deploy, always 200 and JSON (Argo
/// Rollouts' web provider treats anything else as an error, or a non-JSON body as success).
pub async fn verdict(
    State(app): State<Arc<App>>,
    Query(q): Query<ServiceQuery>,
) -> Json<serde_json::Value> {
    let service = q.service.unwrap_or_default();
    let reading = app.clone();
    let (verdict, body, _) = super::off_worker(move || current(&reading, &service)).await;
    app.metrics.gates.count("/api/v1/verdict", verdict.as_str());
    Json(body)
}

/// The current deploy of a service as JSON with its id, or a pending stand-in when none is
/// known (its new version may not have reported yet).
pub(super) fn current(app: &App, service: &str) -> (Verdict, serde_json::Value, Option<String>) {
    match app.deploys.current(service) {
        Some(d) => {
            let id = d.id.clone();
            (
                d.verdict,
                serde_json::to_value(d).unwrap_or_default(),
                Some(id),
            )
        }
        None => (
            Verdict::Pending,
            json!({
                "service": service,
                "verdict": "pending",
                "phase": "warmup",
                "reason": "no deploy of this service is known yet; its new version may not have reported",
            }),
            None,
        ),
    }
}
