//! Judge one rule for one deploy: the matched series' newest samples in, at each event-time
//! step; sequential evidence per tier and a rule verdict out. Windows are incremental: each
//! step reads one sample per series and folds the increments into running evidence, so the
//! cost does not grow with the observation or the retention.
//!
//! A step runs the stages in order, one file each: `select` (which series feed the rule,
//! offered as they appear), `signals` (this step's increments per side, and recent levels),
//! `evidence` (folded into the running evidence), `decide` (the tier, held now and
//! attributed, the pass, the reason). `baseline` measures the pre-deploy window of a
//! before/after comparison; `rules::groups` judges a ratio rule per route. [`RuleState::judge`]
//! below is the order itself.

mod baseline;
mod decide;
mod evidence;
pub(crate) mod native;
mod select;
mod signals;

use std::sync::Arc;

use crate::deploy::Verdict;
use crate::rules::groups::{Groups, LatencyGroups};
use crate::rules::{Alphas, Bad, Component, Rule, Signal, Tier};
use crate::stats::mean::MeanEvidence;
use crate::stats::rate::RateEvidence;
use crate::stats::ratio::RatioEvidence;
use crate::store::{LabelSet, NativeHistogram, Series};

pub use baseline::known_baseline;
use decide::*;
pub(crate) use decide::{
    confidence, first_threshold, proven_at, worse_by, Z_HOLDS_NOW, Z_ONSET_CHANGE,
};
use evidence::*;
pub(crate) use evidence::{placed_too_high, tier_latency};
use select::*;
pub(crate) use signals::{bucket_total, counter_increase, cumulative_at};
pub use signals::{cumulative_at_sorted, histogram_quantile};

/// Which side of the comparison a series feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Canary = 0,
    Baseline = 1,
}

/// One step's data for one side.
#[derive(Debug, Clone, Default)]
pub struct SideStep {
    /// Counter increases: numerator / events.
    pub events: f64,
    /// Denominator increases, or instance-seconds for per-instance signals.
    pub exposure: f64,
    /// Gauge values: sum and count of the newest values.
    pub value_sum: f64,
    pub value_n: f64,
    /// Histogram bucket increases by bucket slot.
    pub buckets: Vec<f64>,
}

impl SideStep {
    fn add(&mut self, o: &SideStep) {
        self.events += o.events;
        self.exposure += o.exposure;
        self.value_sum += o.value_sum;
        self.value_n += o.value_n;
        if self.buckets.len() < o.buckets.len() {
            self.buckets.resize(o.buckets.len(), 0.0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
    }
    fn clear(&mut self) {
        self.events = 0.0;
        self.exposure = 0.0;
        self.value_sum = 0.0;
        self.value_n = 0.0;
        self.buckets.iter_mut().for_each(|b| *b = 0.0);
    }
}

/// How a histogram series feeds a quantile rule.
enum Feed {
    /// Not a histogram's, or a classic `_bucket` series counted at its own bound's slot.
    Direct,
    /// A classic `_bucket` series (its `le`) whose histogram (`RuleState::accs[i]`) is
    /// counted at every bound: the rule judges on the native grid.
    Projected(usize, f64),
    /// A native histogram series, with its previous sample.
    Native(Box<Option<(i64, NativeHistogram)>>),
}

/// A classic histogram (its `_bucket` series of one instance and labels) counted at every
/// bound of a rule judging on a native grid: this step's increases per `le`.
struct Acc {
    side: Side,
    key: String,
    group: Option<usize>,
    judged: Vec<(f64, f64)>,
    warming: Vec<(f64, f64)>,
}

/// Which forms of histogram fed a quantile rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forms {
    pub classic: bool,
    pub native: bool,
    /// The schema of the native grid ([`native::grid`]) the rule judges on, if it does.
    pub grid: Option<i8>,
}

/// A series feeding the rule.
struct Matched {
    series: Arc<Series>,
    side: Side,
    component: Component,
    /// Bucket slot (quantile) or instance slot (per-instance signals).
    slot: usize,
    prev: Option<(i64, f64)>,
    /// Samples before this time are its instance's own start-up: not judged. A new process
    /// is not compared with old processes' steady state as if they were the same age.
    warm_from: i64,
    /// Its group (route, handler) for a ratio rule's per-group evidence.
    group: Option<usize>,
    feed: Feed,
}

/// An instance (by `instance`, else `pod`, label) of one side, for per-instance exposure.
struct Instance {
    side: Side,
    name: String,
    last_ts: Option<i64>,
    /// Rates: the instance's increases and seconds since its warm-up (its own level, for
    /// how far instances of one version differ among themselves).
    events: f64,
    secs: f64,
}

/// The baseline of a before/after comparison, measured over the pre-deploy window.
#[derive(Debug, Clone, Default)]
pub struct KnownBaseline {
    pub total: SideStep,
    /// Quantile rules: the requests served over the window, the old instances' warm-ups
    /// included (the load; `total` leaves warm-ups out).
    pub requests: f64,
    /// Per-step gauge levels over the window, for trends.
    pub slope_per_hour: f64,
    /// Steps (15 s) of the window the old version's series cover, first sample to last.
    pub steps: f64,
    /// A ratio's (events, exposure) per group (`route=/checkout`) over the window.
    pub groups: Vec<(String, f64, f64)>,
    /// A quantile's bucket increases per group (`route=/checkout`) over the window, by
    /// bucket slot of `bounds`.
    pub latency_groups: Vec<(String, Vec<f64>)>,
    /// The bucket bounds by slot of `total.buckets` (quantile rules).
    pub bounds: Vec<f64>,
    /// Which histogram forms the window held (quantile rules).
    pub forms: Forms,
    /// The newest sample of the window the series hold.
    pub last_at: Option<i64>,
    /// Counted signals: each 15-second step's counts from the window's start, as they were.
    pub by_step: Vec<SideStep>,
}

/// The state of one rule within one deploy.
pub struct RuleState {
    pub rule: Rule,
    matched: Vec<Matched>,
    instances: Vec<Instance>,
    /// Bucket upper bounds by slot (quantile rules).
    bounds: Vec<f64>,
    /// Quantile rules: the histogram forms that fed it, and its native grid.
    pub forms: Forms,
    /// Classic histograms counted at every bound (the rule judges on a native grid).
    accs: Vec<Acc>,
    /// Each histogram's (side, labels but `le` and the name) form: native or classic.
    histogram_forms: Vec<(Side, String, bool)>,
    /// Scratch for native histograms: the sample read, the earlier one at its layout, the
    /// increase, and cumulative counts by slot.
    native: Box<(NativeHistogram, NativeHistogram, NativeHistogram, Vec<f64>)>,
    step: [SideStep; 2],
    carry: [SideStep; 2],
    /// Baseline buckets during warm-up (to place the quantile thresholds).
    warm_baseline: Vec<f64>,
    known: Option<KnownBaseline>,
    evidence: Option<Evidence>,
    pub verdict: Verdict,
    pub verdict_at: Option<i64>,
    pub reason: String,
    pub canary_value: Option<f64>,
    pub baseline_value: Option<f64>,
    pub canary_samples: f64,
    pub baseline_samples: f64,
    pub effect: Option<f64>,
    pub confidence: f64,
    /// Event time of the first step the canary looked worse than the warn threshold.
    pub first_deviation: Option<i64>,
    observed_since: Option<i64>,
    /// The statistic per step for each side (newest last, bounded), for charts.
    pub history: std::collections::VecDeque<StepPoint>,
    /// The last steps' raw data per side, for cheap recent levels (no ring reads).
    recent: std::collections::VecDeque<[SideStep; 2]>,
    /// What the rule showed when it reached its regression verdict.
    frozen: Option<Frozen>,
    /// Each side's instances and when each first showed a series of this rule.
    joined: Vec<(Side, String, i64)>,
    /// After against before: judged steps since the comparison began.
    known_steps: usize,
    /// After against before: whether the new version's first judged minutes already showed
    /// the deviation (`None` until they are judged). A later one is not attributed.
    onset_early: Option<Onset>,
    /// After against before: since when a pause's deviation has held without
    /// [`decide::LATE_GAP_STEPS`] steps in a row that did not hold.
    late_since: Option<i64>,
    /// After against before: steps in a row since a pause's deviation last held now.
    late_gap: usize,
    /// The new version's counted data of this step from instances still in their warm-up:
    /// not judged, but it tells when a deviation began.
    warming: SideStep,
    /// After against before: the warming data of the last minute before judging began.
    before_judged: std::collections::VecDeque<SideStep>,
    /// Quantile rules: the new version's requests per step (warming instances included),
    /// for the last [`KEPT_STEPS`] steps: the load it serves.
    served: std::collections::VecDeque<f64>,
    /// After against before: the new version's data in its first judged minute.
    first_minute: Option<SideStep>,
    /// After against before: the new version's data in its first three judged minutes, on
    /// which its onset was decided.
    first_judged: Option<SideStep>,
    /// A ratio rule's evidence per route (or handler): local regressions.
    groups: Option<Groups>,
    /// A quantile rule's evidence per route (or handler): latency local to a route, or a
    /// heavier tail on each route that the service-wide quantile does not show.
    latency_groups: Option<LatencyGroups>,
    /// After against before: the old version's series, and when the deploy began. While it
    /// still served beside the new version, what it showed tells the world's deviations
    /// (an outage, a spike) from the deploy's.
    old: Vec<Arc<Series>>,
    deploy_started: Option<i64>,
    /// Whether the old version, while it still served, showed the deviation as much as the
    /// new one beside it, and when that was read.
    old_shared: Option<(i64, bool)>,
    /// Whether the new version's errors were worse than the old version's beside it, step
    /// by step, and when that was read.
    beside_old: Option<(i64, bool)>,
    /// After against before: the last event time another rule of the deploy held its
    /// deviation for the world's ([`StepOutcome::world_event`]), set before each judgement.
    pub world_elsewhere: Option<i64>,
    /// After against before: how many times its load before the deploy the new version
    /// served at the last step, as a latency rule of the deploy read it
    /// ([`RuleState::load_now`]), set before each judgement: a rate per instance (CPU
    /// seconds per second) follows the load as latency does, and reads no requests itself.
    pub load_elsewhere: Option<f64>,
}

/// Steps of raw data for recent levels: 2 min at 15 s.
pub const RECENT_STEPS: usize = 8;
/// Steps of raw data kept: 3 min, each minute of which a rollback's deviation must hold.
const KEPT_STEPS: usize = 12;
/// Steps in a minute.
const MINUTE_STEPS: usize = 4;

/// One step's statistic on each side, for charts: `None` where a side had no data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPoint {
    pub at: i64,
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
}

/// Steps of history kept per rule: 2 h at 15 s.
pub const HISTORY_STEPS: usize = 480;

/// What a step changed in a rule, for the timeline.
#[derive(Debug, Default)]
pub struct StepOutcome {
    pub verdict_changed: bool,
    pub first_deviation: bool,
    /// After against before: this rule held a deviation worth a pause for the world's at
    /// this step (begun later, under a load spike, or shown by the old version too).
    pub world_event: bool,
}

impl RuleState {
    pub fn new(rule: Rule) -> RuleState {
        RuleState {
            matched: Vec::new(),
            instances: Vec::new(),
            bounds: Vec::new(),
            forms: Forms::default(),
            accs: Vec::new(),
            histogram_forms: Vec::new(),
            native: Default::default(),
            step: Default::default(),
            carry: Default::default(),
            warm_baseline: Vec::new(),
            known: None,
            evidence: None,
            verdict: Verdict::Pending,
            verdict_at: None,
            reason: "waiting for data".into(),
            canary_value: None,
            baseline_value: None,
            canary_samples: 0.0,
            baseline_samples: 0.0,
            effect: None,
            confidence: 0.0,
            first_deviation: None,
            observed_since: None,
            history: std::collections::VecDeque::new(),
            recent: std::collections::VecDeque::new(),
            frozen: None,
            joined: Vec::new(),
            known_steps: 0,
            onset_early: None,
            late_since: None,
            late_gap: 0,
            warming: SideStep::default(),
            before_judged: std::collections::VecDeque::new(),
            served: std::collections::VecDeque::new(),
            first_minute: None,
            first_judged: None,
            groups: matches!(rule.signal, Signal::Ratio { .. })
                .then(|| Groups::new(thresholds(&rule))),
            latency_groups: matches!(rule.signal, Signal::Quantile { .. }).then(LatencyGroups::new),
            old: Vec::new(),
            deploy_started: None,
            old_shared: None,
            world_elsewhere: None,
            load_elsewhere: None,
            beside_old: None,
            rule,
        }
    }

    /// The histogram form a quantile rule judged (see [`crate::deploy::RuleJson`]).
    pub fn histogram_form(&self) -> Option<&'static str> {
        match (self.forms.classic, self.forms.native) {
            (true, true) => Some("classic+native"),
            (false, true) => Some("native"),
            (true, false) => Some("classic"),
            (false, false) => None,
        }
    }

    pub fn matched_series(&self) -> usize {
        self.matched.len()
    }

    /// Series of each side feeding the rule.
    pub fn matched_on(&self, side: Side) -> impl Iterator<Item = &Arc<Series>> {
        self.matched
            .iter()
            .filter(move |m| m.side == side)
            .map(|m| &m.series)
    }

    /// Judges the step ending at `t`. `warm`: the rule's warm-up is over. `before_after`:
    /// the baseline is the pre-deploy window.
    pub fn judge(&mut self, t: i64, warm: bool, alphas: &Alphas) -> StepOutcome {
        self.record_history(t);
        if !warm {
            if self.known.is_some() {
                if self.before_judged.len() == MINUTE_STEPS {
                    self.before_judged.pop_front();
                }
                self.before_judged.push_back(self.warming.clone());
            }
            // Cold starts are not judged; the baseline's latency still places thresholds.
            if matches!(self.rule.signal, Signal::Quantile { .. }) && self.known.is_none() {
                let b = &self.step[Side::Baseline as usize].buckets;
                if self.warm_baseline.len() < b.len() {
                    self.warm_baseline.resize(b.len(), 0.0);
                }
                for (w, x) in self.warm_baseline.iter_mut().zip(b) {
                    *w += x;
                }
                if let Some(g) = &mut self.latency_groups {
                    g.end_step(&self.rule, &self.bounds, false);
                }
            }
            self.reason = "warming up".into();
            return StepOutcome::default();
        }
        if self.matched.iter().all(|m| m.side != Side::Canary) {
            self.reason = "no series of the new version match this rule".into();
            return StepOutcome::default();
        }
        if self.known.is_none() && self.matched.iter().all(|m| m.side != Side::Baseline) {
            self.reason = "no series of the baseline version match this rule".into();
            return StepOutcome::default();
        }
        self.observed_since.get_or_insert(t);
        if self.known.is_some() {
            self.known_steps += 1;
        }
        if let Some(g) = &mut self.groups {
            g.end_step();
        }
        if let Some(g) = &mut self.latency_groups {
            g.end_step(&self.rule, &self.bounds, true);
        }

        // A side without exposure this step waits for the next: its increments carry over.
        let [c, b] = &self.step;
        let mut c = c.clone();
        let mut b = b.clone();
        c.add(&self.carry[0]);
        b.add(&self.carry[1]);
        let needs_both = self.known.is_none();
        let has = |s: &SideStep| {
            s.exposure > 0.0 || s.value_n > 0.0 || s.buckets.iter().any(|x| *x > 0.0)
        };
        if !has(&c) || (needs_both && !has(&b)) {
            self.carry = [c, b];
            return self.decide(t, alphas);
        }
        self.carry = Default::default();
        self.fold(&c, &b);
        self.decide(t, alphas)
    }
}

/// An evaluation step: the deploy tracker's, in milliseconds and in seconds.
pub(super) const STEP_MS: i64 = crate::deploy::tracker::STEP_MS;
pub const STEP_SECONDS: f64 = STEP_MS as f64 / 1000.0;

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn thresholds(rule: &Rule) -> Vec<f64> {
    let mut v = vec![1.0];
    for t in Tier::ALL {
        if let Some(th) = rule.threshold(t) {
            v.push(th.relative);
            v.push(1.0 / th.relative);
        }
    }
    v
}

impl RuleState {
    /// Whether the rule can judge this comparison: traffic share needs both versions serving.
    pub fn applicable(&self) -> bool {
        !(self.known.is_some() && matches!(self.rule.signal, Signal::Share { .. }))
    }

    /// Whether both sides have series for this rule.
    pub fn has_data(&self) -> bool {
        self.matched.iter().any(|m| m.side == Side::Canary)
            && (self.known.is_some() || self.matched.iter().any(|m| m.side == Side::Baseline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantile_interpolates_like_prometheus() {
        let bounds = [0.1, 0.5, 1.0, f64::INFINITY];
        // Cumulative: 50 ≤ 0.1, 90 ≤ 0.5, 100 ≤ 1.
        let counts = [50.0, 90.0, 100.0, 100.0];
        assert!((histogram_quantile(0.5, &bounds, &counts).unwrap() - 0.1).abs() < 1e-9);
        assert!((histogram_quantile(0.7, &bounds, &counts).unwrap() - 0.3).abs() < 1e-9);
        assert_eq!(histogram_quantile(0.5, &bounds, &[0.0; 4]), None);
    }
}
