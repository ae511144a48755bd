//! Tell the world over HTTP: requests in, answers out. Routing and the small handlers live
//! here; the remote-write handler in `write`, the deploy endpoints in `deploys`, the rollout
//! gates in `gates`, query parameters in `params`, error-to-status mapping in `error`.

pub mod deploys;
pub mod error;
pub mod gates;
pub mod page;
pub mod params;
pub mod write;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::export::{self, TextEncoder};
pub use error::ApiError;
use params::Params;

/// Runs `f` on the blocking pool: work that takes a lock a push may hold while it judges
/// (a deploy's, a service's), or does file I/O, never waits on a runtime worker, which
/// answer `/-/healthy` and `/-/ready`. A panic in `f` is the caller's panic.
pub(crate) async fn off_worker<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// All routes of the HTTP API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/v1/write", post(write::write))
        .route("/api/v1/services", get(services))
        .route(
            "/api/v1/deploys",
            post(deploys::register).get(deploys::list),
        )
        .route("/api/v1/deploys/{id}", get(deploys::get))
        .route("/api/v1/deploys/{id}/report", get(deploys::report))
        .route("/api/v1/verdict", get(gates::verdict))
        .route("/api/v1/gate", post(gates::gate))
        .route("/api/v1/rollback-hook", post(gates::rollback_hook))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload).put(reload))
        .route("/", get(page::index))
        .route("/deploys/{id}", get(page::deploy))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

/// A path no route serves: JSON under `/api/`, as every API error.
async fn not_found(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") {
        ApiError::NotFound(format!("no API endpoint {method} {path}")).into_response()
    } else {
        (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
    }
}

/// A method the path does not take (axum adds the `Allow` header).
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into_response()
}

/// `GET /api/v1/services` body.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ServicesResponse {
    pub services: Vec<ServiceInfo>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceInfo {
    pub service: String,
    pub newest_sample_at: Option<i64>,
    pub series: usize,
    pub versions: Vec<VersionInfo>,
    pub rules: Vec<RuleMatch>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionInfo {
    pub version: String,
    pub series: usize,
    pub newest_sample_at: Option<i64>,
    pub first_sample_at: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct RuleMatch {
    pub rule: String,
    pub matched_series: usize,
}

async fn services(
    State(app): State<Arc<App>>,
    params: Params,
) -> Result<Json<ServicesResponse>, ApiError> {
    let filter = params
        .only("GET /api/v1/services", &["service"])?
        .get("service")?;
    let rules = app.deploys.rules();
    let mut services: Vec<ServiceInfo> = app
        .store
        .services()
        .into_iter()
        .filter(|s| filter.is_none_or(|f| f == &*s.name))
        .map(|s| ServiceInfo {
            service: s.name.to_string(),
            newest_sample_at: s.newest(),
            series: s.series_count(),
            versions: s
                .versions()
                .iter()
                .map(|v| VersionInfo {
                    version: v.name.to_string(),
                    series: v.series_count(),
                    newest_sample_at: v.newest(),
                    first_sample_at: v.first_seen(),
                })
                .collect(),
            // Which rules have data here: a rule matching nothing is shown, never passed.
            rules: rules
                .rules
                .iter()
                .map(|r| {
                    let selectors = r.signal.selectors();
                    let mut n = 0;
                    s.for_each_series(|series| {
                        if selectors.iter().any(|(_, sel)| sel.matches(&series.labels)) {
                            n += 1;
                        }
                    });
                    RuleMatch {
                        rule: r.name.clone(),
                        matched_series: n,
                    }
                })
                .collect(),
        })
        .collect();
    services.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(Json(ServicesResponse { services }))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut e = TextEncoder::new();
    app.metrics.encode(&mut e);
    e.single(
        "deploywatch_store_active_series",
        "gauge",
        "Series held in the store.",
        app.store.active_series() as f64,
    );
    e.single(
        "deploywatch_store_services",
        "gauge",
        "Services seen in the data.",
        app.store.services().len() as f64,
    );
    let counts = app.deploys.counts();
    e.single(
        "deploywatch_deploys_active",
        "gauge",
        "Deploys being judged, or watched for recovery after a rollback.",
        counts.active as f64,
    );
    e.single(
        "deploywatch_deploys_in_memory",
        "gauge",
        "Deploys held whole in memory: the active ones and each service's newest finished one.",
        counts.in_memory as f64,
    );
    e.single(
        "deploywatch_history_deploys",
        "gauge",
        "Finished deploys in the deploy history (within storage.history_retention).",
        counts.history as f64,
    );
    export::deploys::encode(&app.deploys, &app.alerts.firing(), &mut e);
    let start = app
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    export::encode_process(&mut e, start);
    ([(header::CONTENT_TYPE, export::CONTENT_TYPE)], e.finish()).into_response()
}

async fn healthy() -> &'static str {
    "deploywatch is Healthy.\n"
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.is_ready() {
        "deploywatch is Ready.\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "deploywatch is not ready.\n",
        )
            .into_response()
    }
}

async fn reload(State(app): State<Arc<App>>) -> Result<&'static str, ApiError> {
    app.reload()?;
    Ok("Configuration reloaded.\n")
}
