//! One-sample event rate λ (events per unit exposure). In: per-interval event counts and
//! exposures. Out: the rate estimate and an always-valid confidence sequence for λ from a
//! gamma–Poisson mixture martingale (prior: equal mixture of exponentials over 18 decades).

use super::{ln_gamma, LogSumExp};

/// Prior components: λ ~ Exp(rate b_k) with mean 1/b_k log-spaced from 1e-9 to 1e9
/// (two per decade), equal weights. Together ≈ log-uniform on λ over that range.
const LN_MEAN_MIN: f64 = -20.723_265_836_946_41; // ln 1e-9
const COMPONENTS: usize = 37;
const LN_STEP: f64 = 1.151_292_546_497_022_8; // ln(10)/2

/// The alternatives of [`RateEvidence::log_evidence_share_above`], as multiples of the
/// null's odds.
const ABOVE_ODDS: [f64; 6] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0];

/// Running evidence about a single Poisson rate.
#[derive(Clone, Debug, Default)]
pub struct RateEvidence {
    events: f64,
    exposure: f64,
}

impl RateEvidence {
    pub fn new() -> Self {
        RateEvidence {
            events: 0.0,
            exposure: 0.0,
        }
    }

    /// Add one interval. Negative or non-finite inputs drop the interval.
    pub fn update(&mut self, events: f64, exposure: f64) {
        if !(events.is_finite() && exposure.is_finite() && events >= 0.0 && exposure >= 0.0) {
            return;
        }
        let (n, e) = (self.events + events, self.exposure + exposure);
        if n.is_finite() && e.is_finite() {
            self.events = n;
            self.exposure = e;
        }
    }

    pub fn events(&self) -> f64 {
        self.events
    }

    pub fn exposure(&self) -> f64 {
        self.exposure
    }

    /// events / exposure (0 if no exposure).
    pub fn estimate(&self) -> f64 {
        if self.exposure > 0.0 {
            self.events / self.exposure
        } else {
            0.0
        }
    }

    /// ln ∫ λ^N e^{−λE} dπ(λ): the mixture's marginal likelihood (without the 1/N! factor,
    /// which cancels in the likelihood ratio).
    fn ln_marginal(&self) -> f64 {
        let (n, e) = (self.events, self.exposure);
        let mut acc = LogSumExp::new();
        for k in 0..COMPONENTS {
            // Exp(b) prior: ∫ λ^N e^{−λE} b e^{−bλ} dλ = b Γ(N+1) / (b+E)^{N+1}
            let ln_b = -(LN_MEAN_MIN + LN_STEP * k as f64);
            let b = ln_b.exp();
            acc.add(ln_b - (n + 1.0) * (b + e).ln());
        }
        acc.value() - (COMPONENTS as f64).ln() + ln_gamma(n + 1.0)
    }

    /// ln of the mixture likelihood ratio against the point null λ = lambda0.
    pub fn log_evidence(&self, lambda0: f64) -> f64 {
        if !(lambda0 > 0.0) || !lambda0.is_finite() {
            return 0.0;
        }
        let (n, e) = (self.events, self.exposure);
        let ll0 = if n > 0.0 { n * lambda0.ln() } else { 0.0 } - lambda0 * e;
        let v = self.ln_marginal() - ll0;
        if v.is_nan() {
            0.0
        } else {
            v
        }
    }

    /// For events that are a share of the exposure (slow requests of all requests): ln of
    /// a mixture likelihood ratio for "share > p0" against share ≤ p0. The alternatives
    /// have the odds of p0 times [`ABOVE_ODDS`], equally weighted; each binomial component
    /// has E[LR] = p·p1/p0 + (1−p)(1−p1)/(1−p0) ≤ 1 for every p ≤ p0, so their mean is a
    /// supermartingale and evidence ≥ ln(1/α) an always-valid test at α. Far sharper than
    /// the confidence sequence's 18-decade prior where the question is one share against
    /// one threshold (a latency quantile: is the canary's share of requests slower than
    /// the threshold surely above the quantile's tail?).
    pub fn log_evidence_share_above(&self, p0: f64) -> f64 {
        if !(p0 > 0.0 && p0 < 1.0) {
            return 0.0;
        }
        let (x, n) = (self.events, self.exposure);
        if !(n > 0.0) || x > n {
            return 0.0;
        }
        let odds = p0 / (1.0 - p0);
        let mut acc = LogSumExp::new();
        for r in ABOVE_ODDS {
            let p1 = r * odds / (1.0 + r * odds);
            acc.add(x * (p1 / p0).ln() + (n - x) * ((1.0 - p1) / (1.0 - p0)).ln());
        }
        let v = acc.value() - (ABOVE_ODDS.len() as f64).ln();
        if v.is_nan() {
            0.0
        } else {
            v
        }
    }

    /// Always-valid confidence sequence for the rate at level 1-alpha:
    /// {λ0 : mixture LR against λ = λ0 < 1/alpha}. (0, +inf) when undefined.
    pub fn interval(&self, alpha: f64) -> (f64, f64) {
        const EVERYTHING: (f64, f64) = (0.0, f64::INFINITY);
        if !(alpha > 0.0 && alpha < 1.0) {
            return EVERYTHING;
        }
        let (n, e) = (self.events, self.exposure);
        // Accept λ0 iff  g(λ0) = −N ln λ0 + λ0 E  <  c = ln(1/α) − ln marginal.
        let c = (1.0 / alpha).ln() - self.ln_marginal();
        if !c.is_finite() {
            return EVERYTHING;
        }
        if n <= 0.0 {
            return if e > 0.0 { (0.0, c / e) } else { EVERYTHING };
        }
        if e <= 0.0 {
            let lo = (-c / n).exp();
            return if lo.is_finite() {
                (lo, f64::INFINITY)
            } else {
                EVERYTHING
            };
        }
        let mle = n / e;
        // With λ0 = mle·e^w:  accept iff  e^w − w < h := (c + N ln mle)/N.
        let h = (c + n * mle.ln()) / n;
        if !h.is_finite() {
            return EVERYTHING;
        }
        if h <= 1.0 {
            return (mle, mle);
        }
        let f = |w: f64| w.exp() - w - h;
        let fp = |w: f64| w.exp() - 1.0;
        // f is convex with f(0) < 0: Newton from outside each root converges monotonically.
        let newton = |mut w: f64| {
            for _ in 0..200 {
                let d = f(w) / fp(w);
                if !d.is_finite() {
                    break;
                }
                w -= d;
                if d.abs() <= 1e-13 * (1.0 + w.abs()) {
                    break;
                }
            }
            w
        };
        let w_lo = newton(-h);
        let w_hi = newton((2.0 * h).ln());
        let lo = mle * w_lo.exp();
        let hi = mle * w_hi.exp();
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return EVERYTHING;
        }
        (lo.min(mle), hi.max(mle))
    }
}

#[cfg(test)]
mod tests {
    use super::super::sim::{fa_tolerance, runs, Rng};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn evidence_a_share_is_above_grows_with_an_excess_and_stays_small_without() {
        let mut r = RateEvidence::new();
        r.update(20.0, 1000.0); // 2 % against 1 %
        let two = r.log_evidence_share_above(0.01);
        let mut s = RateEvidence::new();
        s.update(40.0, 2000.0);
        assert!(s.log_evidence_share_above(0.01) > two && two > 0.0);
        let mut at = RateEvidence::new();
        at.update(10.0, 1000.0); // exactly the null
        assert!(at.log_evidence_share_above(0.01) < 0.5);
        // Sharper than the confidence sequence: 2 % of 3000 is sure at 1 % error here.
        let mut c = RateEvidence::new();
        c.update(60.0, 3000.0);
        assert!(c.log_evidence_share_above(0.01) > (1.0f64 / 0.01).ln());
    }

    #[test]
    fn evidence_a_share_is_above_keeps_its_false_alarm_rate_under_continuous_monitoring() {
        // 2000 runs of 400 looks at a rate exactly at the null: the running evidence crosses
        // ln(1/α) in at most about α of them (Ville's inequality).
        let alpha: f64 = 0.05;
        let mut rng = Rng::new(11);
        let mut crossed = 0;
        for _ in 0..2000 {
            let mut r = RateEvidence::new();
            for _ in 0..400 {
                r.update(rng.binomial(50.0, 0.01), 50.0);
                if r.log_evidence_share_above(0.01) >= (1.0 / alpha).ln() {
                    crossed += 1;
                    break;
                }
            }
        }
        assert!(crossed as f64 / 2000.0 <= alpha, "{crossed} of 2000");
    }

    #[test]
    fn interval_is_the_level_set_of_the_evidence() {
        let mut r = RateEvidence::new();
        for _ in 0..40 {
            r.update(3.0, 1000.0);
        }
        let (lo, hi) = r.interval(0.01);
        let thr = 100f64.ln();
        assert!(
            (r.log_evidence(lo) - thr).abs() < 1e-8,
            "{}",
            r.log_evidence(lo)
        );
        assert!((r.log_evidence(hi) - thr).abs() < 1e-8);
        assert!(r.log_evidence(0.003) < 0.0);
        assert!(lo < 0.003 && 0.003 < hi);
        assert!((r.estimate() - 0.003).abs() < 1e-15);
    }

    #[test]
    fn intervals_narrow_with_data_and_handle_zeros() {
        let mut r = RateEvidence::new();
        assert_eq!(r.interval(0.05), (0.0, f64::INFINITY));
        r.update(0.0, 100.0);
        let (lo, hi0) = r.interval(0.05);
        assert_eq!(lo, 0.0);
        assert!(hi0.is_finite() && hi0 > 0.0);
        r.update(0.0, 100.0);
        assert!(r.interval(0.05).1 < hi0);
        let mut prev = f64::INFINITY;
        for _ in 0..50 {
            r.update(2.0, 100.0);
            let (lo, hi) = r.interval(0.05);
            assert!(lo <= 0.02 && 0.02 <= hi * 1.0001);
            assert!((hi / lo.max(1e-300)).ln() <= prev + 1e-12 || lo == 0.0);
            if lo > 0.0 {
                prev = (hi / lo).ln();
            }
        }
        assert!(prev < 1.0);
        // Events with no exposure: only a lower bound.
        let mut q = RateEvidence::new();
        q.update(5.0, 0.0);
        let (lo, hi) = q.interval(0.05);
        assert!(lo > 0.0 && hi == f64::INFINITY);
    }

    #[test]
    fn calibration_poisson() {
        // "Restarts per pod-second" style: rates spanning small and large counts.
        let n = runs(2000);
        let alpha = 0.01;
        let mut rng = Rng::new(21);
        for &(lambda, expo) in &[(0.002, 150.0), (0.05, 450.0)] {
            let mut misses = 0;
            for _ in 0..n {
                let mut r = RateEvidence::new();
                for k in 0..240 {
                    let ex = expo * [1.0, 2.0, 0.5][(k / 40) % 3];
                    r.update(rng.poisson(lambda * ex), ex);
                    let (lo, hi) = r.interval(alpha);
                    if !(lo <= lambda && lambda <= hi) {
                        misses += 1;
                        break;
                    }
                }
            }
            let fa = misses as f64 / n as f64;
            println!(
                "rate CS λ={lambda}, exposure/interval≈{expo}: P(ever excludes truth) = {fa:.4}"
            );
            assert!(fa <= fa_tolerance(alpha, n));
        }
    }

    proptest! {
        #[test]
        fn never_nan(updates in prop::collection::vec((prop_oneof![Just(0.0), Just(f64::MAX), 0.0..1e6f64, 0.0..f64::MAX],
                                                       prop_oneof![Just(0.0), Just(f64::MAX), Just(1e-300), 0.0..1e6f64, 0.0..f64::MAX]), 0..10),
                     alpha in prop_oneof![Just(0.01), 0.0..1.0f64]) {
            let mut r = RateEvidence::new();
            for (n, e) in updates {
                r.update(n, e);
            }
            let (lo, hi) = r.interval(alpha);
            prop_assert!(!lo.is_nan() && !hi.is_nan() && lo <= hi && lo >= 0.0);
            prop_assert!(!r.estimate().is_nan());
            prop_assert!(!r.log_evidence(1.0).is_nan());
        }
    }
}
