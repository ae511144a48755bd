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
use crate::rules::{Alphas, Bad, Rule, Tier};

/// One rule's chart data and terms, copied out of the deploy's lock.
#[derive(Debug, Clone)]
pub struct RuleHistory {
    pub name: String,
    pub description: String,
    pub unit: svg::Unit,
    pub points: Vec<StepPoint>,
    /// What the rule is held to: each tier's threshold and the confidence it needs, and
    /// what a pass rules out ([`held_to`]).
    pub held_to: String,
    /// The rule's warm-up after the deploy starts (shaded on its chart).
    pub warmup_ms: i64,
}

impl RuleHistory {
    /// `rule`'s terms under `alphas`, with the step history `points`.
    pub fn of(rule: &Rule, alphas: &Alphas, points: Vec<StepPoint>) -> RuleHistory {
        let unit = svg::Unit::of(rule);
        RuleHistory {
            name: rule.name.clone(),
            description: rule.description.clone(),
            unit,
            points,
            held_to: held_to(rule, alphas, unit),
            warmup_ms: rule.warmup.as_millis() as i64,
        }
    }
}

/// A confidence level, short: 0.999 is `99.9 %`, 0.95 is `95 %`.
fn level(alpha: f64) -> String {
    let p = (1.0 - alpha) * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0} %")
    } else {
        format!("{p:.1} %")
    }
}

/// What a rule is held to, one line: `warn ×1.10 +0.05% at 99 % · … · pass rules out
/// rollback at 95 %`. For `bad: down` the factor is the new version's fraction of the
/// baseline (×0.50 for a relative 2).
pub fn held_to(rule: &Rule, alphas: &Alphas, unit: svg::Unit) -> String {
    let up = rule.bad == Bad::Up;
    let mut parts = Vec::new();
    let mut last = None;
    for tier in Tier::ALL {
        let Some(th) = rule.threshold(tier) else {
            continue;
        };
        let name = format!("{tier:?}").to_lowercase();
        let factor = if up { th.relative } else { 1.0 / th.relative };
        let mut s = format!("{name} ×{factor:.2}");
        if th.absolute > 0.0 {
            s += &format!(
                " {}{}",
                if up { '+' } else { '−' },
                unit.format(th.absolute)
            );
        }
        s += &format!(" at {}", level(alphas.for_tier(tier)));
        parts.push(s);
        last = Some(name);
    }
    if let Some(name) = last {
        parts.push(format!(
            "pass rules out {name} at {} after {}",
            level(alphas.pass),
            crate::config::format_duration(rule.observe)
        ));
    }
    parts.join(" · ")
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
                .map(|r| RuleHistory::of(&r.rule, &d.alphas(), r.history.iter().copied().collect()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_else(|| {
            // From the history: no step histories; the terms are today's rules'.
            let rules = app.deploys.rules();
            d.rules
                .iter()
                .filter_map(|r| rules.rules.iter().find(|x| x.name == r.rule))
                .map(|r| RuleHistory::of(r, &rules.alphas, Vec::new()))
                .collect()
        });
    no_store(html::deploy_page(&d, &histories), StatusCode::OK)
}
