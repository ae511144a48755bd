//! Wiring: the components one running deploywatch is made of, and the one function a push
//! goes through, from body bytes to stored samples.

mod durable;
mod lock;

pub use durable::Restored;
pub use lock::{LockError, StorageLock, LOCK_FILE};

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::alert::{AlertConfig, AlertService};
use crate::config::{Config, ConfigError};
use crate::deploy::tracker::{Deploys, Settings};
use crate::export::Metrics;
use crate::ingest::{DecodeError, DecodeLimits, Decoder, Protocol};
use crate::rules::RuleSet;
use crate::store::{IngestOutcome, IngestScratch, Store, StoreConfig, StoreError, TimeBounds};

/// Where the process was told to keep things and how to link to itself.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// `--config.file`, if any; `None` runs on the embedded defaults.
    pub config_path: Option<PathBuf>,
    /// `--web.external-url`, without a trailing slash.
    pub external_url: String,
    pub storage_path: PathBuf,
    /// `--alertmanager.url` values, added to the config file's.
    pub alertmanager_urls: Vec<String>,
    /// `--limits.*` flags, applied over every config loaded.
    pub limit_flags: crate::config::LimitFlags,
}

/// Everything a request handler can reach.
pub struct App {
    pub runtime: Runtime,
    /// Config in force; swapped whole on reload.
    pub config: ArcSwap<Config>,
    pub store: Store,
    pub deploys: Deploys,
    pub metrics: Metrics,
    /// Verdicts as alerts to Alertmanager; started by `main` (`AlertService::start`).
    pub alerts: Arc<AlertService>,
    /// Bounds the remote-write requests in flight (being read, waiting, or judged).
    pub ingest_slots: tokio::sync::Semaphore,
    /// Bounds the pushes decoded, stored and judged at once (on the blocking pool, never on
    /// a runtime worker) to the CPUs: more would only share them, and the runtime's
    /// workers, which answer health, readiness and the gates, keep their turn.
    pub judge_slots: Arc<tokio::sync::Semaphore>,
    /// Waits for the deploy history's queued records to be on disk (before a snapshot).
    pub history: crate::report::history::HistoryFlusher,
    ready: AtomicBool,
    /// One snapshot at a time (the timer's and the one at exit).
    snapshot_lock: parking_lot::Mutex<()>,
    pub started_at: std::time::SystemTime,
}

/// Why a push was refused; the store is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an accepted push did.
#[derive(Debug, Default)]
pub struct PushOutcome {
    pub store: IngestOutcome,
    pub samples_received: u64,
    pub histograms_received: u64,
    pub exemplars_received: u64,
}

/// The store and the deploy tracker a config describes, empty: what judges pushes. Shared
/// by the server ([`App::new`]) and backtests, which replay history through the same parts.
pub fn judge_parts(config: &Config, rules: RuleSet, external_url: String) -> (Store, Deploys) {
    let store = Store::new(StoreConfig {
        service_label: config.global.service_label.clone(),
        version_label: config.global.version_label.clone(),
        retention_ms: config.global.retention.as_millis() as i64,
        max_active_series: config.limits.max_active_series,
        max_series_per_service: config.limits.max_series_per_service,
        max_samples_per_series: config.limits.max_samples_per_series,
    });
    let settings = Settings {
        service_label: config.global.service_label.clone(),
        version_label: config.global.version_label.clone(),
        ..Settings::default()
    };
    (store, Deploys::new(rules, settings, external_url))
}

/// How long a push that finished a deploy waits for its history line to be on disk.
const HISTORY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Pushes judged at once: the CPUs the process may use.
fn judge_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

thread_local! {
    /// Decode and resolve scratch space, reused by every push this thread handles.
    static SCRATCH: RefCell<(Decoder, IngestScratch)> = RefCell::new(Default::default());
}

impl App {
    pub fn new(runtime: Runtime, config: Config, rules: RuleSet) -> App {
        let (store, deploys) = judge_parts(&config, rules, runtime.external_url.clone());
        // Finished deploys of earlier runs: listed and reported as stored, not judged again.
        let history = match crate::report::history::History::open(
            &runtime.storage_path,
            config.storage.history_retention,
        ) {
            Ok(history) => history,
            Err(error) => {
                tracing::error!(%error, "Cannot open the deploy history; finished deploys are kept in memory only, until exit.");
                crate::report::history::History::in_memory(Some(config.storage.history_retention))
            }
        };
        let history_flusher = history.flusher();
        deploys.set_history(history);
        let metrics = Metrics::default();
        // Alertmanagers from the flags and the config file; changes apply after a restart.
        let alerts = Arc::new(AlertService::new(
            AlertConfig::new(
                [
                    &runtime.alertmanager_urls[..],
                    &config.alerting.alertmanagers[..],
                ]
                .concat(),
                &runtime.external_url,
                config.alerting.resend_interval,
            ),
            &metrics,
        ));
        App {
            deploys,
            alerts,
            ingest_slots: tokio::sync::Semaphore::new(config.limits.max_inflight_requests),
            judge_slots: Arc::new(tokio::sync::Semaphore::new(judge_parallelism())),
            history: history_flusher,
            runtime,
            config: ArcSwap::from_pointee(config),
            store,
            metrics,
            ready: AtomicBool::new(false),
            snapshot_lock: parking_lot::Mutex::new(()),
            started_at: std::time::SystemTime::now(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed)
    }

    /// [`App::push`] off the runtime's workers: waits (asynchronously) for one of the
    /// [`App::judge_slots`], then decodes, stores and judges on the blocking pool. The
    /// deploys the push touched are judged before it returns, as the contract says.
    pub async fn push_off_worker(
        self: &Arc<Self>,
        protocol: Protocol,
        body: bytes::Bytes,
    ) -> Result<PushOutcome, PushError> {
        let slot = self
            .judge_slots
            .clone()
            .acquire_owned()
            .await
            .expect("the judge slots are never closed");
        let queued = self.history.queued();
        let app = self.clone();
        let outcome = match tokio::task::spawn_blocking(move || app.push(protocol, &body)).await {
            Ok(outcome) => outcome,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        drop(slot);
        if self.history.queued() != queued {
            // The push finished a deploy (or one finished meanwhile): it is answered once
            // the history's line is on disk, as when the push wrote it itself; the wait
            // holds no lock, no judge slot and no worker.
            let history = self.history.clone();
            let flushed = tokio::task::spawn_blocking(move || history.flush(HISTORY_WAIT))
                .await
                .unwrap_or(false);
            if !flushed {
                tracing::warn!(timeout = ?HISTORY_WAIT, "The deploy history's writer is behind; answering the push anyway.");
            }
        }
        outcome
    }

    /// Decodes one remote-write body and stores its samples. Synchronous and CPU-bound;
    /// nothing is held across an await.
    pub fn push(&self, protocol: Protocol, body: &[u8]) -> Result<PushOutcome, PushError> {
        let config = self.config.load();
        let limits = DecodeLimits::from(&config.limits);
        SCRATCH.with(|cell| {
            let (decoder, scratch) = &mut *cell.borrow_mut();
            let batch = decoder.decode(protocol, body, &limits)?;
            let bounds = TimeBounds::live(crate::now_ms(), config.limits.max_time_ahead);
            let store = self.store.ingest_within(batch, scratch, &bounds)?;
            self.metrics.ingested(&store, &batch.extras);
            let histograms = batch.histograms.len() as u64;
            // Judge the deploys this push touched before answering.
            let judged = Instant::now();
            self.deploys.on_push(&self.store, &store.touched);
            self.metrics.evaluation.observe(judged.elapsed());
            Ok(PushOutcome {
                samples_received: batch.sample_count() as u64,
                histograms_received: histograms,
                exemplars_received: batch.extras.exemplars,
                store,
            })
        })
    }

    /// Re-reads the config file (and, with the judge, the rule files). On error the old
    /// config stays in force; the failure is logged and counted.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let started = Instant::now();
        let result = match &self.runtime.config_path {
            Some(p) => Config::load(p),
            None => Ok(Config::embedded()),
        }
        .and_then(|c| {
            let rules = RuleSet::for_config(&c, self.runtime.config_path.as_deref())?;
            Ok((c, rules))
        });
        match result {
            Ok((mut new, rules)) => {
                self.runtime.limit_flags.apply(&mut new.limits);
                self.store.set_limits(&new.limits);
                if new.limits.max_inflight_requests
                    != self.config.load().limits.max_inflight_requests
                {
                    tracing::warn!(
                        "limits.max_inflight_requests changed; it applies after a restart."
                    );
                }
                self.deploys.set_rules(rules);
                let old = self.config.load();
                if new.alerting != old.alerting {
                    tracing::warn!(
                        "The alerting section changed; Alertmanagers and the resend interval apply after a restart."
                    );
                }
                if new.global != old.global {
                    tracing::warn!(
                        "The global section changed; service and version labels and retention apply after a restart."
                    );
                }
                self.config.store(Arc::new(new));
                self.metrics.reloads_ok.inc();
                self.metrics.last_reload_ok.store(1, Ordering::Relaxed);
                self.metrics
                    .last_reload_success_ms
                    .store(crate::now_ms() as u64, Ordering::Relaxed);
                tracing::info!(took = ?started.elapsed(), "Configuration reloaded.");
                Ok(())
            }
            Err(error) => {
                self.metrics.reloads_failed.inc();
                self.metrics.last_reload_ok.store(0, Ordering::Relaxed);
                tracing::error!(%error, "Reload failed; the previous configuration stays in force.");
                Err(error)
            }
        }
    }
}
