//! The `deploywatch` binary: parses flags, loads the config, wires the app, serves HTTP, and
//! drains in-flight requests on SIGTERM/SIGINT. Everything else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use deploywatch::app::{App, Runtime};
use deploywatch::config::{check_http_url, Config};
use deploywatch::logging::{self, LogFormat, LogLevel};
use deploywatch::rules::RuleSet;

/// deploywatch judges every deploy on every Prometheus remote-write push: canary against
/// baseline, or after against before, and says so at once.
#[derive(Debug, Parser)]
#[command(name = "deploywatch", version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    flags: Flags,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Register a deploy with a running deploywatch and wait for its verdict (for CI/CD
    /// pipelines). Exit codes: 0 pass, 3 pause, 4 rollback, 5 timeout, 2 unreachable or refused.
    Deploy(deploywatch::cli::deploy::DeployArgs),
    /// Replay a Prometheus server's history (remote read) through deploywatch's judge: the
    /// deploys found, their verdicts and when, and with --compare-rules the difference
    /// another rule set makes. Exit codes: 0 done, 1 bad arguments, 2 Prometheus
    /// unreachable or refusing the read.
    Backtest(deploywatch::backtest::BacktestArgs),
}

/// Flags of the server (the default command).
#[derive(Debug, clap::Args)]
struct Flags {
    /// YAML configuration file. Without it, the embedded defaults and default rules apply.
    #[arg(long = "config.file", value_name = "PATH")]
    config_file: Option<PathBuf>,

    /// Address to listen on for the HTTP API, remote write and metrics.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = "0.0.0.0:10997"
    )]
    listen_address: SocketAddr,

    /// URL under which deploywatch is reachable, used in links in alerts and reports.
    /// Default: http://<hostname>:<listen port>.
    #[arg(long = "web.external-url", value_name = "URL")]
    external_url: Option<String>,

    /// Alertmanager base URL to send alerts to; repeatable. Added to the config file's.
    #[arg(long = "alertmanager.url", value_name = "URL")]
    alertmanager_url: Vec<String>,

    /// Directory for state snapshots and the deploy log.
    #[arg(long = "storage.path", value_name = "DIR", default_value = "./data")]
    storage_path: PathBuf,

    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value = "info")]
    log_level: LogLevel,

    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    log_format: LogFormat,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `backtest` documents exit 1 for bad arguments (2 is "Prometheus unreachable"); the
        // server and `deploy` keep clap's (and Prometheus') 2.
        Err(e) if e.use_stderr() && std::env::args().nth(1).as_deref() == Some("backtest") => {
            let _ = e.print();
            std::process::exit(deploywatch::backtest::EXIT_USAGE);
        }
        Err(e) => e.exit(),
    };
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a runtime")
    };
    match cli.command {
        Some(Command::Deploy(args)) => {
            std::process::exit(runtime().block_on(deploywatch::cli::deploy::run(args)))
        }
        Some(Command::Backtest(args)) => {
            std::process::exit(runtime().block_on(deploywatch::backtest::run(args)))
        }
        None => {}
    }
    let flags = cli.flags;
    logging::init(flags.log_level, flags.log_format);
    if let Err(error) = run(flags) {
        // A bad config is reported with its file, line and field, then exit code 1.
        eprintln!("deploywatch: {error:#}");
        std::process::exit(1);
    }
}

fn run(flags: Flags) -> anyhow::Result<()> {
    let config = match &flags.config_file {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    let rules = RuleSet::for_config(&config, flags.config_file.as_deref())?;
    let external_url = match &flags.external_url {
        Some(u) => check_http_url(u).map_err(anyhow::Error::msg)?,
        None => format!("http://{}:{}", hostname(), flags.listen_address.port()),
    };
    let alertmanager_urls = flags
        .alertmanager_url
        .iter()
        .map(|u| check_http_url(u).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(&flags.storage_path).with_context(|| {
        format!(
            "cannot create --storage.path {}",
            flags.storage_path.display()
        )
    })?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(flags, config, rules, external_url, alertmanager_urls))
}

async fn serve(
    flags: Flags,
    config: Config,
    rules: RuleSet,
    external_url: String,
    alertmanager_urls: Vec<String>,
) -> anyhow::Result<()> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.source,
        settings = %config,
        rules = rules.rules.len(),
        "Starting deploywatch."
    );
    let app = Arc::new(App::new(
        Runtime {
            config_path: flags.config_file.clone(),
            external_url,
            storage_path: flags.storage_path.clone(),
            alertmanager_urls,
        },
        config,
        rules,
    ));
    let listener = tokio::net::TcpListener::bind(flags.listen_address)
        .await
        .with_context(|| format!("cannot listen on {}", flags.listen_address))?;
    tracing::info!(address = %flags.listen_address, "Listening.");

    tokio::spawn(reload_on_sighup(app.clone()));
    app.alerts.start(app.clone());
    app.set_ready(true);
    axum::serve(listener, deploywatch::web::router(app.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    app.set_ready(false);
    // Deliver the alerts still queued, for a bounded time.
    app.alerts.shutdown(&*app, ALERT_FLUSH_TIMEOUT).await;
    tracing::info!("In-flight requests finished; see you next time.");
    Ok(())
}

/// How long pending alerts may take to deliver at exit.
const ALERT_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves on SIGTERM or SIGINT; the server then stops accepting and drains.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "Received a shutdown signal; draining in-flight requests."
    );
}

async fn reload_on_sighup(app: Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("Received SIGHUP; reloading the configuration.");
        let _ = app.reload();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
