//! Replay: chunks of read history in, the deploys the judge finds in them out. Samples go
//! through what a live push goes through — a [`Batch`] as the RW 1.0 decoder makes it,
//! `Store::ingest`, `Deploys::on_push` — on a fresh in-memory store (no history log, no
//! alerts), in event-time order, cut into pushes by windows of event time as Prometheus'
//! queue manager sends them.

use prost::Message;

use super::BacktestError;
use crate::config::Config;
use crate::deploy::tracker::{Deploys, Undeployed};
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
    /// Scratch space of `replay`, reused chunk after chunk.
    runs: Vec<Run>,
    starts: Vec<usize>,
    order: Vec<u32>,
}

/// Samples `from..to` of one series of a chunk, all in one push window.
struct Run {
    window: u32,
    series: u32,
    from: u32,
    to: u32,
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
            runs: Vec::new(),
            starts: Vec::new(),
            order: Vec::new(),
        }
    }

    /// Pushes a chunk window by window. Windows are aligned to multiples of the window
    /// length in event time (so a chunk boundary on such a multiple cuts no push in two);
    /// a window without samples is no push. Within a push the samples are grouped by
    /// series: the store takes a push whole before the judge looks at it, so only the order
    /// of pushes (event time) and of each series' samples matter, as for a live push. The chunk's runs of samples (one series, one
    /// window) are first grouped by window with a counting sort: linear in the samples,
    /// whatever the number of series and windows.
    pub fn replay(&mut self, chunk: &Chunk) -> Result<(), BacktestError> {
        if chunk.end <= chunk.start {
            return Ok(());
        }
        let w = self.window_ms;
        let first = chunk.start.div_euclid(w);
        let windows = ((chunk.end - 1).div_euclid(w) - first + 1) as usize;
        let window_of = |ts: i64| (ts.div_euclid(w) - first) as usize;
        self.runs.clear();
        self.starts.clear();
        self.starts.resize(windows + 1, 0);
        for (i, s) in chunk.series.iter().enumerate() {
            let mut j = 0;
            while j < s.samples.len() {
                let win = window_of(s.samples[j].ts);
                let mut k = j + 1;
                while k < s.samples.len() && window_of(s.samples[k].ts) == win {
                    k += 1;
                }
                self.runs.push(Run {
                    window: win as u32,
                    series: i as u32,
                    from: j as u32,
                    to: k as u32,
                });
                self.starts[win + 1] += 1;
                j = k;
            }
        }
        for i in 1..=windows {
            self.starts[i] += self.starts[i - 1];
        }
        // Place the runs by window, keeping the series order within a window.
        self.order.clear();
        self.order.resize(self.runs.len(), 0);
        let mut next = self.starts.clone();
        for (r, run) in self.runs.iter().enumerate() {
            let slot = &mut next[run.window as usize];
            self.order[*slot] = r as u32;
            *slot += 1;
        }
        for win in 0..windows {
            let (a, b) = (self.starts[win], self.starts[win + 1]);
            if a == b {
                continue;
            }
            self.batch.reset(&self.limits);
            for &r in &self.order[a..b] {
                let run = &self.runs[r as usize];
                let s = &chunk.series[run.series as usize];
                self.batch.push_encoded(
                    &s.label_fields,
                    &s.samples[run.from as usize..run.to as usize],
                );
            }
            self.push()?;
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

    /// Versions serving at or before `from` (event time) were running before the range:
    /// not deploys. Any version that starts serving after it is one.
    pub fn judge_from(&mut self, from: i64) {
        self.deploys.set_running_until(from);
    }

    /// The versions in the history that are not deploys, and why.
    pub fn not_deployed(&self) -> Vec<Undeployed> {
        self.deploys.not_deployed(&self.store)
    }

    /// Every deploy found, newest first, as the contract's DEPLOY JSON.
    pub fn deploys(&self) -> Vec<DeployJson> {
        self.deploys.list(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::prometheus::{Label, Sample as PbSample};

    fn series(name: &str, ts: &[i64]) -> TimeSeries {
        let l = |n: &str, v: &str| Label {
            name: n.into(),
            value: v.into(),
        };
        TimeSeries {
            labels: vec![l("__name__", name), l("job", "a"), l("version", "v1")],
            samples: ts
                .iter()
                .map(|&t| PbSample {
                    value: 1.0,
                    timestamp: t,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_chunk_is_pushed_in_aligned_windows_without_empty_pushes() {
        let t0 = 1_764_000_000_000;
        // Out of the chunk's range: dropped. Unsorted: sorted.
        let read = vec![
            series("x", &[t0 - 1, t0, t0 + 1_000, t0 + 16_000, t0 + 6_000]),
            series("y", &[t0 + 4_999, t0 + 5_000, t0 + 20_000]),
        ];
        let chunk = Chunk::from_read(t0, t0 + 20_000, read);
        assert_eq!((chunk.series(), chunk.samples()), (2, 6));
        let mut r = Replay::new(&Config::embedded(), RuleSet::embedded(), 5_000);
        r.replay(&chunk).unwrap();
        // Windows [t0, +5 s), [+5 s, +10 s), [+15 s, +20 s); none for [+10 s, +15 s).
        assert_eq!((r.pushes, r.samples, r.dropped), (3, 6, 0));
        assert_eq!(
            r.store.service("a").and_then(|s| s.newest()),
            Some(t0 + 16_000)
        );
        // The next chunk continues the same series; a sample already held is a duplicate.
        let next = Chunk::from_read(
            t0 + 16_000,
            t0 + 40_000,
            vec![series("x", &[t0 + 16_000, t0 + 31_000])],
        );
        r.replay(&next).unwrap();
        assert_eq!((r.pushes, r.samples, r.dropped), (5, 8, 1));
        assert!(r.deploys().is_empty());
    }
}
