//! Hold: decoded [`Batch`]es in, per-series ring buffers (floats, native histograms) out,
//! grouped by service and version.
//! A sharded index maps each interned label set to its [`Series`]; a push takes shard read
//! locks to resolve series, write locks only to create new ones, and one uncontended lock
//! per series to append. No global lock on the write path.
//!
//! Nothing is kept forever: [`Store::sweep`] drops series, versions and whole services not
//! seen for the retention. A series or a version goes by its service's own event time (its
//! newest sample minus `global.retention`), as a live run and a fast replay of it see the
//! same. A silent service's own "now" stops with it, so a service goes by the store's event
//! time instead — the newest sample of any service, never later than the wall clock — and
//! only once it has also received nothing for a whole sweep interval: a replay of old data
//! beside live services (behind the others by more than the retention, but still being fed)
//! is judged exactly as if it were alone, and a deploywatch that receives nothing at all
//! (Prometheus down) forgets nothing, since its event time stands still. Ids of services,
//! versions and series are not reused (before 2^32 services or versions were created), so
//! what a caller keeps by id (the judge's per-version state) never names a newcomer.

pub mod hist;
mod index;
pub mod labels;
mod prefetch;
pub mod ring;
pub mod snapshot;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::ingest::Batch;
pub use hist::{HistRing, NativeHistogram};
pub use labels::LabelSet;
pub use ring::{Append, RingBuffer};

const SHARDS: usize = 64;

/// How many entries ahead of the one being worked on the write path prefetches its index
/// slot (resolving) and its series (appending): enough to overlap several cache misses,
/// few enough that the lines are still there when their turn comes.
const PREFETCH_AHEAD: usize = 8;

/// Why a decoded batch could not be stored. The batch was not applied at all.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    /// Labels parsed on demand (for a series not known by its raw bytes) were invalid.
    #[error(transparent)]
    Labels(crate::ingest::DecodeError),
    #[error("invalid labels: series {series}: label {what} is not valid UTF-8")]
    InvalidUtf8 { series: usize, what: &'static str },
}

/// The timestamps a push may bring. Samples outside are refused and counted, the others of
/// the push are stored (`CONTRACT.md`, Ingest): a timestamp from the far future (or in micro-
/// or nanoseconds) would move its service's "now" and end its running deploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// The newest timestamp accepted: the wall clock plus `limits.max_time_ahead`.
    pub newest: i64,
    /// `limits.max_time_ahead` in ms, for the answer.
    pub max_ahead_ms: i64,
    /// The oldest timestamp accepted whatever the service.
    pub oldest: i64,
    /// Also refuse samples older than their service's retention window (its newest sample
    /// before the push minus `global.retention`).
    pub service_retention: bool,
}

impl TimeBounds {
    /// Everything but `i64::MIN`, the store's "no timestamp": for callers that replay data
    /// they trust (a backtest reading Prometheus, benchmarks).
    pub const NONE: TimeBounds = TimeBounds {
        newest: i64::MAX,
        max_ahead_ms: i64::MAX,
        oldest: i64::MIN + 1,
        service_retention: false,
    };

    /// The bounds of a push received at wall-clock `now_ms`: at most `max_ahead` ahead of it,
    /// after the Unix epoch (0 and negative timestamps are unset or garbage), and within its
    /// service's retention window.
    pub fn live(now_ms: i64, max_ahead: std::time::Duration) -> TimeBounds {
        let max_ahead_ms = i64::try_from(max_ahead.as_millis()).unwrap_or(i64::MAX);
        TimeBounds {
            newest: now_ms.saturating_add(max_ahead_ms),
            max_ahead_ms,
            oldest: 1,
            service_retention: true,
        }
    }

    /// Why a sample at `ts` is refused whatever its service, if it is.
    #[inline]
    fn check(&self, ts: i64) -> Option<TimeRefusal> {
        if ts > self.newest {
            Some(TimeRefusal::TooFarInFuture)
        } else if ts < self.oldest {
            Some(TimeRefusal::TooOld)
        } else {
            None
        }
    }
}

/// Why a sample was refused by [`TimeBounds`]: counted as
/// `deploywatch_ingest_samples_total{outcome="too_far_in_future"|"too_old"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeRefusal {
    TooFarInFuture,
    TooOld,
}

/// The first sample of a push refused by its [`TimeBounds`], for the answer to the sender.
/// The push's other samples were stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleRefused {
    #[error("series {series}: sample timestamp {ts} is too far in the future: more than {} ahead of the wall clock (limits.max_time_ahead){}", crate::config::format_duration(std::time::Duration::from_millis((*max_ahead_ms).max(0) as u64)), unit_hint(*ts))]
    TooFarInFuture {
        series: String,
        ts: i64,
        max_ahead_ms: i64,
    },
    #[error("series {series}: sample timestamp {ts} is too old: {why}")]
    TooOld {
        series: String,
        ts: i64,
        why: String,
    },
}

/// A hint when a timestamp looks like micro- or nanoseconds (remote write carries ms).
fn unit_hint(ts: i64) -> &'static str {
    // Unix ms pass 1e14 in the year 5138; µs passed it in 1973.
    if ts >= 100_000_000_000_000 {
        " (timestamps are Unix milliseconds; this one looks like micro- or nanoseconds)"
    } else {
        ""
    }
}

/// Id of a service: unique for the life of the process (a service forgotten and seen again
/// gets a new one).
pub type ServiceId = u32;
/// Id of a version: unique across the store for the life of the process.
pub type VersionId = u32;

/// How the store groups series; from the config, fixed at start.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub service_label: String,
    pub version_label: String,
    pub retention_ms: i64,
    pub max_active_series: usize,
    pub max_series_per_service: usize,
    /// Samples kept per series at most, whatever the retention: bounds what one series
    /// written at a high rate can hold. The oldest chunks go first.
    pub max_samples_per_series: usize,
}

/// One series: its labels, where it belongs, and its samples.
///
/// `repr(C)` keeps what an append touches (the lock and the ring's write state, then the
/// service and version ids) at the front of the allocation, next to `Arc`'s counts, and the
/// cold fields (label bytes' pointer, `seq`, `removed`) behind it.
#[repr(C)]
pub struct Series {
    pub data: Mutex<SeriesData>,
    pub service: ServiceId,
    pub version: VersionId,
    pub labels: LabelSet,
    /// Creation order within the service: [`Service::series_since`] hands out series by it.
    pub seq: u64,
    /// Swept out of the index (no sample within retention); holders may still read it.
    removed: AtomicBool,
}

/// The mutable part of a series, behind its own lock.
#[derive(Default)]
pub struct SeriesData {
    pub ring: RingBuffer,
    /// Native histogram samples, for a series that sends them.
    pub hist: Option<Box<HistRing>>,
    /// The newest sample is a Prometheus stale marker: the target went away.
    pub stale: bool,
    /// The sample before the newest: with it, the value at a step boundary just passed is
    /// found without decoding the ring.
    prev: Option<(i64, f64)>,
}

/// A store for unit tests: `job` and `version` labels, an hour's retention, `series` series
/// at most (per service too).
#[cfg(test)]
pub(crate) fn store_for_tests(series: usize) -> Store {
    Store::new(StoreConfig {
        service_label: "job".into(),
        version_label: "version".into(),
        retention_ms: 3_600_000,
        max_active_series: series,
        max_series_per_service: series,
        max_samples_per_series: usize::MAX,
    })
}

impl SeriesData {
    /// The oldest retained sample's timestamp, float or histogram.
    pub fn first_ts(&self) -> Option<i64> {
        let f = self.ring.first_ts();
        let h = self.hist.as_ref().and_then(|h| h.first_ts());
        match (f, h) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The newest sample's timestamp, float or histogram.
    pub fn newest_ts(&self) -> Option<i64> {
        let f = self.ring.last().map(|(t, _)| t);
        let h = self.hist.as_ref().and_then(|h| h.last()).map(|(t, _)| t);
        f.max(h)
    }

    /// The newest sample at or before `t`, if any is retained.
    pub fn at_or_before(&self, t: i64) -> Option<(i64, f64)> {
        let last = self.ring.last()?;
        if last.0 <= t {
            return Some(last);
        }
        match self.prev {
            Some(p) if p.0 <= t => Some(p),
            _ => self.ring.range(i64::MIN, t).last(),
        }
    }
}

/// Prometheus' staleness marker, a NaN with a fixed payload.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

#[inline]
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A service seen in the data: the value of the service label.
pub struct Service {
    pub id: ServiceId,
    pub name: Arc<str>,
    newest: AtomicI64,
    /// In creation order; forgotten versions are taken out.
    versions: RwLock<Vec<Arc<Version>>>,
    /// In creation order (ascending `seq`); swept series are taken out.
    series: RwLock<Vec<Arc<Series>>>,
    /// A push appended to it since the last sweep: it is being fed (see the module docs).
    fed: AtomicBool,
    /// Taken out of the store by a sweep (set under its series list's lock): a push that
    /// found it before must not add a series to it.
    forgotten: AtomicBool,
}

/// A version of a service seen in the data: the value of the version label.
pub struct Version {
    pub id: VersionId,
    pub name: Arc<str>,
    series: AtomicUsize,
    newest: AtomicI64,
    /// Event time of the first sample seen for this version.
    first_seen: AtomicI64,
    /// Taken out of its service by a sweep (set under the service's series list's lock).
    forgotten: AtomicBool,
}

impl Version {
    pub fn series_count(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }
    pub fn newest(&self) -> Option<i64> {
        load_ts(&self.newest)
    }
    pub fn first_seen(&self) -> Option<i64> {
        load_ts(&self.first_seen)
    }
}

impl Service {
    /// The service's "now": the newest sample timestamp seen for it.
    pub fn newest(&self) -> Option<i64> {
        load_ts(&self.newest)
    }
    pub fn versions(&self) -> Vec<Arc<Version>> {
        self.versions.read().clone()
    }
    /// The version `id` of the service, unless it was forgotten.
    pub fn version(&self, id: VersionId) -> Option<Arc<Version>> {
        version_in(&self.versions.read(), id).cloned()
    }
    /// All series of the service (a snapshot of the list).
    pub fn series(&self) -> Vec<Arc<Series>> {
        self.series.read().clone()
    }
    /// Whether every series of `version` ended in a stale marker: Prometheus marks a
    /// target's series stale as soon as the target goes away. False without any series.
    /// Stops at the first live one, without copying the list.
    pub fn version_marked_stale(&self, version: VersionId) -> bool {
        let list = self.series.read();
        let mut of = list.iter().filter(|s| s.version == version).peekable();
        of.peek().is_some() && of.all(|s| s.data.lock().stale)
    }
    pub fn series_count(&self) -> usize {
        self.series.read().len()
    }
    /// Series with `seq >= start`, in creation order: a caller that remembers the last
    /// `seq` it saw gets each new series once, whatever was swept meanwhile.
    pub fn series_since(&self, start: u64) -> Vec<Arc<Series>> {
        let list = self.series.read();
        let from = list.partition_point(|s| s.seq < start);
        list[from..].to_vec()
    }

    /// Runs `f` over the series without cloning the list.
    pub fn for_each_series(&self, mut f: impl FnMut(&Arc<Series>)) {
        for s in self.series.read().iter() {
            f(s);
        }
    }
}

/// The version `id` in a list of a service's versions (as [`Service::versions`] gives
/// them): a service holds a few, so a scan.
pub fn version_in(versions: &[Arc<Version>], id: VersionId) -> Option<&Arc<Version>> {
    versions.iter().find(|v| v.id == id)
}

const NO_TS: i64 = i64::MIN;

fn load_ts(a: &AtomicI64) -> Option<i64> {
    match a.load(Ordering::Relaxed) {
        NO_TS => None,
        t => Some(t),
    }
}

#[derive(Default)]
struct Services {
    by_name: hashbrown::HashMap<Arc<str>, Arc<Service>>,
    by_id: hashbrown::HashMap<ServiceId, Arc<Service>>,
    /// In creation order; forgotten services are taken out.
    list: Vec<Arc<Service>>,
    /// The id of the next service created (wrapping: 2^32 services created in one process
    /// before an id comes back).
    next_id: ServiceId,
}

/// What one [`Store::sweep`] dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Series with no sample within their service's retention window, or of a forgotten
    /// service.
    pub series: usize,
    /// Versions left without a series, and those of the services forgotten.
    pub versions: usize,
    /// Services forgotten: behind the store's event time by more than the retention, and
    /// fed nothing since the sweep before.
    pub services: usize,
}

/// What one push did to the store.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IngestOutcome {
    pub samples_appended: u64,
    /// Native histogram samples appended, and held already (a retried push) or older than
    /// their series' newest (dropped).
    pub histograms_appended: u64,
    pub histogram_duplicates: u64,
    pub histograms_out_of_order: u64,
    /// Same series, same timestamp as already held (a retried push): ignored.
    pub duplicates: u64,
    /// Older than the series' newest sample: dropped.
    pub out_of_order: u64,
    pub stale_markers: u64,
    pub series_created: u64,
    /// New series refused by `max_active_series` / `max_series_per_service`, and their samples.
    pub series_over_limit: u64,
    pub samples_over_limit: u64,
    /// The first limit a new series ran into, for the answer to the sender.
    pub limited_by: Option<SeriesLimit>,
    /// Samples refused by the push's [`TimeBounds`] (the rest of the push is stored).
    pub too_far_in_future: u64,
    pub too_old: u64,
    /// The first of them, in request order.
    pub refused: Option<SampleRefused>,
    /// ±Inf and NaN values other than the stale marker: accepted, never stored, so no
    /// statistic, verdict or JSON field is ever computed from them.
    pub non_finite: u64,
    /// Services that received samples, with the newest timestamp this push brought each.
    pub touched: Vec<(ServiceId, i64)>,
}

/// Why a new label set of a push was not created.
#[derive(Debug, Clone, Copy)]
enum Unstored {
    /// None of its samples may be kept (refused for their time, or non-finite).
    NothingStorable,
    /// Refused by a series limit.
    OverLimit,
    /// All its samples are older than its service's window, which starts here.
    TooOld { window_start: i64 },
}

/// What [`Store::get_or_create`] did with a label set.
enum Created {
    /// Found or created.
    Series,
    /// Refused by a series limit.
    OverLimit,
    /// Refused: all its samples are older than its service's window, which starts here.
    TooOld { window_start: i64 },
}

/// A limit that refused new series.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesLimit {
    Active { limit: usize },
    PerService { service: String, limit: usize },
}

impl std::fmt::Display for SeriesLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeriesLimit::Active { limit } => {
                write!(f, "limits.max_active_series ({limit}) reached")
            }
            SeriesLimit::PerService { service, limit } => write!(
                f,
                "limits.max_series_per_service ({limit}) reached for service {service:?}"
            ),
        }
    }
}

/// Per-worker scratch space for [`Store::ingest`], reused across pushes.
#[derive(Default)]
pub struct IngestScratch {
    /// Canonical label sets built for entries whose raw bytes are not the key, back to back.
    keys: Vec<u8>,
    /// Where each entry's key is: `(in the batch's body?, start, end)`.
    src: Vec<(bool, u32, u32)>,
    hashes: Vec<u64>,
    /// Each entry's fingerprint (the second hash, see `index::Slot`).
    fps: Vec<u64>,
    /// The first entry of the push with the same label set (itself if none before it).
    first: Vec<u32>,
    /// Entries with float samples.
    with_samples: Vec<bool>,
    /// A decoded histogram sample on its way into a ring (its buckets' allocation reused).
    hist: NativeHistogram,
    /// Float samples of each label set in the push, indexed by its first entry.
    group_samples: Vec<u32>,
    /// Per (service, version) touched by this push: oldest and newest appended timestamps.
    newest: Vec<(ServiceId, VersionId, i64, i64)>,
    /// Label sets (by first entry, ascending) of new series that were not created, and why.
    unstored: Vec<(u32, Unstored)>,
    /// Per service this push reached: the oldest timestamp its retention window holds.
    floors: Vec<(ServiceId, i64)>,
    /// Refusals found while preparing (bounds that do not depend on the service).
    too_far_in_future: u64,
    too_old: u64,
    non_finite: u64,
    /// The first refused sample: entry, timestamp, why, and the service's window start.
    first_refused: Option<(usize, i64, TimeRefusal, Option<i64>)>,
}

/// A sample the store keeps: within the push's bounds, and a finite value or a stale marker.
#[inline]
fn storable(bounds: &TimeBounds, s: &crate::ingest::Sample) -> bool {
    bounds.check(s.ts).is_none() && (s.value.is_finite() || is_stale_marker(s.value))
}

/// Appends entry `entry`'s native histogram samples to its series (`keep`: not refused for
/// its time, counting it otherwise), as floats are appended.
#[allow(clippy::too_many_arguments)]
fn append_histograms(
    data: &mut SeriesData,
    batch: &Batch,
    entry: &crate::ingest::SeriesEntry,
    mut keep: impl FnMut(i64) -> bool,
    retention: i64,
    max_samples: usize,
    out: &mut IngestOutcome,
    h: &mut NativeHistogram,
    (newest, oldest): (&mut i64, &mut i64),
) {
    let ring = data.hist.get_or_insert_with(Default::default);
    for s in batch.series_histograms(entry) {
        if !keep(s.ts) {
            continue;
        }
        h.set_from(s, &batch.buckets);
        match ring.push(s.ts, h, retention) {
            Append::Appended => {
                out.histograms_appended += 1;
                let stale = h.is_stale();
                out.stale_markers += stale as u64;
                data.stale = stale;
                *newest = (*newest).max(s.ts);
                *oldest = (*oldest).min(s.ts);
            }
            Append::Duplicate => out.histogram_duplicates += 1,
            Append::OutOfOrder => {
                let mut held = false;
                ring.for_each_in(s.ts, s.ts, |_, _| held = true);
                if held {
                    out.histogram_duplicates += 1
                } else {
                    out.histograms_out_of_order += 1
                }
            }
        }
    }
    if ring.len() > max_samples {
        ring.keep_at_most(max_samples);
    }
}

impl IngestScratch {
    /// Finds every entry's key and hash. Prometheus' raw label bytes are canonical, so they
    /// are the key as they stand (deferred entries); others are encoded. Prometheus repeats a
    /// series in consecutive entries when it has several samples for it: same bytes, same key.
    ///
    fn prepare(&mut self, batch: &Batch, hashers: &Hashers) {
        self.keys.clear();
        self.src.clear();
        self.hashes.clear();
        self.fps.clear();
        self.first.clear();
        self.with_samples.clear();
        self.group_samples.clear();
        self.group_samples.resize(batch.series.len(), 0);
        self.unstored.clear();
        self.newest.clear();
        self.floors.clear();
        self.too_far_in_future = 0;
        self.too_old = 0;
        self.non_finite = 0;
        self.first_refused = None;
        let mut prev: Option<(usize, &[u8])> = None;
        for (i, entry) in batch.series.iter().enumerate() {
            self.with_samples
                .push(!entry.samples.is_empty() || !entry.histograms.is_empty());
            let raw = batch.bytes(entry.raw_labels);
            let n = (entry.samples.len() + entry.histograms.len()) as u32;
            if let Some((p, prev_raw)) = prev {
                if !raw.is_empty() && raw == prev_raw {
                    self.src.push(self.src[p]);
                    self.hashes.push(self.hashes[p]);
                    self.fps.push(self.fps[p]);
                    let f = self.first[p];
                    self.first.push(f);
                    self.group_samples[f as usize] += n;
                    prev = Some((i, raw));
                    continue;
                }
            }
            prev = Some((i, raw));
            self.group_samples[i] = n;
            self.first.push(i as u32);
            if entry.deferred {
                self.src
                    .push((true, entry.raw_labels.0, entry.raw_labels.1));
                self.hashes.push(labels::hash_encoded(&hashers.hash, raw));
                self.fps.push(labels::hash_encoded(&hashers.fp, raw));
            } else {
                self.encode(batch, i, hashers);
            }
        }
    }

    /// Counts the samples of entry `i`, whose label set was not created, by why.
    #[cold]
    fn account_unstored(
        &mut self,
        batch: &Batch,
        i: usize,
        bounds: &TimeBounds,
        why: Unstored,
        out: &mut IngestOutcome,
    ) {
        for s in batch.series_samples(&batch.series[i]) {
            match bounds.check(s.ts) {
                Some(refusal) => self.refuse(i, s.ts, refusal, None),
                None if !s.value.is_finite() && !is_stale_marker(s.value) => self.non_finite += 1,
                None => match why {
                    Unstored::OverLimit => out.samples_over_limit += 1,
                    Unstored::TooOld { window_start } => {
                        self.refuse(i, s.ts, TimeRefusal::TooOld, Some(window_start))
                    }
                    // Every sample is refused or non-finite: not reached.
                    Unstored::NothingStorable => {}
                },
            }
        }
        for h in batch.series_histograms(&batch.series[i]) {
            match bounds.check(h.ts) {
                Some(refusal) => self.refuse(i, h.ts, refusal, None),
                None => match why {
                    Unstored::OverLimit => out.samples_over_limit += 1,
                    Unstored::TooOld { window_start } => {
                        self.refuse(i, h.ts, TimeRefusal::TooOld, Some(window_start))
                    }
                    Unstored::NothingStorable => {}
                },
            }
        }
    }

    /// Counts a sample of an existing series refused for its time (`floor`: where its
    /// service's window starts).
    #[cold]
    fn refuse_out_of_bounds(&mut self, i: usize, ts: i64, bounds: &TimeBounds, floor: i64) {
        match bounds.check(ts) {
            Some(why) => self.refuse(i, ts, why, None),
            None => self.refuse(i, ts, TimeRefusal::TooOld, Some(floor)),
        }
    }

    /// The newest storable timestamp of the label set whose first entry is `i` (its entries
    /// are consecutive). For new series only.
    fn group_newest(&self, batch: &Batch, i: usize, bounds: &TimeBounds) -> i64 {
        let mut newest = NO_TS;
        for j in (i..batch.series.len()).take_while(|&j| self.first[j] as usize == i) {
            for s in batch.series_samples(&batch.series[j]) {
                if storable(bounds, s) {
                    newest = newest.max(s.ts);
                }
            }
            for h in batch.series_histograms(&batch.series[j]) {
                if bounds.check(h.ts).is_none() {
                    newest = newest.max(h.ts);
                }
            }
        }
        newest
    }

    /// The oldest timestamp service `sid`'s retention window holds, read once per push.
    fn floor(&mut self, store: &Store, sid: ServiceId) -> i64 {
        if let Some(&(_, f)) = self.floors.iter().find(|(id, _)| *id == sid) {
            return f;
        }
        let f = store.window_start(sid).unwrap_or(i64::MIN);
        self.floors.push((sid, f));
        f
    }

    /// Counts one refused sample of entry `i`; remembers the first in request order.
    #[cold]
    fn refuse(&mut self, i: usize, ts: i64, why: TimeRefusal, window_start: Option<i64>) {
        match why {
            TimeRefusal::TooFarInFuture => self.too_far_in_future += 1,
            TimeRefusal::TooOld => self.too_old += 1,
        }
        if self.first_refused.is_none_or(|f| i < f.0) {
            self.first_refused = Some((i, ts, why, window_start));
        }
    }

    /// Encodes entry `i`'s parsed labels as its key (its canonical label set).
    fn encode(&mut self, batch: &Batch, i: usize, hashers: &Hashers) {
        let start = self.keys.len();
        labels::encode_pairs(batch.series_labels(&batch.series[i]), &mut self.keys);
        let src = (false, start as u32, self.keys.len() as u32);
        let hash = labels::hash_encoded(&hashers.hash, &self.keys[start..]);
        let fp = labels::hash_encoded(&hashers.fp, &self.keys[start..]);
        if self.src.len() > i {
            self.src[i] = src;
            self.hashes[i] = hash;
            self.fps[i] = fp;
        } else {
            self.src.push(src);
            self.hashes.push(hash);
            self.fps.push(fp);
        }
    }

    /// The key of entry `i` (of its first occurrence in the push).
    fn key<'a>(&'a self, batch: &'a Batch, i: usize) -> &'a [u8] {
        let (in_batch, start, end) = self.src[self.first[i] as usize];
        if in_batch {
            batch.bytes((start, end))
        } else {
            &self.keys[start as usize..end as usize]
        }
    }

    /// Float samples of entry `i`'s label set in the whole push.
    fn group_samples(&self, i: usize) -> u32 {
        self.group_samples[self.first[i] as usize]
    }
}

/// Looks every entry's series up under the held shard guards. Entries without float samples
/// resolve to `None`: an empty series would count against limits and could look like a new
/// version.
fn resolve<'g>(
    guards: &'g [parking_lot::RwLockReadGuard<'_, index::Table>],
    scratch: &IngestScratch,
    refs: &mut Vec<Option<&'g Series>>,
) {
    // First the label sets (each first entry), then every entry from its set's result.
    // Only index slots are read here (no series); the slot of the entry `PREFETCH_AHEAD`
    // further on is asked for before each probe.
    let n = scratch.first.len();
    for i in 0..n {
        if i + PREFETCH_AHEAD < n {
            let h = scratch.hashes[i + PREFETCH_AHEAD];
            guards[h as usize % SHARDS].prefetch(h);
        }
        let found = if scratch.first[i] as usize == i && scratch.group_samples(i) > 0 {
            let (hash, fp) = (scratch.hashes[i], scratch.fps[i]);
            guards[hash as usize % SHARDS].find(hash, fp).map(|s| &**s)
        } else {
            None
        };
        refs.push(found);
    }
    // Backwards, so that a set's result is read before its first entry's is overwritten.
    for i in (0..refs.len()).rev() {
        let f = scratch.first[i] as usize;
        refs[i] = if scratch.with_samples[i] {
            refs[f]
        } else {
            None
        };
    }
}

/// The series index and the services they belong to.
/// The two hashes of a label set's canonical bytes (see `index::Slot`).
struct Hashers {
    hash: ahash::RandomState,
    fp: ahash::RandomState,
}

impl Hashers {
    fn of(&self, key: &[u8]) -> (u64, u64) {
        (
            labels::hash_encoded(&self.hash, key),
            labels::hash_encoded(&self.fp, key),
        )
    }
}

pub struct Store {
    cfg: StoreConfig,
    hashers: Hashers,
    shards: Box<[RwLock<index::Table>]>,
    services: RwLock<Services>,
    active: AtomicUsize,
    samples_held: AtomicU64,
    /// The series and sample limits in force (a reload changes them).
    max_active_series: AtomicUsize,
    max_series_per_service: AtomicUsize,
    max_samples_per_series: AtomicUsize,
    /// The id of the next version created, across services (wrapping, as services' ids).
    next_version_id: AtomicU32,
    /// The `seq` of the next series created, across services: ascending within each
    /// service, and never handed out twice, even to a service forgotten and seen again.
    next_seq: AtomicU64,
}

impl Store {
    pub fn new(cfg: StoreConfig) -> Store {
        Store {
            hashers: Hashers {
                // Fixed seeds: hashes only need to be stable within the process.
                hash: ahash::RandomState::with_seeds(
                    0x9e37_79b9_7f4a_7c15,
                    0xbf58_476d_1ce4_e5b9,
                    0x94d0_49bb_1331_11eb,
                    0x2545_f491_4f6c_dd1d,
                ),
                // Random seeds (see `index::Slot`): the fingerprint is not predictable from outside.
                fp: ahash::RandomState::new(),
            },
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            services: RwLock::new(Services::default()),
            active: AtomicUsize::new(0),
            samples_held: AtomicU64::new(0),
            max_active_series: AtomicUsize::new(cfg.max_active_series),
            max_series_per_service: AtomicUsize::new(cfg.max_series_per_service),
            max_samples_per_series: AtomicUsize::new(cfg.max_samples_per_series),
            next_version_id: AtomicU32::new(0),
            next_seq: AtomicU64::new(0),
            cfg,
        }
    }

    /// Applies new limits (a reload): series already held stay; new series and samples
    /// from now on are held to them.
    pub fn set_limits(&self, limits: &crate::config::LimitsConfig) {
        self.max_active_series
            .store(limits.max_active_series, Ordering::Relaxed);
        self.max_series_per_service
            .store(limits.max_series_per_service, Ordering::Relaxed);
        self.max_samples_per_series
            .store(limits.max_samples_per_series, Ordering::Relaxed);
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn active_series(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Samples appended since start (a counter; retention does not decrease it).
    pub fn samples_appended(&self) -> u64 {
        self.samples_held.load(Ordering::Relaxed)
    }

    pub fn services(&self) -> Vec<Arc<Service>> {
        self.services.read().list.clone()
    }

    pub fn service(&self, name: &str) -> Option<Arc<Service>> {
        self.services.read().by_name.get(name).cloned()
    }

    pub fn service_by_id(&self, id: ServiceId) -> Option<Arc<Service>> {
        self.services.read().by_id.get(&id).cloned()
    }

    /// Looks a series up by its labels.
    pub fn get(&self, labels: &LabelSet) -> Option<Arc<Series>> {
        let (hash, fp) = self.hashers.of(labels.as_bytes());
        let shard = self.shards[hash as usize % SHARDS].read();
        shard.find(hash, fp).cloned()
    }

    /// Applies a decoded push: resolves or creates each entry's series, then appends its
    /// samples. Invalid UTF-8 in a new series' labels fails the whole push before anything
    /// changes.
    ///
    /// Memory-level parallelism drives the cost at 100 k series: keys and hashes are
    /// computed first, then every shard's read lock is taken once for the whole push, so
    /// the per-entry probes carry no atomic operation (a locked instruction would serialise
    /// their cache misses) and resolved series are borrowed, not reference-counted; the
    /// index slot and then the series of the entry `PREFETCH_AHEAD` further on are
    /// prefetched, so that their misses overlap with the work on this one.
    pub fn ingest(
        &self,
        batch: &mut Batch,
        scratch: &mut IngestScratch,
    ) -> Result<IngestOutcome, StoreError> {
        self.ingest_within(batch, scratch, &TimeBounds::NONE)
    }

    /// [`Store::ingest`], refusing the samples outside `bounds` (counted, and the first
    /// named in [`IngestOutcome::refused`]); the push's other samples are stored. ±Inf and
    /// NaN values other than the stale marker are dropped and counted, whatever the bounds.
    pub fn ingest_within(
        &self,
        batch: &mut Batch,
        scratch: &mut IngestScratch,
        bounds: &TimeBounds,
    ) -> Result<IngestOutcome, StoreError> {
        let mut out = IngestOutcome::default();
        scratch.prepare(batch, &self.hashers);

        // 1. Resolve every entry under all shards' read locks. Label sets not found by their
        //    raw bytes are parsed, checked and looked up again by their canonical encoding;
        //    those still missing are validated, then created with the locks released.
        let mut guards: Vec<_> = self.shards.iter().map(|s| s.read()).collect();
        let mut refs: Vec<Option<&Series>> = Vec::with_capacity(batch.series.len());
        resolve(&guards, scratch, &mut refs);
        let missing = |refs: &[Option<&Series>], scratch: &IngestScratch| -> Vec<usize> {
            (0..refs.len())
                .filter(|&i| {
                    refs[i].is_none()
                        && scratch.first[i] == i as u32
                        && scratch.group_samples(i) > 0
                })
                .collect()
        };
        let mut new = missing(&refs, scratch);
        if !new.is_empty() {
            drop(refs);
            drop(guards);
            let mut reparsed = false;
            for &i in &new {
                if batch.series[i].deferred {
                    batch.ensure_labels(i).map_err(StoreError::Labels)?;
                    scratch.encode(batch, i, &self.hashers);
                    reparsed = true;
                }
            }
            if reparsed {
                guards = self.shards.iter().map(|s| s.read()).collect();
                refs = Vec::with_capacity(batch.series.len());
                resolve(&guards, scratch, &mut refs);
                new = missing(&refs, scratch);
                drop(refs);
                drop(guards);
            }
            // Validate new series before any state changes.
            for &i in &new {
                for (n, v) in batch.series_labels(&batch.series[i]) {
                    if std::str::from_utf8(n).is_err() {
                        return Err(StoreError::InvalidUtf8 {
                            series: i,
                            what: "name",
                        });
                    }
                    if std::str::from_utf8(v).is_err() {
                        return Err(StoreError::InvalidUtf8 {
                            series: i,
                            what: "value",
                        });
                    }
                }
            }
            for &i in &new {
                // A label set with no sample the store may keep is not created: a stray
                // timestamp or a NaN never makes a series, a version or a deploy.
                let newest = scratch.group_newest(batch, i, bounds);
                if newest == NO_TS {
                    scratch.unstored.push((i as u32, Unstored::NothingStorable));
                    continue;
                }
                let why = match self.get_or_create(
                    (scratch.hashes[i], scratch.fps[i]),
                    scratch.key(batch, i),
                    bounds.service_retention.then_some(newest),
                    &mut out,
                ) {
                    Created::Series => continue,
                    Created::OverLimit => Unstored::OverLimit,
                    Created::TooOld { window_start } => Unstored::TooOld { window_start },
                };
                scratch.unstored.push((i as u32, why));
            }
            guards = self.shards.iter().map(|s| s.read()).collect();
            refs = Vec::with_capacity(batch.series.len());
            resolve(&guards, scratch, &mut refs);
        }
        let batch: &Batch = batch;

        // 2. Append samples. `None`: no float samples, or a new series refused by a limit
        //    or by its service's retention window.
        let retention = self.cfg.retention_ms;
        let max_samples = self.max_samples_per_series.load(Ordering::Relaxed);
        let mut next_unstored = 0;
        let mut hist = std::mem::take(&mut scratch.hist);
        for (i, entry) in batch.series.iter().enumerate() {
            if let Some(Some(ahead)) = refs.get(i + PREFETCH_AHEAD) {
                prefetch::lines(*ahead as *const Series, std::mem::size_of::<Series>());
            }
            let Some(series) = refs[i] else {
                // Listed by first entry, ascending, as the entries come.
                let f = scratch.first[i];
                while scratch.unstored.get(next_unstored).is_some_and(|g| g.0 < f) {
                    next_unstored += 1;
                }
                let why = scratch.unstored.get(next_unstored).filter(|g| g.0 == f);
                if let Some(&(_, why)) = why {
                    scratch.account_unstored(batch, i, bounds, why, &mut out);
                }
                continue;
            };
            let samples = batch.series_samples(entry);
            // The oldest timestamp this series may take now.
            let floor = if bounds.service_retention {
                scratch.floor(self, series.service)
            } else {
                i64::MIN
            };
            let lowest = bounds.oldest.max(floor);
            let mut newest = NO_TS;
            let mut oldest = i64::MAX;
            {
                let mut data = series.data.lock();
                for s in samples {
                    if s.ts > bounds.newest || s.ts < lowest {
                        scratch.refuse_out_of_bounds(i, s.ts, bounds, floor);
                        continue;
                    }
                    if !s.value.is_finite() && !is_stale_marker(s.value) {
                        scratch.non_finite += 1;
                        continue;
                    }
                    let before = data.ring.last();
                    match data.ring.push(s.ts, s.value, retention) {
                        Append::Appended => {
                            data.prev = before;
                            out.samples_appended += 1;
                            let stale = is_stale_marker(s.value);
                            out.stale_markers += stale as u64;
                            data.stale = stale;
                            newest = newest.max(s.ts);
                            oldest = oldest.min(s.ts);
                        }
                        Append::Duplicate => out.duplicates += 1,
                        // A retried push repeats older samples: already held means duplicate.
                        Append::OutOfOrder if data.ring.range(s.ts, s.ts).next().is_some() => {
                            out.duplicates += 1
                        }
                        Append::OutOfOrder => out.out_of_order += 1,
                    }
                }
                if data.ring.len() > max_samples {
                    data.ring.keep_at_most(max_samples);
                }
                if !entry.histograms.is_empty() {
                    append_histograms(
                        &mut data,
                        batch,
                        entry,
                        |ts| {
                            let refused = ts > bounds.newest || ts < lowest;
                            if refused {
                                scratch.refuse_out_of_bounds(i, ts, bounds, floor);
                            }
                            !refused
                        },
                        retention,
                        max_samples,
                        &mut out,
                        &mut hist,
                        (&mut newest, &mut oldest),
                    );
                }
            }
            if newest != NO_TS {
                let key = (series.service, series.version);
                match scratch.newest.iter_mut().find(|e| (e.0, e.1) == key) {
                    Some(e) => {
                        e.2 = e.2.min(oldest);
                        e.3 = e.3.max(newest);
                    }
                    None => scratch.newest.push((key.0, key.1, oldest, newest)),
                }
            }
        }
        scratch.hist = hist;
        drop(refs);
        drop(guards);
        self.publish_newest(&scratch.newest);
        for &(sid, _, _, ts) in &scratch.newest {
            match out.touched.iter_mut().find(|(id, _)| *id == sid) {
                Some(e) => e.1 = e.1.max(ts),
                None => out.touched.push((sid, ts)),
            }
        }
        self.samples_held
            .fetch_add(out.samples_appended, Ordering::Relaxed);
        out.too_far_in_future = scratch.too_far_in_future;
        out.too_old = scratch.too_old;
        out.non_finite = scratch.non_finite;
        if let Some((i, ts, why, window_start)) = scratch.first_refused {
            out.refused = Some(self.refusal(batch, scratch, i, ts, why, window_start, bounds));
        }
        Ok(out)
    }

    /// The answer's account of the first refused sample (once per push, off the hot path).
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn refusal(
        &self,
        batch: &Batch,
        scratch: &IngestScratch,
        i: usize,
        ts: i64,
        why: TimeRefusal,
        window_start: Option<i64>,
        bounds: &TimeBounds,
    ) -> SampleRefused {
        const MAX_CHARS: usize = 512;
        let labels = LabelSet::from_encoded(scratch.key(batch, i));
        let mut series = labels.to_string();
        if series.len() > MAX_CHARS {
            let mut cut = MAX_CHARS;
            while !series.is_char_boundary(cut) {
                cut -= 1;
            }
            series.truncate(cut);
            series.push_str("…}");
        }
        match why {
            TimeRefusal::TooFarInFuture => SampleRefused::TooFarInFuture {
                series,
                ts,
                max_ahead_ms: bounds.max_ahead_ms,
            },
            TimeRefusal::TooOld => SampleRefused::TooOld {
                series,
                ts,
                why: match window_start {
                    Some(start) => format!(
                        "before {start}, the start of service {:?}'s retention window (its newest sample minus global.retention, {})",
                        labels.get(&self.cfg.service_label).unwrap_or(""),
                        crate::config::format_duration(std::time::Duration::from_millis(
                            self.cfg.retention_ms.max(0) as u64
                        )),
                    ),
                    None => "at or before the Unix epoch (timestamps are Unix milliseconds)".into(),
                },
            },
        }
    }

    /// The oldest timestamp service `sid`'s retention window holds now (its newest sample
    /// minus the retention); `None` for a service that has none yet.
    fn window_start(&self, sid: ServiceId) -> Option<i64> {
        let services = self.services.read();
        let newest = services.by_id.get(&sid)?.newest()?;
        Some(newest.saturating_sub(self.cfg.retention_ms))
    }

    /// Applies the newest timestamps this push brought to the shared per-service and
    /// per-version atomics: once per version per push, not per sample.
    fn publish_newest(&self, versions: &[(ServiceId, VersionId, i64, i64)]) {
        let services = self.services.read();
        for &(sid, vid, oldest, ts) in versions {
            // Gone if a sweep forgot it since the push appended (its samples were older
            // than the store's window): nothing to publish.
            let Some(svc) = services.by_id.get(&sid) else {
                continue;
            };
            svc.newest.fetch_max(ts, Ordering::Relaxed);
            // Once per push: a load first, so pushes to a fed service do not write the line.
            if !svc.fed.load(Ordering::Relaxed) {
                svc.fed.store(true, Ordering::Relaxed);
            }
            if let Some(v) = version_in(&svc.versions.read(), vid) {
                v.newest.fetch_max(ts, Ordering::Relaxed);
                let _ = v.first_seen.compare_exchange(
                    NO_TS,
                    oldest,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// Finds or creates the series `key`. With `newest` (the newest sample the push brings
    /// for it), a new series of a known service whose samples are all older than the
    /// service's retention window is not created: it would hold nothing.
    fn get_or_create(
        &self,
        (hash, fp): (u64, u64),
        key: &[u8],
        newest: Option<i64>,
        out: &mut IngestOutcome,
    ) -> Created {
        let mut shard = self.shards[hash as usize % SHARDS].write();
        if shard.find(hash, fp).is_some() {
            return Created::Series;
        }
        let labels = LabelSet::from_encoded(key);
        let service_name = labels.get(&self.cfg.service_label).unwrap_or("");
        if let Some(newest) = newest {
            let window_start = self
                .service(service_name)
                .and_then(|svc| svc.newest())
                .map(|n| n.saturating_sub(self.cfg.retention_ms));
            if let Some(window_start) = window_start.filter(|&w| newest < w) {
                return Created::TooOld { window_start };
            }
        }
        let max_active = self.max_active_series.load(Ordering::Relaxed);
        if self.active.load(Ordering::Relaxed) >= max_active {
            out.series_over_limit += 1;
            out.limited_by
                .get_or_insert(SeriesLimit::Active { limit: max_active });
            return Created::OverLimit;
        }
        let version_name = labels.get(&self.cfg.version_label).unwrap_or("");
        // A sweep may forget the service or the version found here before the series is
        // added to them; it marks them under the service's list lock, which is checked
        // here under the same lock: then they are looked up (and made) again.
        let max_per_service = self.max_series_per_service.load(Ordering::Relaxed);
        let over_per_service = |out: &mut IngestOutcome| {
            out.series_over_limit += 1;
            out.limited_by
                .get_or_insert_with(|| SeriesLimit::PerService {
                    service: service_name.to_string(),
                    limit: max_per_service,
                });
            Created::OverLimit
        };
        loop {
            let service = self.service_or_create(service_name);
            if service.series.read().len() >= max_per_service {
                return over_per_service(out);
            }
            let version = self.version_or_create(&service, version_name);
            // The service's list lock is taken under the shard's (the only place both are
            // held), so creation order and `seq` agree.
            let mut list = service.series.write();
            if service.forgotten.load(Ordering::Relaxed)
                || version.forgotten.load(Ordering::Relaxed)
            {
                continue;
            }
            // Again under the list's lock: two pushes creating series of one service in two
            // shards at once both passed the check above.
            if list.len() >= max_per_service {
                return over_per_service(out);
            }
            let series = Arc::new(Series {
                labels,
                service: service.id,
                version: version.id,
                seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
                removed: AtomicBool::new(false),
                data: Mutex::new(SeriesData::default()),
            });
            shard.insert(hash, fp, series.clone());
            drop(shard);
            list.push(series);
            // Counted under the list's lock: a sweep reads a version's count under it.
            version.series.fetch_add(1, Ordering::Relaxed);
            break;
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        out.series_created += 1;
        Created::Series
    }

    /// [`Store::sweep_at`] the wall clock's time.
    pub fn sweep(&self) -> Swept {
        self.sweep_at(crate::now_ms())
    }

    /// Forgets what was not seen for the retention (the module docs say why these clocks):
    ///
    /// - a **service** whose newest sample is older than the store's event time (the newest
    ///   sample of any service, but not past `wall_ms`) minus the retention, and which no
    ///   push appended to since the sweep before: its series, its versions, its index
    ///   entries and its name go; seen again, it is a new service with new ids;
    /// - a **series** whose newest sample is older than its service's "now" minus the
    ///   retention: targets that went away, label values that came and went (a request id in
    ///   a label); seen again, it is created anew;
    /// - a **version** left without a series.
    ///
    /// Each shard is write-locked in turn, so a push appending to a series holds it before or
    /// after, never during, its removal. Services and versions are marked forgotten under
    /// their service's series lock, which a push creating a series checks under the same
    /// lock: it never adds a series to something forgotten.
    pub fn sweep_at(&self, wall_ms: i64) -> Swept {
        let services = self.services();
        let retention = self.cfg.retention_ms;
        let store_now = services
            .iter()
            .filter_map(|s| s.newest())
            .max()
            .map(|n| n.min(wall_ms));
        // Per service: the oldest sample its series keep (`i64::MAX`: none, it is forgotten
        // if nothing new arrives meanwhile), and the series dropped.
        let mut per_service: hashbrown::HashMap<ServiceId, (i64, usize)> =
            hashbrown::HashMap::with_capacity(services.len());
        let mut idle = Vec::new();
        for s in &services {
            // Cleared at every sweep, so "fed" means: since the sweep before.
            let fed = s.fed.swap(false, Ordering::Relaxed);
            let newest = s.newest();
            let behind = matches!((newest, store_now), (Some(n), Some(now)) if n < now.saturating_sub(retention));
            let cutoff = if behind && !fed {
                idle.push(s.clone());
                i64::MAX
            } else {
                newest.map_or(i64::MIN, |n| n.saturating_sub(retention))
            };
            per_service.insert(s.id, (cutoff, 0));
        }
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            shard.retain(|s| {
                // A service created since `services` was read is not swept yet.
                let Some((cutoff, dropped)) = per_service.get_mut(&s.service) else {
                    return true;
                };
                // An empty ring is a series created by a push that has not appended yet.
                let keep = s.data.lock().newest_ts().is_none_or(|t| t >= *cutoff);
                if !keep {
                    s.removed.store(true, Ordering::Relaxed);
                    *dropped += 1;
                }
                keep
            });
        }
        let mut swept = Swept::default();
        for svc in &services {
            let n = per_service[&svc.id].1;
            if n == 0 {
                continue;
            }
            swept.series += n;
            let mut list = svc.series.write();
            let versions = svc.versions.read();
            list.retain(|s| {
                let gone = s.removed.load(Ordering::Relaxed);
                if gone {
                    if let Some(v) = version_in(&versions, s.version) {
                        v.series.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                !gone
            });
            drop(versions);
            // Versions left without a series (their counts are exact under the list's lock:
            // a new series is counted before it is released).
            svc.versions.write().retain(|v| {
                let gone = v.series_count() == 0;
                if gone {
                    v.forgotten.store(true, Ordering::Relaxed);
                    swept.versions += 1;
                }
                !gone
            });
        }
        self.active.fetch_sub(swept.series, Ordering::Relaxed);
        if !idle.is_empty() {
            let mut reg = self.services.write();
            for svc in idle {
                let list = svc.series.write();
                if !list.is_empty() {
                    continue; // a push created a series meanwhile: it is fed again
                }
                svc.forgotten.store(true, Ordering::Relaxed);
                for v in svc.versions.write().drain(..) {
                    v.forgotten.store(true, Ordering::Relaxed);
                    swept.versions += 1;
                }
                reg.by_name.remove(&svc.name);
                reg.by_id.remove(&svc.id);
                swept.services += 1;
            }
            reg.list.retain(|s| !s.forgotten.load(Ordering::Relaxed));
        }
        swept
    }

    /// The store's event time: the newest sample of any service it holds.
    pub fn newest(&self) -> Option<i64> {
        self.services
            .read()
            .list
            .iter()
            .filter_map(|s| s.newest())
            .max()
    }

    fn service_or_create(&self, name: &str) -> Arc<Service> {
        if let Some(s) = self.services.read().by_name.get(name) {
            return s.clone();
        }
        let mut services = self.services.write();
        if let Some(s) = services.by_name.get(name) {
            return s.clone();
        }
        let name: Arc<str> = name.into();
        let mut id = services.next_id;
        while services.by_id.contains_key(&id) {
            id = id.wrapping_add(1); // wrapped onto a service still held
        }
        services.next_id = id.wrapping_add(1);
        let svc = Arc::new(Service {
            id,
            name: name.clone(),
            newest: AtomicI64::new(NO_TS),
            versions: RwLock::new(Vec::new()),
            series: RwLock::new(Vec::new()),
            fed: AtomicBool::new(false),
            forgotten: AtomicBool::new(false),
        });
        services.list.push(svc.clone());
        services.by_id.insert(id, svc.clone());
        services.by_name.insert(name, svc.clone());
        svc
    }

    fn version_or_create(&self, service: &Service, name: &str) -> Arc<Version> {
        if let Some(v) = service.versions.read().iter().find(|v| &*v.name == name) {
            return v.clone();
        }
        let mut versions = service.versions.write();
        if let Some(v) = versions.iter().find(|v| &*v.name == name) {
            return v.clone();
        }
        let v = Arc::new(Version {
            id: self.next_version_id.fetch_add(1, Ordering::Relaxed),
            name: name.into(),
            series: AtomicUsize::new(0),
            newest: AtomicI64::new(NO_TS),
            first_seen: AtomicI64::new(NO_TS),
            forgotten: AtomicBool::new(false),
        });
        versions.push(v.clone());
        v
    }
}

#[cfg(test)]
mod tests;
