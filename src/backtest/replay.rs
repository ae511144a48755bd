//! Replay: chunks of read history in, the deploys the judge finds in them out. Samples go
//! through what a live push goes through — a [`Batch`] as the RW 1.0 decoder makes it,
//! `Store::ingest`, `Deploys::on_push` — on a fresh in-memory store (no history log, no
//! alerts), in event-time order, cut into pushes by windows of event time as Prometheus'
//! queue manager sends them.

use prost::Message;

use super::BacktestError;
use crate::config::Config;
use crate::deploy::tracker::Deploys;
use crate::deploy::DeployJson;
use crate::ingest::{Batch, DecodeLimits, Sample};
use crate::proto::prometheus::TimeSeries;
use crate::rules::RuleSet;
use crate::store::{IngestScratch, Store};

/// Push window: Prometheus 2.42 sends at the latest every `batch_send_deadline` (5 s).
pub const DEFAULT_WINDOW_MS: i64 = 5_000;

/// One series of a chunk: its labels as encoded RW 1.0 `Label` fields, its samples in
/// timestamp order.
struct ChunkSeries {
    label_fields: Vec<u8>,
    samples: Vec<Sample>,
}

/// The history of `[start, end)` for the selected series, as read.
pub struct Chunk {
    pub start: i64,
    pub end: i64,
    series: Vec<ChunkSeries>,
}

impl Chunk {
    /// Keeps the samples in `[start, end)`, in timestamp order per series (as Prometheus
    /// returns them; sorted again if not, since the store drops out-of-order samples).
    pub fn from_read(start: i64, end: i64, read: Vec<TimeSeries>) -> Chunk {
        let series = read
            .into_iter()
            .filter_map(|ts| {
                let mut samples: Vec<Sample> = ts
                    .samples
                    .iter()
                    .filter(|s| (start..end).contains(&s.timestamp))
                    .map(|s| Sample {
                        ts: s.timestamp,
                        value: s.value,
                    })
                    .collect();
                if samples.is_empty() {
                    return None;
                }
                if !samples.is_sorted_by_key(|s| s.ts) {
                    samples.sort_by_key(|s| s.ts);
                }
                let label_fields = TimeSeries {
                    labels: ts.labels,
                    ..Default::default()
                }
                .encode_to_vec();
                Some(ChunkSeries {
                    label_fields,
                    samples,
                })
            })
            .collect();
        Chunk { start, end, series }
    }

    pub fn series(&self) -> usize {
        self.series.len()
    }

    pub fn samples(&self) -> u64 {
        self.series.iter().map(|s| s.samples.len() as u64).sum()
    }
}

/// A judge fed with history: deploywatch's store and deploy tracker, nothing else.
pub struct Replay {
    store: Store,
    deploys: Deploys,
    batch: Batch,
    scratch: IngestScratch,
    limits: DecodeLimits,
    window_ms: i64,
    /// Samples pushed, and pushes.
    pub samples: u64,
    pub pushes: u64,
    /// Samples the store did not take (duplicates, out of order, over a limit).
    pub dropped: u64,
    cursors: Vec<usize>,
}

impl Replay {
    pub fn new(config: &Config, rules: RuleSet, window_ms: i64) -> Replay {
        // No external URL: these deploys are nowhere to be linked to.
        let (store, deploys) = crate::app::judge_parts(config, rules, String::new());
        Replay {
            store,
            deploys,
            batch: Batch::default(),
            scratch: IngestScratch::default(),
            limits: DecodeLimits::from(&config.limits),
            window_ms,
            samples: 0,
            pushes: 0,
            dropped: 0,
            cursors: Vec::new(),
        }
    }

    /// Pushes a chunk window by window. Windows are aligned to multiples of the window
    /// length in event time (so a chunk boundary on such a multiple cuts no push in two);
    /// a window without samples is no push.
    pub fn replay(&mut self, chunk: &Chunk) -> Result<(), BacktestError> {
        let w = self.window_ms;
        self.cursors.clear();
        self.cursors.resize(chunk.series.len(), 0);
        let mut t = chunk.start.div_euclid(w) * w;
        while t < chunk.end {
            let until = t + w;
            self.batch.reset(&self.limits);
            // The next sample after this window, to skip empty stretches at once.
            let mut next = i64::MAX;
            for (s, cur) in chunk.series.iter().zip(self.cursors.iter_mut()) {
                let rest = &s.samples[*cur..];
                let n = rest.partition_point(|x| x.ts < until);
                if n > 0 {
                    self.batch.push_encoded(&s.label_fields, &rest[..n]);
                    *cur += n;
                }
                if let Some(x) = s.samples.get(*cur) {
                    next = next.min(x.ts);
                }
            }
            if !self.batch.series.is_empty() {
                self.push()?;
            }
            t = if next == i64::MAX {
                chunk.end
            } else {
                until.max(next.div_euclid(w) * w)
            };
        }
        Ok(())
    }

    /// One push, as `App::push` does it after decoding: store, then judge what it touched.
    fn push(&mut self) -> Result<(), BacktestError> {
        let n = self.batch.sample_count() as u64;
        let outcome = self
            .store
            .ingest(&mut self.batch, &mut self.scratch)
            .map_err(|e| BacktestError::Replay(e.to_string()))?;
        self.deploys.on_push(&self.store, &outcome.touched);
        self.samples += n;
        self.pushes += 1;
        self.dropped += outcome.duplicates + outcome.out_of_order + outcome.samples_over_limit;
        Ok(())
    }

    /// Every deploy found, newest first, as the contract's DEPLOY JSON.
    pub fn deploys(&self) -> Vec<DeployJson> {
        self.deploys.list(None)
    }
}
