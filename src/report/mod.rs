//! Report: a deploy's judged state in (rules, suspects, timeline); the post-deploy health
//! report out, as JSON ([`Report`]) and Markdown ([`markdown::render`]), and the deploy
//! history that keeps finished deploys with their final report across restarts
//! ([`history`]). Everything in event time (RFC 3339 UTC): the same data gives the same
//! report, byte for byte.

pub mod history;
pub mod markdown;

use serde::{Deserialize, Serialize};

use crate::deploy::tracker::DeployState;
use crate::deploy::{Change, Phase, Scope, Suspect, Verdict};
use crate::logging::rfc3339_ms;

/// The post-deploy report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub deploy: Header,
    /// The event time the report describes (the deploy's latest judged step).
    #[serde(deserialize_with = "time")]
    pub as_of: String,
    /// Before and after, per rule.
    pub rules: Vec<RuleReport>,
    /// What deviated, and since when (each rule's first deviation; shared degradations).
    pub anomalies: Vec<Anomaly>,
    pub suspects: Vec<Suspect>,
    /// The registered changes and the suspects that point at them.
    pub changes: Vec<ChangeReport>,
    /// Alerts sent or resolved and gate answers (`alert_*`, `gate_*` timeline events).
    pub actions: Vec<Entry>,
    pub timeline: Vec<Entry>,
    pub recommendations: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub id: String,
    pub service: String,
    pub version: String,
    pub baseline_version: Option<String>,
    pub strategy: String,
    pub source: String,
    /// `side-by-side` or `before-after`.
    pub comparison: String,
    #[serde(deserialize_with = "time")]
    pub started_at: String,
    pub phase: Phase,
    pub verdict: Verdict,
    #[serde(default, deserialize_with = "opt_time")]
    pub verdict_at: Option<String>,
    pub commit: String,
    pub author: String,
    pub url: String,
    #[serde(default, deserialize_with = "opt_time")]
    pub rollback_observed_at: Option<String>,
    #[serde(default, deserialize_with = "opt_time")]
    pub recovered_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleReport {
    pub rule: String,
    /// The rule's signal (`ratio`, `quantile`, …): the unit of the values.
    pub signal: String,
    pub verdict: Verdict,
    #[serde(default, deserialize_with = "opt_time")]
    pub verdict_at: Option<String>,
    /// The baseline's statistic (the old version, or the service before the deploy).
    pub before: Option<f64>,
    /// The new version's statistic.
    pub after: Option<f64>,
    #[serde(deserialize_with = "crate::jsonl::number_or_null")]
    pub before_samples: f64,
    #[serde(deserialize_with = "crate::jsonl::number_or_null")]
    pub after_samples: f64,
    /// After over before.
    pub effect: Option<f64>,
    #[serde(deserialize_with = "crate::jsonl::number_or_null")]
    pub confidence: f64,
    #[serde(default, deserialize_with = "opt_time")]
    pub first_deviation_at: Option<String>,
    pub matched_series: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Anomaly {
    pub rule: String,
    /// Event time it began: the rule's first deviation.
    #[serde(deserialize_with = "time")]
    pub since: String,
    pub scope: Scope,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangeReport {
    pub component: String,
    pub summary: String,
    pub files: Vec<String>,
    /// Suspects mapped to this change, as `dimension=value`.
    pub suspects: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    #[serde(deserialize_with = "time")]
    pub at: String,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub detail: String,
}

/// A report time as stored (RFC 3339, as the Markdown shows it) or as the API's JSON gives it
/// (Unix milliseconds): a report reads back the same from either.
fn time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(opt_time(d)?.unwrap_or_default())
}

fn opt_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Time {
        Stored(String),
        Ms(i64),
    }
    Ok(Option::<Time>::deserialize(d)?.map(|t| match t {
        Time::Stored(s) => s,
        Time::Ms(ms) => rfc3339_ms(ms),
    }))
}

/// The report of a deploy as it stands.
pub fn build(d: &DeployState) -> Report {
    let json = d.to_json("");
    let t = |ms: i64| rfc3339_ms(ms);
    let rules: Vec<RuleReport> = d
        .rules
        .iter()
        .zip(&json.rules)
        .map(|(r, j)| RuleReport {
            rule: j.rule.clone(),
            signal: r.rule.signal.kind().to_string(),
            verdict: j.verdict,
            verdict_at: r.verdict_at.map(t),
            before: j.baseline.value,
            after: j.canary.value,
            before_samples: j.baseline.samples,
            after_samples: j.canary.samples,
            effect: j.effect,
            confidence: j.confidence,
            first_deviation_at: r.first_deviation.map(t),
            matched_series: j.matched_series,
            reason: j.reason.clone(),
        })
        .collect();

    let mut anomalies: Vec<(i64, Anomaly)> = d
        .rules
        .iter()
        .filter_map(|r| {
            let at = r.first_deviation?;
            Some((
                at,
                Anomaly {
                    rule: r.rule.name.clone(),
                    since: t(at),
                    scope: Scope::Version,
                    verdict: r.verdict,
                    detail: r.reason.clone(),
                },
            ))
        })
        .collect();
    for e in json
        .timeline
        .iter()
        .filter(|e| e.event == "shared_degradation")
    {
        anomalies.push((
            e.at,
            Anomaly {
                rule: e.rule.clone().unwrap_or_default(),
                since: t(e.at),
                scope: Scope::BothVersions,
                verdict: Verdict::Pending,
                detail: e.detail.clone(),
            },
        ));
    }
    anomalies.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.rule.cmp(&b.1.rule)));

    let changes = d
        .changes
        .iter()
        .map(|c: &Change| {
            let name = crate::rca::changes::change_name(c);
            ChangeReport {
                component: c.component.clone(),
                summary: c.summary.clone(),
                files: c.files.clone(),
                suspects: json
                    .suspects
                    .iter()
                    .filter(|s| s.change.as_deref() == Some(name.as_str()))
                    .map(|s| format!("{}={}", s.dimension, s.value))
                    .collect(),
            }
        })
        .collect();

    let timeline: Vec<Entry> = json
        .timeline
        .iter()
        .map(|e| Entry {
            at: t(e.at),
            event: e.event.clone(),
            verdict: e.verdict,
            rule: e.rule.clone(),
            detail: e.detail.clone(),
        })
        .collect();
    let actions = timeline
        .iter()
        .filter(|e| e.event.starts_with("alert_") || e.event.starts_with("gate_"))
        .cloned()
        .collect();

    let mut report = Report {
        deploy: Header {
            id: d.id.clone(),
            service: d.service.clone(),
            version: d.version.clone(),
            baseline_version: d.baseline_version.clone(),
            strategy: serde_json::to_value(d.strategy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            source: serde_json::to_value(d.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            comparison: json.comparison.clone(),
            started_at: t(d.started_at),
            phase: d.phase,
            verdict: d.verdict,
            verdict_at: d.verdict_at.map(t),
            commit: d.commit.clone(),
            author: d.author.clone(),
            url: d.url.clone(),
            rollback_observed_at: d.rollback_observed_at.map(t),
            recovered_at: d.recovered_at.map(t),
        },
        as_of: t(d.last_step()),
        rules,
        anomalies: anomalies.into_iter().map(|(_, a)| a).collect(),
        suspects: json.suspects.clone(),
        changes,
        actions,
        timeline,
        recommendations: Vec::new(),
    };
    report.recommendations = recommend(d, &report);
    report
}

/// What to do, from the evidence.
fn recommend(d: &DeployState, rep: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(at) = &rep.deploy.rollback_observed_at {
        let rec = match &rep.deploy.recovered_at {
            Some(r) => format!("the service recovered at {r}"),
            None => "recovery not seen yet".into(),
        };
        out.push(format!(
            "Rollback done: {} stopped serving and {} took all traffic again at {at}; {rec}.",
            d.version,
            d.baseline_version.as_deref().unwrap_or("the baseline")
        ));
    }
    let deploy_suspects: Vec<&Suspect> = rep
        .suspects
        .iter()
        .filter(|s| s.scope != Scope::BothVersions)
        .collect();
    let shared: Vec<&Suspect> = rep
        .suspects
        .iter()
        .filter(|s| s.scope == Scope::BothVersions)
        .collect();
    if d.verdict.is_regression() {
        // The rule that brought the verdict: the worst, earliest.
        let worst = d
            .rules
            .iter()
            .filter(|r| r.verdict.is_regression())
            .max_by(|a, b| {
                a.verdict
                    .cmp(&b.verdict)
                    .then(b.verdict_at.cmp(&a.verdict_at))
            });
        if let Some(r) = worst {
            let kind = r.rule.signal.kind();
            let verb = match (d.verdict, rep.deploy.rollback_observed_at.is_some()) {
                (_, true) => "Fix before redeploying".to_string(),
                (Verdict::Rollback, _) => format!("Roll back {}", d.version),
                (Verdict::Pause, _) => format!("Pause the rollout of {}", d.version),
                _ => format!("Watch {} before promoting it", d.version),
            };
            let mut s = format!(
                "{verb}: {} ×{} ({} before, {} after)",
                r.rule.name,
                r.effect
                    .filter(|e| e.is_finite())
                    .map(|e| format!("{e:.1}"))
                    .unwrap_or_else(|| "?".into()),
                format_value(kind, r.baseline_value),
                format_value(kind, r.canary_value)
            );
            let top = deploy_suspects
                .iter()
                .find(|x| x.rule.as_deref() == Some(r.rule.name.as_str()))
                .or(deploy_suspects.first());
            let located = top.filter(|x| x.surprise.is_some());
            if let Some(x) = located {
                s += &format!(" on {} {}", x.dimension, x.value);
            }
            if let Some(at) = r.first_deviation {
                s += &format!(" since {}", rfc3339_ms(at));
            }
            match top.and_then(|x| x.change.as_deref()) {
                Some(c) => s += &format!(", matches change {c}"),
                None if !d.changes.is_empty() => s += ", no registered change matches",
                None => {}
            }
            s.push('.');
            if located.is_some_and(|x| x.scope == Scope::Instance) {
                s += &format!(
                    " It is confined to one instance, not the version: check or replace {} first.",
                    located.map(|x| x.value.as_str()).unwrap_or("it")
                );
            }
            out.push(s);
        }
    }
    if let Some(x) = shared.first() {
        let since = rep
            .anomalies
            .iter()
            .find(|a| a.scope == Scope::BothVersions)
            .map(|a| format!(" since {}", a.since))
            .unwrap_or_default();
        let rule = x.rule.as_deref().unwrap_or("a rule");
        // Beside a regression of the new version, the shared part is an addition to it,
        // never an acquittal: recommendations do not contradict each other (issue 16).
        out.push(if d.verdict.is_regression() {
            format!(
                "Besides the regression of {v}: {rule} also degraded on both versions{since}, \
                 along {} {}; look at that dependency or the load too: rolling {v} back does \
                 not fix that part.",
                x.dimension,
                x.value,
                v = d.version
            )
        } else {
            format!(
                "Not the deploy: {rule} degraded on both versions{since}, along {} {}; look at \
                 that dependency or the load, not at {}.",
                x.dimension, x.value, d.version
            )
        });
    }
    match d.verdict {
        Verdict::Pass => {
            let passed = d
                .rules
                .iter()
                .filter(|r| r.verdict == Verdict::Pass)
                .count();
            // Slow rules (trends) with data go on judging after the pass; the others that
            // did not pass had no data to judge.
            let (observing, idle): (Vec<_>, Vec<_>) = d
                .rules
                .iter()
                .filter(|r| r.verdict != Verdict::Pass)
                .partition(|r| r.rule.slow() && r.has_data());
            let names = |v: &[&crate::rules::eval::RuleState]| {
                v.iter()
                    .map(|r| r.rule.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut s = format!(
                "Safe to promote {}: {passed} rules passed, none regressed",
                d.version
            );
            if !observing.is_empty() {
                s += &format!(
                    "; still observing (a later regression can still escalate the pass): {}",
                    names(&observing)
                );
            }
            if !idle.is_empty() {
                s += &format!("; not judged for lack of data: {}", names(&idle));
            }
            s.push('.');
            out.push(s);
        }
        Verdict::Pending => {
            let mut missing = Vec::new();
            for r in &d.rules {
                if r.verdict == Verdict::Pass {
                    continue;
                }
                let min = r.rule.min_evidence;
                let what = if r.matched_series() == 0 {
                    "no series match its selectors".to_string()
                } else if r.canary_samples < min || r.baseline_samples < min {
                    format!(
                        "{:.0} of {min} samples on the new version, {:.0} of {min} on the baseline",
                        r.canary_samples, r.baseline_samples
                    )
                } else {
                    r.reason.clone()
                };
                missing.push(format!("{}: {what}", r.rule.name));
            }
            let head = if d.phase == Phase::Done {
                "Undecided when the observation ended"
            } else {
                "Not enough evidence yet"
            };
            out.push(format!("{head}; missing: {}.", missing.join("; ")));
        }
        _ => {}
    }
    out
}

/// Whether a rule still `pending` was not needed: the deploy's rollback is decided (or a
/// regressed deploy is done) before the rule was, and nothing it finds can change that.
pub fn not_needed(deploy: Verdict, phase: Phase, rule: Verdict) -> bool {
    rule == Verdict::Pending
        && (deploy == Verdict::Rollback || (phase == Phase::Done && deploy.is_regression()))
}

/// A statistic in its unit, by signal kind.
pub fn format_value(kind: &str, v: Option<f64>) -> String {
    let Some(v) = v.filter(|v| v.is_finite()) else {
        return "n/a".into();
    };
    const MIB: f64 = 1024.0 * 1024.0;
    match kind {
        "ratio" => format!("{:.2}%", v * 100.0),
        "quantile" if v < 1.0 => format!("{:.1} ms", v * 1000.0),
        "quantile" => format!("{v:.3} s"),
        "rate" => format!("{v:.3}/s"),
        "share" => format!("{v:.2}/s"),
        "level" | "trend" => format!("{:.1} MiB", v / MIB),
        "increase" => format!("{v:.0}"),
        _ => format!("{v:.4}"),
    }
}
