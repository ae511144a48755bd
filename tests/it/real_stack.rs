//! Proof on a real stack: nothing simulated between the instrumented processes and the
//! verdicts.
//!
//! Real HTTP services (`examples/instrumented_service.rs`, instrumented with the official
//! `prometheus-client` crate) take real requests from a bounded load loop. A real
//! Prometheus (Debian's 2.42) finds them through file-based service discovery, as it finds
//! Kubernetes pods: each target carries `job` (the service) and `version` as discovery
//! labels, never in the exposition. It scrapes them every 5 s and remote-writes to
//! deploywatch.
//!
//! Two services run side by side, `shop-clean` and `shop-bad`, each with two v1 pods
//! (0.5 % errors, 40 ms median latency). After 90 s of v1 alone, one v2 pod per service is
//! added to the discovery file: shop-clean's v2 is as good as v1, shop-bad's answers 10 %
//! of its requests with 500. Nobody tells deploywatch about the deploys.
//!
//! What it proves: deploywatch detects both new versions as canaries from the scraped data
//! alone; it rolls shop-bad back (verdict `rollback`) within minutes; and shop-clean's
//! deploy, watched for four minutes (a minute past the latency rules' 3-minute warm-up per
//! new instance), never reaches `pause` or `rollback`, neither in any poll nor in its
//! timeline. (It stays `pending`: a pass needs 6 minutes of a new instance, longer than the
//! test watches; the test checks that its rules did compare both sides meanwhile.)
//!
//! It takes about 5 min 40 s, most of it waiting on event time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::harness::{
    remote_write_to, runtime, service_names, start_on_free_port, version, wait_for, Deploywatch,
    Proc, Prometheus,
};
use crate::sim::{find_deploy, severity};

/// How often Prometheus scrapes every pod.
const SCRAPE_INTERVAL: &str = "5s";
/// v1 alone before the canaries start: past deploywatch's 60 s detection grace (versions
/// seen within a minute of a service's first sample were running before it started).
const BASELINE_ONLY: Duration = Duration::from_secs(90);
/// How long the clean canary is watched at least, from its start: a minute past the latency
/// rules' warm-up (3 min per new instance), so every rule it asserts on has judged.
const CLEAN_WATCH: Duration = Duration::from_secs(240);
/// How long the bad canary may take to be rolled back, from its start.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(240);
/// Time between two looks at the deploys.
const POLL_EVERY: Duration = Duration::from_secs(3);

/// Requests per second sent to each pod, and bounds on the load loop.
const REQUESTS_PER_SECOND: u64 = 20;
const LOAD_AT_MOST_FOR: Duration = Duration::from_secs(6 * 60);
const LOAD_AT_MOST_REQUESTS: u64 = REQUESTS_PER_SECOND * 6 * 60;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

const ROUTES: [&str; 3] = ["products", "cart", "search"];
pub(crate) const MEDIAN_LATENCY_MS: f64 = 40.0;
const CLEAN_ERROR_RATIO: f64 = 0.005;
const BAD_ERROR_RATIO: f64 = 0.10;

// ---------------------------------------------------------------------------------------
// The instrumented pods
// ---------------------------------------------------------------------------------------

/// `examples/instrumented_service`, built by Cargo into the target directory of this test
/// binary. `cargo test` builds examples, but `cargo test --test it` does not, so the test
/// asks Cargo for it once (a no-op when it is up to date).
pub(crate) fn instrumented_service_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // The test binary is <target>/<profile>/deps/it-<hash>.
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lies in <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("<target>/<profile>");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args([
                "build",
                "--example",
                "instrumented_service",
                "--manifest-path",
            ])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .env("CARGO_TARGET_DIR", target_dir);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                cargo.arg("--release");
            }
            other => panic!("the test binary is in an unexpected profile directory {other:?}"),
        }
        let status = cargo.status().expect("running cargo");
        assert!(status.success(), "building the example: {cargo:?} {status}");
        let bin = profile_dir.join("examples/instrumented_service");
        assert!(bin.exists(), "{} is missing after the build", bin.display());
        bin
    })
}

/// Requests a pod answered, as the load loop saw them.
#[derive(Default)]
pub(crate) struct Answers {
    ok: AtomicU64,
    errors: AtomicU64,
    /// No answer, or not 200/500.
    failed: AtomicU64,
}

/// How a pod serves: `examples/instrumented_service`'s flags.
#[derive(Clone, Copy)]
pub(crate) struct Serving {
    pub error_ratio: f64,
    pub latency_ms: f64,
    /// Request durations as a native histogram only (`--native-histograms`).
    pub native_histograms: bool,
}

impl Serving {
    /// Classic histograms, [`MEDIAN_LATENCY_MS`], and the given error ratio.
    pub fn classic(error_ratio: f64) -> Serving {
        Serving {
            error_ratio,
            latency_ms: MEDIAN_LATENCY_MS,
            native_histograms: false,
        }
    }
}

/// One running instrumented service: a pod of `service` at `version`.
pub(crate) struct Pod {
    pub name: String,
    pub service: &'static str,
    pub version: &'static str,
    pub addr: String,
    pub answers: Arc<Answers>,
    _proc: Proc,
}

impl Pod {
    fn start(
        dir: &Path,
        service: &'static str,
        version: &'static str,
        ordinal: usize,
        error_ratio: f64,
    ) -> Pod {
        Pod::start_serving(
            dir,
            service,
            version,
            ordinal,
            Serving::classic(error_ratio),
        )
    }

    pub fn start_serving(
        dir: &Path,
        service: &'static str,
        version: &'static str,
        ordinal: usize,
        serving: Serving,
    ) -> Pod {
        let name = format!("{service}-{version}-{ordinal}");
        let pod_dir = dir.join(&name);
        std::fs::create_dir_all(&pod_dir).expect("creating the pod's directory");
        let (proc, port) = start_on_free_port(
            "instrumented_service",
            &pod_dir,
            "/metrics",
            Duration::from_secs(20),
            |port| {
                let mut cmd = Command::new(instrumented_service_bin());
                cmd.arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .args(["--version", version])
                    .arg("--error-ratio")
                    .arg(serving.error_ratio.to_string())
                    .arg("--latency-ms")
                    .arg(serving.latency_ms.to_string());
                if serving.native_histograms {
                    cmd.arg("--native-histograms");
                }
                cmd
            },
        );
        Pod {
            name,
            service,
            version,
            addr: format!("127.0.0.1:{port}"),
            answers: Arc::default(),
            _proc: proc,
        }
    }

    /// Observed error ratio and counts, for the log.
    pub fn summary(&self) -> String {
        let ok = self.answers.ok.load(Ordering::Relaxed);
        let errors = self.answers.errors.load(Ordering::Relaxed);
        let failed = self.answers.failed.load(Ordering::Relaxed);
        let ratio = errors as f64 / (ok + errors).max(1) as f64;
        format!(
            "{}: {ok} ok, {errors} errors ({:.2} %), {failed} failed",
            self.name,
            100.0 * ratio
        )
    }
}

/// Writes the file-SD targets file the way Kubernetes discovery labels pods: one target
/// group per pod with its service as `job`, its `version` and its `pod`. Written to a
/// temporary file and renamed, so Prometheus never reads half a file.
pub(crate) fn write_targets(path: &Path, pods: &[&Pod]) {
    let groups: Vec<Value> = pods
        .iter()
        .map(|p| {
            json!({
                "targets": [p.addr],
                "labels": {"job": p.service, "version": p.version, "pod": p.name},
            })
        })
        .collect();
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&groups).unwrap()).expect("writing targets");
    std::fs::rename(&tmp, path).expect("renaming the targets file");
}

/// One scrape job for every pod; each target's `job` label from discovery names its
/// service (a discovered `job` wins over the job name, as relabelling does in Kubernetes).
/// `remote_write` is the config's `remote_write` section.
pub(crate) fn prometheus_config(targets_file: &Path, remote_write: &str) -> String {
    format!(
        r#"global:
  scrape_interval: {SCRAPE_INTERVAL}
  scrape_timeout: 4s
  evaluation_interval: {SCRAPE_INTERVAL}
scrape_configs:
  - job_name: pods
    file_sd_configs:
      - files: ["{targets}"]
        refresh_interval: 5s
{remote_write}"#,
        targets = targets_file.display(),
    )
}

// ---------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------

/// Bounded load: every pod given to [`Load::send_to`] gets [`REQUESTS_PER_SECOND`] requests
/// a second, round-robin over the routes, until the load is dropped or a bound is reached.
pub(crate) struct Load {
    client: Client<HttpConnector, Empty<Bytes>>,
    deadline: tokio::time::Instant,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn new() -> Load {
        let _guard = runtime().enter();
        Load {
            client: Client::builder(TokioExecutor::new()).build_http(),
            deadline: tokio::time::Instant::now() + LOAD_AT_MOST_FOR,
            loops: Vec::new(),
        }
    }

    pub fn send_to(&mut self, pod: &Pod) {
        let client = self.client.clone();
        let deadline = self.deadline;
        let addr = pod.addr.clone();
        let answers = pod.answers.clone();
        self.loops.push(runtime().spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs(1) / REQUESTS_PER_SECOND as u32);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0..LOAD_AT_MOST_REQUESTS {
                tick.tick().await;
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let uri: hyper::Uri = format!("http://{addr}/api/{}", ROUTES[n as usize % 3])
                    .parse()
                    .expect("a request URI");
                let (client, answers) = (client.clone(), answers.clone());
                // Each request on its own, so a slow answer does not slow the pace.
                tokio::spawn(async move {
                    let exchange = async {
                        let res = client.get(uri).await.ok()?;
                        let status = res.status().as_u16();
                        res.into_body().collect().await.ok()?;
                        Some(status)
                    };
                    let counter = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                        Ok(Some(200)) => &answers.ok,
                        Ok(Some(500)) => &answers.errors,
                        _ => &answers.failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                });
            }
        }));
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for l in &self.loops {
            l.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading the verdicts
// ---------------------------------------------------------------------------------------

/// The deploy's verdict, reason, and each rule's verdict and reason, for the log.
pub(crate) fn describe(d: &Value) -> String {
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let mut s = format!(
        "{} {} against {} ({}, {}, {}): {} — {}\n",
        text(&d["service"]),
        text(&d["version"]),
        text(&d["baseline_version"]),
        text(&d["source"]),
        text(&d["strategy"]),
        text(&d["comparison"]),
        text(&d["verdict"]),
        text(&d["reason"]),
    );
    for r in d["rules"].as_array().into_iter().flatten() {
        s += &format!(
            "    {:<14} {:<9} {}\n",
            text(&r["rule"]),
            text(&r["verdict"]),
            text(&r["reason"]),
        );
    }
    for e in d["timeline"].as_array().into_iter().flatten() {
        s += &format!(
            "    at {} {} {} {}: {}\n",
            e["at"],
            text(&e["event"]),
            e["verdict"].as_str().unwrap_or(""),
            e["rule"].as_str().unwrap_or(""),
            text(&e["detail"]),
        );
    }
    s
}

/// The worst verdict a deploy's timeline records.
fn worst_in_timeline(d: &Value) -> Option<&str> {
    d["timeline"]
        .as_array()?
        .iter()
        .filter_map(|e| e["verdict"].as_str())
        .max_by_key(|v| severity(v))
}

/// The most severe verdict seen for a deploy across polls, with the deploy as it was then.
#[derive(Default)]
struct Worst {
    severity: u8,
    seen: Option<Value>,
}

impl Worst {
    fn note(&mut self, d: &Value) {
        let sev = severity(d["verdict"].as_str().expect("a verdict"));
        if self.seen.is_none() || sev > self.severity {
            self.severity = sev;
            self.seen = Some(d.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[test]
fn real_prometheus_scraping_real_pods_rolls_back_the_bad_canary_only() {
    let started = Instant::now();
    let bin = instrumented_service_bin();
    eprintln!("real_stack: using {}", bin.display());
    let dir = tempfile::Builder::new()
        .prefix("deploywatch-it-real-stack-")
        .tempdir()
        .expect("creating a temporary directory");
    let targets_file = dir.path().join("targets.json");

    let dw = Deploywatch::start();
    let baseline: Vec<Pod> = ["shop-clean", "shop-bad"]
        .into_iter()
        .flat_map(|svc| (0..2).map(move |i| (svc, i)))
        .map(|(svc, i)| Pod::start(dir.path(), svc, "v1", i, CLEAN_ERROR_RATIO))
        .collect();
    write_targets(&targets_file, &baseline.iter().collect::<Vec<_>>());
    let prom = Prometheus::start(&prometheus_config(
        &targets_file,
        &remote_write_to(&dw.url()),
    ));
    let mut load = Load::new();
    for pod in &baseline {
        load.send_to(pod);
    }

    // Both services arrive under their discovered job names, with the discovered version.
    let s = wait_for(
        "deploywatch to see shop-clean and shop-bad at v1",
        Duration::from_secs(60),
        || {
            let s = dw.services();
            let both = ["shop-clean", "shop-bad"]
                .iter()
                .all(|svc| version(&s, svc, "v1").is_some());
            if both {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    );
    let mut names = service_names(&s);
    names.sort();
    assert_eq!(names, ["shop-bad", "shop-clean"], "{s:#}");
    eprintln!(
        "real_stack: v1 seen after {:?}; v1 alone for {BASELINE_ONLY:?}",
        started.elapsed()
    );
    std::thread::sleep(BASELINE_ONLY);
    for svc in ["shop-clean", "shop-bad"] {
        let d = crate::sim::deploys(&dw, svc).expect("listing deploys");
        assert!(d.is_empty(), "a deploy of {svc} before any canary: {d:?}");
    }

    // The canaries: one v2 pod per service, added to the discovery file.
    let clean_canary = Pod::start(dir.path(), "shop-clean", "v2", 0, CLEAN_ERROR_RATIO);
    let bad_canary = Pod::start(dir.path(), "shop-bad", "v2", 0, BAD_ERROR_RATIO);
    let canaries_at = Instant::now();
    load.send_to(&clean_canary);
    load.send_to(&bad_canary);
    let all: Vec<&Pod> = baseline
        .iter()
        .chain([&clean_canary, &bad_canary])
        .collect();
    write_targets(&targets_file, &all);
    eprintln!("real_stack: canaries started after {:?}", started.elapsed());

    // Watch both deploys: the bad one until it is rolled back, the clean one for at least
    // CLEAN_WATCH, keeping the worst verdict the clean one showed.
    let mut clean_worst = Worst::default();
    let mut rolled_back = false;
    loop {
        let clean = find_deploy(&dw, "shop-clean", "v2").ok();
        let bad = find_deploy(&dw, "shop-bad", "v2").ok();
        if let Some(d) = &clean {
            clean_worst.note(d);
        }
        if let Some(d) = &bad {
            if !rolled_back && d["verdict"] == "rollback" {
                rolled_back = true;
                eprintln!(
                    "real_stack: shop-bad rolled back {:?} after its canary started",
                    canaries_at.elapsed()
                );
            }
        }
        let waited = canaries_at.elapsed();
        if rolled_back && waited >= CLEAN_WATCH {
            break;
        }
        if waited >= ROLLBACK_TIMEOUT {
            panic!(
                "shop-bad's canary not rolled back within {ROLLBACK_TIMEOUT:?}:\n{}\n{:#}",
                bad.as_ref()
                    .map(describe)
                    .unwrap_or("no deploy detected".into()),
                dw.services()
            );
        }
        std::thread::sleep(POLL_EVERY);
    }
    let clean = find_deploy(&dw, "shop-clean", "v2").expect("shop-clean's deploy");
    let bad = find_deploy(&dw, "shop-bad", "v2").expect("shop-bad's deploy");
    clean_worst.note(&clean);
    drop(load);

    eprintln!("real_stack: after {:?}", started.elapsed());
    for pod in &all {
        eprintln!("real_stack: load {}", pod.summary());
    }
    eprintln!("real_stack: shop-bad's deploy:\n{}", describe(&bad));
    eprintln!("real_stack: shop-clean's deploy:\n{}", describe(&clean));
    if let Some(worst) = &clean_worst.seen {
        if clean_worst.severity > severity(clean["verdict"].as_str().unwrap()) {
            eprintln!("real_stack: shop-clean's worst poll:\n{}", describe(worst));
        }
    }

    // Both were detected from the data alone, as canaries against v1.
    for d in [&clean, &bad] {
        assert_eq!(d["source"], "detected", "{}", describe(d));
        assert_eq!(d["strategy"], "canary", "{}", describe(d));
        assert_eq!(d["baseline_version"], "v1", "{}", describe(d));
    }
    assert_eq!(bad["verdict"], "rollback", "{}", describe(&bad));

    // The clean canary was really compared, and never paused. Its verdict stays `pending`
    // until the rules' observation is over (a pass needs 6 minutes of a new instance, longer
    // than this test watches); what it must show by now is evidence on both sides and
    // nothing alarming.
    for rule in ["error_rate", "latency_p99", "latency_p50", "traffic_share"] {
        let r = clean["rules"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["rule"] == rule))
            .unwrap_or_else(|| panic!("shop-clean has no rule {rule}:\n{}", describe(&clean)));
        assert!(
            r["canary"]["value"].is_number() && r["baseline"]["value"].is_number(),
            "shop-clean's {rule} compared nothing:\n{}",
            describe(&clean)
        );
    }
    assert!(
        clean_worst.severity < severity("pause"),
        "the clean canary of shop-clean showed a {} verdict:\n{}",
        clean_worst.seen.as_ref().unwrap()["verdict"],
        describe(clean_worst.seen.as_ref().unwrap())
    );
    let timeline_worst = worst_in_timeline(&clean).unwrap_or("pending");
    assert!(
        severity(timeline_worst) < severity("pause"),
        "shop-clean's timeline records {timeline_worst}:\n{}",
        describe(&clean)
    );

    // Prometheus sent everything it scraped.
    let failed = prom
        .metric("prometheus_remote_storage_samples_failed_total", &[])
        .expect("Prometheus exposes prometheus_remote_storage_samples_failed_total");
    assert_eq!(failed, 0.0, "Prometheus failed to send samples");
    eprintln!("real_stack: done in {:?}", started.elapsed());
}
