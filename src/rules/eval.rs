//! Judge one rule for one deploy: the matched series' newest samples in, at each event-time
//! step; sequential evidence per tier and a rule verdict out. Windows are incremental: each
//! step reads one sample per series and folds the increments into running evidence, so the
//! cost does not grow with the observation or the retention.

use std::sync::Arc;

use crate::deploy::Verdict;
use crate::rules::{Alphas, Bad, Component, Rule, Signal, Tier};
use crate::stats::mean::MeanEvidence;
use crate::stats::rate::RateEvidence;
use crate::stats::ratio::RatioEvidence;
use crate::store::{LabelSet, Series};

/// Which side of the comparison a series feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Canary = 0,
    Baseline = 1,
}

/// Pseudo-exposure factor for a baseline known from the pre-deploy window: a baseline
/// M times larger than the canary turns the conditional binomial test into the one-sample
/// Poisson test against the known baseline rate (docs/statistics.md, "before and after").
const KNOWN_BASELINE_FACTOR: f64 = 1e6;

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
}

/// An instance (by `instance`, else `pod`, label) of one side, for per-instance exposure.
struct Instance {
    side: Side,
    name: String,
    last_ts: Option<i64>,
}

/// The baseline of a before/after comparison, measured over the pre-deploy window.
#[derive(Debug, Clone, Default)]
pub struct KnownBaseline {
    pub total: SideStep,
    /// Per-step gauge levels over the window, for trends.
    pub slope_per_hour: f64,
    pub steps: f64,
}

/// Evidence kept per signal.
enum Evidence {
    /// Counts against counts (ratio, share, quantile exceedances per tier).
    Ratio {
        ev: RatioEvidence,
        canary: RateEvidence,
    },
    Quantile {
        /// Per tier: exceedance threshold (seconds), canary-vs-baseline ratio evidence and
        /// the canary's exceedance fraction.
        tiers: Vec<Option<(f64, RatioEvidence, RateEvidence)>>,
        canary_cum: Vec<f64>,
        baseline_cum: Vec<f64>,
    },
    /// Per-step log ratios of per-instance levels or rates.
    Mean {
        ev: MeanEvidence,
        c_sum: f64,
        b_sum: f64,
        c_exp: f64,
        b_exp: f64,
    },
    /// Excess growth per hour, least squares over steps.
    Trend {
        t: Vec<f64>,
        d: Vec<f64>,
        c_level: f64,
        b_level: f64,
    },
    /// Counted events (restarts).
    Count { ec: f64, nc: f64, eb: f64, nb: f64 },
}

/// The state of one rule within one deploy.
pub struct RuleState {
    pub rule: Rule,
    matched: Vec<Matched>,
    instances: Vec<Instance>,
    /// Bucket upper bounds by slot (quantile rules).
    bounds: Vec<f64>,
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
    /// Since when the last steps have been beyond the first tier's threshold without a
    /// break (the current deviation's start).
    deviating_since: Option<i64>,
}

/// Steps of raw data for recent levels: 2 min at 15 s.
pub const RECENT_STEPS: usize = 8;
/// Steps of raw data kept: 3 min, each minute of which a rollback's deviation must hold.
const KEPT_STEPS: usize = 12;

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
}

impl RuleState {
    pub fn new(rule: Rule) -> RuleState {
        RuleState {
            rule,
            matched: Vec::new(),
            instances: Vec::new(),
            bounds: Vec::new(),
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
            deviating_since: None,
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

    /// Offers a series; it is kept if a selector matches.
    pub fn offer(&mut self, series: &Arc<Series>, side: Side, t: i64) {
        let hits: Vec<Component> = self
            .rule
            .signal
            .selectors()
            .into_iter()
            .filter(|(_, sel)| sel.matches(&series.labels))
            .map(|(c, _)| c)
            .collect();
        for component in hits {
            let slot = match component {
                Component::Bucket => match bucket_bound(&series.labels) {
                    Some(le) => self.bucket_slot(le),
                    None => continue,
                },
                _ => self.instance_slot(&series.labels, side),
            };
            // A series matching several selectors of one component counts once.
            if self
                .matched
                .iter()
                .any(|m| Arc::ptr_eq(&m.series, series) && m.component == component)
            {
                continue;
            }
            // Its value at the step it joins, not its newest: a push may already hold later
            // samples, and counting from those would lose their increments.
            let (mut prev, first) = {
                let data = series.data.lock();
                let prev = data.at_or_before(t).filter(|(_, v)| !v.is_nan());
                (prev, data.ring.first_ts())
            };
            let joined = self.instance_joined(side, &series.labels, t);
            // A counter that appears while its instance already reported (a client library
            // creates `code="500"` at the first error) started from zero: its first value is
            // an increase, not a baseline to count from.
            if self.rule.signal.counters() {
                if let Some(first) = first.filter(|f| *f > joined + NEW_SERIES_AFTER_MS) {
                    prev = Some((first - 1, 0.0));
                }
            }
            let warm_from = match side {
                Side::Canary => joined + self.rule.warmup.as_millis() as i64,
                Side::Baseline => i64::MIN,
            };
            self.matched.push(Matched {
                series: series.clone(),
                side,
                component,
                slot,
                prev,
                warm_from,
            });
        }
    }

    /// When the instance of these labels first showed a series of this rule (for the new
    /// version: its start).
    fn instance_joined(&mut self, side: Side, labels: &LabelSet, t: i64) -> i64 {
        let name = instance_of(labels).unwrap_or("");
        match self.joined.iter().find(|(s, n, _)| *s == side && n == name) {
            Some((_, _, at)) => *at,
            None => {
                self.joined.push((side, name.to_string(), t));
                t
            }
        }
    }

    fn bucket_slot(&mut self, le: f64) -> usize {
        match self.bounds.iter().position(|b| *b == le) {
            Some(i) => i,
            None => {
                self.bounds.push(le);
                self.bounds.len() - 1
            }
        }
    }

    fn instance_slot(&mut self, labels: &LabelSet, side: Side) -> usize {
        let name = instance_of(labels)
            .map(str::to_string)
            .unwrap_or_else(|| labels.to_string());
        match self
            .instances
            .iter()
            .position(|i| i.side == side && i.name == name)
        {
            Some(i) => i,
            None => {
                self.instances.push(Instance {
                    side,
                    name,
                    last_ts: None,
                });
                self.instances.len() - 1
            }
        }
    }

    /// Sets the baseline measured before the deploy (before/after comparisons) and
    /// restarts the evidence: it is about a different comparison now.
    pub fn set_known_baseline(&mut self, known: KnownBaseline) {
        self.known = Some(known);
        self.evidence = None;
        self.carry = Default::default();
        self.matched.retain(|m| m.side == Side::Canary);
        self.instances.retain(|i| i.side == Side::Canary);
        // Instance slots shifted: recompute them.
        let labels: Vec<_> = self
            .matched
            .iter()
            .map(|m| m.series.labels.clone())
            .collect();
        for (i, l) in labels.iter().enumerate() {
            if self.matched[i].component != Component::Bucket {
                let slot = self.instance_slot(l, Side::Canary);
                self.matched[i].slot = slot;
            }
        }
        self.observed_since = None;
    }

    /// Reads every matched series' newest sample at or before `t` (the step's end) and folds
    /// the increments into this step's per-side data. Reading the value at the step boundary
    /// makes verdicts independent of how pushes batch the samples.
    pub fn read(&mut self, t: i64) {
        let counters = self.rule.signal.counters();
        let nb = self.bounds.len();
        for s in &mut self.step {
            s.clear();
            if s.buckets.len() < nb {
                s.buckets.resize(nb, 0.0);
            }
        }
        for m in &mut self.matched {
            let Some((ts, v)) = m.series.data.lock().at_or_before(t) else {
                continue;
            };
            if v.is_nan() {
                continue; // a stale marker: the series went away
            }
            let step = &mut self.step[m.side as usize];
            if ts < m.warm_from {
                // The instance's own start-up: its value and its clock move on, nothing is
                // judged.
                m.prev = Some((ts, v));
                if counters && m.component == Component::Value {
                    let inst = &mut self.instances[m.slot];
                    inst.last_ts = Some(inst.last_ts.map_or(ts, |l| l.max(ts)));
                }
                continue;
            }
            if !counters {
                step.value_sum += v;
                step.value_n += 1.0;
                m.prev = Some((ts, v));
                continue;
            }
            let Some((pts, pv)) = m.prev else {
                m.prev = Some((ts, v));
                continue;
            };
            if ts <= pts {
                continue;
            }
            // A counter that went down was reset: it counted up from zero since.
            let delta = if v >= pv { v - pv } else { v };
            m.prev = Some((ts, v));
            match m.component {
                Component::Numerator => step.events += delta,
                Component::Denominator => step.exposure += delta,
                Component::Bucket => step.buckets[m.slot] += delta,
                Component::Value => {
                    step.events += delta;
                    let inst = &mut self.instances[m.slot];
                    if let Some(last) = inst.last_ts {
                        if ts > last {
                            step.exposure += (ts - last) as f64 / 1000.0;
                            inst.last_ts = Some(ts);
                        }
                    } else {
                        inst.last_ts = Some(ts);
                    }
                }
            }
        }
    }

    /// Judges the step ending at `t`. `warm`: the rule's warm-up is over. `before_after`:
    /// the baseline is the pre-deploy window.
    pub fn judge(&mut self, t: i64, warm: bool, alphas: &Alphas) -> StepOutcome {
        self.record_history(t);
        if !warm {
            // Cold starts are not judged; the baseline's latency still places thresholds.
            if matches!(self.rule.signal, Signal::Quantile { .. }) && self.known.is_none() {
                let b = &self.step[Side::Baseline as usize].buckets;
                if self.warm_baseline.len() < b.len() {
                    self.warm_baseline.resize(b.len(), 0.0);
                }
                for (w, x) in self.warm_baseline.iter_mut().zip(b) {
                    *w += x;
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

    /// The statistic of this step alone on each side (a chart point).
    fn record_history(&mut self, t: i64) {
        let q = match self.rule.signal {
            Signal::Quantile { quantile, .. } => quantile,
            _ => 0.5,
        };
        let value = |s: &SideStep| -> Option<f64> {
            match self.rule.signal {
                Signal::Ratio { .. } => (s.exposure > 0.0).then(|| s.events / s.exposure),
                Signal::Quantile { .. } => histogram_quantile(q, &self.bounds, &s.buckets),
                Signal::Rate { .. } | Signal::Share { .. } => {
                    (s.exposure > 0.0).then(|| s.events / s.exposure)
                }
                Signal::Level { .. } | Signal::Trend { .. } => {
                    (s.value_n > 0.0).then(|| s.value_sum / s.value_n)
                }
                Signal::Increase { .. } => (s.exposure > 0.0).then_some(s.events),
            }
        };
        let canary = value(&self.step[Side::Canary as usize]);
        let baseline = match &self.known {
            // Before/after: the pre-deploy level, flat.
            Some(k) => match self.rule.signal {
                Signal::Quantile { .. } => histogram_quantile(q, &self.bounds, &k.total.buckets),
                Signal::Level { .. } | Signal::Trend { .. } => {
                    (k.total.value_n > 0.0).then(|| k.total.value_sum / k.total.value_n)
                }
                _ => (k.total.exposure > 0.0).then(|| k.total.events / k.total.exposure),
            },
            None => value(&self.step[Side::Baseline as usize]),
        };
        if self.history.len() == HISTORY_STEPS {
            self.history.pop_front();
        }
        self.history.push_back(StepPoint {
            at: t,
            canary,
            baseline,
        });
        if self.recent.len() == KEPT_STEPS {
            self.recent.pop_front();
        }
        self.recent.push_back(self.step.clone());
    }

    /// Events and exposure of one side over the last [`RECENT_STEPS`] steps, from the steps
    /// already read: errors over requests for ratio rules, requests slower than `latency`
    /// over all requests for quantile rules. `None` for other signals or without data.
    pub fn recent_level(&self, side: Side, latency: Option<f64>) -> Option<(f64, f64)> {
        if !matches!(
            self.rule.signal,
            Signal::Ratio { .. } | Signal::Quantile { .. }
        ) {
            return None;
        }
        if matches!(self.rule.signal, Signal::Quantile { .. }) && latency.is_none() {
            return None;
        }
        let n = self.recent.len();
        let (events, exposure) = self.sums(side, n.saturating_sub(RECENT_STEPS)..n, latency);
        (exposure > 0.0).then_some((events, exposure))
    }

    /// One side's statistic over the kept steps in `steps`, as (numerator, denominator):
    /// events and exposure (ratio, rate, share, increase), the sum and count of gauge values
    /// (level, trend), requests slower than `latency` and all requests (quantile).
    fn sums(&self, side: Side, steps: std::ops::Range<usize>, latency: Option<f64>) -> (f64, f64) {
        self.recent.range(steps).fold((0.0, 0.0), |(a, n), step| {
            let s = &step[side as usize];
            let (x, m) = match self.rule.signal {
                Signal::Quantile { .. } => {
                    let total = bucket_total(&self.bounds, &s.buckets);
                    let below =
                        latency.map_or(total, |le| cumulative_at(&self.bounds, &s.buckets, le));
                    ((total - below).max(0.0), total)
                }
                Signal::Level { .. } | Signal::Trend { .. } => (s.value_sum, s.value_n),
                _ => (s.events, s.exposure),
            };
            (a + x, n + m)
        })
    }

    /// Folds one step's data into the evidence.
    fn fold(&mut self, c: &SideStep, b: &SideStep) {
        let rule = &self.rule;
        let known = self.known.clone();
        // The baseline of this step: measured, or the pre-deploy rate scaled up.
        let pseudo = |c_exposure: f64, rate: f64| -> (f64, f64) {
            let nb = c_exposure * KNOWN_BASELINE_FACTOR;
            (rate * nb, nb)
        };
        match &rule.signal {
            Signal::Ratio { .. } | Signal::Share { .. } => {
                let ev = self.evidence.get_or_insert_with(|| Evidence::Ratio {
                    ev: RatioEvidence::new(&thresholds(rule)),
                    canary: RateEvidence::new(),
                });
                let Evidence::Ratio { ev, canary } = ev else {
                    return;
                };
                let (eb, nb) = match &known {
                    Some(k) => pseudo(c.exposure, ratio(k.total.events, k.total.exposure)),
                    None => (b.events, b.exposure),
                };
                ev.update(c.events, c.exposure, eb, nb);
                canary.update(c.events, c.exposure);
            }
            Signal::Quantile { quantile, .. } => {
                let q = *quantile;
                if self.evidence.is_none() {
                    let base: Vec<f64> = match &known {
                        Some(k) => k.total.buckets.clone(),
                        None => self.warm_baseline.clone(),
                    };
                    let qb = histogram_quantile(q, &self.bounds, &base);
                    let tiers = Tier::ALL
                        .iter()
                        .map(|&tier| {
                            let th = rule.threshold(tier)?;
                            let qb = qb?;
                            let want = (qb * th.relative).max(qb + th.absolute);
                            // Judgeable only below the largest finite bucket bound.
                            let top = self
                                .bounds
                                .iter()
                                .copied()
                                .filter(|b| b.is_finite())
                                .fold(0.0, f64::max);
                            (want < top)
                                .then(|| (want, RatioEvidence::new(&[1.0]), RateEvidence::new()))
                        })
                        .collect();
                    self.evidence = Some(Evidence::Quantile {
                        tiers,
                        canary_cum: vec![0.0; self.bounds.len()],
                        baseline_cum: vec![0.0; self.bounds.len()],
                    });
                }
                let Some(Evidence::Quantile {
                    tiers,
                    canary_cum,
                    baseline_cum,
                }) = &mut self.evidence
                else {
                    return;
                };
                canary_cum.resize(self.bounds.len(), 0.0);
                baseline_cum.resize(self.bounds.len(), 0.0);
                for (a, x) in canary_cum.iter_mut().zip(&c.buckets) {
                    *a += x;
                }
                if known.is_none() {
                    for (a, x) in baseline_cum.iter_mut().zip(&b.buckets) {
                        *a += x;
                    }
                }
                let count = |buckets: &[f64]| -> f64 {
                    self.bounds
                        .iter()
                        .zip(buckets)
                        .filter(|(le, _)| le.is_infinite())
                        .map(|(_, v)| *v)
                        .sum()
                };
                let below =
                    |buckets: &[f64], le: f64| -> f64 { cumulative_at(&self.bounds, buckets, le) };
                let (tc, tb) = (count(&c.buckets), count(&b.buckets));
                for (le, ev, frac) in tiers.iter_mut().flatten() {
                    let xc = (tc - below(&c.buckets, *le)).max(0.0);
                    let (xb, nb) = match &known {
                        Some(k) => {
                            let kt = count(&k.total.buckets);
                            let kx = (kt - below(&k.total.buckets, *le)).max(0.0);
                            pseudo(tc, ratio(kx, kt))
                        }
                        None => ((tb - below(&b.buckets, *le)).max(0.0), tb),
                    };
                    ev.update(xc, tc, xb, nb);
                    frac.update(xc, tc);
                }
            }
            Signal::Rate { .. } | Signal::Level { .. } => {
                let level = |s: &SideStep| match rule.signal {
                    Signal::Rate { .. } => ratio(s.events, s.exposure),
                    _ => ratio(s.value_sum, s.value_n),
                };
                let (cv, bv) = match &known {
                    Some(k) => (level(c), level(&k.total)),
                    None => (level(c), level(b)),
                };
                let ev = self.evidence.get_or_insert_with(|| Evidence::Mean {
                    ev: MeanEvidence::new(0.2, 0.01, rule.min_evidence.max(3.0) as u64),
                    c_sum: 0.0,
                    b_sum: 0.0,
                    c_exp: 0.0,
                    b_exp: 0.0,
                });
                let Evidence::Mean {
                    ev,
                    c_sum,
                    b_sum,
                    c_exp,
                    b_exp,
                } = ev
                else {
                    return;
                };
                if cv > 0.0 && bv > 0.0 {
                    ev.update((cv / bv).ln());
                }
                *c_sum += cv;
                *b_sum += bv;
                *c_exp += 1.0;
                *b_exp += 1.0;
            }
            Signal::Trend { .. } => {
                let cl = ratio(c.value_sum, c.value_n);
                let (bl, slope) = match &known {
                    Some(k) => (ratio(k.total.value_sum, k.total.value_n), k.slope_per_hour),
                    None => (ratio(b.value_sum, b.value_n), 0.0),
                };
                let ev = self.evidence.get_or_insert_with(|| Evidence::Trend {
                    t: Vec::new(),
                    d: Vec::new(),
                    c_level: 0.0,
                    b_level: 0.0,
                });
                let Evidence::Trend {
                    t,
                    d,
                    c_level,
                    b_level,
                } = ev
                else {
                    return;
                };
                let hours = t.len() as f64 * STEP_SECONDS / 3600.0;
                t.push(hours);
                // With a known baseline, its own drift before the deploy is subtracted.
                d.push(cl - bl - slope * hours);
                *c_level = cl;
                *b_level = bl;
            }
            Signal::Increase { .. } => {
                let ev = self.evidence.get_or_insert(Evidence::Count {
                    ec: 0.0,
                    nc: 0.0,
                    eb: 0.0,
                    nb: 0.0,
                });
                let Evidence::Count { ec, nc, eb, nb } = ev else {
                    return;
                };
                *ec += c.events;
                *nc += c.exposure;
                match &known {
                    Some(k) => {
                        *eb = k.total.events;
                        *nb = k.total.exposure;
                    }
                    None => {
                        *eb += b.events;
                        *nb += b.exposure;
                    }
                }
            }
        }
    }

    /// Turns the evidence into this step's rule verdict (escalation only).
    fn decide(&mut self, t: i64, alphas: &Alphas) -> StepOutcome {
        let mut out = StepOutcome::default();
        let rule = &self.rule;
        let Some(ev) = &self.evidence else {
            self.reason = "waiting for data on both sides".into();
            return out;
        };
        let up = rule.bad == Bad::Up;
        let thr = |a: f64| (1.0 / a).ln();
        let mut reached: Option<Tier> = None;
        let mut pass = false;
        let mut deviates = false;
        let mut growth: Option<f64> = None;
        let enough;
        match ev {
            Evidence::Ratio { ev, canary } => {
                let (ec, eb) = ev.events();
                let (nc, nb) = ev.exposure();
                let pc = ratio(ec, nc);
                let pb = match &self.known {
                    Some(k) => ratio(k.total.events, k.total.exposure),
                    None => ratio(eb, nb),
                };
                let share = matches!(rule.signal, Signal::Share { .. });
                self.canary_value = Some(pc);
                self.baseline_value = Some(pb);
                self.canary_samples = if share { ec } else { nc };
                self.baseline_samples = match &self.known {
                    Some(k) => {
                        if share {
                            k.total.events
                        } else {
                            k.total.exposure
                        }
                    }
                    None => {
                        if share {
                            eb
                        } else {
                            nb
                        }
                    }
                };
                self.effect = (pb > 0.0).then(|| pc / pb);
                let min = rule.min_evidence;
                enough = if share {
                    ec + self.baseline_samples >= min
                } else {
                    nc >= min && self.baseline_samples >= min
                };
                let worse_abs = |abs: f64| if up { pc - pb >= abs } else { pb - pc >= abs };
                for tier in Tier::ALL {
                    let Some(th) = rule.threshold(tier) else {
                        continue;
                    };
                    let e = if up {
                        ev.log_evidence_above(th.relative)
                    } else {
                        ev.log_evidence_below(1.0 / th.relative)
                    };
                    if enough && e >= thr(alphas.for_tier(tier)) && worse_abs(th.absolute) {
                        reached = Some(tier);
                    }
                }
                self.confidence = confidence(if up {
                    ev.log_evidence_above(1.0)
                } else {
                    ev.log_evidence_below(1.0)
                });
                if let (Some(w), Some(p)) = (first_threshold(rule), pass_threshold(rule)) {
                    let rel_ok = if up {
                        ev.log_evidence_below(p.relative) >= thr(alphas.pass)
                    } else {
                        ev.log_evidence_above(1.0 / p.relative) >= thr(alphas.pass)
                    };
                    // Or the canary's rate is surely within the absolute floor of the baseline's.
                    let (lo, hi) = canary.interval(alphas.pass);
                    let abs_ok = p.absolute > 0.0
                        && if up {
                            hi - pb < p.absolute
                        } else {
                            pb - lo < p.absolute
                        };
                    pass = rel_ok || abs_ok;
                    deviates = exceeds(self.effect, w.relative, up) && worse_abs(w.absolute);
                }
            }
            Evidence::Quantile {
                tiers,
                canary_cum,
                baseline_cum,
            } => {
                let q = match rule.signal {
                    Signal::Quantile { quantile, .. } => quantile,
                    _ => 0.5,
                };
                let base = match &self.known {
                    Some(k) => &k.total.buckets,
                    None => baseline_cum,
                };
                let cq = histogram_quantile(q, &self.bounds, canary_cum);
                let bq = histogram_quantile(q, &self.bounds, base);
                self.canary_value = cq;
                self.baseline_value = bq;
                let total = |v: &[f64]| -> f64 {
                    self.bounds
                        .iter()
                        .zip(v)
                        .filter(|(b, _)| b.is_infinite())
                        .map(|(_, x)| *x)
                        .sum()
                };
                self.canary_samples = total(canary_cum);
                self.baseline_samples = total(base);
                self.effect = match (cq, bq) {
                    (Some(c), Some(b)) if b > 0.0 => Some(c / b),
                    _ => None,
                };
                enough = self.canary_samples >= rule.min_evidence
                    && self.baseline_samples >= rule.min_evidence;
                let tail = 1.0 - q;
                let mut conf = 0.0f64;
                for (i, tier) in Tier::ALL.iter().enumerate() {
                    let Some(Some((_, ev, frac))) = tiers.get(i) else {
                        continue;
                    };
                    let a = alphas.for_tier(*tier);
                    let vs_baseline = ev.log_evidence_above(1.0);
                    let (lo, _) = frac.interval(a);
                    conf = conf.max(vs_baseline);
                    if enough && vs_baseline >= thr(a) && lo > tail {
                        reached = Some(*tier);
                    }
                }
                self.confidence = confidence(conf);
                let first = tiers.iter().flatten().next();
                if let Some((_, ev, frac)) = pass_tier(rule)
                    .and_then(|t| tiers.get(t as usize))
                    .and_then(Option::as_ref)
                {
                    // The canary's quantile is surely below the pass tier's threshold, or its
                    // tail is surely no heavier than the baseline's (a shared slowdown).
                    let (_, hi) = frac.interval(alphas.pass);
                    let (_, ratio_hi) = ev.interval(alphas.pass);
                    pass = hi < tail || ratio_hi < 1.2;
                }
                if let Some((_, ev, frac)) = first {
                    deviates = frac.estimate() > tail && ev.estimate() > 1.0;
                } else if tiers.iter().all(Option::is_none) {
                    self.reason =
                        "the baseline's quantile lies beyond the histogram's largest finite bucket"
                            .into();
                    return out;
                }
            }
            Evidence::Mean {
                ev,
                c_sum,
                b_sum,
                c_exp,
                b_exp,
            } => {
                let cm = ratio(*c_sum, *c_exp);
                let bm = ratio(*b_sum, *b_exp);
                self.canary_value = Some(cm);
                self.baseline_value = Some(bm);
                self.canary_samples = *c_exp;
                self.baseline_samples = *b_exp;
                self.effect = (bm > 0.0).then(|| cm / bm);
                enough = ev.n() as f64 >= rule.min_evidence;
                let worse_abs = |abs: f64| if up { cm - bm >= abs } else { bm - cm >= abs };
                for tier in Tier::ALL {
                    let Some(th) = rule.threshold(tier) else {
                        continue;
                    };
                    let e = if up {
                        ev.log_evidence_above(th.relative.ln())
                    } else {
                        ev.log_evidence_below(-th.relative.ln())
                    };
                    if enough && e >= thr(alphas.for_tier(tier)) && worse_abs(th.absolute) {
                        reached = Some(tier);
                    }
                }
                self.confidence = confidence(if up {
                    ev.log_evidence_above(0.0)
                } else {
                    ev.log_evidence_below(0.0)
                });
                if let (Some(w), Some(p)) = (first_threshold(rule), pass_threshold(rule)) {
                    let rel_ok = if up {
                        ev.log_evidence_below(p.relative.ln()) >= thr(alphas.pass)
                    } else {
                        ev.log_evidence_above(-p.relative.ln()) >= thr(alphas.pass)
                    };
                    let (lo, hi) = ev.interval(alphas.pass);
                    let abs_ok = p.absolute > 0.0
                        && if up {
                            bm * (hi.exp() - 1.0) < p.absolute
                        } else {
                            bm * (1.0 - lo.exp()) < p.absolute
                        };
                    pass = enough && (rel_ok || abs_ok);
                    deviates = exceeds(self.effect, w.relative, up) && worse_abs(w.absolute);
                }
            }
            Evidence::Trend {
                t,
                d,
                c_level,
                b_level,
            } => {
                // The growth of (canary − baseline) left once a start-up's approach to its
                // steady level is fitted (stats::trend), in units per hour.
                let n = t.len() as f64;
                self.canary_value = Some(*c_level);
                self.baseline_value = Some(*b_level);
                self.canary_samples = n;
                self.baseline_samples = n;
                use crate::stats::trend;
                let fits = trend::fits(t, d);
                enough = n >= rule.min_evidence.max(3.0) && !fits.is_empty();
                let level = b_level.abs().max(1.0);
                // Not anytime-valid by construction: conservative z per tier (docs/statistics.md).
                let z = |a: f64| normal_quantile(1.0 - a / 20.0);
                let limit =
                    |th: crate::rules::Threshold| (level * (th.relative - 1.0)).max(th.absolute);
                let sign = if up { 1.0 } else { -1.0 };
                let signed: Vec<trend::Growth> = fits
                    .iter()
                    .map(|g| trend::Growth {
                        slope: sign * g.slope,
                        ..*g
                    })
                    .collect();
                // Shown: the growth every start-up hypothesis leaves over once a tier is
                // reached (what earned it), else the best-fitting hypothesis's.
                let conservative = trend::lower_bound(&signed, z(alphas.warn)).map(|(_, g)| g);
                let best = trend::best(&signed);
                for tier in Tier::ALL {
                    let Some(th) = rule.threshold(tier) else {
                        continue;
                    };
                    let lo = trend::lower_bound(&signed, z(alphas.for_tier(tier)));
                    if enough && lo.is_some_and(|(lo, _)| lo > limit(th)) {
                        reached = Some(tier);
                    }
                }
                // Too few steps: a fit says nothing worth showing yet.
                let shown = match (enough, reached) {
                    (false, _) => None,
                    (true, Some(_)) => conservative,
                    (true, None) => best,
                };
                growth = shown.map(|g| sign * g.slope);
                self.effect = growth.map(|g| 1.0 + g / level);
                self.confidence = shown
                    .filter(|g| g.se > 0.0 && g.se.is_finite())
                    .map_or(0.0, |g| normal_cdf(g.slope / g.se));
                if let (Some(w), Some(p)) = (first_threshold(rule), pass_threshold(rule)) {
                    pass = enough
                        && trend::upper_bound(&signed, z(alphas.pass))
                            .is_some_and(|u| u < limit(p));
                    deviates = enough && conservative.is_some_and(|g| g.slope > limit(w));
                }
            }
            Evidence::Count { ec, nc, eb, nb } => {
                let expected = if *nb > 0.0 { eb / nb * nc } else { 0.0 };
                let excess = ec - expected;
                self.canary_value = Some(*ec);
                self.baseline_value = Some(expected);
                self.canary_samples = *nc;
                self.baseline_samples = *nb;
                self.effect = (expected > 0.0).then(|| ec / expected);
                enough = *nc > 0.0;
                // Restarts are events, not noisy samples: judged on the counts themselves.
                for tier in Tier::ALL {
                    let Some(th) = rule.threshold(tier) else {
                        continue;
                    };
                    let rel = expected <= 0.0 || ec / expected >= th.relative;
                    if enough && excess >= th.absolute.max(1.0) && rel {
                        reached = Some(tier);
                    }
                }
                self.confidence = if excess >= 1.0 { 1.0 } else { 0.0 };
                pass = enough && pass_threshold(rule).is_some_and(|p| excess < p.absolute.max(1.0));
                deviates = excess >= 1.0;
            }
        }
        if deviates && self.first_deviation.is_none() {
            self.first_deviation = Some(t);
            out.first_deviation = true;
        }
        // Pause and rollback ask that the deviation still hold now (the last two minutes),
        // not only in the evidence summed since the deploy: a start-up that faded, a blip
        // that passed, does not stop a rollout.
        while let Some(tier) = reached.filter(|t| *t >= Tier::Pause) {
            if self.holds_now(tier) {
                break;
            }
            reached = Tier::ALL[..tier as usize]
                .iter()
                .rev()
                .find(|t| self.rule.threshold(**t).is_some())
                .copied();
        }
        // After against before, a deviation that begins minutes after the last new instance
        // started may be the world (a dependency's outage), not the deploy: nothing beside
        // it runs the old version to tell. It pauses the rollout for a human; it does not
        // roll back on its own.
        let warn_now = first_tier(&self.rule).is_some_and(|tier| {
            let n = self.recent.len();
            self.holds_over(tier, n.saturating_sub(RECENT_STEPS)..n)
        });
        if !warn_now {
            self.deviating_since = None;
        } else if self.deviating_since.is_none() {
            self.deviating_since = Some(t);
        }
        if self.known.is_some() && reached == Some(Tier::Rollback) {
            let settled = self.joined.iter().map(|j| j.2).max().unwrap_or(t)
                + self.rule.warmup.as_millis() as i64
                + ATTRIBUTABLE_AFTER_START_MS;
            if self.deviating_since.unwrap_or(t) > settled {
                reached = Some(Tier::Pause).filter(|p| self.rule.threshold(*p).is_some());
            }
        }
        let observed_long = self
            .observed_since
            .is_some_and(|s| t - s >= self.rule.observe.as_millis() as i64);
        let new = match reached {
            Some(tier) => Verdict::from_tier(tier),
            None if pass && observed_long && enough => Verdict::Pass,
            None => Verdict::Pending,
        };
        let reason = describe(
            &self.rule,
            reached,
            pass,
            observed_long,
            enough,
            self.effect,
            self.canary_value,
            self.baseline_value,
            growth,
        );
        if new > self.verdict {
            self.verdict = new;
            self.verdict_at = Some(t);
            out.verdict_changed = true;
            self.reason = reason;
            if new.is_regression() {
                self.frozen = Some(Frozen {
                    reason: self.reason.clone(),
                    effect: self.effect,
                    canary_value: self.canary_value,
                    baseline_value: self.baseline_value,
                    confidence: self.confidence,
                });
            }
        } else if let Some(f) = self
            .frozen
            .as_ref()
            .filter(|_| self.verdict.is_regression())
        {
            // A regression verdict stands (verdicts only escalate): what is shown is what
            // earned it, never a later step's "ruled out" beside a rollback.
            self.reason = f.reason.clone();
            self.effect = f.effect;
            self.canary_value = f.canary_value;
            self.baseline_value = f.baseline_value;
            self.confidence = f.confidence;
        } else {
            self.reason = reason;
        }
        out
    }

    /// Whether the canary's last [`RECENT_STEPS`] steps alone are beyond `tier`'s threshold
    /// (point estimates): the deviation holds now. After against before, pause and rollback
    /// ask it of each of the last three minutes, so a blip of a minute (a flaky dependency,
    /// seen by no old version beside the new one) does not stop a rollout; side by side,
    /// such a blip hits both versions and cancels out.
    fn holds_now(&self, tier: Tier) -> bool {
        let n = self.recent.len();
        if self.known.is_some() {
            let third = KEPT_STEPS / 3;
            return n == KEPT_STEPS
                && (0..3).all(|k| self.holds_over(tier, k * third..(k + 1) * third));
        }
        self.holds_over(tier, n.saturating_sub(RECENT_STEPS)..n)
    }

    /// [`RuleState::holds_now`] over the recent steps in `steps`.
    fn holds_over(&self, tier: Tier, steps: std::ops::Range<usize>) -> bool {
        let Some(th) = self.rule.threshold(tier) else {
            return false;
        };
        let up = self.rule.bad == Bad::Up;
        let beyond = |c: f64, b: f64| {
            if up {
                c >= b * th.relative && c - b >= th.absolute
            } else {
                c * th.relative <= b && b - c >= th.absolute
            }
        };
        match (&self.rule.signal, &self.evidence) {
            (Signal::Quantile { quantile, .. }, Some(Evidence::Quantile { tiers, .. })) => {
                // The tier's latency threshold: the canary's recent quantile lies above it.
                let Some(Some((le, _, _))) = tiers.get(tier as usize) else {
                    return false;
                };
                let (slow, n) = self.sums(Side::Canary, steps, Some(*le));
                n > 0.0 && slow / n > 1.0 - quantile
            }
            (Signal::Ratio { .. } | Signal::Rate { .. } | Signal::Level { .. }, _) => {
                let (c, nc) = self.sums(Side::Canary, steps.clone(), None);
                let (b, nb) = match &self.known {
                    Some(k) if matches!(self.rule.signal, Signal::Level { .. }) => {
                        (k.total.value_sum, k.total.value_n)
                    }
                    Some(k) => (k.total.events, k.total.exposure),
                    None => self.sums(Side::Baseline, steps, None),
                };
                nc > 0.0 && nb > 0.0 && beyond(c / nc, b / nb)
            }
            // Trends are fitted on the whole window already; counts (restarts) are events.
            _ => true,
        }
    }
}

/// What a rule showed when it reached a regression verdict.
#[derive(Debug, Clone)]
struct Frozen {
    reason: String,
    effect: Option<f64>,
    canary_value: Option<f64>,
    baseline_value: Option<f64>,
    confidence: f64,
}

/// A counter series first seen this long after its instance's other series was created
/// after the instance started: it counts from zero.
const NEW_SERIES_AFTER_MS: i64 = 20_000;

/// After against before: how long after the last new instance's warm-up a deviation may
/// begin and still be the deploy's for a rollback.
const ATTRIBUTABLE_AFTER_START_MS: i64 = 3 * 60_000;

/// Seconds per evaluation step (see `deploy::STEP_MS`).
pub const STEP_SECONDS: f64 = 15.0;

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

fn first_tier(rule: &Rule) -> Option<Tier> {
    Tier::ALL.into_iter().find(|t| rule.threshold(*t).is_some())
}

fn first_threshold(rule: &Rule) -> Option<crate::rules::Threshold> {
    first_tier(rule).and_then(|t| rule.threshold(t))
}

/// The tier a pass must rule out: the most severe configured (rollback, usually). Smaller
/// regressions that the evidence confirms raise warn or pause first, and verdicts only
/// escalate, so a pass means "no confirmed regression, and none worth a rollback".
fn pass_tier(rule: &Rule) -> Option<Tier> {
    Tier::ALL
        .into_iter()
        .rev()
        .find(|t| rule.threshold(*t).is_some())
}

fn pass_threshold(rule: &Rule) -> Option<crate::rules::Threshold> {
    pass_tier(rule).and_then(|t| rule.threshold(t))
}

/// Observations at or below `x`, interpolating linearly within buckets as
/// `histogram_quantile` does. `bounds`/`counts` are per slot, counts cumulative per `le`.
fn cumulative_at(bounds: &[f64], counts: &[f64], x: f64) -> f64 {
    let mut b: Vec<(f64, f64)> = bounds.iter().copied().zip(counts.iter().copied()).collect();
    b.sort_by(|p, q| p.0.total_cmp(&q.0));
    cumulative_at_sorted(&b, x)
}

/// Whether an effect (canary over baseline) is at least `relative` in the bad direction.
fn exceeds(effect: Option<f64>, relative: f64, up: bool) -> bool {
    effect.is_some_and(|e| {
        if up {
            e >= relative
        } else {
            e <= 1.0 / relative
        }
    })
}

/// All observations of per-slot bucket increases: the `+Inf` bucket's.
fn bucket_total(bounds: &[f64], buckets: &[f64]) -> f64 {
    bounds
        .iter()
        .zip(buckets)
        .filter(|(b, _)| b.is_infinite())
        .map(|(_, c)| *c)
        .sum()
}

/// [`cumulative_at`] over `(le, cumulative count)` pairs already sorted by `le`.
pub fn cumulative_at_sorted(buckets: &[(f64, f64)], x: f64) -> f64 {
    let (mut lo, mut lo_c) = (0.0, 0.0);
    for &(le, c) in buckets {
        if x <= le {
            if le.is_infinite() || le <= lo {
                return lo_c;
            }
            return lo_c + (c - lo_c) * (x - lo) / (le - lo);
        }
        lo = le;
        lo_c = c;
    }
    lo_c
}

fn confidence(log_evidence: f64) -> f64 {
    if log_evidence <= 0.0 {
        0.0
    } else {
        1.0 - (-log_evidence).exp()
    }
}

#[allow(clippy::too_many_arguments)]
fn describe(
    rule: &Rule,
    reached: Option<Tier>,
    pass: bool,
    observed_long: bool,
    enough: bool,
    effect: Option<f64>,
    canary: Option<f64>,
    baseline: Option<f64>,
    growth: Option<f64>,
) -> String {
    let unit = crate::rules::units::Unit::of(rule);
    let fmt = |v: Option<f64>| v.map(|x| unit.format(x)).unwrap_or_else(|| "n/a".into());
    let factor = effect
        .map(|e| format!("{e:.2}"))
        .unwrap_or_else(|| "n/a".into());
    let nums = match growth {
        // A trend's effect is its growth per hour over the baseline's level, not the levels'
        // ratio: say so.
        Some(g) => format!(
            "canary {} vs baseline {}, growing {}{}/h beyond the baseline after start-up (×{factor} of its level per hour)",
            fmt(canary),
            fmt(baseline),
            if g < 0.0 { "-" } else { "" },
            unit.format(g.abs()),
        ),
        None => format!("canary {} vs baseline {} (×{factor})", fmt(canary), fmt(baseline)),
    };
    match reached {
        Some(t) => {
            let tier = format!("{t:?}").to_lowercase();
            format!("{nums}: worse than the {tier} threshold with confidence")
        }
        None if !enough => format!(
            "{nums}: not enough evidence yet (min_evidence {})",
            rule.min_evidence
        ),
        None if pass && observed_long => {
            format!("{nums}: a regression worth a rollback is ruled out")
        }
        None if pass => format!(
            "{nums}: no regression so far; observing for {}",
            crate::config::format_duration(rule.observe)
        ),
        None => format!("{nums}: undecided"),
    }
}

/// Which instance a series comes from: its `instance` label, else its `pod`.
fn instance_of(labels: &LabelSet) -> Option<&str> {
    labels.get("instance").or_else(|| labels.get("pod"))
}

/// The `le` label of a `_bucket` series, parsed.
fn bucket_bound(labels: &LabelSet) -> Option<f64> {
    let le = labels.get("le")?;
    match le {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        s => s.parse().ok(),
    }
}

/// `histogram_quantile` as Prometheus computes it: linear interpolation within the bucket
/// the quantile falls into. `bounds` and `counts` are per slot (non-cumulative increases).
pub fn histogram_quantile(q: f64, bounds: &[f64], counts: &[f64]) -> Option<f64> {
    let mut b: Vec<(f64, f64)> = bounds.iter().copied().zip(counts.iter().copied()).collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Increases are per le series, which are cumulative buckets already.
    let total = b.iter().find(|(le, _)| le.is_infinite()).map(|(_, c)| *c)?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev_le = 0.0;
    let mut prev_c = 0.0;
    for &(le, c) in &b {
        if c >= rank {
            if le.is_infinite() {
                return Some(prev_le);
            }
            let width = le - prev_le;
            let in_bucket = c - prev_c;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(prev_le + width * (rank - prev_c) / in_bucket);
        }
        prev_le = le;
        prev_c = c;
    }
    None
}

/// Least-squares slope of y over x and its standard error.
fn ols_slope(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    if n < 3.0 {
        return (0.0, f64::INFINITY);
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    if sxx <= 0.0 {
        return (0.0, f64::INFINITY);
    }
    let slope = sxy / sxx;
    let resid: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| (b - my - slope * (a - mx)).powi(2))
        .sum();
    let se = (resid / (n - 2.0) / sxx).sqrt();
    (slope, se)
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

fn erf(x: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26, |error| < 1.5e-7.
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

/// Inverse of the standard normal CDF (bisection; called rarely).
fn normal_quantile(p: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
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

    #[test]
    fn ols_recovers_a_slope() {
        let x: Vec<f64> = (0..20).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 3.0 * v + 1.0).collect();
        let (s, se) = ols_slope(&x, &y);
        assert!((s - 3.0).abs() < 1e-9 && se < 1e-6);
        assert!((normal_quantile(0.975) - 1.96).abs() < 1e-3);
    }
}

/// Measures a rule's baseline over the pre-deploy window `[from, to]` from the ring buffers
/// of the given series (the old version's), for before/after comparisons.
pub fn known_baseline(rule: &Rule, series: &[Arc<Series>], from: i64, to: i64) -> KnownBaseline {
    let mut probe = RuleState::new(rule.clone());
    for s in series {
        probe.offer(s, Side::Baseline, to);
    }
    let counters = rule.signal.counters();
    let mut total = SideStep {
        buckets: vec![0.0; probe.bounds.len()],
        ..SideStep::default()
    };
    let mut inst_span: Vec<(i64, i64)> = vec![(i64::MAX, i64::MIN); probe.instances.len()];
    let mut slopes = Vec::new();
    // When each instance first reported any matched series: a counter created later (at
    // its first error) counts from zero.
    let mut inst_first: std::collections::HashMap<&str, i64> = Default::default();
    for m in &probe.matched {
        if let Some(f) = m.series.data.lock().ring.first_ts() {
            let e = inst_first
                .entry(instance_of(&m.series.labels).unwrap_or(""))
                .or_insert(f);
            *e = (*e).min(f);
        }
    }
    for m in &probe.matched {
        let data = m.series.data.lock();
        let first = data.ring.first_ts();
        let created_late = counters
            && first.is_some_and(|f| {
                f >= from
                    && inst_first
                        .get(instance_of(&m.series.labels).unwrap_or(""))
                        .is_some_and(|i| f > i + NEW_SERIES_AFTER_MS)
            });
        let mut prev: Option<(i64, f64)> = created_late.then(|| (first.unwrap() - 1, 0.0));
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (ts, v) in data.ring.range(from, to) {
            if v.is_nan() {
                continue;
            }
            if !counters {
                total.value_sum += v;
                total.value_n += 1.0;
                xs.push(ts as f64 / 3_600_000.0);
                ys.push(v);
                continue;
            }
            if let Some((_, pv)) = prev {
                let delta = if v >= pv { v - pv } else { v };
                match m.component {
                    Component::Numerator => total.events += delta,
                    Component::Denominator => total.exposure += delta,
                    Component::Bucket => total.buckets[m.slot] += delta,
                    Component::Value => total.events += delta,
                }
            }
            if m.component == Component::Value {
                let span = &mut inst_span[m.slot];
                span.0 = span.0.min(ts);
                span.1 = span.1.max(ts);
            }
            prev = Some((ts, v));
        }
        if xs.len() >= 3 {
            slopes.push(ols_slope(&xs, &ys).0);
        }
    }
    if matches!(
        rule.signal,
        Signal::Rate { .. } | Signal::Increase { .. } | Signal::Share { .. }
    ) {
        total.exposure = inst_span
            .iter()
            .filter(|(a, b)| b > a)
            .map(|(a, b)| (b - a) as f64 / 1000.0)
            .sum();
    }
    let slope_per_hour = if slopes.is_empty() {
        0.0
    } else {
        slopes.iter().sum::<f64>() / slopes.len() as f64
    };
    KnownBaseline {
        total,
        slope_per_hour,
        steps: ((to - from) as f64 / 1000.0 / STEP_SECONDS).max(0.0),
    }
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
