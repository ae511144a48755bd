//! The deploy endpoints: registrations in (`POST /api/v1/deploys`), DEPLOY JSON out, and the
//! derived verdict metrics rendered at scrape time from the deploys' current state.

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
use crate::deploy::tracker::RegisterOutcome;
use crate::deploy::{DeployError, DeployJson, DeployRequest, Verdict};
use crate::export::TextEncoder;

#[derive(Deserialize)]
pub struct ServiceQuery {
    service: Option<String>,
}

/// A metric family to write: name, help, label names, and (label values, value) lines.
type Family<'a> = (&'a str, &'a str, &'a [&'a str], Vec<(Vec<String>, f64)>);

pub async fn register(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
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

/// Writes the derived metrics of the contract from the deploys' state.
pub fn encode_metrics(app: &App, e: &mut TextEncoder) {
    // The newest deploy of each service, and any deploy still being judged.
    let mut newest: std::collections::HashMap<String, String> = Default::default();
    app.deploys.for_each(|d| {
        newest.insert(d.service.clone(), d.id.clone());
    });
    let mut deploy_lines = Vec::new();
    let mut started = Vec::new();
    let mut rule_lines = Vec::new();
    let mut value_lines = Vec::new();
    app.deploys.for_each(|d| {
        if d.phase == crate::deploy::Phase::Done && newest.get(&d.service) != Some(&d.id) {
            return;
        }
        let base = d.baseline_version.clone().unwrap_or_default();
        deploy_lines.push((
            vec![d.service.clone(), d.version.clone(), base, d.id.clone()],
            d.verdict.code() as f64,
        ));
        started.push((
            vec![d.service.clone(), d.version.clone(), d.commit.clone()],
            d.started_at as f64 / 1000.0,
        ));
        for r in &d.rules {
            let labels = vec![d.service.clone(), d.version.clone(), r.rule.name.clone()];
            rule_lines.push((labels.clone(), r.verdict.code() as f64));
            for (side, v) in [("canary", r.canary_value), ("baseline", r.baseline_value)] {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    let mut l = labels.clone();
                    l.push(side.into());
                    value_lines.push((l, v));
                }
            }
        }
    });
    let families: [Family; 4] = [
        (
            "deploywatch_deploy_verdict",
            "Verdict of a deploy: 0 pending, 1 pass, 2 warn, 3 pause, 4 rollback.",
            &["service", "version", "baseline_version", "deploy_id"],
            deploy_lines,
        ),
        (
            "deploywatch_rule_verdict",
            "Verdict of one rule for a deploy: 0 pending, 1 pass, 2 warn, 3 pause, 4 rollback.",
            &["service", "version", "rule"],
            rule_lines,
        ),
        (
            "deploywatch_rule_value",
            "The statistic a rule compares, for the new version (canary) and the baseline.",
            &["service", "version", "rule", "side"],
            value_lines,
        ),
        (
            "deploywatch_deploy_started_timestamp_seconds",
            "Event time a deploy started, for Grafana annotations.",
            &["service", "version", "commit"],
            started,
        ),
    ];
    for (name, help, names, lines) in families {
        e.family(name, "gauge", help);
        for (values, v) in lines {
            let labels: Vec<(&str, &str)> = names
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            e.sample(name, &labels, v);
        }
    }
}
