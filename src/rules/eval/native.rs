//! Judge, native histograms: two samples of a native histogram series in, the observations
//! between them out, counted at the rule's bucket bounds — the same cumulative counts per
//! `le` a classic histogram's `_bucket` series give, so everything after (quantiles, tiers,
//! evidence) is the same for both forms.
//!
//! - Increases follow Prometheus: a reset (the hint, or a count, zero count or bucket that
//!   went down, a finer schema, a narrower zero bucket) starts from zero; a coarser schema
//!   or a wider zero bucket merges the earlier sample's buckets first.
//! - A rule that meets native histograms before any classic bucket judges on [`grid`]:
//!   every bucket edge of schema 3 (buckets 9 % wide) from 2^-20 to 2^20, the same for every
//!   rule, so histograms of any pod, version or time add up bound by bound; finer schemas
//!   are counted there exactly (its bounds are edges of theirs), coarser ones interpolated.
//!   Classic histograms met later are counted at the grid's bounds too. Where classic
//!   buckets came first (old pods classic, new pods native), native histograms are counted
//!   at the classic bounds.

use crate::ingest::Bucket;
use crate::store::{HistRing, NativeHistogram};

/// The upper bound of bucket `index` at `schema`: `2^(index · 2^-schema)`.
pub(crate) fn upper_bound(schema: i8, index: i32) -> f64 {
    (f64::from(index) * (-f64::from(schema)).exp2()).exp2()
}

/// The index at `schema - delta` of bucket `index` at `schema` (Prometheus' reduction:
/// each coarser bucket merges `2^delta` finer ones).
fn reduced(index: i32, delta: u32) -> i32 {
    ((index - 1) >> delta) + 1
}

/// `h`'s buckets at the coarser `schema` (merged in place).
fn reduce(h: &mut NativeHistogram, schema: i8) {
    if schema >= h.schema {
        return;
    }
    let delta = (h.schema - schema) as u32;
    for side in [&mut h.negative, &mut h.positive] {
        let mut out: Vec<Bucket> = Vec::with_capacity(side.len());
        for b in side.iter() {
            let i = reduced(b.index, delta);
            match out.last_mut() {
                Some(last) if last.index == i => last.count += b.count,
                _ => out.push(Bucket {
                    index: i,
                    count: b.count,
                }),
            }
        }
        *side = out;
    }
    h.schema = schema;
}

/// Moves `h`'s buckets at or below `threshold` into its zero bucket (a wider zero bucket).
fn widen_zero(h: &mut NativeHistogram, threshold: f64) {
    if threshold <= h.zero_threshold {
        return;
    }
    let schema = h.schema;
    let mut moved = 0.0;
    h.positive.retain(|b| {
        let inside = upper_bound(schema, b.index) <= threshold;
        if inside {
            moved += b.count;
        }
        !inside
    });
    h.negative.retain(|b| {
        let inside = upper_bound(schema, b.index) <= threshold;
        if inside {
            moved += b.count;
        }
        !inside
    });
    h.zero_count += moved;
    h.zero_threshold = threshold;
}

/// The observations from `prev` to `cur` into `out`. `None` for a gauge histogram (no
/// increase to speak of). A reset counts `cur` whole.
pub(crate) fn increase(
    prev: &NativeHistogram,
    cur: &NativeHistogram,
    scratch: &mut NativeHistogram,
    out: &mut NativeHistogram,
) -> Option<()> {
    use crate::ingest::ResetHint;
    if cur.reset_hint == ResetHint::Gauge {
        return None;
    }
    out.clone_from(cur);
    if cur.reset_hint == ResetHint::Yes
        || cur.count < prev.count
        || cur.schema > prev.schema
        || cur.zero_threshold < prev.zero_threshold
    {
        return Some(());
    }
    // The earlier sample at the later one's layout.
    scratch.clone_from(prev);
    reduce(scratch, cur.schema);
    widen_zero(scratch, cur.zero_threshold);
    let trusted = cur.reset_hint == ResetHint::No;
    if !trusted && cur.zero_count < scratch.zero_count {
        return Some(());
    }
    let mut reset = false;
    for (side, before) in [
        (&mut out.negative, &scratch.negative),
        (&mut out.positive, &scratch.positive),
    ] {
        let mut j = 0;
        for b in before {
            while j < side.len() && side[j].index < b.index {
                j += 1;
            }
            match side.get_mut(j).filter(|x| x.index == b.index) {
                Some(x) if x.count >= b.count => x.count -= b.count,
                Some(x) => {
                    reset |= !trusted;
                    x.count = 0.0;
                }
                None => reset |= !trusted && b.count > 0.0,
            }
        }
    }
    if reset {
        // A bucket that went down or away: the counts restarted.
        out.clone_from(cur);
        return Some(());
    }
    out.count = (cur.count - scratch.count).max(0.0);
    out.zero_count = (cur.zero_count - scratch.zero_count).max(0.0);
    Some(())
}

/// Walks `ring`'s samples in `from..=to`, stale markers left out, calling `f` with each
/// sample's time and its observations since the sample before (`None` for the first one
/// unless `before` stands for it, and for a gauge histogram).
pub(crate) fn for_each_increase(
    ring: &HistRing,
    from: i64,
    to: i64,
    before: Option<NativeHistogram>,
    mut f: impl FnMut(i64, Option<&NativeHistogram>),
) {
    let mut prev = before;
    let (mut reduced, mut inc) = (NativeHistogram::default(), NativeHistogram::default());
    ring.for_each_in(from, to, |ts, h| {
        if h.is_stale() {
            return;
        }
        match prev.as_mut() {
            Some(p) => {
                let counted = increase(p, h, &mut reduced, &mut inc).is_some();
                f(ts, counted.then_some(&inc));
                p.clone_from(h);
            }
            None => {
                f(ts, None);
                prev = Some(h.clone());
            }
        }
    });
}

/// Adds `h`'s cumulative count at every bound of `bounds` into `into` (observations at or
/// below each; linear within the bucket a bound falls inside, as `histogram_quantile`
/// interpolates; all of them at `+Inf`).
pub(crate) fn add_cumulative(h: &NativeHistogram, bounds: &[f64], into: &mut [f64]) {
    let below: f64 = h.negative.iter().map(|b| b.count).sum::<f64>() + h.zero_count;
    if bounds.windows(2).all(|w| w[0] < w[1]) {
        // Ascending (the grid): one pass over bounds and buckets together.
        let mut k = 0;
        let mut c = 0.0;
        for (x, out) in bounds.iter().zip(into.iter_mut()) {
            if x.is_infinite() {
                *out += h.count;
                continue;
            }
            while k < h.positive.len() && upper_bound(h.schema, h.positive[k].index) <= *x {
                c += h.positive[k].count;
                k += 1;
            }
            let mut at = c + if *x >= h.zero_threshold { below } else { 0.0 };
            if let Some(b) = h.positive.get(k) {
                let ub = upper_bound(h.schema, b.index);
                let lb = upper_bound(h.schema, b.index - 1).max(h.zero_threshold);
                if *x > lb {
                    at += b.count * (x - lb) / (ub - lb);
                }
            }
            *out += at;
        }
        return;
    }
    for (x, out) in bounds.iter().zip(into.iter_mut()) {
        if x.is_infinite() {
            *out += h.count;
            continue;
        }
        let mut c = if *x >= h.zero_threshold { below } else { 0.0 };
        for b in &h.positive {
            let ub = upper_bound(h.schema, b.index);
            if ub <= *x {
                c += b.count;
                continue;
            }
            let lb = upper_bound(h.schema, b.index - 1).max(h.zero_threshold);
            if *x > lb {
                c += b.count * (x - lb) / (ub - lb);
            }
            break;
        }
        *out += c;
    }
}

/// The schema of the grid native histograms are judged on: buckets 9 % wide
/// (client_golang's default resolution); finer histograms are counted at its bounds, which
/// are bucket edges of theirs too.
pub(crate) const GRID_SCHEMA: i8 = 3;
/// The grid's range: `2^-GRID_OCTAVES` to `2^GRID_OCTAVES` (about 1 µs to 12 days in
/// seconds); observations beyond count below its first bound or above its last.
const GRID_OCTAVES: i32 = 20;

/// The bounds native histograms are judged at, ascending, `+Inf` last: the same for every
/// rule and deploy, so histograms of any pod, version or time add up bound by bound.
pub(crate) fn grid() -> Vec<f64> {
    let per_octave = 1 << GRID_SCHEMA;
    let mut bounds: Vec<f64> = (-GRID_OCTAVES * per_octave..=GRID_OCTAVES * per_octave)
        .map(|i| upper_bound(GRID_SCHEMA, i))
        .collect();
    bounds.push(f64::INFINITY);
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::ResetHint;

    fn h(schema: i8, count: f64, buckets: &[(i32, f64)]) -> NativeHistogram {
        NativeHistogram {
            schema,
            count,
            zero_threshold: 1e-128,
            positive: buckets
                .iter()
                .map(|&(index, count)| Bucket { index, count })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn bucket_bounds_follow_the_schema() {
        assert_eq!(upper_bound(0, 0), 1.0);
        assert_eq!(upper_bound(0, 3), 8.0);
        assert_eq!(upper_bound(-2, 1), 16.0);
        assert!((upper_bound(3, -26) - 0.105_112).abs() < 1e-6);
        // A coarser schema merges 2^delta buckets: 1..=2 at schema 1 into 1 at schema 0.
        assert_eq!(reduced(1, 1), 1);
        assert_eq!(reduced(2, 1), 1);
        assert_eq!(reduced(3, 1), 2);
        assert_eq!(reduced(0, 1), 0);
        assert_eq!(reduced(-1, 1), 0);
        assert_eq!(reduced(-2, 1), -1);
    }

    #[test]
    fn an_increase_is_the_difference_and_a_reset_starts_from_zero() {
        let (mut s, mut out) = (NativeHistogram::default(), NativeHistogram::default());
        let a = h(3, 10.0, &[(-30, 4.0), (-28, 6.0)]);
        let b = h(3, 25.0, &[(-30, 9.0), (-29, 1.0), (-28, 15.0)]);
        increase(&a, &b, &mut s, &mut out).unwrap();
        assert_eq!(out.count, 15.0);
        assert_eq!(
            out.positive,
            vec![
                Bucket {
                    index: -30,
                    count: 5.0
                },
                Bucket {
                    index: -29,
                    count: 1.0
                },
                Bucket {
                    index: -28,
                    count: 9.0
                }
            ]
        );
        // A restart: fewer observations than before.
        let r = h(3, 3.0, &[(-30, 3.0)]);
        increase(&b, &r, &mut s, &mut out).unwrap();
        assert_eq!(out, r);
        // A bucket that went down with a larger count: a reset too, unless the sender
        // says it is none.
        let odd = h(3, 30.0, &[(-30, 1.0), (-28, 29.0)]);
        increase(&b, &odd, &mut s, &mut out).unwrap();
        assert_eq!(out, odd);
        let no = NativeHistogram {
            reset_hint: ResetHint::No,
            ..odd.clone()
        };
        increase(&b, &no, &mut s, &mut out).unwrap();
        assert_eq!(out.count, 5.0);
        // A coarser schema between scrapes (the client lowered its resolution): the earlier
        // sample is merged to it first; a finer one is a reset, as in Prometheus.
        let coarse = h(2, 35.0, &[(-15, 14.0), (-14, 21.0)]);
        increase(&b, &coarse, &mut s, &mut out).unwrap();
        // -30 at schema 3 is -15 at schema 2; -29 and -28 are -14.
        assert_eq!(out.count, 10.0);
        assert_eq!(
            out.positive,
            vec![
                Bucket {
                    index: -15,
                    count: 5.0
                },
                Bucket {
                    index: -14,
                    count: 5.0
                }
            ]
        );
        let fine = h(4, 40.0, &[(-60, 40.0)]);
        increase(&b, &fine, &mut s, &mut out).unwrap();
        assert_eq!(out, fine);
        // A gauge histogram has no increase.
        let g = NativeHistogram {
            reset_hint: ResetHint::Gauge,
            ..b.clone()
        };
        assert!(increase(&a, &g, &mut s, &mut out).is_none());
    }

    #[test]
    fn cumulative_counts_at_bounds_are_exact_at_bucket_edges_and_linear_inside() {
        let x = h(0, 10.0, &[(1, 4.0), (3, 6.0)]); // (1,2]: 4, (4,8]: 6
        let bounds = [0.5, 2.0, 3.0, 4.0, 6.0, 8.0, 100.0, f64::INFINITY];
        let mut c = vec![0.0; bounds.len()];
        add_cumulative(&x, &bounds, &mut c);
        assert_eq!(c, vec![0.0, 4.0, 4.0, 4.0, 7.0, 10.0, 10.0, 10.0]);
    }

    #[test]
    fn the_grid_holds_every_schema_3_edge_from_a_microsecond_to_days() {
        let g = grid();
        assert_eq!(g.len(), 2 * 20 * 8 + 2);
        assert!(g.windows(2).all(|w| w[0] < w[1]));
        assert!(g[0] < 1e-6 && g[g.len() - 2] > 1e6);
        // Edges of finer schemas too: schema 5's bucket 4·k ends where schema 3's k does.
        assert!(g.contains(&upper_bound(5, -4 * 26)));
        // A schema 5 histogram counted at the grid is exact at its edges.
        let x = h(5, 10.0, &[(-105, 4.0), (-103, 6.0)]);
        let mut c = vec![0.0; g.len()];
        add_cumulative(&x, &g, &mut c);
        let at = |b: f64| c[g.iter().position(|x| *x == b).unwrap()];
        // (-105 ends at 2^-3.28, inside schema 3's -26; -103 at 2^-3.22, inside -25.)
        assert_eq!(at(upper_bound(3, -27)), 0.0);
        assert_eq!(at(upper_bound(3, -26)), 4.0);
        assert_eq!(at(upper_bound(3, -25)), 10.0);
    }
}
