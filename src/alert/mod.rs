//! Tell Alertmanager: deploys' verdicts in, `DeployRegression` alerts out to every
//! configured Alertmanager (`POST /api/v2/alerts`), with Prometheus' lifecycle.
//!
//! Off the ingest path: a task wakes every `tick`, diffs `Deploys::list` against what it
//! has sent ([`lifecycle`]) and queues the alerts' current states per Alertmanager
//! ([`queue`]); one sender per Alertmanager delivers them with retries ([`client`]).
//! The alerts firing are also exported (`deploywatch_deploy_alert_firing`, read by
//! [`AlertService::firing`] at scrape time): the lifecycle runs without any Alertmanager
//! too, as Prometheus evaluates its alerting rules without one, then sending nothing and
//! recording nothing in the deploys' timelines.

pub mod client;
pub mod lifecycle;
pub mod queue;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::deploy::DeployJson;
use crate::export::{FiringAlert, Metrics};
use client::{AlertClient, Target};
use lifecycle::Lifecycle;

/// The `alertname` of every alert deploywatch sends.
pub const ALERT_NAME: &str = "DeployRegression";

/// One alert as Alertmanager's v2 API takes it. Times are wall-clock Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub generator_url: String,
}

impl Alert {
    /// Identity of the label set, as Alertmanager tells alerts apart.
    pub fn fingerprint(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.labels {
            s.push_str(k);
            s.push('\u{ff}');
            s.push_str(v);
            s.push('\u{ff}');
        }
        s
    }
}

impl Serialize for Alert {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Alert", 5)?;
        st.serialize_field("labels", &self.labels)?;
        st.serialize_field("annotations", &self.annotations)?;
        st.serialize_field("startsAt", &lifecycle::rfc3339(self.starts_at))?;
        st.serialize_field("endsAt", &lifecycle::rfc3339(self.ends_at))?;
        st.serialize_field("generatorURL", &self.generator_url)?;
        st.end()
    }
}

/// How alerts are sent.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Alertmanager base URLs; every one gets every alert (both replicas of an HA pair).
    pub alertmanagers: Vec<String>,
    /// `--web.external-url`, base of `generatorURL` and `report_url`.
    pub external_url: String,
    /// Firing alerts are re-sent this often, with `endsAt` four intervals ahead.
    pub resend_interval: Duration,
    /// Resolved alerts are re-sent for this long (Prometheus: 15 min).
    pub resolved_retention: Duration,
    /// How often deploys are compared with the alerts sent.
    pub tick: Duration,
    /// Most alerts per request (Prometheus: 64).
    pub max_batch: usize,
    /// Most alerts queued per Alertmanager.
    pub queue_capacity: usize,
    /// Bound on one request.
    pub timeout: Duration,
    /// First and longest wait before retrying a failed request.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl AlertConfig {
    pub fn new(alertmanagers: Vec<String>, external_url: &str, resend: Duration) -> AlertConfig {
        let mut ams: Vec<String> = Vec::new();
        for u in alertmanagers {
            let u = u.trim_end_matches('/').to_string();
            if !ams.contains(&u) {
                ams.push(u);
            }
        }
        AlertConfig {
            alertmanagers: ams,
            external_url: external_url.trim_end_matches('/').to_string(),
            resend_interval: resend,
            resolved_retention: Duration::from_secs(15 * 60),
            tick: Duration::from_secs(1),
            max_batch: 64,
            queue_capacity: 10_000,
            timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Where alerts come from and where their timeline events go.
pub trait DeploySource: Send + Sync + 'static {
    /// The deploys that can fire: those being judged, and each service's newest finished
    /// one (O(active deploys), not every deploy ever).
    fn deploys(&self) -> Vec<DeployJson>;
    /// One deploy by id wherever it is kept (the history), to say why its alert resolved
    /// when it is no longer among [`DeploySource::deploys`].
    fn deploy(&self, _id: &str) -> Option<DeployJson> {
        None
    }
    /// Appends an event to a deploy's timeline.
    fn record(&self, deploy_id: &str, event: &str, detail: String);
}

impl DeploySource for crate::app::App {
    fn deploys(&self) -> Vec<DeployJson> {
        self.deploys.list_held()
    }
    fn deploy(&self, id: &str) -> Option<DeployJson> {
        self.deploys.get(id)
    }
    fn record(&self, deploy_id: &str, event: &str, detail: String) {
        self.deploys.record(deploy_id, event, detail, None);
    }
}

/// Whether the deploy's timeline already says this alert fires (its last alert event is
/// the same `alert_firing`): after a restart the alert lifecycle starts empty, and the
/// alerts the restored deploys want are sent again without being logged or recorded anew.
fn already_firing(deploys: &[DeployJson], deploy_id: &str, detail: &str) -> bool {
    deploys
        .iter()
        .find(|d| d.id == deploy_id)
        .and_then(|d| {
            d.timeline
                .iter()
                .rev()
                .find(|e| e.event == "alert_firing" || e.event == "alert_resolved")
        })
        .is_some_and(|e| e.event == "alert_firing" && e.detail == detail)
}

/// Wall-clock Unix milliseconds; replaceable so that tests can run on paused time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The alert lifecycle and one delivery queue per Alertmanager.
pub struct AlertService {
    config: Arc<AlertConfig>,
    clock: Clock,
    targets: Vec<Arc<Target>>,
    lifecycle: Mutex<Lifecycle>,
    stop: Arc<Notify>,
    ticker: Mutex<Option<JoinHandle<()>>>,
    senders: Mutex<Vec<JoinHandle<()>>>,
}

impl AlertService {
    /// Registers the per-Alertmanager counters in `metrics`; nothing runs until [`start`].
    ///
    /// [`start`]: AlertService::start
    pub fn new(config: AlertConfig, metrics: &Metrics) -> AlertService {
        Self::with_clock(config, metrics, Arc::new(crate::now_ms))
    }

    pub fn with_clock(config: AlertConfig, metrics: &Metrics, clock: Clock) -> AlertService {
        let targets = config
            .alertmanagers
            .iter()
            .map(|u| {
                Arc::new(Target::new(
                    u,
                    config.queue_capacity,
                    metrics.alertmanager(u),
                ))
            })
            .collect();
        let lifecycle = Lifecycle::new(
            &config.external_url,
            config.resend_interval.as_millis() as i64,
            config.resolved_retention.as_millis() as i64,
        );
        AlertService {
            config: Arc::new(config),
            clock,
            targets,
            lifecycle: Mutex::new(lifecycle),
            stop: Arc::new(Notify::new()),
            ticker: Mutex::new(None),
            senders: Mutex::new(Vec::new()),
        }
    }

    pub fn alertmanagers(&self) -> &[String] {
        &self.config.alertmanagers
    }

    /// Alerts queued for `url`, not yet delivered.
    pub fn queued(&self, url: &str) -> Option<usize> {
        self.targets
            .iter()
            .find(|t| t.url == url.trim_end_matches('/'))
            .map(|t| t.queued())
    }

    /// The alerts firing now, for `deploywatch_deploy_alert_firing`: O(deploys held).
    pub fn firing(&self) -> Vec<FiringAlert> {
        let lifecycle = self.lifecycle.lock();
        let mut out: Vec<FiringAlert> = lifecycle
            .firing_alerts()
            .map(|a| {
                let label = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
                FiringAlert {
                    service: label("service"),
                    version: label("version"),
                    deploy_id: label("deploy_id"),
                    severity: label("severity"),
                    action: label("action"),
                }
            })
            .collect();
        drop(lifecycle);
        out.sort();
        out
    }

    /// Spawns the lifecycle task and one sender per Alertmanager. Without any Alertmanager
    /// the lifecycle still runs, for [`AlertService::firing`], and sends nothing.
    pub fn start(self: &Arc<Self>, source: Arc<dyn DeploySource>) {
        if self.targets.is_empty() {
            tracing::info!("No Alertmanager configured (--alertmanager.url, alerting.alertmanagers); verdicts are not sent as alerts, only exported as deploywatch_deploy_alert_firing.");
        } else {
            tracing::info!(alertmanagers = ?self.config.alertmanagers, resend_interval = ?self.config.resend_interval, "Sending verdicts as alerts.");
        }
        let client = AlertClient::new(self.config.timeout);
        let mut senders = self.senders.lock();
        for t in &self.targets {
            senders.push(tokio::spawn(client::run_sender(
                t.clone(),
                client.clone(),
                self.config.clone(),
            )));
        }
        let me = self.clone();
        *self.ticker.lock() = Some(tokio::spawn(async move {
            loop {
                me.evaluate(&*source);
                tokio::select! {
                    _ = tokio::time::sleep(me.config.tick) => {}
                    _ = me.stop.notified() => return,
                }
            }
        }));
    }

    /// Compares the deploys with the alerts sent and queues what is due. Called by the
    /// lifecycle task every tick, and once more at shutdown. Without Alertmanagers it only
    /// keeps the firing state: nothing is queued, logged or recorded in a timeline (no
    /// alert went anywhere).
    pub fn evaluate(&self, source: &dyn DeploySource) {
        let mut deploys = source.deploys();
        let now = (self.clock)();
        let mut lifecycle = self.lifecycle.lock();
        // Deploys with a firing alert that left the list (finished since): looked up by id.
        for id in lifecycle.firing_deploys() {
            if !deploys.iter().any(|d| d.id == id) {
                deploys.extend(source.deploy(&id));
            }
        }
        let step = lifecycle.step(&deploys, now);
        drop(lifecycle);
        if self.targets.is_empty() {
            return;
        }
        for t in &self.targets {
            t.enqueue(&step.send);
        }
        for e in step.events {
            if e.event == "alert_firing" && already_firing(&deploys, &e.deploy_id, &e.detail) {
                // Restored after a restart: sent again, but not news.
                tracing::debug!(deploy_id = %e.deploy_id, "Alert DeployRegression is still firing after a restart; sending it again.");
                continue;
            }
            if e.event == "alert_firing" {
                tracing::info!(deploy_id = %e.deploy_id, severity = %e.labels["severity"], action = %e.labels["action"], service = %e.labels["service"], "Alert DeployRegression is firing.");
            } else {
                tracing::info!(deploy_id = %e.deploy_id, severity = %e.labels["severity"], action = %e.labels["action"], service = %e.labels["service"], detail = %e.detail, "Alert DeployRegression is resolved.");
            }
            source.record(&e.deploy_id, e.event, e.detail);
        }
    }

    /// At exit: queues the current state once more and delivers what is queued, for at
    /// most `within`; what is left is dropped, counted and logged.
    pub async fn shutdown(&self, source: &dyn DeploySource, within: Duration) {
        let ticker = self.ticker.lock().take();
        if let Some(t) = ticker {
            self.stop.notify_one();
            let _ = t.await;
        }
        if self.targets.is_empty() {
            return;
        }
        self.evaluate(source);
        for t in &self.targets {
            t.drain();
        }
        let handles: Vec<_> = std::mem::take(&mut *self.senders.lock());
        let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
        let all = futures_join(handles);
        if tokio::time::timeout(within, all).await.is_err() {
            for a in aborts {
                a.abort();
            }
        }
        for t in &self.targets {
            let left = t.abandon();
            if left > 0 {
                tracing::error!(alertmanager = %t.url, alerts = left, within = ?within, "Alerts not delivered before exit; Alertmanager was unreachable.");
            }
        }
        tracing::info!("Pending alerts flushed.");
    }
}

/// Awaits every handle (a tiny `join_all`, to avoid a dependency).
async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_serialise_as_alertmanager_v2_wants() {
        let a = Alert {
            labels: [("alertname".to_string(), ALERT_NAME.to_string())].into(),
            annotations: [("summary".to_string(), "s".to_string())].into(),
            starts_at: 1_764_000_000_000,
            ends_at: 1_764_000_240_500,
            generator_url: "http://dw/deploys/x".into(),
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"labels":{"alertname":"DeployRegression"},"annotations":{"summary":"s"},"startsAt":"2025-11-24T16:00:00.000Z","endsAt":"2025-11-24T16:04:00.500Z","generatorURL":"http://dw/deploys/x"}"#
        );
    }

    /// A deploy list that records what is recorded into timelines.
    struct Fixed(Vec<DeployJson>, Mutex<Vec<String>>);

    impl DeploySource for Fixed {
        fn deploys(&self) -> Vec<DeployJson> {
            self.0.clone()
        }
        fn record(&self, deploy_id: &str, event: &str, _detail: String) {
            self.1.lock().push(format!("{deploy_id} {event}"));
        }
    }

    #[test]
    fn without_alertmanagers_alerts_fire_as_state_only() {
        use crate::deploy::{Phase, Verdict};
        let metrics = Metrics::default();
        let svc = AlertService::with_clock(
            AlertConfig::new(vec![], "http://dw:1", Duration::from_secs(60)),
            &metrics,
            Arc::new(|| 1_800_000_000_000),
        );
        let mut d = lifecycle::tests::deploy("d1", Verdict::Pause, Phase::Observing);
        let source = Fixed(vec![d.clone()], Mutex::new(vec![]));
        assert!(svc.firing().is_empty());
        svc.evaluate(&source);
        assert_eq!(
            svc.firing(),
            [FiringAlert {
                service: "checkout".into(),
                version: "v2".into(),
                deploy_id: "d1".into(),
                severity: "critical".into(),
                action: "pause".into(),
            }]
        );
        assert!(
            source.1.lock().is_empty(),
            "no alert went anywhere: nothing for the timeline"
        );
        d.phase = Phase::Done;
        svc.evaluate(&Fixed(vec![d], Mutex::new(vec![])));
        assert!(svc.firing().is_empty(), "resolved once the deploy is done");
    }

    #[test]
    fn alertmanagers_are_deduplicated() {
        let c = AlertConfig::new(
            vec![
                "http://a:9093/".into(),
                "http://a:9093".into(),
                "http://b:9093".into(),
            ],
            "http://dw:10997/",
            Duration::from_secs(60),
        );
        assert_eq!(c.alertmanagers, ["http://a:9093", "http://b:9093"]);
        assert_eq!(c.external_url, "http://dw:10997");
    }
}
