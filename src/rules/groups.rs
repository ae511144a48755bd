//! Judge, where: a ratio rule's counts per value of a grouping label (`route`, `handler`,
//! `path`) in, per-group evidence and the worst group's tier out. A regression local to one
//! route of five is diluted in the service-wide ratio; judged on its own route it shows at
//! once. The false-alarm control is spread over the groups (each is tested at α/k for k
//! groups with data), and the group that decided is named in the rule's reason.
//!
//! Side by side, each group's canary against its baseline in the same step; after against
//! before, each group's new version against its own errors or latency before the deploy,
//! from the new version's start and in each of the last three minutes.

use std::collections::VecDeque;

use crate::rules::eval::{
    bucket_total, cumulative_at, first_threshold, proven_at, worse_by, Z_HOLDS_NOW, Z_ONSET_CHANGE,
};
use crate::rules::{Alphas, Bad, Rule, Threshold, Tier};
use crate::stats::rate::RateEvidence;
use crate::stats::ratio::RatioEvidence;
use crate::store::LabelSet;

/// Labels that split a service's requests into groups, in order of preference.
pub const GROUP_LABELS: [&str; 3] = ["route", "handler", "path"];

/// Steps of per-group counts kept for "does it hold now" (3 min at 15 s).
const KEPT: usize = 12;

/// `(events, exposure)` per side: canary, baseline.
type Counts = [(f64, f64); 2];

fn add(a: &mut (f64, f64), b: (f64, f64)) {
    a.0 += b.0;
    a.1 += b.1;
}

/// Both sides' counts summed over steps.
fn sum<'a>(steps: impl IntoIterator<Item = &'a Counts>) -> Counts {
    steps.into_iter().fold(Counts::default(), |mut a, s| {
        add(&mut a[0], s[0]);
        add(&mut a[1], s[1]);
        a
    })
}

struct Group {
    key: String,
    /// After against before: the group's (events, exposure) over the window before the
    /// deploy, its baseline.
    known: Option<(f64, f64)>,
    /// This step's increments.
    step: Counts,
    /// Increments not folded yet (a side without exposure waits for the next step).
    pending: Counts,
    /// Everything folded, for the group's rates.
    total: Counts,
    ev: RatioEvidence,
    recent: VecDeque<Counts>,
    /// After against before: the group's first `KEPT` judged steps, summed (what the new
    /// version showed from its start), and how many steps that is so far.
    first: Counts,
    first_steps: usize,
}

/// The groups of one ratio rule within one deploy.
pub struct Groups {
    groups: Vec<Group>,
    grid: Vec<f64>,
    /// After against before: each group's counts before the deploy; `None` side by side.
    known: Option<Vec<(String, f64, f64)>>,
}

/// After against before, a group's baseline side per step: its pre-deploy rate at this
/// many times the canary's exposure (the one-sample limit of the two-sample test, as for
/// the service-wide evidence: docs/statistics.md).
const KNOWN_SCALE: f64 = 1e6;

/// A group's verdict: the tier it reached and the numbers that earned it.
#[derive(Debug, Clone)]
pub struct Local {
    pub tier: Tier,
    pub key: String,
    pub canary: f64,
    pub baseline: f64,
    /// The group's own confidence that it is worse than its baseline at all: what is
    /// shown beside the tier it decided (never the service-wide figure).
    pub confidence: f64,
    /// The tier below `tier` whose threshold is passed with confidence, when `tier` is
    /// reached by the estimate (a quantile's pause); `None` when `tier`'s own is.
    pub surely: Option<Tier>,
}

impl Groups {
    /// `grid`: the θ values the evidence must hold exactly (the rule's thresholds).
    pub fn new(grid: Vec<f64>) -> Groups {
        Groups {
            groups: Vec::new(),
            grid,
            known: None,
        }
    }

    /// After against before: every group starts afresh against its own counts over the
    /// window before the deploy (`(key, events, exposure)`); a group without them (a route
    /// the old version never served) is not judged.
    pub fn set_known(&mut self, known: Vec<(String, f64, f64)>) {
        self.groups.clear();
        self.known = Some(known);
    }

    /// The group of a series (`route=/checkout`), if it has a grouping label.
    pub fn slot(&mut self, labels: &LabelSet) -> Option<usize> {
        let grid = &self.grid;
        let known = &self.known;
        slot_in(
            &mut self.groups,
            labels,
            |g| &g.key,
            |key| Group {
                known: known.as_ref().and_then(|k| {
                    k.iter()
                        .find(|(g, _, _)| *g == key)
                        .map(|(_, e, n)| (*e, *n))
                }),
                key,
                step: Default::default(),
                pending: Default::default(),
                total: Default::default(),
                ev: RatioEvidence::new(grid),
                recent: VecDeque::new(),
                first: Counts::default(),
                first_steps: 0,
            },
        )
    }

    /// Starts a step: nothing counted yet.
    pub fn clear_step(&mut self) {
        for g in &mut self.groups {
            g.step = Default::default();
        }
    }

    /// Counts `events` bad events or `exposure` events in group `g` of `side` (0 canary,
    /// 1 baseline) this step.
    pub fn count(&mut self, g: usize, side: usize, events: f64, exposure: f64) {
        add(&mut self.groups[g].step[side], (events, exposure));
    }

    /// Ends a judged step: each group's increments join its recent steps, and are folded
    /// into its evidence once both sides have exposure.
    pub fn end_step(&mut self) {
        let known = self.known.is_some();
        for g in &mut self.groups {
            if known {
                // The baseline side is the group's rate before the deploy (half an event
                // added: a route without errors in the window still has a rate to compare).
                g.step[1] = match g.known {
                    Some((e, n)) if n > 0.0 => {
                        let nc = g.step[0].1;
                        ((e + 0.5) / n * KNOWN_SCALE * nc, KNOWN_SCALE * nc)
                    }
                    _ => (0.0, 0.0),
                };
            }
            if g.recent.len() == KEPT {
                g.recent.pop_front();
            }
            g.recent.push_back(g.step);
            if known && g.first_steps < KEPT {
                for side in 0..2 {
                    add(&mut g.first[side], g.step[side]);
                }
                g.first_steps += 1;
            }
            for side in 0..2 {
                add(&mut g.pending[side], g.step[side]);
            }
            let [(ec, nc), (eb, nb)] = g.pending;
            if nc > 0.0 && nb > 0.0 {
                g.ev.update(ec, nc, eb, nb);
                for side in 0..2 {
                    add(&mut g.total[side], g.pending[side]);
                }
                g.pending = Default::default();
            }
        }
    }

    /// The most severe tier a group reaches, with its evidence at α/k, its absolute floor,
    /// `min_evidence` events on both sides, and the deviation holding in the group's last
    /// `RECENT` steps alone. `None` with fewer than two groups (one group is the service).
    pub fn worst(&self, rule: &Rule, alphas: &Alphas, recent: usize) -> Option<Local> {
        let judged: Vec<&Group> = self
            .groups
            .iter()
            .filter(|g| g.total[0].1 > 0.0 && g.total[1].1 > 0.0)
            .collect();
        if judged.len() < 2 || rule.bad != Bad::Up {
            return None;
        }
        let k = judged.len() as f64;
        let all = sum(judged.iter().map(|g| &g.total));
        let mut worst: Option<Local> = None;
        for g in judged {
            let [(ec, nc), (eb, nb)] = g.total;
            // The rest of the service without this group: a regression it shares is not
            // local (the service-wide evidence judges it, and names no route).
            let (oc, onc) = (all[0].0 - ec, all[0].1 - nc);
            let (ob, onb) = (all[1].0 - eb, all[1].1 - nb);
            let others = (onc > 0.0 && onb > 0.0 && ob > 0.0).then(|| (oc / onc) / (ob / onb));
            if nc < rule.min_evidence || nb < rule.min_evidence {
                continue;
            }
            if g.known.is_some_and(|(_, n)| n < rule.min_evidence) {
                continue;
            }
            let (pc, pb) = (ec / nc, eb / nb);
            let now = sum(g.recent.iter().skip(g.recent.len().saturating_sub(recent)));
            // After against before, each of the last three minutes.
            let minutes: Option<Vec<Counts>> = (self.known.is_some() && g.recent.len() == KEPT)
                .then(|| {
                    let m = KEPT / 3;
                    (0..3)
                        .map(|k| sum(g.recent.range(k * m..(k + 1) * m)))
                        .collect()
                });
            for tier in Tier::ALL {
                let Some(th) = rule.threshold(tier) else {
                    continue;
                };
                if others.is_some_and(|o| o >= th.relative) {
                    continue;
                }
                let evidence =
                    g.ev.log_evidence_above(th.relative) >= (k / alphas.for_tier(tier)).ln();
                let floor = pc - pb >= th.absolute;
                let beyond = |c: Counts| counts_beyond(th, c);
                // After against before, nothing beside the new version cancels a blip that
                // hits every route (a flaky dependency): each of the last three minutes
                // must hold, as for the service-wide pause.
                // And the route showed it from the new version's start (its first three
                // judged minutes beyond the first tier): a deploy's regression is there from
                // each new instance's start, a route's bad luck or the world's event comes
                // and goes.
                let from_start = || {
                    g.first_steps >= KEPT
                        && first_threshold(rule).is_some_and(|w| counts_beyond(w, g.first))
                };
                let holds = if self.known.is_some() {
                    minutes
                        .as_ref()
                        .is_some_and(|m| m.iter().all(|c| beyond(*c)))
                        && from_start()
                } else {
                    beyond(now)
                };
                if evidence && floor && holds && worst.as_ref().is_none_or(|w| tier > w.tier) {
                    worst = Some(Local {
                        tier,
                        key: g.key.clone(),
                        canary: pc,
                        baseline: pb,
                        confidence: crate::rules::eval::confidence(g.ev.log_evidence_above(1.0)),
                        surely: None,
                    });
                }
            }
        }
        worst
    }
}

/// Whether a group's counts (canary, baseline) lie beyond threshold `th`: its ratio
/// `relative` times the baseline's and `absolute` above it (point estimates).
fn counts_beyond(th: Threshold, [(c, nc), (b, nb)]: Counts) -> bool {
    nc > 0.0 && nb > 0.0 && c / nc >= b / nb * th.relative && c / nc - b / nb >= th.absolute
}

/// The slot in `groups` of a series' group (`route=/checkout`), made by `new` the first
/// time; `None` without a grouping label.
pub(crate) fn slot_in<G>(
    groups: &mut Vec<G>,
    labels: &LabelSet,
    key: impl Fn(&G) -> &String,
    new: impl FnOnce(String) -> G,
) -> Option<usize> {
    let k = GROUP_LABELS
        .iter()
        .find_map(|l| labels.get(l).map(|v| format!("{l}={v}")))?;
    Some(match groups.iter().position(|g| *key(g) == k) {
        Some(i) => i,
        None => {
            groups.push(new(k));
            groups.len() - 1
        }
    })
}

/// Per-tier state of one group of a quantile rule: the latency the tier holds the canary
/// to, the canary's slow requests against the baseline's, and the canary's slow fraction.
struct Exceedance {
    le: f64,
    vs_baseline: RatioEvidence,
    fraction: RateEvidence,
    /// After against before: the group's share slower than `le` before the deploy (half a
    /// request added: a route without slow requests in the window still has a share to
    /// compare).
    before: Option<f64>,
}

struct LatencyGroup {
    key: String,
    /// This step's bucket increases per side (cumulative per `le`, by bucket slot).
    step: [Vec<f64>; 2],
    /// Every baseline increase since the deploy, warm-up included: places the thresholds.
    baseline_all: Vec<f64>,
    /// The canary's judged increases.
    canary_all: Vec<f64>,
    /// Per tier, once the baseline has `min_evidence` requests: fixed from then on, but
    /// for one second placement (side by side) when the baseline judged since shows a
    /// quantile surely below the one they were placed from (a slow minute in the warm-up;
    /// `rules::eval::placed_too_high`).
    tiers: Option<Vec<Option<Exceedance>>>,
    /// The baseline's quantile the tiers were placed from, its increases since, and
    /// whether the tiers were placed again.
    placed: Option<f64>,
    baseline_since: Vec<f64>,
    replaced: bool,
    /// The canary's slow and all requests per tier, for the last steps.
    recent: VecDeque<Vec<(f64, f64)>>,
    /// After against before: the canary's slow and all requests per tier in each of its
    /// first `KEPT` judged steps (what the new version showed from its start).
    first: Vec<Vec<(f64, f64)>>,
}

/// The groups of one quantile rule within one deploy (latency per route). Each route's own
/// quantile is compared: a heavier tail on every route can leave the service-wide p99
/// (the slowest route's bulk) where it was.
pub struct LatencyGroups {
    groups: Vec<LatencyGroup>,
    /// After against before: each group's bucket increases over the window before the
    /// deploy (by bucket slot); `None` side by side.
    known: Option<Vec<(String, Vec<f64>)>>,
}

impl Default for LatencyGroups {
    fn default() -> Self {
        Self::new()
    }
}

/// Requests slower than `le` of per-slot bucket increases, and all of them.
fn above(bounds: &[f64], buckets: &[f64], le: f64) -> (f64, f64) {
    let n = bucket_total(bounds, buckets);
    ((n - cumulative_at(bounds, buckets, le)).max(0.0), n)
}

impl LatencyGroups {
    pub fn new() -> LatencyGroups {
        LatencyGroups {
            groups: Vec::new(),
            known: None,
        }
    }

    /// After against before: every group starts afresh against its own latency over the
    /// window before the deploy (`(key, bucket increases by slot)`): its thresholds are
    /// placed from them. A group without them (a route the old version never served) is
    /// not judged.
    pub fn set_known(&mut self, known: Vec<(String, Vec<f64>)>) {
        self.groups.clear();
        self.known = Some(known);
    }

    /// The group of a bucket series, if it has a grouping label.
    pub fn slot(&mut self, labels: &LabelSet) -> Option<usize> {
        let known = &self.known;
        slot_in(
            &mut self.groups,
            labels,
            |g| &g.key,
            |key| LatencyGroup {
                baseline_all: known
                    .as_ref()
                    .and_then(|k| k.iter().find(|(g, _)| *g == key))
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
                key,
                step: Default::default(),
                canary_all: Vec::new(),
                tiers: None,
                placed: None,
                baseline_since: Vec::new(),
                replaced: false,
                recent: VecDeque::new(),
                first: Vec::new(),
            },
        )
    }

    /// Starts a step: nothing counted yet.
    pub fn clear_step(&mut self) {
        for g in &mut self.groups {
            for s in &mut g.step {
                s.iter_mut().for_each(|x| *x = 0.0);
            }
        }
    }

    /// Counts an increase of bucket `slot` in group `g` of `side` (0 canary, 1 baseline).
    pub fn count(&mut self, g: usize, side: usize, slot: usize, delta: f64) {
        let s = &mut self.groups[g].step[side];
        if s.len() <= slot {
            s.resize(slot + 1, 0.0);
        }
        s[slot] += delta;
    }

    /// Ends a step. The baseline's increases always count towards its quantile; `judged`
    /// steps (the rule's warm-up over) also feed the canary's evidence, once the group's
    /// baseline has `min_evidence` requests and its thresholds are placed. After against
    /// before, the baseline is the group's latency before the deploy, fixed.
    pub fn end_step(&mut self, rule: &Rule, bounds: &[f64], judged: bool) {
        let known = self.known.is_some();
        let q = match rule.signal {
            crate::rules::Signal::Quantile { quantile, .. } => quantile,
            _ => return,
        };
        for g in &mut self.groups {
            let n = bounds.len();
            let [c, b] = &mut g.step;
            for v in [&mut g.baseline_all, &mut g.canary_all, c, b] {
                if v.len() < n {
                    v.resize(n, 0.0);
                }
            }
            if !known {
                for (a, x) in g.baseline_all.iter_mut().zip(&g.step[1]) {
                    *a += x;
                }
            }
            if !judged {
                continue;
            }
            let place = |from: &[f64]| {
                let qb = crate::rules::eval::histogram_quantile(q, bounds, from);
                let tiers = Tier::ALL
                    .iter()
                    .map(|&tier| {
                        let le = crate::rules::eval::tier_latency(rule, tier, bounds, qb?)?;
                        Some(Exceedance {
                            le,
                            vs_baseline: RatioEvidence::new(&[1.0]),
                            fraction: RateEvidence::new(),
                            before: known.then(|| {
                                let (x, n) = above(bounds, from, le);
                                (x + 0.5) / n.max(1.0)
                            }),
                        })
                    })
                    .collect();
                (qb, tiers)
            };
            if g.tiers.is_none() && bucket_total(bounds, &g.baseline_all) >= rule.min_evidence {
                let (qb, tiers) = place(&g.baseline_all);
                g.tiers = Some(tiers);
                g.placed = qb;
            } else if g.tiers.is_some() && !known && !g.replaced {
                // Placed again, once, as the service-wide quantile is (rules::eval).
                if g.baseline_since.len() < n {
                    g.baseline_since.resize(n, 0.0);
                }
                for (a, x) in g.baseline_since.iter_mut().zip(&g.step[1]) {
                    *a += x;
                }
                if g.placed.is_some_and(|p| {
                    crate::rules::eval::placed_too_high(rule, bounds, &g.baseline_since, p)
                }) {
                    let (qb, tiers) = place(&g.baseline_since);
                    g.tiers = Some(tiers);
                    g.placed = qb;
                    g.replaced = true;
                    g.recent.clear();
                }
            }
            let Some(tiers) = &mut g.tiers else {
                continue;
            };
            for (a, x) in g.canary_all.iter_mut().zip(&g.step[0]) {
                *a += x;
            }
            let mut now = Vec::with_capacity(tiers.len());
            for t in tiers.iter_mut() {
                let Some(t) = t else {
                    now.push((0.0, 0.0));
                    continue;
                };
                let (xc, nc) = above(bounds, &g.step[0], t.le);
                // After against before, the share before the deploy at this many times the
                // canary's requests.
                let (xb, nb) = match t.before {
                    Some(share) => (share * KNOWN_SCALE * nc, KNOWN_SCALE * nc),
                    None => above(bounds, &g.step[1], t.le),
                };
                if nc > 0.0 && nb > 0.0 {
                    t.vs_baseline.update(xc, nc, xb, nb);
                }
                if nc > 0.0 {
                    t.fraction.update(xc, nc);
                }
                now.push((xc, nc));
            }
            if known && g.first.len() < KEPT {
                g.first.push(now.clone());
            }
            if g.recent.len() == KEPT {
                g.recent.pop_front();
            }
            g.recent.push_back(now);
        }
    }

    /// The most severe tier a group's quantile reaches: its slow requests beyond the
    /// baseline's at α/k, its slow fraction surely above the quantile's tail at α/k, both
    /// sides with `min_evidence` requests, and the tail heavier in the group's last
    /// `recent` steps alone. `None` with fewer than two groups (one group is the service).
    pub fn worst(
        &self,
        rule: &Rule,
        alphas: &Alphas,
        bounds: &[f64],
        recent: usize,
    ) -> Option<Local> {
        let q = match rule.signal {
            crate::rules::Signal::Quantile { quantile, .. } => quantile,
            _ => return None,
        };
        let tail = 1.0 - q;
        let judged: Vec<&LatencyGroup> = self
            .groups
            .iter()
            .filter(|g| g.tiers.is_some() && bucket_total(bounds, &g.canary_all) > 0.0)
            .collect();
        if judged.len() < 2 || rule.bad != Bad::Up {
            return None;
        }
        let k = judged.len() as f64;
        let mut worst: Option<Local> = None;
        for g in judged {
            if bucket_total(bounds, &g.canary_all) < rule.min_evidence {
                continue;
            }
            let Some(tiers) = &g.tiers else { continue };
            for (i, tier) in Tier::ALL.iter().enumerate() {
                let Some(Some(t)) = tiers.get(i) else {
                    continue;
                };
                let a = alphas.for_tier(*tier) / k;
                // A pause is proven beyond the latency of the tier below it, as service-wide;
                // the quantiles shown reach the pause's.
                let j = proven_at(tiers, *tier);
                let Some(Some(p)) = tiers.get(j) else {
                    continue;
                };
                let evidence = p.vs_baseline.log_evidence_above(1.0) >= (1.0 / a).ln()
                    && p.fraction.log_evidence_share_above(tail) >= (1.0 / a).ln();
                // The tier's slow and all requests summed over some steps.
                let total = |steps: &mut dyn Iterator<Item = &Vec<(f64, f64)>>| {
                    steps
                        .filter_map(|s| s.get(i))
                        .fold((0.0, 0.0), |(x, n), s| (x + s.0, n + s.1))
                };
                // Their share slower than the tier's latency lies above the quantile's tail
                // by `z` standard errors (Poisson).
                let slower = |steps: &mut dyn Iterator<Item = &Vec<(f64, f64)>>, z: f64| {
                    let (x, n) = total(steps);
                    n > 0.0 && x / n > tail && (x - n * tail) / (n * tail).max(1.0).sqrt() >= z
                };
                let holds = if self.known.is_some() {
                    // After against before, nothing beside the new version cancels a slowdown
                    // that hits every route (a dependency's): each of the last three minutes
                    // holds, and together by `Z_HOLDS_NOW` standard errors; the route showed
                    // it from the new version's start (each of its first three judged minutes
                    // beyond the tier's latency), and the last three minutes are not worse
                    // than those first ones by `Z_ONSET_CHANGE` (a slowdown that grew later is
                    // the world's as likely). A start-up's slowness that fades, an outage that
                    // begins later, does not pass all three.
                    let m = KEPT / 3;
                    let ((x, n), (x1, n1)) =
                        (total(&mut g.recent.iter()), total(&mut g.first.iter()));
                    g.recent.len() == KEPT
                        && (0..3).all(|k| slower(&mut g.recent.range(k * m..(k + 1) * m), 0.0))
                        && slower(&mut g.recent.iter(), Z_HOLDS_NOW)
                        && g.first.len() == KEPT
                        && (0..3).all(|k| slower(&mut g.first[k * m..(k + 1) * m].iter(), 0.0))
                        && worse_by(x1, n1, x, n) < Z_ONSET_CHANGE
                } else {
                    slower(
                        &mut g.recent.iter().skip(g.recent.len().saturating_sub(recent)),
                        0.0,
                    )
                };
                if evidence && holds && worst.as_ref().is_none_or(|w| *tier > w.tier) {
                    let cq = crate::rules::eval::histogram_quantile(q, bounds, &g.canary_all);
                    let bq = crate::rules::eval::histogram_quantile(q, bounds, &g.baseline_all);
                    // The quantiles shown are as far apart as the tier asks (its latency was
                    // placed once; a slowdown both sides share since moves past it).
                    let shown = match (cq, bq, rule.threshold(*tier)) {
                        (Some(c), Some(b), Some(th)) => {
                            b > 0.0 && c >= b * th.relative && c - b >= th.absolute
                        }
                        _ => false,
                    };
                    if !shown {
                        continue;
                    }
                    worst = Some(Local {
                        tier: *tier,
                        key: g.key.clone(),
                        canary: cq.unwrap_or(f64::NAN),
                        baseline: bq.unwrap_or(f64::NAN),
                        confidence: crate::rules::eval::confidence(
                            t.vs_baseline.log_evidence_above(1.0),
                        ),
                        surely: (j != i).then(|| Tier::ALL[j]),
                    });
                }
            }
        }
        worst.filter(|w| w.canary.is_finite() && w.baseline.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    fn error_rate() -> Rule {
        let rules = RuleSet::embedded();
        rules
            .rules
            .into_iter()
            .find(|r| r.name == "error_rate")
            .unwrap()
    }

    /// 20 steps of 100 requests per route and side at 0.5 % errors, `factor` times that on
    /// the canary's `bad` routes.
    fn play(bad: &[usize], factor: f64) -> Option<Local> {
        let rule = error_rate();
        let mut g = Groups::new(vec![1.0, 1.1, 1.15, 1.25]);
        let slots: Vec<usize> = ["/a", "/b", "/c", "/d"]
            .iter()
            .map(|r| g.slot(&LabelSet::from_strs(&[("route", r)])).unwrap())
            .collect();
        for _ in 0..20 {
            g.clear_step();
            for (i, &s) in slots.iter().enumerate() {
                let f = if bad.contains(&i) { factor } else { 1.0 };
                g.count(s, 0, 0.5 * f, 100.0);
                g.count(s, 1, 0.5, 100.0);
            }
            g.end_step();
        }
        g.worst(&rule, &Alphas::default(), 8)
    }

    #[test]
    fn a_route_failing_alone_is_named() {
        let l = play(&[2], 10.0).expect("the failing route");
        assert_eq!(l.key, "route=/c");
        assert_eq!(l.tier, Tier::Rollback);
        assert!((l.canary / l.baseline - 10.0).abs() < 1e-9);
    }

    /// After against before: each route's rate before the deploy is 0.5 % of 6,000
    /// requests; then `steps` steps of 100 canary requests per route, `factor` times that
    /// on the `bad` routes, and `blip` extra errors on every route in the last two steps.
    fn play_known(bad: &[usize], factor: f64, steps: usize, blip: f64) -> Option<Local> {
        let rule = error_rate();
        let mut g = Groups::new(vec![1.0, 1.1, 1.15, 1.25]);
        let routes = ["/a", "/b", "/c", "/d"];
        g.set_known(
            routes
                .iter()
                .map(|r| (format!("route={r}"), 30.0, 6000.0))
                .collect(),
        );
        let slots: Vec<usize> = routes
            .iter()
            .map(|r| g.slot(&LabelSet::from_strs(&[("route", r)])).unwrap())
            .collect();
        for k in 0..steps {
            g.clear_step();
            for (i, &s) in slots.iter().enumerate() {
                let f = if bad.contains(&i) { factor } else { 1.0 };
                let extra = if k + 2 >= steps { blip } else { 0.0 };
                g.count(s, 0, 0.5 * f + extra, 100.0);
            }
            g.end_step();
        }
        g.worst(&rule, &Alphas::default(), 8)
    }

    #[test]
    fn after_against_before_a_route_is_judged_against_its_own_past() {
        let l = play_known(&[2], 10.0, 20, 0.0).expect("the failing route");
        assert_eq!(l.key, "route=/c");
        assert!(l.tier >= Tier::Pause, "{l:?}");
        // Not before three minutes of it, and not for a blip on one route's last steps.
        assert!(play_known(&[2], 10.0, 8, 0.0).is_none());
        assert!(play_known(&[], 1.0, 20, 0.0).is_none());
        assert!(play_known(&[], 1.0, 20, 5.0).is_none_or(|l| l.tier < Tier::Pause));
    }

    #[test]
    fn a_regression_on_every_route_is_not_local_and_a_clean_one_is_nothing() {
        assert!(play(&[0, 1, 2, 3], 10.0).is_none());
        assert!(play(&[], 1.0).is_none());
    }

    #[test]
    fn no_grouping_label_no_group() {
        let mut g = Groups::new(vec![1.0]);
        assert_eq!(g.slot(&LabelSet::from_strs(&[("code", "500")])), None);
        assert_eq!(g.slot(&LabelSet::from_strs(&[("handler", "/x")])), Some(0));
    }

    fn latency_p99() -> Rule {
        RuleSet::embedded()
            .rules
            .into_iter()
            .find(|r| r.name == "latency_p99")
            .unwrap()
    }

    /// The Go client's default bucket bounds, `+Inf` included.
    const GO_BOUNDS: [f64; 12] = [
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        f64::INFINITY,
    ];

    type Shape = [f64; 12];

    /// `routes` routes over the Go client's buckets, side by side for 60 steps (the first
    /// four warming up), `n` requests per route, side and step, spread by the shapes
    /// (cumulative fractions at the bucket bounds) `shapes(step, route)` gives the canary
    /// and the baseline.
    fn play_sides<'a>(
        routes: usize,
        n: f64,
        shapes: impl Fn(usize, usize) -> (&'a Shape, &'a Shape),
    ) -> Option<Local> {
        let rule = latency_p99();
        let bounds = GO_BOUNDS;
        let mut g = LatencyGroups::new();
        let slots: Vec<usize> = ["/a", "/b", "/c", "/d"][..routes]
            .iter()
            .map(|r| g.slot(&LabelSet::from_strs(&[("route", r)])).unwrap())
            .collect();
        for step in 0..60 {
            g.clear_step();
            for (i, &s) in slots.iter().enumerate() {
                let (c, b) = shapes(step, i);
                for slot in 0..bounds.len() {
                    g.count(s, 0, slot, n * c[slot]);
                    g.count(s, 1, slot, n * b[slot]);
                }
            }
            g.end_step(&rule, &bounds, step >= 4);
        }
        g.worst(&rule, &Alphas::default(), &bounds, 8)
    }

    /// Four routes, 400 requests per route, side and step; each route's requests spread by
    /// `shape`, the canary's `bad` routes by `slow`.
    fn play_latency(bad: &[usize], slow: &Shape, shape: &Shape) -> Option<Local> {
        play_sides(4, 400.0, |_, i| {
            (if bad.contains(&i) { slow } else { shape }, shape)
        })
    }

    // Cumulative shares per bucket bound: p99 within (0.1, 0.25], and a heavier tail that
    // puts 4 % of requests beyond 0.25 s.
    const USUAL: Shape = [
        0.0, 0.0, 0.05, 0.4, 0.9, 0.995, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
    ];
    const HEAVY: Shape = [
        0.0, 0.0, 0.05, 0.4, 0.88, 0.96, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0,
    ];

    #[test]
    fn a_heavier_tail_on_one_route_is_judged_there() {
        let l = play_latency(&[1], &HEAVY, &USUAL).expect("the slow route");
        assert_eq!(l.key, "route=/b");
        assert!(l.tier >= Tier::Pause, "{l:?}");
        assert!(l.canary / l.baseline >= 1.5, "{l:?}");
    }

    #[test]
    fn the_same_latency_everywhere_is_no_group_regression() {
        assert!(play_latency(&[], &USUAL, &USUAL).is_none());
    }

    #[test]
    fn a_slowdown_both_sides_share_after_the_thresholds_are_placed_is_no_group_regression() {
        // The thresholds are placed from the usual latency; then a dependency slows both
        // sides of every route (p99 0.24 s → 0.45 s), the canary's by a tenth more: past
        // the placed rollback latency, more of its requests than the baseline's, but its
        // p99 is ×1.1 of the baseline's, short of a pause.
        const SLOW: Shape = [
            0.0, 0.0, 0.02, 0.2, 0.7, 0.97, 0.995, 1.0, 1.0, 1.0, 1.0, 1.0,
        ];
        const SLOWER: Shape = [
            0.0, 0.0, 0.02, 0.15, 0.6, 0.95, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0,
        ];
        let rule = latency_p99();
        let played = play_sides(3, 400.0, |step, _| {
            if step < 20 {
                (&USUAL, &USUAL)
            } else if step == 20 {
                (&SLOW, &SLOW)
            } else {
                (&SLOWER, &SLOW)
            }
        });
        // At most the tier the quantiles shown support (×1.16 over the whole window: warn).
        if let Some(l) = played {
            assert!(l.tier < Tier::Pause, "{l:?}");
            let th = rule.threshold(l.tier).unwrap();
            assert!(l.canary >= l.baseline * th.relative, "{l:?}");
        }
    }

    /// After against before: each route's latency before the deploy is `USUAL` over 6,000
    /// requests; then `steps` judged steps of 400 requests per route of the new version,
    /// `HEAVY` on the `bad` routes over the steps in `slow`, `USUAL` otherwise.
    fn play_latency_known(
        bad: &[usize],
        slow: std::ops::Range<usize>,
        steps: usize,
    ) -> Option<Local> {
        let rule = latency_p99();
        let bounds = GO_BOUNDS;
        let routes = ["/a", "/b", "/c", "/d"];
        let mut g = LatencyGroups::new();
        g.set_known(
            routes
                .iter()
                .map(|r| {
                    (
                        format!("route={r}"),
                        USUAL.iter().map(|f| 6000.0 * f).collect(),
                    )
                })
                .collect(),
        );
        let slots: Vec<usize> = routes
            .iter()
            .map(|r| g.slot(&LabelSet::from_strs(&[("route", r)])).unwrap())
            .collect();
        for step in 0..steps {
            g.clear_step();
            for (i, &s) in slots.iter().enumerate() {
                let c = if bad.contains(&i) && slow.contains(&step) {
                    &HEAVY
                } else {
                    &USUAL
                };
                for (slot, &f) in c.iter().enumerate() {
                    g.count(s, 0, slot, 400.0 * f);
                }
            }
            g.end_step(&rule, &bounds, true);
        }
        g.worst(&rule, &Alphas::default(), &bounds, 8)
    }

    #[test]
    fn after_against_before_a_route_s_latency_is_judged_against_its_own_past() {
        let l = play_latency_known(&[1], 0..usize::MAX, 20).expect("the slow route");
        assert_eq!(l.key, "route=/b");
        assert!(l.tier >= Tier::Pause, "{l:?}");
        assert!(l.canary / l.baseline >= 1.5, "{l:?}");
        // A heavier tail on every route from the start is each route's too.
        assert!(play_latency_known(&[0, 1, 2, 3], 0..usize::MAX, 20).is_some());
        // Not before three minutes of it; nothing for a route as it was.
        assert!(play_latency_known(&[1], 0..usize::MAX, 8).is_none());
        assert!(play_latency_known(&[], 0..0, 20).is_none());
    }

    #[test]
    fn after_against_before_a_slowdown_that_came_later_or_faded_is_no_route_s_regression() {
        // A dependency's slowdown on every route from the second judged minute on: the
        // routes were as before in their first minute.
        assert!(play_latency_known(&[0, 1, 2, 3], 4..usize::MAX, 20).is_none());
        // A start-up's slowness over the first two judged minutes, gone since.
        assert!(play_latency_known(&[0, 1, 2, 3], 0..8, 20).is_none());
    }

    #[test]
    fn a_quantile_inside_a_wide_bucket_pauses_by_its_estimate_when_surely_beyond_warn() {
        // p99 ≈ 0.23 s before; the canary's 1.5 % beyond 0.25 s puts its p99 at ≈ 0.33 s
        // (×1.46), inside the (0.25, 0.5] bucket: 1.3 % of its requests lie beyond the
        // pause's ×1.25, too close to 1 % to prove with these requests, 1.45 % beyond the
        // warn's ×1.15.
        const BEFORE: Shape = [
            0.0, 0.0, 0.05, 0.4, 0.95, 0.997, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        ];
        const WIDE: Shape = [
            0.0, 0.0, 0.05, 0.4, 0.95, 0.985, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        ];
        let l = play_sides(4, 150.0, |_, i| {
            (if i == 1 { &WIDE } else { &BEFORE }, &BEFORE)
        })
        .expect("the slow route");
        assert_eq!(l.key, "route=/b");
        assert_eq!((l.tier, l.surely), (Tier::Pause, Some(Tier::Warn)), "{l:?}");
        assert!(l.canary / l.baseline >= 1.25, "{l:?}");
    }
}
