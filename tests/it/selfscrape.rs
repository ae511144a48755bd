//! Issue 16: metrics that survive being scraped. A real Prometheus (Debian's 2.42) scrapes
//! deploywatch as Kubernetes service discovery would, with target labels `service` and
//! `version` of deploywatch's own, and with the `honor_labels` of the shipped
//! k8s/prometheus.yml; every query of the Grafana dashboard (k8s/grafana-dashboard.json,
//! read from the file) then runs against that Prometheus' HTTP API and must return series
//! with the judged deploy's own `service` and `version` (never `exported_*`), and every
//! label its legend or annotation text names.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use crate::k8s::{k8s_dir, yaml, yaml_docs};
use crate::sim::{register_deploy, Driver, Effect, Feed, Service, Signal, Sim, Who, EPOCH, MIN};

/// The target labels a Kubernetes scrape gives deploywatch's pod: a ServiceMonitor's
/// `service`, and a `version` relabelled from `app.kubernetes.io/version`.
const TARGET_SERVICE: &str = "deploywatch";
const TARGET_VERSION: &str = "9.9.9";

/// The judged deploy.
const SERVICE: &str = "dash";
const VERSION: &str = "v2";

/// The `honor_labels` of the deploywatch job in k8s/prometheus.yml, and a check that every
/// other shipped way of scraping deploywatch honours labels too.
fn shipped_honor_labels() -> Value {
    let job = |cfg: &Value, file: &str| -> Value {
        cfg["scrape_configs"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: no scrape_configs"))
            .iter()
            .find(|j| j["job_name"] == "deploywatch")
            .unwrap_or_else(|| panic!("{file}: no deploywatch job"))
            .clone()
    };
    let main = job(&yaml(&k8s_dir().join("prometheus.yml")), "prometheus.yml");
    let shards = job(
        &yaml(&k8s_dir().join("prometheus-shards.yml")),
        "prometheus-shards.yml",
    );
    assert_eq!(shards["honor_labels"], json!(true), "prometheus-shards.yml");
    let sm = yaml_docs(&k8s_dir().join("prometheus-operator.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor");
    for ep in sm["spec"]["endpoints"].as_array().unwrap() {
        assert_eq!(ep["honorLabels"], json!(true), "ServiceMonitor {ep}");
    }
    let sidecar = std::fs::read_to_string(k8s_dir().join("prometheus-sidecar.yaml")).unwrap();
    assert!(
        sidecar.contains("honor_labels: true"),
        "prometheus-sidecar.yaml's scrape job for deploywatch"
    );
    main["honor_labels"].clone()
}

/// Prometheus scraping deploywatch every second as the shipped job does, with the target
/// labels service discovery would add.
fn prometheus_config(dw: &Deploywatch, honor_labels: &Value) -> String {
    let cfg = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "deploywatch",
            "honor_labels": honor_labels,
            "static_configs": [{
                "targets": [dw.addr().to_string()],
                "labels": {"service": TARGET_SERVICE, "version": TARGET_VERSION},
            }],
        }],
    });
    // JSON is YAML: Prometheus reads it as its config file.
    serde_json::to_string_pretty(&cfg).unwrap()
}

/// A dashboard query with the labels its display names: `{{label}}` in a legend or an
/// annotation's title and text, and an annotation's `tagKeys`.
struct Query {
    at: String,
    expr: String,
    shown: BTreeSet<String>,
}

fn placeholders(s: &str, out: &mut BTreeSet<String>) {
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else { break };
        out.insert(after[..j].trim().to_string());
        rest = &after[j + 2..];
    }
}

/// Every object of the dashboard with an `expr` (panel targets, annotations).
fn queries(v: &Value, at: &str, out: &mut Vec<Query>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(expr)) = m.get("expr") {
                let mut shown = BTreeSet::new();
                for k in ["legendFormat", "titleFormat", "textFormat"] {
                    if let Some(Value::String(s)) = m.get(k) {
                        placeholders(s, &mut shown);
                    }
                }
                if let Some(Value::String(tags)) = m.get("tagKeys") {
                    shown.extend(tags.split(',').map(|t| t.trim().to_string()));
                }
                out.push(Query {
                    at: at.to_string(),
                    expr: expr.clone(),
                    shown,
                });
            }
            for (k, x) in m {
                queries(x, &format!("{at}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                queries(x, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The dashboard's variables as a user picking the deploy's service would set them.
fn with_variables(q: &str) -> String {
    let q = q.replace("$service", SERVICE).replace("$rule", ".*");
    assert!(!q.contains('$'), "an unknown variable in {q}");
    q
}

#[test]
fn issue_16_the_dashboard_shows_the_deploys_own_labels_through_a_real_prometheus() {
    let honor_labels = shipped_honor_labels();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(k8s_dir().join("grafana-dashboard.json")).unwrap(),
    )
    .expect("k8s/grafana-dashboard.json is JSON");
    let mut qs = Vec::new();
    queries(&dash, "", &mut qs);
    assert!(qs.len() >= 10, "{} queries", qs.len());

    // No Alertmanager: the firing state is exported all the same.
    let dw = Deploywatch::start();
    let prom = Prometheus::start(&prometheus_config(&dw, &honor_labels));
    let from = now_ms() as f64 / 1000.0;

    // A canary that fails ten times as often as its baseline, registered by a pipeline.
    let t = EPOCH + 30 * MIN;
    let svc = Service::new(SERVICE, 1601, 2)
        .canary(VERSION, t, 1)
        .effect(Effect::step(
            Who::Version(VERSION.into()),
            Signal::Errors,
            10.0,
            t,
            i64::MAX,
        ));
    let mut driver = Driver::new(&dw, Feed::new(vec![Sim::new(svc)], 5_000));
    driver.run_to(t);
    register_deploy(
        &dw,
        &json!({"service": SERVICE, "version": VERSION, "baseline_version": "v1",
                "commit": "abc123", "at": t}),
    )
    .unwrap();
    // Prometheus sees it pending first, so the verdict changes while it scrapes.
    let verdict = format!("deploywatch_deploy_verdict{{service=\"{SERVICE}\"}}");
    wait_for(
        "Prometheus to scrape the pending deploy",
        Duration::from_secs(60),
        || {
            let all = prom.instant("deploywatch_deploy_verdict");
            if let Some(s) = all.first() {
                let m = s["metric"].as_object().unwrap();
                assert!(
                    !m.keys().any(|k| k.starts_with("exported_")),
                    "Prometheus renamed the deploy's labels (honor_labels: {honor_labels}): {m:?}"
                );
            }
            match prom.instant(&verdict).first() {
                Some(s) if s["value"][1] == "0" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    driver.run_to(t + 4 * MIN);
    assert_eq!(
        dw.metric("deploywatch_deploy_verdict", &[("service", SERVICE)]),
        Some(4.0),
        "the test deploy should be at rollback"
    );
    let firing = format!("deploywatch_deploy_alert_firing{{service=\"{SERVICE}\"}}");
    wait_for(
        "Prometheus to scrape the rollback and its firing alert",
        Duration::from_secs(60),
        || {
            let v = prom.instant(&verdict);
            let a = prom.instant(&firing);
            match (v.first(), a.first()) {
                (Some(v), Some(a)) if v["value"][1] == "4" && a["value"][1] == "1" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    // The range ends a few scrapes later, so that its last steps see the change.
    std::thread::sleep(Duration::from_secs(3));
    let to = now_ms() as f64 / 1000.0;

    // The variables: the deploy's service is offered, deploywatch's own is not.
    let services = prom
        .api(&format!(
            "/api/v1/label/service/values?match[]={}",
            percent_encode("deploywatch_deploy_verdict")
        ))
        .unwrap();
    assert_eq!(
        services,
        json!([SERVICE]),
        "the $service variable's choices"
    );
    let rules = prom
        .api(&format!(
            "/api/v1/label/rule/values?match[]={}",
            percent_encode(&format!("deploywatch_rule_value{{service=~\"{SERVICE}\"}}"))
        ))
        .unwrap();
    assert!(
        rules
            .as_array()
            .is_some_and(|r| r.contains(&json!("error_rate"))),
        "the $rule variable's choices: {rules}"
    );

    for q in &qs {
        let expr = with_variables(&q.expr);
        let names = crate::k8s::promql_metric_names(&q.expr);
        let of_deploys = names
            .iter()
            .any(|n| n.starts_with("deploywatch_deploy_") || n.starts_with("deploywatch_rule_"));
        let data = prom
            .api(&format!(
                "/api/v1/query_range?query={}&start={from:.3}&end={to:.3}&step=1",
                percent_encode(&expr)
            ))
            .unwrap_or_else(|e| panic!("{}: {e}", q.at));
        let series = data["result"].as_array().unwrap();
        // Alert delivery has nothing to show without an Alertmanager; everything else does.
        let alert_delivery = names.iter().all(|n| n.starts_with("deploywatch_alerts_"));
        assert!(
            !series.is_empty() || alert_delivery,
            "{}: {expr} returned nothing",
            q.at
        );
        for s in series {
            let m = s["metric"].as_object().unwrap();
            let exported: Vec<&String> = m.keys().filter(|k| k.starts_with("exported_")).collect();
            assert!(exported.is_empty(), "{}: {expr}: {m:?}", q.at);
            for label in &q.shown {
                assert!(
                    m.contains_key(label),
                    "{}: {expr} shows {{{{{label}}}}}, which its series {m:?} lack",
                    q.at
                );
            }
            if of_deploys {
                if let Some(v) = m.get("service") {
                    assert_eq!(v, SERVICE, "{}: {expr}: {m:?}", q.at);
                }
                if let Some(v) = m.get("version") {
                    assert_eq!(v, VERSION, "{}: {expr}: {m:?}", q.at);
                }
            }
        }
    }

    // What Prometheus stored, whole: the deploy's labels on every derived series, the
    // target's only where deploywatch exposes no such label.
    let stored = prom.instant("{__name__=~\"deploywatch_(deploy|rule)_.*\"}");
    assert!(stored.len() >= 6, "{stored:?}");
    for s in &stored {
        let m = &s["metric"];
        assert_eq!(m["service"], SERVICE, "{m}");
        assert_eq!(m["version"], VERSION, "{m}");
        assert!(
            m.as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with("exported_")),
            "{m}"
        );
    }
    let names: BTreeSet<&str> = stored
        .iter()
        .filter_map(|s| s["metric"]["__name__"].as_str())
        .collect();
    for n in [
        "deploywatch_deploy_verdict",
        "deploywatch_deploy_phase",
        "deploywatch_deploy_alert_firing",
        "deploywatch_rule_verdict",
        "deploywatch_rule_value",
        "deploywatch_deploy_started_timestamp_seconds",
    ] {
        assert!(names.contains(n), "{n} not stored: {names:?}");
    }
    let build = prom.instant("deploywatch_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0]["metric"]["service"], TARGET_SERVICE);
}

/// The derived samples of `name` on a live `/metrics`, as label maps and values.
fn derived(dw: &Deploywatch, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    parse_exposition(&dw.metrics_text())
        .samples
        .into_iter()
        .filter(|s| s.metric == name)
        .map(|s| {
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            (labels, v)
        })
        .collect()
}

#[test]
fn issue_16_rule_metrics_carry_the_deploy_its_phase_and_its_firing_alert() {
    let dw = Deploywatch::start();
    let t = EPOCH + 30 * MIN;
    let svc = Service::new("phases", 1602, 2)
        .canary("v2", t, 1)
        .effect(Effect::step(
            Who::Version("v2".into()),
            Signal::Errors,
            10.0,
            t,
            i64::MAX,
        ));
    let mut driver = Driver::new(&dw, Feed::new(vec![Sim::new(svc)], 5_000));
    driver.run_to(t);
    let id = register_deploy(
        &dw,
        &json!({"service": "phases", "version": "v2", "baseline_version": "v1", "at": t}),
    )
    .unwrap();

    // Pending, in warm-up: one phase at 1, and no alert.
    let phases = derived(&dw, "deploywatch_deploy_phase");
    let current: Vec<&str> = phases
        .iter()
        .filter(|(l, v)| l["deploy_id"] == id && *v == 1.0)
        .map(|(l, _)| l["phase"].as_str())
        .collect();
    assert_eq!(current, ["warmup"], "{phases:?}");
    assert_eq!(
        phases.iter().filter(|(l, _)| l["deploy_id"] == id).count(),
        3,
        "every phase, 0 but the current one: {phases:?}"
    );
    assert!(derived(&dw, "deploywatch_deploy_alert_firing").is_empty());

    driver.run_to(t + 4 * MIN);
    let d = crate::sim::deploy(&dw, &id).unwrap();
    assert_eq!(d["verdict"], "rollback", "{d:#}");
    let phase = d["phase"].as_str().unwrap().to_string();
    let current: Vec<String> = derived(&dw, "deploywatch_deploy_phase")
        .into_iter()
        .filter(|(l, v)| l["deploy_id"] == id && *v == 1.0)
        .map(|(l, _)| l["phase"].clone())
        .collect();
    assert_eq!(current, [phase], "the API's phase");
    for name in ["deploywatch_rule_verdict", "deploywatch_rule_value"] {
        let samples = derived(&dw, name);
        assert!(!samples.is_empty(), "{name}");
        for (l, _) in &samples {
            assert_eq!(l.get("deploy_id"), Some(&id), "{name} {l:?}");
            assert_eq!(l["version"], "v2", "{name} {l:?}");
        }
    }
    // The alert lifecycle ticks every second; no Alertmanager is configured.
    let want = BTreeMap::from(
        [
            ("service", "phases"),
            ("version", "v2"),
            ("deploy_id", id.as_str()),
            ("severity", "critical"),
            ("action", "rollback"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    wait_for(
        "the rollback alert to fire",
        Duration::from_secs(10),
        || match derived(&dw, "deploywatch_deploy_alert_firing").as_slice() {
            [(l, v)] if *l == want && *v == 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // A registration of v3 supersedes v2: its alert resolves, and only the service's
    // newest deploy is exported (O(active deploys), not every deploy ever).
    let v3 = register_deploy(
        &dw,
        &json!({"service": "phases", "version": "v3", "baseline_version": "v1"}),
    )
    .unwrap();
    wait_for(
        "the superseded deploy's alert to resolve",
        Duration::from_secs(10),
        || match derived(&dw, "deploywatch_deploy_alert_firing").as_slice() {
            [] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    for name in [
        "deploywatch_deploy_verdict",
        "deploywatch_deploy_phase",
        "deploywatch_rule_verdict",
    ] {
        let ids: BTreeSet<String> = derived(&dw, name)
            .into_iter()
            .map(|(l, _)| l["deploy_id"].clone())
            .collect();
        if name == "deploywatch_rule_verdict" {
            // v3 has no data yet: its rules may not be listed.
            assert!(ids.iter().all(|i| *i == v3), "{name}: {ids:?}");
        } else {
            assert_eq!(ids, BTreeSet::from([v3.clone()]), "{name}");
        }
    }
}
