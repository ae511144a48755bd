//! The judge held to its targets: each test plays a simulated service (tests/it/sim.rs)
//! into a fresh deploywatch over the wire, 30 minutes of event time before the deploy and up
//! to 20 after, ~10 requests/s per pod (three `v1` pods and one `v2` canary, 40 req/s in
//! all) and 15 s scrapes, and asserts the deploy's verdict, the worst verdict it ever showed,
//! and for regressions the detection delay in event time:
//! `verdict_at − max(deploy start + the deciding rule's warm-up, regression start)`.
//!
//! Every run prints one line `scenario=… verdict=… delay_s=…` (collect them with
//! `cargo test --test it scenarios -- --nocapture 2>&1 | grep ^scenario=`).

use serde_json::{json, Value};

use crate::harness::Deploywatch;
use crate::sim::{
    default_warmups, deploy, find_deploy, register_deploy, severity, Driver, Effect, Feed, Service,
    Shape, Signal, Who, EPOCH, MIN, SEC,
};

/// The deploy: 30 minutes of event time after the simulator's epoch.
pub const T: i64 = EPOCH + 30 * MIN;

/// How a deploy becomes known to deploywatch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Via {
    /// `POST /api/v1/deploys` at the deploy's event time, with this strategy.
    Api(&'static str),
    /// The new version label simply appears.
    Detection,
}

pub struct Case {
    pub name: &'static str,
    pub svc: Service,
    pub via: Via,
    /// Event time the data runs to.
    pub end: i64,
    /// When the injected regression starts (`None`: a clean deploy).
    pub regression_from: Option<i64>,
    /// Push window (event time): Prometheus' 5 s send deadline by default.
    pub window: i64,
    /// Stop early this long after the deploy reached `rollback` (it can only stay there).
    pub linger_after_rollback: i64,
}

impl Case {
    pub fn new(name: &'static str, svc: Service) -> Case {
        Case {
            name,
            svc,
            via: Via::Api("canary"),
            end: T + 20 * MIN,
            regression_from: None,
            window: 5 * SEC,
            linger_after_rollback: 2 * MIN,
        }
    }
    fn via(mut self, via: Via) -> Case {
        self.via = via;
        self
    }
    fn regression_from(mut self, t: i64) -> Case {
        self.regression_from = Some(t);
        self
    }
    fn end(mut self, t: i64) -> Case {
        self.end = t;
        self
    }
    fn window(mut self, w: i64) -> Case {
        self.window = w;
        self
    }
}

/// What a run ended with.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub deploy: Value,
    pub verdict: String,
    pub verdict_at: Option<i64>,
    /// Verdicts as seen after pushes: (push end, verdict), on every change.
    pub history: Vec<(i64, String)>,
    /// The rule that brought the final verdict, from the timeline.
    pub rule: Option<String>,
    pub delay_s: Option<f64>,
}

impl Outcome {
    pub fn worst(&self) -> u8 {
        self.history
            .iter()
            .map(|(_, v)| severity(v))
            .chain([severity(&self.verdict)])
            .max()
            .unwrap_or(0)
    }

    /// Worst verdict seen after pushes that ended before `t`.
    pub fn worst_before(&self, t: i64) -> u8 {
        self.history
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, v)| severity(v))
            .max()
            .unwrap_or(0)
    }

    /// A few lines on the deploy's rules and timeline, for failure messages.
    pub fn explain(&self) -> String {
        let d = &self.deploy;
        let mut s = format!(
            "deploy {} strategy={} source={} started_at={} phase={} verdict={} verdict_at={} \
             comparison={}\n  history: {:?}\n",
            d["id"],
            d["strategy"],
            d["source"],
            rel(d["started_at"].as_i64()),
            d["phase"],
            d["verdict"],
            rel(d["verdict_at"].as_i64()),
            d["comparison"],
            self.history
                .iter()
                .map(|(t, v)| format!("{}:{v}", rel(Some(*t))))
                .collect::<Vec<_>>()
        );
        for r in d["rules"].as_array().into_iter().flatten() {
            s += &format!(
                "  rule {:<14} {:<8} canary={}/{} baseline={}/{} effect={} conf={} series={} :: {}\n",
                r["rule"].as_str().unwrap_or("?"),
                r["verdict"].as_str().unwrap_or("?"),
                r["canary"]["value"],
                r["canary"]["samples"],
                r["baseline"]["value"],
                r["baseline"]["samples"],
                r["effect"],
                r["confidence"],
                r["matched_series"],
                r["reason"].as_str().unwrap_or("")
            );
        }
        for e in d["timeline"].as_array().into_iter().flatten() {
            s += &format!(
                "  {} {} {} {} {}\n",
                rel(e["at"].as_i64()),
                e["event"].as_str().unwrap_or("?"),
                e["verdict"].as_str().unwrap_or(""),
                e["rule"].as_str().unwrap_or(""),
                e["detail"].as_str().unwrap_or("")
            );
        }
        if let Some(sus) = d["suspects"].as_array().filter(|a| !a.is_empty()) {
            s += &format!("  suspects: {}\n", Value::Array(sus.clone()));
        }
        s
    }

    fn print(&self) {
        let delay = self
            .delay_s
            .map(|d| format!("{d:.0}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "scenario={} verdict={} worst={} rule={} verdict_at={} delay_s={delay}",
            self.name,
            self.verdict,
            ["pending", "pass", "warn", "pause", "rollback"][self.worst() as usize],
            self.rule.as_deref().unwrap_or("-"),
            rel(self.verdict_at),
        );
    }
}

/// Seconds after the deploy, signed, for messages (`null` for none).
fn rel(t: Option<i64>) -> String {
    t.map(|t| format!("{:+}s", (t - T) / 1000))
        .unwrap_or_else(|| "null".into())
}

fn registration(case: &Case, strategy: &str) -> Value {
    json!({
        "service": case.svc.name,
        "version": "v2",
        "baseline_version": "v1",
        "strategy": strategy,
        "at": T,
        "commit": "3f2c9e1",
        "author": "ci",
        "url": "https://ci.example/run/42",
        "changes": [
            {"component": "payments-client", "summary": "retry budget 3 -> 10",
             "files": ["src/clients/payments.rs"]},
            {"component": "checkout", "summary": "new coupon validation",
             "files": ["src/routes/checkout.rs", "src/coupons.rs"]}
        ]
    })
}

/// Plays `case` into a fresh deploywatch.
pub fn run(case: Case) -> Outcome {
    let dw = Deploywatch::start();
    run_on(&dw, case)
}

/// Plays `case` into `dw`: the pre-deploy period, the registration (if any), then the
/// observation, reading the deploy after every push.
pub fn run_on(dw: &Deploywatch, case: Case) -> Outcome {
    let service = case.svc.name.clone();
    let mut driver = Driver::new(dw, Feed::one(case.svc.clone(), case.window));
    driver.run_to(T);

    let id = match case.via {
        Via::Api(strategy) => Some(
            register_deploy(dw, &registration(&case, strategy))
                .unwrap_or_else(|e| panic!("scenario {}: registering the deploy: {e}", case.name)),
        ),
        Via::Detection => None,
    };
    let read = |dw: &Deploywatch| -> Result<Value, String> {
        match &id {
            Some(id) => deploy(dw, id),
            None => find_deploy(dw, &service, "v2"),
        }
    };

    let mut history: Vec<(i64, String)> = Vec::new();
    let mut rollback_at: Option<i64> = None;
    let mut errors: Vec<String> = Vec::new();
    let mut t = T;
    while t < case.end {
        let next = (t + case.window).min(case.end);
        driver.run_until(next, |dw, end| match read(dw) {
            Ok(d) => {
                let v = d["verdict"].as_str().unwrap_or("?").to_string();
                if history.last().map(|h| &h.1) != Some(&v) {
                    if let Some((_, prev)) = history.last() {
                        if severity(&v) < severity(prev) {
                            errors.push(format!(
                                "verdict went from {prev} down to {v} at {}",
                                rel(Some(end))
                            ));
                        }
                    }
                    history.push((end, v.clone()));
                }
                if v == "rollback" && rollback_at.is_none() {
                    rollback_at = Some(end);
                }
            }
            // A detected deploy exists only once the new version has reported.
            Err(e) if id.is_none() && end < T + MIN => {
                let _ = e;
            }
            Err(e) => errors.push(format!("{}: {e}", rel(Some(end)))),
        });
        t = driver.now();
        if matches!(rollback_at, Some(r) if t >= r + case.linger_after_rollback) {
            break;
        }
        if errors.len() > 5 {
            break;
        }
    }
    let deploy = read(dw).unwrap_or_else(|e| {
        panic!(
            "scenario {}: reading the deploy at the end: {e}; errors during the run: {errors:?}; \
             services: {:#}",
            case.name,
            dw.services()
        )
    });
    assert!(
        errors.is_empty(),
        "scenario {}: {errors:#?}\n{}",
        case.name,
        deploy
    );

    let verdict = deploy["verdict"].as_str().unwrap_or("?").to_string();
    let verdict_at = deploy["verdict_at"].as_i64();
    // The rule of the verdict change that reached the final verdict.
    let (rule, delay_s) = match case.regression_from {
        Some(from) => detection_delay(&deploy, from),
        None => (deciding_rule(&deploy), None),
    };
    let out = Outcome {
        name: case.name.to_string(),
        deploy,
        verdict,
        verdict_at,
        history,
        rule,
        delay_s,
    };
    out.print();
    out
}

/// The rule of the verdict change that reached the deploy's final verdict.
pub fn deciding_rule(deploy: &Value) -> Option<String> {
    let verdict = deploy["verdict"].as_str()?;
    deploy["timeline"]
        .as_array()?
        .iter()
        .find(|e| e["event"] == "verdict_changed" && e["verdict"] == verdict)
        .and_then(|e| e["rule"].as_str())
        .map(str::to_string)
}

/// The deciding rule and the detection delay in seconds of event time of a deploy whose
/// regression started at `from`: `verdict_at − max(from, deploy at T + the rule's warm-up)`,
/// when the final verdict is a regression (warn or worse).
pub fn detection_delay(deploy: &Value, from: i64) -> (Option<String>, Option<f64>) {
    let rule = deciding_rule(deploy);
    let regressed = severity(deploy["verdict"].as_str().unwrap_or("pending")) >= 2;
    let delay = match (deploy["verdict_at"].as_i64(), regressed) {
        (Some(at), true) => {
            let warmup = rule
                .as_deref()
                .and_then(|r| default_warmups().get(r).copied())
                .unwrap_or(0);
            Some((at - from.max(T + warmup)) as f64 / 1000.0)
        }
        _ => None,
    };
    (rule, delay)
}

// ---------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------

fn assert_verdict(o: &Outcome, want: &str) {
    assert_eq!(
        o.verdict,
        want,
        "scenario {}: final verdict\n{}",
        o.name,
        o.explain()
    );
}

/// A clean deploy must have passed this long after it started (event time), not merely be
/// `pass` at the end: calibration holds 30 clean canaries to the same.
pub const PASS_WITHIN: i64 = 12 * MIN;

fn assert_passed_within(o: &Outcome, within: i64) {
    assert_verdict(o, "pass");
    assert!(
        o.verdict_at.is_some_and(|at| at <= T + within),
        "scenario {}: passed at {}, later than {} s after the deploy\n{}",
        o.name,
        rel(o.verdict_at),
        within / SEC,
        o.explain()
    );
}

fn assert_worst_at_most(o: &Outcome, most: &str) {
    assert!(
        o.worst() <= severity(most),
        "scenario {}: showed a verdict worse than {most}\n{}",
        o.name,
        o.explain()
    );
}

fn assert_between(o: &Outcome, least: &str, most: &str) {
    let s = severity(&o.verdict);
    assert!(
        s >= severity(least) && s <= severity(most),
        "scenario {}: final verdict {} not within {least}..={most}\n{}",
        o.name,
        o.verdict,
        o.explain()
    );
    assert_worst_at_most(o, most);
}

/// The rule that brought the final verdict is one of `rules`.
fn assert_rule(o: &Outcome, rules: &[&str]) {
    assert!(
        o.rule.as_deref().is_some_and(|r| rules.contains(&r)),
        "scenario {}: decided by {:?}, want one of {rules:?}\n{}",
        o.name,
        o.rule,
        o.explain()
    );
}

/// The first suspect names `dimension=value`, scoped to `scope`.
fn assert_top_suspect(o: &Outcome, dimension: &str, value: &str, scope: &str) {
    let s = &o.deploy["suspects"][0];
    assert!(
        s["dimension"] == dimension && s["value"] == value && s["scope"] == scope,
        "scenario {}: top suspect {}, want {dimension}={value} (scope {scope})\n{}",
        o.name,
        s,
        o.explain()
    );
}

fn assert_delay_at_most(o: &Outcome, secs: f64) {
    let d = o
        .delay_s
        .unwrap_or_else(|| panic!("scenario {}: no detection\n{}", o.name, o.explain()));
    assert!(
        d <= secs,
        "scenario {}: detected after {d} s, target ≤ {secs} s\n{}",
        o.name,
        o.explain()
    );
}

// ---------------------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------------------

/// Three `v1` pods from the epoch, a `v2` canary pod at [`T`]: 10 req/s each after it.
fn canary(name: &str, seed: u64) -> Service {
    Service::new(name, seed, 3).canary("v2", T, 1)
}

fn on_v2(signal: Signal, factor: f64) -> Effect {
    Effect::step(Who::Version("v2".into()), signal, factor, T, i64::MAX)
}

#[test]
fn s01_clean_canary_passes() {
    let o = run(Case::new("01_clean_canary", canary("clean", 101)));
    assert_passed_within(&o, PASS_WITHIN);
    assert_worst_at_most(&o, "pass");
}

#[test]
fn s02_errors_x3_roll_back_within_3m_median() {
    let svc = canary("errx3", 102).effect(on_v2(Signal::Errors, 3.0));
    let o = run(Case::new("02_errors_x3", svc).regression_from(T));
    assert_verdict(&o, "rollback");
    // ~4 canary errors per 15 s step: detection time is itself random. The 3-minute target
    // is held as a median over seeds by calibration::detection_delays_over_seeds (measured
    // 158 s, range 60–255 s); one seed is held to the worst seen plus a step.
    assert_delay_at_most(&o, 270.0);
}

#[test]
fn s03a_errors_x10_on_one_route_roll_back() {
    let svc = canary("errx10route", 103).effect(on_v2(Signal::Errors, 10.0).on_route("/checkout"));
    let o = run(Case::new("03a_errors_x10_checkout_only", svc).regression_from(T));
    assert_verdict(&o, "rollback");
    assert_rule(&o, &["error_rate"]);
    // What a user reads first: the route that explains it, on the canary's version.
    assert_top_suspect(&o, "route", "/checkout", "version");
}

#[test]
fn s03b_errors_x10_on_all_routes_roll_back_within_60s() {
    let svc = canary("errx10", 113).effect(on_v2(Signal::Errors, 10.0));
    let o = run(Case::new("03b_errors_x10_all_routes", svc).regression_from(T));
    assert_verdict(&o, "rollback");
    assert_delay_at_most(&o, 60.0);
}

#[test]
fn s04_latency_x2_rolls_back_within_3m() {
    let svc = canary("latx2", 104).effect(on_v2(Signal::Latency, 2.0));
    let o = run(Case::new("04_latency_x2_detected", svc)
        .via(Via::Detection)
        .regression_from(T));
    assert_verdict(&o, "rollback");
    assert_delay_at_most(&o, 180.0);
}

#[test]
fn s05_cpu_x1_6_pauses() {
    let svc = canary("cpu", 105).effect(on_v2(Signal::Cpu, 1.6));
    let o = run(Case::new("05_cpu_x1.6", svc).regression_from(T));
    // ×1.6 is past the cpu rule's pause threshold (×1.5) and far from its rollback (×2.5):
    // the target is pause, and rollback would be a false one.
    assert_between(&o, "pause", "pause");
    assert_rule(&o, &["cpu"]);
    // The whole canary uses more CPU: nothing narrower than its version to blame.
    assert_top_suspect(&o, "version", "v2", "version");
    assert_eq!(o.deploy["suspects"][0]["rule"], "cpu", "{}", o.explain());
}

#[test]
fn s06_memory_leak_pauses_at_least() {
    let leak = 2.0 * 1024.0 * 1024.0;
    let svc = canary("leak", 106).effect(on_v2(Signal::LeakBytesPerSec, leak));
    let o = run(Case::new("06_memory_leak_2MiB_s", svc).regression_from(T));
    assert!(
        severity(&o.verdict) >= severity("pause"),
        "scenario {}: final verdict {}, want pause or rollback\n{}",
        o.name,
        o.verdict,
        o.explain()
    );
    assert_rule(&o, &["memory", "memory_growth"]);
    assert_top_suspect(&o, "version", "v2", "version");
    let by = o.deploy["suspects"][0]["rule"].as_str();
    assert!(
        matches!(by, Some("memory" | "memory_growth")),
        "scenario {}: the top suspect comes from {by:?}, not a memory rule\n{}",
        o.name,
        o.explain()
    );
}

#[test]
fn s07_crash_loop_rolls_back() {
    let svc = canary("crashloop", 107).with(|s| s.pods[3].crash_loop = true);
    let o = run(Case::new("07_crash_loop_detected", svc)
        .via(Via::Detection)
        .regression_from(T));
    assert_verdict(&o, "rollback");
}

#[test]
fn s08_low_traffic_clean_canary_stays_pending() {
    // 0.2 req/s per pod: ~240 canary requests in 20 minutes, ~2 errors.
    let svc = canary("lowtraffic", 108).with(|s| s.rps = 0.8);
    let o = run(Case::new("08_low_traffic_0.2rps", svc));
    assert_verdict(&o, "pending");
    assert_worst_at_most(&o, "pending");
}

#[test]
fn s09_dependency_outage_on_both_versions_is_not_the_deploy() {
    let (from, until) = (T + 5 * MIN, T + 10 * MIN);
    let svc = canary("outage", 109)
        .effect(Effect::step(Who::All, Signal::Errors, 10.0, from, until))
        .effect(Effect::step(Who::All, Signal::Latency, 3.0, from, until));
    let o = run(Case::new("09_dependency_outage", svc));
    assert_worst_at_most(&o, "warn");
}

#[test]
fn s10_traffic_spike_on_both_versions_is_not_the_deploy() {
    let svc = canary("spike", 110).effect(Effect::step(
        Who::All,
        Signal::Traffic,
        3.0,
        T + 5 * MIN,
        T + 10 * MIN,
    ));
    let o = run(Case::new("10_traffic_spike_x3", svc));
    assert_worst_at_most(&o, "warn");
}

#[test]
fn s11_cold_start_passes() {
    let cold = |signal, factor| Effect {
        shape: Shape::ColdStart { secs: 60.0 },
        ..on_v2(signal, factor)
    };
    let svc = canary("coldstart", 111)
        .effect(cold(Signal::Latency, 3.0))
        .effect(cold(Signal::Errors, 2.0));
    let o = run(Case::new("11_cold_start", svc));
    assert_passed_within(&o, PASS_WITHIN);
    assert_worst_at_most(&o, "pass");
}

/// Three `v1` pods replaced one by one by `v2` from [`T`], 40 s apart (2 minutes).
fn rolling(name: &str, seed: u64) -> Service {
    Service::new(name, seed, 3).rolling("v2", T, 40 * SEC)
}

#[test]
fn s12_clean_rolling_deploy_with_slow_drift_passes() {
    let drift = |signal, per_hour| Effect {
        shape: Shape::DriftPerHour,
        ..Effect::step(Who::All, signal, per_hour, EPOCH, i64::MAX)
    };
    let svc = rolling("rolldrift", 112)
        .effect(drift(Signal::Traffic, 0.20))
        .effect(drift(Signal::Latency, 0.05));
    let o = run(Case::new("12_rolling_clean_drift", svc).via(Via::Api("rolling")));
    assert_passed_within(&o, PASS_WITHIN);
    assert_worst_at_most(&o, "pass");
    assert_eq!(o.deploy["strategy"], "rolling", "{}", o.explain());
    assert_eq!(
        o.deploy["comparison"],
        "before-after",
        "a finished rolling deploy compares after with before\n{}",
        o.explain()
    );
}

/// An old version whose own processes were young inside the pre-deploy window: their
/// memory rose to its steady level there. That rise is their start-up, not the version's
/// drift, and the after-against-before trend must not take it off the new version's leak
/// (it did: a leak of 2.5 MiB/min per pod, 150 MiB/h, read as 54 MiB/h beyond the old
/// version's "drift", and the deploy passed).
const MIB: f64 = 1024.0 * 1024.0;

fn young_old_version(name: &str, seed: u64) -> Service {
    let mut svc = Service::new(name, seed, 3).rolling("v2", T, 20 * SEC);
    svc.mem_warmup = 80.0 * MIB;
    svc.mem_warmup_tau_s = 240.0;
    svc
}

#[test]
fn s17_rolling_leak_beside_an_old_version_that_warmed_up_in_the_window() {
    let leak = 2.5 * MIB / 60.0;
    let svc = young_old_version("rollleak", 171).effect(on_v2(Signal::LeakBytesPerSec, leak));
    let o = run(Case::new("17_rolling_leak_young_v1", svc)
        .via(Via::Api("rolling"))
        .regression_from(T));
    assert_eq!(o.deploy["comparison"], "before-after", "{}", o.explain());
    assert_between(&o, "pause", "rollback");
    assert_rule(&o, &["memory_growth"]);
}

#[test]
fn s17b_clean_rolling_beside_an_old_version_that_warmed_up_in_the_window() {
    let o = run(Case::new(
        "17b_rolling_clean_young_v1",
        young_old_version("rollyoung", 172),
    )
    .via(Via::Api("rolling")));
    assert_worst_at_most(&o, "warn");
}

#[test]
fn s13_rolling_deploy_with_errors_x5_rolls_back() {
    let svc = rolling("rollerr", 123).effect(on_v2(Signal::Errors, 5.0));
    let o = run(Case::new("13_rolling_errors_x5_detected", svc)
        .via(Via::Detection)
        .regression_from(T));
    assert_verdict(&o, "rollback");
}

#[test]
fn s14_regression_10m_after_the_deploy_rolls_back_within_4m() {
    let start = T + 10 * MIN;
    let svc = canary("late", 114).effect(Effect::step(
        Who::Version("v2".into()),
        Signal::Errors,
        5.0,
        start,
        i64::MAX,
    ));
    let o = run(Case::new("14_late_errors_x5", svc).regression_from(start));
    assert_verdict(&o, "rollback");
    assert!(
        o.worst_before(start) <= severity("pass"),
        "scenario {}: regressed before the regression started\n{}",
        o.name,
        o.explain()
    );
    assert_delay_at_most(&o, 240.0);
}

#[test]
fn s15_improving_canary_passes() {
    let svc = canary("better", 115)
        .effect(on_v2(Signal::Errors, 1.0 / 3.0))
        .effect(on_v2(Signal::Latency, 0.7));
    let o = run(Case::new("15_improving_canary", svc));
    assert_passed_within(&o, PASS_WITHIN);
    assert_worst_at_most(&o, "pass");
}

/// Event time, not arrival: scenario 2 pushed every 5 s and every 30 s of event time gives
/// the same verdict at the same event time (within one 15 s scrape step).
#[test]
fn s16_replay_in_other_batches_gives_the_same_verdict() {
    let svc = || canary("replay", 102).effect(on_v2(Signal::Errors, 3.0));
    let case = |name, w| {
        let mut c = Case::new(name, svc())
            .regression_from(T)
            .window(w)
            .end(T + 10 * MIN);
        c.linger_after_rollback = 3 * MIN;
        c
    };
    let a = run(case("16_replay_5s", 5 * SEC));
    let b = run(case("16_replay_30s", 30 * SEC));
    assert_eq!(a.verdict, b.verdict, "{}\n{}", a.explain(), b.explain());
    let (Some(x), Some(y)) = (a.verdict_at, b.verdict_at) else {
        panic!("no verdict_at\n{}\n{}", a.explain(), b.explain());
    };
    assert!(
        (x - y).abs() <= 15 * SEC,
        "verdict_at {x} (5 s pushes) vs {y} (30 s pushes)\n{}\n{}",
        a.explain(),
        b.explain()
    );
}

/// A rolling update of a service at about a request a second over 6 pods (a 0.2 % error
/// ratio before): errors ×10 are one error a minute, so some minutes show none.
fn thin_rolling(name: &str, seed: u64) -> Service {
    let mut svc = Service::new(name, seed, 6).rolling("v2", T, 20 * SEC);
    svc.rps = 1.2;
    for r in &mut svc.routes {
        r.error_p = 0.002;
    }
    svc
}

#[test]
fn s18_thin_rolling_errors_x10_pause_though_some_minutes_show_no_error() {
    // Each of the last three minutes must bear a pause out; at one error a minute, a minute
    // without one says nothing (2 of these 10 ended at warn when it had to be beyond the
    // threshold by itself).
    let mut missed = Vec::new();
    for seed in 181..=190u64 {
        let svc = thin_rolling("thinroll", seed).effect(on_v2(Signal::Errors, 10.0));
        let o = run(Case::new("18_thin_rolling_errors_x10", svc)
            .via(Via::Api("rolling"))
            .regression_from(T));
        if o.worst() < severity("pause") {
            missed.push(format!("seed {seed}:\n{}", o.explain()));
        }
    }
    assert!(missed.is_empty(), "not paused:\n{}", missed.join("\n"));
}

#[test]
fn s18b_thin_clean_rolling_with_a_blip_does_not_pause() {
    let mut paused = Vec::new();
    for seed in 181..=190u64 {
        let blip = Effect::step(
            Who::All,
            Signal::ErrorsPlus,
            0.03,
            T + 6 * MIN,
            T + 6 * MIN + 45 * SEC,
        );
        let svc = thin_rolling("thinclean", seed).effect(blip);
        let o = run(Case::new("18b_thin_rolling_clean", svc).via(Via::Api("rolling")));
        if o.worst() > severity("warn") {
            paused.push(format!("seed {seed}:\n{}", o.explain()));
        }
    }
    assert!(paused.is_empty(), "paused:\n{}", paused.join("\n"));
}
