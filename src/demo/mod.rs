//! `deploywatch demo`: flags and a story in; a deploywatch on its embedded defaults, fed by
//! a simulated service through its own remote-write endpoint, and a terminal that tells the
//! story out (exit code 0 when every deploy ended with its expected verdict). [`sim`]
//! simulates a Kubernetes service scraped by Prometheus; [`story`] says what happens to it;
//! [`play`] sends it and reads the deploys back; [`world`] draws randomized services and
//! deploys for the detection benchmark (benches/detection.rs).

pub mod play;
pub mod sim;
pub mod story;
pub mod world;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::sync::watch;

use crate::cli::http::HttpError;
use crate::logging::{LogFormat, LogLevel};
use crate::server::{self, ServerError, ServerSettings};
use story::Scenario;

/// Plays a built-in story: a deploywatch on its embedded defaults in this process, fed by a
/// simulated service (baseline pods and canaries, Prometheus-shaped metrics, 15 s scrapes)
/// through its own remote-write endpoint, in accelerated event time. Open the printed URL
/// to watch the deploys on the web page.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The story to play.
    #[arg(long, value_enum, default_value_t = Scenario::BadCanary)]
    pub scenario: Scenario,

    /// List the stories and exit.
    #[arg(long)]
    pub list: bool,

    /// The simulated pods expose `http_request_duration_seconds` as a native histogram
    /// (schema 3) instead of classic buckets, as Prometheus sends it with
    /// `send_native_histograms: true`.
    #[arg(long)]
    pub native_histograms: bool,

    /// Event seconds played per wall-clock second (the default plays bad-canary's 28
    /// minutes in about 80 s).
    #[arg(long, default_value_t = 20.0)]
    pub speed: f64,

    /// Play the story once and exit: 0 when every deploy ended with its expected verdict,
    /// else 1 (a smoke test). Without it the web page stays up until Ctrl-C.
    #[arg(long)]
    pub once: bool,

    /// Address to listen on for the web page and the API.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = "127.0.0.1:10997"
    )]
    pub listen_address: SocketAddr,

    /// URL under which this deploywatch is reachable, used in links in alerts.
    /// Default: http://<listen address>.
    #[arg(long = "web.external-url", value_name = "URL")]
    pub external_url: Option<String>,

    /// Alertmanager base URL to send the verdicts to as alerts; repeatable.
    #[arg(long = "alertmanager.url", value_name = "URL")]
    pub alertmanager_url: Vec<String>,

    /// Directory for the deploy history. Default: a temporary directory, deleted at exit.
    #[arg(long = "storage.path", value_name = "DIR")]
    pub storage_path: Option<PathBuf>,

    /// Only log messages with the given severity or above (the story itself is printed
    /// on stdout).
    #[arg(long = "log.level", value_enum, default_value = "warn")]
    pub log_level: LogLevel,

    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    pub log_format: LogFormat,
}

/// Why the demo could not play its story.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{what}: answered {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("compressing a remote-write request: {0}")]
    Snappy(#[from] snap::Error),
    #[error("cannot create a temporary storage directory: {0}")]
    TempDir(std::io::Error),
    #[error("--speed must be a positive number of event seconds per second, not {0}")]
    Speed(f64),
    #[error("building the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("interrupted")]
    Interrupted,
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: DemoArgs) -> i32 {
    if args.list {
        for s in Scenario::ALL {
            println!("{:<18} {}", s.name(), s.summary());
        }
        return 0;
    }
    match run_inner(&args) {
        Ok(code) => code,
        Err(DemoError::Interrupted) => {
            println!("Interrupted.");
            130
        }
        Err(error) => {
            eprintln!("deploywatch demo: {error}");
            1
        }
    }
}

fn run_inner(args: &DemoArgs) -> Result<i32, DemoError> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(DemoError::Speed(args.speed));
    }
    let temp = match &args.storage_path {
        Some(_) => None,
        None => Some(TempDir::new().map_err(DemoError::TempDir)?),
    };
    let storage_path = match (&args.storage_path, &temp) {
        (Some(p), _) => p.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("a temporary directory without --storage.path"),
    };
    let ip = args.listen_address.ip();
    let prepared = ServerSettings {
        config_file: None,
        listen_address: args.listen_address,
        external_url: args.external_url.clone(),
        default_host: if ip.is_unspecified() {
            server::hostname()
        } else {
            ip.to_string()
        },
        alertmanager_urls: args.alertmanager_url.clone(),
        storage_path: storage_path.clone(),
        limit_flags: Default::default(),
    }
    .prepare()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DemoError::Runtime)?;
    let code = runtime.block_on(async {
        let server = prepared.bind().await?;
        let addr = server.local_addr();
        let host = if ip.is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let base_url = format!("http://{host}:{}", addr.port());
        let app = server.app().clone();

        let (stop_tx, stop_rx) = watch::channel(false);
        let signals = {
            let tx = stop_tx.clone();
            tokio::spawn(async move {
                server::shutdown_signal().await;
                let _ = tx.send(true);
            })
        };
        let mut server_stop = stop_rx.clone();
        let serving = tokio::spawn(server.serve(async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        }));

        let result = tell(
            args,
            &storage_path,
            temp.is_some(),
            &base_url,
            app,
            stop_rx.clone(),
        )
        .await;
        let _ = stop_tx.send(true);
        signals.abort();
        match serving.await {
            Ok(Err(error)) => tracing::error!(%error, "The demo's server failed."),
            Err(error) => tracing::error!(%error, "The demo's server task failed."),
            Ok(Ok(())) => {}
        }
        result
    });
    drop(runtime);
    drop(temp);
    code
}

/// Prints the banner, plays the story, prints the verdicts; without `--once`, keeps the
/// web page up until `stop`.
async fn tell(
    args: &DemoArgs,
    storage: &Path,
    temporary: bool,
    base_url: &str,
    app: std::sync::Arc<crate::app::App>,
    mut stop: watch::Receiver<bool>,
) -> Result<i32, DemoError> {
    // Event time is aligned with the wall clock: the story ends about when it is played
    // to the end, so the web page shows times that make sense.
    let dry = story::build(args.scenario, 0);
    let played_wall_ms = (dry.played_ms() as f64 / args.speed) as i64;
    let origin = (crate::now_ms() + played_wall_ms - dry.end).div_euclid(sim::MIN) * sim::MIN;
    let mut story = story::build(args.scenario, origin);
    if args.native_histograms {
        for svc in &mut story.services {
            svc.native = sim::Native::All;
        }
    }

    let mut out = std::io::stdout();
    let svc = &story.services[0];
    let _ = writeln!(
        out,
        "deploywatch demo — {}: {}\n\
         \n  web page    {base_url}/   (the deploys, their charts and timelines; it reloads itself)\
         \n  API         {base_url}/api/v1/deploys\
         \n  simulated   {} ({} pods of v1, {} requests/s) scraped every 15 s, remote-written \
         every 5 s of event time (RW 1.0, snappy) to {base_url}/api/v1/write\
         \n  speed       {} event seconds per second: {} minutes of story in about {} s\
         \n  storage     {}{}\
         \n  alerts      {}\n",
        story.scenario,
        story.scenario.summary(),
        svc.name,
        svc.pods.iter().filter(|p| p.start == story.origin).count(),
        svc.rps,
        args.speed,
        story.played_ms() / sim::MIN,
        played_wall_ms / 1000,
        storage.display(),
        if temporary {
            " (temporary, deleted at exit)"
        } else {
            ""
        },
        if args.alertmanager_url.is_empty() {
            "none (--alertmanager.url sends them)".to_string()
        } else {
            args.alertmanager_url.join(", ")
        },
    );
    let _ = out.flush();

    let mut player = play::Player::new(base_url.to_string(), app, args.speed, std::io::stdout());
    let outcomes = player.play(story, stop.clone()).await?;
    let ok = outcomes.iter().all(play::Outcome::ok);
    println!("Verdicts:");
    for o in &outcomes {
        println!("  {}", o.line());
        if let Some(rule) = &o.rule {
            println!("      decided by {rule}");
        }
        if let Some(s) = &o.suspect {
            println!("      top suspect {s}");
        }
    }
    println!(
        "{}",
        if ok {
            "Every deploy ended with its expected verdict."
        } else {
            "Some deploys did not end with their expected verdict."
        }
    );
    if !args.once {
        println!("\nThe story is over; the web page stays up at {base_url}/ — Ctrl-C stops.");
        let _ = stop.wait_for(|s| *s).await;
    }
    Ok(if ok { 0 } else { 1 })
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last = None;
        for i in 0..100u32 {
            let p = base.join(format!(
                "deploywatch-demo-{}-{}",
                std::process::id(),
                nanos.wrapping_add(i)
            ));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
