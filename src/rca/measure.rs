//! Ring buffers in, per-series totals over a window of event time out: reset-aware counter
//! increases, gauge means and growth, and histogram exceedances, as [`Obs`] (events over
//! exposure) that the attribution can add up along any label.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::rules::{Component, Rule, Signal};
use crate::store::{LabelSet, Series};

/// How far before a window's start a counter's starting value is looked for (a scrape
/// interval or four).
const LOOKBACK_MS: i64 = 60_000;

/// One series over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// Counter increase; a value below the previous one is a reset (counted up from zero).
    pub increase: f64,
    /// Seconds from the starting sample (the last one before the window, else the first in
    /// it) to the newest in the window.
    pub seconds: f64,
    pub first: Option<(i64, f64)>,
    pub last: Option<(i64, f64)>,
    /// Samples in the window and their sum (gauges).
    pub n: f64,
    pub sum: f64,
}

/// Reads one series' samples with `from <= ts <= to`; stale markers are skipped.
pub fn read(series: &Series, from: i64, to: i64) -> Reading {
    let data = series.data.lock();
    let mut r = Reading::default();
    let mut prev: Option<f64> = None;
    let mut start: Option<i64> = None;
    for (ts, v) in data.ring.range(from.saturating_sub(LOOKBACK_MS), to) {
        if v.is_nan() {
            continue;
        }
        if ts < from {
            prev = Some(v);
            start = Some(ts);
            continue;
        }
        start.get_or_insert(ts);
        r.n += 1.0;
        r.sum += v;
        r.first.get_or_insert((ts, v));
        r.last = Some((ts, v));
        if let Some(pv) = prev {
            r.increase += crate::rules::eval::counter_increase(pv, v);
        }
        prev = Some(v);
    }
    if let (Some(s), Some((lt, _))) = (start, r.last) {
        r.seconds = (lt - s) as f64 / 1000.0;
    }
    r
}

/// What one series (or one histogram) contributes: `events` over `exposure`, in the rule's
/// terms (errors over requests, slow requests over requests, CPU seconds over seconds, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Obs {
    pub labels: LabelSet,
    pub events: f64,
    pub exposure: f64,
}

/// The rule's observations of `series` over `[from, to]`. `latency` is the threshold above
/// which a request counts as an event for quantile rules (`None`: computed from these
/// series' own quantile).
pub fn observe(
    rule: &Rule,
    series: &[Arc<Series>],
    from: i64,
    to: i64,
    latency: Option<f64>,
) -> Vec<Obs> {
    // A series feeding two components of a rule (errors are requests too) is read once.
    let mut seen = std::collections::HashSet::with_capacity(series.len());
    let unique: Vec<Arc<Series>> = series
        .iter()
        .filter(|s| seen.insert(Arc::as_ptr(s) as usize))
        .cloned()
        .collect();
    let series = &unique[..];
    let selectors = rule.signal.selectors();
    let matches = |s: &Series, c: Component| {
        selectors
            .iter()
            .any(|(comp, sel)| *comp == c && sel.matches(&s.labels))
    };
    match &rule.signal {
        Signal::Ratio { .. } => series
            .iter()
            .map(|s| {
                let r = read(s, from, to);
                Obs {
                    labels: s.labels.clone(),
                    events: if matches(s, Component::Numerator) {
                        r.increase
                    } else {
                        0.0
                    },
                    exposure: if matches(s, Component::Denominator) {
                        r.increase
                    } else {
                        0.0
                    },
                }
            })
            .collect(),
        Signal::Quantile { quantile, .. } => {
            let hists = histograms(series, from, to);
            let l = latency
                .or_else(|| {
                    let total = sum_buckets(hists.values());
                    let (b, c): (Vec<f64>, Vec<f64>) = total.into_iter().unzip();
                    crate::rules::eval::histogram_quantile(*quantile, &b, &c)
                })
                .unwrap_or(f64::INFINITY);
            // A threshold beyond the largest finite bound cannot be placed: nothing counts.
            hists
                .into_iter()
                .map(|(_, (labels, buckets))| {
                    let total = buckets
                        .iter()
                        .filter(|(le, _)| le.is_infinite())
                        .map(|(_, c)| *c)
                        .sum::<f64>();
                    Obs {
                        labels,
                        events: (total - cumulative_at(&buckets, l)).max(0.0),
                        exposure: total,
                    }
                })
                .collect()
        }
        Signal::Rate { .. } | Signal::Increase { .. } | Signal::Share { .. } => series
            .iter()
            .map(|s| {
                let r = read(s, from, to);
                Obs {
                    labels: s.labels.clone(),
                    events: r.increase,
                    exposure: r.seconds,
                }
            })
            .collect(),
        Signal::Level { .. } => series
            .iter()
            .map(|s| {
                let r = read(s, from, to);
                Obs {
                    labels: s.labels.clone(),
                    events: r.sum,
                    exposure: r.n,
                }
            })
            .collect(),
        Signal::Trend { .. } => series
            .iter()
            .map(|s| {
                let r = read(s, from, to);
                let (growth, secs) = match (r.first, r.last) {
                    (Some(a), Some(b)) => (b.1 - a.1, (b.0 - a.0) as f64 / 1000.0),
                    _ => (0.0, 0.0),
                };
                Obs {
                    labels: s.labels.clone(),
                    events: growth,
                    exposure: secs,
                }
            })
            .collect(),
    }
}

/// The `q` quantile of the summed histograms of `series` over `[from, to]`.
pub fn quantile_of(q: f64, series: &[Arc<Series>], from: i64, to: i64) -> Option<f64> {
    let hists = histograms(series, from, to);
    let total = sum_buckets(hists.values());
    let (b, c): (Vec<f64>, Vec<f64>) = total.into_iter().unzip();
    crate::rules::eval::histogram_quantile(q, &b, &c)
}

/// Bucket increases per histogram (a series' labels without `le`), bounds ascending.
type Hist = (LabelSet, Vec<(f64, f64)>);

fn histograms(series: &[Arc<Series>], from: i64, to: i64) -> BTreeMap<String, Hist> {
    let mut out: BTreeMap<String, Hist> = BTreeMap::new();
    for s in series {
        if let Some(buckets) = native_buckets(s, from, to) {
            let labels: Vec<(&str, &str)> = s.labels.iter().collect();
            out.insert(
                format!("{labels:?}"),
                (LabelSet::from_strs(&labels), buckets),
            );
            continue;
        }
        let Some(le) = s.labels.get("le").and_then(parse_le) else {
            continue;
        };
        let rest: Vec<(&str, &str)> = s.labels.iter().filter(|(n, _)| *n != "le").collect();
        let key = format!("{rest:?}");
        let inc = read(s, from, to).increase;
        let entry = out
            .entry(key)
            .or_insert_with(|| (LabelSet::from_strs(&rest), Vec::new()));
        entry.1.push((le, inc));
    }
    for (_, b) in out.values_mut() {
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
    }
    out
}

/// A native histogram series' observations over `[from, to]` as cumulative counts at the
/// judge's native grid (`None` for a series that holds no native histogram).
fn native_buckets(s: &Series, from: i64, to: i64) -> Option<Vec<(f64, f64)>> {
    use crate::rules::eval::native;
    let data = s.data.lock();
    let ring = data.hist.as_ref()?;
    let grid = native::grid();
    let mut acc = vec![0.0; grid.len()];
    // From the last sample before the window.
    native::for_each_increase(
        ring,
        from.saturating_sub(LOOKBACK_MS),
        to,
        None,
        |ts, inc| {
            if let Some(inc) = inc.filter(|_| ts >= from) {
                native::add_cumulative(inc, &grid, &mut acc);
            }
        },
    );
    Some(grid.into_iter().zip(acc).collect())
}

/// Histograms added up bound by bound: at every bound any of them has, each counted there
/// (interpolated within its bucket where it has no such bound: a native histogram beside
/// classic ones).
fn sum_buckets<'a>(hists: impl Iterator<Item = &'a Hist> + Clone) -> Vec<(f64, f64)> {
    let mut bounds: Vec<f64> = hists
        .clone()
        .flat_map(|(_, b)| b.iter().map(|x| x.0))
        .collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    let mut total: Vec<(f64, f64)> = bounds.iter().map(|b| (*b, 0.0)).collect();
    for (_, b) in hists {
        for (le, t) in total.iter_mut() {
            *t += match b.binary_search_by(|x| x.0.total_cmp(le)) {
                Ok(i) => b[i].1,
                Err(_) if le.is_infinite() => 0.0,
                Err(_) => cumulative_at(b, *le),
            };
        }
    }
    total
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

/// Observations at or below `x` from cumulative buckets (ascending bounds): the judge's own
/// interpolation, as `histogram_quantile` does it.
pub use crate::rules::eval::cumulative_at_sorted as cumulative_at;

/// Sums of events and exposure.
pub fn totals(obs: &[Obs]) -> (f64, f64) {
    obs.iter()
        .fold((0.0, 0.0), |(e, n), o| (e + o.events, n + o.exposure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_interpolates_within_buckets() {
        let b = [(0.1, 10.0), (0.2, 30.0), (f64::INFINITY, 40.0)];
        for (x, want) in [(0.05, 5.0), (0.15, 20.0), (5.0, 30.0)] {
            let got = cumulative_at(&b, x);
            assert!((got - want).abs() < 1e-9, "{x}: {got}");
        }
    }
}
