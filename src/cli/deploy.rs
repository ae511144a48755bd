//! `deploywatch deploy`: for pipelines without Argo Rollouts or Flagger. Registers the deploy
//! with a running deploywatch (changes read from git when asked), waits for the verdict while
//! printing progress, prints the report, and exits with a code the pipeline can act on.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};

use super::http::HttpClient;
use crate::config::parse_duration;

/// Exit codes: the pipeline's contract.
pub const EXIT_PASS: i32 = 0;
pub const EXIT_UNREACHABLE: i32 = 2;
pub const EXIT_PAUSE: i32 = 3;
pub const EXIT_ROLLBACK: i32 = 4;
pub const EXIT_TIMEOUT: i32 = 5;

/// Register a deploy with a running deploywatch and wait for its verdict (for CI/CD
/// pipelines). Exit codes: 0 pass, 3 pause, 4 rollback, 5 timeout, 2 unreachable or refused.
///
/// How long a pass takes: under the default rules, at least 5.5 minutes from the deploy's
/// start, since every rule with data first warms up on each new instance, then observes
/// (latency 3m + 2m30s, CPU and memory 2m + 3m30s, traffic share 1m + 4m30s, errors
/// 30s + 4m, restarts 5m). On clean deploys (docs/detection.md): typically 5.5-8 minutes
/// at 5 requests/s per pod or more, about 7.5 at 1-5 requests/s; below 1 request/s 10 or
/// more, and often none within 20 minutes (each side must first see 200 requests); never
/// for a rollout that met a blip of errors (it stays at warn). The default --timeout of 15m
/// covers moderate traffic; raise it for quiet services. A regression is found sooner: a
/// rollback can come within a minute or two.
///
/// Registering the same service and version again (a retried step) is the same deploy: the
/// same id, nothing recorded twice.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Base URL of the running deploywatch.
    #[arg(long, value_name = "URL", default_value = "http://localhost:10997")]
    pub url: String,
    /// The service (the value of its service label, `job` by default).
    #[arg(long)]
    pub service: String,
    /// The version being deployed (the value of its version label).
    #[arg(long)]
    pub version: String,
    /// The version it replaces; default: the one serving now.
    #[arg(long = "baseline-version")]
    pub baseline_version: Option<String>,
    /// canary | rolling | blue-green; default: canary if the old version still serves.
    #[arg(long)]
    pub strategy: Option<String>,
    /// The commit deployed, shown in alerts and reports.
    #[arg(long)]
    pub commit: Option<String>,
    /// Who or what deployed it.
    #[arg(long)]
    pub author: Option<String>,
    /// Link to the pipeline run.
    #[arg(long = "run-url")]
    pub run_url: Option<String>,
    /// Read the changes from git: `REF1..REF2` (files from `git diff --name-only`, summaries
    /// from the commit subjects).
    #[arg(long = "changes-from", value_name = "REF1..REF2")]
    pub changes_from: Option<String>,
    /// Give up waiting after this long (exit 5). A pass takes at least 5.5 minutes under the
    /// default rules, 5.5-8 at moderate traffic: keep this well above that.
    #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
    /// How often to ask for the verdict.
    #[arg(long = "poll-interval", default_value = "5s", value_parser = parse_duration)]
    pub poll_interval: Duration,
}

/// The default `--timeout`: room for a clean deploy at moderate traffic to pass (twice
/// the least time a pass takes under the default rules, and the p90 measured at 1-5
/// requests/s per pod with room to spare).
pub const DEFAULT_TIMEOUT: &str = "15m";

/// The least time a deploy takes to pass under `rules` (each rule that holds a pass back
/// warms up, then observes), for a service whose series every such rule selects.
pub fn min_pass_time(rules: &crate::rules::RuleSet) -> Duration {
    rules
        .rules
        .iter()
        .filter(|r| !r.slow())
        .map(|r| r.warmup + r.observe)
        .max()
        .unwrap_or_default()
}

/// Runs the subcommand; returns the exit code.
pub async fn run(args: DeployArgs) -> i32 {
    match run_inner(&args).await {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("deploywatch deploy: {msg}");
            EXIT_UNREACHABLE
        }
    }
}

async fn run_inner(a: &DeployArgs) -> Result<i32, String> {
    let base = a.url.trim_end_matches('/');
    let least = min_pass_time(&crate::rules::RuleSet::embedded());
    if a.timeout < least {
        eprintln!(
            "deploywatch deploy: --timeout {} is shorter than the {} a pass takes at the least under the default rules: unless a regression is found first, this step ends in a timeout (exit 5)",
            crate::config::format_duration(a.timeout),
            crate::config::format_duration(least)
        );
    }
    let client = HttpClient::new(Duration::from_secs(10));
    let changes = match &a.changes_from {
        Some(range) => {
            if range
                .split_once("..")
                .is_some_and(|(a, _)| is_null_commit(a))
            {
                eprintln!("deploywatch deploy: --changes-from {range}: no commit before (a first push); the changes are the deployed commit's");
            }
            changes_from_git(range, Path::new("."))?
        }
        None => Vec::new(),
    };
    let mut body = json!({"service": a.service, "version": a.version, "changes": changes});
    for (k, v) in [
        ("baseline_version", &a.baseline_version),
        ("strategy", &a.strategy),
        ("commit", &a.commit),
        ("author", &a.author),
        ("url", &a.run_url),
    ] {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    }
    let res = client
        .send(Method::POST, &format!("{base}/api/v1/deploys"), Some(&body))
        .await
        .map_err(|e| format!("cannot reach deploywatch: {e}"))?;
    if res.status != 201 && res.status != 200 {
        return Err(format!(
            "deploywatch refused the deploy ({}): {}",
            res.status,
            res.text()
        ));
    }
    let answer = serde_json::from_slice::<Value>(&res.body).unwrap_or_default();
    let id = answer["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("unexpected answer: {}", res.text()))?;
    if res.status == 201 {
        println!(
            "deploywatch: registered {} {} as {id}",
            a.service, a.version
        );
    } else {
        // A repeat: the deploy was registered before (a retried step); same deploy.
        println!(
            "deploywatch: {} {} was registered already as {id}; waiting for its verdict",
            a.service, a.version
        );
    }
    for note in answer["ignored"].as_array().into_iter().flatten() {
        println!("deploywatch: ignored {}", note.as_str().unwrap_or_default());
    }
    println!(
        "deploywatch: waiting up to {} (a pass takes at least {} under the default rules)",
        crate::config::format_duration(a.timeout),
        crate::config::format_duration(least)
    );

    let started = Instant::now();
    let mut last = String::new();
    let mut last_print = Instant::now();
    let mut failures = 0;
    let deploy = loop {
        match client
            .send(Method::GET, &format!("{base}/api/v1/deploys/{id}"), None)
            .await
        {
            Ok(r) if r.status == 200 => {
                failures = 0;
                let d: Value =
                    serde_json::from_slice(&r.body).map_err(|e| format!("bad answer: {e}"))?;
                let verdict = d["verdict"].as_str().unwrap_or("pending").to_string();
                let line = format!(
                    "phase={} verdict={} {}",
                    d["phase"].as_str().unwrap_or("?"),
                    verdict,
                    d["reason"].as_str().unwrap_or("")
                );
                if line != last || last_print.elapsed() >= Duration::from_secs(60) {
                    println!("[{:>4}s] {line}", started.elapsed().as_secs());
                    last = line;
                    last_print = Instant::now();
                }
                if matches!(verdict.as_str(), "pass" | "pause" | "rollback") {
                    break Some(d);
                }
            }
            Ok(r) => return Err(format!("deploywatch answered {}: {}", r.status, r.text())),
            Err(e) => {
                // A restart of deploywatch is survivable; a dead one is not.
                failures += 1;
                eprintln!("deploywatch deploy: {e}");
                if failures >= 5 {
                    return Err(format!("cannot reach deploywatch: {e}"));
                }
            }
        }
        if started.elapsed() >= a.timeout {
            break None;
        }
        tokio::time::sleep(
            a.poll_interval
                .min(a.timeout.saturating_sub(started.elapsed())),
        )
        .await;
    };
    // The report, for the job log.
    if let Ok(r) = client
        .send(
            Method::GET,
            &format!("{base}/api/v1/deploys/{id}/report"),
            None,
        )
        .await
    {
        if r.status == 200 {
            println!("\n{}", r.text());
        }
    }
    Ok(match deploy.as_ref().and_then(|d| d["verdict"].as_str()) {
        Some("pass") => {
            println!("deploywatch: pass");
            EXIT_PASS
        }
        Some("pause") => {
            println!("deploywatch: pause — hold the rollout and look at the report");
            EXIT_PAUSE
        }
        Some("rollback") => {
            println!("deploywatch: rollback");
            EXIT_ROLLBACK
        }
        _ => {
            println!(
                "deploywatch: no verdict within {}",
                crate::config::format_duration(a.timeout)
            );
            EXIT_TIMEOUT
        }
    })
}

/// Changes between two git refs: one per commit, with its subject and files, named after
/// the directory most of its files are in.
pub fn changes_from_git(range: &str, repo: &Path) -> Result<Vec<Value>, String> {
    let (from, to) = range
        .split_once("..")
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| format!("--changes-from: expected REF1..REF2, got {range:?}"))?;
    let git = |args: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(repo)
            .output()
            .map_err(|e| format!("running git: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // A first push has no "before": GitHub's `github.event.before` and GitLab's
    // `CI_COMMIT_BEFORE_SHA` are all zeros. Then the change is the deployed commit itself.
    let first_push = is_null_commit(from);
    let log = if first_push {
        git(&["log", "-1", "--format=%H%x09%s", to])?
    } else {
        git(&["log", "--format=%H%x09%s", &format!("{from}..{to}")]).map_err(|e| {
            format!(
                "{e} (a shallow clone lacks older commits: fetch the history, e.g. fetch-depth: 0)"
            )
        })?
    };
    let mut changes = Vec::new();
    for line in log.lines() {
        let Some((sha, subject)) = line.split_once('\t') else {
            continue;
        };
        let files: Vec<String> = git(&["diff-tree", "--no-commit-id", "--name-only", "-r", sha])?
            .lines()
            .map(str::to_string)
            .collect();
        changes.push(json!({
            "component": component_of(&files),
            "summary": subject,
            "files": files,
        }));
    }
    // Files changed overall, in case the range holds merges whose diff-tree is empty.
    if changes.is_empty() && !first_push {
        let files: Vec<String> = git(&["diff", "--name-only", from, to])?
            .lines()
            .map(str::to_string)
            .collect();
        if !files.is_empty() {
            changes.push(json!({"component": component_of(&files), "summary": format!("{from}..{to}"), "files": files}));
        }
    }
    Ok(changes)
}

/// Whether a ref is the all-zeros commit id CI systems give as the "before" of a first push.
pub fn is_null_commit(r: &str) -> bool {
    r.len() >= 7 && r.bytes().all(|b| b == b'0')
}

/// The most specific directory most of the files share (`src/cache/pool.rs` → `cache`).
fn component_of(files: &[String]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for f in files {
        let parts: Vec<&str> = f.split('/').collect();
        let dir = match parts.len() {
            0 | 1 => "",
            2 => parts[0],
            _ => parts[parts.len() - 2],
        };
        *counts.entry(dir).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| d.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_the_common_directory() {
        assert_eq!(
            component_of(&["src/cache/pool.rs".into(), "src/cache/mod.rs".into()]),
            "cache"
        );
        assert_eq!(component_of(&["README.md".into()]), "");
        assert_eq!(component_of(&["web/app.js".into()]), "web");
    }

    /// Issue 16: the help states the least time a pass takes under the default rules, and
    /// the default timeout leaves room for it.
    #[test]
    fn issue_16_the_stated_least_pass_time_is_the_default_rules() {
        let least = min_pass_time(&crate::rules::RuleSet::embedded());
        assert_eq!(
            least,
            Duration::from_secs(330),
            "update --help and the README"
        );
        let timeout = parse_duration(DEFAULT_TIMEOUT).unwrap();
        assert!(timeout >= 2 * least, "{timeout:?}");
    }

    #[test]
    fn a_bad_range_is_refused() {
        assert!(changes_from_git("main", Path::new(".")).is_err());
        assert!(changes_from_git("..x", Path::new(".")).is_err());
    }
}
