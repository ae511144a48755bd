//! `deploywatch backtest` against a real Prometheus (Debian's 2.42): simulated services with
//! several deploys are written into Prometheus' remote-write receiver and, push for push,
//! into a live deploywatch; the backtest reads the history back through remote read and must
//! find the same deploys with the same verdicts at the same event times. Then two rule sets
//! on the same history must differ as their thresholds say.

use std::process::{Command, Output};

use hyper::Method;
use serde_json::Value;

use crate::harness::{self, Deploywatch, Prometheus, RW1_CONTENT_TYPE};
use crate::sim::{self, Effect, Feed, Service, Signal, Sim, Who, EPOCH, MIN, SEC};

/// The deploys happen 30 minutes into the history; the data runs 20 minutes past them.
const T: i64 = EPOCH + 30 * MIN;
const END: i64 = T + 20 * MIN;
const SELECTOR: &str = r#"{namespace="shop", job=~"cart|pay|search"}"#;

/// No scrape configs: Prometheus' own samples (wall clock, 2026) would put the simulated
/// 2025 history out of its head's bounds.
const PROMETHEUS_CONFIG: &str = "global:\n  evaluation_interval: 1m\n";

/// Three services, one deploy each:
/// - `cart`: a canary whose errors are ×10 (a rollback under any sensible rules);
/// - `pay`: a clean rolling update (surge 1, one pod every 40 s);
/// - `search`: a canary with errors ×2 (1 % → 2 %) five minutes after the others: flagged
///   by strict error thresholds, not by loose ones.
fn services() -> Vec<Sim> {
    let on_v2 = |signal, factor, from| {
        Effect::step(Who::Version("v2".into()), signal, factor, from, i64::MAX)
    };
    vec![
        Sim::new(
            Service::new("cart", 801, 3)
                .canary("v2", T, 1)
                .effect(on_v2(Signal::Errors, 10.0, T)),
        ),
        Sim::new(Service::new("pay", 802, 3).rolling("v2", T, 40 * SEC)),
        Sim::new(
            Service::new("search", 803, 3)
                .canary("v2", T + 5 * MIN, 1)
                .effect(on_v2(Signal::Errors, 2.0, T + 5 * MIN)),
        ),
    ]
}

/// Sends every push of the simulation, in event-time order, to deploywatch and to
/// Prometheus' remote-write receiver; both must accept all of it.
fn fill(dw: &Deploywatch, prom: &Prometheus) -> u64 {
    let mut feed = Feed::new(services(), 5 * SEC);
    let mut samples = 0;
    while feed.t + feed.window <= END {
        let push = feed.next_push();
        for req in &push.requests {
            let (status, body) = dw.push_v1(req);
            assert_eq!(status, 204, "deploywatch refused a push: {body}");
            let res = harness::request(
                Method::POST,
                &format!("{}/api/v1/write", prom.url()),
                &[
                    ("Content-Type", RW1_CONTENT_TYPE),
                    ("Content-Encoding", "snappy"),
                    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
                ],
                harness::snappy(&prost::Message::encode_to_vec(req)),
            );
            assert_eq!(
                res.status / 100,
                2,
                "Prometheus refused a push ending at {}: {}",
                push.end,
                res.text()
            );
        }
        samples += push.samples;
    }
    samples
}

fn backtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .arg("backtest")
        .args(args)
        .output()
        .expect("running deploywatch backtest")
}

fn json_of(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "backtest failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "backtest output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// What must be equal between the live run and the backtest: everything judged (rules'
/// values, evidence and verdicts, suspects, the timeline's events and times). Values are
/// compared to 12 significant digits: the judge sums over a version's series in the order
/// the series first arrived, and that order within one push is not in the data (the
/// simulator sends a scrape in exposition order, Prometheus' remote read returns series
/// sorted by labels, a real Prometheus' shards interleave them by hash), so sums may differ
/// in their last bits. Verdicts, times and everything else are compared exactly.
fn essence(d: &Value) -> Value {
    round_floats(&essence_exact(d))
}

fn round_floats(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            Value::String(format!("{:.11e}", n.as_f64().expect("a float")))
        }
        Value::Array(a) => Value::Array(a.iter().map(round_floats).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), round_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn essence_exact(d: &Value) -> Value {
    let timeline: Vec<Value> = d["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .map(|e| serde_json::json!([e["at"], e["event"], e["verdict"], e["rule"]]))
        .collect();
    let rules: Vec<Value> = d["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            serde_json::json!([
                r["rule"],
                r["verdict"],
                r["canary"],
                r["baseline"],
                r["effect"],
                r["confidence"],
                r["matched_series"]
            ])
        })
        .collect();
    serde_json::json!({
        "id": d["id"], "service": d["service"], "version": d["version"],
        "baseline_version": d["baseline_version"], "strategy": d["strategy"],
        "source": d["source"], "started_at": d["started_at"], "phase": d["phase"],
        "verdict": d["verdict"], "verdict_at": d["verdict_at"], "rules": rules,
        "timeline": timeline, "suspects": d["suspects"],
    })
}

fn by_service(deploys: &Value) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = deploys
        .as_array()
        .expect("a deploys array")
        .iter()
        .map(|d| (d["service"].as_str().unwrap_or("?").to_string(), essence(d)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

const LOOSE: &str = r#"
rules:
  - name: error_rate
    signal: ratio
    numerator: ['http_requests_total{code=~"5.."}']
    denominator: ['http_requests_total']
    bad: up
    warn:     {relative: 2.5, absolute: 0.01}
    pause:    {relative: 4,   absolute: 0.03}
    rollback: {relative: 6,   absolute: 0.05}
    warmup: 1m
    min_evidence: 200
    observe: 5m
"#;

const STRICT: &str = r#"
rules:
  - name: error_rate
    signal: ratio
    numerator: ['http_requests_total{code=~"5.."}']
    denominator: ['http_requests_total']
    bad: up
    warn:     {relative: 1.1, absolute: 0.002}
    pause:    {relative: 1.2, absolute: 0.004}
    rollback: {relative: 1.5, absolute: 0.005}
    warmup: 1m
    min_evidence: 200
    observe: 5m
"#;

#[test]
fn backtest_finds_the_live_runs_deploys_verdicts_and_times_then_compares_rule_sets() {
    let prom =
        Prometheus::start_with_args(PROMETHEUS_CONFIG, &["--web.enable-remote-write-receiver"]);
    let dw = Deploywatch::start();
    let sent = fill(&dw, &prom);
    assert!(sent > 50_000, "only {sent} samples simulated");

    let live = dw.get_json("/api/v1/deploys");
    let live = by_service(&live["deploys"]);
    let verdicts: Vec<(&str, &str)> = live
        .iter()
        .map(|(s, d)| (s.as_str(), d["verdict"].as_str().unwrap_or("?")))
        .collect();
    // The live run itself: three deploys, the ×10 canary rolled back, the clean rollout
    // passed, the ×2 canary flagged (so the comparison below has something to agree with).
    assert_eq!(verdicts.len(), 3, "live deploys: {live:#?}");
    assert_eq!(verdicts[0], ("cart", "rollback"), "{live:#?}");
    assert_eq!(verdicts[1], ("pay", "pass"), "{live:#?}");
    assert_eq!(verdicts[2].0, "search");
    assert!(
        sim::severity(verdicts[2].1) >= sim::severity("warn"),
        "{live:#?}"
    );

    let from = (EPOCH / 1000).to_string();
    let to = (END / 1000).to_string();
    let url = prom.url();
    let common = [
        "--prometheus.url",
        url.as_str(),
        "--selector",
        SELECTOR,
        "--from",
        from.as_str(),
        "--to",
        to.as_str(),
    ];

    // Default rules, as the live deploywatch runs: the same deploys, verdicts and times.
    // Read in 20-minute chunks so that chunk boundaries fall inside the history.
    let out = backtest(&[&common[..], &["--format", "json", "--read-chunk", "20m"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let replayed = by_service(&json_of(&out)["deploys"]);
    assert_eq!(replayed, live, "backtest vs live; backtest said: {stderr}");
    assert!(
        stderr.contains(&format!("read {sent} samples")),
        "every sample sent is read back: {stderr}"
    );

    // The table names each deploy with its verdict, time and deciding rule.
    let out = backtest(&common);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{table}");
    let cart = table
        .lines()
        .find(|l| l.starts_with("cart "))
        .unwrap_or_else(|| panic!("no cart row in:\n{table}"));
    let cart_live = &live[0].1;
    for want in [
        "v2",
        "v1",
        "canary",
        "rollback",
        &deploywatch::logging::rfc3339_ms(cart_live["verdict_at"].as_i64().expect("verdict_at")),
        "error_rate",
    ] {
        assert!(cart.contains(want), "{want:?} missing in {cart:?}");
    }
    assert!(table.contains("3 deploys: "), "{table}");
    println!("{table}");

    // Issue 16: a range that starts 37 s before the deploys (within the detection grace of
    // the first sample in range, which once skipped them silently). The history before
    // `--from` says which versions were running; every version that started after it is
    // judged, and the ones not judged are listed with why.
    let late_from = format!("{:.3}", (T - 37 * SEC) as f64 / 1000.0);
    let late = [
        "--prometheus.url",
        url.as_str(),
        "--selector",
        SELECTOR,
        "--from",
        late_from.as_str(),
        "--to",
        to.as_str(),
    ];
    let v = json_of(&backtest(&[&late[..], &["--format", "json"]].concat()));
    let found: Vec<(String, String)> = by_service(&v["deploys"])
        .into_iter()
        .map(|(s, d)| (s, d["version"].as_str().unwrap_or("?").to_string()))
        .collect();
    assert_eq!(
        found,
        [("cart", "v2"), ("pay", "v2"), ("search", "v2")]
            .map(|(s, v)| (s.to_string(), v.to_string())),
        "{v:#}"
    );
    let cart = v["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["service"] == "cart")
        .unwrap();
    assert_eq!(cart["verdict"], "rollback", "{cart:#}");
    assert_eq!(cart["started_at"], live[0].1["started_at"]);
    let not: Vec<(String, String, String)> = v["not_deployed"]
        .as_array()
        .unwrap_or_else(|| panic!("no not_deployed in {v:#}"))
        .iter()
        .map(|u| {
            (
                u["service"].as_str().unwrap().to_string(),
                u["version"].as_str().unwrap().to_string(),
                u["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        not,
        ["cart", "pay", "search"].map(|s| (
            s.to_string(),
            "v1".to_string(),
            "running_before".to_string()
        )),
        "{v:#}"
    );
    let out = backtest(&late);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("3 versions not judged as deploys:\n  cart v1: serving since ")
            && table.contains("at or before --from: running before the range"),
        "{table}"
    );

    // Two rule sets on the same history: the strict error thresholds flag the ×2 canary the
    // loose ones let through; both roll the ×10 canary back; nothing is flagged only by the
    // loose ones.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (loose, strict) = (dir.path().join("loose.yml"), dir.path().join("strict.yml"));
    std::fs::write(&loose, LOOSE).unwrap();
    std::fs::write(&strict, STRICT).unwrap();
    let (loose, strict) = (loose.display().to_string(), strict.display().to_string());
    let out = backtest(
        &[
            &common[..],
            &[
                "--format",
                "json",
                "--rules",
                &loose,
                "--compare-rules",
                &strict,
            ],
        ]
        .concat(),
    );
    let v = json_of(&out);
    let c = &v["comparison"];
    let ids = |key: &str| -> Vec<String> {
        c[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in {c}"))
            .iter()
            .map(|f| f["service"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    assert_eq!(ids("newly_flagged"), ["search"], "{c:#}");
    assert!(ids("no_longer_flagged").is_empty(), "{c:#}");
    assert_eq!(c["flagged_before"], 1, "{c:#}");
    assert_eq!(c["flagged_after"], 2, "{c:#}");
    let verdict = |list: &Value, svc: &str| -> String {
        list.as_array()
            .unwrap()
            .iter()
            .find(|d| d["service"] == svc)
            .map(|d| d["verdict"].as_str().unwrap_or("?").to_string())
            .unwrap_or_else(|| panic!("no {svc} deploy in {list}"))
    };
    assert_eq!(verdict(&v["deploys"], "cart"), "rollback");
    assert_eq!(verdict(&c["deploys"], "cart"), "rollback");
    assert!(sim::severity(&verdict(&c["deploys"], "search")) >= sim::severity("warn"));
    assert!(sim::severity(&verdict(&v["deploys"], "search")) < sim::severity("warn"));
    // The strict rules roll the cart back earlier; flagged it no later.
    let cart: Vec<(String, i64)> = c["detection_changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["service"] == "cart")
        .map(|d| {
            (
                d["what"].as_str().unwrap().into(),
                d["gained_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        cart.iter().any(|(w, g)| w == "rollback" && *g > 0) && cart.iter().all(|(_, g)| *g > 0),
        "{cart:?}"
    );
    // The same comparison as a table (shown with --nocapture; docs/backtest.md quotes it).
    let out = backtest(
        &[
            &common[..],
            &["--rules", &loose, "--compare-rules", &strict],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("newly flagged: 1\n  search v2"), "{text}");
    println!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let changes: Vec<(String, String, String)> = c["verdict_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["service"].as_str().unwrap().into(),
                x["before"].as_str().unwrap().into(),
                x["after"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        changes.iter().any(|(s, _, _)| s == "search"),
        "the search canary's verdict changes: {changes:?}"
    );
}

#[test]
fn backtest_exit_codes_bad_arguments_1_prometheus_unreachable_2() {
    let port = harness::free_port().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let base = [
        "--prometheus.url",
        url.as_str(),
        "--from",
        "1764000000",
        "--to",
        "1764003600",
    ];
    let out = backtest(&[&base[..], &["--selector", r#"{job="a"}"#]].concat());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach Prometheus"), "{err}");

    let out = backtest(&[&base[..], &["--selector", r#"{job="a" version="b"}"#]].concat());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected ',' or '}'"), "{err}");

    let out = backtest(
        &[
            &base[..],
            &["--selector", "{job=\"a\"}", "--format", "yaml"],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = backtest(&[
        "--prometheus.url",
        &url,
        "--selector",
        "{job=\"a\"}",
        "--from",
        "soon",
        "--to",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    // A URL without a scheme is a usage error, not an unreachable server.
    let out = backtest(&[
        "--prometheus.url",
        "prometheus:9090",
        "--selector",
        "{job=\"a\"}",
        "--from",
        "1764000000",
        "--to",
        "1764003600",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prometheus.url"));
}
