//! `deploywatch deploy` as a pipeline step runs it: registers the deploy, waits for the
//! verdict while the service keeps reporting, prints the report, exits with the code the
//! pipeline acts on.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::sim::{Driver, Effect, Feed, Service, Signal, Who, EPOCH, MIN, SEC};

const T: i64 = EPOCH + 30 * MIN;

/// Plays a canary into a fresh deploywatch with `deploywatch deploy` waiting on it; returns
/// the exit code and what it printed.
fn play(name: &str, seed: u64, effect: Option<(Signal, f64)>) -> (i32, String) {
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
        .args([
            "--baseline-version",
            "v1",
            "--commit",
            "3f2c9e1",
            "--poll-interval",
            "100ms",
            "--timeout",
            "2m",
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
        assert!(
            Instant::now() < deadline,
            "deploywatch deploy did not finish"
        );
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
    (status.code().unwrap_or(-1), out)
}

#[test]
fn a_regression_exits_4_and_prints_why() {
    let (code, out) = play("clierr", 301, Some((Signal::Errors, 10.0)));
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("registered clierr v2"), "{out}");
    assert!(
        out.contains("verdict=rollback") && out.contains("error_rate"),
        "{out}"
    );
}

#[test]
fn a_clean_deploy_exits_0() {
    let (code, out) = play("cliclean", 302, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict=pass"), "{out}");
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
