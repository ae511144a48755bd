//! HTML of the web page: deploys (the contract's DEPLOY JSON) and rule histories in, whole
//! documents out. Every string from the data goes through [`escape`]: label values, versions
//! and CI fields are user input.

use std::fmt::Write as _;

use crate::deploy::{DeployJson, Event, Phase, Verdict};
use crate::logging::rfc3339_ms;

use super::svg::{Chart, Line, Marker, Unit};
use super::RuleHistory;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value or path segment (everything but RFC 3986 unreserved).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Service groups per index page, older deploys shown per group, deploys per page of one
/// service: bounds that keep the page small with hundreds of deploys.
pub const GROUPS_PER_PAGE: usize = 20;
pub const OLDER_PER_GROUP: usize = 10;
pub const DEPLOYS_PER_PAGE: usize = 50;

const CSS: &str = r#"
:root{--bg:#fff;--fg:#1f2430;--muted:#5f6878;--line:#e2e5ea;--card:#f6f7f9;--link:#1c5fb8;
--canary:#ae3ec9;--baseline:#1c7ed6;--pending:#7b838f;--pass:#2b8a3e;--warn:#d9a400;--pause:#e8590c;--rollback:#d62f2f;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--fg:#e4e7ec;--muted:#9aa3b1;--line:#2d323b;--card:#1b1f26;--link:#7db3ff;
--canary:#da77f2;--baseline:#4dabf7;--pending:#868e96;--pass:#40a94f;--warn:#f0b90b;--pause:#f76707;--rollback:#f03e3e}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}
header.top{border-bottom:1px solid var(--line)}
header.top div{max-width:1680px;margin:0 auto;padding:10px 20px;display:flex;gap:18px;align-items:baseline}
header.top .brand{font-weight:700;font-size:17px;color:var(--fg)}
header.top nav{margin-left:auto;display:flex;gap:14px;font-size:14px}
main{max-width:1680px;margin:0 auto;padding:12px 20px 48px}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px}
.muted{color:var(--muted)}.small{font-size:13px}
code,.mono,time{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
.badge{display:inline-block;white-space:nowrap;min-width:64px;text-align:center;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:700;letter-spacing:.03em;text-transform:uppercase;color:#fff;background:var(--pending);vertical-align:1px}
.badge.pass{background:var(--pass)}.badge.warn{background:var(--warn);color:#1f1a00}.badge.pause{background:var(--pause)}.badge.rollback{background:var(--rollback)}
.badge.notneeded{background:none;color:var(--muted);border:1px solid var(--line)}
.badge.big{font-size:15px;padding:3px 12px;border-radius:12px}
form.filter{display:flex;flex-wrap:wrap;gap:12px;align-items:center;margin:10px 0;font-size:14px}
form.filter select,form.filter button{font:inherit;padding:3px 6px}
form.filter select{max-width:260px}
.chips{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 4px;font-size:14px}
.chips a{display:inline-flex;gap:6px;align-items:center;border:1px solid var(--line);border-radius:14px;padding:2px 10px 2px 3px;color:var(--fg)}
.chips a.on{border-color:var(--fg)}
.chips .badge{min-width:0}
section.svc{border:1px solid var(--line);border-radius:8px;padding:10px 14px;margin:12px 0;background:var(--card)}
section.svc h2{margin:0 0 6px;font-size:17px}
.head .l1{display:flex;flex-wrap:wrap;gap:10px;align-items:baseline}
.head .l2,.head .l3{margin-top:2px;font-size:14px}
.ver{font-size:16px}
.tags{color:var(--muted);font-size:14px}
details{margin-top:6px}summary{cursor:pointer;color:var(--muted);font-size:14px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;vertical-align:top;padding:5px 8px;border-bottom:1px solid var(--line);overflow-wrap:anywhere}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.nowrap,td.id{white-space:nowrap}
tr.nodata td{color:var(--muted)}
.pager{display:flex;gap:16px;justify-content:center;margin:18px 0;font-size:14px}
.dhead{display:flex;gap:14px;align-items:center;flex-wrap:wrap;margin-top:6px}
.dhead h1{margin:0}
p.reason{font-size:16px;margin:8px 0 12px}
dl.facts{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:4px 14px;margin:0;font-size:14px}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;overflow-wrap:anywhere}
ul.changes{margin:0;padding-left:20px;font-size:14px}
.legend{display:flex;gap:18px;font-size:13px;color:var(--muted);margin-bottom:6px;flex-wrap:wrap}
.legend i{display:inline-block;width:22px;height:0;border-top:2px solid;vertical-align:middle;margin-right:5px}
.legend i.canary{border-color:var(--canary)}.legend i.baseline{border-color:var(--baseline)}.legend i.dashed{border-top-style:dashed}
.legend i.deploy{border-top:2px dotted var(--fg);width:14px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:12px}
figure{margin:0;border:1px solid var(--line);border-radius:8px;padding:8px 8px 2px;background:var(--card)}
figcaption{font-size:14px;display:flex;gap:8px;align-items:baseline;flex-wrap:wrap}
figcaption .vals{margin-left:auto;font-size:13px;color:var(--muted)}
svg.chart{width:100%;height:auto;display:block}
svg text{fill:var(--muted);font-size:11px;font-family:system-ui,sans-serif}
svg .grid line{stroke:var(--line);stroke-width:1}
svg .frame{fill:none;stroke:var(--line)}
svg .line{fill:none;stroke-width:1.8;stroke-linejoin:round;stroke-linecap:round}
svg .line.canary{stroke:var(--canary)}svg .line.baseline{stroke:var(--baseline)}
svg .line.dashed{stroke-dasharray:5 4;stroke-linecap:butt}
svg .marker{stroke-width:1.2;stroke-dasharray:3 3;stroke:var(--pending)}
svg .marker.deploy{stroke:var(--fg)}svg .marker.pass{stroke:var(--pass)}svg .marker.warn{stroke:var(--warn)}svg .marker.pause{stroke:var(--pause)}svg .marker.rollback{stroke:var(--rollback)}
svg text.mlabel{font-weight:600;fill:var(--fg)}
svg text.mlabel.pass{fill:var(--pass)}svg text.mlabel.warn{fill:var(--warn)}svg text.mlabel.pause{fill:var(--pause)}svg text.mlabel.rollback{fill:var(--rollback)}
svg text.empty{font-size:13px}
svg rect.warmup{fill:var(--muted);fill-opacity:.12}svg text.warmup{font-size:10px;font-style:italic}
svg .marker.rolledback,svg .marker.recovered{stroke:var(--fg);stroke-dasharray:1 3}
svg text.mlabel.rolledback,svg text.mlabel.recovered{fill:var(--fg);font-weight:400}
.legend i.warmup{border:0;height:10px;width:16px;background:var(--muted);opacity:.25}
td.terms{font-size:12px;color:var(--muted);min-width:180px}
.nodata-list{font-size:14px;color:var(--muted);margin-top:8px}
"#;

/// A whole document. `refresh`: seconds until the browser reloads it.
fn layout(title: &str, refresh: Option<u32>, body: &str) -> String {
    let mut s = String::with_capacity(body.len() + CSS.len() + 600);
    s.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    s.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    if let Some(r) = refresh {
        let _ = write!(s, "<meta http-equiv=\"refresh\" content=\"{r}\">");
    }
    let _ = write!(s, "<title>{} · deploywatch</title>", escape(title));
    let _ = write!(s, "<style>{CSS}</style></head><body>");
    s.push_str(concat!(
        "<header class=\"top\"><div><a class=\"brand\" href=\"/\">deploywatch</a>",
        "<nav><a href=\"/\">deploys</a><a href=\"/api/v1/services\">services (JSON)</a>",
        "<a href=\"/api/v1/deploys\">deploys (JSON)</a><a href=\"/metrics\">metrics</a></nav>",
        "</div></header><main>"
    ));
    s.push_str(body);
    s.push_str("</main></body></html>");
    s
}

fn badge(v: Verdict) -> String {
    format!(r#"<span class="badge {v}">{v}</span>"#)
}

/// A rule's verdict badge: `not needed` for a rule left pending by a decided rollback.
fn rule_badge(d: &DeployJson, v: Verdict) -> String {
    if crate::report::not_needed(d.verdict, d.phase, v) {
        r#"<span class="badge notneeded">not needed</span>"#.into()
    } else {
        badge(v)
    }
}

/// An event time, RFC 3339 UTC.
fn time(ms: i64) -> String {
    let t = rfc3339_ms(ms);
    format!(r#"<time datetime="{t}">{t}</time>"#)
}

/// A signed offset from the deploy's start: `+45s`, `+3m05s`, `+1h02m`.
pub fn rel(ms: i64) -> String {
    let sign = if ms < 0 { '-' } else { '+' };
    let s = ms.unsigned_abs() / 1000;
    match s {
        0..=59 => format!("{sign}{s}s"),
        60..=3599 => format!("{sign}{}m{:02}s", s / 60, s % 60),
        _ => format!("{sign}{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn phase(p: Phase) -> &'static str {
    match p {
        Phase::Warmup => "warmup",
        Phase::Observing => "observing",
        Phase::Done => "done",
    }
}

fn strategy(d: &DeployJson) -> String {
    serde_json::to_value(d.strategy)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn source(d: &DeployJson) -> String {
    serde_json::to_value(d.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn deploy_href(id: &str) -> String {
    format!("/deploys/{}", url_encode(id))
}

/// `v2 vs v1` (or just `v2` without a known baseline).
fn versions(d: &DeployJson) -> String {
    let mut s = format!("<b>{}</b>", escape(&d.version));
    if let Some(b) = &d.baseline_version {
        let _ = write!(s, r#" <span class="muted">vs {}</span>"#, escape(b));
    }
    s
}

/// The rule of the timeline's verdict change that reached the current verdict.
pub fn deciding_rule(d: &DeployJson) -> Option<&str> {
    if !d.verdict.is_regression() {
        return None;
    }
    d.timeline
        .iter()
        .find(|e| e.event == "verdict_changed" && e.verdict == Some(d.verdict))
        .and_then(|e| e.rule.as_deref())
}

/// The first suspect, `route=/checkout 83% → redis-pool`.
fn top_suspect(d: &DeployJson) -> Option<String> {
    let s = d.suspects.first()?;
    let mut out = format!(
        "<code>{}={}</code> {}",
        escape(&s.dimension),
        escape(&s.value),
        percent(s.share)
    );
    if let Some(c) = s.change.as_deref().filter(|c| !c.is_empty()) {
        let _ = write!(out, " → {}", escape(c));
    }
    Some(out)
}

fn percent(x: f64) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    let p = x * 100.0;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Confidence as a percentage that never rounds a doubt away: 0.99999 is `>99.9%`.
fn confidence(c: f64) -> String {
    if !c.is_finite() || c <= 0.0 {
        return "—".into();
    }
    let p = c * 100.0;
    if c < 1.0 && p >= 99.95 {
        ">99.9%".into()
    } else {
        format!("{p:.1}%")
    }
}

fn effect(e: Option<f64>) -> String {
    match e.filter(|e| e.is_finite()) {
        None => "—".into(),
        Some(e) if e >= 100.0 => format!("×{e:.0}"),
        Some(e) if e >= 10.0 => format!("×{e:.1}"),
        Some(e) => format!("×{e:.2}"),
    }
}

// ---------------------------------------------------------------------------------------
// GET /
// ---------------------------------------------------------------------------------------

/// What the index shows: the query, parsed and checked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Filter {
    pub service: Option<String>,
    pub verdict: Option<Verdict>,
    /// 1-based.
    pub page: usize,
}

impl Filter {
    /// A link to the index with this filter, changed by `f`.
    fn href(&self, f: impl FnOnce(&mut Filter)) -> String {
        let mut q = self.clone();
        f(&mut q);
        let mut parts = Vec::new();
        if let Some(s) = &q.service {
            parts.push(format!("service={}", url_encode(s)));
        }
        if let Some(v) = q.verdict {
            parts.push(format!("verdict={v}"));
        }
        if q.page > 1 {
            parts.push(format!("page={}", q.page));
        }
        if parts.is_empty() {
            "/".into()
        } else {
            escape(&format!("/?{}", parts.join("&")))
        }
    }
}

const VERDICTS: [Verdict; 5] = [
    Verdict::Rollback,
    Verdict::Pause,
    Verdict::Warn,
    Verdict::Pass,
    Verdict::Pending,
];

/// The index: deploys grouped by service, the newest deploy of each first; one service's
/// deploys as a paged table when filtered by service. `deploys` is newest first.
pub fn index_page(deploys: &[DeployJson], filter: &Filter) -> String {
    let mut b = String::with_capacity(32 * 1024);
    b.push_str("<h1>Deploys</h1>");

    // The filter form: every service with a deploy, every verdict.
    let mut services: Vec<&str> = deploys.iter().map(|d| d.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    b.push_str(r#"<form class="filter" method="get" action="/"><label>service <select name="service"><option value="">all services</option>"#);
    for s in &services {
        let sel = if filter.service.as_deref() == Some(*s) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, r#"<option value="{0}"{sel}>{0}</option>"#, escape(s));
    }
    b.push_str(r#"</select></label><label>verdict <select name="verdict"><option value="">any verdict</option>"#);
    for v in VERDICTS {
        let sel = if filter.verdict == Some(v) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, r#"<option value="{v}"{sel}>{v}</option>"#);
    }
    b.push_str(r#"</select></label><button type="submit">show</button>"#);
    if filter.service.is_some() || filter.verdict.is_some() {
        b.push_str(r#"<a href="/">clear the filter</a>"#);
    }
    b.push_str("</form>");

    // Counts by verdict (within the service filter), each a filter link.
    let in_service: Vec<&DeployJson> = deploys
        .iter()
        .filter(|d| filter.service.as_deref().is_none_or(|s| s == d.service))
        .collect();
    b.push_str(r#"<div class="chips">"#);
    for v in VERDICTS {
        let n = in_service.iter().filter(|d| d.verdict == v).count();
        if n == 0 && filter.verdict != Some(v) {
            continue;
        }
        let on = if filter.verdict == Some(v) { " on" } else { "" };
        let href = filter.href(|f| {
            f.verdict = if f.verdict == Some(v) { None } else { Some(v) };
            f.page = 1;
        });
        let _ = write!(
            b,
            r#"<a class="chip{on}" href="{href}">{} {n}</a>"#,
            badge(v)
        );
    }
    let _ = write!(
        b,
        r#"<span class="muted">{} deploys of {} services</span></div>"#,
        in_service.len(),
        services.len()
    );

    let shown: Vec<&DeployJson> = in_service
        .into_iter()
        .filter(|d| filter.verdict.is_none_or(|v| v == d.verdict))
        .collect();
    if shown.is_empty() {
        b.push_str(if deploys.is_empty() {
            r#"<p class="muted">No deploys yet. Register one with <code>POST /api/v1/deploys</code>, or let deploywatch detect one when a new value of the version label appears in the data.</p>"#
        } else {
            r#"<p class="muted">No deploy matches the filter.</p>"#
        });
        return layout("deploys", Some(30), &b);
    }

    if let Some(service) = &filter.service {
        // One service: all its deploys, a page at a time.
        let pages = shown.len().div_ceil(DEPLOYS_PER_PAGE);
        let page = filter.page.clamp(1, pages);
        let _ = write!(b, "<h2>{}</h2>", escape(service));
        let rows =
            &shown[(page - 1) * DEPLOYS_PER_PAGE..(page * DEPLOYS_PER_PAGE).min(shown.len())];
        deploy_table(&mut b, rows, false);
        pager(&mut b, filter, page, pages);
    } else {
        // Groups by service, in the order of their newest deploy.
        let mut groups: Vec<(&str, Vec<&DeployJson>)> = Vec::new();
        let mut at: std::collections::HashMap<&str, usize> = Default::default();
        for d in &shown {
            let i = *at.entry(d.service.as_str()).or_insert_with(|| {
                groups.push((d.service.as_str(), Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(d);
        }
        let pages = groups.len().div_ceil(GROUPS_PER_PAGE);
        let page = filter.page.clamp(1, pages);
        for (service, ds) in groups
            .iter()
            .skip((page - 1) * GROUPS_PER_PAGE)
            .take(GROUPS_PER_PAGE)
        {
            service_group(&mut b, filter, service, ds);
        }
        pager(&mut b, filter, page, pages);
    }
    layout("deploys", Some(30), &b)
}

fn service_group(b: &mut String, filter: &Filter, service: &str, ds: &[&DeployJson]) {
    let Some((d, older)) = ds.split_first() else {
        return;
    };
    let href = filter.href(|f| {
        f.service = Some(service.to_string());
        f.page = 1;
    });
    let _ = write!(
        b,
        r#"<section class="svc"><h2><a href="{href}">{}</a> <span class="muted small">{} deploy{}</span></h2>"#,
        escape(service),
        ds.len(),
        if ds.len() == 1 { "" } else { "s" }
    );
    let _ = write!(
        b,
        r#"<div class="head"><div class="l1">{} <a class="ver" href="{}">{}</a><span class="tags">{} · {} · {}</span></div>"#,
        badge(d.verdict),
        deploy_href(&d.id),
        versions(d),
        escape(&strategy(d)),
        escape(&d.comparison),
        phase(d.phase)
    );
    let _ = write!(b, r#"<div class="l2 muted">started {}"#, time(d.started_at));
    if let Some(at) = d.verdict_at {
        let _ = write!(
            b,
            " · {} at {} ({} after the start)",
            d.verdict,
            time(at),
            rel(at - d.started_at)
        );
    }
    b.push_str("</div>");
    let mut why = Vec::new();
    if let Some(rule) = deciding_rule(d) {
        // The reason names the deciding rule first: not twice.
        let reason = d
            .reason
            .strip_prefix(&format!("{rule}: "))
            .unwrap_or(&d.reason);
        why.push(format!(
            "decided by <b>{}</b>: {}",
            escape(rule),
            escape(reason)
        ));
    } else if !d.reason.is_empty() && d.verdict != Verdict::Pass {
        why.push(escape(&d.reason));
    }
    if let Some(s) = top_suspect(d) {
        why.push(format!("top suspect {s}"));
    }
    if !why.is_empty() {
        let _ = write!(b, r#"<div class="l3">{}</div>"#, why.join(" · "));
    }
    b.push_str("</div>");
    if !older.is_empty() {
        let _ = write!(
            b,
            "<details><summary>{} older deploy{}</summary>",
            older.len(),
            if older.len() == 1 { "" } else { "s" }
        );
        deploy_table(b, &older[..older.len().min(OLDER_PER_GROUP)], true);
        if older.len() > OLDER_PER_GROUP {
            let _ = write!(
                b,
                r#"<p class="small"><a href="{href}">all {} deploys of {}</a></p>"#,
                ds.len(),
                escape(service)
            );
        }
        b.push_str("</details>");
    }
    b.push_str("</section>");
}

/// A compact table of deploys, one row each.
fn deploy_table(b: &mut String, ds: &[&DeployJson], in_group: bool) {
    b.push_str("<table><thead><tr><th>verdict</th><th>version</th><th>strategy</th><th>phase</th><th>started</th><th>verdict at</th><th>rule</th><th>top suspect</th></tr></thead><tbody>");
    for d in ds {
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td><a href="{}">{}</a></td><td>{}<br><span class="muted small">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            badge(d.verdict),
            deploy_href(&d.id),
            versions(d),
            escape(&strategy(d)),
            escape(&d.comparison),
            phase(d.phase),
            time(d.started_at),
            d.verdict_at
                .map(|at| format!(
                    "{}<br><span class=\"muted small\">{}</span>",
                    time(at),
                    rel(at - d.started_at)
                ))
                .unwrap_or_else(|| "—".into()),
            deciding_rule(d).map(escape).unwrap_or_else(|| "—".into()),
            top_suspect(d).unwrap_or_else(|| "—".into()),
        );
    }
    let _ = in_group;
    b.push_str("</tbody></table>");
}

fn pager(b: &mut String, filter: &Filter, page: usize, pages: usize) {
    if pages <= 1 {
        return;
    }
    b.push_str(r#"<nav class="pager">"#);
    if page > 1 {
        let _ = write!(
            b,
            r#"<a href="{}">← newer</a>"#,
            filter.href(|f| f.page = page - 1)
        );
    }
    let _ = write!(b, "<span>page {page} of {pages}</span>");
    if page < pages {
        let _ = write!(
            b,
            r#"<a href="{}">older →</a>"#,
            filter.href(|f| f.page = page + 1)
        );
    }
    b.push_str("</nav>");
}

// ---------------------------------------------------------------------------------------
// GET /deploys/{id}
// ---------------------------------------------------------------------------------------

/// One deploy: verdict and reason, facts, changes, rules, charts, suspects, timeline.
pub fn deploy_page(d: &DeployJson, histories: &[RuleHistory]) -> String {
    let mut b = String::with_capacity(64 * 1024);
    let _ = write!(
        b,
        r#"<p class="small muted"><a href="/">deploys</a> › <a href="/?service={}">{}</a> › {}</p>"#,
        escape(&url_encode(&d.service)),
        escape(&d.service),
        escape(&d.id)
    );
    let _ = write!(
        b,
        r#"<div class="dhead"><span class="badge big {0}">{0}</span><h1>{1} {2}</h1></div>"#,
        d.verdict,
        escape(&d.service),
        versions(d)
    );
    if !d.reason.is_empty() {
        let _ = write!(b, r#"<p class="reason">{}</p>"#, escape(&d.reason));
    }

    // Facts, two pairs a row.
    let mut facts: Vec<(&str, String)> = vec![
        (
            "strategy",
            format!("{} · {}", escape(&strategy(d)), escape(&d.comparison)),
        ),
        (
            "phase",
            format!("{} · {}", phase(d.phase), escape(&source(d))),
        ),
        ("started", time(d.started_at)),
        (
            "verdict at",
            d.verdict_at
                .map(|at| format!("{} ({})", time(at), rel(at - d.started_at)))
                .unwrap_or_else(|| "—".into()),
        ),
    ];
    if !d.commit.is_empty() {
        facts.push(("commit", format!("<code>{}</code>", escape(&d.commit))));
    }
    if !d.author.is_empty() {
        facts.push(("author", escape(&d.author)));
    }
    if !d.url.is_empty() {
        // Only web links become links: a `javascript:` URL from a registration must not.
        let u = &d.url;
        let v = if u.starts_with("https://") || u.starts_with("http://") {
            format!(
                r#"<a href="{0}" rel="noopener noreferrer">{0}</a>"#,
                escape(u)
            )
        } else {
            escape(u)
        };
        facts.push(("CI run", v));
    }
    let id = url_encode(&d.id);
    facts.push((
        "more",
        format!(
            r#"<a href="/api/v1/deploys/{id}/report">report</a> · <a href="/api/v1/deploys/{id}">JSON</a>"#
        ),
    ));
    b.push_str(r#"<dl class="facts">"#);
    for (k, v) in &facts {
        let _ = write!(b, "<dt>{k}</dt><dd>{v}</dd>");
    }
    b.push_str("</dl>");

    if !d.changes.is_empty() {
        b.push_str(r#"<h2>Changes</h2><ul class="changes">"#);
        for c in &d.changes {
            let _ = write!(b, "<li><b>{}</b>", escape(&c.component));
            if !c.summary.is_empty() {
                let _ = write!(b, ": {}", escape(&c.summary));
            }
            if !c.files.is_empty() {
                let files: Vec<String> = c
                    .files
                    .iter()
                    .map(|f| format!("<code>{}</code>", escape(f)))
                    .collect();
                let _ = write!(
                    b,
                    r#" <span class="muted small">{}</span>"#,
                    files.join(" ")
                );
            }
            b.push_str("</li>");
        }
        b.push_str("</ul>");
    }

    let unit_of = |rule: &str| {
        histories
            .iter()
            .find(|h| h.name == rule)
            .map_or(Unit::Plain, |h| h.unit)
    };
    let side_names = if d.comparison == "before-after" {
        ("after", "before")
    } else {
        ("canary", "baseline")
    };

    // Rules.
    let _ = write!(
        b,
        r#"<h2>Rules</h2><p class="small muted">Each rule as it stood when it reached its verdict: the evidence that decided it; a rule without a verdict as it stands now.</p><table><thead><tr><th>rule</th><th>verdict</th><th class="num">{}</th><th class="num">{}</th><th class="num">effect</th><th class="num" title="confidence that the new version is worse at all (any amount)">worse, conf.</th><th>reason</th><th>held to</th><th class="num">series</th></tr></thead><tbody>"#,
        side_names.0, side_names.1
    );
    let terms = |rule: &str| {
        histories
            .iter()
            .find(|h| h.name == rule)
            .map(|h| escape(&h.held_to))
            .unwrap_or_default()
    };
    for r in &d.rules {
        let unit = unit_of(&r.rule);
        let value = |v: Option<f64>, n: f64| match v {
            Some(v) => format!(
                r#"{}<br><span class="muted small">n={}</span>"#,
                unit.format(v),
                compact(n)
            ),
            None => "—".into(),
        };
        let _ = write!(
            b,
            r#"<tr{}><td class="id"><b>{}</b></td><td class="id">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td><td class="terms">{}</td><td class="num">{}</td></tr>"#,
            if r.matched_series == 0 {
                r#" class="nodata""#
            } else {
                ""
            },
            escape(&r.rule),
            rule_badge(d, r.verdict),
            value(r.canary.value, r.canary.samples),
            value(r.baseline.value, r.baseline.samples),
            effect(r.effect),
            confidence(r.confidence),
            escape(&r.reason),
            terms(&r.rule),
            if r.matched_series == 0 {
                "0 <span class=\"small\">(matches nothing)</span>".to_string()
            } else {
                r.matched_series.to_string()
            },
        );
    }
    b.push_str("</tbody></table>");

    charts(&mut b, d, histories, side_names);
    suspects(&mut b, d);
    timeline(&mut b, d);

    let refresh = (d.phase != Phase::Done).then_some(15);
    layout(&format!("{} {}", d.service, d.version), refresh, &b)
}

/// Sample counts, short: 39877 is `39.9k`.
fn compact(n: f64) -> String {
    if !n.is_finite() {
        "—".into()
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else if n >= 10.0 || n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

fn charts(b: &mut String, d: &DeployJson, histories: &[RuleHistory], names: (&str, &str)) {
    b.push_str("<h2>Before and after</h2>");
    let before_after = d.comparison == "before-after";
    let base = d.baseline_version.as_deref().unwrap_or("baseline");
    let _ = write!(
        b,
        r#"<div class="legend"><span><i class="canary"></i>{} ({})</span><span><i class="baseline{}"></i>{}</span><span><i class="deploy"></i>deploy, verdict changes, rollback and recovery</span><span><i class="warmup"></i>warm-up (not judged)</span><span>each point: one 15 s step; x: minutes since the deploy</span></div>"#,
        names.0,
        escape(&d.version),
        if before_after { " dashed" } else { "" },
        if before_after {
            format!("before the deploy ({}), its mean", escape(base))
        } else {
            format!("{} ({})", names.1, escape(base))
        }
    );
    let mut markers = vec![Marker {
        at: d.started_at,
        label: "deploy".into(),
        class: "deploy".into(),
    }];
    markers.extend(d.timeline.iter().filter_map(|e: &Event| {
        let (label, class) = match e.event.as_str() {
            "verdict_changed" => {
                let v = e.verdict?;
                (v.to_string(), v.to_string())
            }
            "rollback_observed" => ("rolled back".into(), "rolledback".into()),
            "recovered" => ("recovered".into(), "recovered".into()),
            _ => return None,
        };
        Some(Marker {
            at: e.at,
            label,
            class,
        })
    }));
    let mut empty = Vec::new();
    b.push_str(r#"<div class="charts">"#);
    for h in histories {
        let has_data = h.points.iter().any(|p| {
            p.canary.is_some_and(f64::is_finite) || p.baseline.is_some_and(f64::is_finite)
        });
        if !has_data {
            empty.push(escape(&h.name));
            continue;
        }
        let rule = d.rules.iter().find(|r| r.rule == h.name);
        let chart = Chart {
            title: format!("{}: {}", h.name, h.description),
            unit: h.unit,
            deploy_at: d.started_at,
            lines: vec![
                Line {
                    points: h.points.iter().map(|p| (p.at, p.baseline)).collect(),
                    class: "baseline",
                    dashed: before_after,
                },
                Line {
                    points: h.points.iter().map(|p| (p.at, p.canary)).collect(),
                    class: "canary",
                    dashed: false,
                },
            ],
            markers: markers.clone(),
            warmup_ms: h.warmup_ms,
        };
        let _ = write!(b, "<figure><figcaption><b>{}</b>", escape(&h.name));
        if let Some(r) = rule {
            let _ = write!(b, " {}", rule_badge(d, r.verdict));
            if let (Some(c), Some(bv)) = (r.canary.value, r.baseline.value) {
                let _ = write!(
                    b,
                    r#"<span class="vals">{} {} vs {} {}</span>"#,
                    names.0,
                    h.unit.format(c),
                    names.1,
                    h.unit.format(bv)
                );
            }
        }
        b.push_str("</figcaption>");
        b.push_str(&chart.render());
        b.push_str("</figure>");
    }
    b.push_str("</div>");
    if empty.len() == histories.len() && !histories.is_empty() {
        b.push_str(r#"<p class="nodata-list">No step histories to chart: a finished deploy keeps them only while it is its service's newest.</p>"#);
        return;
    }
    if !empty.is_empty() {
        let _ = write!(
            b,
            r#"<p class="nodata-list">No data yet for: {}.</p>"#,
            empty.join(", ")
        );
    }
}

fn suspects(b: &mut String, d: &DeployJson) {
    b.push_str("<h2>Suspects</h2>");
    if d.suspects.is_empty() {
        b.push_str(r#"<p class="muted">None: no label value stands out in the regression, or there is no regression.</p>"#);
        return;
    }
    b.push_str(r#"<table><thead><tr><th>dimension</th><th>value</th><th class="num">share</th><th>scope</th><th>mapped change</th></tr></thead><tbody>"#);
    for s in &d.suspects {
        // Read through JSON: the suspect's optional fields (scope, rule, note) are rca's.
        let j = serde_json::to_value(s).unwrap_or_default();
        let text = |k: &str| j.get(k).and_then(|v| v.as_str()).map(escape);
        let mut change = s
            .change
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| format!("<b>{}</b>", escape(c)))
            .unwrap_or_else(|| "—".into());
        if let Some(note) = text("note") {
            let _ = write!(change, r#"<br><span class="muted small">{note}</span>"#);
        }
        let mut scope = text("scope")
            .unwrap_or_else(|| "—".into())
            .replace('_', " ");
        if let Some(rule) = text("rule") {
            let _ = write!(scope, r#"<br><span class="muted small">{rule}</span>"#);
        }
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td><code>{}</code></td><td class="num">{}</td><td>{scope}</td><td>{change}</td></tr>"#,
            escape(&s.dimension),
            escape(&s.value),
            percent(s.share),
        );
    }
    b.push_str("</tbody></table>");
}

fn timeline(b: &mut String, d: &DeployJson) {
    b.push_str(r#"<h2>Timeline</h2><table class="timeline"><thead><tr><th>event time</th><th class="num">since start</th><th>event</th><th>verdict</th><th>rule</th><th>detail</th></tr></thead><tbody>"#);
    for e in &d.timeline {
        let _ = write!(
            b,
            r#"<tr><td class="nowrap">{}</td><td class="num">{}</td><td class="id">{}</td><td class="id">{}</td><td class="id">{}</td><td>{}</td></tr>"#,
            time(e.at),
            rel(e.at - d.started_at),
            escape(&e.event),
            e.verdict.map(badge).unwrap_or_default(),
            e.rule.as_deref().map(escape).unwrap_or_default(),
            escape(&e.detail)
        );
    }
    b.push_str("</tbody></table>");
}

/// The answer for an unknown deploy id.
pub fn not_found_page(id: &str) -> String {
    let body = format!(
        r#"<h1>No such deploy</h1><p>deploywatch knows no deploy with the id <code>{}</code>. It may have been registered on another replica, or the id is mistyped.</p><p><a href="/">All deploys</a></p>"#,
        escape(id)
    );
    layout("not found", None, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::{Change, RuleJson, SideJson, Source, Strategy, Suspect};
    use crate::rules::eval::StepPoint;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            escape(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(escape("plain / route ü"), "plain / route ü");
        assert_eq!(url_encode("check out/ü&x"), "check%20out%2F%C3%BC%26x");
    }

    #[test]
    fn offsets_read_as_durations() {
        assert_eq!(rel(45_000), "+45s");
        assert_eq!(rel(185_000), "+3m05s");
        assert_eq!(rel(3_720_000), "+1h02m");
        assert_eq!(rel(-90_000), "-1m30s");
        assert_eq!(confidence(0.99999), ">99.9%");
        assert_eq!(confidence(1.0), "100.0%");
        assert_eq!(confidence(0.0), "—");
        assert_eq!(effect(Some(31.0)), "×31.0");
        assert_eq!(compact(39877.0), "39.9k");
    }

    const EVIL: &str = r#"<img src=x onerror="alert(1)">"#;

    fn deploy(service: &str, version: &str, at: i64, verdict: Verdict) -> DeployJson {
        DeployJson {
            id: crate::deploy::deploy_id(service, version, at),
            service: service.into(),
            version: version.into(),
            baseline_version: Some("v1".into()),
            strategy: Strategy::Canary,
            source: Source::Api,
            started_at: at,
            phase: Phase::Observing,
            verdict,
            verdict_at: verdict.is_regression().then_some(at + 45_000),
            commit: "3f2c9e1".into(),
            author: EVIL.into(),
            url: "javascript:alert(1)".into(),
            changes: vec![Change {
                component: "redis-pool".into(),
                summary: EVIL.into(),
                files: vec!["src/cache/pool.rs".into()],
            }],
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
                reason: EVIL.into(),
                matched_series: 96,
                histogram: None,
            }],
            suspects: vec![Suspect {
                dimension: "route".into(),
                value: EVIL.into(),
                share: 0.83,
                change: Some("redis-pool".into()),
                ..serde_json::from_str(r#"{"dimension":"","value":"","share":0,"change":null}"#)
                    .unwrap()
            }],
            timeline: vec![Event {
                at: at + 45_000,
                event: "verdict_changed".into(),
                verdict: Some(verdict),
                rule: Some("error_rate".into()),
                detail: EVIL.into(),
            }],
            comparison: "side-by-side".into(),
            reason: EVIL.into(),
            report_url: String::new(),
        }
    }

    fn no_raw_markup_from_data(html: &str) {
        assert!(!html.contains("<img"), "unescaped data in the page");
        assert!(!html.contains("href=\"javascript:"), "a javascript: link");
        assert!(html.contains("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"));
    }

    #[test]
    fn deploy_page_escapes_every_field_and_draws_charts() {
        let d = deploy(EVIL, "v2", 1_764_000_000_000, Verdict::Rollback);
        let h = RuleHistory {
            name: "error_rate".into(),
            description: EVIL.into(),
            unit: Unit::Fraction,
            points: (1..=20)
                .map(|i| StepPoint {
                    at: d.started_at + i * 15_000,
                    canary: (i != 5).then_some(0.03),
                    baseline: Some(0.001),
                })
                .collect(),
            held_to: "warn ×1.10 at 99 %".into(),
            warmup_ms: 30_000,
        };
        let empty = RuleHistory {
            name: "restarts".into(),
            description: String::new(),
            unit: Unit::Count,
            points: Vec::new(),
            held_to: String::new(),
            warmup_ms: 0,
        };
        let html = deploy_page(&d, &[h, empty]);
        no_raw_markup_from_data(&html);
        assert!(html.contains("<svg"), "a chart");
        assert_eq!(html.matches("<svg").count(), 1, "no chart without data");
        assert!(html.contains("No data yet for: restarts"));
        assert!(html.contains(r#"<span class="badge big rollback">rollback</span>"#));
        assert!(html.contains("3.10%") && html.contains("×31.0") && html.contains("83%"));
        assert!(html.contains("2025-11-24T16:00:00.000Z"), "RFC 3339 times");
        assert!(
            html.contains("http-equiv=\"refresh\""),
            "a running deploy refreshes"
        );
    }

    #[test]
    fn index_groups_by_service_and_pages() {
        let t = 1_764_000_000_000;
        // 30 services with 15 deploys each, newest first as `Deploys::list` gives them.
        let mut ds = Vec::new();
        for v in (0..15).rev() {
            for s in 0..30 {
                let verdict = if v == 14 && s == 3 {
                    Verdict::Rollback
                } else {
                    Verdict::Pass
                };
                ds.push(deploy(
                    &format!("svc{s:02}"),
                    &format!("v{v}"),
                    t + v * 60_000,
                    verdict,
                ));
            }
        }
        let html = index_page(&ds, &Filter::default());
        no_raw_markup_from_data(&html);
        assert_eq!(
            html.matches(r#"<section class="svc">"#).count(),
            GROUPS_PER_PAGE
        );
        assert!(html.contains("14 older deploys"));
        assert!(html.contains("page 1 of 2"));
        assert!(html.contains("all 15 deploys of svc03"));
        assert!(html.len() < 400_000, "{} bytes", html.len());
        // The newest deploy of a service leads its group, with its deciding rule.
        assert!(html.contains("decided by <b>error_rate</b>"));

        let page2 = index_page(
            &ds,
            &Filter {
                page: 2,
                ..Filter::default()
            },
        );
        assert_eq!(page2.matches(r#"<section class="svc">"#).count(), 10);
        // Out-of-range pages show the last one.
        assert_eq!(
            index_page(
                &ds,
                &Filter {
                    page: 99,
                    ..Filter::default()
                }
            ),
            page2
        );

        let one = index_page(
            &ds,
            &Filter {
                service: Some("svc03".into()),
                ..Filter::default()
            },
        );
        assert_eq!(one.matches("<tr><td><span class=\"badge").count(), 15);
        assert!(one.contains(r#"<option value="svc03" selected>"#));

        let bad = index_page(
            &ds,
            &Filter {
                verdict: Some(Verdict::Rollback),
                ..Filter::default()
            },
        );
        assert_eq!(bad.matches(r#"<section class="svc">"#).count(), 1);
        assert!(bad.contains("svc03"));

        let none = index_page(&[], &Filter::default());
        assert!(none.contains("No deploys yet"));
    }

    #[test]
    fn unknown_ids_are_escaped() {
        let html = not_found_page("<b>x</b>");
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;") && !html.contains("<b>x"));
    }

    #[test]
    fn web_links_only() {
        let mut d = deploy("a", "v2", 1_764_000_000_000, Verdict::Pass);
        d.url = "https://ci.example/run/42?a=1&b=2".into();
        let html = deploy_page(&d, &[]);
        assert!(html.contains(r#"<a href="https://ci.example/run/42?a=1&amp;b=2""#));
    }
}
