//! Explain: when a rule of a deploy leaves `pass` (or both versions leave the pre-deploy
//! level), its matched series in, read once from the ring buffers; [`Suspect`]s out — the
//! label values that carry the excess, ranked (see [`adtributor`]), mapped to the deploy's
//! registered changes ([`changes`]) and scoped: the new version, one instance of it, or
//! both versions (not the deploy).

pub mod adtributor;
pub mod changes;
pub mod measure;

use std::sync::Arc;

use crate::deploy::{Change, Scope, Suspect};
use crate::rules::{Bad, Rule, Signal, Tier};
use crate::store::Series;

/// A window of event time, both ends included.
pub type Window = (i64, i64);

/// What the explanation is about.
pub struct Context<'a> {
    pub service: &'a str,
    pub version: &'a str,
    pub changes: &'a [Change],
    /// The labels that name services and versions: never dimensions.
    pub service_label: &'a str,
    pub version_label: &'a str,
}

/// Whose excess is explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The new version against its baseline (the old version beside it, or before it).
    Deploy,
    /// Both versions now against the service before the deploy.
    Shared,
}

/// Label names the rule's numerator selects on (an error ratio's status code): along those
/// the reference's events, not its rates, give the expectation.
fn distributed_labels(rule: &Rule) -> Vec<String> {
    match &rule.signal {
        Signal::Ratio { numerator, .. } => numerator
            .iter()
            .flat_map(|s| s.matchers.iter().map(|m| m.name.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The latency above which a request counts as slow for a quantile rule: `given` (the
/// baseline's quantile as judged), else the reference's own quantile.
fn latency_threshold(
    rule: &Rule,
    given: Option<f64>,
    reference: &[Arc<Series>],
    window: Window,
) -> Option<f64> {
    let Signal::Quantile { quantile, .. } = rule.signal else {
        return None;
    };
    given
        .filter(|v| v.is_finite())
        .or_else(|| measure::quantile_of(quantile, reference, window.0, window.1))
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Ranked suspects of `rule`'s excess on `actual` over `actual_w` against `reference` over
/// `reference_w`. Empty when there is no excess in the bad direction.
#[allow(clippy::too_many_arguments)]
pub fn explain(
    ctx: &Context,
    rule: &Rule,
    baseline_value: Option<f64>,
    actual: &[Arc<Series>],
    actual_w: Window,
    reference: &[Arc<Series>],
    reference_w: Window,
    mode: Mode,
) -> Vec<Suspect> {
    let latency = latency_threshold(rule, baseline_value, reference, reference_w);
    let a = measure::observe(rule, actual, actual_w.0, actual_w.1, latency);
    let r = measure::observe(rule, reference, reference_w.0, reference_w.1, latency);
    let bad_up = rule.bad == Bad::Up;
    let (ae, an) = measure::totals(&a);
    let (re, rn) = measure::totals(&r);
    if an <= 0.0 || rn <= 0.0 {
        return Vec::new();
    }
    let excess = ae - an * re / rn;
    if (bad_up && excess <= 0.0) || (!bad_up && excess >= 0.0) {
        return Vec::new();
    }
    let distributed = distributed_labels(rule);
    let excluded = [ctx.service_label, ctx.version_label, "le", "__name__"];
    let dims = adtributor::attribute(&adtributor::Input {
        actual: &a,
        reference: &r,
        excluded: &excluded,
        distributed: &distributed,
        bad_up,
        counts: matches!(
            rule.signal,
            Signal::Ratio { .. } | Signal::Quantile { .. } | Signal::Increase { .. }
        ),
    });
    let no_change_note = || {
        if ctx.changes.is_empty() {
            "no changes were registered with the deploy".to_string()
        } else {
            "no registered change matches".to_string()
        }
    };
    let mut out = Vec::new();
    for d in dims.iter().take(3) {
        let instance = adtributor::is_instance_label(&d.name);
        for e in &d.elements {
            let scope = match mode {
                Mode::Shared => Scope::BothVersions,
                Mode::Deploy if instance && d.actual_values >= 2 => Scope::Instance,
                Mode::Deploy => Scope::Version,
            };
            let ignore = if instance {
                changes::tokens(&format!("{} {}", ctx.service, ctx.version))
            } else {
                Vec::new()
            };
            let change = match mode {
                Mode::Deploy => changes::best_match(&e.value, &ignore, ctx.changes),
                Mode::Shared => None,
            };
            let mut notes: Vec<String> = Vec::new();
            match scope {
                Scope::Instance => notes.push(format!(
                    "one instance of the {} serving {}: not the whole version",
                    d.actual_values, ctx.version
                )),
                Scope::BothVersions => notes.push(
                    "both versions left the pre-deploy level: a dependency or the load, which the old version shares"
                        .into(),
                ),
                Scope::Version => {}
            }
            if change.is_none() && mode == Mode::Deploy {
                notes.push(no_change_note());
            }
            out.push(Suspect {
                dimension: d.name.clone(),
                value: e.value.clone(),
                share: round4(e.share),
                change,
                scope,
                surprise: Some(round4(e.surprise)),
                note: (!notes.is_empty()).then(|| notes.join("; ")),
                rule: Some(rule.name.clone()),
            });
        }
    }
    if out.is_empty() {
        // No label narrows the excess down: it is everywhere.
        let (dimension, value, scope, note) = match mode {
            Mode::Deploy => (
                ctx.version_label,
                ctx.version,
                Scope::Version,
                format!(
                    "the whole new version: no label narrows the excess down; {}",
                    no_change_note()
                ),
            ),
            Mode::Shared => (
                ctx.service_label,
                ctx.service,
                Scope::BothVersions,
                "the whole service, both versions: a dependency or the load, which the old version shares"
                    .to_string(),
            ),
        };
        out.push(Suspect {
            dimension: dimension.to_string(),
            value: value.to_string(),
            share: 1.0,
            change: None,
            scope,
            surprise: None,
            note: Some(note),
            rule: Some(rule.name.clone()),
        });
    }
    out
}

/// A ratio or quantile rule's events over exposure in a window: a rate the pre-deploy level
/// and the current level of each side can be compared by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub events: f64,
    pub exposure: f64,
    /// Quantile rules: the latency above which a request is counted.
    pub latency: Option<f64>,
}

impl Level {
    pub fn rate(&self) -> f64 {
        if self.exposure > 0.0 {
            self.events / self.exposure
        } else {
            0.0
        }
    }
}

/// How much of the old version's data before a deploy it takes to say what "before the
/// deploy" was, and so to tell a degradation both versions share (not the deploy) from
/// noise: 10 minutes, five times the 2-minute window both versions are compared over
/// (docs/explain.md). With less, no shared degradation is claimed (issue 16: 40 s of
/// history once made a steady 1 % look like a degradation of the old version).
pub const MIN_PRE_HISTORY_MS: i64 = 10 * 60_000;

/// How long before `at` the oldest of `series` has data (0 if none has any before `at`).
pub fn history_before(series: &[Arc<Series>], at: i64) -> i64 {
    series
        .iter()
        .filter_map(|s| s.data.lock().first_ts())
        .min()
        .map_or(0, |first| (at - first).max(0))
}

/// Whether a level can be measured for this rule (counted events on both sides).
pub fn has_level(rule: &Rule) -> bool {
    rule.bad == Bad::Up && matches!(rule.signal, Signal::Ratio { .. } | Signal::Quantile { .. })
}

/// The rule's level over `w`; `latency` fixes the slow-request threshold (quantile rules;
/// `None`: these series' own quantile, for the pre-deploy level).
pub fn level(
    rule: &Rule,
    series: &[Arc<Series>],
    w: Window,
    latency: Option<f64>,
) -> Option<Level> {
    if !has_level(rule) {
        return None;
    }
    let latency = match rule.signal {
        Signal::Quantile { quantile, .. } => {
            Some(latency.or_else(|| measure::quantile_of(quantile, series, w.0, w.1))?)
        }
        _ => None,
    };
    let obs = measure::observe(rule, series, w.0, w.1, latency);
    let (events, exposure) = measure::totals(&obs);
    (exposure > 0.0).then_some(Level {
        events,
        exposure,
        latency,
    })
}

/// Whether `now` is worse than `pre` beyond the rule's warn threshold and beyond noise:
/// a z-score of 3 of the two Poisson counts, the pre-deploy rate's own noise included (a
/// short pre-deploy window measures its rate poorly). For quantile rules the rate is the
/// share of requests slower than the pre-deploy quantile, and "worse" is twice that share.
pub fn deviates(rule: &Rule, pre: &Level, now: &Level) -> bool {
    let r0 = pre.rate();
    let expected = now.exposure * r0;
    // Var(now − expected) = expected (now's count) + expected² / pre.events (the rate's).
    let spread = if pre.exposure > 0.0 {
        expected * (1.0 + now.exposure / pre.exposure)
    } else {
        f64::INFINITY
    };
    let z = (now.events - expected) / (spread + 1.0).sqrt();
    z >= 3.0 && beyond_warn(rule, pre, now)
}

/// Whether `now`'s rate is beyond the rule's warn threshold of `reference`'s, by the point
/// estimates alone (for quantile rules: twice the share of slow requests).
pub fn beyond_warn(rule: &Rule, reference: &Level, now: &Level) -> bool {
    let (r0, r) = (reference.rate(), now.rate());
    match rule.signal {
        Signal::Quantile { .. } => r >= 2.0 * r0,
        _ => {
            let th = Tier::ALL.iter().find_map(|t| rule.threshold(*t));
            th.is_none_or(|th| r >= r0 * th.relative && r - r0 >= th.absolute)
        }
    }
}

/// Whether `now` is back within the rule's warn threshold of `pre` (recovery).
pub fn within_warn(rule: &Rule, pre: &Level, now: &Level) -> bool {
    let (r0, r) = (pre.rate(), now.rate());
    match rule.signal {
        Signal::Quantile { .. } => r < 2.0 * r0.max(1e-9),
        _ => match Tier::ALL.iter().find_map(|t| rule.threshold(*t)) {
            Some(th) => r <= (r0 * th.relative).max(r0 + th.absolute),
            None => r <= r0,
        },
    }
}

/// One line naming the first suspects, for the timeline and alerts.
pub fn summary(suspects: &[Suspect]) -> String {
    suspects
        .iter()
        .take(3)
        .map(|s| {
            let mut t = format!(
                "{}={} ({:.0}% of the excess, {})",
                s.dimension,
                s.value,
                s.share * 100.0,
                s.scope.as_str()
            );
            if let Some(c) = &s.change {
                t += &format!(", change {c}");
            }
            t
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    fn error_rate() -> Rule {
        RuleSet::embedded()
            .rules
            .into_iter()
            .find(|r| r.name == "error_rate")
            .expect("the default error_rate rule")
    }

    fn level(events: f64, exposure: f64) -> Level {
        Level {
            events,
            exposure,
            latency: None,
        }
    }

    /// Issue 16: 40 s of history (900 requests, 4 errors: 0.44 %) says too little about
    /// "before" to call a steady 1 % worse; 30 minutes of 1 % against 3 % now do.
    #[test]
    fn issue16_a_short_pre_deploy_window_is_not_a_level_to_deviate_from() {
        let r = error_rate();
        let now = level(36.0, 3600.0);
        assert!(!deviates(&r, &level(4.0, 900.0), &now));
        assert!(!deviates(&r, &level(540.0, 54_000.0), &now), "1 % is 1 %");
        assert!(deviates(&r, &level(540.0, 54_000.0), &level(108.0, 3600.0)));
        assert!(!deviates(&r, &level(0.0, 0.0), &now), "no before, no claim");
    }
}
