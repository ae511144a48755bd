//! Judge, stage 2 — the signals: each kept series' sample at a step's end in; this step's
//! per-side increments (events and exposure, gauge values, histogram buckets) and the
//! recent steps' levels out.

use super::*;

impl RuleState {
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
        self.warming.clear();
        if self.warming.buckets.len() < nb {
            self.warming.buckets.resize(nb, 0.0);
        }
        if let Some(g) = &mut self.groups {
            g.clear_step();
        }
        if let Some(g) = &mut self.latency_groups {
            g.clear_step();
        }
        let mut native = std::mem::take(&mut self.native);
        let mut accs = std::mem::take(&mut self.accs);
        for a in &mut accs {
            a.judged.clear();
            a.warming.clear();
        }
        for m in &mut self.matched {
            match &mut m.feed {
                Feed::Native(prev) => {
                    let step = &mut self.step[m.side as usize];
                    read_native(
                        m.series.data.lock().hist.as_deref(),
                        prev,
                        t,
                        m.warm_from,
                        &self.bounds,
                        &mut native,
                        |cum, warm_up| {
                            let to = if warm_up {
                                &mut self.warming
                            } else {
                                &mut *step
                            };
                            add_by_slot(
                                to,
                                self.latency_groups.as_mut(),
                                m.side,
                                m.group,
                                cum,
                                warm_up,
                            )
                        },
                    );
                    continue;
                }
                Feed::Projected(i, le) => {
                    let Some((ts, v)) = m.series.data.lock().at_or_before(t) else {
                        continue;
                    };
                    if v.is_nan() {
                        continue;
                    }
                    if let Some((_, pv)) = m.prev.filter(|(pts, _)| ts > *pts) {
                        let delta = counter_increase(pv, v);
                        let acc = &mut accs[*i];
                        if ts < m.warm_from {
                            acc.warming.push((*le, delta));
                        } else {
                            acc.judged.push((*le, delta));
                        }
                    }
                    if m.prev.is_none_or(|(pts, _)| ts > pts) {
                        m.prev = Some((ts, v));
                    }
                    continue;
                }
                Feed::Direct => {}
            }
            let Some((ts, v)) = m.series.data.lock().at_or_before(t) else {
                continue;
            };
            if v.is_nan() {
                continue; // a stale marker: the series went away
            }
            let step = &mut self.step[m.side as usize];
            if ts < m.warm_from {
                // The instance's own start-up: its value and its clock move on, nothing is
                // judged; its counts are kept aside (when a deviation began).
                if counters {
                    if let Some((_, pv)) = m.prev.filter(|(pts, _)| ts > *pts) {
                        let delta = counter_increase(pv, v);
                        match m.component {
                            Component::Numerator => self.warming.events += delta,
                            Component::Denominator => self.warming.exposure += delta,
                            Component::Bucket => self.warming.buckets[m.slot] += delta,
                            Component::Value => {}
                        }
                    }
                }
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
            let delta = counter_increase(pv, v);
            m.prev = Some((ts, v));
            if let (Some(groups), Some(g)) = (&mut self.groups, m.group) {
                match m.component {
                    Component::Numerator => groups.count(g, m.side as usize, delta, 0.0),
                    Component::Denominator => groups.count(g, m.side as usize, 0.0, delta),
                    _ => {}
                }
            }
            if let (Some(groups), Some(g), Component::Bucket) =
                (&mut self.latency_groups, m.group, m.component)
            {
                groups.count(g, m.side as usize, m.slot, delta);
            }
            match m.component {
                Component::Numerator => step.events += delta,
                Component::Denominator => step.exposure += delta,
                Component::Bucket => step.buckets[m.slot] += delta,
                Component::Value => {
                    step.events += delta;
                    let inst = &mut self.instances[m.slot];
                    inst.events += delta;
                    if let Some(last) = inst.last_ts {
                        if ts > last {
                            let secs = (ts - last) as f64 / 1000.0;
                            step.exposure += secs;
                            inst.secs += secs;
                            inst.last_ts = Some(ts);
                        }
                    } else {
                        inst.last_ts = Some(ts);
                    }
                }
            }
        }
        // Classic histograms counted at every bound of a native grid.
        let cum = &mut native.3;
        for a in &mut accs {
            for (points, warming) in [(&mut a.judged, false), (&mut a.warming, true)] {
                if points.is_empty() {
                    continue;
                }
                points.sort_by(|x, y| x.0.total_cmp(&y.0));
                cum.clear();
                cum.extend(self.bounds.iter().map(|b| cumulative_at_sorted(points, *b)));
                let to = if warming {
                    &mut self.warming
                } else {
                    &mut self.step[a.side as usize]
                };
                add_by_slot(
                    to,
                    self.latency_groups.as_mut(),
                    a.side,
                    a.group,
                    cum,
                    warming,
                );
            }
        }
        self.native = native;
        self.accs = accs;
    }

    /// The statistic of this step alone on each side (a chart point).
    pub(super) fn record_history(&mut self, t: i64) {
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
        // The new version's requests of this step, its instances still warming up included:
        // the load it serves.
        if matches!(self.rule.signal, Signal::Quantile { .. }) {
            if self.served.len() == KEPT_STEPS {
                self.served.pop_front();
            }
            let c = &self.step[Side::Canary as usize].buckets;
            self.served.push_back(
                bucket_total(&self.bounds, c) + bucket_total(&self.bounds, &self.warming.buckets),
            );
        }
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
    pub(super) fn sums(
        &self,
        side: Side,
        steps: std::ops::Range<usize>,
        latency: Option<f64>,
    ) -> (f64, f64) {
        self.sums_skipping(side, steps, 0..0, latency)
    }

    /// The new version's data over the kept steps in `steps`, added into one step (kept
    /// whole, for later readings at another tier's latency).
    pub(super) fn canary_over(&self, steps: std::ops::Range<usize>) -> SideStep {
        let mut sum = SideStep::default();
        for step in self.recent.range(steps) {
            sum.add(&step[Side::Canary as usize]);
        }
        sum
    }

    /// [`RuleState::sums`] leaving out the recent steps in `skip`.
    pub(super) fn sums_skipping(
        &self,
        side: Side,
        steps: std::ops::Range<usize>,
        skip: std::ops::Range<usize>,
        latency: Option<f64>,
    ) -> (f64, f64) {
        let first = steps.start;
        let kept = |i: &(usize, _)| !skip.contains(&(first + i.0));
        let steps = self.recent.range(steps).enumerate().filter(kept);
        steps.fold((0.0, 0.0), |(a, n), (_, step)| {
            let (x, m) = self.counted(&step[side as usize], latency);
            (a + x, n + m)
        })
    }

    /// One side's data of a step as (numerator, denominator); see [`RuleState::sums`].
    pub(super) fn counted(&self, s: &SideStep, latency: Option<f64>) -> (f64, f64) {
        match self.rule.signal {
            Signal::Quantile { .. } => {
                let total = bucket_total(&self.bounds, &s.buckets);
                let below = latency.map_or(total, |le| cumulative_at(&self.bounds, &s.buckets, le));
                ((total - below).max(0.0), total)
            }
            Signal::Level { .. } | Signal::Trend { .. } => (s.value_sum, s.value_n),
            _ => (s.events, s.exposure),
        }
    }
}

/// A counter's increase from `prev` to `v`: a counter that went down was reset and counted
/// up from zero since (Prometheus' `increase` semantics).
pub(crate) fn counter_increase(prev: f64, v: f64) -> f64 {
    if v >= prev {
        v - prev
    } else {
        v
    }
}

/// Observations at or below `x`, interpolating linearly within buckets as
/// `histogram_quantile` does. `bounds`/`counts` are per slot, counts cumulative per `le`.
pub(crate) fn cumulative_at(bounds: &[f64], counts: &[f64], x: f64) -> f64 {
    let mut b: Vec<(f64, f64)> = bounds.iter().copied().zip(counts.iter().copied()).collect();
    b.sort_by(|p, q| p.0.total_cmp(&q.0));
    cumulative_at_sorted(&b, x)
}

/// All observations of per-slot bucket increases: the `+Inf` bucket's.
pub(crate) fn bucket_total(bounds: &[f64], buckets: &[f64]) -> f64 {
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

/// Adds a histogram's counts by slot to `to` (this step's side, or the warm-up's), and to
/// its latency group unless they are its instance's warm-up.
fn add_by_slot(
    to: &mut SideStep,
    groups: Option<&mut LatencyGroups>,
    side: Side,
    group: Option<usize>,
    counts: &[f64],
    warm_up: bool,
) {
    for (x, c) in to.buckets.iter_mut().zip(counts) {
        *x += c;
    }
    if let (Some(groups), Some(g), false) = (groups, group, warm_up) {
        for (slot, c) in counts.iter().enumerate() {
            groups.count(g, side as usize, slot, *c);
        }
    }
}

/// Reads a native histogram series at `t` (`prev`: its previous sample) and hands the
/// observations since, as cumulative counts at `bounds`, to `add` (with whether they are
/// its instance's warm-up).
fn read_native(
    ring: Option<&crate::store::HistRing>,
    prev: &mut Option<(i64, NativeHistogram)>,
    t: i64,
    warm_from: i64,
    bounds: &[f64],
    scratch: &mut (NativeHistogram, NativeHistogram, NativeHistogram, Vec<f64>),
    mut add: impl FnMut(&[f64], bool),
) {
    let (cur, reduced, inc, cum) = scratch;
    let Some(ts) = ring.and_then(|r| r.at_or_before(t, cur)) else {
        return;
    };
    if cur.is_stale() {
        return; // the series went away
    }
    match prev {
        Some((pts, p)) if ts > *pts => {
            if native::increase(p, cur, reduced, inc).is_some() && !bounds.is_empty() {
                cum.clear();
                cum.resize(bounds.len(), 0.0);
                native::add_cumulative(inc, bounds, cum);
                add(cum, ts < warm_from);
            }
            *pts = ts;
            std::mem::swap(p, cur);
        }
        Some(_) => {}
        None => *prev = Some((ts, cur.clone())),
    }
}
