//! Judge, stage 4 — the decision: the evidence in; the tier reached (held now, attributed,
//! local to a group), pass, and the reason, effect and values shown out — frozen at a
//! regression verdict so they never contradict it.

use super::*;

/// Standard deviations of the baseline pods' spread a canary's rate per instance must lie
/// beyond a tier's threshold by (one-sided 95 %).
pub(super) const Z_POD_SPREAD: f64 = 1.64;

impl RuleState {
    /// Turns the evidence into this step's rule verdict (escalation only).
    pub(super) fn decide(&mut self, t: i64, alphas: &Alphas) -> StepOutcome {
        let mut out = StepOutcome::default();
        let rule = &self.rule;
        let Some(ev) = &self.evidence else {
            self.reason = "waiting for data on both sides".into();
            return out;
        };
        let up = rule.bad == Bad::Up;
        let thr = |a: f64| (1.0 / a).ln();
        let mut reached: Option<Tier> = None;
        let mut pass = false;
        let mut deviates = false;
        let mut growth: Option<f64> = None;
        // A quantile's pause proven beyond the tier below's latency (said in the reason).
        let mut surely: Option<Tier> = None;
        let enough;
        match ev {
            Evidence::Ratio { ev, canary } => {
                let (ec, eb) = ev.events();
                let (nc, nb) = ev.exposure();
                let pc = ratio(ec, nc);
                let pb = match &self.known {
                    Some(k) => ratio(k.total.events, k.total.exposure),
                    None => ratio(eb, nb),
                };
                let share = matches!(rule.signal, Signal::Share { .. });
                self.canary_value = Some(pc);
                self.baseline_value = Some(pb);
                self.canary_samples = if share { ec } else { nc };
                self.baseline_samples = match &self.known {
                    Some(k) => {
                        if share {
                            k.total.events
                        } else {
                            k.total.exposure
                        }
                    }
                    None => {
                        if share {
                            eb
                        } else {
                            nb
                        }
                    }
                };
                self.effect = (pb > 0.0).then(|| pc / pb);
                let min = rule.min_evidence;
                enough = if share {
                    ec + self.baseline_samples >= min
                } else {
                    nc >= min && self.baseline_samples >= min
                };
                let worse_abs = |abs: f64| if up { pc - pb >= abs } else { pb - pc >= abs };
                for tier in Tier::ALL {
                    let Some(th) = rule.threshold(tier) else {
                        continue;
                    };
                    let e = if up {
                        ev.log_evidence_above(th.relative)
                    } else {
                        ev.log_evidence_below(1.0 / th.relative)
                    };
                    if enough && e >= thr(alphas.for_tier(tier)) && worse_abs(th.absolute) {
                        reached = Some(tier);
                    }
                }
                self.confidence = confidence(if up {
                    ev.log_evidence_above(1.0)
                } else {
                    ev.log_evidence_below(1.0)
                });
                if let (Some(w), Some(p)) = (first_threshold(rule), pass_threshold(rule)) {
                    let rel_ok = if up {
                        ev.log_evidence_below(p.relative) >= thr(alphas.pass)
                    } else {
                        ev.log_evidence_above(1.0 / p.relative) >= thr(alphas.pass)
                    };
                    // Or the canary's rate is surely within the absolute floor of the baseline's.
                    let (lo, hi) = canary.interval(alphas.pass);
                    let abs_ok = p.absolute > 0.0
                        && if up {
                            hi - pb < p.absolute
                        } else {
                            pb - lo < p.absolute
                        };
                    pass = rel_ok || abs_ok;
                    deviates = exceeds(self.effect, w.relative, up) && worse_abs(w.absolute);
                }
            }
            Evidence::Quantile {
                tiers,
                canary_cum,
                baseline_cum,
                ..
            } => {
                let q = match rule.signal {
                    Signal::Quantile { quantile, .. } => quantile,
                    _ => 0.5,
                };
                let base = match &self.known {
                    Some(k) => &k.total.buckets,
                    None => baseline_cum,
                };
                let cq = histogram_quantile(q, &self.bounds, canary_cum);
                let bq = histogram_quantile(q, &self.bounds, base);
                self.canary_value = cq;
                self.baseline_value = bq;
                let total = |v: &[f64]| bucket_total(&self.bounds, v);
                self.canary_samples = total(canary_cum);
                self.baseline_samples = total(base);
                self.effect = match (cq, bq) {
                    (Some(c), Some(b)) if b > 0.0 => Some(c / b),
                    _ => None,
                };
                enough = self.canary_samples >= rule.min_evidence
                    && self.baseline_samples >= rule.min_evidence;
                let tail = 1.0 - q;
                let mut conf = 0.0f64;
                for (i, tier) in Tier::ALL.iter().enumerate() {
                    let Some(Some(_)) = tiers.get(i) else {
                        continue;
                    };
                    // A pause is proven beyond the latency of the tier below it, and reached
                    // when the quantiles shown are as far apart as the pause asks.
                    let j = proven_at(tiers, *tier);
                    let Some(Some((_, ev, frac))) = tiers.get(j) else {
                        continue;
                    };
                    let a = alphas.for_tier(*tier);
                    let vs_baseline = ev.log_evidence_above(1.0);
                    // The canary's share of requests slower than the tier's latency is surely
                    // above the quantile's tail: its quantile lies beyond that latency.
                    let slower = frac.log_evidence_share_above(tail);
                    conf = conf.max(vs_baseline);
                    // And the quantiles shown (the canary's and the baseline's over the same
                    // steps) are as far apart as the tier asks: the tier's latency was placed
                    // from the baseline before judging began, and a slowdown both versions
                    // share since (a dependency's) moves the canary past it with the baseline.
                    let shown = match (cq, bq) {
                        (Some(c), Some(b)) => rule.threshold(*tier).is_some_and(|th| {
                            exceeds(self.effect, th.relative, up)
                                && if up { c - b } else { b - c } >= th.absolute
                        }),
                        _ => false,
                    };
                    if enough && vs_baseline >= thr(a) && slower >= thr(a) && shown {
                        reached = Some(*tier);
                        surely = (j != i).then(|| Tier::ALL[j]);
                    }
                }
                self.confidence = confidence(conf);
                let first = tiers.iter().flatten().next();
                if let Some((_, ev, frac)) = pass_tier(rule)
                    .and_then(|t| tiers.get(t as usize))
                    .and_then(Option::as_ref)
                {
                    // The canary's quantile is surely below the pass tier's threshold, or its
                    // tail is surely no heavier than the baseline's (a shared slowdown).
                    let (_, hi) = frac.interval(alphas.pass);
                    let (_, ratio_hi) = ev.interval(alphas.pass);
                    pass = hi < tail || ratio_hi < 1.2;
                }
                if let Some((_, ev, frac)) = first {
                    deviates = frac.estimate() > tail && ev.estimate() > 1.0;
                } else if tiers.iter().all(Option::is_none) {
                    self.reason =
                        "the baseline's quantile lies beyond the histogram's largest finite bucket"
                            .into();
                    return out;
                }
            }
            Evidence::Mean {
                ev,
                c_sum,
                b_sum,
                c_exp,
                b_exp,
            } => {
                let cm = ratio(*c_sum, *c_exp);
                let bm = ratio(*b_sum, *b_exp);
                self.canary_value = Some(cm);
                self.baseline_value = Some(bm);
                self.canary_samples = *c_exp;
                self.baseline_samples = *b_exp;
                self.effect = (bm > 0.0).then(|| cm / bm);
                enough = ev.n() as f64 >= rule.min_evidence;
                let worse_abs = |abs: f64| if up { cm - bm >= abs } else { bm - cm >= abs };
                for tier in Tier::ALL {
                    let Some(th) = rule.threshold(tier) else {
                        continue;
                    };
                    let e = if up {
                        ev.log_evidence_above(th.relative.ln())
                    } else {
                        ev.log_evidence_below(-th.relative.ln())
                    };
                    if enough && e >= thr(alphas.for_tier(tier)) && worse_abs(th.absolute) {
                        reached = Some(tier);
                    }
                }
                self.confidence = confidence(if up {
                    ev.log_evidence_above(0.0)
                } else {
                    ev.log_evidence_below(0.0)
                });
                if let (Some(w), Some(p)) = (first_threshold(rule), pass_threshold(rule)) {
                    let rel_ok = if up {
                        ev.log_evidence_below(p.relative.ln()) >= thr(alphas.pass)
                    } else {
                        ev.log_evidence_above(-p.relative.ln()) >= thr(alphas.pass)
                    };
                    let (lo, hi) = ev.interval(alphas.pass);
                    let abs_ok = p.absolute > 0.0
                        && if up {
                            bm * (hi.exp() - 1.0) < p.absolute
                        } else {
                            bm * (1.0 - lo.exp()) < p.absolute
                        };
                    pass = enough && (rel_ok || abs_ok);
                    deviates = exceeds(self.effect, w.relative, up) && worse_abs(w.absolute);
                }
            }
            Evidence::Trend {
                t,
                d,
                c_level,
                b_level,
            } => {
                // The growth of (canary − baseline) left once a start-up's approach to its
                // steady level is fitted (stats::trend), in units per hour.
                let n = t.len() as f64;
                self.canary_value = Some(*c_level);
                self.baseline_value = Some(*b_level);
                self.canary_samples = n;
                self.baseline_samples = n;
                use crate::stats::trend;
                let fits = trend::fits(t, d);
                enough = n >= rule.min_evidence.max(3.0) && !fits.is_empty();
                let level = b_level.abs().max(1.0);
                // Not anytime-valid by construction: conservative z per tier (docs/statistics.md).
                let z = |a: f64| normal_quantile(1.0 - a / 80.0);
                let limit =
                    |th: crate::rules::Threshold| (level * (th.relative - 1.0)).max(th.absolute);
                let sign = if up { 1.0 } else { -1.0 };
                let signed: Vec<trend::Growth> = fits
                    .iter()
                    .map(|g| trend::Growth {
                        slope: sign * g.slope,
                        ..*g
                    })
                    .collect();
                // Shown: the growth every start-up hypothesis leaves over once a tier is
                // reached (what earned it), else the best-fitting hypothesis's.
                let conservative = trend::lower_bound(&signed, z(alphas.warn)).map(|(_, g)| g);
                let best = trend::best(&signed);
                for tier in Tier::ALL {
                    let Some(th) = rule.threshold(tier) else {
                        continue;
                    };
                    let lo = trend::lower_bound(&signed, z(alphas.for_tier(tier)));
                    if enough && lo.is_some_and(|(lo, _)| lo > limit(th)) {
                        reached = Some(tier);
                    }
                }
                // Too few steps: a fit says nothing worth showing yet.
                let shown = match (enough, reached) {
                    (false, _) => None,
                    (true, Some(_)) => conservative,
                    (true, None) => best,
                };
                growth = shown.map(|g| sign * g.slope);
                self.effect = growth.map(|g| 1.0 + g / level);
                self.confidence = shown
                    .filter(|g| g.se > 0.0 && g.se.is_finite())
                    .map_or(0.0, |g| normal_cdf(g.slope / g.se));
                if let (Some(w), Some(p)) = (first_threshold(rule), pass_threshold(rule)) {
                    pass = enough
                        && trend::upper_bound(&signed, z(alphas.pass))
                            .is_some_and(|u| u < limit(p));
                    deviates = enough && conservative.is_some_and(|g| g.slope > limit(w));
                }
            }
            Evidence::Count { ec, nc, eb, nb } => {
                let expected = if *nb > 0.0 { eb / nb * nc } else { 0.0 };
                let excess = ec - expected;
                self.canary_value = Some(*ec);
                self.baseline_value = Some(expected);
                self.canary_samples = *nc;
                self.baseline_samples = *nb;
                self.effect = (expected > 0.0).then(|| ec / expected);
                enough = *nc > 0.0;
                // Restarts are events, not noisy samples: judged on the counts themselves.
                for tier in Tier::ALL {
                    let Some(th) = rule.threshold(tier) else {
                        continue;
                    };
                    let rel = expected <= 0.0 || ec / expected >= th.relative;
                    if enough && excess >= th.absolute.max(1.0) && rel {
                        reached = Some(tier);
                    }
                }
                self.confidence = if excess >= 1.0 { 1.0 } else { 0.0 };
                pass = enough && pass_threshold(rule).is_some_and(|p| excess < p.absolute.max(1.0));
                deviates = excess >= 1.0;
            }
        }
        if deviates && self.first_deviation.is_none() {
            self.first_deviation = Some(t);
            out.first_deviation = true;
        }
        // Pause and rollback ask that the deviation still hold now (the last two minutes),
        // not only in the evidence summed since the deploy: a start-up that faded, a blip
        // that passed, does not stop a rollout.
        let raw = reached;
        while let Some(tier) = reached.filter(|t| *t >= Tier::Pause) {
            if self.holds_now(tier) {
                break;
            }
            reached = self.tier_below(tier);
        }
        // Side by side, a rate per instance (CPU) of a canary of one pod or a few carries the
        // pods' own differences (their share of the load, their nodes): every tier asks the
        // canary's level beyond its threshold by the baseline pods' spread among themselves
        // as well.
        if self.known.is_none() && matches!(self.rule.signal, Signal::Rate { .. }) {
            if let Some(margin) = self.pod_spread_margin() {
                let up = self.rule.bad == Bad::Up;
                while let Some(tier) = reached {
                    let beyond = self.rule.threshold(tier).is_some_and(|th| {
                        self.effect.is_some_and(|e| {
                            e > 0.0
                                && if up {
                                    e.ln() - margin >= th.relative.ln()
                                } else {
                                    -e.ln() - margin >= th.relative.ln()
                                }
                        })
                    });
                    if beyond {
                        break;
                    }
                    reached = self.tier_below(tier);
                }
            }
        }
        // After against before, in a rolling update's first judged minutes: the old version
        // still serving beside the new one tells the deploy's regression from the world's as
        // a canary's baseline does, so a pause needs no run of minutes on its own (the
        // deviation holding over the recent steps, as side by side).
        let mut beside = false;
        if self.known.is_some()
            && raw >= Some(Tier::Pause)
            && reached < Some(Tier::Pause)
            && self.known_steps < KEPT_STEPS
            && self.rule.threshold(Tier::Pause).is_some()
        {
            let n = self.recent.len();
            let judged = self.known_steps.min(n);
            if judged >= 2
                && self.holds_over(Tier::Pause, n - judged.min(RECENT_STEPS)..n)
                && self.worse_beside_old(t)
            {
                reached = Some(Tier::Pause);
                beside = true;
            }
        }
        // A regression local to one route (or handler) is judged there. After against
        // before, a route is judged against its own errors or latency before the deploy,
        // and pauses at most: the service-wide rollback's further guards (its worst minute
        // left out, the onset below) are not asked of it.
        let mut local = None;
        if enough {
            let worst = self
                .groups
                .as_ref()
                .and_then(|g| g.worst(&self.rule, alphas, RECENT_STEPS))
                .or_else(|| {
                    self.latency_groups
                        .as_ref()
                        .and_then(|g| g.worst(&self.rule, alphas, &self.bounds, RECENT_STEPS))
                })
                .map(|mut l| {
                    if self.known.is_some() {
                        l.tier = l.tier.min(Tier::Pause);
                    }
                    l
                });
            if let Some(l) = worst.filter(|l| reached.is_none_or(|r| l.tier > r)) {
                reached = Some(l.tier);
                self.canary_value = Some(l.canary);
                self.baseline_value = Some(l.baseline);
                self.effect = (l.baseline > 0.0).then(|| l.canary / l.baseline);
                self.confidence = l.confidence;
                surely = l.surely;
                local = Some(l.key);
            }
        }
        // After against before, nothing beside the new version runs the old one to tell a
        // deploy's regression from the world's (a dependency's outage, a traffic spike). A
        // deviation the new version did not show in its first judged minutes began later:
        // it rolls nothing back on its own, and pauses only once it has lasted
        // [`LATE_PAUSE_AFTER_MS`], as an alert rule's `for:` would.
        let mut note: Option<String> = None;
        if self.known.is_some() {
            let n = self.recent.len();
            if self.known_steps == MINUTE_STEPS && n >= MINUTE_STEPS {
                self.first_minute = Some(self.canary_over(n - MINUTE_STEPS..n));
            }
            if self.known_steps >= KEPT_STEPS && self.onset_early.is_none() {
                self.first_judged = Some(self.canary_over(n - KEPT_STEPS.min(n)..n));
                let third = KEPT_STEPS / 3;
                self.onset_early = Some(first_tier(&self.rule).map_or(Onset::Late, |tier| {
                    if (0..3).all(|k| self.holds_over(tier, k * third..(k + 1) * third)) {
                        Onset::FromTheStart
                    } else if self.beyond_over(tier, 0..KEPT_STEPS, Z_EARLY_ONSET) {
                        Onset::Early
                    } else {
                        Onset::Late
                    }
                }));
            }
            // Whatever the first minutes showed, a deviation that grows out of a calm start
            // now began later (while it lasts: a blip passes, the deploy's own stays). Only
            // a pause or a rollback is ever held back, so the tests run only then.
            let (later, load) = if reached >= Some(Tier::Pause) {
                (
                    first_tier(&self.rule).is_some_and(|tier| self.began_later(tier)),
                    self.load_grew().or(self
                        .load_elsewhere
                        .filter(|_| matches!(self.rule.signal, Signal::Rate { .. }))),
                )
            } else {
                (false, None)
            };
            // Or the old version, beside the new one during the rollout, showed it as much.
            let shared =
                reached >= Some(Tier::Pause) && !later && load.is_none() && self.old_degraded(t);
            // Or another rule holds its deviation at this moment for the world's: an outage
            // shows in errors from the moment it begins, in latency only once the new
            // instances' warm-up is over, when it looks as old as they are.
            let elsewhere = reached >= Some(Tier::Pause)
                && !later
                && load.is_none()
                && !shared
                && self
                    .world_elsewhere
                    .is_some_and(|w| t - w <= WORLD_ELSEWHERE_MS);
            out.world_event = local.is_none() && (later || load.is_some() || shared);
            let onset = if later || load.is_some() || shared || elsewhere {
                Some(Onset::Late)
            } else if self.onset_early == Some(Onset::Late)
                && reached >= Some(Tier::Pause)
                && self.first_judged.as_ref().is_some_and(|f| {
                    self.unlike_deviation(Tier::Pause, self.counted(f, None)) == Some(false)
                })
            {
                // Too few requests in the first judged minutes to have shown it: it may
                // well have been there from the start.
                Some(Onset::Early)
            } else {
                self.onset_early
            };
            let pause_now =
                self.rule.threshold(Tier::Pause).is_some() && self.holds_now(Tier::Pause);
            // [`LATE_GAP_STEPS`] steps in a row that do not hold end it, a single one does
            // not: at a few requests per second one minute without an error breaks "holds
            // now" at single steps as it slides through the three minutes, and the
            // deviation goes on; an outage that ends stays ended.
            if pause_now {
                self.late_gap = 0;
                self.late_since.get_or_insert(t);
            } else {
                self.late_gap += 1;
                if self.late_gap >= LATE_GAP_STEPS {
                    self.late_since = None;
                }
            }
            match onset {
                // A route's own pause was judged against that route's past, each of its last
                // three minutes and its first three, and (errors) only while the rest of the
                // service did not share it (an outage or a blip hits every route): the
                // service-wide onset, diluted by the routes that are fine, says nothing of
                // it. A heavier tail on every route is the new version's as much as one
                // route's, so latency asks that no sign of the world be seen: no growth since
                // the first judged minutes, no load, the old version not showing it, no
                // other rule's deviation the world's.
                _ if local.is_some()
                    && !(matches!(self.rule.signal, Signal::Quantile { .. })
                        && (later || load.is_some() || shared || elsewhere)) => {}
                Some(Onset::Late) if reached >= Some(Tier::Pause) => {
                    let lasted = self
                        .late_since
                        .is_some_and(|s| t - s >= LATE_PAUSE_AFTER_MS);
                    // Said beside the tier it leaves, so the verdict is not read as the
                    // deploy's alone.
                    note = Some(match load {
                        Some(x) => format!(
                            "under ×{x:.1} the requests per second of before the deploy, the load's as likely as the deploy's"
                        ),
                        None if shared => "the old version showed it as much while it still served beside the new one, the world's as likely as the deploy's".into(),
                        None if elsewhere => "begun while another rule's deviation is the world's as likely as the deploy's, so is this one".into(),
                        None => "begun after the new version's first judged minutes, the world's as likely as the deploy's".into(),
                    });
                    reached = if lasted {
                        Some(Tier::Pause)
                    } else {
                        first_tier(&self.rule)
                    };
                }
                Some(Onset::Early) if reached == Some(Tier::Rollback) => {
                    reached = Some(Tier::Pause).filter(|p| self.rule.threshold(*p).is_some());
                }
                Some(Onset::FromTheStart)
                    if reached == Some(Tier::Rollback)
                        && matches!(
                            self.rule.signal,
                            Signal::Ratio { .. } | Signal::Quantile { .. }
                        )
                        && (self.known_steps as i64) * STEP_MS < ROLLBACK_AFTER_MS
                        && !self.worse_beside_old(t) =>
                {
                    // Nothing old served beside the new version to tell the deploy's
                    // regression from a dependency's outage that began with it: a rollback
                    // waits until the deviation has outlasted one (its first three judged
                    // minutes and its last three, `for: 5m` apart). It pauses meanwhile.
                    reached = Some(Tier::Pause);
                    note = Some(
                        "a rollback waits for it to outlast a dependency's outage, nothing old having served beside it to tell".into(),
                    );
                }
                _ if beside && reached == Some(Tier::Pause) && local.is_none() => {
                    note = Some("worse than the old version beside it while both served".into());
                }
                _ => {}
            }
        }
        // A pass never stands beside values shown as far apart as the threshold it rules
        // out (a quantile's tiers placed from a baseline other than the one shown, say).
        if pass
            && !matches!(
                self.rule.signal,
                Signal::Trend { .. } | Signal::Increase { .. }
            )
            && pass_threshold(&self.rule).is_some_and(|p| {
                let up = self.rule.bad == Bad::Up;
                exceeds(self.effect, p.relative, up)
                    && match (self.canary_value, self.baseline_value) {
                        (Some(c), Some(b)) => (if up { c - b } else { b - c }) >= p.absolute,
                        _ => false,
                    }
            })
        {
            pass = false;
        }
        let observed_long = self
            .observed_since
            .is_some_and(|s| t - s >= self.rule.observe.as_millis() as i64);
        let new = match reached {
            Some(tier) => Verdict::from_tier(tier),
            None if pass && observed_long && enough => Verdict::Pass,
            None => Verdict::Pending,
        };
        let reason = describe(
            &self.rule,
            reached,
            surely.filter(|_| reached == Some(Tier::Pause)),
            pass,
            observed_long,
            enough,
            self.effect,
            self.canary_value,
            self.baseline_value,
            growth,
        );
        let reason = match &local {
            Some(key) => format!("on {key}: {reason}"),
            None => reason,
        };
        let reason = match note {
            Some(n) => format!("{reason} ({n})"),
            None => reason,
        };
        if new > self.verdict {
            self.verdict = new;
            self.verdict_at = Some(t);
            out.verdict_changed = true;
            self.reason = reason;
            if new.is_regression() {
                self.frozen = Some(Frozen {
                    reason: self.reason.clone(),
                    effect: self.effect,
                    canary_value: self.canary_value,
                    baseline_value: self.baseline_value,
                    confidence: self.confidence,
                });
            }
        } else if let Some(f) = self
            .frozen
            .as_ref()
            .filter(|_| self.verdict.is_regression())
        {
            // A regression verdict stands (verdicts only escalate): what is shown is what
            // earned it, never a later step's "ruled out" beside a rollback.
            self.reason = f.reason.clone();
            self.effect = f.effect;
            self.canary_value = f.canary_value;
            self.baseline_value = f.baseline_value;
            self.confidence = f.confidence;
        } else {
            self.reason = reason;
        }
        out
    }

    /// The rule's configured tier just below `tier`, if any.
    fn tier_below(&self, tier: Tier) -> Option<Tier> {
        Tier::ALL[..tier as usize]
            .iter()
            .rev()
            .find(|t| self.rule.threshold(**t).is_some())
            .copied()
    }

    /// Side by side, for a rate per instance: how far, in ln, the canary's level may lie
    /// from the baseline's by the pods' own differences — [`Z_POD_SPREAD`] standard
    /// deviations of the baseline pods' ln levels among themselves, for the mean of the
    /// canary's `m` pods against that of the baseline's `n`. `None` with fewer than three
    /// baseline pods of a minute's data each.
    fn pod_spread_margin(&self) -> Option<f64> {
        let levels = |side: Side| -> Vec<f64> {
            self.instances
                .iter()
                .filter(|i| i.side == side && i.secs >= 60.0 && i.events > 0.0)
                .map(|i| (i.events / i.secs).ln())
                .collect()
        };
        let (b, c) = (levels(Side::Baseline), levels(Side::Canary));
        if b.len() < 3 || c.is_empty() {
            return None;
        }
        let n = b.len() as f64;
        let mean = b.iter().sum::<f64>() / n;
        let sd = (b.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        Some(Z_POD_SPREAD * sd * (1.0 / c.len() as f64 + 1.0 / n).sqrt())
    }

    /// Whether the canary's last [`RECENT_STEPS`] steps alone are beyond `tier`'s threshold
    /// (point estimates): the deviation holds now. After against before, pause and rollback
    /// ask it of each of the last three minutes, so a blip of a minute (a flaky dependency,
    /// seen by no old version beside the new one) does not stop a rollout; side by side,
    /// such a blip hits both versions and cancels out.
    pub(super) fn holds_now(&self, tier: Tier) -> bool {
        let n = self.recent.len();
        if self.known.is_some() {
            // Only judged steps count: a new instance's warm-up is not the deploy's.
            let judged = self.known_steps.min(n);
            if judged == KEPT_STEPS {
                let third = KEPT_STEPS / 3;
                // Without its worst minute too: a blip of up to a minute (a flaky
                // dependency's burst of 5xx) inside the three minutes does not carry them.
                let worst = self.worst_minute(tier);
                return (0..3).all(|k| self.minute_holds(tier, k * third..(k + 1) * third))
                    && self.beyond_over(tier, 0..n, Z_HOLDS_NOW)
                    && self.beyond_skipping(tier, 0..n, worst, Z_HOLDS_NOW);
            }
            // Sooner, a pause (never a rollback): every half-minute since judging began,
            // for at least two minutes, beyond the threshold, and the steps without their
            // worst minute too. A blip of up to a minute touches at most five 15-second
            // steps, so it cannot fill four half-minutes alone; at a couple of errors a
            // half-minute, chance fills the others often enough.
            return tier < Tier::Rollback
                && judged >= EARLY_PAUSE_STEPS
                && (0..judged / 2).all(|k| self.holds_over(tier, n - 2 * (k + 1)..n - 2 * k))
                && self.beyond_over(tier, n - judged..n, Z_HOLDS_NOW)
                && self.beyond_skipping(tier, n - judged..n, self.worst_minute(tier), Z_HOLDS_NOW);
        }
        self.holds_over(tier, n.saturating_sub(RECENT_STEPS)..n)
    }

    /// After against before: whether the recent minute in `steps` bears the deviation out.
    /// Its point estimate beyond `tier`'s threshold does; for errors, so does a minute whose
    /// count is not [`MINUTE_ODDS`] times likelier at the rate before the deploy than at the
    /// rate the last three minutes show (or the threshold's, if higher). At a request a
    /// second, a minute with no error says nothing of a ×10 (one error a minute expected):
    /// only a minute with requests enough to show the rate before the deploy contradicts the
    /// deviation, as the calm minutes beside a blip do.
    fn minute_holds(&self, tier: Tier, steps: std::ops::Range<usize>) -> bool {
        self.holds_over(tier, steps.clone())
            || self.unlike_deviation(tier, self.sums(Side::Canary, steps, None)) == Some(false)
    }

    /// After against before, for errors: whether `x` errors of `m` requests are
    /// [`MINUTE_ODDS`] times likelier at the rate before the deploy than at the deviation's —
    /// the rate of the last three minutes, or `tier`'s threshold if higher (Poisson). `None`
    /// for a signal other than errors, or without the counts to tell.
    fn unlike_deviation(&self, tier: Tier, (x, m): (f64, f64)) -> Option<bool> {
        let (Signal::Ratio { .. }, Bad::Up) = (&self.rule.signal, self.rule.bad) else {
            return None;
        };
        let (th, (b, nb)) = (self.rule.threshold(tier)?, self.known_counts()?);
        let n = self.recent.len();
        let (x3, n3) = self.sums(Side::Canary, 0..n, None);
        if nb <= 0.0 || n3 <= 0.0 || m <= 0.0 {
            return None;
        }
        let pb = b / nb;
        let deviation = (x3 / n3).max((pb * th.relative).max(pb + th.absolute));
        Some(ln_odds_before(x, m, pb, deviation) >= MINUTE_ODDS.ln())
    }

    /// After against before: whether the deviation began after the new version started
    /// rather than with it. Either the last minute is worse than the first judged minute by
    /// [`Z_ONSET_CHANGE`] standard errors while that first minute was not yet worth a pause,
    /// or the last three minutes are that much worse than the minute before judging began
    /// (the new instances' warm-up, which a start-up makes slower, never faster). A deploy's
    /// regression is there from each new instance's start; a dependency's outage or a
    /// traffic spike begins at one moment on every instance, whatever its age. Counted
    /// signals only (errors, slow requests).
    pub(super) fn began_later(&self, tier: Tier) -> bool {
        if self.rule.bad != Bad::Up {
            return false;
        }
        if matches!(self.rule.signal, Signal::Rate { .. }) {
            return self.rate_grew_later();
        }
        if !matches!(
            self.rule.signal,
            Signal::Ratio { .. } | Signal::Quantile { .. }
        ) {
            return false;
        }
        let Some(latency) = self.tier_latency(tier) else {
            return false;
        };
        let n = self.recent.len();
        if self.known_steps < 2 * MINUTE_STEPS || n < 2 * MINUTE_STEPS {
            return false;
        }
        if let Some(first) = &self.first_minute {
            let (x1, n1) = self.counted(first, latency);
            let (x, m) = self.sums(Side::Canary, n - MINUTE_STEPS..n, latency);
            if !self.worth_a_pause(first) && worse_by(x1, n1, x, m) >= Z_ONSET_CHANGE {
                return true;
            }
        }
        if n < KEPT_STEPS {
            return false;
        }
        let (x0, n0) = self
            .before_judged
            .iter()
            .map(|s| self.counted(s, latency))
            .fold((0.0, 0.0), |(a, b), (x, m)| (a + x, b + m));
        let (x, m) = self.sums(Side::Canary, n - KEPT_STEPS..n, latency);
        worse_by(x0, n0, x, m) >= Z_ONSET_CHANGE
    }

    /// After against before, for latency: how many times the requests per second the service
    /// served before the deploy the new version serves over the last three minutes (its
    /// steps judged so far, from the two an early pause asks), when it
    /// is [`LOAD_CONFOUNDS`] times or more and beyond noise (a traffic spike). Its instances
    /// still warming up count, their requests are load as much; while a rollout is in
    /// progress the old instances' share does not, so it reads low.
    /// Latency follows load: a deviation under it is the load's as likely as the deploy's,
    /// and nothing beside the new version runs the old one under the same load to tell which.
    fn load_grew(&self) -> Option<f64> {
        // Over the steps judged, once there are enough for an early pause.
        self.load_over(self.known_steps.min(self.served.len()))
    }

    /// [`RuleState::load_grew`] over the last `steps` steps served.
    fn load_over(&self, steps: usize) -> Option<f64> {
        let k = self.known.as_ref()?;
        if !matches!(self.rule.signal, Signal::Quantile { .. }) || k.steps <= 0.0 {
            return None;
        }
        if steps < EARLY_PAUSE_STEPS {
            return None;
        }
        let before = k.requests / k.steps;
        let now: f64 = self.served.iter().rev().take(steps).sum();
        // Beyond noise too: three standard errors of the count expected at that load.
        let expected = LOAD_CONFOUNDS * before * steps as f64;
        (before > 0.0 && now >= expected && (now - expected) / expected.sqrt() >= 3.0)
            .then(|| now / steps as f64 / before)
    }

    /// After against before: [`RuleState::load_grew`] over every step served so far (at
    /// most three minutes), warm-up or not, for the deploy's other rules: a latency rule's
    /// histogram counts the requests, a CPU rule reads none and is judged sooner.
    pub fn load_now(&self) -> Option<f64> {
        self.load_over(self.served.len())
    }

    /// The new version's series this rule matched (read from the ring buffers by the
    /// side-by-side checks against the old version).
    fn new_series(&self) -> Vec<Arc<Series>> {
        self.matched
            .iter()
            .filter(|m| m.side == Side::Canary)
            .map(|m| m.series.clone())
            .collect()
    }

    /// After against before: whether the old version, in its last minutes of serving after
    /// the deploy began (beside the new one, until it stopped), was worse than before the
    /// deploy by the pause threshold ([`Z_OLD_SHARED`] standard errors beyond it), while the
    /// new version over the same minutes was not worse than the old one by the warn
    /// threshold: what a canary beside its baseline would have shown. A deploy's regression
    /// is the new version's alone; an outage or a spike that began while the rollout was
    /// under way hits the old instances as much. Such a deviation is treated as begun later
    /// (no rollback, a pause once it has held 5 minutes). Counted signals only (errors, slow
    /// requests); read from the series at most once a minute, and only while a pause is
    /// reached.
    fn old_degraded(&mut self, t: i64) -> bool {
        let (Some(from), true) = (self.deploy_started, self.rule.bad == Bad::Up) else {
            return false;
        };
        if !matches!(
            self.rule.signal,
            Signal::Ratio { .. } | Signal::Quantile { .. }
        ) || self.old.is_empty()
        {
            return false;
        }
        if let Some((at, shared)) = self.old_shared {
            if t - at < 60_000 {
                return shared;
            }
        }
        let shared = self.old_shared_now(from, t);
        self.old_shared = Some((t, shared));
        shared
    }

    /// [`RuleState::old_degraded`], read now.
    fn old_shared_now(&mut self, from: i64, t: i64) -> bool {
        let (Some(known), Some(latency)) = (self.known_counts(), self.tier_latency(Tier::Pause))
        else {
            return false;
        };
        let old = super::baseline::counts_over(&self.rule, &self.old, from, t, 0);
        let Some(until) = old.last_at else {
            return false;
        };
        let new = super::baseline::counts_over(&self.rule, &self.new_series(), from, until, 0);
        // Each version's counted events and their exposure, step by step (15 s): a rollout
        // moves traffic from one version to the other within a minute.
        let mut steps = |k: &KnownBaseline| -> Vec<(f64, f64)> {
            let mut out = Vec::with_capacity(k.by_step.len());
            for s in &k.by_step {
                let step = SideStep {
                    buckets: self.align_buckets(&k.bounds, k.forms.grid.is_some(), &s.buckets),
                    events: s.events,
                    exposure: s.exposure,
                    ..SideStep::default()
                };
                out.push(self.counted(&step, latency));
            }
            out
        };
        let (old_m, new_m) = (steps(&old), steps(&new));
        let sum = |v: &[(f64, f64)]| v.iter().fold((0.0, 0.0), |(a, b), (x, n)| (a + x, b + n));
        // The old version's last minutes of serving: a deviation of the world that began
        // while it still served shows there, not in the minutes before it began.
        let served: Vec<(f64, f64)> = old_m.iter().copied().filter(|(_, n)| *n > 0.0).collect();
        let degraded = (1..=OLD_LAST_STEPS.min(served.len())).any(|k| {
            let (x, n) = sum(&served[served.len() - k..]);
            match (&self.rule.signal, &self.known, latency) {
                // Its quantile beyond the pause latency, and more of its requests slower
                // than that than before the deploy by as many standard errors.
                (Signal::Quantile { quantile, .. }, Some(k), Some(le)) => {
                    let (xb, nb) = self.counted(&k.total, Some(le));
                    let expected = n * xb / nb.max(1.0);
                    n > 0.0
                        && x / n > 1.0 - quantile
                        && (x - expected) / expected.max(1.0).sqrt() >= Z_OLD_SHARED
                }
                _ => self.counts_beyond(Tier::Pause, (x, n), known, Z_OLD_SHARED),
            }
        });
        if !degraded {
            return false;
        }
        // The new version's requests beside the old ones were its instances' first minutes,
        // their warm-up, which a start-up makes slower: for latency they say nothing.
        if matches!(self.rule.signal, Signal::Quantile { .. }) {
            return true;
        }
        // Errors side by side, step by step, as a canary beside its baseline: the new
        // version is the deploy's suspect only if worse than the old one by the warn factor.
        let factor = first_threshold(&self.rule).map_or(1.0, |w| w.relative);
        !worse_step_by_step(&new_m, &old_m, factor, Z_HOLDS_NOW)
    }

    /// After against before, while a rolling update's old version still serves beside the
    /// new one: whether the new version's judged instances (past their warm-up) are worse
    /// than the old ones by the pause threshold, step by step, as a canary beside its
    /// baseline is judged ([`Z_BESIDE_OLD`] standard errors under every alignment of the two
    /// versions' scrapes within a step, and at least `min_evidence` requests on each side).
    /// An outage or a blip of errors hits both versions alike; the deploy's regression, the
    /// new one alone. Errors only (ratio rules); read from the series at most once a step,
    /// and only while a pause is held back for want of minutes.
    fn worse_beside_old(&mut self, t: i64) -> bool {
        let (Some(from), Some(th)) = (self.deploy_started, self.rule.threshold(Tier::Pause)) else {
            return false;
        };
        if !matches!(self.rule.signal, Signal::Ratio { .. })
            || self.rule.bad != Bad::Up
            || self.old.is_empty()
        {
            return false;
        }
        if let Some((at, worse)) = self.beside_old {
            if t - at < STEP_MS {
                return worse;
            }
        }
        let old = super::baseline::counts_over(&self.rule, &self.old, from, t, 0);
        let worse = old.last_at.is_some() && {
            let warmup = self.rule.warmup.as_millis() as i64;
            let new = super::baseline::counts_over(&self.rule, &self.new_series(), from, t, warmup);
            let per_step = |k: &KnownBaseline| -> Vec<(f64, f64)> {
                k.by_step.iter().map(|s| (s.events, s.exposure)).collect()
            };
            let (new_m, old_m) = (per_step(&new), per_step(&old));
            // Over the steps both versions served: the point estimates beyond the pause
            // threshold, and enough requests on each side.
            let (mut xn, mut nn, mut xo, mut no) = (0.0, 0.0, 0.0, 0.0);
            for (&(a, b), &(c, d)) in new_m.iter().zip(&old_m) {
                if b > 0.0 && d > 0.0 {
                    (xn, nn, xo, no) = (xn + a, nn + b, xo + c, no + d);
                }
            }
            let min = self.rule.min_evidence;
            nn >= min
                && no >= min
                && xn / nn >= xo / no * th.relative
                && xn / nn - xo / no >= th.absolute
                && worse_step_by_step(&new_m, &old_m, th.relative, Z_BESIDE_OLD)
        };
        self.beside_old = Some((t, worse));
        worse
    }

    /// [`RuleState::began_later`] for a rate per instance (CPU seconds per second), which
    /// follows the load: the last minute is above the first judged minute by the pause
    /// threshold's factor while that first minute was not worth a pause (a traffic spike
    /// after a calm start; a deploy's extra cost per request shows from the start).
    fn rate_grew_later(&self) -> bool {
        let (Some(first), Some(th)) = (&self.first_minute, self.rule.threshold(Tier::Pause)) else {
            return false;
        };
        let n = self.recent.len();
        if self.known_steps < 2 * MINUTE_STEPS || n < MINUTE_STEPS {
            return false;
        }
        let (x1, n1) = self.counted(first, None);
        let (x, m) = self.sums(Side::Canary, n - MINUTE_STEPS..n, None);
        n1 > 0.0 && m > 0.0 && !self.worth_a_pause(first) && x / m >= x1 / n1 * th.relative
    }

    /// The latency `tier` holds a quantile rule's canary to (requests slower than it are
    /// the counted events): `Some(Some(le))`; `Some(None)` for other signals, whose events
    /// are counted as they are; `None` while a quantile rule has no such latency placed.
    fn tier_latency(&self, tier: Tier) -> Option<Option<f64>> {
        match (&self.rule.signal, &self.evidence) {
            (Signal::Quantile { .. }, Some(Evidence::Quantile { tiers, .. })) => {
                match tiers.get(tier as usize) {
                    Some(Some((le, _, _))) => Some(Some(*le)),
                    _ => None,
                }
            }
            (Signal::Quantile { .. }, _) => None,
            _ => Some(None),
        }
    }

    /// Whether the new version's data `s` is beyond the pause (or a later) threshold: point
    /// estimates, as [`RuleState::holds_over`].
    fn worth_a_pause(&self, s: &SideStep) -> bool {
        Tier::ALL
            .into_iter()
            .filter(|t| *t >= Tier::Pause)
            .any(|t| self.step_beyond(t, s))
    }

    /// After against before: whether the new version's data `s` lies beyond `tier`'s
    /// threshold (point estimates; errors and slow requests, CPU seconds).
    fn step_beyond(&self, tier: Tier, s: &SideStep) -> bool {
        let Some(known) = self.known_counts() else {
            return false;
        };
        match (&self.rule.signal, &self.evidence) {
            (Signal::Quantile { .. }, Some(Evidence::Quantile { .. })) => {
                let Some(Some(le)) = self.tier_latency(tier) else {
                    return false;
                };
                self.counts_beyond(tier, self.counted(s, Some(le)), known, 0.0)
            }
            (Signal::Ratio { .. } | Signal::Rate { .. }, _) => {
                self.counts_beyond(tier, self.counted(s, None), known, 0.0)
            }
            _ => false,
        }
    }

    /// After against before: the baseline's counts over the window before the deploy, as
    /// [`RuleState::counted`] gives a step's (gauge values for levels).
    fn known_counts(&self) -> Option<(f64, f64)> {
        let k = self.known.as_ref()?;
        Some(match self.rule.signal {
            Signal::Level { .. } => (k.total.value_sum, k.total.value_n),
            _ => (k.total.events, k.total.exposure),
        })
    }

    /// [`RuleState::holds_now`] over the recent steps in `steps`: the point estimates.
    pub(super) fn holds_over(&self, tier: Tier, steps: std::ops::Range<usize>) -> bool {
        self.beyond_over(tier, steps, 0.0)
    }

    /// Whether the canary's data in the recent `steps` lies beyond `tier`'s threshold by
    /// `z` standard errors (counted signals: errors, slow requests; Poisson errors). With
    /// `z = 0`, or for signals that are not counts (CPU seconds, memory levels), the point
    /// estimate decides.
    pub(super) fn beyond_over(&self, tier: Tier, steps: std::ops::Range<usize>, z: f64) -> bool {
        self.beyond_skipping(tier, steps, 0..0, z)
    }

    /// The recent minute (four steps) in which the canary's counted events stand out most
    /// over the rest of the recent steps: where a blip would be.
    fn worst_minute(&self, tier: Tier) -> std::ops::Range<usize> {
        let n = self.recent.len();
        if n < MINUTE_STEPS {
            return 0..0;
        }
        let Some(latency) = self.tier_latency(tier) else {
            return 0..0;
        };
        let (x, m) = self.sums(Side::Canary, 0..n, latency);
        if m <= 0.0 {
            return 0..0;
        }
        let rate = x / m;
        (0..=n - MINUTE_STEPS)
            .map(|w| {
                let (xw, mw) = self.sums(Side::Canary, w..w + MINUTE_STEPS, latency);
                (xw - mw * rate, w)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map_or(0..0, |(_, w)| w..w + MINUTE_STEPS)
    }

    /// [`RuleState::beyond_over`] leaving out the recent steps in `skip`.
    pub(super) fn beyond_skipping(
        &self,
        tier: Tier,
        steps: std::ops::Range<usize>,
        skip: std::ops::Range<usize>,
        z: f64,
    ) -> bool {
        match (&self.rule.signal, &self.evidence) {
            (Signal::Quantile { .. }, Some(Evidence::Quantile { .. })) => {
                // The tier's latency threshold: the canary's recent quantile lies above it.
                let Some(Some(le)) = self.tier_latency(tier) else {
                    return false;
                };
                let slow = self.sums_skipping(Side::Canary, steps, skip, Some(le));
                self.counts_beyond(tier, slow, (0.0, 0.0), z)
            }
            (Signal::Ratio { .. } | Signal::Rate { .. } | Signal::Level { .. }, _) => {
                let c = self.sums_skipping(Side::Canary, steps.clone(), skip.clone(), None);
                let b = match self.known_counts() {
                    Some(b) => b,
                    None => self.sums_skipping(Side::Baseline, steps, skip, None),
                };
                self.counts_beyond(tier, c, b, z)
            }
            // Trends are fitted on the whole window already; counts (restarts) are events.
            _ => true,
        }
    }

    /// Whether the canary's counts `(c, nc)` lie beyond `tier`'s threshold by `z` standard
    /// errors: a quantile rule's requests slower than the tier's latency against the
    /// quantile's tail; a ratio's, rate's or level's against the baseline's `(b, nb)` (Poisson
    /// errors for ratios; with `z = 0`, or for signals that are not counts, the point
    /// estimate decides).
    fn counts_beyond(&self, tier: Tier, (c, nc): (f64, f64), (b, nb): (f64, f64), z: f64) -> bool {
        let Some(th) = self.rule.threshold(tier) else {
            return false;
        };
        let up = self.rule.bad == Bad::Up;
        // Counted events `x` of `n` against the rate `p0` a canary at the threshold shows.
        let counted = |x: f64, n: f64, p0: f64| {
            if n <= 0.0 || x < n * p0 {
                return false;
            }
            let expected = (n * p0).max(1.0);
            (x - n * p0) / expected.sqrt() >= z
        };
        match self.rule.signal {
            Signal::Quantile { quantile, .. } => {
                nc > 0.0 && c / nc > 1.0 - quantile && counted(c, nc, 1.0 - quantile)
            }
            _ => {
                if nc <= 0.0 || nb <= 0.0 {
                    return false;
                }
                let (pc, pb) = (c / nc, b / nb);
                let point = if up {
                    pc >= pb * th.relative && pc - pb >= th.absolute
                } else {
                    pc * th.relative <= pb && pb - pc >= th.absolute
                };
                match self.rule.signal {
                    Signal::Ratio { .. } if up && z > 0.0 => {
                        point && counted(c, nc, (pb * th.relative).max(pb + th.absolute))
                    }
                    _ => point,
                }
            }
        }
    }
}

/// Whether the new version's counted events, step by step beside the old version's
/// (`(events, exposure)` per 15 s step of each), are more than `factor` times the old
/// version's rate by `z` standard errors, under every alignment of the two within a step
/// (each pod is scraped at its own moment of the 15 s: one version's errors of one step can
/// be the other's of the next). Within a step where both served, the new version's share of
/// the two's events is binomial given their sum; at `factor` times the old rate it is
/// `factor·n / (factor·n + m)`. An outage that began within the window hits both alike step
/// by step, however the traffic moved from one version to the other.
fn worse_step_by_step(new: &[(f64, f64)], old: &[(f64, f64)], factor: f64, z: f64) -> bool {
    [-1i64, 0, 1].into_iter().all(|shift| {
        let (mut x, mut mean, mut var) = (0.0, 0.0, 0.0);
        for (i, &(xo, no)) in old.iter().enumerate() {
            let Some(&(xn, nn)) = usize::try_from(i as i64 + shift)
                .ok()
                .and_then(|j| new.get(j))
            else {
                continue;
            };
            if nn <= 0.0 || no <= 0.0 {
                continue;
            }
            let q = factor * nn / (factor * nn + no);
            let total = xn + xo;
            x += xn;
            mean += total * q;
            var += total * q * (1.0 - q);
        }
        x > mean && (x - mean) / var.max(1.0).sqrt() >= z
    })
}

/// What a rule showed when it reached a regression verdict.
#[derive(Debug, Clone)]
pub(super) struct Frozen {
    reason: String,
    effect: Option<f64>,
    canary_value: Option<f64>,
    baseline_value: Option<f64>,
    confidence: f64,
}

/// After against before: when the deviation showed in the new version's first judged
/// minutes (the first three after its warm-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Onset {
    /// In each of them: the deploy's, as far as anything can tell.
    FromTheStart,
    /// In them together, not in each: it may have begun with the deploy; it pauses, a
    /// human rolls back.
    Early,
    /// Not in them: it began later, with the world as likely as the deploy.
    Late,
}

/// ln of how many times likelier `x` events in `m` trials are at the rate `before` than at
/// the rate `deviation` (Poisson; `-inf` when an event rules the rate before out).
pub(super) fn ln_odds_before(x: f64, m: f64, before: f64, deviation: f64) -> f64 {
    m * (deviation - before)
        - match (x > 0.0, before > 0.0) {
            (false, _) => 0.0,
            (true, true) => x * (deviation / before).ln(),
            (true, false) => f64::INFINITY,
        }
}

/// After against before: how many times likelier at the rate before the deploy than at the
/// deviation's a minute's errors must be to contradict the deviation holding now.
pub(super) const MINUTE_ODDS: f64 = 3.0;

/// After against before: how long a deviation the new version did not show in its first
/// judged minutes must last before it pauses (it never rolls back on its own).
pub(super) const LATE_PAUSE_AFTER_MS: i64 = 5 * 60_000;

/// After against before: steps in a row that do not hold now after which a late deviation's
/// [`LATE_PAUSE_AFTER_MS`] starts again (fewer are a break it survives).
pub(super) const LATE_GAP_STEPS: usize = 2;

/// After against before: how long the new version must have been judged before an error or
/// latency deviation from its start rolls back, unless the old version beside it showed the
/// new one worse: its first three judged minutes and its last three, [`LATE_PAUSE_AFTER_MS`]
/// apart. A dependency's outage that begins as the old version goes looks like the deploy's
/// regression for as long as it lasts.
pub(super) const ROLLBACK_AFTER_MS: i64 = LATE_PAUSE_AFTER_MS + KEPT_STEPS as i64 * STEP_MS;

/// After against before: standard errors by which the old version's own data since the
/// deploy began must lie beyond the pause threshold for a deviation to be the world's as
/// likely as the deploy's ([`RuleState::old_degraded`]).
pub(super) const Z_OLD_SHARED: f64 = 3.0;

/// After against before: how recently another rule of the deploy must have held its
/// deviation for the world's for a rule's own deviation to be read alike (a minute: an
/// outage's errors and its latency overlap while it lasts).
pub(super) const WORLD_ELSEWHERE_MS: i64 = 60_000;

/// After against before: the old version's last steps of serving (15 s each, up to three
/// minutes) in some run of which, up to its last, a deviation of the world's must show
/// ([`RuleState::old_degraded`]).
pub(super) const OLD_LAST_STEPS: usize = 12;

/// After against before: how many times the requests per second the service served before
/// the deploy the new version must serve for a latency deviation to be the load's as likely
/// as the deploy's ([`RuleState::load_grew`]).
pub(super) const LOAD_CONFOUNDS: f64 = 1.5;

/// After against before: standard errors by which the new version's errors must exceed the
/// old version's beside it, step by step, times the pause threshold, for a pause before the
/// new version has been judged minutes on its own ([`RuleState::worse_beside_old`]).
pub(super) const Z_BESIDE_OLD: f64 = 2.33;

/// After against before: judged steps (15 s) after which a deviation that held in every
/// half-minute of them may pause before the three minutes a rollback needs are in.
pub(super) const EARLY_PAUSE_STEPS: usize = 8;

/// After against before: the new version's first judged minutes show a deviation when
/// their counts lie beyond the first tier's threshold by this many standard errors (a few
/// errors more than expected in a quiet service are not yet a deviation).
pub(super) const Z_EARLY_ONSET: f64 = 1.0;

/// After against before: how many standard errors later data must be worse than earlier
/// data of the new version for a deviation to have begun later ([`RuleState::began_later`]).
pub(crate) const Z_ONSET_CHANGE: f64 = 3.0;

/// How many standard errors the share `x2 / n2` lies above `x1 / n1` (two-proportion z,
/// pooled); 0 without data on either side.
pub(crate) fn worse_by(x1: f64, n1: f64, x2: f64, n2: f64) -> f64 {
    if n1 <= 0.0 || n2 <= 0.0 {
        return 0.0;
    }
    let p = (x1 + x2) / (n1 + n2);
    let var = p * (1.0 - p) * (1.0 / n1 + 1.0 / n2);
    if var <= 0.0 {
        return 0.0;
    }
    (x2 / n2 - x1 / n1) / var.sqrt()
}

/// After against before: the last three minutes' counts lie beyond a pause's or rollback's
/// threshold by this many standard errors (one-sided 10 %), beside each minute's point
/// estimate — a coincidence of a few errors in a quiet service is not a deviation holding.
pub(crate) const Z_HOLDS_NOW: f64 = 1.28;

/// The tier whose latency a quantile rule's `tier` is proven beyond, by index into its
/// placed tiers: a pause beyond the latency of the placed tier below it (warn's), every
/// other tier beyond its own. A classic histogram hides where in a bucket the quantile
/// lies: a p99 ×1.4 inside a wide bucket is 1.1 % of requests beyond ×1.25, which takes
/// tens of thousands of requests to tell from 1 %, and 1.8 % beyond ×1.15. The pause is
/// reached only when the quantiles shown are as far apart as it asks.
pub(crate) fn proven_at<T>(tiers: &[Option<T>], tier: Tier) -> usize {
    let i = tier as usize;
    match tier {
        Tier::Pause => (0..i)
            .rev()
            .find(|j| matches!(tiers.get(*j), Some(Some(_))))
            .unwrap_or(i),
        _ => i,
    }
}

pub(super) fn first_tier(rule: &Rule) -> Option<Tier> {
    Tier::ALL.into_iter().find(|t| rule.threshold(*t).is_some())
}

pub(crate) fn first_threshold(rule: &Rule) -> Option<crate::rules::Threshold> {
    first_tier(rule).and_then(|t| rule.threshold(t))
}

/// The tier a pass must rule out: the most severe configured (rollback, usually). Smaller
/// regressions that the evidence confirms raise warn or pause first, and verdicts only
/// escalate, so a pass means "no confirmed regression, and none worth a rollback".
pub(super) fn pass_tier(rule: &Rule) -> Option<Tier> {
    Tier::ALL
        .into_iter()
        .rev()
        .find(|t| rule.threshold(*t).is_some())
}

pub(super) fn pass_threshold(rule: &Rule) -> Option<crate::rules::Threshold> {
    pass_tier(rule).and_then(|t| rule.threshold(t))
}

/// Whether an effect (canary over baseline) is at least `relative` in the bad direction.
pub(super) fn exceeds(effect: Option<f64>, relative: f64, up: bool) -> bool {
    effect.is_some_and(|e| {
        if up {
            e >= relative
        } else {
            e <= 1.0 / relative
        }
    })
}

/// `1 − e^(−E)`: the confidence shown for log-evidence `E` (0 when there is none).
pub(crate) fn confidence(log_evidence: f64) -> f64 {
    if log_evidence <= 0.0 {
        0.0
    } else {
        1.0 - (-log_evidence).exp()
    }
}

pub(super) use crate::stats::normal_cdf;

/// Inverse of the standard normal CDF (bisection; called rarely).
pub(super) fn normal_quantile(p: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn describe(
    rule: &Rule,
    reached: Option<Tier>,
    surely: Option<Tier>,
    pass: bool,
    observed_long: bool,
    enough: bool,
    effect: Option<f64>,
    canary: Option<f64>,
    baseline: Option<f64>,
    growth: Option<f64>,
) -> String {
    let unit = crate::rules::units::Unit::of(rule);
    let fmt = |v: Option<f64>| v.map(|x| unit.format(x)).unwrap_or_else(|| "n/a".into());
    let factor = effect
        .map(|e| format!("{e:.2}"))
        .unwrap_or_else(|| "n/a".into());
    let nums = match growth {
        // A trend's effect is its growth per hour over the baseline's level, not the levels'
        // ratio: say so.
        Some(g) => format!(
            "canary {} vs baseline {}, growing {}{}/h beyond the baseline after start-up (×{factor} of its level per hour)",
            fmt(canary),
            fmt(baseline),
            if g < 0.0 { "-" } else { "" },
            unit.format(g.abs()),
        ),
        None => format!("canary {} vs baseline {} (×{factor})", fmt(canary), fmt(baseline)),
    };
    match reached {
        Some(t) => {
            let tier = format!("{t:?}").to_lowercase();
            match surely {
                Some(s) => {
                    let below = format!("{s:?}").to_lowercase();
                    format!("{nums}: worse than the {tier} threshold by its estimate, and than the {below} threshold with confidence")
                }
                None => format!("{nums}: worse than the {tier} threshold with confidence"),
            }
        }
        None if !enough => format!(
            "{nums}: not enough evidence yet (min_evidence {})",
            rule.min_evidence
        ),
        None if pass && observed_long => {
            format!("{nums}: a regression worth a rollback is ruled out")
        }
        None if pass => format!(
            "{nums}: no regression so far; observing for {}",
            crate::config::format_duration(rule.observe)
        ),
        None => format!("{nums}: undecided"),
    }
}

#[cfg(test)]
mod tests {
    use super::{ln_odds_before, worse_by, MINUTE_ODDS};

    #[test]
    fn a_minute_too_thin_to_show_the_rate_before_does_not_contradict_a_deviation() {
        let odds = |x, m| ln_odds_before(x, m, 0.0013, 0.012).exp();
        // A minute of 84 requests without an error: as likely at ×9 as at the rate before
        // within the odds asked (one error expected at ×9).
        assert!(odds(0.0, 84.0) < MINUTE_ODDS, "{}", odds(0.0, 84.0));
        // 600 requests without one: 7 errors expected at ×9; the rate before it is.
        assert!(odds(0.0, 600.0) > 100.0, "{}", odds(0.0, 600.0));
        // One error in 84 speaks for the deviation.
        assert!(odds(1.0, 84.0) < 1.0);
        // Nothing failed before: any error rules the rate before out.
        assert_eq!(ln_odds_before(1.0, 84.0, 0.0, 0.012), f64::NEG_INFINITY);
        assert!((ln_odds_before(0.0, 100.0, 0.0, 0.01) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn worse_by_is_a_two_proportion_z() {
        // 0.2 % of 1,000 then 1 % of 8,000: far beyond three standard errors.
        assert!(worse_by(2.0, 1000.0, 80.0, 8000.0) > 2.4);
        assert!(worse_by(2.0, 1000.0, 400.0, 8000.0) > 5.0);
        // The same share is no change, a smaller one is negative, no data is none.
        assert!(worse_by(10.0, 1000.0, 80.0, 8000.0).abs() < 1e-9);
        assert!(worse_by(20.0, 1000.0, 80.0, 8000.0) < 0.0);
        assert_eq!(worse_by(0.0, 0.0, 5.0, 100.0), 0.0);
        assert_eq!(worse_by(0.0, 100.0, 0.0, 100.0), 0.0);
    }
}
