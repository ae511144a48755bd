//! The web page in a real browser: Debian's headless Chromium loads `GET /` and a deploy's
//! page after simulated deploys (tests/it/sim.rs) and the test reads the DOM it rendered
//! and saves screenshots at a laptop's 1366 px width. Chromium missing is a failure that
//! says to run `bash tests/run`, which installs it.
//!
//! The same during `deploywatch demo`: the web page of the demo's own deploywatch once its
//! story has played.
//!
//! Screenshots go to `$CARGO_TARGET_TMPDIR/browser/` (the path is printed);
//! `DEPLOYWATCH_UPDATE_DOCS=1` also copies the deploy page's to `docs/web-deploy.png`, the
//! passed deploy's to `docs/deploy-pass.png`, and the demo's rolled-back deploy to
//! `docs/demo.png` (1366 px) and `docs/deploy-rollback.png` (1600 px, whole); the last
//! three also when missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;

use crate::demo::{DemoRun, FAST};
use crate::harness::{self, wait_for, Deploywatch};
use crate::scenarios::{run_on, Case, T};
use crate::sim::{register_deploy, Effect, Service, Signal, Who, MIN};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Bound on one Chromium run; it is killed after it.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs headless Chromium with `args` after the flags a closed, sandboxless CI machine
/// needs, in a fresh profile; its stdout. Killed and a failure after [`CHROMIUM_TIMEOUT`].
fn chromium(out: &Path, name: &str, args: &[String]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run `bash tests/run`, which installs Debian's chromium package"
    );
    let profile = tempfile::Builder::new()
        .prefix("deploywatch-chromium-")
        .tempdir()
        .expect("creating a Chromium profile directory");
    let (stdout_path, stderr_path) = (
        out.join(format!("{name}.stdout")),
        out.join(format!("{name}.stderr")),
    );
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--disable-extensions",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("creating a file"))
        .stderr(std::fs::File::create(&stderr_path).expect("creating a file"))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {CHROMIUM}: {e}"));
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for Chromium") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "Chromium ({name}) did not finish within {CHROMIUM_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    assert!(
        status.success(),
        "Chromium ({name}) exited with {status}; stderr:\n{}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    stdout
}

/// The DOM Chromium built from `url`.
fn dump_dom(out: &Path, name: &str, url: &str) -> String {
    let dom = chromium(out, name, &["--dump-dom".into(), url.into()]);
    std::fs::write(out.join(format!("{name}.html")), &dom).expect("saving the DOM");
    assert!(
        dom.contains("</html>"),
        "Chromium rendered no document for {url}:\n{dom}"
    );
    dom
}

/// A screenshot of `url` in a `width`×`height` window, saved as `out/name.png`.
fn screenshot(out: &Path, name: &str, url: &str, width: u32, height: u32) -> PathBuf {
    let png = out.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&png);
    chromium(
        out,
        name,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
            url.into(),
        ],
    );
    let bytes = std::fs::read(&png)
        .unwrap_or_else(|e| panic!("Chromium wrote no screenshot {}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} is not a PNG of a rendered page ({} bytes)",
        png.display(),
        bytes.len()
    );
    png
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).expect("creating the screenshot directory");
    dir
}

/// A canary whose new version fails 10× as often on `/checkout` rolls back; a clean one of
/// another service passes; a registration full of markup shows as text. Chromium renders
/// the index and the deploy page with the verdict, the charts and the timeline.
#[test]
fn web_page_in_chromium_after_a_rollback() {
    let out = out_dir();
    let dw = Deploywatch::start();

    let svc = Service::new("checkout", 103, 3).canary("v2", T, 1).effect(
        Effect::step(Who::Version("v2".into()), Signal::Errors, 10.0, T, i64::MAX)
            .on_route("/checkout"),
    );
    let mut case = Case::new("browser_errors_x10", svc);
    case.regression_from = Some(T);
    case.end = T + 10 * MIN;
    let bad = run_on(&dw, case);
    assert_eq!(bad.verdict, "rollback", "{}", bad.explain());
    let id = bad.deploy["id"].as_str().expect("a deploy id").to_string();

    let clean = Case::new(
        "browser_clean",
        Service::new("search", 101, 3).canary("v2", T, 1),
    );
    let clean = run_on(&dw, clean);
    assert_eq!(clean.verdict, "pass", "{}", clean.explain());
    let clean_id = clean.deploy["id"]
        .as_str()
        .expect("a deploy id")
        .to_string();

    // Markup in every field a registration carries: it must stay text in the browser.
    let evil = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";
    register_deploy(
        &dw,
        &json!({"service": format!("evil{evil}"), "version": format!("v2{evil}"),
                "author": evil, "url": "javascript:alert(1)",
                "changes": [{"component": evil, "summary": evil, "files": [evil]}]}),
    )
    .expect("registering a deploy with markup in its fields");

    // The index: every deploy with its verdict, linking to its page.
    let index = dump_dom(&out, "index", &format!("{}/", dw.url()));
    for want in [
        "<h1>Deploys</h1>",
        "badge rollback",
        "badge pass",
        &format!("href=\"/deploys/{id}\""),
        "decided by <b>error_rate</b>",
        "checkout",
        "search",
    ] {
        assert!(index.contains(want), "the index lacks {want:?}:\n{index}");
    }
    assert_no_markup_from_data(&index);

    // The deploy page: verdict, rules, charts, timeline, the registered changes.
    let page = dump_dom(&out, "deploy", &format!("{}/deploys/{id}", dw.url()));
    for want in [
        r#"<span class="badge big rollback">rollback</span>"#,
        "<svg class=\"chart\"",
        "<path class=\"line canary",
        ">deploy</text>",
        ">rollback</text>",
        "<h2>Rules</h2>",
        "<th>held to</th>",
        "rollback ×1.25 +1.00% at 99.9 %",
        r#"<rect class="warmup""#,
        "<h2>Timeline</h2>",
        "deploy_started",
        "verdict_changed",
        "payments-client",
        "error_rate",
    ] {
        assert!(
            page.contains(want),
            "the deploy page lacks {want:?}:\n{page}"
        );
    }
    assert!(
        page.contains("<title>checkout v2 · deploywatch</title>"),
        "title: {page}"
    );

    assert_rows_agree_with_badges(&page);
    // Issue 16: rules the rollback did not need are not left "observing".
    assert!(!page.contains("observing for"), "{page}");

    // The passed deploy's page: each rule as it stood when it passed, with its terms.
    let pass_page = dump_dom(&out, "pass", &format!("{}/deploys/{clean_id}", dw.url()));
    for want in [
        r#"<span class="badge big pass">pass</span>"#,
        "<svg class=\"chart\"",
        "as it stood when it reached its verdict",
        "pass rules out rollback at 95 %",
        r#"<rect class="warmup""#,
        ">pass</text>",
    ] {
        assert!(
            pass_page.contains(want),
            "the passed deploy's page lacks {want:?}:\n{pass_page}"
        );
    }
    assert_rows_agree_with_badges(&pass_page);

    // The evil deploy's own page, in the browser.
    let evil_id = harness::request(
        Method::GET,
        &format!("{}/api/v1/deploys", dw.url()),
        &[],
        Vec::new(),
    );
    let list: serde_json::Value = serde_json::from_slice(&evil_id.body).expect("JSON");
    let evil_id = list["deploys"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|d| d["service"].as_str().unwrap_or("").starts_with("evil"))
        })
        .and_then(|d| d["id"].as_str())
        .expect("the evil deploy is listed")
        .to_string();
    let evil_page = dump_dom(&out, "evil", &format!("{}/deploys/{evil_id}", dw.url()));
    assert_no_markup_from_data(&evil_page);
    assert!(evil_page.contains("evil&lt;script&gt;"), "{evil_page}");

    // Unknown ids: an HTML 404.
    let r = harness::request(
        Method::GET,
        &format!("{}/deploys/no-such-deploy", dw.url()),
        &[],
        Vec::new(),
    );
    assert_eq!(r.status, 404);
    assert!(r.text().contains("No such deploy"), "{}", r.text());

    // Screenshots at a laptop's width: the first screen, and the whole deploy page.
    let shots = [
        screenshot(&out, "index-1366", &format!("{}/", dw.url()), 1366, 900),
        screenshot(
            &out,
            "deploy-1366",
            &format!("{}/deploys/{id}", dw.url()),
            1366,
            900,
        ),
        screenshot(
            &out,
            "deploy-tall",
            &format!("{}/deploys/{id}", dw.url()),
            1366,
            1800,
        ),
    ];
    for s in &shots {
        println!("browser: screenshot {}", s.display());
    }
    if std::env::var_os("DEPLOYWATCH_UPDATE_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/web-deploy.png");
        std::fs::copy(&shots[2], &docs).expect("copying the screenshot to docs/");
        println!("browser: copied to {}", docs.display());
    }
    // The passed deploy, whole, at a wide screen's width, for the docs.
    let pass_shot = screenshot(
        &out,
        "pass-wide",
        &format!("{}/deploys/{clean_id}", dw.url()),
        1600,
        2000,
    );
    println!("browser: screenshot {}", pass_shot.display());
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy-pass.png");
    if std::env::var_os("DEPLOYWATCH_UPDATE_DOCS").is_some() || !docs.exists() {
        std::fs::copy(&pass_shot, &docs).expect("copying the screenshot to docs/");
        println!("browser: copied to {}", docs.display());
    }
}

/// Issue 16: no rule's row shows a decided badge beside a reason that says it is not
/// decided (the row is frozen at the verdict), and no pending row of a finished rollback
/// says it is still observing.
fn assert_rows_agree_with_badges(dom: &str) {
    let rules = dom
        .split("<h2>Rules</h2>")
        .nth(1)
        .and_then(|s| s.split("</table>").next())
        .expect("a rules table");
    for row in rules.split("<tr").skip(2) {
        let decided = ["badge pass", "badge warn", "badge pause", "badge rollback"]
            .iter()
            .any(|b| row.contains(b));
        if decided {
            for undecided in [
                "undecided",
                "not enough evidence yet",
                "observing for",
                "waiting for",
            ] {
                assert!(
                    !row.contains(undecided),
                    "a decided rule's row says {undecided:?}: {row}"
                );
            }
        }
    }
}

/// What a browser built from the page has no element made of the data's markup.
fn assert_no_markup_from_data(dom: &str) {
    assert!(
        !dom.contains("<title>pwned"),
        "a script from the data ran:\n{dom}"
    );
    assert!(!dom.contains("<img"), "an element from the data:\n{dom}");
    assert!(
        !dom.contains("<script"),
        "a script element in the page:\n{dom}"
    );
    assert!(
        !dom.contains("href=\"javascript:"),
        "a javascript: link:\n{dom}"
    );
}

/// `deploywatch demo` (the default story, at high speed, its web page kept up): while it
/// runs, Chromium renders the index with the service's deploys and the rolled-back canary's
/// page with its verdict, suspect, change and the observed rollback. Ctrl-C ends it with 0.
#[test]
fn demo_web_page_in_chromium() {
    let out = out_dir();
    let mut run = DemoRun::start(&["--speed", FAST]);
    wait_for(
        "the demo's story to be played",
        Duration::from_secs(120),
        || {
            let stdout = run.stdout();
            if stdout.contains("The story is over") {
                Ok(())
            } else {
                Err(format!("stdout:\n{stdout}\nstderr:\n{}", run.stderr()))
            }
        },
    );
    let stdout = run.stdout();
    assert!(
        stdout.contains("Every deploy ended with its expected verdict."),
        "{stdout}"
    );
    let list = harness::request(
        Method::GET,
        &format!("{}/api/v1/deploys?service=shop", run.url()),
        &[],
        Vec::new(),
    );
    let list: serde_json::Value = serde_json::from_slice(&list.body).expect("JSON");
    let deploy = |version: &str| {
        list["deploys"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["version"] == version))
            .unwrap_or_else(|| panic!("no deploy of shop {version}: {list}"))
            .clone()
    };
    let (good, bad) = (deploy("v2"), deploy("v3"));
    assert_eq!(good["verdict"], "pass", "{good}");
    assert_eq!(bad["verdict"], "rollback", "{bad}");
    let id = bad["id"].as_str().expect("an id").to_string();

    let index = dump_dom(&out, "demo-index", &format!("{}/", run.url()));
    for want in [
        "<h1>Deploys</h1>",
        "shop",
        "badge rollback",
        "decided by <b>error_rate</b>",
        &format!("href=\"/deploys/{id}\""),
        &format!("href=\"/deploys/{}\"", good["id"].as_str().expect("an id")),
    ] {
        assert!(
            index.contains(want),
            "the demo's index lacks {want:?}:\n{index}"
        );
    }
    let page = dump_dom(&out, "demo-deploy", &format!("{}/deploys/{id}", run.url()));
    for want in [
        r#"<span class="badge big rollback">rollback</span>"#,
        "<svg class=\"chart\"",
        "/checkout",
        "checkout-db",
        "rollback_observed",
        ">rolled back</text>",
        r#"<rect class="warmup""#,
        "<th>held to</th>",
        "<title>shop v3 · deploywatch</title>",
    ] {
        assert!(
            page.contains(want),
            "the demo's deploy page lacks {want:?}:\n{page}"
        );
    }
    // Issue 16: a finished rollback's rules that did not decide it are not left "observing".
    assert!(!page.contains("observing for"), "{page}");
    assert_rows_agree_with_badges(&page);

    // The passed and promoted v2: each rule's row as it stood at its pass.
    let good_id = good["id"].as_str().expect("an id").to_string();
    let pass_page = dump_dom(
        &out,
        "demo-pass",
        &format!("{}/deploys/{good_id}", run.url()),
    );
    for want in [
        r#"<span class="badge big pass">pass</span>"#,
        "as it stood when it reached its verdict",
        "<th>held to</th>",
        "<title>shop v2 · deploywatch</title>",
    ] {
        assert!(
            pass_page.contains(want),
            "the demo's passed deploy page lacks {want:?}:\n{pass_page}"
        );
    }
    assert_rows_agree_with_badges(&pass_page);

    let shots = [
        screenshot(
            &out,
            "demo-index-1366",
            &format!("{}/", run.url()),
            1366,
            900,
        ),
        screenshot(
            &out,
            "demo-deploy-tall",
            &format!("{}/deploys/{id}", run.url()),
            1366,
            1800,
        ),
    ];
    for s in &shots {
        println!("browser: screenshot {}", s.display());
    }
    // For the docs: the page at a wide screen's width, whole.
    let docs_shots = [
        (shots[1].clone(), "docs/demo.png"),
        (
            screenshot(
                &out,
                "demo-rollback-wide",
                &format!("{}/deploys/{id}", run.url()),
                1600,
                2400,
            ),
            "docs/deploy-rollback.png",
        ),
    ];
    for (shot, name) in &docs_shots {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        if std::env::var_os("DEPLOYWATCH_UPDATE_DOCS").is_some() || !docs.exists() {
            std::fs::copy(shot, &docs).expect("copying the screenshot to docs/");
            println!("browser: copied to {}", docs.display());
        }
    }

    let status = run.interrupt(Duration::from_secs(30));
    assert!(status.success(), "the demo ended with {status} on Ctrl-C");
}
