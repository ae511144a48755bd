//! The baseline of a before/after comparison: the old version's series over the
//! pre-deploy window in (read from the ring buffers once); its totals and drift out.

use std::sync::Arc;

use super::*;

/// Least-squares slope of y over x and its standard error.
pub(super) fn ols_slope(x: &[f64], y: &[f64]) -> (f64, f64) {
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
