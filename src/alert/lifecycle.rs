//! Desired alert state from deploys: the deploys' verdicts and phases in, the alerts to send
//! now (firing or resolved, Prometheus' lifecycle) and the timeline events they cause out.
//! Pure: the caller passes the wall-clock time.

use std::collections::{BTreeMap, HashMap};

use crate::deploy::{DeployJson, Phase, Verdict};

use super::{Alert, ALERT_NAME};

/// An event for a deploy's timeline (`Deploys::record`).
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEvent {
    pub deploy_id: String,
    /// `alert_firing` or `alert_resolved`.
    pub event: &'static str,
    pub detail: String,
    /// The alert's labels, for the log line.
    pub labels: BTreeMap<String, String>,
}

/// What one evaluation decided.
#[derive(Debug, Default)]
pub struct Step {
    /// Alerts to deliver to every Alertmanager, in their current state.
    pub send: Vec<Alert>,
    pub events: Vec<TimelineEvent>,
}

/// One alert deploywatch has sent (or is about to).
#[derive(Debug)]
struct Tracked {
    alert: Alert,
    deploy_id: String,
    resolved_at: Option<i64>,
    last_sent: Option<i64>,
}

/// The alerts of all deploys, as Prometheus keeps a rule's active alerts: firing alerts are
/// re-sent every resend interval with `endsAt` four intervals ahead; a resolved alert is sent
/// at once with `endsAt` = resolution time and re-sent until `resolved_retention` has passed.
#[derive(Debug)]
pub struct Lifecycle {
    external_url: String,
    resend_ms: i64,
    resolved_retention_ms: i64,
    /// By label-set fingerprint: a change of labels (an escalation) is another alert.
    tracked: HashMap<String, Tracked>,
}

impl Lifecycle {
    pub fn new(external_url: &str, resend_ms: i64, resolved_retention_ms: i64) -> Lifecycle {
        Lifecycle {
            external_url: external_url.trim_end_matches('/').to_string(),
            resend_ms: resend_ms.max(1),
            resolved_retention_ms,
            tracked: HashMap::new(),
        }
    }

    /// Alerts currently firing.
    pub fn firing(&self) -> usize {
        self.tracked
            .values()
            .filter(|t| t.resolved_at.is_none())
            .count()
    }

    /// The alerts firing now (not those resolved and still being re-sent).
    pub fn firing_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.tracked
            .values()
            .filter(|t| t.resolved_at.is_none())
            .map(|t| &t.alert)
    }

    /// The deploys with a firing alert.
    pub fn firing_deploys(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .tracked
            .values()
            .filter(|t| t.resolved_at.is_none())
            .map(|t| t.deploy_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Compares the deploys with the alerts sent so far, at wall-clock `now` (Unix ms).
    pub fn step(&mut self, deploys: &[DeployJson], now: i64) -> Step {
        let mut step = Step::default();
        let mut wanted: HashMap<String, Alert> = HashMap::new();
        for d in deploys {
            if let Some(a) = desired(d, &self.external_url) {
                wanted.insert(a.fingerprint(), a);
            }
        }
        // Firing: new alerts start now; known ones take the latest annotations.
        for (fp, alert) in wanted.iter() {
            let deploy_id = alert.labels["deploy_id"].clone();
            match self.tracked.get_mut(fp) {
                Some(t) if t.resolved_at.is_none() => {
                    t.alert.annotations = alert.annotations.clone();
                }
                _ => {
                    // New, or firing again after having been resolved (a re-armed deploy).
                    let mut a = alert.clone();
                    a.starts_at = now;
                    step.events.push(TimelineEvent {
                        deploy_id: deploy_id.clone(),
                        event: "alert_firing",
                        detail: format!(
                            "{ALERT_NAME} firing: severity={} action={}",
                            a.labels["severity"], a.labels["action"]
                        ),
                        labels: a.labels.clone(),
                    });
                    self.tracked.insert(
                        fp.clone(),
                        Tracked {
                            alert: a,
                            deploy_id,
                            resolved_at: None,
                            last_sent: None,
                        },
                    );
                }
            }
        }
        // Resolved: firing alerts no longer wanted (escalated, superseded, passed, done).
        for (fp, t) in self.tracked.iter_mut() {
            if t.resolved_at.is_none() && !wanted.contains_key(fp) {
                t.resolved_at = Some(now);
                let why = resolution_reason(deploys, &t.deploy_id, &t.alert);
                step.events.push(TimelineEvent {
                    deploy_id: t.deploy_id.clone(),
                    event: "alert_resolved",
                    detail: format!(
                        "{ALERT_NAME} resolved: severity={} action={}; {why}",
                        t.alert.labels["severity"], t.alert.labels["action"]
                    ),
                    labels: t.alert.labels.clone(),
                });
            }
        }
        // Resolved alerts are forgotten once they have been re-sent for the retention.
        let retention = self.resolved_retention_ms;
        self.tracked
            .retain(|_, t| t.resolved_at.is_none_or(|r| now - r < retention));
        // What is due: new state changes at once, everything else every resend interval.
        let resend = self.resend_ms;
        for t in self.tracked.values_mut() {
            let due = match (t.last_sent, t.resolved_at) {
                (None, _) => true,
                (Some(sent), Some(resolved)) if sent < resolved => true,
                (Some(sent), _) => now - sent >= resend,
            };
            if !due {
                continue;
            }
            t.last_sent = Some(now);
            t.alert.ends_at = t.resolved_at.unwrap_or(now + 4 * resend);
            step.send.push(t.alert.clone());
        }
        step.send.sort_by(|a, b| a.labels.cmp(&b.labels));
        step.events.sort_by(|a, b| {
            (a.deploy_id.as_str(), a.event != "alert_resolved")
                .cmp(&(b.deploy_id.as_str(), b.event != "alert_resolved"))
        });
        step
    }
}

/// Why a deploy's alert no longer fires, for its timeline.
fn resolution_reason(deploys: &[DeployJson], id: &str, alert: &Alert) -> String {
    let Some(d) = deploys.iter().find(|d| d.id == id) else {
        return "the deploy is no longer known".into();
    };
    if d.verdict.is_regression() && d.phase != Phase::Done {
        return format!(
            "the verdict escalated to {} (a new label set fires)",
            d.verdict
        );
    }
    if d.phase == Phase::Done {
        let superseded = d.timeline.iter().rev().find(|e| e.event == "superseded");
        return match superseded {
            Some(e) => format!("deploy done: {}", e.detail),
            None => format!("deploy done with verdict {}", d.verdict),
        };
    }
    let _ = alert;
    format!("verdict {}", d.verdict)
}

/// `severity` and `action` labels of a verdict; `None` if it is not a regression.
pub fn severity_action(v: Verdict) -> Option<(&'static str, &'static str)> {
    match v {
        Verdict::Warn => Some(("warning", "notify")),
        Verdict::Pause => Some(("critical", "pause")),
        Verdict::Rollback => Some(("critical", "rollback")),
        Verdict::Pending | Verdict::Pass => None,
    }
}

/// The alert a deploy should have firing now (times unset), if any: a running deploy whose
/// verdict is warn, pause or rollback.
pub fn desired(d: &DeployJson, external_url: &str) -> Option<Alert> {
    if d.phase == Phase::Done {
        return None;
    }
    let (severity, action) = severity_action(d.verdict)?;
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), ALERT_NAME.to_string());
    labels.insert("service".into(), d.service.clone());
    labels.insert("version".into(), d.version.clone());
    if let Some(b) = d.baseline_version.as_ref().filter(|b| !b.is_empty()) {
        labels.insert("baseline_version".into(), b.clone());
    }
    labels.insert("deploy_id".into(), d.id.clone());
    labels.insert("severity".into(), severity.into());
    labels.insert("action".into(), action.into());

    let fired: Vec<_> = d
        .rules
        .iter()
        .filter(|r| r.verdict.is_regression())
        .collect();
    let names: Vec<&str> = fired.iter().map(|r| r.rule.as_str()).collect();
    let against = match &d.baseline_version {
        Some(b) if d.comparison != "before-after" => format!(" against {b}"),
        _ => " against the service before the deploy".into(),
    };
    let advice = match d.verdict {
        Verdict::Rollback => "roll it back",
        Verdict::Pause => "pause the rollout",
        _ => "watch it",
    };
    let summary = format!(
        "{} {} regressed{against} ({}): {advice}.",
        d.service,
        d.version,
        if names.is_empty() {
            "see the report".to_string()
        } else {
            names.join(", ")
        }
    );

    let when = d
        .verdict_at
        .map(rfc3339)
        .unwrap_or_else(|| "unknown".into());
    let mut description = format!(
        "Verdict {} for {} {} (deploy {}) reached at event time {when}.",
        d.verdict, d.service, d.version, d.id
    );
    let (before, after) = if d.comparison == "before-after" {
        ("before".to_string(), "after".to_string())
    } else {
        (
            d.baseline_version
                .clone()
                .unwrap_or_else(|| "baseline".into()),
            d.version.clone(),
        )
    };
    for r in &fired {
        description.push_str(&format!(
            "\n{} ({}): {before} {} → {after} {}",
            r.rule,
            r.verdict,
            num(r.baseline.value),
            num(r.canary.value),
        ));
        if let Some(e) = r.effect {
            description.push_str(&format!(" (×{e:.2})"));
        }
        description.push_str(&format!(
            ", confidence {:.4}, samples {} / {}",
            r.confidence,
            num(Some(r.baseline.samples)),
            num(Some(r.canary.samples))
        ));
        if !r.reason.is_empty() {
            description.push_str(&format!(". {}", r.reason));
        }
    }

    let suspects = if d.suspects.is_empty() {
        "none identified".to_string()
    } else {
        d.suspects
            .iter()
            .take(5)
            .map(|s| {
                let mut t = format!(
                    "{}={} ({:.0}% of the regression",
                    s.dimension,
                    s.value,
                    s.share * 100.0
                );
                if let Some(c) = &s.change {
                    t.push_str(&format!("; change {c}"));
                }
                t.push(')');
                t
            })
            .collect::<Vec<_>>()
            .join("; ")
    };

    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_string(), summary);
    annotations.insert("description".into(), description);
    annotations.insert("suspects".into(), suspects);
    if !d.commit.is_empty() {
        annotations.insert("commit".into(), d.commit.clone());
    }
    annotations.insert(
        "report_url".into(),
        format!("{external_url}/api/v1/deploys/{}/report", d.id),
    );
    Some(Alert {
        labels,
        annotations,
        starts_at: 0,
        ends_at: 0,
        generator_url: format!("{external_url}/deploys/{}", d.id),
    })
}

/// A statistic for people: 4 significant decimals, no trailing zeros.
fn num(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
        Some(v) => {
            let s = format!("{v:.4}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            if s == "0" || s == "-0" {
                format!("{v:.2e}")
            } else {
                s.to_string()
            }
        }
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::deploy::{Event, RuleJson, SideJson, Source, Strategy, Suspect};

    const MIN: i64 = 60_000;
    const T0: i64 = 1_800_000_000_000;

    pub(crate) fn deploy(id: &str, verdict: Verdict, phase: Phase) -> DeployJson {
        DeployJson {
            id: id.into(),
            service: "checkout".into(),
            version: "v2".into(),
            baseline_version: Some("v1".into()),
            strategy: Strategy::Canary,
            source: Source::Api,
            started_at: 1_764_000_000_000,
            phase,
            verdict,
            verdict_at: Some(1_764_000_095_000),
            commit: "3f2c9e1".into(),
            author: "ci".into(),
            url: String::new(),
            changes: vec![],
            rules: vec![RuleJson {
                rule: "error_rate".into(),
                verdict,
                canary: SideJson {
                    value: Some(0.031),
                    samples: 4120.0,
                },
                baseline: SideJson {
                    value: Some(0.001),
                    samples: 39877.0,
                },
                effect: Some(31.0),
                confidence: 0.9999,
                reason: "errors up".into(),
                matched_series: 4,
                histogram: None,
            }],
            suspects: vec![serde_json::from_value::<Suspect>(serde_json::json!({
                "dimension": "route", "value": "/checkout", "share": 0.83,
                "change": "redis-pool"
            }))
            .unwrap()],
            timeline: vec![],
            comparison: "side-by-side".into(),
            reason: String::new(),
            report_url: String::new(),
        }
    }

    fn lc() -> Lifecycle {
        Lifecycle::new("http://dw.example:10997/", MIN, 15 * MIN)
    }

    #[test]
    fn labels_and_annotations_follow_the_contract() {
        let a = desired(
            &deploy("checkout-v2-1", Verdict::Rollback, Phase::Observing),
            "http://dw:1",
        )
        .unwrap();
        let l: Vec<(&str, &str)> = a
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            l,
            [
                ("action", "rollback"),
                ("alertname", "DeployRegression"),
                ("baseline_version", "v1"),
                ("deploy_id", "checkout-v2-1"),
                ("service", "checkout"),
                ("severity", "critical"),
                ("version", "v2"),
            ]
        );
        assert_eq!(a.generator_url, "http://dw:1/deploys/checkout-v2-1");
        assert_eq!(
            a.annotations["report_url"],
            "http://dw:1/api/v1/deploys/checkout-v2-1/report"
        );
        assert_eq!(a.annotations["commit"], "3f2c9e1");
        let desc = &a.annotations["description"];
        assert!(desc.contains("2025-11-24T16:01:35.000Z"), "{desc}");
        assert!(desc.contains("v1 0.001 → v2 0.031 (×31.00)"), "{desc}");
        assert!(a.annotations["suspects"].contains("route=/checkout (83%"));
        assert!(a.annotations["summary"].contains("roll it back"));
        for (v, sev, act) in [
            (Verdict::Warn, "warning", "notify"),
            (Verdict::Pause, "critical", "pause"),
        ] {
            let a = desired(&deploy("x", v, Phase::Observing), "http://dw:1").unwrap();
            assert_eq!((&*a.labels["severity"], &*a.labels["action"]), (sev, act));
        }
        for v in [Verdict::Pending, Verdict::Pass] {
            assert!(desired(&deploy("x", v, Phase::Observing), "http://dw:1").is_none());
        }
        assert!(desired(&deploy("x", Verdict::Rollback, Phase::Done), "http://dw:1").is_none());
    }

    #[test]
    fn firing_is_resent_every_interval_with_ends_at_four_intervals_ahead() {
        let mut lc = lc();
        let ds = [deploy("a", Verdict::Warn, Phase::Observing)];
        let s = lc.step(&ds, T0);
        assert_eq!(s.send.len(), 1);
        assert_eq!(s.send[0].starts_at, T0);
        assert_eq!(s.send[0].ends_at, T0 + 4 * MIN);
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].event, "alert_firing");
        // Nothing due within the interval.
        assert!(lc.step(&ds, T0 + MIN - 1).send.is_empty());
        let s = lc.step(&ds, T0 + MIN);
        assert_eq!(s.send.len(), 1);
        assert_eq!(s.send[0].starts_at, T0, "startsAt stays");
        assert_eq!(s.send[0].ends_at, T0 + 5 * MIN);
        assert!(s.events.is_empty());
    }

    #[test]
    fn escalation_resolves_the_old_label_set_and_fires_the_new() {
        let mut lc = lc();
        lc.step(&[deploy("a", Verdict::Warn, Phase::Observing)], T0);
        let s = lc.step(
            &[deploy("a", Verdict::Rollback, Phase::Observing)],
            T0 + 1000,
        );
        assert_eq!(s.send.len(), 2);
        let old = s
            .send
            .iter()
            .find(|a| a.labels["action"] == "notify")
            .unwrap();
        let new = s
            .send
            .iter()
            .find(|a| a.labels["action"] == "rollback")
            .unwrap();
        assert_eq!(old.ends_at, T0 + 1000, "resolved at the escalation");
        assert_eq!(new.starts_at, T0 + 1000);
        assert_eq!(new.ends_at, T0 + 1000 + 4 * MIN);
        let events: Vec<_> = s.events.iter().map(|e| e.event).collect();
        assert_eq!(events, ["alert_resolved", "alert_firing"]);
        assert!(s.events[0].detail.contains("escalated to rollback"));
        assert_eq!(lc.firing(), 1);
        let firing: Vec<&str> = lc
            .firing_alerts()
            .map(|a| a.labels["action"].as_str())
            .collect();
        assert_eq!(firing, ["rollback"], "the resolved warning is not firing");
    }

    #[test]
    fn a_done_deploy_is_resolved_and_resent_for_15_minutes() {
        let mut lc = lc();
        lc.step(&[deploy("a", Verdict::Pause, Phase::Observing)], T0);
        let mut done = deploy("a", Verdict::Pause, Phase::Done);
        done.timeline.push(Event {
            at: 1,
            event: "superseded".into(),
            verdict: None,
            rule: None,
            detail: "superseded by checkout v3".into(),
        });
        let r = T0 + 30_000;
        let s = lc.step(std::slice::from_ref(&done), r);
        assert_eq!(s.send.len(), 1, "resolved at once, not at the next resend");
        assert_eq!(s.send[0].ends_at, r);
        assert_eq!(s.send[0].starts_at, T0);
        assert!(s.events[0].detail.contains("superseded by checkout v3"));
        let mut resent = 0;
        let mut t = r;
        while t < r + 20 * MIN {
            t += 1000;
            let s = lc.step(std::slice::from_ref(&done), t);
            for a in &s.send {
                assert_eq!(a.ends_at, r, "endsAt stays the resolution time");
                resent += 1;
            }
            assert!(s.events.is_empty());
        }
        assert_eq!(resent, 14, "re-sent each minute for 15 minutes");
        assert_eq!(lc.tracked.len(), 0, "forgotten after the retention");
        // A deploy that vanished from the list resolves as well.
        let mut lc2 = self::lc();
        lc2.step(&[deploy("b", Verdict::Warn, Phase::Observing)], T0);
        let s = lc2.step(&[], T0 + 1);
        assert_eq!(s.send[0].ends_at, T0 + 1);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(Some(0.031)), "0.031");
        assert_eq!(num(Some(39877.0)), "39877");
        assert_eq!(num(Some(0.000012)), "1.20e-5");
        assert_eq!(num(Some(123.456)), "123.5");
        assert_eq!(num(None), "n/a");
        assert_eq!(rfc3339(1_764_000_000_000), "2025-11-24T16:00:00.000Z");
    }
}
