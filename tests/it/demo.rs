//! `deploywatch demo` as a user runs it: the real binary, each built-in story played once
//! at high speed on a free port, within a bounded time; its exit code and the verdict lines
//! it prints are the story's expectations met by the real judge.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::harness::free_port;

/// Event seconds per second in the tests: as fast as deploywatch judges.
pub const FAST: &str = "100000";
/// Bound on one `--once` run (each takes a few seconds in a debug build).
const ONCE_TIMEOUT: Duration = Duration::from_secs(120);

/// A `deploywatch demo` process with its output in files; killed on drop.
pub struct DemoRun {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    started: Instant,
}

impl DemoRun {
    /// Starts `deploywatch demo <args>` on a free port, in a fresh working directory.
    pub fn start(args: &[&str]) -> DemoRun {
        let dir = tempfile::Builder::new()
            .prefix("deploywatch-it-demo-")
            .tempdir()
            .expect("creating a temporary directory");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
            .arg("demo")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).expect("a file"))
            .stderr(std::fs::File::create(dir.path().join("stderr")).expect("a file"))
            .spawn()
            .expect("starting deploywatch demo");
        DemoRun {
            child,
            port,
            dir,
            started: Instant::now(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Its working directory (where `./data` would be).
    pub fn cwd(&self) -> &Path {
        self.dir.path()
    }

    /// Waits for the process to exit, for at most `timeout` (then kills it and fails).
    pub fn wait(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the demo") {
                return (status, self.started.elapsed());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "deploywatch demo did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT, as Ctrl-C, then waits for the exit.
    pub fn interrupt(&mut self, timeout: Duration) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(ok.success(), "kill -INT {}", self.child.id());
        self.wait(timeout).0
    }
}

impl Drop for DemoRun {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Plays `scenario` once; retried on another port when the probed one was taken meanwhile.
/// Returns the exit status, stdout, and how long it took.
fn once(scenario: &str) -> (ExitStatus, String, Duration) {
    once_with(scenario, &[])
}

/// [`once`] with more flags.
fn once_with(scenario: &str, more: &[&str]) -> (ExitStatus, String, Duration) {
    for _attempt in 0..3 {
        let mut args = vec!["--once", "--speed", FAST, "--scenario", scenario];
        args.extend_from_slice(more);
        let mut run = DemoRun::start(&args);
        let (status, took) = run.wait(ONCE_TIMEOUT);
        let stderr = run.stderr();
        if stderr.contains("cannot listen on") {
            continue;
        }
        let out = run.stdout();
        println!("demo scenario={scenario} exit={status} took={took:?}");
        assert!(
            !run.cwd().join("data").exists(),
            "the demo wrote ./data without --storage.path"
        );
        return (status, format!("{out}\n--- stderr ---\n{stderr}"), took);
    }
    panic!("no free port for deploywatch demo after 3 attempts");
}

/// The story's verdict lines, each as `--once` prints it when met.
fn assert_story(scenario: &str, lines: &[&str]) {
    let (status, out, _) = once(scenario);
    assert!(
        status.success(),
        "deploywatch demo --once --scenario {scenario}: {status}\n{out}"
    );
    for want in lines {
        assert!(
            out.contains(want),
            "deploywatch demo --scenario {scenario} did not print {want:?}:\n{out}"
        );
    }
    assert!(
        out.contains("Every deploy ended with its expected verdict."),
        "{out}"
    );
}

#[test]
fn bad_canary_passes_then_rolls_back_explained() {
    assert_story(
        "bad-canary",
        &[
            "web page    http://127.0.0.1:",
            "shop v2: expected pass, got pass — ok",
            "shop v3: expected rollback (rolled back), got rollback (rolled back) — ok",
            "decided by error_rate",
            "top suspect route=/checkout",
            "→ change checkout-db",
            "rollback_observed",
        ],
    );
}

#[test]
fn latency_regression_rolls_back() {
    assert_story(
        "latency",
        &[
            "catalog v2: expected rollback (rolled back), got rollback (rolled back) — ok",
            "decided by latency_p",
        ],
    );
}

#[test]
fn latency_regression_on_native_histograms_rolls_back() {
    let (status, out, _) = once_with("latency", &["--native-histograms"]);
    assert!(status.success(), "{status}\n{out}");
    for want in [
        "catalog v2: expected rollback (rolled back), got rollback (rolled back) — ok",
        "decided by latency_p",
        // Every request is slower: the version is the suspect, read from the native
        // histograms as from classic buckets.
        "top suspect version=v2",
        "Every deploy ended with its expected verdict.",
    ] {
        assert!(out.contains(want), "did not print {want:?}:\n{out}");
    }
}

#[test]
fn dependency_outage_is_not_blamed_on_the_canary() {
    assert_story(
        "dependency-outage",
        &[
            "orders v2: expected at most warn, got ",
            "shared_degradation",
            "on both versions: not the deploy",
        ],
    );
}

#[test]
fn low_traffic_canary_stays_pending() {
    assert_story(
        "low-traffic",
        &["ledger v2: expected pending, got pending — ok"],
    );
}

#[test]
fn list_names_every_story_and_a_bad_speed_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .args(["demo", "--list"])
        .output()
        .expect("running deploywatch demo --list");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["bad-canary", "latency", "dependency-outage", "low-traffic"] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "--list lacks {name}:\n{text}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .args(["demo", "--once", "--speed", "0"])
        .output()
        .expect("running deploywatch demo --speed 0");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--speed must be a positive number"),
        "{out:?}"
    );
}

/// With `--alertmanager.url` the demo's verdicts go out as alerts, through the server's
/// own alert service, to a real Alertmanager. The alert service looks at the deploys once
/// a wall-clock second, so the story runs slow enough for the regression to last a few
/// seconds (the `latency` story at 30×: about 16 s).
#[test]
fn alerts_reach_a_real_alertmanager() {
    let am = crate::harness::Alertmanager::start();
    let alertmanager = format!("--alertmanager.url={}", am.url());
    let mut run = DemoRun::start(&[
        "--once",
        "--speed",
        "30",
        "--scenario",
        "latency",
        &alertmanager,
    ]);
    let (status, _) = run.wait(ONCE_TIMEOUT);
    assert!(
        status.success(),
        "{status}\n{}\n{}",
        run.stdout(),
        run.stderr()
    );
    assert!(
        run.stdout().contains("alert_firing"),
        "no alert in the timeline:\n{}",
        run.stdout()
    );
    let received = crate::harness::sample_value(
        &crate::harness::scrape(&format!("{}/metrics", am.url())),
        "alertmanager_alerts_received_total",
        &[("status", "firing")],
    );
    assert!(
        received.is_some_and(|n| n >= 1.0),
        "Alertmanager received no firing alert: {received:?}\n{}",
        am.logs()
    );
}

/// The stories' seeds are their own: no test of the judge plays a simulated service with
/// one, so each story's expectation is a case nobody tuned the judge on. Every integer
/// literal in tests/it (but this file) and the seed ranges the calibration draws from are
/// kept apart from them.
#[test]
fn stories_have_seeds_no_judge_test_uses() {
    use deploywatch::demo::story::{build, Scenario, SEEDS};
    let origin = crate::sim::EPOCH;
    let mut demo = std::collections::BTreeSet::new();
    for scenario in Scenario::ALL {
        for svc in build(scenario, origin).services {
            assert!(
                SEEDS.contains(&svc.seed),
                "{scenario}: {} has seed {}, not one of story::SEEDS",
                svc.name,
                svc.seed
            );
            demo.insert(svc.seed);
        }
    }
    assert_eq!(demo.len(), SEEDS.len(), "one seed per story: {demo:?}");
    for seed in &demo {
        assert!(
            !crate::calibration::CLEAN_SEEDS.contains(seed)
                && !crate::calibration::DELAY_SEEDS.contains(seed),
            "demo seed {seed} is one the calibration plays"
        );
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    for entry in std::fs::read_dir(&dir).expect("tests/it") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("demo.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a test source");
        let literals = text
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .filter_map(|w| w.trim_end_matches("u64").parse::<u64>().ok());
        for n in literals {
            assert!(
                !demo.contains(&n),
                "{} uses {n}, a seed of the demo's stories",
                path.display()
            );
        }
    }
}
