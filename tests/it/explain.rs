//! Explaining deploys (issue 5): suspects named from the data of simulated services
//! (tests/it/sim.rs) and mapped to the registered changes; the post-deploy report, held to
//! golden files (`tests/golden/`, rewritten with `UPDATE_GOLDEN=1`); rollback and recovery
//! in the timeline; the deploy history across a restart on the same `--storage.path`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};

use crate::harness::{self, Deploywatch};
use crate::sim::{
    deploy, register_deploy, Driver, Effect, Feed, Service, Signal, Who, EPOCH, MIN, SEC,
};

/// The deploy: 30 minutes of event time after the simulator's epoch.
const T: i64 = EPOCH + 30 * MIN;

fn registration(service: &str) -> Value {
    json!({
        "service": service,
        "version": "v2",
        "baseline_version": "v1",
        "strategy": "canary",
        "at": T,
        "commit": "3f2c9e1",
        "author": "ci",
        "url": "https://ci.example/run/42",
        "changes": [
            {"component": "redis-pool", "summary": "pool size 50 -> 500",
             "files": ["src/cache/pool.rs"]},
            {"component": "checkout-cart", "summary": "cart totals computed on checkout",
             "files": ["src/checkout/cart.rs"]}
        ]
    })
}

/// Plays `svc` into `dw` until `end`, registering the canary at [`T`]; the deploy's JSON.
fn play(dw: &Deploywatch, svc: Service, end: i64) -> (String, Value) {
    let name = svc.name.clone();
    let mut driver = Driver::new(dw, Feed::one(svc, 5 * SEC));
    driver.run_to(T);
    let id = register_deploy(dw, &registration(&name)).expect("registering the deploy");
    driver.run_to(end);
    let d = deploy(dw, &id).expect("reading the deploy");
    (id, d)
}

fn events(d: &Value, name: &str) -> Vec<Value> {
    d["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["event"] == name)
        .cloned()
        .collect()
}

fn get_text(base: &str, path: &str) -> (u16, String, String) {
    let r = harness::request(Method::GET, &format!("{base}{path}"), &[], Vec::new());
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (r.status, ct, r.text())
}

/// The report as Markdown and as pretty JSON.
fn report(base: &str, id: &str) -> (String, String) {
    let (status, ct, md) = get_text(base, &format!("/api/v1/deploys/{id}/report"));
    assert_eq!(status, 200, "{md}");
    assert_eq!(ct, "text/markdown; charset=utf-8");
    let (status, ct, js) = get_text(base, &format!("/api/v1/deploys/{id}/report?format=json"));
    assert_eq!(status, 200, "{js}");
    assert!(ct.starts_with("application/json"), "{ct}");
    let v: Value = serde_json::from_str(&js).expect("the JSON report parses");
    (md, serde_json::to_string_pretty(&v).unwrap() + "\n")
}

/// Compares `actual` with `tests/golden/<name>` exactly; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        eprintln!("rewrote {}", path.display());
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it. Actual:\n{actual}",
            path.display()
        )
    });
    if want != actual {
        let line = want
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the golden file at line {}:\n  want: {:?}\n  got:  {:?}\n\
             (UPDATE_GOLDEN=1 rewrites it after review)\nActual:\n{actual}",
            path.display(),
            line + 1,
            want.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

/// Errors ×10 on `/checkout` of the canary only; the canary is rolled back (its pod goes
/// away) 8 minutes after the deploy. The route comes first, mapped to `checkout-cart`; the
/// timeline shows the rollback and the recovery; the report is golden; and after a restart
/// on the same storage the finished deploy and its report are still served.
#[test]
fn route_regression_names_the_route_and_its_change_and_survives_a_restart() {
    let svc = Service::new("cart", 501, 3)
        .canary("v2", T, 1)
        .effect(
            Effect::step(Who::Version("v2".into()), Signal::Errors, 10.0, T, i64::MAX)
                .on_route("/checkout"),
        )
        .with(|s| s.pods[3].end = T + 8 * MIN);
    let dw = Deploywatch::start();
    let (id, d) = play(&dw, svc, T + 13 * MIN);
    let ctx = || format!("{d:#}");
    assert_eq!(d["verdict"], "rollback", "{}", ctx());
    // Every rule row at a regression verdict shows at least the confidence that tier asks
    // for (α = 0.001 for rollback, 0.005 for pause, 0.01 for warn, spread over the routes),
    // the deciding route's own, never the diluted service-wide one beside it.
    for r in d["rules"].as_array().unwrap() {
        let need = match r["verdict"].as_str().unwrap() {
            "rollback" => 0.999,
            "pause" => 0.995,
            "warn" => 0.99,
            _ => continue,
        };
        let c = r["confidence"].as_f64().unwrap();
        assert!(c >= need, "{} at {c}: {}", r["rule"], ctx());
    }
    let s = &d["suspects"][0];
    assert_eq!(s["dimension"], "route", "{}", ctx());
    assert_eq!(s["value"], "/checkout", "{}", ctx());
    assert_eq!(s["change"], "checkout-cart", "{}", ctx());
    assert_eq!(s["scope"], "version", "{}", ctx());
    assert!(s["share"].as_f64().unwrap() > 0.67, "{}", ctx());
    assert!(!events(&d, "suspects_named").is_empty(), "{}", ctx());
    let rolled = events(&d, "rollback_observed");
    assert_eq!(rolled.len(), 1, "{}", ctx());
    let rolled_at = rolled[0]["at"].as_i64().unwrap();
    assert!(
        (T + 9 * MIN..=T + 10 * MIN).contains(&rolled_at),
        "rollback observed a staleness time after the pod went away\n{}",
        ctx()
    );
    let recovered = events(&d, "recovered");
    assert_eq!(recovered.len(), 1, "{}", ctx());
    assert!(recovered[0]["at"].as_i64().unwrap() >= rolled_at + MIN);
    assert_eq!(d["phase"], "done", "{}", ctx());

    let (md, js) = report(&dw.url(), &id);
    assert!(md.contains("Rollback done"), "{md}");
    assert!(md.contains("on route /checkout"), "{md}");
    assert!(md.contains("matches change checkout-cart"), "{md}");
    assert_recommendations_agree(&md);
    golden("rollback_route.md", &md);
    golden("rollback_route.json", &js);

    // A restart on the same storage: the finished deploy and its report are still served.
    let storage = tempfile::tempdir().unwrap();
    copy_dir(&dw.dir().join("data"), storage.path());
    drop(dw);
    let again = Restarted::start(storage.path());
    let list: Value = serde_json::from_str(&get_text(&again.url(), "/api/v1/deploys").2).unwrap();
    let stored = list["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed after the restart: {list:#}"))
        .clone();
    assert_eq!(stored["phase"], "done");
    assert_eq!(stored["verdict"], "rollback");
    assert_eq!(stored["suspects"][0]["value"], "/checkout");
    let (status, _, one) = get_text(&again.url(), &format!("/api/v1/deploys/{id}"));
    assert_eq!(status, 200, "{one}");
    let (md2, js2) = report(&again.url(), &id);
    assert_eq!(md2, md, "the report after the restart is the stored one");
    assert_eq!(js2, js);
}

/// A leak on one of two canary pods: the pod is named, scoped to one instance.
#[test]
fn leak_on_one_pod_names_the_pod_not_the_version() {
    let leak = 2.0 * 1024.0 * 1024.0;
    let svc = Service::new("leaky", 502, 3)
        .canary("v2", T, 2)
        .effect(Effect::step(
            Who::Pod(4),
            Signal::LeakBytesPerSec,
            leak,
            T,
            i64::MAX,
        ));
    let pod = crate::sim::Sim::new(svc.clone()).pod_name(4).to_string();
    let dw = Deploywatch::start();
    let (_, d) = play(&dw, svc, T + 9 * MIN);
    let ctx = || format!("{d:#}");
    assert!(
        crate::sim::severity(d["verdict"].as_str().unwrap()) >= 2,
        "{}",
        ctx()
    );
    let s = &d["suspects"][0];
    assert_eq!(s["dimension"], "pod", "{}", ctx());
    assert_eq!(s["value"], pod.as_str(), "{}", ctx());
    assert_eq!(s["scope"], "instance", "{}", ctx());
    assert!(
        s["note"].as_str().unwrap_or("").contains("one instance"),
        "{}",
        ctx()
    );
}

/// A database outage hits the routes that use it on both versions: the `db` label is named,
/// scoped to both versions, with no change blamed; the deploy is not rolled back.
#[test]
fn dependency_outage_on_both_versions_names_the_dependency_not_the_deploy() {
    let (from, until) = (T + 5 * MIN, T + 10 * MIN);
    let outage =
        |route: &str| Effect::step(Who::All, Signal::Errors, 10.0, from, until).on_route(route);
    let svc = Service::new("orders", 503, 3)
        .canary("v2", T, 1)
        .with(|s| {
            s.route_dependency = Some((
                "db".into(),
                ["catalog-db", "orders-db", "orders-db", "catalog-db"]
                    .map(String::from)
                    .to_vec(),
            ))
        })
        .effect(outage("/cart"))
        .effect(outage("/checkout"));
    let dw = Deploywatch::start();
    let (id, d) = play(&dw, svc, T + 10 * MIN);
    let ctx = || format!("{d:#}");
    assert!(
        crate::sim::severity(d["verdict"].as_str().unwrap()) <= 2,
        "not the deploy: no pause or rollback\n{}",
        ctx()
    );
    assert_eq!(events(&d, "shared_degradation").len(), 1, "{}", ctx());
    let shared: Vec<&Value> = d["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["scope"] == "both_versions")
        .collect();
    assert!(!shared.is_empty(), "{}", ctx());
    assert_eq!(shared[0]["dimension"], "db", "{}", ctx());
    assert_eq!(shared[0]["value"], "orders-db", "{}", ctx());
    assert!(shared[0]["change"].is_null(), "{}", ctx());
    assert!(
        d["suspects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["change"].is_null()),
        "no change is blamed\n{}",
        ctx()
    );
    let (md, _) = report(&dw.url(), &id);
    assert!(md.contains("Not the deploy"), "{md}");
    assert_recommendations_agree(&md);
}

/// Issue 16: recommendations never contradict each other. No report both says to roll the
/// new version back (or pause it, or fix it) and that its trouble is not the deploy's.
fn assert_recommendations_agree(md: &str) {
    let recs: Vec<&str> = md
        .split("## Recommendations")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or("")
        .lines()
        .filter(|l| l.starts_with("- "))
        .collect();
    let blames = recs.iter().any(|r| {
        r.starts_with("- Roll back")
            || r.starts_with("- Pause the rollout")
            || r.starts_with("- Fix before redeploying")
            || r.starts_with("- Watch ")
    });
    let acquits = recs.iter().any(|r| r.contains("Not the deploy"));
    assert!(
        !(blames && acquits),
        "the recommendations contradict each other:\n{}",
        recs.join("\n")
    );
}

/// Issue 16: a deploy with only ~40 s of history before it. v1 is steady at 1 % errors and
/// v2 fails ten times as often: the deploy is rolled back, and nothing claims "not the
/// deploy" — 40 s of history is not enough to say what "before the deploy" was
/// (docs/explain.md: 10 minutes of the old version's data are).
#[test]
fn issue16_short_history_never_claims_not_the_deploy() {
    for seed in [505, 506, 507] {
        let svc = Service::new_at("brief", seed, 3, T - 40 * SEC)
            .canary("v2", T, 1)
            .effect(Effect::step(
                Who::Version("v2".into()),
                Signal::Errors,
                10.0,
                T,
                i64::MAX,
            ));
        let dw = Deploywatch::start();
        let (id, d) = play(&dw, svc, T + 8 * MIN);
        let ctx = || format!("seed {seed}: {d:#}");
        assert!(
            crate::sim::severity(d["verdict"].as_str().unwrap()) >= 3,
            "{}",
            ctx()
        );
        assert!(
            events(&d, "shared_degradation").is_empty(),
            "no shared degradation without enough pre-deploy history\n{}",
            ctx()
        );
        assert!(
            d["suspects"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["scope"] != "both_versions"),
            "{}",
            ctx()
        );
        let (md, _) = report(&dw.url(), &id);
        assert!(!md.contains("Not the deploy"), "seed {seed}: {md}");
        assert_recommendations_agree(&md);
    }
}

/// Issue 16: a bad deploy during a dependency outage, with a full history before it. v2
/// fails on `/checkout` (the deploy), and `orders-db` fails for both versions on `/cart`
/// (not the deploy). The report recommends the rollback and names the shared degradation
/// as an addition to it, never as "not the deploy" beside "roll back".
#[test]
fn issue16_bad_deploy_during_an_outage_recommends_without_contradiction() {
    let (from, until) = (T + 4 * MIN, T + 12 * MIN);
    let svc = Service::new("busy", 508, 3)
        .canary("v2", T, 1)
        .with(|s| {
            s.route_dependency = Some((
                "db".into(),
                ["catalog-db", "orders-db", "orders-db", "catalog-db"]
                    .map(String::from)
                    .to_vec(),
            ))
        })
        .effect(
            Effect::step(
                Who::Version("v2".into()),
                Signal::Errors,
                10.0,
                T + 4 * MIN,
                i64::MAX,
            )
            .on_route("/checkout"),
        )
        .effect(Effect::step(Who::All, Signal::Errors, 10.0, from, until).on_route("/cart"));
    let dw = Deploywatch::start();
    let (id, d) = play(&dw, svc, T + 12 * MIN);
    let ctx = || format!("{d:#}");
    assert!(
        crate::sim::severity(d["verdict"].as_str().unwrap()) >= 3,
        "{}",
        ctx()
    );
    for e in events(&d, "shared_degradation") {
        assert!(
            !e["detail"].as_str().unwrap().contains("not the deploy"),
            "a regressed deploy's shared degradation is not called \"not the deploy\"\n{}",
            ctx()
        );
    }
    let (md, _) = report(&dw.url(), &id);
    assert!(!md.contains("Not the deploy"), "{md}");
    assert_recommendations_agree(&md);
}

/// A clean canary: the report says it is safe to promote, and is golden.
#[test]
fn clean_canary_report_says_safe_to_promote() {
    let svc = Service::new("calm", 504, 3).canary("v2", T, 1);
    let dw = Deploywatch::start();
    let (id, d) = play(&dw, svc, T + 14 * MIN);
    assert_eq!(d["verdict"], "pass", "{d:#}");
    let (md, js) = report(&dw.url(), &id);
    assert!(md.contains("Safe to promote v2"), "{md}");
    assert_recommendations_agree(&md);
    golden("pass_clean.md", &md);
    golden("pass_clean.json", &js);
    let (status, _, body) = get_text(&dw.url(), "/api/v1/deploys/nope/report");
    assert_eq!(status, 404, "{body}");
}

// ---------------------------------------------------------------------------------------

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// deploywatch started on a given `--storage.path` (the harness makes its own); killed on
/// drop.
struct Restarted {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Restarted {
    fn start(storage: &Path) -> Restarted {
        let port = harness::free_port();
        let log = storage.join("deploywatch-restarted.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--storage.path={}", storage.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting deploywatch");
        let r = Restarted { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match harness::try_request(
                Method::GET,
                &format!("{}/-/ready", r.url()),
                &[],
                Vec::new(),
            ) {
                Ok(x) if x.status == 200 => return r,
                _ if Instant::now() > deadline => panic!(
                    "the restarted deploywatch is not ready: {}",
                    std::fs::read_to_string(&r.log).unwrap_or_default()
                ),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
