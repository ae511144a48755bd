//! HTTP to one Alertmanager: batches from its queue in, `POST /api/v2/alerts` out. Network
//! errors and 5xx are retried with exponential backoff (the batch goes back to the queue and
//! the retry sends the newest states); a 4xx is the request's own fault and is not retried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::queue::{Batch, Queue};
use super::{Alert, AlertConfig};
use crate::export::AlertmanagerMetrics;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connection refused, reset, timed out: worth retrying.
    #[error("{0}")]
    Network(String),
    /// Alertmanager answered 5xx (or 429): worth retrying.
    #[error("HTTP {status}: {reason}")]
    Server { status: u16, reason: String },
    /// Alertmanager refused the request itself (4xx): retrying would not help.
    #[error("HTTP {status}: {reason}")]
    Rejected { status: u16, reason: String },
    /// The URL cannot be used (e.g. https, which this build does not speak).
    #[error("{0}")]
    Unusable(String),
}

impl SendError {
    pub fn retryable(&self) -> bool {
        matches!(self, SendError::Network(_) | SendError::Server { .. })
    }
}

/// One configured Alertmanager: its queue, counters and the sender's wake-up.
#[derive(Debug)]
pub struct Target {
    /// The base URL, as configured (the `alertmanager` label).
    pub url: String,
    endpoint: String,
    queue: Mutex<Queue>,
    wake: Notify,
    draining: AtomicBool,
    pub metrics: Arc<AlertmanagerMetrics>,
}

impl Target {
    pub fn new(url: &str, capacity: usize, metrics: Arc<AlertmanagerMetrics>) -> Target {
        let base = url.trim_end_matches('/');
        Target {
            url: base.to_string(),
            endpoint: format!("{base}/api/v2/alerts"),
            queue: Mutex::new(Queue::new(capacity)),
            wake: Notify::new(),
            draining: AtomicBool::new(false),
            metrics,
        }
    }

    /// Queues the newest states of `alerts` and wakes the sender.
    pub fn enqueue(&self, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        let (dropped, len) = {
            let mut q = self.queue.lock();
            let dropped: usize = alerts.iter().map(|a| q.upsert(a.clone())).sum();
            (dropped, q.len())
        };
        self.set_len(len);
        if dropped > 0 {
            self.metrics.dropped.inc_by(dropped as u64);
            tracing::error!(
                alertmanager = %self.url,
                dropped,
                queued = len,
                "The alert queue is full; the oldest alerts were dropped. Alertmanager has been unreachable for long, or there are more alerts than the queue holds."
            );
        }
        self.wake.notify_one();
    }

    pub fn queued(&self) -> usize {
        self.queue.lock().len()
    }

    fn set_len(&self, len: usize) {
        self.metrics
            .queue_length
            .store(len as u64, Ordering::Relaxed);
    }

    fn take(&self, max: usize) -> Batch {
        let mut q = self.queue.lock();
        let b = q.take(max);
        self.set_len(q.len());
        b
    }

    fn put_back(&self, batch: Batch) {
        let mut q = self.queue.lock();
        q.put_back(batch);
        self.set_len(q.len());
    }

    /// Tells the sender to deliver what is queued and then stop.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Drops what is still queued (at exit, after the flush deadline); returns how many.
    pub fn abandon(&self) -> usize {
        let n = self.queue.lock().clear();
        self.set_len(0);
        if n > 0 {
            self.metrics.dropped.inc_by(n as u64);
        }
        n
    }
}

/// The HTTP client shared by all senders.
#[derive(Clone)]
pub struct AlertClient {
    http: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

/// Most of an error answer's body kept for the log.
const MAX_REASON_BYTES: usize = 64 << 10;

impl AlertClient {
    pub fn new(timeout: Duration) -> AlertClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        AlertClient { http, timeout }
    }

    /// `POST {endpoint}` with the alerts as JSON; `Ok` on 2xx.
    pub async fn post(&self, endpoint: &str, alerts: &[&Alert]) -> Result<(), SendError> {
        if endpoint.starts_with("https://") {
            return Err(SendError::Unusable(
                "https Alertmanager URLs are not supported by this build; use http:// (e.g. through a sidecar)".into(),
            ));
        }
        let body = serde_json::to_vec(alerts)
            .map_err(|e| SendError::Unusable(format!("encoding alerts: {e}")))?;
        let req = hyper::Request::post(endpoint)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("deploywatch/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Unusable(format!("building the request: {e}")))?;
        let exchange = async {
            let res = self
                .http
                .request(req)
                .await
                .map_err(|e| SendError::Network(describe(&e)))?;
            let status = res.status().as_u16();
            if res.status().is_success() {
                // Read the (small) answer so the connection can be reused.
                let _ = Limited::new(res.into_body(), MAX_REASON_BYTES)
                    .collect()
                    .await;
                return Ok(());
            }
            let reason = match Limited::new(res.into_body(), MAX_REASON_BYTES)
                .collect()
                .await
            {
                Ok(b) => reason(&b.to_bytes()),
                Err(e) => format!("(unreadable answer: {e})"),
            };
            Err(if status >= 500 || status == 429 {
                SendError::Server { status, reason }
            } else {
                SendError::Rejected { status, reason }
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Network(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

/// A legacy-client error with its causes, e.g. "client error (Connect): tcp connect error:
/// Connection refused (os error 111)".
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Alertmanager's reason: `{"message": …}`, a JSON string, or the text, on one line.
fn reason(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
    let r = match &parsed {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) if v.get("message").and_then(|m| m.as_str()).is_some() => {
            v["message"].as_str().unwrap_or_default().to_string()
        }
        _ => text.into_owned(),
    };
    let r = r.split_whitespace().collect::<Vec<_>>().join(" ");
    if r.len() > 512 {
        let mut cut = 512;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &r[..cut])
    } else {
        r
    }
}

/// Delivers one target's queue until it is drained at shutdown.
pub async fn run_sender(target: Arc<Target>, client: AlertClient, config: Arc<AlertConfig>) {
    let mut backoff = config.backoff_min;
    // Since when deliveries fail, and when that was last logged at warn level.
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut last_warned: Option<tokio::time::Instant> = None;
    let mut attempts_failed: u64 = 0;
    loop {
        let batch = target.take(config.max_batch);
        if batch.is_empty() {
            if target.draining.load(Ordering::Relaxed) {
                return;
            }
            target.wake.notified().await;
            continue;
        }
        let n = batch.len() as u64;
        match client.post(&target.endpoint, &batch.alerts()).await {
            Ok(()) => {
                target.metrics.sent.inc_by(n);
                backoff = config.backoff_min;
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        alertmanager = %target.url,
                        down_for = ?since.elapsed(),
                        failed_attempts = attempts_failed,
                        "Alertmanager is reachable again; its alerts are delivered in their current state."
                    );
                }
                attempts_failed = 0;
                last_warned = None;
                tracing::debug!(alertmanager = %target.url, alerts = n, "Sent alerts.");
            }
            Err(error) if error.retryable() => {
                target.metrics.failed.inc_by(n);
                target.put_back(batch);
                attempts_failed += 1;
                let now = tokio::time::Instant::now();
                failing_since.get_or_insert(now);
                if last_warned.is_none_or(|w| now - w >= Duration::from_secs(60)) {
                    last_warned = Some(now);
                    tracing::warn!(
                        alertmanager = %target.url,
                        %error,
                        queued = target.queued(),
                        retry_in = ?backoff,
                        "Cannot deliver alerts to Alertmanager; they stay queued and are retried with backoff. Check that Alertmanager runs and that --alertmanager.url or alerting.alertmanagers point at it."
                    );
                } else {
                    tracing::debug!(alertmanager = %target.url, %error, retry_in = ?backoff, "Alert delivery failed again.");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.backoff_max);
            }
            Err(error) => {
                target.metrics.failed.inc_by(n);
                target.metrics.dropped.inc_by(n);
                tracing::error!(
                    alertmanager = %target.url,
                    %error,
                    alerts = n,
                    "Alertmanager refused alerts; they are dropped, not retried, since the same request would be refused again. Firing alerts are sent again at the next resend interval."
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_line() {
        assert_eq!(
            reason(b"\"start time must be before end time\"\n"),
            "start time must be before end time"
        );
        assert_eq!(
            reason(br#"{"code":422,"message":"labels in body is required"}"#),
            "labels in body is required"
        );
        assert_eq!(reason(b"bad\nthing  here"), "bad thing here");
    }
}
