//! Units of a rule's statistic: from the signal and Prometheus' metric-name conventions, to
//! values and axis ticks a reader can take in (`3.10%`, `245 ms`, `203 MiB`).

use super::{Rule, Signal};

/// What a rule's statistic measures, for axis ticks and values that a reader can take in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A share in [0, 1], shown as %.
    Fraction,
    /// Seconds, shown as ms below one second.
    Seconds,
    /// Bytes, shown as MiB (GiB from 1 GiB, KiB below 1 MiB).
    Bytes,
    /// Seconds per second (a CPU counter's rate).
    SecondsPerSecond,
    /// Events per second per instance.
    PerSecond,
    /// A count per step (restarts).
    Count,
    /// No known unit.
    Plain,
}

impl Unit {
    /// The unit of a rule's statistic, from its signal and the metric names it selects
    /// (Prometheus' naming conventions carry the base unit as a suffix).
    pub fn of(rule: &Rule) -> Unit {
        let metric = rule
            .signal
            .selectors()
            .into_iter()
            .find_map(|(_, s)| s.metric_name().map(str::to_string))
            .unwrap_or_default();
        let base = metric
            .trim_end_matches("_bucket")
            .trim_end_matches("_total");
        let by_name = || {
            if base.ends_with("_seconds") {
                Unit::Seconds
            } else if base.ends_with("_bytes") {
                Unit::Bytes
            } else if base.ends_with("_ratio") {
                Unit::Fraction
            } else {
                Unit::Plain
            }
        };
        match rule.signal {
            Signal::Ratio { .. } => Unit::Fraction,
            Signal::Quantile { .. } | Signal::Level { .. } | Signal::Trend { .. } => by_name(),
            Signal::Rate { .. } => match by_name() {
                Unit::Seconds => Unit::SecondsPerSecond,
                _ => Unit::PerSecond,
            },
            Signal::Share { .. } => Unit::PerSecond,
            Signal::Increase { .. } => Unit::Count,
        }
    }

    /// The factor and suffix values are shown with, chosen from the largest value shown.
    fn scale(self, max_abs: f64) -> (f64, &'static str) {
        const KIB: f64 = 1024.0;
        const MIB: f64 = 1024.0 * 1024.0;
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        match self {
            Unit::Fraction => (100.0, "%"),
            Unit::Seconds if max_abs < 1.0 => (1000.0, "ms"),
            Unit::Seconds => (1.0, "s"),
            Unit::Bytes if max_abs >= GIB => (1.0 / GIB, "GiB"),
            Unit::Bytes if max_abs >= MIB || max_abs == 0.0 => (1.0 / MIB, "MiB"),
            Unit::Bytes if max_abs >= KIB => (1.0 / KIB, "KiB"),
            Unit::Bytes => (1.0, "B"),
            Unit::SecondsPerSecond => (1.0, "s/s"),
            Unit::PerSecond => (1.0, "/s"),
            Unit::Count | Unit::Plain => (1.0, ""),
        }
    }

    /// One value for a table: three significant digits and the unit (`3.10%`, `245 ms`).
    pub fn format(self, v: f64) -> String {
        if !v.is_finite() {
            return "—".into();
        }
        let (factor, suffix) = self.scale(v.abs());
        let x = v * factor;
        let digits = if x == 0.0 {
            0
        } else {
            (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize
        };
        join(&format!("{x:.digits$}"), suffix)
    }

    /// Tick values (in the data's unit) and their labels for an axis over `[lo, hi]`:
    /// 1-2-5 steps in the displayed scale, about `n` of them, covering the range.
    pub fn ticks(self, lo: f64, hi: f64, n: usize) -> Vec<(f64, String)> {
        let (factor, suffix) = self.scale(lo.abs().max(hi.abs()));
        let (a, b) = (lo * factor, hi * factor);
        let step = nice_step((b - a).max(f64::EPSILON), n.max(1));
        let decimals = (-step.log10().floor()).max(0.0) as usize;
        let first = (a / step).floor() as i64;
        let last = (b / step).ceil() as i64;
        (first..=last)
            .map(|i| {
                let x = i as f64 * step;
                let x = if x.abs() < step * 1e-9 { 0.0 } else { x };
                (x / factor, join(&format!("{x:.decimals$}"), suffix))
            })
            .collect()
    }
}

fn join(number: &str, suffix: &str) -> String {
    match suffix {
        "" => number.to_string(),
        "%" | "/s" => format!("{number}{suffix}"),
        _ => format!("{number} {suffix}"),
    }
}

/// The 1-2-5 step that cuts `span` into about `n` intervals.
fn nice_step(span: f64, n: usize) -> f64 {
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}
