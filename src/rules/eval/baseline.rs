//! The baseline of a before/after comparison: the old version's series over the
//! pre-deploy window in (read from the ring buffers once); its totals and drift out.

use std::sync::Arc;

use super::*;

/// Fewest points of a gauge series after its warm-up for its level and drift to be read
/// from them alone (3 minutes of 15-second scrapes).
const MIN_GAUGE_POINTS: usize = 12;

/// A gauge series' own drift per hour: the slope of the fit that explains it best once a
/// start-up's approach is allowed for (stats::trend) — a straight line through an old
/// process's warm-up, or through half a garbage collector's sawtooth, reads as growth.
fn gauge_drift(ts: &[i64], ys: &[f64]) -> Option<f64> {
    let hours: Vec<f64> = ts.iter().map(|t| *t as f64 / 3_600_000.0).collect();
    crate::stats::trend::best(&crate::stats::trend::fits(&hours, ys)).map(|g| g.slope)
}

/// The median of `v` (reordered), `None` when empty.
fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Measures a rule's baseline over the pre-deploy window `[from, to]` from the ring buffers
/// of the given series (the old version's), for before/after comparisons.
pub fn known_baseline(rule: &Rule, series: &[Arc<Series>], from: i64, to: i64) -> KnownBaseline {
    // A histogram's old processes once warmed up, as the new version's are judged: an old
    // instance's first minutes (cold caches: its latency ×2–×4) are not its steady state.
    let warmup = match rule.signal {
        Signal::Quantile { .. } => i64::try_from(rule.warmup.as_millis()).unwrap_or(i64::MAX),
        _ => 0,
    };
    KnownBaseline {
        // Kept for as long as the deploy is judged: the steps serve no one there.
        by_step: Vec::new(),
        ..measure(rule, series, from, to, true, warmup)
    }
}

/// A version's counts over `[from, to]` as they were, bursts included: what the old version
/// served after the deploy began, while it still served beside the new one, and the new
/// version's over the same time. `warmup_ms`: each instance's first counts after it first
/// reported are left out (a new instance's warm-up, which is not judged).
pub(super) fn counts_over(
    rule: &Rule,
    series: &[Arc<Series>],
    from: i64,
    to: i64,
    warmup_ms: i64,
) -> KnownBaseline {
    measure(rule, series, from, to, false, warmup_ms)
}

/// [`known_baseline`]; `pool`: a ratio's minutes of bursts left out; `warmup_ms`: as
/// [`counts_over`].
fn measure(
    rule: &Rule,
    series: &[Arc<Series>],
    from: i64,
    to: i64,
    pool: bool,
    warmup_ms: i64,
) -> KnownBaseline {
    let mut probe = RuleState::new(rule.clone());
    // Classic histograms first: an old version exposing both forms is counted at its
    // classic bounds (native histograms are counted there too), never on a grid its classic
    // buckets cannot be read at.
    let mut ordered: Vec<&Arc<Series>> = series.iter().collect();
    ordered.sort_by_key(|s| s.data.lock().hist.is_some());
    for s in ordered {
        probe.offer(s, Side::Baseline, to);
    }
    let counters = rule.signal.counters();
    let mut total = SideStep {
        buckets: vec![0.0; probe.bounds.len()],
        ..SideStep::default()
    };
    let mut inst_span: Vec<(i64, i64)> = vec![(i64::MAX, i64::MIN); probe.instances.len()];
    let minutes = ((to - from).max(0) / MINUTE_MS + 1) as usize;
    // Each step's counts as they were (bursts included), for side-by-side comparisons; a
    // ratio's are pooled by minute robustly below.
    let steps = ((to - from).max(0) / STEP_MS + 1) as usize;
    let mut by_step = vec![
        SideStep {
            buckets: vec![0.0; probe.bounds.len()],
            ..SideStep::default()
        };
        steps
    ];
    // And per group (route), for a regression local to one.
    let mut per_group: Vec<(String, [Vec<f64>; 2])> = Vec::new();
    let mut per_latency_group: Vec<(String, Vec<f64>)> = Vec::new();
    let mut slopes = Vec::new();
    let mut requests = 0.0;
    // The part of the window the series cover: a service younger than the window has fewer
    // steps of history than the window has.
    let mut covered = (i64::MAX, i64::MIN);
    // When each instance first reported any matched series: a counter created later (at
    // its first error) counts from zero.
    let mut inst_first: std::collections::HashMap<&str, i64> = Default::default();
    for m in &probe.matched {
        if let Some(f) = m.series.data.lock().first_ts() {
            let e = inst_first
                .entry(instance_of(&m.series.labels).unwrap_or(""))
                .or_insert(f);
            *e = (*e).min(f);
        }
    }
    // Cumulative counts by slot of one native histogram sample's observations.
    let mut cum: Vec<f64> = Vec::new();
    for m in &probe.matched {
        let data = m.series.data.lock();
        if let (Feed::Native(_), Some(ring)) = (&m.feed, data.hist.as_deref()) {
            // A native histogram: its increases counted at the probe's bounds.
            let inst_seen = inst_first.get(instance_of(&m.series.labels).unwrap_or(""));
            let warm_from = inst_seen.map_or(i64::MIN, |f| f.saturating_add(warmup_ms));
            let first = ring.first_ts();
            let created_late = first.is_some_and(|f| {
                f >= from && inst_seen.is_some_and(|i| f > i + NEW_SERIES_AFTER_MS)
            });
            let latency_group = crate::rules::groups::slot_in(
                &mut per_latency_group,
                &m.series.labels,
                |(k, _)| k,
                |k| (k, vec![0.0; probe.bounds.len()]),
            );
            let bounds = &probe.bounds;
            let before = created_late.then(NativeHistogram::default);
            native::for_each_increase(ring, from, to, before, |ts, inc| {
                covered = (covered.0.min(ts), covered.1.max(ts));
                let Some(inc) = inc.filter(|_| !bounds.is_empty()) else {
                    return;
                };
                requests += inc.count;
                if ts >= warm_from {
                    cum.clear();
                    cum.resize(bounds.len(), 0.0);
                    native::add_cumulative(inc, bounds, &mut cum);
                    let at = &mut by_step[(((ts - from).max(0) / STEP_MS) as usize).min(steps - 1)];
                    for (slot, c) in cum.iter().enumerate() {
                        total.buckets[slot] += c;
                        at.buckets[slot] += c;
                        if let Some(g) = latency_group {
                            per_latency_group[g].1[slot] += c;
                        }
                    }
                }
            });
            continue;
        }
        let first = data.ring.first_ts();
        // When the series' instance first reported, and when it had warmed up `ms` later.
        let inst_seen = inst_first.get(instance_of(&m.series.labels).unwrap_or(""));
        let warm_after = |ms: i64| inst_seen.map_or(i64::MIN, |f| f.saturating_add(ms));
        let created_late = counters
            && first.is_some_and(|f| {
                f >= from && inst_seen.is_some_and(|i| f > i + NEW_SERIES_AFTER_MS)
            });
        let mut prev: Option<(i64, f64)> = created_late.then(|| (first.unwrap() - 1, 0.0));
        // Before the deploy, unless that leaves too little of the series in the window.
        let warm_from = Some(warm_after(warmup_ms))
            .filter(|w| {
                warmup_ms == 0
                    || !pool
                    || data.ring.range(from.max(*w), to).count() >= MIN_GAUGE_POINTS
            })
            .unwrap_or(i64::MIN);
        let group = match m.component {
            Component::Numerator | Component::Denominator => crate::rules::groups::slot_in(
                &mut per_group,
                &m.series.labels,
                |(k, _)| k,
                |k| (k, [vec![0.0; minutes], vec![0.0; minutes]]),
            ),
            _ => None,
        };
        let latency_group = match m.component {
            Component::Bucket => crate::rules::groups::slot_in(
                &mut per_latency_group,
                &m.series.labels,
                |(k, _)| k,
                |k| (k, vec![0.0; probe.bounds.len()]),
            ),
            _ => None,
        };
        // A histogram's count: the requests served, warm-ups included (the load).
        let load_slot = m.component == Component::Bucket
            && probe.bounds.get(m.slot).is_some_and(|b| b.is_infinite());
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (ts, v) in data.ring.range(from, to) {
            if v.is_nan() {
                continue;
            }
            covered = (covered.0.min(ts), covered.1.max(ts));
            if !counters {
                xs.push(ts);
                ys.push(v);
                continue;
            }
            if let Some((_, pv)) = prev.filter(|_| load_slot) {
                requests += counter_increase(pv, v);
            }
            if let Some((_, pv)) = prev.filter(|_| ts >= warm_from) {
                let delta = counter_increase(pv, v);
                let minute = (((ts - from).max(0) / MINUTE_MS) as usize).min(minutes - 1);
                if let Some(g) = group {
                    let side = usize::from(m.component == Component::Denominator);
                    per_group[g].1[side][minute] += delta;
                }
                let at = &mut by_step[(((ts - from).max(0) / STEP_MS) as usize).min(steps - 1)];
                match m.component {
                    Component::Numerator => at.events += delta,
                    Component::Denominator => at.exposure += delta,
                    Component::Bucket => {
                        total.buckets[m.slot] += delta;
                        at.buckets[m.slot] += delta;
                        if let Some(g) = latency_group {
                            per_latency_group[g].1[m.slot] += delta;
                        }
                    }
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
        if !counters {
            // A gauge's level and drift are the old processes' once warmed up: an instance's
            // first `warmup` (its start-up's approach to its steady level) is left out, as
            // it is for the new version, unless that leaves too little.
            let warm = warm_after(i64::try_from(rule.warmup.as_millis()).unwrap_or(i64::MAX));
            let skip = xs.iter().take_while(|ts| **ts < warm).count();
            let skip = if xs.len() - skip >= MIN_GAUGE_POINTS {
                skip
            } else {
                0
            };
            let (xs, ys) = (&xs[skip..], &ys[skip..]);
            total.value_sum += ys.iter().sum::<f64>();
            total.value_n += ys.len() as f64;
            if let Some(slope) = gauge_drift(xs, ys) {
                slopes.push(slope);
            }
        }
    }
    let (events, exposure) = if pool {
        // A ratio's events and exposure per minute of the window (minute i: steps 4i..4i+4).
        let per_minute = |f: fn(&SideStep) -> f64| -> Vec<f64> {
            by_step
                .chunks((MINUTE_MS / STEP_MS) as usize)
                .map(|c| c.iter().map(f).sum())
                .collect()
        };
        pool_without_bursts(&per_minute(|s| s.events), &per_minute(|s| s.exposure))
    } else {
        (
            by_step.iter().map(|s| s.events).sum(),
            by_step.iter().map(|s| s.exposure).sum(),
        )
    };
    total.events += events;
    total.exposure += exposure;
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
    // The median instance's: one old process that restarted in the window (and warmed up
    // again) does not make the whole version look as if it grew.
    let slope_per_hour = median(&mut slopes).unwrap_or(0.0);
    let groups = per_group
        .into_iter()
        .map(|(k, [e, n])| {
            let (e, n) = pool_without_bursts(&e, &n);
            (k, e, n)
        })
        .collect();
    KnownBaseline {
        total,
        requests,
        slope_per_hour,
        steps: if covered.1 > covered.0 {
            (covered.1 - covered.0) as f64 / 1000.0 / STEP_SECONDS
        } else {
            0.0
        },
        groups,
        latency_groups: per_latency_group,
        bounds: probe.bounds,
        forms: probe.forms,
        last_at: (covered.1 > i64::MIN).then_some(covered.1),
        by_step,
    }
}

const MINUTE_MS: i64 = 60_000;

/// The share of the window's exposure that bursts may take out of a baseline: beyond it,
/// the "bursts" are the service's normal state.
const MAX_BURST_SHARE: f64 = 0.2;

/// Pools a ratio's per-minute events and exposure into the baseline's, leaving out minutes
/// with a burst of events the rest of the window makes implausible (more than 4 Poisson
/// standard deviations and 3 events above the pooled rate): a flaky dependency's 30-second
/// blip of 5xx on every pod before the deploy would otherwise raise the baseline and hide a
/// regression of the new version, which a before/after comparison has no concurrent old
/// version to tell from the world. At most [`MAX_BURST_SHARE`] of the exposure is left out.
pub(super) fn pool_without_bursts(events: &[f64], exposure: &[f64]) -> (f64, f64) {
    let total_n: f64 = exposure.iter().sum();
    let mut keep = vec![true; events.len()];
    for _ in 0..3 {
        let (e, n) = kept_sums(events, exposure, &keep);
        if n <= 0.0 {
            break;
        }
        let p = e / n;
        let mut dropped = total_n - n;
        let mut burst: Vec<(f64, usize)> = (0..events.len())
            .filter(|&i| keep[i] && exposure[i] > 0.0)
            .filter_map(|i| {
                let excess = burst_excess(events[i], exposure[i] * p);
                (excess > 0.0).then_some((excess, i))
            })
            .collect();
        if burst.is_empty() {
            break;
        }
        burst.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, i) in burst {
            if dropped + exposure[i] > MAX_BURST_SHARE * total_n {
                break;
            }
            dropped += exposure[i];
            keep[i] = false;
        }
    }
    kept_sums(events, exposure, &keep)
}

/// How far `x` events lie beyond a burst of the `expected` count (4 Poisson standard
/// deviations and 3 events above it): positive for a burst.
pub(super) fn burst_excess(x: f64, expected: f64) -> f64 {
    x - expected - 4.0 * expected.sqrt() - 3.0
}

fn kept_sums(events: &[f64], exposure: &[f64], keep: &[bool]) -> (f64, f64) {
    (0..events.len())
        .filter(|&i| keep[i])
        .fold((0.0, 0.0), |(e, n), i| (e + events[i], n + exposure[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_errors_before_the_deploy_does_not_raise_the_baseline() {
        // 30 minutes at 2,000 requests and 5 errors a minute; one minute with a 3 % blip.
        let mut events = vec![5.0; 30];
        let exposure = vec![2000.0; 30];
        events[12] += 60.0;
        let (e, n) = pool_without_bursts(&events, &exposure);
        assert_eq!(n, 29.0 * 2000.0);
        assert!((e / n - 0.0025).abs() < 1e-9);
    }

    #[test]
    fn ordinary_noise_and_a_quiet_service_are_pooled_whole() {
        let events = [3.0, 7.0, 5.0, 9.0, 2.0, 6.0, 4.0, 5.0];
        let exposure = [2000.0; 8];
        assert_eq!(pool_without_bursts(&events, &exposure), (41.0, 16000.0));
        // At 0.2 requests a second a single error in a minute is no burst.
        let events = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let exposure = [12.0; 6];
        assert_eq!(pool_without_bursts(&events, &exposure), (1.0, 72.0));
    }

    #[test]
    fn a_service_that_is_bursty_throughout_keeps_most_of_its_bursts() {
        // Every other minute bursts: no more than a fifth of the exposure is left out.
        let events: Vec<f64> = (0..20)
            .map(|i| if i % 2 == 0 { 40.0 } else { 2.0 })
            .collect();
        let exposure = vec![1000.0; 20];
        let (_, n) = pool_without_bursts(&events, &exposure);
        assert!(n >= 0.8 * 20000.0, "{n}");
    }

    #[test]
    fn an_old_process_s_warm_up_is_no_drift_and_a_real_drift_is() {
        let mib = 1024.0 * 1024.0;
        let ts: Vec<i64> = (0..100).map(|i| i * 15_000).collect();
        let hours: Vec<f64> = ts.iter().map(|t| *t as f64 / 3_600_000.0).collect();
        // 200 MiB, 80 MiB low at the first sample left, approaching with τ = 4 min.
        let warming: Vec<f64> = hours
            .iter()
            .map(|h| 200.0 * mib - 80.0 * mib * (-h * 15.0).exp())
            .collect();
        let line = crate::stats::trend::fits(&hours, &warming)[0].slope;
        assert!(
            line > 50.0 * mib,
            "a straight line reads {:.0} MiB/h",
            line / mib
        );
        let drift = gauge_drift(&ts, &warming).unwrap();
        assert!(drift.abs() < 5.0 * mib, "{:.1} MiB/h", drift / mib);
        // 30 MiB/h on top of it is the series' drift.
        let drifting: Vec<f64> = hours
            .iter()
            .zip(&warming)
            .map(|(h, v)| v + 30.0 * mib * h)
            .collect();
        let drift = gauge_drift(&ts, &drifting).unwrap();
        assert!((drift / mib - 30.0).abs() < 3.0, "{:.1} MiB/h", drift / mib);
    }

    #[test]
    fn the_median_of_an_even_and_an_odd_count() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 100.0]), Some(3.5));
    }
}
