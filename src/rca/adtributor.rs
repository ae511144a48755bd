//! Multi-dimensional attribution (Adtributor, Bhagwan et al., NSDI 2014): observations of
//! the affected side and of a reference in; per label dimension, the few values that carry
//! the excess out, ranked. Pure and deterministic.
//!
//! For a dimension `d` with values `v`:
//! - expected `F_v = n_v · r_v`: the affected side's exposure in `v` (requests, seconds)
//!   times the reference's rate in `v` (the reference's overall rate where it has no
//!   exposure in `v`, e.g. the new version's pods). For the labels the rule's own numerator
//!   selects on (a status code of an error ratio), the rate is 1 by construction, so the
//!   expected total `n · r` is spread as the reference's events are: `F_v = n·r · E_v / E`;
//! - explanatory power `EP_v = (A_v − F_v) / (A − F)`: the share of the excess in `v`
//!   (chosen by it; shown as `v`'s part of the excess the values above their expectation
//!   carry together, so never above 100 %);
//! - surprise `S_v = ½ (p_v ln(2p_v/(p_v+q_v)) + q_v ln(2q_v/(p_v+q_v)))` with
//!   `p_v = F_v/F`, `q_v = A_v/A`: `v`'s term of the Jensen–Shannon divergence between the
//!   expected and the actual distribution over the dimension;
//! - the dimension's surprise `S = Σ_v S_v` (the divergence itself); its candidate set:
//!   values with `EP_v ≥ 0.1`, most explanatory first, until they explain `≥ 0.67` of the
//!   excess (at most 3 values);
//! - the shift must be beyond noise: for counted events, `8·N·S` is Pearson's X² of the
//!   actual against the expected distribution (`JS ≈ ⅛ Σ (q−p)²/p`), with
//!   `N = 1/(1/A + 1/E)` as both sides are samples (`A`, `E`: the actual's and the
//!   reference's events); it must exceed the 99 % quantile of χ² with (values − 1) degrees
//!   of freedom. For gauges (levels, growth) the candidate set's `Σ S_v ≥ 0.005` nats.
//!
//! Dimensions are ranked by succinctness first (fewer values explaining the excess), then by
//! surprise (Adtributor's order), then by a fixed preference (routes, then dependencies,
//! codes, other labels, pods, instances). Two dimensions whose chosen values cover the same
//! series (a route served by a single method, a pod and its instance) are one explanation:
//! only the preferred label is kept. A candidate set must be surprising
//! (`Σ S_v ≥ 0.005` nats) — an excess spread as expected is not located by that label.

use std::collections::BTreeMap;

use super::measure::Obs;

/// Minimum explanatory power of one value (Adtributor's `T_EEP`).
pub const MIN_ELEMENT_SHARE: f64 = 0.1;
/// Explanatory power a candidate set must reach (Adtributor's `T_EP`).
pub const MIN_SET_SHARE: f64 = 0.67;
/// Most values in one explanation: more is no explanation.
pub const MAX_SET_SIZE: usize = 3;
/// Least surprise (nats) of a candidate set.
pub const MIN_SURPRISE: f64 = 0.005;

/// What to attribute.
pub struct Input<'a> {
    /// The side whose excess is explained (the new version, or both versions now).
    pub actual: &'a [Obs],
    /// What it is expected to look like (the baseline, or the service before the deploy).
    pub reference: &'a [Obs],
    /// Label names never used as dimensions.
    pub excluded: &'a [&'a str],
    /// Label names the rule's numerator selects on.
    pub distributed: &'a [String],
    /// More events is worse (`bad: up`).
    pub bad_up: bool,
    /// Events are counts (errors, slow requests, restarts), so sampling noise is known.
    pub counts: bool,
}

/// One value of a dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub value: String,
    pub actual: f64,
    pub expected: f64,
    /// Its part of the excess: chosen by explanatory power (`(A_v − F_v) / (A − F)`), shown
    /// as its part of what the values above their expectation carry together (0–1).
    pub share: f64,
    pub surprise: f64,
}

/// A dimension with the values that explain the excess.
#[derive(Debug, Clone, PartialEq)]
pub struct Dimension {
    pub name: String,
    pub elements: Vec<Element>,
    pub surprise: f64,
    /// Distinct non-empty values on the affected side.
    pub actual_values: usize,
    /// The excess over the expected, in the rule's event unit.
    pub excess: f64,
}

/// Ranked dimensions that explain the excess; empty when nothing does (or there is no
/// excess in the bad direction).
pub fn attribute(input: &Input) -> Vec<Dimension> {
    let mut names: Vec<String> = Vec::new();
    for o in input.actual.iter().chain(input.reference) {
        for (n, _) in o.labels.iter() {
            if n != "__name__" && !input.excluded.contains(&n) && !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        }
    }
    names.sort();
    let mut dims: Vec<Dimension> = names
        .iter()
        .filter_map(|name| dimension(input, name))
        .collect();
    // Dimensions whose chosen values cover the same series are one explanation under two
    // names (a route served by one method, a pod and its instance, a database used by two
    // routes): keep the one with fewer values, then the preferred name.
    let cover = |d: &Dimension| -> Vec<usize> {
        input
            .actual
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                let v = o.labels.get(&d.name).unwrap_or("");
                d.elements.iter().any(|e| e.value == v)
            })
            .map(|(i, _)| i)
            .collect()
    };
    let covers: Vec<Vec<usize>> = dims.iter().map(cover).collect();
    let mut keep = vec![true; dims.len()];
    for i in 0..dims.len() {
        for j in 0..dims.len() {
            if i != j && keep[j] && covers[i] == covers[j] {
                let rank = |d: &Dimension| (d.elements.len(), preference(&d.name), d.name.clone());
                if rank(&dims[j]) < rank(&dims[i]) {
                    keep[i] = false;
                    // The kept name carries the larger surprise of the two.
                    let s = dims[i].surprise.max(dims[j].surprise);
                    dims[j].surprise = s;
                }
            }
        }
    }
    let mut dims: Vec<Dimension> = dims
        .into_iter()
        .zip(keep)
        .filter_map(|(d, k)| k.then_some(d))
        .collect();
    dims.sort_by(|a, b| {
        a.elements
            .len()
            .cmp(&b.elements.len())
            .then(b.surprise.total_cmp(&a.surprise))
            .then(preference(&a.name).cmp(&preference(&b.name)))
            .then(a.name.cmp(&b.name))
    });
    dims
}

/// Which labels name a more useful explanation when partitions are equal.
pub fn preference(label: &str) -> u8 {
    match label {
        "route" | "handler" | "endpoint" | "path" | "uri" | "url" | "operation" | "rpc"
        | "grpc_method" => 0,
        "db" | "database" | "upstream" | "peer" | "dependency" | "backend" | "remote"
        | "target" | "destination" | "host" | "cluster" | "queue" | "topic" => 1,
        "code" | "status" | "status_code" | "grpc_code" => 2,
        "pod" => 4,
        "instance" => 5,
        _ => 3,
    }
}

/// Whether a label names one process (a pod or an instance).
pub fn is_instance_label(label: &str) -> bool {
    matches!(label, "pod" | "instance" | "pod_name" | "container_id")
}

#[derive(Default, Clone, Copy)]
struct Acc {
    events: f64,
    exposure: f64,
}

fn dimension(input: &Input, name: &str) -> Option<Dimension> {
    let value = |o: &Obs| o.labels.get(name).unwrap_or("").to_string();
    let mut actual: BTreeMap<String, Acc> = BTreeMap::new();
    let mut reference: BTreeMap<String, Acc> = BTreeMap::new();
    for (obs, map) in [
        (input.actual, &mut actual),
        (input.reference, &mut reference),
    ] {
        for o in obs {
            let a = map.entry(value(o)).or_default();
            a.events += o.events;
            a.exposure += o.exposure;
        }
    }
    // A label with one value everywhere separates nothing.
    let mut all: Vec<&String> = actual.keys().chain(reference.keys()).collect();
    all.sort();
    all.dedup();
    if all.len() <= 1 {
        return None;
    }
    let (re, rn) = reference
        .values()
        .fold((0.0, 0.0), |(e, n), a| (e + a.events, n + a.exposure));
    let rate = if rn > 0.0 { re / rn } else { 0.0 };
    let n_total: f64 = actual.values().map(|a| a.exposure).sum();
    let distributed = input.distributed.iter().any(|d| d == name);
    let expected: Vec<f64> = actual
        .iter()
        .map(|(v, a)| {
            if distributed {
                let f = n_total * rate;
                match reference.get(v) {
                    Some(r) if re > 0.0 => f * r.events / re,
                    _ if re > 0.0 => 0.0,
                    _ => f / actual.len() as f64,
                }
            } else {
                let r = match reference.get(v) {
                    Some(r) if r.exposure > 0.0 => r.events / r.exposure,
                    _ => rate,
                };
                a.exposure * r
            }
        })
        .collect();
    let a_total: f64 = actual.values().map(|a| a.events).sum();
    let f_total: f64 = expected.iter().sum();
    let excess = a_total - f_total;
    let bad = if input.bad_up {
        excess > 0.0
    } else {
        excess < 0.0
    };
    if !bad || !excess.is_finite() {
        return None;
    }
    // Distributions for the surprise: expected (by exposure where it cannot be one) and
    // actual (negative values, from noisy gauges, count as none).
    let p: Vec<f64> = if f_total > 0.0 && expected.iter().all(|f| *f >= 0.0) {
        expected.iter().map(|f| f / f_total).collect()
    } else {
        let n: Vec<f64> = actual.values().map(|a| a.exposure.max(0.0)).collect();
        normalise(&n)
    };
    let q = normalise(
        &actual
            .values()
            .map(|a| a.events.max(0.0))
            .collect::<Vec<_>>(),
    );
    let dim_surprise: f64 = p.iter().zip(&q).map(|(p, q)| js_term(*p, *q)).sum();
    let support = p
        .iter()
        .zip(&q)
        .filter(|(p, q)| **p > 0.0 || **q > 0.0)
        .count();
    let significant = if input.counts {
        let a_pos: f64 = actual.values().map(|a| a.events.max(0.0)).sum();
        let n = if a_pos > 0.0 && re > 0.0 {
            1.0 / (1.0 / a_pos + 1.0 / re)
        } else {
            a_pos
        };
        support >= 2 && 8.0 * n * dim_surprise >= chi2_quantile_99((support - 1) as f64)
    } else {
        true
    };
    let mut elements: Vec<Element> = actual
        .iter()
        .enumerate()
        .map(|(i, (v, a))| Element {
            value: v.clone(),
            actual: a.events,
            expected: expected[i],
            share: (a.events - expected[i]) / excess,
            surprise: js_term(p[i], q[i]),
        })
        .collect();
    let actual_values = elements.iter().filter(|e| !e.value.is_empty()).count();
    elements.retain(|e| !e.value.is_empty() && e.share >= MIN_ELEMENT_SHARE);
    elements.sort_by(|a, b| {
        b.share
            .total_cmp(&a.share)
            .then(b.surprise.total_cmp(&a.surprise))
            .then(a.value.cmp(&b.value))
    });
    let mut chosen = Vec::new();
    let mut explained = 0.0;
    for e in elements {
        if explained >= MIN_SET_SHARE || chosen.len() == MAX_SET_SIZE {
            break;
        }
        explained += e.share;
        chosen.push(e);
    }
    // Shown: each chosen value's part of the excess the values above their expectation
    // carry together. Adtributor's explanatory power divides by the net excess, which
    // values below their expectation shrink: a route failing while the others ran a little
    // clean reads "1146 % of the excess". Chosen as Adtributor chooses; shown within 0–100 %.
    let sign = if input.bad_up { 1.0 } else { -1.0 };
    let gross: f64 = actual
        .values()
        .zip(&expected)
        .map(|(a, f)| (sign * (a.events - f)).max(0.0))
        .sum();
    if gross > 0.0 {
        for e in &mut chosen {
            e.share = (sign * (e.actual - e.expected)).max(0.0) / gross;
        }
    }
    let set_surprise: f64 = chosen.iter().map(|e| e.surprise).sum();
    let surprising = significant && (input.counts || set_surprise >= MIN_SURPRISE);
    (explained >= MIN_SET_SHARE && surprising).then(|| Dimension {
        name: name.to_string(),
        elements: chosen,
        surprise: dim_surprise,
        actual_values,
        excess,
    })
}

fn normalise(x: &[f64]) -> Vec<f64> {
    let s: f64 = x.iter().sum();
    if s > 0.0 {
        x.iter().map(|v| v / s).collect()
    } else {
        vec![0.0; x.len()]
    }
}

/// The 99 % quantile of χ² with `k` degrees of freedom (Wilson–Hilferty; within 1 % for
/// k ≥ 1 at this level).
pub fn chi2_quantile_99(k: f64) -> f64 {
    const Z: f64 = 2.326_347_874;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + Z * a.sqrt()).powi(3)
}

/// One value's term of the Jensen–Shannon divergence (nats), `0 ln 0 = 0`.
pub fn js_term(p: f64, q: f64) -> f64 {
    let m = (p + q) / 2.0;
    if m <= 0.0 {
        return 0.0;
    }
    let t = |x: f64| if x > 0.0 { x * (x / m).ln() } else { 0.0 };
    0.5 * (t(p) + t(q))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LabelSet;

    fn obs(route: &str, pod: &str, events: f64, exposure: f64) -> Obs {
        Obs {
            labels: LabelSet::from_strs(&[
                ("__name__", "http_requests_total"),
                ("route", route),
                ("pod", pod),
                ("job", "shop"),
            ]),
            events,
            exposure,
        }
    }

    #[test]
    fn js_of_equal_distributions_is_zero_and_bounded_by_ln2() {
        assert_eq!(js_term(0.3, 0.3), 0.0);
        let full = js_term(1.0, 0.0) + js_term(0.0, 1.0);
        assert!((full - std::f64::consts::LN_2).abs() < 1e-12);
    }

    #[test]
    fn chi2_quantiles() {
        // Tables: 6.635 (1), 9.210 (2), 11.345 (3), 23.209 (10).
        for (k, want) in [(1.0, 6.635), (2.0, 9.210), (3.0, 11.345), (10.0, 23.209)] {
            let got = chi2_quantile_99(k);
            assert!((got - want).abs() / want < 0.02, "{k}: {got} vs {want}");
        }
    }

    #[test]
    fn an_excess_on_one_route_names_the_route() {
        let reference = [
            obs("/a", "b1", 10.0, 1000.0),
            obs("/b", "b1", 10.0, 1000.0),
            obs("/c", "b1", 10.0, 1000.0),
        ];
        let actual = [
            obs("/a", "c1", 1.0, 100.0),
            obs("/b", "c1", 12.0, 100.0),
            obs("/c", "c1", 1.0, 100.0),
        ];
        let dims = attribute(&Input {
            actual: &actual,
            reference: &reference,
            excluded: &["job"],
            distributed: &[],
            bad_up: true,
            counts: true,
        });
        assert_eq!(dims[0].name, "route", "{dims:?}");
        assert_eq!(dims[0].elements.len(), 1);
        assert_eq!(dims[0].elements[0].value, "/b");
        assert!((dims[0].elements[0].share - 1.0).abs() < 1e-9);
        // One canary pod carries everything but is not surprising: not an explanation.
        assert!(dims.iter().all(|d| d.name != "pod"), "{dims:?}");
    }

    #[test]
    fn an_excess_spread_as_expected_names_nothing() {
        let reference = [obs("/a", "b1", 10.0, 1000.0), obs("/b", "b1", 10.0, 1000.0)];
        let actual = [obs("/a", "c1", 3.0, 100.0), obs("/b", "c1", 3.0, 100.0)];
        let dims = attribute(&Input {
            actual: &actual,
            reference: &reference,
            excluded: &["job"],
            distributed: &[],
            bad_up: true,
            counts: true,
        });
        assert!(dims.is_empty(), "{dims:?}");
    }

    #[test]
    fn no_excess_in_the_bad_direction_names_nothing() {
        let reference = [obs("/a", "b1", 10.0, 1000.0), obs("/b", "b1", 10.0, 1000.0)];
        let actual = [obs("/a", "c1", 0.0, 100.0), obs("/b", "c1", 1.0, 100.0)];
        let input = Input {
            actual: &actual,
            reference: &reference,
            excluded: &["job"],
            distributed: &[],
            bad_up: true,
            counts: true,
        };
        assert!(attribute(&input).is_empty());
    }
}
