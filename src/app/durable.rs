//! Durability: the running state out to `--storage.path` (periodic and final snapshots of
//! the store, the registration journal, the deploy history) and back in at start.
//!
//! Only samples and registrations are kept; verdicts, timelines and alert states are their
//! consequences. At start the snapshot's samples are replayed through the same path a push
//! takes (store, then judge) in event-time order, with each registration applied where it
//! arrived, so a deploy resumes with the baseline, verdicts and timeline a run without the
//! crash would have given it (within the tolerance `docs/durability.md` gives). Alerts
//! follow from the restored verdicts: the alert service sends the firing ones again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::App;
use crate::deploy::journal::{Entry, Journal};
use crate::deploy::Event;
use crate::ingest::batch::Sample;
use crate::ingest::{Batch, DecodeLimits};
use crate::store::hist::HistCursor;
use crate::store::ring::RangeIter;
use crate::store::snapshot::{self, SnapshotError, Written};
use crate::store::{HistRing, IngestScratch, NativeHistogram, RingBuffer, TimeBounds};

/// Samples are replayed in pushes of at most this much event time: Prometheus' cadence
/// (`batch_send_deadline: 5s`). Rule values do not depend on push boundaries, but which
/// versions are still serving is read from their newest sample at each push, so the replay
/// advances it as the live pushes did.
const REPLAY_WINDOW_MS: i64 = 5_000;
/// How long a snapshot waits for the deploy history's queued records to be on disk.
const HISTORY_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Series per replayed push at most.
const REPLAY_BATCH_SERIES: usize = 20_000;

/// What the snapshot keeps beside the samples.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Wall-clock Unix ms the snapshot was taken.
    written_at: i64,
    /// Timeline events other modules recorded (alerts sent, gate answers), by deploy id.
    events: Vec<(String, Event)>,
}

/// What the start-up restore found and did.
#[derive(Debug, Default)]
pub struct Restored {
    /// Wall-clock time the snapshot used was written.
    pub snapshot_written_at: Option<i64>,
    pub series: usize,
    pub samples: u64,
    pub registrations: usize,
    /// Snapshots found corrupt (and moved aside).
    pub corrupt: usize,
    /// Samples of the snapshot not replayed: outside the time bounds a push is held to (more
    /// than `limits.max_time_ahead` ahead of the clock, at or before the Unix epoch, before
    /// their service's retention window), non-finite, or of series with invalid labels.
    pub skipped_samples: u64,
    /// Series of the snapshot with invalid labels (skipped whole).
    pub skipped_series: usize,
}

/// One restored series as it is replayed: the samples of its ring within `lo..=hi`.
struct Planned<'a> {
    labels: &'a [u8],
    ring: &'a RingBuffer,
    hist: Option<&'a HistRing>,
    lo: i64,
    hi: i64,
}

impl App {
    /// Sweeps expired series and forgets the services and versions not seen for the
    /// retention, and the deploy state of the services forgotten (`Store::sweep_at`,
    /// `Deploys::forget_idle`), then writes a snapshot and compacts the journal: what the
    /// snapshot holds is what is left, so a forgotten service stays forgotten after a
    /// restart. One at a time.
    pub fn snapshot(&self) -> Result<Written, SnapshotError> {
        let _one = self.snapshot_lock.lock();
        let started = Instant::now();
        let swept = self.store.sweep();
        self.metrics.series_removed.inc_by(swept.series as u64);
        self.metrics
            .services_forgotten
            .inc_by(swept.services as u64);
        self.metrics
            .versions_forgotten
            .inc_by(swept.versions as u64);
        let forgot = self
            .deploys
            .forget_idle(&self.store, self.store.config().retention_ms);
        if swept.services > 0 || swept.versions > 0 {
            tracing::info!(
                services = swept.services,
                versions = swept.versions,
                series = swept.series,
                deploys = forgot,
                "Forgot what was not seen for the retention."
            );
        }
        // The deploy history's queued records first: whatever this snapshot holds, the
        // records of the deploys it finished are on disk before it (a crash after it can
        // neither lose them nor judge them again from samples the history never saw).
        if !self.history.flush(HISTORY_FLUSH_TIMEOUT) {
            tracing::warn!(timeout = ?HISTORY_FLUSH_TIMEOUT, pending = self.history.pending(), "The deploy history's writer is behind; snapshotting anyway.");
        }
        let state = State {
            written_at: crate::now_ms(),
            events: self.deploys.external_events(),
        };
        let state = serde_json::to_vec(&state).expect("state serialises");
        let m = &self.metrics.storage;
        match self
            .store
            .write_snapshot(&self.runtime.storage_path, &state)
        {
            Ok(w) => {
                m.snapshots_ok.inc();
                m.last_snapshot_ms
                    .store(crate::now_ms() as u64, Ordering::Relaxed);
                m.last_snapshot_bytes.store(w.bytes, Ordering::Relaxed);
                m.last_snapshot_duration_us
                    .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                self.deploys.compact_journal();
                tracing::debug!(series = w.series, bytes = w.bytes, swept = swept.series, took = ?started.elapsed(), "Snapshot written.");
                Ok(w)
            }
            Err(error) => {
                m.snapshots_failed.inc();
                tracing::error!(%error, "Cannot write the snapshot; the previous one stays.");
                Err(error)
            }
        }
    }

    /// Reads the newest intact snapshot and the registration journal, replays them, and
    /// makes registrations durable from then on. Never fails: what cannot be read is
    /// reported, counted and skipped.
    pub fn restore(&self) -> Restored {
        let started = Instant::now();
        let dir = &self.runtime.storage_path;
        let mut out = Restored::default();
        let (journal, entries) = match Journal::open(dir) {
            Ok(j) => (Some(j.0), j.1),
            Err(error) => {
                tracing::error!(%error, "Cannot open the registration journal; registrations are not durable.");
                (None, Vec::new())
            }
        };
        let mut snap = None;
        for name in [snapshot::FILE_NAME, snapshot::PREV_FILE_NAME] {
            let path = dir.join(name);
            match snapshot::read(&path) {
                Ok(Some(s)) => {
                    snap = Some(s);
                    break;
                }
                Ok(None) => {}
                Err(error) => {
                    out.corrupt += 1;
                    self.metrics.storage.snapshots_corrupt.inc();
                    let aside = snapshot::quarantine(&path);
                    tracing::error!(%error, moved_to = ?aside, "Skipping an unreadable snapshot.");
                }
            }
        }
        let (series, state) = match snap {
            Some(s) => {
                let state: State = serde_json::from_slice(&s.state).unwrap_or_default();
                (s.series, state)
            }
            None => (Vec::new(), State::default()),
        };
        out.series = series.len();
        out.registrations = entries.len();
        // Times from the file are held to the bounds of a push, like its samples.
        let bounds = TimeBounds::live(crate::now_ms(), self.config.load().limits.max_time_ahead);
        let sane = |t: i64| (bounds.oldest..=bounds.newest).contains(&t);
        out.snapshot_written_at = sane(state.written_at).then_some(state.written_at);
        let held: u64 = series
            .iter()
            .map(|(_, r, h)| (r.len() + h.as_ref().map_or(0, |h| h.len())) as u64)
            .sum();
        let (plan, invalid) = self.plan(&series);
        out.skipped_series = invalid;
        // What the judge finds again in the replay was logged when it happened.
        self.deploys.set_replaying(true);
        out.samples = self.replay(plan, entries);
        self.deploys.set_replaying(false);
        out.skipped_samples = held.saturating_sub(out.samples);
        if out.skipped_samples > 0 {
            tracing::warn!(
                skipped_samples = out.skipped_samples,
                skipped_series = out.skipped_series,
                "The snapshot held samples that are not replayed: outside the time bounds of a push (ahead of the clock by more than limits.max_time_ahead, at or before the Unix epoch, or before their service's retention window), non-finite, duplicate, or of series with invalid labels; they were skipped."
            );
        }
        for (id, e) in state.events.into_iter().filter(|(_, e)| sane(e.at)) {
            self.deploys.record(&id, &e.event, e.detail, Some(e.at));
        }
        if out.series > 0 || out.registrations > 0 {
            let when = out
                .snapshot_written_at
                .map(crate::alert::lifecycle::rfc3339)
                .unwrap_or_else(|| "never".into());
            self.deploys.finish_restore(&format!(
                "deploywatch restarted and judged this deploy again from its snapshot of {when} ({} series, {} samples); samples received after it were lost",
                out.series, out.samples
            ));
        }
        if let Some(j) = journal {
            self.deploys.set_journal(j);
        }
        let m = &self.metrics.storage;
        m.restored_series
            .store(out.series as u64, Ordering::Relaxed);
        m.restored_samples.store(out.samples, Ordering::Relaxed);
        m.restored_skipped_samples
            .store(out.skipped_samples, Ordering::Relaxed);
        tracing::info!(
            series = out.series,
            samples = out.samples,
            skipped_samples = out.skipped_samples,
            registrations = out.registrations,
            corrupt = out.corrupt,
            snapshot_written_at = ?out.snapshot_written_at,
            took = ?started.elapsed(),
            "State restored."
        );
        out
    }

    /// What of the restored series is replayed: series whose labels a push could carry,
    /// their samples within the bounds a push received now is held to (a snapshot written by
    /// an older deploywatch may hold a sample from the year 292278994, which would end every
    /// deploy of its service). Returns the plan and how many series were skipped.
    fn plan<'a>(
        &self,
        series: &'a [(Vec<u8>, RingBuffer, Option<HistRing>)],
    ) -> (Vec<Planned<'a>>, usize) {
        let config = self.config.load();
        let bounds = TimeBounds::live(crate::now_ms(), config.limits.max_time_ahead);
        let retention_ms = self.store.config().retention_ms;
        let service_label = &self.store.config().service_label;
        // Labels are checked as a push's are, but not against the limits in force now:
        // those applied when the series was accepted.
        let limits = DecodeLimits {
            max_body_bytes: usize::MAX,
            max_series_per_request: usize::MAX,
            max_labels_per_series: usize::MAX,
            max_label_name_length: usize::MAX,
            max_label_value_length: usize::MAX,
            max_histogram_buckets: usize::MAX,
        };
        let mut batch = Batch::default();
        let mut invalid = 0;
        // Per series: its service, and its newest sample within the bounds.
        let mut found: Vec<(usize, String, Option<i64>)> = Vec::with_capacity(series.len());
        for (i, (labels, ring, hist)) in series.iter().enumerate() {
            if ring.is_empty() && hist.as_ref().is_none_or(|h| h.is_empty()) {
                continue;
            }
            batch.reset(&limits);
            batch.push_encoded(labels, &[]);
            let valid = batch.ensure_labels(0).is_ok()
                && batch
                    .series_labels(&batch.series[0])
                    .all(|(n, v)| std::str::from_utf8(n).is_ok() && std::str::from_utf8(v).is_ok());
            if !valid {
                invalid += 1;
                continue;
            }
            let service = batch
                .series_labels(&batch.series[0])
                .find(|(n, _)| *n == service_label.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            let newest = match ring.last() {
                Some((t, _)) if (bounds.oldest..=bounds.newest).contains(&t) => Some(t),
                _ => ring.range(bounds.oldest, bounds.newest).last().map(|s| s.0),
            };
            let mut scratch = NativeHistogram::default();
            let newest_hist = hist
                .as_ref()
                .and_then(|h| h.at_or_before(bounds.newest, &mut scratch))
                .filter(|t| *t >= bounds.oldest);
            let newest = newest.max(newest_hist);
            found.push((i, service, newest));
        }
        if invalid > 0 {
            tracing::error!(
                series = invalid,
                "The snapshot holds series with invalid labels; they are skipped."
            );
        }
        let mut service_newest: HashMap<&str, i64> = HashMap::new();
        for (_, service, newest) in &found {
            if let Some(t) = *newest {
                let e = service_newest.entry(service.as_str()).or_insert(t);
                *e = (*e).max(t);
            }
        }
        let plan = found
            .iter()
            .filter_map(|(i, service, newest)| {
                (*newest)?;
                let window = service_newest[service.as_str()].saturating_sub(retention_ms);
                let (labels, ring, hist) = &series[*i];
                Some(Planned {
                    labels,
                    ring,
                    hist: hist.as_ref(),
                    lo: bounds.oldest.max(window),
                    hi: bounds.newest,
                })
            })
            .collect();
        (plan, invalid)
    }

    /// Feeds restored series through the store and the judge in event-time order, applying
    /// each registration before the first push past the moment it arrived. Returns the
    /// samples replayed.
    ///
    /// Bounded whatever the snapshot holds: each push takes at least the oldest sample left,
    /// and only the series with samples in its window are visited (a heap orders them by
    /// their next sample), so the work is linear in the samples whatever their times.
    fn replay(&self, plan: Vec<Planned<'_>>, mut entries: Vec<Entry>) -> u64 {
        entries.sort_by_key(|e| e.received_at);
        let mut regs: VecDeque<Entry> = entries.into();
        let mut cursors: Vec<Cursor<'_>> = plan
            .iter()
            .map(|p| {
                (
                    p.labels,
                    p.ring.range(p.lo, p.hi).peekable(),
                    p.hist.map(|h| h.range(p.lo, p.hi)),
                )
            })
            .collect();
        // A series' next sample, float or histogram.
        let next_ts = |(_, it, h): &mut Cursor<'_>| {
            let f = it.peek().map(|s| s.0);
            let h = h.as_ref().and_then(|h| h.current()).map(|(t, _)| t);
            match (f, h) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        // Each series with samples left, by its next sample's time (then snapshot order).
        let mut heap: BinaryHeap<Reverse<(i64, usize)>> = cursors
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| next_ts(c).map(|t| Reverse((t, i))))
            .collect();
        let mut due: Vec<usize> = Vec::new();
        let mut batch = Batch::default();
        let mut scratch = IngestScratch::default();
        let mut samples: Vec<Sample> = Vec::new();
        let mut replayed = 0u64;
        // Services a window's samples reached, with their newest timestamp: judged once the
        // whole window is in, never on part of it.
        let mut touched: Vec<(crate::store::ServiceId, i64)> = Vec::new();
        let mut ingest = |batch: &mut Batch,
                          touched: &mut Vec<(crate::store::ServiceId, i64)>,
                          replayed: &mut u64| {
            if batch.series.is_empty() {
                return;
            }
            // The plan keeps samples within the bounds; the store still drops non-finite
            // values an older deploywatch kept.
            match self.store.ingest(batch, &mut scratch) {
                Ok(o) => {
                    *replayed += o.samples_appended + o.histograms_appended;
                    for (sid, ts) in o.touched {
                        match touched.iter_mut().find(|(id, _)| *id == sid) {
                            Some(e) => e.1 = e.1.max(ts),
                            None => touched.push((sid, ts)),
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "Cannot replay part of the snapshot; skipped.")
                }
            }
            batch.clear();
        };
        while let Some(&Reverse((t, _))) = heap.peek() {
            // Registrations that arrived before the next sample go first; the push that
            // follows ends where the next registration arrived, so every registration sees
            // exactly the samples it saw live.
            while regs.front().is_some_and(|e| e.received_at < t) {
                let e = regs.pop_front().expect("peeked");
                self.deploys.replay_registration(&self.store, e);
            }
            // The window's last millisecond, at or after `t` at every extreme of i64.
            let mut w_last = t
                .div_euclid(REPLAY_WINDOW_MS)
                .saturating_mul(REPLAY_WINDOW_MS)
                .saturating_add(REPLAY_WINDOW_MS - 1);
            if let Some(e) = regs.front() {
                w_last = w_last.min(e.received_at);
            }
            due.clear();
            while let Some(&Reverse((ts, i))) = heap.peek() {
                if ts > w_last {
                    break;
                }
                heap.pop();
                due.push(i);
            }
            // In snapshot order, as the series were created live.
            due.sort_unstable();
            for &i in &due {
                let (labels, it, hist) = &mut cursors[i];
                samples.clear();
                while let Some(&(ts, v)) = it.peek() {
                    if ts > w_last {
                        break;
                    }
                    samples.push(Sample { ts, value: v });
                    it.next();
                }
                batch.push_encoded(labels, &samples);
                if let Some(h) = hist {
                    while let Some((ts, x)) = h.current() {
                        if ts > w_last {
                            break;
                        }
                        batch.push_histogram(x.sample(ts), &x.negative, &x.positive);
                        h.advance();
                    }
                }
                if let Some(t) = next_ts(&mut cursors[i]) {
                    heap.push(Reverse((t, i)));
                }
                if batch.series.len() >= REPLAY_BATCH_SERIES {
                    ingest(&mut batch, &mut touched, &mut replayed);
                }
            }
            ingest(&mut batch, &mut touched, &mut replayed);
            self.deploys.on_push(&self.store, &touched);
            touched.clear();
        }
        for e in regs {
            self.deploys.replay_registration(&self.store, e);
        }
        replayed
    }
}

type Cursor<'a> = (
    &'a [u8],
    std::iter::Peekable<RangeIter<'a>>,
    Option<HistCursor<'a>>,
);
