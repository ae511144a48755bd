//! The `deploywatch` binary: parses flags, loads the config, wires the app, serves HTTP, and
//! drains in-flight requests on SIGTERM/SIGINT. Everything else lives in the library.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use deploywatch::app::{App, Runtime};
use deploywatch::config::{check_http_url, Config, LimitFlags};
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

    #[command(flatten)]
    limits: LimitFlags,
}

fn main() {
    let cli = Cli::parse();
    if let Some(Command::Deploy(args)) = cli.command {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a runtime");
        std::process::exit(runtime.block_on(deploywatch::cli::deploy::run(args)));
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
    let mut config = match &flags.config_file {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    flags.limits.apply(&mut config.limits);
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
            limit_flags: flags.limits.clone(),
        },
        config,
        rules,
    ));
    // Before listening: the samples and deploys of the last run come back first.
    let restore = app.clone();
    tokio::task::spawn_blocking(move || restore.restore()).await?;
    let listener = tokio::net::TcpListener::bind(flags.listen_address)
        .await
        .with_context(|| format!("cannot listen on {}", flags.listen_address))?;
    tracing::info!(address = %flags.listen_address, "Listening.");

    tokio::spawn(reload_on_sighup(app.clone()));
    tokio::spawn(snapshot_periodically(app.clone()));
    app.alerts.start(app.clone());
    app.set_ready(true);
    let (stopping, mut stop) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, deploywatch::web::router(app.clone()))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stopping.send(true);
        })
        .into_future();
    tokio::select! {
        served = server => served?,
        _ = async {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => tracing::warn!(timeout = ?DRAIN_TIMEOUT, "In-flight requests did not finish in time; closing them."),
    }
    app.set_ready(false);
    // Deliver the alerts still queued, for a bounded time.
    app.alerts.shutdown(&*app, ALERT_FLUSH_TIMEOUT).await;
    // Every accepted push is in; the last snapshot holds them all.
    let last = app.clone();
    match tokio::time::timeout(
        FINAL_SNAPSHOT_TIMEOUT,
        tokio::task::spawn_blocking(move || last.snapshot()),
    )
    .await
    {
        Ok(Ok(Ok(w))) => tracing::info!(
            series = w.series,
            bytes = w.bytes,
            "Final snapshot written."
        ),
        Ok(_) => tracing::error!("The final snapshot failed; the previous one stays."),
        Err(_) => {
            tracing::error!(timeout = ?FINAL_SNAPSHOT_TIMEOUT, "The final snapshot did not finish in time; the previous one stays.")
        }
    }
    tracing::info!("In-flight requests finished; see you next time.");
    Ok(())
}

/// How long in-flight requests may take to finish after SIGTERM.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long pending alerts may take to deliver at exit.
const ALERT_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the snapshot at exit may take (a partial one is never renamed into place).
const FINAL_SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Writes a snapshot every `storage.snapshot_interval` (read anew each time: a reload
/// changes it).
async fn snapshot_periodically(app: Arc<App>) {
    loop {
        let every = app.config.load().storage.snapshot_interval;
        tokio::time::sleep(every).await;
        let app = app.clone();
        let _ = tokio::task::spawn_blocking(move || app.snapshot()).await;
    }
}

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
