//! Anytime-valid evidence accumulators: per-push counts / observations flow in,
//! log likelihood-ratio evidence and always-valid confidence sequences flow out.
//! Shared numeric helpers (log-sum-exp, softplus, ln Γ) live here; see docs/statistics.md.

#![forbid(unsafe_code)]
// `!(x > 0.0)` is used on purpose: it is also true for NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod mean;
pub mod rate;
pub mod ratio;
pub mod trend;

/// Numerically stable `ln(1 + e^x)`.
#[inline]
pub(crate) fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// Streaming log-sum-exp: accumulates `ln Σ exp(v_i)` without overflow.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogSumExp {
    max: f64,
    sum: f64,
}

impl LogSumExp {
    #[inline]
    pub(crate) fn new() -> Self {
        LogSumExp {
            max: f64::NEG_INFINITY,
            sum: 0.0,
        }
    }

    #[inline]
    pub(crate) fn add(&mut self, v: f64) {
        if v.is_nan() || v == f64::NEG_INFINITY {
            return;
        }
        if v > self.max {
            // Rescale what we have to the new maximum.
            self.sum = self.sum * (self.max - v).exp() + 1.0;
            self.max = v;
        } else {
            self.sum += (v - self.max).exp();
        }
    }

    /// `ln Σ exp(v_i)`; `-inf` when nothing (finite) was added.
    #[inline]
    pub(crate) fn value(&self) -> f64 {
        if self.max == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            self.max + self.sum.ln()
        }
    }
}

/// `ln Σ exp(v_i)` of a slice.
#[allow(dead_code)]
pub(crate) fn log_sum_exp(vs: &[f64]) -> f64 {
    let mut acc = LogSumExp::new();
    for &v in vs {
        acc.add(v);
    }
    acc.value()
}

/// Lanczos coefficients (g = 7, n = 9).
const LANCZOS_G: f64 = 7.0;
const LANCZOS: [f64; 9] = [
    0.999_999_999_999_809_9,
    676.520_368_121_885_1,
    -1_259.139_216_722_402_8,
    771.323_428_777_653_1,
    -176.615_029_162_140_6,
    12.507_343_278_686_905,
    -0.138_571_095_265_720_12,
    9.984_369_578_019_572e-6,
    1.505_632_735_149_311_6e-7,
];

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, ~1e-14 relative accuracy).
/// Returns `+inf` for `x <= 0` or NaN input (callers only pass `x >= 1`).
/// The standard normal CDF.
pub fn normal_cdf(z: f64) -> f64 {
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

pub(crate) fn ln_gamma(x: f64) -> f64 {
    if !(x > 0.0) {
        return f64::INFINITY;
    }
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1-x) = π / sin(πx).
        let s = (std::f64::consts::PI * x).sin();
        return std::f64::consts::PI.ln() - s.ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = LANCZOS[0];
    let t = x + LANCZOS_G + 0.5;
    for (i, &c) in LANCZOS.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Test-only simulation helpers: a seeded PRNG and the samplers the
/// calibration / power tests need (written here, no external crates).
#[cfg(test)]
pub(crate) mod sim {
    /// The shared generator (`crate::rng`), with the samplers these tests need.
    pub struct Rng(crate::rng::Rng);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(crate::rng::Rng::new(seed))
        }

        /// Uniform on the open interval (0, 1).
        pub fn uniform(&mut self) -> f64 {
            self.0.open01()
        }

        /// Standard normal (Box–Muller, one of the pair).
        pub fn normal(&mut self) -> f64 {
            let u1 = self.uniform();
            let u2 = self.uniform();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }

        /// Student-t with `df` degrees of freedom (integer df).
        pub fn student_t(&mut self, df: u32) -> f64 {
            let z = self.normal();
            let mut chi2 = 0.0;
            for _ in 0..df {
                let g = self.normal();
                chi2 += g * g;
            }
            z / (chi2 / df as f64).sqrt()
        }

        /// Poisson(lambda): inversion for small means, PTRS (Hörmann 1993) otherwise.
        pub fn poisson(&mut self, lambda: f64) -> f64 {
            if lambda <= 0.0 {
                return 0.0;
            }
            if lambda < 30.0 {
                let mut k = 0.0;
                let mut p = (-lambda).exp();
                let mut cdf = p;
                let u = self.uniform();
                while u > cdf && k < 1000.0 {
                    k += 1.0;
                    p *= lambda / k;
                    cdf += p;
                }
                return k;
            }
            let slam = lambda.sqrt();
            let loglam = lambda.ln();
            let b = 0.931 + 2.53 * slam;
            let a = -0.059 + 0.02483 * b;
            let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
            let vr = 0.9277 - 3.6224 / (b - 2.0);
            loop {
                let u = self.uniform() - 0.5;
                let v = self.uniform();
                let us = 0.5 - u.abs();
                let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
                if us >= 0.07 && v <= vr {
                    return k;
                }
                if k < 0.0 || (us < 0.013 && v > us) {
                    continue;
                }
                let lhs = v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln();
                let rhs = -lambda + k * loglam - super::ln_gamma(k + 1.0);
                if lhs <= rhs {
                    return k;
                }
            }
        }

        /// Binomial(n, p) by inversion (fine for the small n·p used in tests);
        /// falls back to a rounded normal approximation when n·min(p,1-p) > 200.
        pub fn binomial(&mut self, n: f64, p: f64) -> f64 {
            if n <= 0.0 || p <= 0.0 {
                return 0.0;
            }
            if p >= 1.0 {
                return n;
            }
            if p > 0.5 {
                return n - self.binomial(n, 1.0 - p);
            }
            if n * p > 200.0 {
                let x = (n * p + (n * p * (1.0 - p)).sqrt() * self.normal()).round();
                return x.clamp(0.0, n);
            }
            let q = 1.0 - p;
            let ratio = p / q;
            let mut pk = q.powf(n);
            let mut cdf = pk;
            let u = self.uniform();
            let mut k = 0.0;
            while u > cdf && k < n {
                pk *= ratio * (n - k) / (k + 1.0);
                k += 1.0;
                cdf += pk;
            }
            k
        }
    }

    /// Upper tolerance for an observed false-alarm fraction: α + 3·sd.
    pub fn fa_tolerance(alpha: f64, runs: usize) -> f64 {
        alpha + 3.0 * (alpha * (1.0 - alpha) / runs as f64).sqrt()
    }

    /// Run-count scaling: full count in release, a smaller one in debug builds.
    pub fn runs(release: usize) -> usize {
        if cfg!(debug_assertions) {
            release / 2
        } else {
            release
        }
    }

    /// Median of a set of detection delays (None = never detected counts as +inf).
    pub fn median_delay(delays: &mut [Option<u32>]) -> Option<u32> {
        delays.sort_by_key(|d| d.unwrap_or(u32::MAX));
        delays[delays.len() / 2]
    }
}

#[cfg(test)]
mod tests {
    use super::sim::Rng;
    use super::*;

    #[test]
    fn ln_gamma_known_values() {
        assert!(ln_gamma(1.0).abs() < 1e-13);
        assert!(ln_gamma(2.0).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
        // ln(10!) = ln 3628800
        assert!((ln_gamma(11.0) - 3_628_800f64.ln()).abs() < 1e-11);
        // Stirling check at large x.
        let x: f64 = 1e6;
        let stirling =
            (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + 1.0 / (12.0 * x);
        assert!((ln_gamma(x) - stirling).abs() / stirling < 1e-13);
        assert!(ln_gamma(1e300).is_finite());
    }

    #[test]
    fn lse_and_softplus() {
        let v = [1000.0, 1000.0, f64::NEG_INFINITY];
        assert!((log_sum_exp(&v) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert!((softplus(0.0) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(softplus(800.0), 800.0);
        assert!(softplus(-800.0) >= 0.0);
    }

    #[test]
    fn samplers_have_right_moments() {
        let mut rng = Rng::new(7);
        for &lam in &[3.0, 150.0, 450.0] {
            let n = 20_000;
            let (mut s, mut s2) = (0.0, 0.0);
            for _ in 0..n {
                let x = rng.poisson(lam);
                s += x;
                s2 += x * x;
            }
            let m = s / n as f64;
            let v = s2 / n as f64 - m * m;
            assert!(
                (m - lam).abs() < 4.0 * (lam / n as f64).sqrt(),
                "poisson mean {m} vs {lam}"
            );
            assert!((v / lam - 1.0).abs() < 0.05, "poisson var {v} vs {lam}");
        }
        let n = 20_000;
        let mut s = 0.0;
        for _ in 0..n {
            s += rng.binomial(450.0, 0.01);
        }
        assert!((s / n as f64 - 4.5).abs() < 0.06);
    }
}
