//! Judge, stage 3 — the evidence: a step's per-side data in; the running evidence per
//! signal out (rate ratios, quantile exceedances, mean log ratios, trend points, counts).

use super::*;

/// Pseudo-exposure factor for a baseline known from the pre-deploy window: a baseline
/// M times larger than the canary turns the conditional binomial test into the one-sample
/// Poisson test against the known baseline rate (docs/statistics.md, "before and after").
pub(super) const KNOWN_BASELINE_FACTOR: f64 = 1e6;

/// Evidence kept per signal.
pub(super) enum Evidence {
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
        /// The baseline's quantile the tiers were placed from, and whether they were placed
        /// again from the judged steps (at most once).
        placed: Option<f64>,
        replaced: bool,
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

impl RuleState {
    /// Folds one step's data into the evidence.
    pub(super) fn fold(&mut self, c: &SideStep, b: &SideStep) {
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
                // Side by side, a step in which the baseline's errors burst beyond its own
                // rate so far is the world's (a flaky dependency's blip on every pod): both
                // versions' errors are then mostly the blip's, and counted, they pull the
                // ratio towards 1 — one 45-second blip at 3 % outweighs twenty minutes of a
                // 0.1 % ratio. The deploy's regression is the new version's alone and
                // never makes the baseline burst. Not for shares (traffic).
                let burst = known.is_none()
                    && matches!(rule.signal, Signal::Ratio { .. })
                    && baseline_burst(
                        ev.events().1,
                        ev.exposure().1,
                        b.events,
                        b.exposure,
                        rule.min_evidence,
                    );
                if !burst {
                    ev.update(c.events, c.exposure, eb, nb);
                    canary.update(c.events, c.exposure);
                }
            }
            Signal::Quantile { quantile, .. } => {
                let q = *quantile;
                if self.evidence.is_none() {
                    let base: Vec<f64> = match &known {
                        Some(k) => k.total.buckets.clone(),
                        None => self.warm_baseline.clone(),
                    };
                    let qb = histogram_quantile(q, &self.bounds, &base);
                    self.evidence = Some(Evidence::Quantile {
                        tiers: quantile_tiers(rule, &self.bounds, qb),
                        canary_cum: vec![0.0; self.bounds.len()],
                        baseline_cum: vec![0.0; self.bounds.len()],
                        placed: qb,
                        replaced: false,
                    });
                }
                let Some(Evidence::Quantile {
                    tiers,
                    canary_cum,
                    baseline_cum,
                    placed,
                    replaced,
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
                    // The warm-up's baseline placed the tiers; a slow minute in it (a
                    // dependency's timeouts) sets them far beyond what the baseline shows
                    // once judged, and a canary's slower tail never reaches them. Placed
                    // again, once, from the judged steps, the tiers' evidence starting anew.
                    if !*replaced
                        && placed
                            .is_some_and(|p| placed_too_high(rule, &self.bounds, baseline_cum, p))
                    {
                        let now = histogram_quantile(q, &self.bounds, baseline_cum);
                        *tiers = quantile_tiers(rule, &self.bounds, now);
                        *placed = now;
                        *replaced = true;
                    }
                }
                let count = |buckets: &[f64]| bucket_total(&self.bounds, buckets);
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
}

/// Whether `x` events over `n` in one step lie beyond a burst of the rate `e / m` seen so
/// far ([`super::baseline::burst_excess`], which leaves such minutes out of a baseline
/// before the deploy alike), once `m` holds `min` exposure: the world's blip, not the
/// steady rate.
pub(super) fn baseline_burst(e: f64, m: f64, x: f64, n: f64, min: f64) -> bool {
    if m < min.max(1.0) || n <= 0.0 {
        return false;
    }
    super::baseline::burst_excess(x, n * e / m) > 0.0
}

/// Whether a quantile rule's tiers, placed from the baseline's quantile `placed` during
/// the warm-up, lie surely beyond the quantile the judged baseline (`buckets`) shows:
/// [`PLACED_TOO_HIGH`] times beyond its upper confidence bound (the quantile three
/// standard errors of the order statistic up). A slow minute in the warm-up (a
/// dependency's timeouts) places them so; the noise of a few slow requests does not.
pub(crate) fn placed_too_high(rule: &Rule, bounds: &[f64], buckets: &[f64], placed: f64) -> bool {
    let q = match rule.signal {
        Signal::Quantile { quantile, .. } => quantile,
        _ => return false,
    };
    let n = bucket_total(bounds, buckets);
    if n < rule.min_evidence {
        return false;
    }
    let up = (q + 3.0 * (q * (1.0 - q) / n).sqrt()).min(1.0 - 0.1 / n);
    histogram_quantile(up, bounds, buckets).is_some_and(|hi| placed > hi * PLACED_TOO_HIGH)
}

/// How far beyond the judged baseline's quantile (its upper confidence bound) the
/// warm-up's placement may lie before the tiers are placed again.
pub(crate) const PLACED_TOO_HIGH: f64 = 1.1;

/// A quantile rule's tiers placed from the baseline's quantile `qb`: each tier's latency,
/// where judgeable (below the largest finite bucket bound), with fresh evidence.
pub(super) fn quantile_tiers(
    rule: &Rule,
    bounds: &[f64],
    qb: Option<f64>,
) -> Vec<Option<(f64, RatioEvidence, RateEvidence)>> {
    Tier::ALL
        .iter()
        .map(|&tier| {
            let le = tier_latency(rule, tier, bounds, qb?)?;
            Some((le, RatioEvidence::new(&[1.0]), RateEvidence::new()))
        })
        .collect()
}

/// The latency a quantile rule's `tier` stands at over the baseline's quantile `qb` (its
/// relative and absolute thresholds, whichever is further), if a bucket bound lies beyond
/// it: at or beyond the largest finite bound, no count tells the share slower than it.
pub(crate) fn tier_latency(rule: &Rule, tier: Tier, bounds: &[f64], qb: f64) -> Option<f64> {
    let th = rule.threshold(tier)?;
    let top = bounds
        .iter()
        .copied()
        .filter(|b| b.is_finite())
        .fold(0.0, f64::max);
    let le = (qb * th.relative).max(qb + th.absolute);
    (le < top).then_some(le)
}

#[cfg(test)]
mod tests {
    use super::{baseline_burst, placed_too_high};

    #[test]
    fn a_blip_bursts_beyond_the_rate_so_far_and_noise_does_not() {
        // 0.1 % over 20,000 requests so far; a step of 250 requests expects 0.25 errors.
        assert!(!baseline_burst(20.0, 20_000.0, 2.0, 250.0, 200.0));
        assert!(baseline_burst(20.0, 20_000.0, 8.0, 250.0, 200.0));
        // Not before the rate so far rests on `min_evidence` requests.
        assert!(!baseline_burst(0.0, 150.0, 8.0, 250.0, 200.0));
    }

    #[test]
    fn a_placement_beyond_what_the_judged_baseline_shows_is_too_high() {
        let rule = crate::rules::RuleSet::embedded()
            .rules
            .into_iter()
            .find(|r| r.name == "latency_p99")
            .unwrap();
        let bounds = [0.1, 0.25, 0.5, 1.0, f64::INFINITY];
        // Cumulative: 5,000 requests, 1 % slower than 0.25 s, 0.2 % slower than 0.5 s:
        // a p99 of 0.25 s, its upper bound below 0.5 s.
        let judged = [4000.0, 4950.0, 4990.0, 5000.0, 5000.0];
        // A slow minute in the warm-up placed the p99 at 0.7 s: surely too high.
        assert!(placed_too_high(&rule, &bounds, &judged, 0.7));
        // At 0.3 s it is within what the judged requests can tell apart.
        assert!(!placed_too_high(&rule, &bounds, &judged, 0.3));
        // Too few judged requests tell nothing.
        let few = [80.0, 99.0, 100.0, 100.0, 100.0];
        assert!(!placed_too_high(&rule, &bounds, &few, 5.0));
    }
}
