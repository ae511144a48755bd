//! Printing: the deploys a backtest found (and, with a second rule set, the difference) in;
//! a table for people or JSON (`{"deploys": [DEPLOY...], "not_deployed": [...],
//! "comparison": {...}}`) out, with every version that was not judged as a deploy and why.

use serde::Serialize;
use serde_json::json;

use super::{BacktestArgs, Outcome, Stats};
use crate::deploy::tracker::{NotDeployed, Undeployed};
use crate::deploy::{DeployJson, Scope, Verdict};
use crate::logging::rfc3339_ms;

/// When a deploy was first flagged (warn or worse): the first such verdict change.
pub fn flagged_at(d: &DeployJson) -> Option<i64> {
    d.timeline
        .iter()
        .find(|e| e.event == "verdict_changed" && e.verdict.is_some_and(Verdict::is_regression))
        .map(|e| e.at)
}

/// The rule that decided the current verdict (the last verdict change naming one).
pub fn deciding_rule(d: &DeployJson) -> Option<&str> {
    if d.verdict <= Verdict::Pass {
        return None;
    }
    d.timeline
        .iter()
        .rev()
        .find(|e| e.event == "verdict_changed" && e.verdict == Some(d.verdict))
        .and_then(|e| e.rule.as_deref())
}

/// The first suspect implicating the new version (or one of its pods).
pub fn top_suspect(d: &DeployJson) -> Option<String> {
    d.suspects
        .iter()
        .find(|s| s.scope != Scope::BothVersions)
        .map(|s| format!("{}={} ({:.0}%)", s.dimension, s.value, s.share * 100.0))
}

/// A deploy as the comparison names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flagged {
    pub id: String,
    pub service: String,
    pub version: String,
    pub verdict: Verdict,
    pub flagged_at: Option<i64>,
    /// From the deploy's start to its first warn-or-worse verdict.
    pub detection_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictChange {
    pub id: String,
    pub service: String,
    pub version: String,
    pub before: Verdict,
    pub after: Verdict,
}

/// A deploy reached the same milestone at another time: `what` is `flagged` (its first warn
/// or worse) or the final verdict both rule sets gave it (its `verdict_at`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionChange {
    pub id: String,
    pub service: String,
    pub version: String,
    pub what: String,
    /// From the deploy's start, under each rule set.
    pub before_ms: i64,
    pub after_ms: i64,
    /// Positive: flagged this much earlier under the compared rules.
    pub gained_ms: i64,
}

/// The difference between the deploys under `--rules` (before) and `--compare-rules` (after).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub flagged_before: usize,
    pub flagged_after: usize,
    pub newly_flagged: Vec<Flagged>,
    pub no_longer_flagged: Vec<Flagged>,
    pub verdict_changes: Vec<VerdictChange>,
    /// Deploys flagged under both that were flagged, or reached their common final
    /// verdict, at another time.
    pub detection_changes: Vec<DetectionChange>,
}

fn flagged(d: &DeployJson) -> Flagged {
    let at = flagged_at(d);
    Flagged {
        id: d.id.clone(),
        service: d.service.clone(),
        version: d.version.clone(),
        verdict: d.verdict,
        flagged_at: at,
        detection_ms: at.map(|a| a - d.started_at),
    }
}

/// Deploys are matched by id (service, version and start: the same history gives the same
/// ids under any rules, since detection does not depend on them).
pub fn compare(before: &[DeployJson], after: &[DeployJson]) -> Comparison {
    let find = |list: &[DeployJson], id: &str| list.iter().find(|d| d.id == id).cloned();
    let is_flagged = |d: &Option<DeployJson>| d.as_ref().is_some_and(|d| flagged_at(d).is_some());
    let mut ids: Vec<(i64, String)> = before
        .iter()
        .chain(after)
        .map(|d| (d.started_at, d.id.clone()))
        .collect();
    ids.sort();
    ids.dedup();
    let mut c = Comparison {
        flagged_before: before.iter().filter(|d| flagged_at(d).is_some()).count(),
        flagged_after: after.iter().filter(|d| flagged_at(d).is_some()).count(),
        newly_flagged: Vec::new(),
        no_longer_flagged: Vec::new(),
        verdict_changes: Vec::new(),
        detection_changes: Vec::new(),
    };
    for (_, id) in ids {
        let (b, a) = (find(before, &id), find(after, &id));
        match (is_flagged(&b), is_flagged(&a)) {
            (false, true) => c.newly_flagged.push(flagged(a.as_ref().expect("flagged"))),
            (true, false) => c
                .no_longer_flagged
                .push(flagged(b.as_ref().expect("flagged"))),
            (true, true) => {
                let (db, da) = (b.as_ref().unwrap(), a.as_ref().unwrap());
                let mut change = |what: String, x: Option<i64>, y: Option<i64>| {
                    if let (Some(x), Some(y)) = (x, y) {
                        if x != y {
                            c.detection_changes.push(DetectionChange {
                                id: id.clone(),
                                service: da.service.clone(),
                                version: da.version.clone(),
                                what,
                                before_ms: x - db.started_at,
                                after_ms: y - da.started_at,
                                gained_ms: x - y,
                            });
                        }
                    }
                };
                change("flagged".into(), flagged_at(db), flagged_at(da));
                if db.verdict == da.verdict {
                    change(db.verdict.to_string(), db.verdict_at, da.verdict_at);
                }
            }
            (false, false) => {}
        }
        if let (Some(b), Some(a)) = (&b, &a) {
            if b.verdict != a.verdict {
                c.verdict_changes.push(VerdictChange {
                    id: id.clone(),
                    service: a.service.clone(),
                    version: a.version.clone(),
                    before: b.verdict,
                    after: a.verdict,
                });
            }
        }
    }
    c
}

/// `{"deploys": [...], "not_deployed": [...]}`, plus `"comparison"` (with the compared rules' deploys) if asked.
pub fn json(o: &Outcome, args: &BacktestArgs) -> String {
    let mut v = json!({ "deploys": o.deploys, "not_deployed": o.not_deployed });
    if let Some(after) = &o.compared {
        let mut c = serde_json::to_value(compare(&o.deploys, after)).expect("serialisable");
        c["rules"] = json!(files(&args.rules));
        c["compare_rules"] = json!(files(&args.compare_rules));
        c["deploys"] = json!(after);
        v["comparison"] = c;
    }
    serde_json::to_string_pretty(&v).expect("serialisable")
}

fn files(f: &[std::path::PathBuf]) -> Vec<String> {
    if f.is_empty() {
        return vec!["<default rules>".into()];
    }
    f.iter().map(|p| p.display().to_string()).collect()
}

/// One row per deploy, oldest first, then the comparison if any.
pub fn table(o: &Outcome, args: &BacktestArgs) -> String {
    let mut out = deploy_table(&o.deploys);
    out += &not_deployed_lines(&o.not_deployed);
    if let Some(after) = &o.compared {
        let c = compare(&o.deploys, after);
        let (b, a) = (
            files(&args.rules).join(","),
            files(&args.compare_rules).join(","),
        );
        out += &format!("\nUnder --compare-rules {a}:\n");
        out += &deploy_table(after);
        out += &format!(
            "\nComparison, {b} -> {a}: flagged (warn or worse) {} -> {}\n",
            c.flagged_before, c.flagged_after
        );
        let line = |f: &Flagged| {
            format!(
                "  {} {} ({}): {}, first flagged at {}, {} after the deploy started\n",
                f.service,
                f.version,
                f.id,
                f.verdict,
                f.flagged_at.map(rfc3339_ms).unwrap_or_else(|| "-".into()),
                f.detection_ms.map(secs).unwrap_or_else(|| "-".into())
            )
        };
        out += &format!("newly flagged: {}\n", c.newly_flagged.len());
        c.newly_flagged.iter().for_each(|f| out += &line(f));
        out += &format!("no longer flagged: {}\n", c.no_longer_flagged.len());
        c.no_longer_flagged.iter().for_each(|f| out += &line(f));
        out += &format!("verdict changes: {}\n", c.verdict_changes.len());
        for v in &c.verdict_changes {
            out += &format!(
                "  {} {} ({}): {} -> {}\n",
                v.service, v.version, v.id, v.before, v.after
            );
        }
        out += &format!("detection time changes: {}\n", c.detection_changes.len());
        for d in &c.detection_changes {
            let how = if d.gained_ms > 0 { "earlier" } else { "later" };
            out += &format!(
                "  {} {} ({}): {} after {} -> {} ({} {how})\n",
                d.service,
                d.version,
                d.id,
                d.what,
                secs(d.before_ms),
                secs(d.after_ms),
                secs(d.gained_ms.abs())
            );
        }
    }
    out.trim_end().to_string()
}

/// Every version in the history that was not judged as a deploy, one line each with why.
pub fn not_deployed_lines(list: &[Undeployed]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut out = match list.len() {
        1 => "1 version not judged as a deploy:\n".to_string(),
        n => format!("{n} versions not judged as deploys:\n"),
    };
    for u in list {
        let why = match &u.why {
            NotDeployed::RunningBefore { serving_since, .. } => format!(
                "serving since {}, at or before --from: running before the range",
                rfc3339_ms(*serving_since)
            ),
            NotDeployed::WithinGrace {
                serving_since,
                first_sample,
                grace_ms,
            } => format!(
                "serving since {}, within {} of the service's first sample ({}, after --from: \
                 nothing of the service before it): taken as running when its history begins",
                rfc3339_ms(*serving_since),
                secs(*grace_ms),
                rfc3339_ms(*first_sample)
            ),
            NotDeployed::NotServing => {
                "on no series the rules select (it does not serve requests the rules judge)".into()
            }
        };
        out += &format!("  {} {}: {why}\n", u.service, u.version);
    }
    out
}

fn secs(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.3}s", ms as f64 / 1000.0)
    }
}

fn deploy_table(deploys: &[DeployJson]) -> String {
    let mut rows = vec![[
        "SERVICE",
        "VERSION",
        "BASELINE",
        "STRATEGY",
        "STARTED",
        "VERDICT",
        "VERDICT_AT",
        "RULE",
        "TOP SUSPECT",
    ]
    .map(String::from)];
    for d in deploys.iter().rev() {
        let strategy = serde_json::to_value(d.strategy)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        rows.push([
            d.service.clone(),
            d.version.clone(),
            d.baseline_version.clone().unwrap_or_else(|| "-".into()),
            strategy,
            rfc3339_ms(d.started_at),
            d.verdict.to_string(),
            d.verdict_at.map(rfc3339_ms).unwrap_or_else(|| "-".into()),
            deciding_rule(d).unwrap_or("-").to_string(),
            top_suspect(d).unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0usize; 9];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line += c;
            } else {
                line += &format!("{c:<w$}  ");
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    let mut counts = std::collections::BTreeMap::new();
    for d in deploys {
        *counts.entry(d.verdict).or_insert(0) += 1;
    }
    let summary: Vec<String> = counts
        .iter()
        .rev()
        .map(|(v, n)| format!("{n} {v}"))
        .collect();
    out += &format!("{} deploys: {}\n", deploys.len(), summary.join(", "));
    out
}

/// What the backtest read and how long each half took (printed to stderr).
pub fn stats_line(s: &Stats) -> String {
    let cpu = |d: Option<std::time::Duration>| {
        d.map(|d| format!(", {:.2}s CPU", d.as_secs_f64()))
            .unwrap_or_default()
    };
    format!(
        "backtest: read {} samples of {} series in {} queries ({:.2}s reading{}), {} pushes replayed ({:.2}s judging{}), {:.2}s in all{}",
        s.samples,
        s.series,
        s.chunks,
        s.read.as_secs_f64(),
        cpu(s.read_cpu),
        s.pushes,
        s.replay.as_secs_f64(),
        cpu(s.replay_cpu),
        s.wall.as_secs_f64(),
        if s.dropped > 0 {
            format!("; {} samples dropped by the store (duplicate or out of order)", s.dropped)
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::{Event, Phase, Source, Strategy};

    fn deploy(id: &str, started: i64, verdict: Verdict, changes: &[(i64, Verdict)]) -> DeployJson {
        DeployJson {
            id: id.into(),
            service: "svc".into(),
            version: id.into(),
            baseline_version: Some("v0".into()),
            strategy: Strategy::Canary,
            source: Source::Detected,
            started_at: started,
            phase: Phase::Done,
            verdict,
            verdict_at: changes.last().map(|c| c.0),
            commit: String::new(),
            author: String::new(),
            url: String::new(),
            changes: Vec::new(),
            rules: Vec::new(),
            suspects: Vec::new(),
            timeline: changes
                .iter()
                .map(|&(at, v)| Event {
                    at,
                    event: "verdict_changed".into(),
                    verdict: Some(v),
                    rule: Some("error_rate".into()),
                    detail: String::new(),
                })
                .collect(),
            comparison: "side-by-side".into(),
            reason: String::new(),
            report_url: String::new(),
        }
    }

    #[test]
    fn comparison_names_new_and_lost_flags_verdicts_and_detection_times() {
        use Verdict::*;
        let before = vec![
            deploy("a", 0, Pass, &[(60_000, Pass)]),
            deploy("b", 0, Rollback, &[(30_000, Warn), (45_000, Rollback)]),
            deploy("c", 0, Warn, &[(90_000, Warn)]),
            deploy("d", 0, Pending, &[]),
        ];
        let after = vec![
            deploy("a", 0, Warn, &[(15_000, Warn)]),
            deploy("b", 0, Rollback, &[(15_000, Rollback)]),
            deploy("c", 0, Pass, &[(60_000, Pass)]),
            deploy("d", 0, Pending, &[]),
        ];
        let c = compare(&before, &after);
        assert_eq!((c.flagged_before, c.flagged_after), (2, 2));
        assert_eq!(c.newly_flagged.len(), 1);
        assert_eq!(c.newly_flagged[0].id, "a");
        assert_eq!(c.newly_flagged[0].detection_ms, Some(15_000));
        assert_eq!(c.no_longer_flagged.len(), 1);
        assert_eq!(c.no_longer_flagged[0].id, "c");
        let changes: Vec<(&str, Verdict, Verdict)> = c
            .verdict_changes
            .iter()
            .map(|v| (v.id.as_str(), v.before, v.after))
            .collect();
        assert_eq!(changes, [("a", Pass, Warn), ("c", Warn, Pass)]);
        let det: Vec<(&str, &str, i64)> = c
            .detection_changes
            .iter()
            .map(|d| (d.id.as_str(), d.what.as_str(), d.gained_ms))
            .collect();
        assert_eq!(det, [("b", "flagged", 15_000), ("b", "rollback", 30_000)]);
        assert_eq!(deciding_rule(&before[1]), Some("error_rate"));
        assert_eq!(deciding_rule(&before[0]), None);
    }
}
