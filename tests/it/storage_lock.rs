//! Issue 16: one deploywatch per `--storage.path`. A second process started on the
//! directory of a running one fails at once, exit code 1, with one line naming the holder,
//! and writes nothing there; the lock goes with the holder's process, even after `kill -9`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use hyper::Method;

use crate::harness::{free_port, request, wait_for, Deploywatch};

/// Every file under `dir` with its size and modification time (but a snapshot being
/// written, `*.tmp`).
fn listing(dir: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        })
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.len(), m.modified().unwrap()),
            )
        })
        .collect()
}

#[test]
fn issue_16_a_second_deploywatch_on_the_same_storage_path_fails_naming_the_holder() {
    // Snapshots every second: a second process that got in would soon write one.
    let mut first = Deploywatch::start_with_config("storage:\n  snapshot_interval: 1s\n");
    let data = first.dir().join("data");
    // Two snapshots: from then on the holder only replaces its files.
    wait_for(
        "the holder's second snapshot",
        Duration::from_secs(20),
        || {
            let l = listing(&data);
            if l.contains_key("snapshot.prev.bin") {
                Ok(())
            } else {
                Err(format!("{l:?}"))
            }
        },
    );
    let lock = std::fs::read_to_string(data.join("lock")).unwrap();
    assert_eq!(
        lock,
        format!("pid={}\naddress={}\n", first.pid(), first.addr()),
        "the lock file names its holder"
    );

    let before = listing(&data);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
        .arg(format!("--storage.path={}", data.display()))
        .output()
        .expect("running deploywatch");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}: not at once");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert_eq!(
        lines[0],
        format!(
            "deploywatch: --storage.path {} is in use by another deploywatch (pid {}, listening on {}); stop it, or give this one another --storage.path",
            data.display(),
            first.pid(),
            first.addr()
        )
    );
    // The refused start touched nothing: the holder's own snapshots aside, which the
    // holder keeps writing (its files' times move, the set of files and the lock do not).
    let after = listing(&data);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    assert_eq!(before["lock"], after["lock"], "the lock file was rewritten");
    let ready = request(
        Method::GET,
        &format!("{}/-/ready", first.url()),
        &[],
        vec![],
    );
    assert_eq!(ready.status, 200, "the holder still serves");

    // The lock goes with the process, however it dies.
    first.kill9();
    first.restart();
    let lock = std::fs::read_to_string(data.join("lock")).unwrap();
    assert_eq!(
        lock,
        format!("pid={}\naddress={}\n", first.pid(), first.addr())
    );
}
