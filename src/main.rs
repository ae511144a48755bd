//! The `deploywatch` binary: flags in; the server (loaded, served and drained on
//! SIGTERM/SIGINT by `deploywatch::server`) or a subcommand (`deploy`, `demo`) run, and an
//! exit code out. Everything else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use deploywatch::config::LimitFlags;
use deploywatch::logging::{self, LogFormat, LogLevel};
use deploywatch::server::{self, ServerSettings};

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
    // Its help (what it does, exit codes, how long a pass takes) is `DeployArgs`' own.
    Deploy(deploywatch::cli::deploy::DeployArgs),
    /// See it work: plays a story (a clean canary, then a bad one caught, explained and
    /// rolled back) into a deploywatch on its defaults, with its web page. Try this first.
    Demo(deploywatch::demo::DemoArgs),
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

    #[command(flatten)]
    limits: LimitFlags,
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
        Some(Command::Demo(args)) => {
            logging::init(args.log_level, args.log_format);
            std::process::exit(deploywatch::demo::run(args));
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
    let prepared = ServerSettings {
        config_file: flags.config_file,
        listen_address: flags.listen_address,
        external_url: flags.external_url,
        default_host: server::hostname(),
        alertmanager_urls: flags.alertmanager_url,
        storage_path: flags.storage_path,
        limit_flags: flags.limits,
    }
    .prepare()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = prepared.bind().await?;
        server.serve(server::shutdown_signal()).await
    })?;
    Ok(())
}
