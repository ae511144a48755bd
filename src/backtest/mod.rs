//! Backtest: a Prometheus server's history (remote read), a selector, a time range and rule
//! sets in; the deploys the judge finds in that history with their verdicts (a table or the
//! contract's DEPLOY JSON), and the difference between two rule sets, out.
//!
//! Steps: [`read`] asks Prometheus in time chunks; [`replay`] pushes each chunk through the
//! live judging code in event time; [`output`] prints. Reading the next chunk overlaps with
//! replaying the last one.

pub mod output;
pub mod read;
pub mod replay;
pub mod selector;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{parse_duration, Config};
use crate::deploy::tracker::Undeployed;
use crate::deploy::DeployJson;
use crate::rules::RuleSet;
use replay::{Chunk, Replay};

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_USAGE: i32 = 1;
pub const EXIT_PROMETHEUS: i32 = 2;

/// Why a backtest did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// Bad flags, selector, times or rule files: the user's to fix (exit 1).
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach Prometheus: {0}")]
    Unreachable(String),
    #[error("Prometheus refused the remote read ({status}) at {url}: {reason}")]
    Refused {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("unreadable remote-read answer from {url}: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("encoding the remote-read request: {0}")]
    Encode(String),
    #[error("replaying: {0}")]
    Replay(String),
}

impl BacktestError {
    pub fn exit_code(&self) -> i32 {
        match self {
            BacktestError::Usage(_) => EXIT_USAGE,
            _ => EXIT_PROMETHEUS,
        }
    }
}

/// Replays a Prometheus server's history through deploywatch's judge: which deploys it
/// finds, with which verdicts and when, and (with --compare-rules) what another rule set
/// would have said.
///
/// Exit codes: 0 done, 1 bad arguments (flags, selector, times, rule files), 2 Prometheus
/// unreachable, refusing the read or answering garbage.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// Base URL of the Prometheus server to read history from (remote read, /api/v1/read).
    #[arg(long = "prometheus.url", value_name = "URL")]
    pub prometheus_url: String,
    /// Series to replay, as a PromQL selector: '{job="checkout"}' (=, !=, =~, !~).
    #[arg(long, value_name = "SELECTOR")]
    pub selector: String,
    /// Start of the history: RFC 3339 (2025-11-24T16:00:00Z) or Unix seconds.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: i64,
    /// End of the history (inclusive): RFC 3339 or Unix seconds.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: i64,
    /// Rule files to judge with (default: the embedded default rules, or the config's).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub rules: Vec<PathBuf>,
    /// Rule files to compare with: the same history is judged under both rule sets and the
    /// difference printed.
    #[arg(long = "compare-rules", value_name = "FILE", num_args = 1..)]
    pub compare_rules: Vec<PathBuf>,
    /// A deploywatch config file, for its service and version labels, retention and limits
    /// (and its rule_files when --rules is not given).
    #[arg(long = "config.file", value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// Output: a table for people, or JSON ({"deploys": [DEPLOY...]}).
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// History is read in queries of this much time each (bounds memory and stays under
    /// Prometheus' --storage.remote.read-sample-limit).
    #[arg(long = "read-chunk", value_name = "DURATION", default_value = "2h", value_parser = parse_duration)]
    pub read_chunk: Duration,
    /// Timeout of one remote-read request.
    #[arg(long = "read-timeout", value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub read_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// History read before `--from`: a scrape interval of up to a minute, so that every
/// version serving at `--from` shows there, and a version that starts serving at any time
/// after `--from` is judged as a deploy (docs/backtest.md, "Start early enough").
pub const LEAD_IN_MS: i64 = 60_000;

/// What a backtest found, and what it cost.
pub struct Outcome {
    pub deploys: Vec<DeployJson>,
    /// The versions in the history that are not deploys (under the first rule set), and why.
    pub not_deployed: Vec<Undeployed>,
    /// Under --compare-rules, if given.
    pub compared: Option<Vec<DeployJson>>,
    pub stats: Stats,
}

/// Where the time went.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub chunks: u64,
    pub samples: u64,
    /// Series in the largest chunk.
    pub series: usize,
    pub pushes: u64,
    pub dropped: u64,
    /// Waiting for Prometheus and decoding its answers.
    pub read: Duration,
    /// Pushing through the judge (per rule set, summed).
    pub replay: Duration,
    pub wall: Duration,
    /// CPU time of the reading thread (requests, decoding answers) and of the replay
    /// thread, when the OS tells (Linux): on a busy machine wall time overstates both.
    pub read_cpu: Option<Duration>,
    pub replay_cpu: Option<Duration>,
}

/// CPU time (user + system) the calling thread has used, from `/proc/thread-self/stat`.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name, which may contain spaces: state is field 3, utime 14,
    // stime 15, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Runs the subcommand; returns the exit code.
pub async fn run(args: BacktestArgs) -> i32 {
    match backtest(&args).await {
        Ok(outcome) => {
            let text = match args.format {
                Format::Table => output::table(&outcome, &args),
                Format::Json => output::json(&outcome, &args),
            };
            println!("{text}");
            eprintln!("{}", output::stats_line(&outcome.stats));
            EXIT_OK
        }
        Err(e) => {
            eprintln!("deploywatch backtest: {e}");
            e.exit_code()
        }
    }
}

/// Reads and replays; the deploys found under each rule set.
pub async fn backtest(args: &BacktestArgs) -> Result<Outcome, BacktestError> {
    let started = Instant::now();
    let url = crate::config::check_http_url(&args.prometheus_url)
        .map_err(|e| BacktestError::Usage(format!("--prometheus.url: {e}")))?;
    if url.starts_with("https://") {
        // The subcommands' client speaks plain HTTP (as `deploywatch deploy`).
        return Err(BacktestError::Usage(
            "--prometheus.url: https is not supported; use http (e.g. through a local proxy)"
                .into(),
        ));
    }
    let matchers =
        selector::parse(&args.selector).map_err(|e| BacktestError::Usage(e.to_string()))?;
    if args.to < args.from {
        return Err(BacktestError::Usage(format!(
            "--to {} is before --from {}",
            crate::logging::rfc3339_ms(args.to),
            crate::logging::rfc3339_ms(args.from)
        )));
    }
    let window = replay::DEFAULT_WINDOW_MS;
    let chunk_ms = args.read_chunk.as_millis() as i64;
    if chunk_ms < window || chunk_ms % window != 0 {
        return Err(BacktestError::Usage(format!(
            "--read-chunk must be a multiple of {}s",
            window / 1000
        )));
    }
    let config = match &args.config_file {
        Some(p) => Config::load(p).map_err(|e| BacktestError::Usage(e.to_string()))?,
        None => Config::embedded(),
    };
    let rules = if args.rules.is_empty() {
        RuleSet::for_config(&config, args.config_file.as_deref())
    } else {
        load_rules(&args.rules)
    }
    .map_err(|e| BacktestError::Usage(e.to_string()))?;
    let compare = if args.compare_rules.is_empty() {
        None
    } else {
        Some(load_rules(&args.compare_rules).map_err(|e| BacktestError::Usage(e.to_string()))?)
    };

    // Versions serving at `--from` must show in the history read, however their scrapes
    // fall: the lead-in before it is read and replayed too.
    let from = args.from;
    // The replay runs on its own thread while the next chunk is read.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(1);
    let replayer = std::thread::spawn(move || -> Result<_, BacktestError> {
        let judge = |rules| {
            let mut r = Replay::new(&config, rules, window);
            r.judge_from(from);
            r
        };
        let mut first = judge(rules);
        let mut second = compare.map(judge);
        let mut busy = Duration::ZERO;
        while let Some(chunk) = rx.blocking_recv() {
            let t = Instant::now();
            first.replay(&chunk)?;
            if let Some(s) = &mut second {
                s.replay(&chunk)?;
            }
            busy += t.elapsed();
        }
        let stats = (
            first.samples,
            first.pushes,
            first.dropped,
            busy,
            thread_cpu(),
        );
        Ok((
            first.deploys(),
            first.not_deployed(),
            second.map(|s| s.deploys()),
            stats,
        ))
    });

    let reader = read::RemoteRead::new(&url, args.read_timeout);
    let mut stats = Stats::default();
    let mut read_error = None;
    let mut start = args.from.saturating_sub(LEAD_IN_MS);
    while start <= args.to {
        let end = ((start.div_euclid(chunk_ms) + 1) * chunk_ms).min(args.to + 1);
        let t = Instant::now();
        let series = match reader.query(&matchers, start, end - 1).await {
            Ok(s) => s,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        let chunk = Chunk::from_read(start, end, series);
        stats.read += t.elapsed();
        stats.chunks += 1;
        stats.series = stats.series.max(chunk.series());
        if tx.send(chunk).await.is_err() {
            break; // the replay failed; its error is reported below
        }
        start = end;
    }
    stats.read_cpu = thread_cpu();
    drop(tx);
    let replayed = replayer
        .join()
        .map_err(|_| BacktestError::Replay("the replay thread panicked".into()))?;
    if let Some(e) = read_error {
        return Err(e);
    }
    let (deploys, not_deployed, compared, (samples, pushes, dropped, busy, replay_cpu)) = replayed?;
    stats.replay_cpu = replay_cpu;
    stats.samples = samples;
    stats.pushes = pushes;
    stats.dropped = dropped;
    stats.replay = busy;
    stats.wall = started.elapsed();
    Ok(Outcome {
        deploys,
        not_deployed,
        compared,
        stats,
    })
}

fn load_rules(files: &[PathBuf]) -> Result<RuleSet, crate::config::ConfigError> {
    let mut texts = Vec::new();
    for p in files {
        let text =
            std::fs::read_to_string(p).map_err(|source| crate::config::ConfigError::Read {
                path: p.clone(),
                source,
            })?;
        texts.push((text, p.display().to_string()));
    }
    RuleSet::parse(&texts)
}

/// `--from`/`--to`: RFC 3339 (`2025-11-24T16:00:00Z`, fractions and `±hh:mm` offsets
/// allowed) or Unix seconds (fractions allowed); Unix milliseconds out.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && (0.0..1e11).contains(&secs) {
            return Ok((secs * 1000.0).round() as i64);
        }
        return Err(format!("{s:?}: Unix seconds out of range"));
    }
    // humantime reads UTC (`Z`); an offset is applied by hand.
    let (base, offset_ms) = match s.len().checked_sub(6).map(|i| s.split_at(i)) {
        Some((b, off))
            if (off.starts_with('+') || off.starts_with('-')) && off.as_bytes()[3] == b':' =>
        {
            let h: i64 = off[1..3].parse().map_err(|_| bad_time(s))?;
            let m: i64 = off[4..6].parse().map_err(|_| bad_time(s))?;
            let sign = if off.starts_with('-') { -1 } else { 1 };
            (format!("{b}Z"), sign * (h * 3600 + m * 60) * 1000)
        }
        _ => (s.to_string(), 0),
    };
    let t = humantime::parse_rfc3339(&base).map_err(|_| bad_time(s))?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad_time(s))?
        .as_millis() as i64;
    Ok(ms - offset_ms)
}

fn bad_time(s: &str) -> String {
    format!("{s:?}: expected RFC 3339 (2025-11-24T16:00:00Z) or Unix seconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_unix_seconds() {
        assert_eq!(parse_time("1764000000").unwrap(), 1_764_000_000_000);
        assert_eq!(parse_time("1764000000.25").unwrap(), 1_764_000_000_250);
        assert_eq!(
            parse_time("2025-11-24T16:00:00Z").unwrap(),
            1_764_000_000_000
        );
        assert_eq!(
            parse_time("2025-11-24T16:00:00.5Z").unwrap(),
            1_764_000_000_500
        );
        assert_eq!(
            parse_time("2025-11-24T18:00:00+02:00").unwrap(),
            1_764_000_000_000
        );
        assert_eq!(
            parse_time("2025-11-24T14:30:00-01:30").unwrap(),
            1_764_000_000_000
        );
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(parse_time("2025-11-24").is_err());
        assert!(parse_time("-5").is_err());
    }
}
