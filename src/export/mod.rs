//! Tell the world, as metrics: counters bumped by the other modules in, Prometheus text
//! exposition out. State such as active series, verdicts and firing alerts is read from its
//! owner at scrape time ([`deploys`]), not mirrored into gauges.

pub mod deploys;
pub mod text;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use deploys::FiringAlert;
pub use text::{TextEncoder, CONTENT_TYPE};

use crate::ingest::Protocol;
use crate::store::IngestOutcome;

/// A counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc_by(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram over fixed bucket bounds, in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Latency buckets from 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the `_bucket`, `_sum` and `_count` series (family header written by the caller).
    pub fn encode(&self, e: &mut TextEncoder, name: &str, labels: &[(&str, &str)]) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        let les: Vec<String> = self.bounds.iter().map(f64::to_string).collect();
        let count = self.count.load(Ordering::Relaxed);
        for (i, le) in les.iter().map(String::as_str).chain(["+Inf"]).enumerate() {
            cumulative = match self.counts.get(i) {
                Some(c) => cumulative + c.load(Ordering::Relaxed),
                None => count,
            };
            let mut ls: Vec<(&str, &str)> = labels.to_vec();
            ls.push(("le", le));
            e.sample(&bucket, &ls, cumulative as f64);
        }
        e.sample(
            &format!("{name}_sum"),
            labels,
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        e.sample(&format!("{name}_count"), labels, count as f64);
    }
}

/// Alert delivery to one Alertmanager, bumped by `alert`.
#[derive(Debug, Default)]
pub struct AlertmanagerMetrics {
    /// Alerts Alertmanager accepted.
    pub sent: Counter,
    /// Alerts in requests that failed (each attempt counts).
    pub failed: Counter,
    /// Alerts given up: refused with a 4xx, queue overflow, undelivered at exit.
    pub dropped: Counter,
    /// Alerts waiting in the queue (a gauge).
    pub queue_length: AtomicU64,
}

/// Snapshot and restore counters.
#[derive(Debug, Default)]
pub struct StorageMetrics {
    pub snapshots_ok: Counter,
    pub snapshots_failed: Counter,
    /// Snapshots found corrupt or truncated at start (and skipped).
    pub snapshots_corrupt: Counter,
    pub last_snapshot_ms: AtomicU64,
    pub last_snapshot_bytes: AtomicU64,
    pub last_snapshot_duration_us: AtomicU64,
    /// What the start-up restore replayed.
    pub restored_series: AtomicU64,
    pub restored_samples: AtomicU64,
    /// Samples of the snapshot not replayed (hostile or damaged, see `app::durable`).
    pub restored_skipped_samples: AtomicU64,
}

/// The gates rollout controllers call, as counted.
pub const GATE_ENDPOINTS: [&str; 3] = ["/api/v1/verdict", "/api/v1/gate", "/api/v1/rollback-hook"];
/// What a gate answered on: the deploy's verdict; `invalid` for a refused request,
/// `unknown_service` for a service never seen under `gates.unknown_service: refuse`.
pub const GATE_ANSWERS: [&str; 7] = [
    "pending",
    "pass",
    "warn",
    "pause",
    "rollback",
    "invalid",
    "unknown_service",
];

/// Gate calls by endpoint and answer, bumped by `web::gates` (the timeline records only
/// answers that changed).
#[derive(Debug, Default)]
pub struct GateMetrics {
    pub requests: [[Counter; GATE_ANSWERS.len()]; GATE_ENDPOINTS.len()],
}

impl GateMetrics {
    /// Counts one call; unknown names are not counted.
    pub fn count(&self, endpoint: &str, answer: &str) {
        let e = GATE_ENDPOINTS.iter().position(|x| *x == endpoint);
        let a = GATE_ANSWERS.iter().position(|x| *x == answer);
        if let (Some(e), Some(a)) = (e, a) {
            self.requests[e][a].inc();
        }
    }

    fn encode(&self, e: &mut TextEncoder) {
        let name = "deploywatch_gate_requests_total";
        e.family(
            name,
            "counter",
            "Calls of the rollout gates, by endpoint and the verdict answered on (invalid: refused; unknown_service: a service never seen, refused).",
        );
        for (i, endpoint) in GATE_ENDPOINTS.iter().enumerate() {
            for (j, answer) in GATE_ANSWERS.iter().enumerate() {
                let labels = [("endpoint", *endpoint), ("answer", *answer)];
                e.sample(name, &labels, self.requests[i][j].get() as f64);
            }
        }
    }
}

/// Why remote-write requests were refused, as counted.
pub const REJECT_REASONS: [&str; 8] = [
    "malformed",
    "invalid_labels",
    "limit",
    "series_limit",
    "out_of_bounds",
    "too_large",
    "unsupported_media_type",
    "overloaded",
];

/// HTTP status classes of remote-write answers, as counted.
pub const WRITE_CODES: [u16; 5] = [204, 400, 413, 415, 503];

/// The process' own counters.
#[derive(Debug)]
pub struct Metrics {
    /// `[protocol][code]`: requests answered, by protocol (v1, v2) and status.
    pub write_requests: [[Counter; WRITE_CODES.len()]; 2],
    /// Refused (or, for `series_limit`, partly stored) requests by reason.
    pub write_rejected: [Counter; REJECT_REASONS.len()],
    pub write_duration: Histogram,
    /// Judging time per push: from stored samples to updated verdicts.
    pub evaluation: Histogram,
    pub write_bytes: Counter,
    pub samples_appended: Counter,
    pub samples_duplicate: Counter,
    pub samples_out_of_order: Counter,
    pub samples_series_limit: Counter,
    /// Samples refused by the time bounds (`limits.max_time_ahead`, retention).
    pub samples_too_far_in_future: Counter,
    pub samples_too_old: Counter,
    /// ±Inf and NaN values (not stale markers): accepted, not stored.
    pub samples_non_finite: Counter,
    pub histograms_appended: Counter,
    pub histograms_duplicate: Counter,
    pub histograms_out_of_order: Counter,
    pub exemplars_dropped: Counter,
    pub metadata_received: Counter,
    pub stale_markers: Counter,
    pub series_created: Counter,
    pub series_over_limit: Counter,
    pub reloads_ok: Counter,
    pub reloads_failed: Counter,
    pub last_reload_ok: AtomicU64,
    pub last_reload_success_ms: AtomicU64,
    /// Snapshots and restores (`app::durable`).
    pub storage: StorageMetrics,
    /// Series swept after retention.
    pub series_removed: Counter,
    /// Services and versions forgotten after the retention (`Store::sweep`).
    pub services_forgotten: Counter,
    pub versions_forgotten: Counter,
    /// Per Alertmanager URL, in configuration order.
    pub alertmanagers: parking_lot::RwLock<Vec<(String, Arc<AlertmanagerMetrics>)>>,
    /// Gate calls (`web::gates`).
    pub gates: GateMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            write_requests: Default::default(),
            write_rejected: Default::default(),
            write_duration: Histogram::new(LATENCY_BUCKETS),
            evaluation: Histogram::new(LATENCY_BUCKETS),
            write_bytes: Counter::default(),
            samples_appended: Counter::default(),
            samples_duplicate: Counter::default(),
            samples_out_of_order: Counter::default(),
            samples_series_limit: Counter::default(),
            samples_too_far_in_future: Counter::default(),
            samples_too_old: Counter::default(),
            samples_non_finite: Counter::default(),
            histograms_appended: Counter::default(),
            histograms_duplicate: Counter::default(),
            histograms_out_of_order: Counter::default(),
            exemplars_dropped: Counter::default(),
            metadata_received: Counter::default(),
            stale_markers: Counter::default(),
            series_created: Counter::default(),
            series_over_limit: Counter::default(),
            reloads_ok: Counter::default(),
            reloads_failed: Counter::default(),
            last_reload_ok: AtomicU64::new(1),
            last_reload_success_ms: AtomicU64::new(0),
            storage: StorageMetrics::default(),
            series_removed: Counter::default(),
            services_forgotten: Counter::default(),
            versions_forgotten: Counter::default(),
            alertmanagers: Default::default(),
            gates: GateMetrics::default(),
        }
    }
}

impl Metrics {
    /// The alert counters of the Alertmanager at `url` (created on first use).
    pub fn alertmanager(&self, url: &str) -> Arc<AlertmanagerMetrics> {
        if let Some((_, m)) = self.alertmanagers.read().iter().find(|(u, _)| u == url) {
            return m.clone();
        }
        let mut all = self.alertmanagers.write();
        if let Some((_, m)) = all.iter().find(|(u, _)| u == url) {
            return m.clone();
        }
        let m = Arc::new(AlertmanagerMetrics::default());
        all.push((url.to_string(), m.clone()));
        m
    }

    fn encode_alerts(&self, e: &mut TextEncoder) {
        let ams = self.alertmanagers.read();
        e.single(
            "deploywatch_alertmanagers",
            "gauge",
            "Alertmanagers alerts are sent to.",
            ams.len() as f64,
        );
        type Get = fn(&AlertmanagerMetrics) -> f64;
        let families: [(&str, &str, &str, Get); 4] = [
            ("deploywatch_alerts_sent_total", "counter", "Alerts Alertmanager accepted, per Alertmanager.", |m| m.sent.get() as f64),
            ("deploywatch_alerts_failed_total", "counter", "Alerts in requests to Alertmanager that failed (network error or non-2xx; every attempt counts). Network errors and 5xx are retried.", |m| m.failed.get() as f64),
            ("deploywatch_alerts_dropped_total", "counter", "Alerts given up without delivery: refused by Alertmanager with a 4xx, dropped from a full queue, or undelivered at exit.", |m| m.dropped.get() as f64),
            ("deploywatch_alerts_queue_length", "gauge", "Alerts waiting to be sent, per Alertmanager (the newest state of each alert).", |m| m.queue_length.load(Ordering::Relaxed) as f64),
        ];
        for (name, kind, help, get) in families {
            e.family(name, kind, help);
            for (url, m) in ams.iter() {
                e.sample(name, &[("alertmanager", url)], get(m));
            }
        }
    }

    /// Counts a refused remote-write request by its reason (one of [`REJECT_REASONS`]).
    pub fn write_rejected(&self, reason: &str) {
        if let Some(i) = REJECT_REASONS.iter().position(|r| *r == reason) {
            self.write_rejected[i].inc();
        }
    }

    /// Counts one answered remote-write request.
    pub fn write_answered(&self, protocol: Option<Protocol>, code: u16, took: Duration) {
        let p = match protocol {
            Some(Protocol::V2) => 1,
            _ => 0,
        };
        if let Some(c) = WRITE_CODES.iter().position(|&k| k == code) {
            self.write_requests[p][c].inc();
        }
        self.write_duration.observe(took);
    }

    /// Counts what a push did to the store.
    pub fn ingested(&self, o: &IngestOutcome, extras: &crate::ingest::Extras) {
        self.samples_appended.inc_by(o.samples_appended);
        self.samples_duplicate.inc_by(o.duplicates);
        self.samples_out_of_order.inc_by(o.out_of_order);
        self.samples_series_limit.inc_by(o.samples_over_limit);
        self.samples_too_far_in_future.inc_by(o.too_far_in_future);
        self.samples_too_old.inc_by(o.too_old);
        self.samples_non_finite.inc_by(o.non_finite);
        self.stale_markers.inc_by(o.stale_markers);
        self.series_created.inc_by(o.series_created);
        self.series_over_limit.inc_by(o.series_over_limit);
        self.histograms_appended.inc_by(o.histograms_appended);
        self.histograms_duplicate.inc_by(o.histogram_duplicates);
        self.histograms_out_of_order
            .inc_by(o.histograms_out_of_order);
        self.exemplars_dropped.inc_by(extras.exemplars);
        self.metadata_received.inc_by(extras.metadata);
    }

    /// Writes the counters as text exposition.
    pub fn encode(&self, e: &mut TextEncoder) {
        e.family(
            "deploywatch_build_info",
            "gauge",
            "A metric with a constant '1' value labelled by the version deploywatch was built from.",
        );
        e.sample(
            "deploywatch_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );

        e.family(
            "deploywatch_ingest_requests_total",
            "counter",
            "Remote-write requests answered, by protocol and HTTP status code.",
        );
        for (p, proto) in ["1.0", "2.0"].iter().enumerate() {
            for (c, code) in WRITE_CODES.iter().enumerate() {
                e.sample(
                    "deploywatch_ingest_requests_total",
                    &[("protocol", proto), ("code", &code.to_string())],
                    self.write_requests[p][c].get() as f64,
                );
            }
        }
        e.family(
            "deploywatch_ingest_rejected_requests_total",
            "counter",
            "Remote-write requests refused, by reason: malformed (snappy, protobuf), invalid_labels, limit (a per-request or per-series limit: 400), too_large (413), unsupported_media_type (415), overloaded (503); series_limit: new series refused by a series limit, out_of_bounds: samples refused by their timestamp, the rest of the request stored in both (400).",
        );
        for (i, reason) in REJECT_REASONS.iter().enumerate() {
            e.sample(
                "deploywatch_ingest_rejected_requests_total",
                &[("reason", reason)],
                self.write_rejected[i].get() as f64,
            );
        }
        e.family(
            "deploywatch_ingest_request_duration_seconds",
            "histogram",
            "Time from a remote-write request's body being read to its answer, verdicts included.",
        );
        self.write_duration
            .encode(e, "deploywatch_ingest_request_duration_seconds", &[]);
        e.family(
            "deploywatch_evaluation_duration_seconds",
            "histogram",
            "Time to judge the deploys a push touched, after its samples are stored (push-to-verdict).",
        );
        self.evaluation
            .encode(e, "deploywatch_evaluation_duration_seconds", &[]);
        e.single(
            "deploywatch_ingest_received_bytes_total",
            "counter",
            "Compressed remote-write body bytes received.",
            self.write_bytes.get() as f64,
        );
        e.family(
            "deploywatch_ingest_samples_total",
            "counter",
            "Float samples received in accepted requests, by outcome: appended, or dropped as duplicate (a retried push), out_of_order, series_limit, non_finite (±Inf, NaN other than the stale marker: accepted, not stored), or refused by their timestamp as too_far_in_future (limits.max_time_ahead) or too_old (before their service's retention window, or the Unix epoch).",
        );
        for (outcome, c) in [
            ("appended", &self.samples_appended),
            ("duplicate", &self.samples_duplicate),
            ("out_of_order", &self.samples_out_of_order),
            ("series_limit", &self.samples_series_limit),
            ("non_finite", &self.samples_non_finite),
            ("too_far_in_future", &self.samples_too_far_in_future),
            ("too_old", &self.samples_too_old),
        ] {
            e.sample(
                "deploywatch_ingest_samples_total",
                &[("outcome", outcome)],
                c.get() as f64,
            );
        }
        e.family(
            "deploywatch_ingest_histogram_samples_total",
            "counter",
            "Native histogram samples received in accepted requests, by outcome: appended, or dropped as duplicate (a retried push) or out_of_order. Those refused by a limit or their timestamp count in deploywatch_ingest_samples_total.",
        );
        for (outcome, c) in [
            ("appended", &self.histograms_appended),
            ("duplicate", &self.histograms_duplicate),
            ("out_of_order", &self.histograms_out_of_order),
        ] {
            e.sample(
                "deploywatch_ingest_histogram_samples_total",
                &[("outcome", outcome)],
                c.get() as f64,
            );
        }
        e.family(
            "deploywatch_ingest_dropped_total",
            "counter",
            "Data received but not kept, by kind: exemplars.",
        );
        e.sample(
            "deploywatch_ingest_dropped_total",
            &[("kind", "exemplar")],
            self.exemplars_dropped.get() as f64,
        );
        e.single(
            "deploywatch_ingest_metadata_total",
            "counter",
            "Metric metadata entries received.",
            self.metadata_received.get() as f64,
        );
        e.single(
            "deploywatch_ingest_stale_markers_total",
            "counter",
            "Prometheus staleness markers received (a target went away).",
            self.stale_markers.get() as f64,
        );
        e.single(
            "deploywatch_store_series_created_total",
            "counter",
            "Series created in the store.",
            self.series_created.get() as f64,
        );
        e.single(
            "deploywatch_store_series_rejected_total",
            "counter",
            "New series refused by limits.max_active_series or limits.max_series_per_service.",
            self.series_over_limit.get() as f64,
        );
        e.family(
            "deploywatch_config_reloads_total",
            "counter",
            "Configuration and rule reloads, by outcome.",
        );
        e.sample(
            "deploywatch_config_reloads_total",
            &[("outcome", "success")],
            self.reloads_ok.get() as f64,
        );
        e.sample(
            "deploywatch_config_reloads_total",
            &[("outcome", "failure")],
            self.reloads_failed.get() as f64,
        );
        e.single(
            "deploywatch_config_last_reload_successful",
            "gauge",
            "Whether the last configuration reload attempt was successful.",
            self.last_reload_ok.load(Ordering::Relaxed) as f64,
        );
        e.single(
            "deploywatch_config_last_reload_success_timestamp_seconds",
            "gauge",
            "Timestamp of the last successful configuration reload.",
            self.last_reload_success_ms.load(Ordering::Relaxed) as f64 / 1e3,
        );
        e.single(
            "deploywatch_store_series_removed_total",
            "counter",
            "Series dropped from the store after no sample for the retention (event time).",
            self.series_removed.get() as f64,
        );
        e.single(
            "deploywatch_store_services_forgotten_total",
            "counter",
            "Services forgotten with their series and versions: no sample for the retention (behind the store's newest sample) and none received for a whole snapshot interval.",
            self.services_forgotten.get() as f64,
        );
        e.single(
            "deploywatch_store_versions_forgotten_total",
            "counter",
            "Versions forgotten: left without a series after the retention, or of a forgotten service.",
            self.versions_forgotten.get() as f64,
        );
        let st = &self.storage;
        e.family(
            "deploywatch_snapshots_total",
            "counter",
            "State snapshots written to --storage.path, by outcome.",
        );
        e.sample(
            "deploywatch_snapshots_total",
            &[("outcome", "success")],
            st.snapshots_ok.get() as f64,
        );
        e.sample(
            "deploywatch_snapshots_total",
            &[("outcome", "failure")],
            st.snapshots_failed.get() as f64,
        );
        e.single(
            "deploywatch_snapshot_corrupt_total",
            "counter",
            "Snapshots found corrupt or truncated at start (checksums); each was skipped and moved aside.",
            st.snapshots_corrupt.get() as f64,
        );
        e.single(
            "deploywatch_snapshot_last_success_timestamp_seconds",
            "gauge",
            "Wall-clock time of the last snapshot written; samples received after it are lost in a crash.",
            st.last_snapshot_ms.load(Ordering::Relaxed) as f64 / 1e3,
        );
        e.single(
            "deploywatch_snapshot_last_size_bytes",
            "gauge",
            "Size of the last snapshot written.",
            st.last_snapshot_bytes.load(Ordering::Relaxed) as f64,
        );
        e.single(
            "deploywatch_snapshot_last_duration_seconds",
            "gauge",
            "Time the last snapshot took to write.",
            st.last_snapshot_duration_us.load(Ordering::Relaxed) as f64 / 1e6,
        );
        e.single(
            "deploywatch_restored_series",
            "gauge",
            "Series read back from the snapshot at start.",
            st.restored_series.load(Ordering::Relaxed) as f64,
        );
        e.single(
            "deploywatch_restored_samples",
            "gauge",
            "Samples replayed from the snapshot at start.",
            st.restored_samples.load(Ordering::Relaxed) as f64,
        );
        e.single(
            "deploywatch_restored_skipped_samples",
            "gauge",
            "Samples of the snapshot not replayed at start: outside the time bounds of a push (ahead of the clock by more than limits.max_time_ahead, at or before the Unix epoch, before their service's retention window), non-finite, duplicate, or of series with invalid labels.",
            st.restored_skipped_samples.load(Ordering::Relaxed) as f64,
        );
        self.encode_alerts(e);
        self.gates.encode(e);
    }
}

/// Writes `process_*` metrics read from /proc, as Prometheus' client libraries do.
pub fn encode_process(e: &mut TextEncoder, start_time_secs: f64) {
    if let Some((cpu, rss)) = process_usage() {
        e.single(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu,
        );
        e.single(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss,
        );
    }
    e.single(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        start_time_secs,
    );
}

/// CPU seconds and resident bytes of this process, from /proc/self (Linux only).
pub fn process_usage() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ, fixed at 100 on Linux for /proc.
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
    let rss_pages: f64 = f.get(21)?.parse().ok()?;
    Some((cpu, rss_pages * 4096.0))
}
