//! Start-up and shutdown of one deploywatch server: the process settings (`--config.file`,
//! `--web.listen-address`, …) in; a loaded config, a bound listener and the running [`App`]
//! out, served until a shutdown future resolves, then drained. Used by `deploywatch` itself
//! and by `deploywatch demo`, which runs the same server in-process.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::app::{App, LockError, Runtime, StorageLock};
use crate::config::{check_http_url, Config, ConfigError, LimitFlags};
use crate::rules::RuleSet;

/// How long in-flight requests may take to finish after the shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long pending alerts may take to deliver at exit.
pub const ALERT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the snapshot at exit may take (a partial one is never renamed into place).
pub const FINAL_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(20);

/// What the process was told: the server's flags.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `--config.file`; `None` runs on the embedded defaults.
    pub config_file: Option<PathBuf>,
    pub listen_address: SocketAddr,
    /// `--web.external-url`; `None`: `http://<default_host>:<bound port>`.
    pub external_url: Option<String>,
    /// The host of the default external URL (the machine's hostname for the server).
    pub default_host: String,
    pub alertmanager_urls: Vec<String>,
    pub storage_path: PathBuf,
    /// `--limits.*`, applied over the config file's limits (also on reload).
    pub limit_flags: LimitFlags,
}

/// Why the server could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Url(String),
    #[error("cannot create --storage.path {path}: {error}")]
    Storage {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot listen on {address}: {error}")]
    Listen {
        address: SocketAddr,
        error: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// Settings checked and the config loaded, before any runtime exists: a bad config fails
/// here, with its file, line and field.
pub struct Prepared {
    settings: ServerSettings,
    config: Config,
    rules: RuleSet,
    alertmanager_urls: Vec<String>,
    /// `--storage.path`, held from here until the server has stopped.
    lock: StorageLock,
}

impl ServerSettings {
    /// Loads and validates the config and rules, checks the URLs, creates the storage
    /// directory and locks it: a second deploywatch on the same directory fails here, at
    /// once, naming the one that holds it.
    pub fn prepare(self) -> Result<Prepared, ServerError> {
        let mut config = match &self.config_file {
            Some(path) => Config::load(path)?,
            None => Config::embedded(),
        };
        self.limit_flags.apply(&mut config.limits);
        let rules = RuleSet::for_config(&config, self.config_file.as_deref())?;
        if let Some(u) = &self.external_url {
            check_http_url(u).map_err(ServerError::Url)?;
        }
        let alertmanager_urls = self
            .alertmanager_urls
            .iter()
            .map(|u| check_http_url(u).map_err(ServerError::Url))
            .collect::<Result<Vec<_>, _>>()?;
        std::fs::create_dir_all(&self.storage_path).map_err(|error| ServerError::Storage {
            path: self.storage_path.clone(),
            error,
        })?;
        let lock = StorageLock::acquire(&self.storage_path)?;
        Ok(Prepared {
            settings: self,
            config,
            rules,
            alertmanager_urls,
            lock,
        })
    }
}

impl Prepared {
    /// Binds the listener, builds the app (opening the deploy history) and restores the
    /// last run's state from `--storage.path`. Call inside a tokio runtime.
    pub async fn bind(self) -> Result<Server, ServerError> {
        let Prepared {
            settings,
            config,
            rules,
            alertmanager_urls,
            lock,
        } = self;
        let address = settings.listen_address;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| ServerError::Listen { address, error })?;
        let local_addr = listener
            .local_addr()
            .map_err(|error| ServerError::Listen { address, error })?;
        lock.set_address(local_addr);
        let external_url = match &settings.external_url {
            Some(u) => check_http_url(u).map_err(ServerError::Url)?,
            None => format!("http://{}:{}", settings.default_host, local_addr.port()),
        };
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %config.source,
            settings = %config,
            rules = rules.rules.len(),
            "Starting deploywatch."
        );
        let app = Arc::new(App::new(
            Runtime {
                config_path: settings.config_file.clone(),
                external_url,
                storage_path: settings.storage_path.clone(),
                alertmanager_urls,
                limit_flags: settings.limit_flags.clone(),
            },
            config,
            rules,
        ));
        // The samples and deploys of the last run come back before the first request.
        let restoring = app.clone();
        let _ = tokio::task::spawn_blocking(move || restoring.restore()).await;
        tracing::info!(address = %local_addr, "Listening.");
        Ok(Server {
            app,
            listener,
            local_addr,
            lock,
        })
    }
}

/// A bound, not yet serving deploywatch.
pub struct Server {
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    /// Released once the final snapshot is written (or the process dies).
    lock: StorageLock,
}

impl Server {
    /// The address actually bound (the port chosen when the flag said `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Starts the alert service, periodic snapshots and reloads on SIGHUP, serves until
    /// `shutdown` resolves, then drains in-flight requests, delivers queued alerts and
    /// writes a final snapshot, each for a bounded time.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server {
            app,
            listener,
            lock,
            ..
        } = self;
        let hup = tokio::spawn(reload_on_sighup(app.clone()));
        let snapshots = tokio::spawn(snapshot_periodically(app.clone()));
        app.alerts.start(app.clone());
        app.set_ready(true);
        let (stopping, mut stop) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, crate::web::router(app.clone()))
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stopping.send(true);
            })
            .into_future();
        let served = tokio::select! {
            served = server => served,
            _ = async {
                let _ = stop.wait_for(|s| *s).await;
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } => {
                tracing::warn!(timeout = ?DRAIN_TIMEOUT, "In-flight requests did not finish in time; closing them.");
                Ok(())
            }
        };
        app.set_ready(false);
        hup.abort();
        snapshots.abort();
        // Deliver the alerts still queued, for a bounded time.
        app.alerts.shutdown(&*app, ALERT_FLUSH_TIMEOUT).await;
        // Every accepted push is in: the last snapshot holds them all.
        let last = app.clone();
        match tokio::time::timeout(
            FINAL_SNAPSHOT_TIMEOUT,
            tokio::task::spawn_blocking(move || last.snapshot()),
        )
        .await
        {
            Ok(Ok(Ok(w))) => {
                tracing::info!(
                    series = w.series,
                    bytes = w.bytes,
                    "Final snapshot written."
                )
            }
            Ok(_) => tracing::error!("The final snapshot failed; the previous one stays."),
            Err(_) => {
                tracing::error!(timeout = ?FINAL_SNAPSHOT_TIMEOUT, "The final snapshot did not finish in time; the previous one stays.")
            }
        }
        drop(lock);
        served.map_err(ServerError::Serve)?;
        tracing::info!("In-flight requests finished; see you next time.");
        Ok(())
    }
}

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

/// Resolves on SIGTERM or SIGINT, the signals a server drains on.
pub async fn shutdown_signal() {
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

/// The machine's hostname, for the default external URL.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
