//! Durability: the running state out to `--storage.path` (periodic and final snapshots of
//! the store, the registration journal, the deploy history) and back in at start.
//!
//! Only samples and registrations are kept; verdicts, timelines and alert states are their
//! consequences. At start the snapshot's samples are replayed through the same path a push
//! takes (store, then judge) in event-time order, with each registration applied where it
//! arrived, so a deploy resumes with the baseline, verdicts and timeline a run without the
//! crash would have given it (within the tolerance `docs/durability.md` gives). Alerts
//! follow from the restored verdicts: the alert service sends the firing ones again.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::App;
use crate::deploy::journal::{Entry, Journal};
use crate::deploy::Event;
use crate::ingest::batch::Sample;
use crate::ingest::Batch;
use crate::store::ring::RangeIter;
use crate::store::snapshot::{self, SnapshotError, Written};
use crate::store::{IngestScratch, RingBuffer};

/// Samples are replayed in pushes of at most this much event time: Prometheus' cadence
/// (`batch_send_deadline: 5s`). Rule values do not depend on push boundaries, but which
/// versions are still serving is read from their newest sample at each push, so the replay
/// advances it as the live pushes did.
const REPLAY_WINDOW_MS: i64 = 5_000;
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
}

impl App {
    /// Sweeps expired series and forgets idle services' deploys, then writes a snapshot and
    /// compacts the journal. One at a time.
    pub fn snapshot(&self) -> Result<Written, SnapshotError> {
        let _one = self.snapshot_lock.lock();
        let started = Instant::now();
        let swept = self.store.sweep();
        self.metrics.series_removed.inc_by(swept as u64);
        self.deploys
            .forget_idle(&self.store, self.store.config().retention_ms);
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
                tracing::debug!(series = w.series, bytes = w.bytes, swept, took = ?started.elapsed(), "Snapshot written.");
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
        out.snapshot_written_at = (state.written_at > 0).then_some(state.written_at);
        out.samples = self.replay(series, entries);
        for (id, e) in state.events {
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
        tracing::info!(
            series = out.series,
            samples = out.samples,
            registrations = out.registrations,
            corrupt = out.corrupt,
            snapshot_written_at = ?out.snapshot_written_at,
            took = ?started.elapsed(),
            "State restored."
        );
        out
    }

    /// Feeds restored series through the store and the judge in event-time order, applying
    /// each registration before the first push past the moment it arrived. Returns the
    /// samples replayed.
    fn replay(&self, series: Vec<(Vec<u8>, RingBuffer)>, mut entries: Vec<Entry>) -> u64 {
        entries.sort_by_key(|e| e.received_at);
        let mut regs: VecDeque<Entry> = entries.into();
        let mut cursors: Vec<Cursor<'_>> = series
            .iter()
            .map(|(labels, ring)| (labels.as_slice(), ring.iter().peekable()))
            .collect();
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
            match self.store.ingest(batch, &mut scratch) {
                Ok(o) => {
                    *replayed += o.samples_appended;
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
        let mut next = earliest(&mut cursors);
        while let Some(t) = next {
            // Registrations that arrived before the next sample go first; the push that
            // follows ends where the next registration arrived, so every registration sees
            // exactly the samples it saw live.
            while regs.front().is_some_and(|e| e.received_at < t) {
                let e = regs.pop_front().expect("peeked");
                self.deploys.replay_registration(&self.store, e);
            }
            let mut w_end = (t.div_euclid(REPLAY_WINDOW_MS) + 1) * REPLAY_WINDOW_MS;
            if let Some(e) = regs.front() {
                w_end = w_end.min(e.received_at + 1);
            }
            for (labels, it) in cursors.iter_mut() {
                samples.clear();
                while let Some(&(ts, v)) = it.peek() {
                    if ts >= w_end {
                        break;
                    }
                    samples.push(Sample { ts, value: v });
                    it.next();
                }
                if !samples.is_empty() {
                    batch.push_encoded(labels, &samples);
                    if batch.series.len() >= REPLAY_BATCH_SERIES {
                        ingest(&mut batch, &mut touched, &mut replayed);
                    }
                }
            }
            ingest(&mut batch, &mut touched, &mut replayed);
            self.deploys.on_push(&self.store, &touched);
            touched.clear();
            next = earliest(&mut cursors);
        }
        for e in regs {
            self.deploys.replay_registration(&self.store, e);
        }
        replayed
    }
}

type Cursor<'a> = (&'a [u8], std::iter::Peekable<RangeIter<'a>>);

/// The oldest sample not replayed yet.
fn earliest(cursors: &mut [Cursor<'_>]) -> Option<i64> {
    cursors
        .iter_mut()
        .filter_map(|(_, it)| it.peek().map(|s| s.0))
        .min()
}
