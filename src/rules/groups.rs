//! Judge, where: a ratio rule's counts per value of a grouping label (`route`, `handler`,
//! `path`) in, per-group evidence and the worst group's tier out. A regression local to one
//! route of five is diluted in the service-wide ratio; judged on its own route it shows at
//! once. The false-alarm control is spread over the groups (each is tested at α/k for k
//! groups with data), and the group that decided is named in the rule's reason.
//!
//! Side by side only: after against before, the pre-deploy window is measured service-wide.

use std::collections::VecDeque;

use crate::rules::{Alphas, Bad, Rule, Tier};
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

struct Group {
    key: String,
    /// This step's increments.
    step: Counts,
    /// Increments not folded yet (a side without exposure waits for the next step).
    pending: Counts,
    /// Everything folded, for the group's rates.
    total: Counts,
    ev: RatioEvidence,
    recent: VecDeque<Counts>,
}

/// The groups of one ratio rule within one deploy.
pub struct Groups {
    groups: Vec<Group>,
    grid: Vec<f64>,
}

/// A group's verdict: the tier it reached and the numbers that earned it.
#[derive(Debug, Clone)]
pub struct Local {
    pub tier: Tier,
    pub key: String,
    pub canary: f64,
    pub baseline: f64,
}

impl Groups {
    /// `grid`: the θ values the evidence must hold exactly (the rule's thresholds).
    pub fn new(grid: Vec<f64>) -> Groups {
        Groups {
            groups: Vec::new(),
            grid,
        }
    }

    /// The group of a series (`route=/checkout`), if it has a grouping label.
    pub fn slot(&mut self, labels: &LabelSet) -> Option<usize> {
        let key = GROUP_LABELS
            .iter()
            .find_map(|l| labels.get(l).map(|v| format!("{l}={v}")))?;
        Some(match self.groups.iter().position(|g| g.key == key) {
            Some(i) => i,
            None => {
                self.groups.push(Group {
                    key,
                    step: Default::default(),
                    pending: Default::default(),
                    total: Default::default(),
                    ev: RatioEvidence::new(&self.grid),
                    recent: VecDeque::new(),
                });
                self.groups.len() - 1
            }
        })
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
        for g in &mut self.groups {
            if g.recent.len() == KEPT {
                g.recent.pop_front();
            }
            g.recent.push_back(g.step);
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
        let all = judged.iter().fold(Counts::default(), |mut a, g| {
            add(&mut a[0], g.total[0]);
            add(&mut a[1], g.total[1]);
            a
        });
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
            let (pc, pb) = (ec / nc, eb / nb);
            let now = g
                .recent
                .iter()
                .skip(g.recent.len().saturating_sub(recent))
                .fold(Counts::default(), |mut a, s| {
                    add(&mut a[0], s[0]);
                    add(&mut a[1], s[1]);
                    a
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
                let [(rc, rnc), (rb, rnb)] = now;
                let holds = rnc > 0.0
                    && rnb > 0.0
                    && rc / rnc >= rb / rnb * th.relative
                    && rc / rnc - rb / rnb >= th.absolute;
                if evidence && floor && holds && worst.as_ref().is_none_or(|w| tier > w.tier) {
                    worst = Some(Local {
                        tier,
                        key: g.key.clone(),
                        canary: pc,
                        baseline: pb,
                    });
                }
            }
        }
        worst
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
}
