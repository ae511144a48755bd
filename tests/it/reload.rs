//! Hot reload of config and rules: a good file takes effect, a bad one keeps the old rules in
//! force and is counted; a bad config at start exits 1 naming file, line and field.

use std::process::Command;

use crate::harness::*;
use hyper::Method;

const ERRORS_ONLY: &str = r#"
rules:
  - name: errors_only
    signal: ratio
    numerator: ['http_requests_total{code=~"5.."}']
    denominator: ['http_requests_total']
    rollback: {relative: 2, absolute: 0.01}
"#;

const LATENCY_ONLY: &str = r#"
rules:
  - name: latency_only
    signal: quantile
    quantile: 0.9
    select: ['http_request_duration_seconds_bucket']
    rollback: {relative: 2}
"#;

fn rule_names(dw: &Deploywatch) -> Vec<String> {
    let s = dw.get_json("/api/v1/services");
    s["services"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect()
}

fn reload(dw: &Deploywatch) -> Response {
    request(Method::POST, &format!("{}/-/reload", dw.url()), &[], vec![])
}

#[test]
fn reload_applies_good_rules_and_keeps_the_old_ones_on_error() {
    let dw = Deploywatch::start_with_files(
        "rule_files: ['rules/*.yml']\n",
        &[("rules/a.yml", ERRORS_ONLY)],
    );
    let (status, body) = dw.push_v1(&write_request(vec![series(
        &[
            ("__name__", "http_requests_total"),
            ("code", "500"),
            ("job", "shop"),
        ],
        &[(1_764_000_000_000, 1.0)],
    )]));
    assert_eq!(status, 204, "{body}");
    assert_eq!(rule_names(&dw), ["errors_only"]);
    let matched = &dw.services()["services"][0]["rules"][0]["matched_series"];
    assert_eq!(matched, 1, "the rule's selectors match the series");

    // A broken rule file: the reload fails, says where, and the old rules stay.
    std::fs::write(
        dw.dir().join("rules/a.yml"),
        "rules:\n  - name: x\n    signal: nope\n",
    )
    .unwrap();
    let res = reload(&dw);
    assert_eq!(res.status, 500, "{}", res.text());
    assert!(
        res.text().contains("a.yml") && res.text().contains("signal"),
        "{}",
        res.text()
    );
    assert_eq!(rule_names(&dw), ["errors_only"]);
    assert_eq!(
        dw.metric(
            "deploywatch_config_reloads_total",
            &[("outcome", "failure")]
        ),
        Some(1.0)
    );
    assert_eq!(
        dw.metric("deploywatch_config_last_reload_successful", &[]),
        Some(0.0)
    );

    // A good one takes effect.
    std::fs::write(dw.dir().join("rules/a.yml"), LATENCY_ONLY).unwrap();
    let res = reload(&dw);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(rule_names(&dw), ["latency_only"]);
    assert_eq!(
        dw.metric(
            "deploywatch_config_reloads_total",
            &[("outcome", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        dw.metric("deploywatch_config_last_reload_successful", &[]),
        Some(1.0)
    );
}

#[test]
fn sighup_reloads_too() {
    let dw = Deploywatch::start_with_files("rule_files: ['r.yml']\n", &[("r.yml", ERRORS_ONLY)]);
    std::fs::write(dw.dir().join("r.yml"), LATENCY_ONLY).unwrap();
    let pid = dw.pid();
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_for(
        "the SIGHUP reload",
        std::time::Duration::from_secs(10),
        || match dw.metric(
            "deploywatch_config_reloads_total",
            &[("outcome", "success")],
        ) {
            Some(v) if v >= 1.0 => Ok(()),
            other => Err(format!("reloads: {other:?}")),
        },
    );
}

#[test]
fn a_bad_config_or_rule_file_at_start_exits_1_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dw.yml");
    std::fs::write(&cfg, "global:\n  service_label: job\n  retension: 2h\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .arg(format!("--config.file={}", cfg.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:", cfg.display())) && err.contains("retension"),
        "{err}"
    );

    std::fs::write(&cfg, "rule_files: [missing/*.yml]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .arg(format!("--config.file={}", cfg.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches no file"));
}
