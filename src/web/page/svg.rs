//! Charts as inline SVG: a rule's per-step history (canary and baseline, or after and
//! before) in, one small multiple out, with the deploy and its verdict changes marked.
//! No JavaScript and no fonts of its own: colours come from the page's CSS classes.

use std::fmt::Write as _;

use super::html::escape;

pub use crate::rules::units::Unit;

/// Time ticks relative to the deploy, in whole minutes: (offset in ms, label).
pub fn time_ticks(from_rel: i64, to_rel: i64) -> Vec<(i64, String)> {
    const MIN: i64 = 60_000;
    let span = (to_rel - from_rel).max(1);
    let step = [1, 2, 5, 10, 15, 30, 60, 120]
        .into_iter()
        .map(|m| m * MIN)
        .find(|s| span / s <= 6)
        .unwrap_or(240 * MIN);
    let first = from_rel.div_euclid(step) + i64::from(from_rel.rem_euclid(step) != 0);
    let last = to_rel.div_euclid(step);
    (first..=last)
        .map(|i| {
            let t = i * step;
            let label = match t / MIN {
                0 => "0".to_string(),
                m if m.abs() >= 60 && m % 60 == 0 => format!("{:+}h", m / 60),
                m => format!("{m:+}m"),
            };
            (t, label)
        })
        .collect()
}

/// An SVG path through the points, broken where a point is missing (`None` or not
/// finite): a gap in the data is a gap in the line. A point alone between gaps is drawn
/// as a dot (a zero-length segment with round caps).
pub fn path(points: &[(f64, Option<f64>)]) -> String {
    let mut d = String::new();
    let mut run = 0usize;
    let flush_dot = |d: &mut String, run: usize| {
        if run == 1 {
            d.push_str("h0");
        }
    };
    for &(x, y) in points {
        match y.filter(|y| y.is_finite()) {
            Some(y) => {
                if !d.is_empty() && run == 0 {
                    d.push(' ');
                }
                let cmd = if run == 0 { 'M' } else { 'L' };
                let _ = write!(d, "{cmd}{x:.1} {y:.1}");
                run += 1;
            }
            None => {
                flush_dot(&mut d, run);
                run = 0;
            }
        }
    }
    flush_dot(&mut d, run);
    d
}

/// A vertical marker across the plot: the deploy, or a verdict change.
#[derive(Debug, Clone)]
pub struct Marker {
    pub at: i64,
    pub label: String,
    /// CSS class: `deploy` or a verdict name.
    pub class: String,
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line {
    pub points: Vec<(i64, Option<f64>)>,
    /// CSS class: `canary` or `baseline`.
    pub class: &'static str,
    /// Drawn dashed (a flat pre-deploy level).
    pub dashed: bool,
}

/// One small multiple.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub unit: Unit,
    pub deploy_at: i64,
    pub lines: Vec<Line>,
    pub markers: Vec<Marker>,
    /// The rule's warm-up after the deploy (shaded: not judged); 0 for none.
    pub warmup_ms: i64,
}

const W: f64 = 520.0;
const H: f64 = 218.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 44.0;
/// Rows of marker labels above the plot, and the height of one.
const LABEL_ROWS: usize = 3;
const LABEL_ROW_H: f64 = 12.0;
const BOTTOM: f64 = 24.0;

impl Chart {
    /// The chart as an `<svg>` element that scales to its container's width.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(8 * 1024);
        let _ = write!(
            s,
            r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
            escape(&self.title)
        );
        let _ = write!(s, "<title>{}</title>", escape(&self.title));
        let values: Vec<f64> = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().filter_map(|p| p.1))
            .filter(|v| v.is_finite())
            .collect();
        let times: Vec<i64> = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .collect();
        let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        if values.is_empty() || times.is_empty() {
            let _ = write!(
                s,
                r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/><text class="empty" x="{}" y="{}" text-anchor="middle">no data yet</text></svg>"#,
                LEFT + plot_w / 2.0,
                TOP + plot_h / 2.0
            );
            return s;
        }

        // X: from the deploy (or the first point) to the last point or marker.
        let t0 = times.iter().copied().min().unwrap_or(0).min(self.deploy_at);
        let t1 = times
            .iter()
            .copied()
            .chain(self.markers.iter().map(|m| m.at))
            .max()
            .unwrap_or(t0)
            .max(t0 + 60_000);
        let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * plot_w;

        // Y: from zero (or a little under the smallest value when zero would flatten the
        // lines) to the largest value, widened to whole ticks.
        let (mut lo, mut hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        if lo >= 0.0 && lo <= hi * 0.5 {
            lo = 0.0;
        } else {
            lo -= (hi - lo) * 0.1;
        }
        if hi <= lo {
            hi = if lo == 0.0 { 1.0 } else { lo.abs() * 1.1 + lo };
            if hi <= lo {
                hi = lo + 1.0;
            }
        }
        let ticks = self.unit.ticks(lo, hi, 4);
        let (lo, hi) = (
            ticks.first().map_or(lo, |t| t.0.min(lo)),
            ticks.last().map_or(hi, |t| t.0.max(hi)),
        );
        let y = |v: f64| TOP + plot_h - (v - lo) / (hi - lo) * plot_h;

        // Grid and axes.
        s.push_str(r#"<g class="grid">"#);
        for (v, label) in &ticks {
            let yy = y(*v);
            let _ = write!(
                s,
                r#"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}"/><text class="ytick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                W - RIGHT,
                LEFT - 6.0,
                yy + 4.0,
                escape(label)
            );
        }
        for (rel, label) in time_ticks(t0 - self.deploy_at, t1 - self.deploy_at) {
            let xx = x(self.deploy_at + rel);
            let _ = write!(
                s,
                r#"<text class="xtick" x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"#,
                H - 6.0,
                escape(&label)
            );
        }
        s.push_str("</g>");
        let _ = write!(
            s,
            r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>"#
        );

        // Warm-up: shaded, not judged.
        if self.warmup_ms > 0 {
            let (a, b) = (
                x(self.deploy_at).max(LEFT),
                x(self.deploy_at + self.warmup_ms).min(W - RIGHT),
            );
            if b > a {
                let _ = write!(
                    s,
                    r#"<rect class="warmup" x="{a:.1}" y="{TOP}" width="{:.1}" height="{plot_h}"><title>warm-up: not judged</title></rect>"#,
                    b - a
                );
                if b - a >= 44.0 {
                    let _ = write!(
                        s,
                        r#"<text class="warmup" x="{:.1}" y="{:.1}">warm-up</text>"#,
                        a + 3.0,
                        TOP + plot_h - 4.0
                    );
                }
            }
        }

        // Markers, their labels placed in rows so that none overlaps another.
        let mut markers = self.markers.clone();
        markers.sort_by_key(|m| m.at);
        for (m, row, (lx, anchor)) in place_labels(&markers, x) {
            let xx = x(m.at);
            let _ = write!(
                s,
                r#"<line class="marker {}" x1="{xx:.1}" x2="{xx:.1}" y1="{:.1}" y2="{}"/>"#,
                escape(&m.class),
                TOP - LABEL_ROW_H * (LABEL_ROWS - row) as f64 + 2.0,
                TOP + plot_h
            );
            let _ = write!(
                s,
                r#"<text class="mlabel {}" x="{lx:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                escape(&m.class),
                TOP - LABEL_ROW_H * (LABEL_ROWS - 1 - row) as f64 - 4.0,
                escape(&m.label)
            );
        }

        for l in &self.lines {
            let pts: Vec<(f64, Option<f64>)> = l
                .points
                .iter()
                .map(|&(t, v)| (x(t), v.filter(|v| v.is_finite()).map(y)))
                .collect();
            let d = path(&pts);
            if d.is_empty() {
                continue;
            }
            let _ = write!(
                s,
                r#"<path class="line {}{}" d="{d}"/>"#,
                l.class,
                if l.dashed { " dashed" } else { "" }
            );
        }
        s.push_str("</svg>");
        s
    }
}

/// Rough width of a marker label in the chart's units (11 px system font).
fn label_width(label: &str) -> f64 {
    label.chars().count() as f64 * 6.6 + 4.0
}

/// Places each marker's label (markers sorted by time) in the first of [`LABEL_ROWS`] rows
/// where it overlaps no label already placed, right of its line (left of it near the right
/// edge); where no row is free, in the row whose last label ends first. Returns each marker
/// with its row (0 the top one) and the label's x and anchor.
fn place_labels(
    markers: &[Marker],
    x: impl Fn(i64) -> f64,
) -> Vec<(&Marker, usize, (f64, &'static str))> {
    let mut ends = [f64::NEG_INFINITY; LABEL_ROWS];
    let mut out = Vec::with_capacity(markers.len());
    for m in markers {
        let xx = x(m.at);
        let w = label_width(&m.label);
        let (from, lx, anchor) = if xx + 3.0 + w > W - RIGHT {
            (xx - 3.0 - w, xx - 3.0, "end")
        } else {
            (xx + 3.0, xx + 3.0, "start")
        };
        // Lowest free row first: it sits nearest the plot.
        let row = (0..LABEL_ROWS)
            .rev()
            .find(|&r| ends[r] + 4.0 <= from)
            .unwrap_or_else(|| {
                (0..LABEL_ROWS)
                    .min_by(|&a, &b| ends[a].total_cmp(&ends[b]))
                    .unwrap_or(0)
            });
        ends[row] = from + w;
        out.push((m, row, (lx, anchor)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_break_at_gaps_and_show_lone_points() {
        let p = |v: &[Option<f64>]| -> String {
            let pts: Vec<(f64, Option<f64>)> = v
                .iter()
                .enumerate()
                .map(|(i, y)| (i as f64 * 10.0, *y))
                .collect();
            path(&pts)
        };
        assert_eq!(p(&[]), "");
        assert_eq!(p(&[None, None]), "");
        assert_eq!(
            p(&[Some(1.0), Some(2.0), None, Some(3.0), Some(4.0)]),
            "M0.0 1.0L10.0 2.0 M30.0 3.0L40.0 4.0"
        );
        // A lone point between gaps is a dot; NaN is a gap too.
        assert_eq!(
            p(&[Some(1.0), Some(f64::NAN), Some(5.0), None]),
            "M0.0 1.0h0 M20.0 5.0h0"
        );
        assert_eq!(p(&[None, Some(2.0), Some(3.0)]), "M10.0 2.0L20.0 3.0");
    }

    #[test]
    fn ticks_speak_the_unit() {
        let labels = |u: Unit, lo, hi| -> Vec<String> {
            u.ticks(lo, hi, 4).into_iter().map(|t| t.1).collect()
        };
        assert_eq!(
            labels(Unit::Fraction, 0.0, 0.031),
            ["0%", "1%", "2%", "3%", "4%"]
        );
        assert_eq!(
            labels(Unit::Seconds, 0.0, 0.25),
            ["0 ms", "100 ms", "200 ms", "300 ms"]
        );
        assert_eq!(
            labels(Unit::Seconds, 0.0, 2.2),
            ["0 s", "1 s", "2 s", "3 s"]
        );
        assert_eq!(
            labels(Unit::Seconds, 0.0, 1.2),
            ["0.0 s", "0.5 s", "1.0 s", "1.5 s"]
        );
        let mib = 1024.0 * 1024.0;
        assert_eq!(
            labels(Unit::Bytes, 100.0 * mib, 180.0 * mib),
            ["100 MiB", "120 MiB", "140 MiB", "160 MiB", "180 MiB"]
        );
        assert_eq!(labels(Unit::Count, 0.0, 3.0), ["0", "1", "2", "3"]);
        // Tick values are in the data's unit, whatever the labels show.
        let t = Unit::Bytes.ticks(0.0, 2.0 * mib, 2);
        assert_eq!(t.last().unwrap().0, 2.0 * mib);
        // Never a "-0".
        assert!(labels(Unit::Plain, -1.0, 1.0).iter().all(|l| l != "-0"));
    }

    #[test]
    fn values_have_three_significant_digits() {
        assert_eq!(Unit::Fraction.format(0.031), "3.10%");
        assert_eq!(Unit::Fraction.format(0.0), "0%");
        assert_eq!(Unit::Seconds.format(0.2456), "246 ms");
        assert_eq!(Unit::Seconds.format(1.5), "1.50 s");
        assert_eq!(Unit::Bytes.format(150.0 * 1024.0 * 1024.0), "150 MiB");
        assert_eq!(Unit::SecondsPerSecond.format(0.12), "0.120 s/s");
        assert_eq!(Unit::PerSecond.format(9.87), "9.87/s");
        assert_eq!(Unit::Count.format(f64::NAN), "—");
    }

    #[test]
    fn time_ticks_are_minutes_from_the_deploy() {
        let min = 60_000;
        let labels: Vec<String> = time_ticks(0, 20 * min).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0", "+5m", "+10m", "+15m", "+20m"]);
        let labels: Vec<String> = time_ticks(-90_000, 4 * min)
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(labels, ["-1m", "0", "+1m", "+2m", "+3m", "+4m"]);
        let labels: Vec<String> = time_ticks(0, 120 * min).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0", "+30m", "+1h", "+90m", "+2h"]);
    }

    fn chart(points: Vec<(i64, Option<f64>)>) -> Chart {
        Chart {
            title: "error_rate <b>".into(),
            unit: Unit::Fraction,
            deploy_at: 0,
            lines: vec![Line {
                points,
                class: "canary",
                dashed: false,
            }],
            markers: vec![Marker {
                at: 30_000,
                label: "rollback".into(),
                class: "rollback".into(),
            }],
            warmup_ms: 0,
        }
    }

    /// Issue 16: warn, pause and rollback 15 s apart, then the rollback observed and the
    /// recovery: every label gets its own place.
    #[test]
    fn issue16_close_marker_labels_do_not_overlap() {
        let m = |at: i64, label: &str| Marker {
            at,
            label: label.into(),
            class: label.into(),
        };
        let markers = [
            m(0, "deploy"),
            m(45_000, "warn"),
            m(60_000, "pause"),
            m(75_000, "rollback"),
            m(480_000, "rolled back"),
            m(600_000, "recovered"),
        ];
        let x = |t: i64| LEFT + t as f64 / 600_000.0 * (W - LEFT - RIGHT);
        let placed = place_labels(&markers, x);
        let spans: Vec<(usize, f64, f64)> = placed
            .iter()
            .map(|(m, row, (lx, anchor))| {
                let w = label_width(&m.label);
                let from = if *anchor == "end" { lx - w } else { *lx };
                (*row, from, from + w)
            })
            .collect();
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                assert!(
                    a.0 != b.0 || a.2 <= b.1 || b.2 <= a.1,
                    "labels overlap: {spans:?}"
                );
            }
            assert!(a.1 >= 0.0 && a.2 <= W, "inside the chart: {spans:?}");
        }
        let s = Chart {
            warmup_ms: 30_000,
            markers: markers.to_vec(),
            ..chart(vec![(15_000, Some(0.001)), (600_000, Some(0.002))])
        }
        .render();
        assert!(s.contains(r#"<rect class="warmup""#), "{s}");
        assert!(s.contains(">rolled back</text>") && s.contains(">recovered</text>"));
    }

    #[test]
    fn empty_history_draws_an_empty_frame() {
        let s = chart(Vec::new()).render();
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"), "{s}");
        assert!(s.contains("no data yet"));
        assert!(!s.contains("<path"));
        assert!(
            s.contains("error_rate &lt;b&gt;"),
            "titles are escaped: {s}"
        );
        // Points that are all missing are no data either.
        let s = chart(vec![(15_000, None), (30_000, None)]).render();
        assert!(s.contains("no data yet"), "{s}");
    }

    #[test]
    fn charts_draw_lines_ticks_and_markers() {
        let s = chart(vec![
            (15_000, Some(0.001)),
            (30_000, None),
            (45_000, Some(0.03)),
            (60_000, Some(0.031)),
        ])
        .render();
        assert_eq!(s.matches("<path").count(), 1, "{s}");
        assert!(s.contains("h0 M"), "the lone first point is a dot: {s}");
        assert!(s.contains(">rollback</text>"), "{s}");
        assert!(s.contains(">3%</text>"), "{s}");
        assert!(s.contains(">0</text>"), "the deploy is tick 0: {s}");
        // A flat zero line still gets a scale.
        let s = chart(vec![(15_000, Some(0.0)), (30_000, Some(0.0))]).render();
        assert!(s.contains("<path") && !s.contains("NaN"), "{s}");
    }
}
