//! A [`Report`] in, its Markdown out (GitHub-flavoured tables): what a reviewer reads in a
//! pull request, a chat message or an incident document.

use std::fmt::Write;

use super::{format_value, Report};

/// Escapes what would break a table cell or start markup.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "—".into())
}

/// The report as Markdown.
pub fn render(r: &Report) -> String {
    let d = &r.deploy;
    let mut o = String::new();
    let base = d.baseline_version.as_deref().unwrap_or("none");
    let _ = writeln!(
        o,
        "# Deploy report: {} {} (baseline {base})\n",
        d.service, d.version
    );
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| deploy | `{}` |", d.id);
    let _ = writeln!(o, "| strategy | {} ({}) |", d.strategy, d.comparison);
    let _ = writeln!(o, "| source | {} |", d.source);
    let _ = writeln!(o, "| started | {} |", d.started_at);
    let _ = writeln!(o, "| phase | {} |", serde_plain(&d.phase));
    let verdict_at = d
        .verdict_at
        .as_ref()
        .map(|t| format!(" since {t}"))
        .unwrap_or_default();
    let _ = writeln!(o, "| verdict | **{}**{verdict_at} |", d.verdict);
    if !d.commit.is_empty() || !d.author.is_empty() {
        let by = if d.author.is_empty() {
            String::new()
        } else {
            format!(" by {}", cell(&d.author))
        };
        let _ = writeln!(o, "| commit | `{}`{by} |", cell(&d.commit));
    }
    if !d.url.is_empty() {
        let _ = writeln!(o, "| pipeline | <{}> |", cell(&d.url));
    }
    if let Some(t) = &d.rollback_observed_at {
        let _ = writeln!(o, "| rollback observed | {t} |");
    }
    if let Some(t) = &d.recovered_at {
        let _ = writeln!(o, "| recovered | {t} |");
    }
    let _ = writeln!(o, "| as of | {} (event time) |", r.as_of);

    let _ = writeln!(o, "\n## Recommendations\n");
    for rec in &r.recommendations {
        let _ = writeln!(o, "- {rec}");
    }

    let _ = writeln!(o, "\n## Before and after\n");
    let _ = writeln!(
        o,
        "| rule | verdict | before | after | effect | confidence | samples before / after | first deviation |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---|");
    for x in &r.rules {
        let effect = x
            .effect
            .map(|e| format!("×{e:.2}"))
            .unwrap_or_else(|| "—".into());
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {effect} | {:.4} | {:.0} / {:.0} | {} |",
            x.rule,
            if super::not_needed(d.verdict, d.phase, x.verdict) {
                "not needed".to_string()
            } else {
                x.verdict.to_string()
            },
            format_value(&x.signal, x.before),
            format_value(&x.signal, x.after),
            x.confidence,
            x.before_samples,
            x.after_samples,
            opt(&x.first_deviation_at)
        );
    }

    let _ = writeln!(o, "\n## Anomalies\n");
    if r.anomalies.is_empty() {
        let _ = writeln!(o, "None: no rule deviated.");
    }
    for a in &r.anomalies {
        let _ = writeln!(
            o,
            "- **{}** since {} ({}, {}): {}",
            a.rule,
            a.since,
            a.scope.as_str(),
            a.verdict,
            a.detail
        );
    }

    let _ = writeln!(o, "\n## Suspects\n");
    if r.suspects.is_empty() {
        let _ = writeln!(o, "None named.");
    } else {
        let _ = writeln!(
            o,
            "| rule | dimension | value | share of excess | surprise | scope | change | note |"
        );
        let _ = writeln!(o, "|---|---|---|---:|---:|---|---|---|");
        for s in &r.suspects {
            let _ = writeln!(
                o,
                "| {} | {} | `{}` | {:.0}% | {} | {} | {} | {} |",
                s.rule.as_deref().unwrap_or("—"),
                cell(&s.dimension),
                cell(&s.value),
                s.share * 100.0,
                s.surprise
                    .map(|x| format!("{x:.4}"))
                    .unwrap_or_else(|| "—".into()),
                s.scope.as_str(),
                s.change.as_deref().map(cell).unwrap_or_else(|| "—".into()),
                s.note.as_deref().map(cell).unwrap_or_default()
            );
        }
    }

    let _ = writeln!(o, "\n## Changes\n");
    if r.changes.is_empty() {
        let _ = writeln!(o, "None registered.");
    }
    for c in &r.changes {
        let name = if c.component.is_empty() {
            "(no component)"
        } else {
            &c.component
        };
        let files = if c.files.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                c.files
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let sus = if c.suspects.is_empty() {
            String::new()
        } else {
            format!(" — suspected: {}", c.suspects.join(", "))
        };
        let summary = if c.summary.is_empty() {
            String::new()
        } else {
            format!(": {}", c.summary)
        };
        let _ = writeln!(o, "- **{name}**{summary}{files}{sus}");
    }

    let _ = writeln!(o, "\n## Actions taken\n");
    if r.actions.is_empty() {
        let _ = writeln!(o, "None recorded.");
    }
    for a in &r.actions {
        let _ = writeln!(o, "- {} `{}`: {}", a.at, a.event, a.detail);
    }

    let _ = writeln!(o, "\n## Timeline\n");
    let _ = writeln!(o, "| time | event | rule | verdict | detail |");
    let _ = writeln!(o, "|---|---|---|---|---|");
    for e in &r.timeline {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            e.at,
            e.event,
            e.rule.as_deref().unwrap_or(""),
            e.verdict.map(|v| v.as_str()).unwrap_or(""),
            cell(&e.detail)
        );
    }
    o
}

fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
