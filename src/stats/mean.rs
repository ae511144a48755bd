//! Mean of a stream of real observations (e.g. per-interval ln(canary/baseline) CPU).
//! In: one f64 per interval. Out: Robbins normal-mixture (mSPRT) evidence for one-sided
//! hypotheses on the mean and an always-valid confidence sequence, with plug-in σ.

/// Running evidence about the mean of independent observations.
#[derive(Clone, Debug)]
pub struct MeanEvidence {
    tau2: f64,
    min_sigma: f64,
    min_n: u64,
    n: u64,
    mean: f64,
    m2: f64,
    /// Normal quantile used for the small-sample upper confidence bound on σ.
    z_q: f64,
}

/// Lower-tail normal quantile for the σ upper confidence bound used by the tests
/// (see `sigma_for_test`).
const SIGMA_UCB_Z: f64 = -1.281_551_565_545; // 10 % quantile

/// Wilson–Hilferty approximation of the q-quantile of χ²_k, given z = Φ⁻¹(q).
fn chi2_quantile_wh(k: f64, z: f64) -> f64 {
    let c = 2.0 / (9.0 * k);
    let b = (1.0 - c + z * c.sqrt()).max(0.1);
    k * b * b * b
}

impl MeanEvidence {
    /// `tau`: sd of the normal mixing distribution over the mean (data units; choose it
    /// near the smallest shift you want detected fast). `min_sigma`: floor on σ (data
    /// units). `min_n`: no evidence (0) and an infinite interval before `min_n` points.
    /// Invalid `tau`/`min_sigma` (non-finite or <= 0) fall back to 1.0 / 1e-9.
    pub fn new(tau: f64, min_sigma: f64, min_n: u64) -> Self {
        let tau = if tau.is_finite() && tau > 0.0 {
            tau
        } else {
            1.0
        };
        let min_sigma = if min_sigma.is_finite() && min_sigma > 0.0 {
            min_sigma
        } else {
            1e-9
        };
        MeanEvidence {
            tau2: tau * tau,
            min_sigma,
            min_n: min_n.max(2),
            n: 0,
            mean: 0.0,
            m2: 0.0,
            z_q: SIGMA_UCB_Z,
        }
    }

    /// Add one observation (Welford). Non-finite x, or x so large that the running
    /// moments would overflow, is ignored.
    pub fn update(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        let n = self.n + 1;
        let d = x - self.mean;
        let mean = self.mean + d / n as f64;
        let m2 = self.m2 + d * (x - mean);
        if d.is_finite() && mean.is_finite() && m2.is_finite() {
            self.n = n;
            self.mean = mean;
            self.m2 = m2.max(0.0);
        }
    }

    pub fn n(&self) -> u64 {
        self.n
    }

    /// Running mean (0 before any observation).
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// max(sample sd, min_sigma); min_sigma before two observations.
    pub fn sigma(&self) -> f64 {
        let est = if self.n >= 2 {
            (self.m2 / (self.n - 1) as f64).sqrt()
        } else {
            0.0
        };
        est.max(self.min_sigma)
    }

    /// σ used by the tests and the interval: max(σ̂_UCB, min_sigma) where
    /// σ̂²_UCB = M2 / χ²_{n−1}(q) is a one-sided upper confidence bound on σ² (q = 10 %):
    /// ≈ 9.5·s² at n = 3, 1.6·s² at n = 21, 1.12·s² at n = 240.
    pub fn sigma_for_test(&self) -> f64 {
        if self.n < 2 {
            return self.min_sigma;
        }
        let k = (self.n - 1) as f64;
        (self.m2 / chi2_quantile_wh(k, self.z_q))
            .sqrt()
            .max(self.min_sigma)
    }

    /// (z², r) with z² = n (mean − mu0)² / σ², r = n τ² / σ²; None before min_n.
    fn parts(&self, mu0: f64) -> Option<(f64, f64)> {
        if self.n < self.min_n || !mu0.is_finite() {
            return None;
        }
        let s2 = self.sigma_for_test().powi(2);
        let n = self.n as f64;
        let d = self.mean - mu0;
        let z2 = n * (d / s2.sqrt()).powi(2);
        let r = n * self.tau2 / s2;
        if z2.is_finite() && r.is_finite() {
            Some((z2, r))
        } else {
            None
        }
    }

    /// Two-sided mixture log LR against H0: mean = mu0:
    /// ln Λ = −½ ln(1+r) + ½ z² · r/(1+r).
    fn log_lr_two_sided(z2: f64, r: f64) -> f64 {
        -0.5 * r.ln_1p() + 0.5 * z2 * (r / (1.0 + r))
    }

    /// Against H0: mean <= mu0. Equals the two-sided ln Λ(mu0) when mean > mu0, and the
    /// value at zero deviation, −½ ln(1+r) <= 0, otherwise. 0 before `min_n` observations.
    pub fn log_evidence_above(&self, mu0: f64) -> f64 {
        match self.parts(mu0) {
            None => 0.0,
            Some((z2, r)) => {
                let z2 = if self.mean > mu0 { z2 } else { 0.0 };
                Self::log_lr_two_sided(z2, r)
            }
        }
    }

    /// Against H0: mean >= mu0 (mirror image of `log_evidence_above`).
    pub fn log_evidence_below(&self, mu0: f64) -> f64 {
        match self.parts(mu0) {
            None => 0.0,
            Some((z2, r)) => {
                let z2 = if self.mean < mu0 { z2 } else { 0.0 };
                Self::log_lr_two_sided(z2, r)
            }
        }
    }

    /// Always-valid confidence sequence at level 1-alpha (plug-in σ):
    /// mean ± σ/√n · sqrt((1+r)/r · (2 ln(1/α) + ln(1+r))). (−inf, +inf) before `min_n`.
    pub fn interval(&self, alpha: f64) -> (f64, f64) {
        const EVERYTHING: (f64, f64) = (f64::NEG_INFINITY, f64::INFINITY);
        if !(alpha > 0.0 && alpha < 1.0) {
            return EVERYTHING;
        }
        let Some((_, r)) = self.parts(self.mean) else {
            return EVERYTHING;
        };
        let n = self.n as f64;
        let half = self.sigma_for_test() / n.sqrt()
            * ((1.0 + r) / r * (2.0 * (1.0 / alpha).ln() + r.ln_1p())).sqrt();
        if !half.is_finite() {
            return EVERYTHING;
        }
        (self.mean - half, self.mean + half)
    }
}

#[cfg(test)]
mod tests {
    use super::super::sim::{fa_tolerance, runs, Rng};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn welford_and_closed_forms() {
        let xs = [1.0, 2.0, 4.0, 7.0, 11.0];
        let mut m = MeanEvidence::new(1.0, 0.01, 3);
        for &x in &xs {
            m.update(x);
        }
        m.update(f64::NAN);
        m.update(f64::INFINITY);
        assert_eq!(m.n(), 5);
        assert!((m.mean() - 5.0).abs() < 1e-12);
        let var: f64 = xs.iter().map(|x| (x - 5.0) * (x - 5.0)).sum::<f64>() / 4.0;
        assert!((m.sigma() - var.sqrt()).abs() < 1e-12);
        // Evidence at the CS boundary equals ln(1/α).
        let (lo, hi) = m.interval(0.05);
        let thr = 20f64.ln();
        assert!((m.log_evidence_below(hi) - thr).abs() < 1e-9);
        assert!((m.log_evidence_above(lo) - thr).abs() < 1e-9);
        // σ for testing = small-sample upper confidence bound: M2 / χ²_4(0.10), χ²_4(0.10) = 1.0636.
        assert!((m.sigma_for_test() / (4.0 * var / 1.0636).sqrt() - 1.0).abs() < 0.01);
        // Textbook formula for Λ with σ known, at that σ.
        let (s2, n, tau2, d) = (m.sigma_for_test().powi(2), 5.0, 1.0, 5.0 - 1.0);
        let direct = (s2 / (s2 + n * tau2)).sqrt().ln()
            + n * n * tau2 * d * d / (2.0 * s2 * (s2 + n * tau2));
        assert!((m.log_evidence_above(1.0) - direct).abs() < 1e-9);
        assert!(m.log_evidence_below(1.0) <= 0.0);
    }

    #[test]
    fn min_n_and_floor() {
        let mut m = MeanEvidence::new(0.1, 0.05, 3);
        m.update(1.0);
        m.update(1.0);
        assert_eq!(m.log_evidence_above(0.0), 0.0);
        assert_eq!(m.interval(0.01), (f64::NEG_INFINITY, f64::INFINITY));
        m.update(1.0);
        assert_eq!(m.sigma(), 0.05);
        assert!(m.log_evidence_above(0.0) > 100.0);
    }

    #[test]
    fn interval_contains_truth_and_narrows() {
        let mut rng = Rng::new(5);
        let mut m = MeanEvidence::new(0.1, 0.01, 3);
        let mut prev = f64::INFINITY;
        for k in 1..=2000 {
            m.update(0.3 + 0.2 * rng.normal());
            if k % 200 == 0 {
                let (lo, hi) = m.interval(0.01);
                assert!(lo < 0.3 && 0.3 < hi);
                assert!(hi - lo < prev);
                prev = hi - lo;
            }
        }
        assert!(prev < 0.1);
    }

    /// Fraction of runs whose one-sided test (H0: mean <= 0 with true mean 0) ever rejects.
    fn false_alarms(
        n_runs: usize,
        seed: u64,
        min_sigma: f64,
        min_n: u64,
        draw: impl Fn(&mut Rng) -> f64,
    ) -> (f64, f64) {
        false_alarms_z(n_runs, seed, min_sigma, min_n, SIGMA_UCB_Z, draw)
    }

    fn false_alarms_z(
        n_runs: usize,
        seed: u64,
        min_sigma: f64,
        min_n: u64,
        z_q: f64,
        draw: impl Fn(&mut Rng) -> f64,
    ) -> (f64, f64) {
        let mut rng = Rng::new(seed);
        let thr = (1.0f64 / 0.01).ln();
        let (mut ours, mut naive) = (0, 0);
        for _ in 0..n_runs {
            let mut m = MeanEvidence::new(0.5, min_sigma, min_n);
            m.z_q = z_q;
            let (mut f_ours, mut f_naive) = (false, false);
            for _ in 0..240 {
                m.update(draw(&mut rng));
                f_ours |= m.log_evidence_above(0.0) >= thr;
                if m.n() >= 2 {
                    let z = m.mean() / (m.sigma() / (m.n() as f64).sqrt());
                    f_naive |= z > 2.326_347_874;
                }
                if f_ours && f_naive {
                    break;
                }
            }
            ours += f_ours as usize;
            naive += f_naive as usize;
        }
        (ours as f64 / n_runs as f64, naive as f64 / n_runs as f64)
    }

    #[test]
    fn calibration_gaussian_and_heavy_tailed() {
        let n = runs(2000);
        // σ = 1, floor well below it so that the plug-in estimate is what matters.
        let (g, gz) = false_alarms(n, 31, 0.1, 3, |r| r.normal());
        // Student-t(5) scaled to unit variance: sd of t5 is sqrt(5/3).
        let (t, tz) = false_alarms(n, 32, 0.1, 3, |r| r.student_t(5) / (5.0f64 / 3.0).sqrt());
        println!(
            "mean null, H0: μ<=0, α=1 %, 240 looks: gaussian {g:.4} (naive z {gz:.4}); t5 {t:.4} (naive z {tz:.4})"
        );
        assert!(g <= fa_tolerance(0.01, n));
        assert!(t <= fa_tolerance(0.01, n));
    }

    #[test]
    #[ignore]
    fn explore_sigma_ucb() {
        for &z in &[0.0, -0.674, -1.2816, -1.645] {
            for &mn in &[3u64, 5, 10] {
                let (g, _) = false_alarms_z(2000, 31, 0.01, mn, z, |r| r.normal());
                let (t, _) = false_alarms_z(2000, 32, 0.01, mn, z, |r| {
                    r.student_t(5) / (5.0f64 / 3.0).sqrt()
                });
                println!("z_q={z} min_n={mn}: gaussian {g:.4} t5 {t:.4}");
            }
        }
    }

    proptest! {
        #[test]
        fn never_nan(xs in prop::collection::vec(prop_oneof![Just(0.0), Just(f64::MAX), Just(-f64::MAX), Just(f64::NAN), -1e6..1e6f64, proptest::num::f64::ANY], 0..20),
                     mu0 in prop_oneof![Just(0.0), -1e6..1e6f64, proptest::num::f64::ANY],
                     alpha in prop_oneof![Just(0.01), 0.0..1.0f64]) {
            let mut m = MeanEvidence::new(0.1, 0.01, 3);
            for x in xs {
                m.update(x);
            }
            prop_assert!(!m.mean().is_nan() && !m.sigma().is_nan());
            prop_assert!(!m.log_evidence_above(mu0).is_nan());
            prop_assert!(!m.log_evidence_below(mu0).is_nan());
            let (lo, hi) = m.interval(alpha);
            prop_assert!(!lo.is_nan() && !hi.is_nan() && lo <= hi);
        }
    }
}
