//! Growth that keeps going: a gauge's steps (time in hours, value) in; the slope that is
//! left once a start-up's approach to a steady level is accounted for, with an honest
//! standard error, out. A new process's resident memory starts low and rises towards its
//! steady level (caches filling, heaps growing) — `a − D·e^(−t/τ)` — while a leak rises
//! for as long as the process lives — `a + r·t`. The fit is `a + r·t − D·e^(−t/τ)` over a
//! grid of time constants, `D ≥ 0`; `r` is the leak. A garbage collector's sawtooth makes
//! the residuals strongly autocorrelated, so the standard error is a long-run (Newey–West)
//! one over five minutes of lags (docs/statistics.md, "trends").

/// Time constants tried for a start-up's approach, in hours (1 to 6 minutes: caches,
/// heaps and JITs seen to settle within minutes; a slower "start-up" is growth).
const TAUS_H: [f64; 6] = [
    1.0 / 60.0,
    1.5 / 60.0,
    2.0 / 60.0,
    3.0 / 60.0,
    4.0 / 60.0,
    6.0 / 60.0,
];

/// A fitted growth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// Units per hour.
    pub slope: f64,
    /// Its standard error, inflated for autocorrelated residuals; infinite when unknown.
    pub se: f64,
    /// The start-up time constant chosen (hours), `None` for a straight line.
    pub tau: Option<f64>,
    /// The fit's residual sum of squares.
    pub rss: f64,
}

/// Fits `y ≈ a + r·t − D·e^(−t/τ)` for every time constant of the grid (and the straight
/// line `a + r·t`), each with its slope and inflated standard error. A leak is growth that
/// every start-up hypothesis leaves over: the caller takes the least favourable fit
/// ([`lower_bound`]). `t` in hours, ascending; fewer than 6 points: nothing.
pub fn fits(t: &[f64], y: &[f64]) -> Vec<Growth> {
    let n = t.len().min(y.len());
    if n < 6 {
        return Vec::new();
    }
    let (t, y) = (&t[..n], &y[..n]);
    let t0 = t[0];
    let mut out = Vec::with_capacity(TAUS_H.len() + 1);
    let (rss, slope, se, tau, resid, h) = line(t, y);
    out.push(Growth {
        slope,
        se: long_run_se(&h, &resid, se),
        tau,
        rss,
    });
    for tau in TAUS_H {
        let e: Vec<f64> = t.iter().map(|x| (-(x - t0) / tau).exp()).collect();
        if let Some((rss, slope, se, tau, resid, h)) = with_startup(t, y, &e, tau) {
            out.push(Growth {
                slope,
                se: long_run_se(&h, &resid, se),
                tau,
                rss,
            });
        }
    }
    out
}

/// The smallest `slope − z·se` over the fits, and the fit that gives it: the growth that
/// remains under the start-up hypothesis most favourable to "no leak".
pub fn lower_bound(fits: &[Growth], z: f64) -> Option<(f64, Growth)> {
    fits.iter()
        .map(|g| (g.slope - z * g.se, *g))
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

/// The fit that explains the data best (least squares).
pub fn best(fits: &[Growth]) -> Option<Growth> {
    fits.iter().copied().min_by(|a, b| a.rss.total_cmp(&b.rss))
}

/// The largest `slope + z·se` over the fits: a leak above it is ruled out under every
/// hypothesis.
pub fn upper_bound(fits: &[Growth], z: f64) -> Option<f64> {
    fits.iter()
        .map(|g| g.slope + z * g.se)
        .max_by(f64::total_cmp)
}

/// (rss, slope, its iid standard error, τ, residuals, the slope's weight on each point).
type Fit = (f64, f64, f64, Option<f64>, Vec<f64>, Vec<f64>);

/// Least squares of `y = a + r·t`: (rss, r, se(r), None, residuals, weights).
fn line(t: &[f64], y: &[f64]) -> Fit {
    let n = t.len() as f64;
    let mt = t.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let stt: f64 = t.iter().map(|v| (v - mt).powi(2)).sum();
    let sty: f64 = t.iter().zip(y).map(|(a, b)| (a - mt) * (b - my)).sum();
    if stt <= 0.0 {
        return (
            f64::INFINITY,
            0.0,
            f64::INFINITY,
            None,
            Vec::new(),
            Vec::new(),
        );
    }
    let r = sty / stt;
    let resid: Vec<f64> = t
        .iter()
        .zip(y)
        .map(|(a, b)| b - my - r * (a - mt))
        .collect();
    let rss: f64 = resid.iter().map(|e| e * e).sum();
    let se = (rss / (n - 2.0) / stt).sqrt();
    let h = t.iter().map(|a| (a - mt) / stt).collect();
    (rss, r, se, None, resid, h)
}

/// Least squares of `y = a + r·t + c·e` (a start-up has `c = −D < 0`); `None` when the
/// system is singular.
fn with_startup(t: &[f64], y: &[f64], e: &[f64], tau: f64) -> Option<Fit> {
    let n = t.len() as f64;
    // Centre every column: the intercept drops out.
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n;
    let (mt, me, my) = (mean(t), mean(e), mean(y));
    let (mut stt, mut ste, mut see, mut sty, mut sey) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..t.len() {
        let (a, b, c) = (t[i] - mt, e[i] - me, y[i] - my);
        stt += a * a;
        ste += a * b;
        see += b * b;
        sty += a * c;
        sey += b * c;
    }
    let det = stt * see - ste * ste;
    if det <= 1e-12 * stt * see || det <= 0.0 {
        return None;
    }
    let r = (see * sty - ste * sey) / det;
    let c = (stt * sey - ste * sty) / det;
    let resid: Vec<f64> = (0..t.len())
        .map(|i| y[i] - my - r * (t[i] - mt) - c * (e[i] - me))
        .collect();
    let rss: f64 = resid.iter().map(|x| x * x).sum();
    if n <= 3.0 {
        return None;
    }
    // Var(r) = σ² · (XᵀX)⁻¹ for the slope: see / det.
    let se = (rss / (n - 3.0) * see / det).sqrt();
    let h = (0..t.len())
        .map(|i| (see * (t[i] - mt) - ste * (e[i] - me)) / det)
        .collect();
    Some((rss, r, se, Some(tau), resid, h))
}

/// The AR(1) variance inflation `√((1+ρ)/(1−ρ))` of the residuals' lag-1 autocorrelation,
/// at least 1 and at most 6: the standard error's floor while the window is too short for
/// the long-run variance to be trusted (fewer than [`LONG_RUN_FROM`] points).
fn inflation(resid: &[f64]) -> f64 {
    if resid.len() < 4 {
        return 1.0;
    }
    let ss: f64 = resid.iter().map(|e| e * e).sum();
    if ss <= 0.0 {
        return 1.0;
    }
    let lag: f64 = resid.windows(2).map(|w| w[0] * w[1]).sum();
    let rho = (lag / ss).clamp(0.0, 0.95);
    ((1.0 + rho) / (1.0 - rho)).sqrt().clamp(1.0, 6.0)
}

/// Points from which the long-run variance alone decides: 12 minutes of 15-second steps,
/// several sawtooth periods and more than twice [`LAGS`].
const LONG_RUN_FROM: usize = 48;

/// Lags of the long-run variance: 5 minutes of 15-second steps, more than a garbage
/// collector's sawtooth period (2–5 minutes).
const LAGS: usize = 20;

/// The slope's standard error with autocorrelated residuals: the Newey–West (Bartlett)
/// long-run variance of `Σ hᵢ·eᵢ` over [`LAGS`] lags, where `h` is the slope's weight on
/// each point, and never below the iid standard error `iid`. A sawtooth's residuals are
/// correlated at short lags and anti-correlated at half its period: its slope error stays
/// bounded as cycles add up, which a lag-1 (AR(1)) inflation would treat as a slow random
/// walk and overstate many times.
fn long_run_se(h: &[f64], resid: &[f64], iid: f64) -> f64 {
    let n = h.len().min(resid.len());
    if n < 4 {
        return iid;
    }
    let u: Vec<f64> = (0..n).map(|i| h[i] * resid[i]).collect();
    let mut var: f64 = u.iter().map(|x| x * x).sum();
    for l in 1..=LAGS.min(n - 1) {
        let w = 1.0 - l as f64 / (LAGS + 1) as f64;
        let c: f64 = (l..n).map(|i| u[i] * u[i - l]).sum();
        var += 2.0 * w * c;
    }
    let floor = if n < LONG_RUN_FROM {
        iid * inflation(resid)
    } else {
        iid
    };
    if !var.is_finite() || var <= 0.0 {
        return floor;
    }
    var.sqrt().max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(n: usize) -> Vec<f64> {
        (0..n).map(|i| i as f64 * 15.0 / 3600.0).collect()
    }

    #[test]
    fn a_startup_that_levels_off_is_not_growth() {
        // 40 % of 200 MiB below, τ = 4 min, seen from 2 minutes of age for 10 minutes.
        let t = steps(40);
        let y: Vec<f64> = t
            .iter()
            .map(|h| 200.0 - 80.0 * (-(h + 2.0 / 60.0) / (4.0 / 60.0)).exp())
            .collect();
        let f = fits(&t, &y);
        let (lo, g) = lower_bound(&f, 3.0).unwrap();
        assert!(lo < 5.0, "{g:?}");
    }

    #[test]
    fn a_leak_under_a_startup_is_found() {
        // The same start-up plus 4 MiB per minute (240 MiB per hour).
        let t = steps(40);
        let y: Vec<f64> = t
            .iter()
            .map(|h| 200.0 - 80.0 * (-(h + 2.0 / 60.0) / (4.0 / 60.0)).exp() + 240.0 * h)
            .collect();
        let f = fits(&t, &y);
        // The true time constant's fit finds the leak exactly; the slowest start-up the
        // grid allows absorbs part of it, and the growth left over is still well above 0.
        let exact = f.iter().find(|g| g.tau == Some(4.0 / 60.0)).unwrap();
        assert!((exact.slope - 240.0).abs() < 1.0, "{exact:?}");
        let (lo, g) = lower_bound(&f, 3.0).unwrap();
        assert!(lo > 50.0, "{lo} {g:?} {f:?}");
    }

    #[test]
    fn a_sawtooth_widens_the_error() {
        let t = steps(40);
        let y: Vec<f64> = t
            .iter()
            .map(|h| {
                let x = h * 60.0 / 3.0;
                200.0 + 10.0 * (2.0 * (x - x.floor()) - 1.0)
            })
            .collect();
        let f = fits(&t, &y);
        let (lo, g) = lower_bound(&f, 3.0).unwrap();
        assert!(lo < 0.0 && upper_bound(&f, 3.0).unwrap() > 0.0, "{g:?}");
    }

    /// A sawtooth of ±`amp` with a 3-minute period, plus `leak` per hour, over `n` steps.
    fn sawtooth(n: usize, amp: f64, leak: f64) -> (Vec<f64>, Vec<f64>) {
        let t = steps(n);
        let y = t
            .iter()
            .map(|h| {
                let x = h * 60.0 / 3.0;
                200.0 + amp * (2.0 * (x - x.floor()) - 1.0) + leak * h
            })
            .collect();
        (t, y)
    }

    #[test]
    fn a_sawtooth_over_many_periods_lets_a_leak_show() {
        // 16 minutes, ±20 MiB, 5 MiB per minute: a lag-1 inflation (×~4) buried this leak
        // under the straight line's error; the long-run error sees the cycles average out.
        let (t, y) = sawtooth(64, 20.0, 300.0);
        let f = fits(&t, &y);
        let line = f.iter().find(|g| g.tau.is_none()).unwrap();
        assert!(line.slope - 3.5 * line.se > 100.0, "{line:?}");
        // The same sawtooth without a leak: no growth under any hypothesis.
        let (t, y) = sawtooth(64, 20.0, 0.0);
        let (lo, g) = lower_bound(&fits(&t, &y), 3.5).unwrap();
        assert!(lo < 0.0, "{g:?}");
    }

    #[test]
    fn a_short_window_keeps_the_lag_one_floor() {
        // Fewer points than LONG_RUN_FROM: the error is at least the AR(1)-inflated one.
        let (t, y) = sawtooth(40, 20.0, 0.0);
        let (_, _, iid, _, resid, h) = line(&t, &y);
        assert!(long_run_se(&h, &resid, iid) >= iid * inflation(&resid) - 1e-9);
        let (t, y) = sawtooth(64, 20.0, 0.0);
        let (_, _, iid, _, resid, h) = line(&t, &y);
        let long = long_run_se(&h, &resid, iid);
        assert!(
            long >= iid && long < iid * inflation(&resid),
            "{long} {iid}"
        );
    }
}
