//! The web page, for people: the deploys and their rules' step histories in, server-rendered
//! HTML with inline CSS and SVG out (`GET /`, `GET /deploys/{id}`). No JavaScript; pages of
//! running deploys reload themselves with `<meta http-equiv="refresh">`.

pub mod html;
pub mod svg;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::app::App;
use crate::deploy::Verdict;
use crate::rules::eval::StepPoint;

/// One rule's chart data, copied out of the deploy's lock.
#[derive(Debug, Clone)]
pub struct RuleHistory {
    pub name: String,
    pub description: String,
    pub unit: svg::Unit,
    pub points: Vec<StepPoint>,
}

/// `GET /` query: every field optional and read leniently, so that a hand-edited URL shows
/// the page rather than a 400.
#[derive(Debug, Deserialize, Default)]
pub struct IndexQuery {
    service: Option<String>,
    verdict: Option<String>,
    page: Option<String>,
}

impl IndexQuery {
    fn filter(&self) -> html::Filter {
        let verdict = match self.verdict.as_deref() {
            Some("pending") => Some(Verdict::Pending),
            Some("pass") => Some(Verdict::Pass),
            Some("warn") => Some(Verdict::Warn),
            Some("pause") => Some(Verdict::Pause),
            Some("rollback") => Some(Verdict::Rollback),
            _ => None,
        };
        html::Filter {
            service: self.service.clone().filter(|s| !s.is_empty()),
            verdict,
            page: self
                .page
                .as_deref()
                .and_then(|p| p.parse().ok())
                .unwrap_or(1)
                .max(1),
        }
    }
}

fn no_store(body: String, status: StatusCode) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

/// `GET /`: deploys grouped by service, newest first.
pub async fn index(State(app): State<Arc<App>>, Query(q): Query<IndexQuery>) -> Response {
    let mut deploys = app.deploys.list(None);
    // Newest first by start; the list's order (registration) breaks ties.
    deploys.sort_by_key(|d| std::cmp::Reverse(d.started_at));
    no_store(html::index_page(&deploys, &q.filter()), StatusCode::OK)
}

/// `GET /deploys/{id}`: one deploy with its charts; an HTML 404 for unknown ids.
pub async fn deploy(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let Some(d) = app.deploys.get(&id) else {
        return no_store(html::not_found_page(&id), StatusCode::NOT_FOUND);
    };
    let histories = app
        .deploys
        .with_deploy(&id, |d| {
            d.rules
                .iter()
                .map(|r| RuleHistory {
                    name: r.rule.name.clone(),
                    description: r.rule.description.clone(),
                    unit: svg::Unit::of(&r.rule),
                    points: r.history.iter().copied().collect(),
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    no_store(html::deploy_page(&d, &histories), StatusCode::OK)
}
