//! `deploywatch deploy` as a pipeline step runs it: registers the deploy, waits for the
//! verdict while the service keeps reporting, prints the report, exits with the code the
//! pipeline acts on.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::sim::{Driver, Effect, Feed, Service, Signal, Who, EPOCH, MIN, SEC};

const T: i64 = EPOCH + 30 * MIN;

/// Plays a canary into a fresh deploywatch with `deploywatch deploy` waiting on it; returns
/// the exit code, what it printed and the deploy as deploywatch has it then.
fn play(name: &str, seed: u64, effect: Option<(Signal, f64)>) -> (i32, String, Value) {
    let dw = Deploywatch::start();
    let mut svc = Service::new(name, seed, 3).canary("v2", T, 1);
    if let Some((signal, factor)) = effect {
        svc = svc.effect(Effect::step(
            Who::Version("v2".into()),
            signal,
            factor,
            T,
            i64::MAX,
        ));
    }
    let mut driver = Driver::new(&dw, Feed::one(svc, 5 * SEC));
    driver.run_to(T);
    let out_path = dw.dir().join(format!("{name}.out"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .args([
            "deploy",
            "--url",
            &dw.url(),
            "--service",
            name,
            "--version",
            "v2",
        ])
        // The default --timeout: the clean canary must pass within it.
        .args([
            "--baseline-version",
            "v1",
            "--commit",
            "3f2c9e1",
            "--poll-interval",
            "100ms",
        ])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning deploywatch deploy");
    // The deploy is registered at the service's "now" (T): wait for it before playing on.
    wait_for("the registration", Duration::from_secs(20), || {
        crate::sim::find_deploy(&dw, name, "v2").map(|_| ())
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut t = T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("deploywatch deploy did not finish");
        }
        if t < T + 25 * MIN {
            t += 30 * SEC;
            driver.run_to(t);
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut out = String::new();
    std::fs::File::open(&out_path)
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let deploy = crate::sim::find_deploy(&dw, name, "v2").expect("the deploy");
    (status.code().unwrap_or(-1), out, deploy)
}

#[test]
fn a_regression_exits_4_and_prints_why() {
    let (code, out, _) = play("clierr", 301, Some((Signal::Errors, 10.0)));
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("registered clierr v2"), "{out}");
    assert!(
        out.contains("verdict=rollback") && out.contains("error_rate"),
        "{out}"
    );
}

/// The least time to a pass and the default timeout, as `deploywatch deploy --help` states
/// them (issue 16: a clean canary could not pass within the timeout users were given).
fn stated_times() -> (i64, i64) {
    let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .args(["deploy", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let least = help
        .split_once("How long a pass takes: under the default rules, at least ")
        .and_then(|(_, rest)| rest.split_once(" minutes"))
        .and_then(|(n, _)| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("the help states no least time to a pass: {help}"));
    let timeout = help
        .split_once("--timeout <TIMEOUT>")
        .and_then(|(_, rest)| rest.split_once("[default: "))
        .and_then(|(_, rest)| rest.split_once("m]"))
        .and_then(|(n, _)| n.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("the help states no default timeout in minutes: {help}"));
    assert!(
        help.contains(&format!(
            "default --timeout of {timeout}m covers moderate traffic"
        )),
        "{help}"
    );
    ((least * MIN as f64) as i64, timeout * MIN)
}

#[test]
fn a_clean_deploy_exits_0() {
    let (code, out, deploy) = play("cliclean", 302, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict=pass"), "{out}");
    // Issue 16: the clean canary (40 requests/s over 4 pods) passes no sooner than the help
    // says a pass can, and well within the default timeout.
    let (least, timeout) = stated_times();
    assert!(
        out.contains(&format!("waiting up to {}m", timeout / MIN)),
        "{out}"
    );
    let started = deploy["started_at"].as_i64().expect("started_at");
    let passed = deploy["verdict_at"].as_i64().expect("verdict_at");
    let took = passed - started;
    assert!(
        (least..=timeout).contains(&took),
        "the pass took {} s of event time; stated least {} s, default timeout {} s",
        took / SEC,
        least / SEC,
        timeout / SEC
    );
}

#[test]
fn an_unreachable_deploywatch_exits_2_with_the_reason() {
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .args([
            "deploy",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--service",
            "a",
            "--version",
            "v2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach deploywatch") && err.contains("refused"),
        "{err}"
    );
    // A refused deploy: exit 2 with deploywatch's reason.
    let dw = Deploywatch::start();
    let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .args([
            "deploy",
            "--url",
            &dw.url(),
            "--service",
            "a",
            "--version",
            "v2",
            "--strategy",
            "yolo",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("strategy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 16: registering the same service and version again — the same POST twice, or the
/// pipeline step retried — is the same deploy: the same id, `201` then `200`, one timeline
/// event and one log line. A repeat that asks for another strategy or baseline is told what
/// was ignored; new metadata is taken once.
#[test]
fn issue_16_registering_again_is_idempotent() {
    let dw = Deploywatch::start();
    let mut driver = Driver::new(&dw, Feed::one(Service::new("again", 303, 3), 5 * SEC));
    driver.run_to(T);
    let body = serde_json::json!({"service": "again", "version": "v2", "commit": "3f2c9e1"});
    let first = dw.post_json("/api/v1/deploys", &body);
    assert_eq!(first.status, 201, "{}", first.text());
    let id = serde_json::from_slice::<Value>(&first.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let timeline = |dw: &Deploywatch| crate::sim::deploy(dw, &id).unwrap()["timeline"].clone();
    let before = timeline(&dw);
    let second = dw.post_json("/api/v1/deploys", &body);
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        serde_json::from_slice::<Value>(&second.body).unwrap(),
        serde_json::json!({ "id": id })
    );
    // The CLI retried: the same deploy, said so; a short timeout is warned about.
    let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .args([
            "deploy",
            "--url",
            &dw.url(),
            "--service",
            "again",
            "--version",
            "v2",
        ])
        .args([
            "--commit",
            "3f2c9e1",
            "--timeout",
            "1s",
            "--poll-interval",
            "100ms",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(5), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("again v2 was registered already as {id}")),
        "{stdout}"
    );
    assert!(
        stderr.contains("--timeout 1s is shorter than the 5m30s a pass takes at the least"),
        "{stderr}"
    );
    assert_eq!(
        timeline(&dw),
        before,
        "a repeat adds nothing to the timeline"
    );
    let logged = |dw: &Deploywatch, what: &str| dw.logs().matches(what).count();
    assert_eq!(logged(&dw, "Deploy registered."), 1, "{}", dw.logs());
    // Another strategy and baseline for the running deploy: ignored, and said so.
    let res = dw.post_json(
        "/api/v1/deploys",
        &serde_json::json!({"service": "again", "version": "v2", "strategy": "blue-green",
                            "baseline_version": "v0"}),
    );
    assert_eq!(res.status, 200, "{}", res.text());
    let v: Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(v["id"], id.as_str());
    let ignored = v["ignored"].to_string();
    assert!(
        ignored.contains("blue-green") && ignored.contains("v0") && ignored.contains("canary"),
        "{v}"
    );
    let d = crate::sim::deploy(&dw, &id).unwrap();
    assert_eq!(
        (&d["strategy"], &d["baseline_version"]),
        (&"canary".into(), &"v1".into())
    );
    // New metadata: taken, one event, logged once.
    let newer = serde_json::json!({"service": "again", "version": "v2", "author": "ci"});
    for status in [200, 200] {
        assert_eq!(dw.post_json("/api/v1/deploys", &newer).status, status);
    }
    let d = crate::sim::deploy(&dw, &id).unwrap();
    assert_eq!(
        (&d["author"], &d["commit"]),
        (&"ci".into(), &"3f2c9e1".into())
    );
    let updated = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "registration_updated")
        .count();
    assert_eq!(updated, 1, "{:#}", d["timeline"]);
    assert_eq!(logged(&dw, "Deploy registered again with new metadata."), 1);
    assert_eq!(
        dw.get_json("/api/v1/deploys?service=again")["deploys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Issue 16: a first push has no "before" commit (GitHub's `github.event.before` and
/// GitLab's `CI_COMMIT_BEFORE_SHA` are all zeros): `--changes-from 000…0..SHA` registers
/// the deployed commit as the change instead of failing the step.
#[test]
fn issue_16_changes_from_a_first_push_are_the_deployed_commit() {
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
            .args(args)
            .current_dir(repo.path())
            .output()
            .expect("running git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    std::fs::create_dir_all(repo.path().join("src/cache")).unwrap();
    std::fs::write(repo.path().join("README.md"), "x\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "first"]);
    std::fs::write(repo.path().join("src/cache/pool.rs"), "// 500\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "pool size 50 -> 500"]);
    let head = git(&["rev-parse", "HEAD"]);

    let dw = Deploywatch::start();
    let register = |version: &str, range: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
            .args(["deploy", "--url", &dw.url(), "--service", "gitsvc"])
            .args(["--version", version, "--changes-from", range])
            .args(["--timeout", "1s", "--poll-interval", "100ms"])
            .current_dir(repo.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(5),
            "registered, then timed out: {text}"
        );
        let d = crate::sim::find_deploy(&dw, "gitsvc", version).expect("registered");
        (d["changes"].clone(), text)
    };
    let zeros = "0".repeat(40);
    let (changes, text) = register("v1", &format!("{zeros}..{head}"));
    assert!(text.contains("a first push"), "{text}");
    assert_eq!(
        changes,
        serde_json::json!([{"component": "cache", "summary": "pool size 50 -> 500",
                            "files": ["src/cache/pool.rs"]}])
    );
    // An ordinary push: the commits since "before".
    let (changes, _) = register("v2", &format!("{head}~1..{head}"));
    assert_eq!(changes[0]["summary"], "pool size 50 -> 500");
    // A "before" the clone does not have: refused (exit 2) with a hint, nothing registered.
    let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .args([
            "deploy",
            "--url",
            &dw.url(),
            "--service",
            "gitsvc",
            "--version",
            "v3",
        ])
        .args(["--changes-from", &format!("{}..{head}", "1".repeat(40))])
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fetch-depth"),
        "{out:?}"
    );
    assert!(crate::sim::find_deploy(&dw, "gitsvc", "v3").is_err());
}

/// The CI examples' scripts as written, run by bash against stand-ins on the PATH:
/// `kubectl` and `deploywatch` record their arguments (and `deploywatch` exits with
/// `FAKE_CODE`), in a git clone whose "before" commit is all zeros (a first push).
struct CiRun {
    dir: tempfile::TempDir,
    head: String,
}

impl CiRun {
    fn new() -> CiRun {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in ["kubectl", "deploywatch"] {
            let log = dir.path().join(format!("{tool}.calls"));
            let script = format!(
                "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> {log}\necho >> {log}\n{}",
                if tool == "deploywatch" {
                    "echo '# report'\nexit \"${FAKE_CODE:-0}\"\n"
                } else {
                    "exit 0\n"
                },
                log = log.display()
            );
            let path = bin.join(tool);
            std::fs::write(&path, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
                .args(args)
                .current_dir(&repo)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git(&["init", "-q"]);
        git(&["commit", "-q", "--allow-empty", "-m", "first"]);
        let head = git(&["rev-parse", "HEAD"]);
        CiRun { dir, head }
    }

    /// Runs `script` as the CI would (bash, errexit and pipefail); its exit code.
    fn run(&self, script: &str, env: &[(&str, &str)], code: i32) -> i32 {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        let out = Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
            .current_dir(self.dir.path().join("repo"))
            .env("PATH", path)
            .env("FAKE_CODE", code.to_string())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.code().unwrap_or(-1)
    }

    /// Each call of `tool` so far, as its arguments.
    fn calls(&self, tool: &str) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.path().join(format!("{tool}.calls")))
            .unwrap_or_default()
            .split("\n\n")
            .filter(|c| !c.trim().is_empty())
            .map(|c| c.lines().map(str::to_string).collect())
            .collect()
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

fn example(name: &str) -> Value {
    let path = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rollout patch the example sent: it sets the version label deploywatch reads to
/// the version it registers, with the image of that version.
fn assert_patch(run: &CiRun, version: &str, image: &str) {
    let calls = run.calls("kubectl");
    let patch = calls
        .iter()
        .find(|c| c.first().map(String::as_str) == Some("patch"))
        .unwrap_or_else(|| panic!("no kubectl patch in {calls:?}"));
    let json = patch.last().unwrap();
    let p: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(
        p["spec"]["template"]["metadata"]["labels"]["version"],
        version
    );
    assert_eq!(
        p["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{image}:{version}")
    );
}

/// Issue 16: the GitHub Actions example is valid YAML and its scripts do what it says:
/// install deploywatch, roll out the image *and* the version label, register that version
/// (a first push's all-zeros "before" included), and act on each exit code.
#[test]
fn issue_16_the_github_actions_example_rolls_out_the_label_and_acts_on_the_verdict() {
    let wf = example("github-actions.yml");
    let job = &wf["jobs"]["deploy"];
    let steps = job["steps"].as_array().expect("steps");
    let step = |name: &str| -> &Value {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name:?}"))
    };
    let text = serde_json::to_string(&wf).unwrap();
    assert!(
        !text.contains("set image"),
        "the label must change with the image"
    );
    let install = step("Install deploywatch")["run"].as_str().unwrap();
    assert!(install.contains("cargo install") && install.contains("--bin deploywatch"));
    let env: Vec<(String, String)> = job["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let version = "3f2c9e1d0a3f2c9e1d0a3f2c9e1d0a3f2c9e1d0a";
    for (code, verdict_step_exit) in [(0, 0), (4, 0), (3, 3), (5, 5)] {
        let run = CiRun::new();
        let mut vars: Vec<(&str, &str)> = env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .filter(|(k, _)| *k != "VERSION")
            .collect();
        let output = run.file("output");
        let summary = run.file("summary");
        let (output_s, summary_s) = (output.display().to_string(), summary.display().to_string());
        let zeros = "0".repeat(40);
        vars.extend([
            ("VERSION", version),
            ("GITHUB_SHA", run.head.as_str()),
            ("GITHUB_OUTPUT", output_s.as_str()),
            ("GITHUB_STEP_SUMMARY", summary_s.as_str()),
            ("BEFORE", zeros.as_str()),
            ("GITHUB_ACTOR", "octocat"),
        ]);
        let rollout = step("Roll out the new version")["run"].as_str().unwrap();
        assert_eq!(run.run(rollout, &vars, 0), 0);
        assert_patch(&run, version, "registry.example/checkout");
        let verdict = step("Wait for deploywatch's verdict")["run"]
            .as_str()
            .unwrap();
        assert_eq!(
            run.run(verdict, &vars, code),
            verdict_step_exit,
            "exit {code}"
        );
        let calls = run.calls("deploywatch");
        let args = calls[0].join(" ");
        assert!(
            args.starts_with("deploy ")
                && args.contains(&format!("--version {version}"))
                && args.contains(&format!("--changes-from {zeros}..{}", run.head)),
            "{args}"
        );
        let out = std::fs::read_to_string(&output).unwrap();
        assert_eq!(out.trim(), format!("code={code}"));
        assert!(std::fs::read_to_string(&summary)
            .unwrap()
            .contains("# report"));
        // The step that runs next, as its `if` says.
        let next = steps
            .iter()
            .filter(|s| {
                s["if"]
                    .as_str()
                    .is_some_and(|c| c.contains(&format!("code == '{code}'")))
            })
            .collect::<Vec<_>>();
        match code {
            0 | 4 => assert_eq!(next.len(), 1, "exit {code}: {next:?}"),
            _ => assert!(next.is_empty()),
        }
        if code == 4 {
            let undo = next[0]["run"].as_str().unwrap();
            assert_eq!(run.run(undo, &vars, 0), 1, "a rollback keeps the run red");
            assert!(run
                .calls("kubectl")
                .iter()
                .any(|c| c[..2] == ["rollout", "undo"]));
        }
    }
}

/// Issue 16: the GitLab CI example, the same way: its `script` as GitLab runs it.
#[test]
fn issue_16_the_gitlab_ci_example_rolls_out_the_label_and_acts_on_the_verdict() {
    let ci = example("gitlab-ci.yml");
    let job = &ci["deploy"];
    let text = serde_json::to_string(&ci).unwrap();
    assert!(
        !text.contains("set image"),
        "the label must change with the image"
    );
    let before: Vec<&str> = job["before_script"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        before
            .iter()
            .any(|s| s.contains("cargo install") && s.contains("--bin deploywatch")),
        "{before:?}"
    );
    assert!(before
        .iter()
        .any(|s| s.contains("/bin/linux/amd64/kubectl")));
    let script: Vec<&str> = job["script"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let version = "3f2c9e1d0a3f2c9e1d0a3f2c9e1d0a3f2c9e1d0a";
    for code in [0, 3, 4, 5] {
        let run = CiRun::new();
        let zeros = "0".repeat(40);
        let vars = [
            ("SERVICE", "checkout"),
            ("VERSION", version),
            ("IMAGE", "registry.example/checkout"),
            ("DEPLOYWATCH_URL", "http://deploywatch.monitoring:10997"),
            ("CI_COMMIT_SHA", run.head.as_str()),
            ("CI_COMMIT_BEFORE_SHA", zeros.as_str()),
            ("GITLAB_USER_LOGIN", "ci"),
            ("CI_JOB_URL", "https://ci.example/jobs/1"),
        ];
        // GitLab runs the job's script lines as one bash script.
        assert_eq!(
            run.run(&script.join("\n"), &vars, code),
            code,
            "exit {code}"
        );
        assert_patch(&run, version, "registry.example/checkout");
        let args = run.calls("deploywatch")[0].join(" ");
        assert!(
            args.contains(&format!("--version {version}"))
                && args.contains(&format!("--changes-from {zeros}..{}", run.head)),
            "{args}"
        );
        let kubectl = run.calls("kubectl");
        let did = |what: &[&str]| kubectl.iter().any(|c| c.len() >= 2 && c[..2] == *what);
        assert_eq!(
            did(&["rollout", "undo"]),
            code == 4,
            "exit {code}: {kubectl:?}"
        );
        assert_eq!(did(&["rollout", "status"]), code == 0 || code == 4);
        assert!(std::fs::read_to_string(run.file("repo/report.md"))
            .unwrap()
            .contains("# report"));
    }
}
