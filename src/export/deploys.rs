//! The derived metrics of the contract: the deploys held in memory and the alerts firing in,
//! `deploywatch_deploy_*` and `deploywatch_rule_*` families out, built at scrape time from
//! a snapshot of their state (never mirrored into gauges). O(deploys held): the active
//! ones and each service's newest finished one.
//!
//! They carry the judged service's `service` and `version` labels, so whatever scrapes
//! deploywatch sets `honor_labels: true` (shipped configs do; contract section 3).

use std::collections::HashMap;

use super::TextEncoder;
use crate::deploy::tracker::Deploys;
use crate::deploy::Phase;

/// A `DeployRegression` alert firing now, as `alert`'s lifecycle holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FiringAlert {
    pub service: String,
    pub version: String,
    pub deploy_id: String,
    pub severity: String,
    pub action: String,
}

/// Every phase a deploy can be in, as exported (`deploywatch_deploy_phase{phase}`).
pub const PHASES: [(Phase, &str); 3] = [
    (Phase::Warmup, "warmup"),
    (Phase::Observing, "observing"),
    (Phase::Done, "done"),
];

/// A metric family to write: name, help, label names, and (label values, value) lines.
type Family<'a> = (&'a str, &'a str, &'a [&'a str], Vec<(Vec<String>, f64)>);

/// Writes the derived metrics of the deploys held (those being judged, and each service's
/// newest finished one) and of the `firing` alerts.
pub fn encode(deploys: &Deploys, firing: &[FiringAlert], e: &mut TextEncoder) {
    // The newest deploy of each service, and any deploy still being judged.
    let mut newest: HashMap<String, String> = Default::default();
    deploys.for_each(|d| {
        newest.insert(d.service.clone(), d.id.clone());
    });
    let mut deploy_lines = Vec::new();
    let mut phase_lines = Vec::new();
    let mut started = Vec::new();
    let mut rule_lines = Vec::new();
    let mut value_lines = Vec::new();
    deploys.for_each(|d| {
        if d.phase == Phase::Done && newest.get(&d.service) != Some(&d.id) {
            return;
        }
        let base = d.baseline_version.clone().unwrap_or_default();
        deploy_lines.push((
            vec![d.service.clone(), d.version.clone(), base, d.id.clone()],
            d.verdict.code() as f64,
        ));
        // Every phase, 1 for the current one (as kube-state-metrics' pod phase): a phase
        // change moves a value, it does not end one series and start another.
        for (phase, name) in PHASES {
            phase_lines.push((
                vec![
                    d.service.clone(),
                    d.version.clone(),
                    d.id.clone(),
                    name.to_string(),
                ],
                if d.phase == phase { 1.0 } else { 0.0 },
            ));
        }
        started.push((
            vec![d.service.clone(), d.version.clone(), d.commit.clone()],
            d.started_at as f64 / 1000.0,
        ));
        for r in &d.rules {
            let labels = vec![
                d.service.clone(),
                d.version.clone(),
                d.id.clone(),
                r.rule.name.clone(),
            ];
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
    let mut alert_lines: Vec<(Vec<String>, f64)> = firing
        .iter()
        .map(|a| {
            (
                vec![
                    a.service.clone(),
                    a.version.clone(),
                    a.deploy_id.clone(),
                    a.severity.clone(),
                    a.action.clone(),
                ],
                1.0,
            )
        })
        .collect();
    alert_lines.sort_by(|a, b| a.0.cmp(&b.0));
    alert_lines.dedup_by(|a, b| a.0 == b.0);
    let families: [Family; 6] = [
        (
            "deploywatch_deploy_verdict",
            "Verdict of a deploy: 0 pending, 1 pass, 2 warn, 3 pause, 4 rollback.",
            &["service", "version", "baseline_version", "deploy_id"],
            deploy_lines,
        ),
        (
            "deploywatch_deploy_phase",
            "Phase of a deploy: 1 for its current phase (warmup, observing, done), 0 for the others.",
            &["service", "version", "deploy_id", "phase"],
            phase_lines,
        ),
        (
            "deploywatch_rule_verdict",
            "Verdict of one rule for a deploy: 0 pending, 1 pass, 2 warn, 3 pause, 4 rollback.",
            &["service", "version", "deploy_id", "rule"],
            rule_lines,
        ),
        (
            "deploywatch_rule_value",
            "The statistic a rule compares, for the new version (canary) and the baseline.",
            &["service", "version", "deploy_id", "rule", "side"],
            value_lines,
        ),
        (
            "deploywatch_deploy_alert_firing",
            "1 while a DeployRegression alert of the deploy fires (deploywatch sends it to Alertmanager itself, so Prometheus has no ALERTS series for it); absent otherwise.",
            &["service", "version", "deploy_id", "severity", "action"],
            alert_lines,
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
