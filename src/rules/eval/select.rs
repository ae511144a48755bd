//! Judge, stage 1 — what a rule selects: series of the service offered as they appear in;
//! the ones its selectors match kept, each with its side, its component (numerator,
//! bucket, …), its instance and group, and the time its instance's start-up ends.

use std::sync::Arc;

use super::*;

impl RuleState {
    /// Offers a series; it is kept if a selector matches. A native histogram series feeds
    /// a quantile rule that selects its classic buckets (`x` for `x_bucket`).
    pub fn offer(&mut self, series: &Arc<Series>, side: Side, t: i64) {
        let native = matches!(self.rule.signal, Signal::Quantile { .. })
            && series.data.lock().hist.is_some();
        let components = if native {
            self.selected_as_native(&series.labels)
        } else {
            self.selected_as(&series.labels)
        };
        if !components.is_empty()
            && matches!(self.rule.signal, Signal::Quantile { .. })
            && !self.first_form(&series.labels, side, native)
        {
            // The same histogram of the same instance in the other form (Prometheus'
            // `scrape_classic_histograms` sends both): the observations once, not twice.
            return;
        }
        for component in components {
            let slot = match component {
                Component::Bucket if native => usize::MAX,
                Component::Bucket => match bucket_bound(&series.labels) {
                    Some(le) => {
                        self.forms.classic = true;
                        // On a native grid, a classic histogram is counted at the grid's
                        // bounds: its own add none.
                        if self.forms.grid.is_some() {
                            usize::MAX
                        } else {
                            self.bucket_slot(le)
                        }
                    }
                    None => continue,
                },
                _ => self.instance_slot(&series.labels, side),
            };
            // A series matching several selectors of one component counts once.
            if self
                .matched
                .iter()
                .any(|m| Arc::ptr_eq(&m.series, series) && m.component == component)
            {
                continue;
            }
            let joined = self.instance_joined(side, &series.labels, t);
            // Its value at the step it joins, not its newest: a push may already hold later
            // samples, and counting from those would lose their increments.
            let (mut prev, mut prev_hist, first) = {
                let data = series.data.lock();
                let prev = data.at_or_before(t).filter(|(_, v)| !v.is_nan());
                let mut h = NativeHistogram::default();
                let prev_hist = data
                    .hist
                    .as_ref()
                    .and_then(|r| r.at_or_before(t, &mut h))
                    .filter(|_| native && !h.is_stale())
                    .map(|ts| (ts, h));
                (prev, prev_hist, data.first_ts())
            };
            // A counter that appears while its instance already reported (a client library
            // creates `code="500"` at the first error) started from zero: its first value is
            // an increase, not a baseline to count from.
            if self.rule.signal.counters() {
                if let Some(first) = first.filter(|f| *f > joined + NEW_SERIES_AFTER_MS) {
                    prev = Some((first - 1, 0.0));
                    if native {
                        prev_hist = Some((first - 1, NativeHistogram::default()));
                    }
                }
            }
            let warm_from = match side {
                Side::Canary => joined + self.rule.warmup.as_millis() as i64,
                Side::Baseline => i64::MIN,
            };
            let group = match (&mut self.groups, &mut self.latency_groups, component) {
                (Some(g), _, Component::Numerator | Component::Denominator) => {
                    g.slot(&series.labels)
                }
                (_, Some(g), Component::Bucket) if side == Side::Canary || self.known.is_none() => {
                    g.slot(&series.labels)
                }
                _ => None,
            };
            let feed = if native {
                self.forms.native = true;
                self.ensure_grid();
                Feed::Native(Box::new(prev_hist))
            } else if component == Component::Bucket && self.forms.grid.is_some() {
                let le = bucket_bound(&series.labels).unwrap_or(f64::INFINITY);
                Feed::Projected(self.acc_slot(&series.labels, side, group), le)
            } else {
                Feed::Direct
            };
            self.matched.push(Matched {
                series: series.clone(),
                side,
                component,
                slot,
                prev,
                warm_from,
                group,
                feed,
            });
        }
    }

    /// Whether these labels' histogram (the labels but `le` and the name) on `side` is
    /// judged in this form (`native` or classic): the first form it showed.
    fn first_form(&mut self, labels: &LabelSet, side: Side, native: bool) -> bool {
        let key = labels_but(labels, &["le", "__name__"]);
        match self
            .histogram_forms
            .iter()
            .find(|(s, k, _)| *s == side && *k == key)
        {
            Some((_, _, form)) => *form == native,
            None => {
                self.histogram_forms.push((side, key, native));
                true
            }
        }
    }

    /// Lays the native grid of bounds ([`native::grid`]) if the rule has no bounds yet
    /// (classic buckets came first: native histograms are counted at theirs).
    pub(super) fn ensure_grid(&mut self) {
        if !self.bounds.is_empty() {
            return;
        }
        self.bounds = native::grid();
        self.forms.grid = Some(native::GRID_SCHEMA);
    }

    /// The classic histogram of these `_bucket` labels (all but `le`) on `side`.
    fn acc_slot(&mut self, labels: &LabelSet, side: Side, group: Option<usize>) -> usize {
        let key = labels_but(labels, &["le"]);
        match self
            .accs
            .iter()
            .position(|a| a.side == side && a.key == key)
        {
            Some(i) => i,
            None => {
                self.accs.push(Acc {
                    side,
                    key,
                    group,
                    judged: Vec::new(),
                    warming: Vec::new(),
                });
                self.accs.len() - 1
            }
        }
    }

    /// When the instance of these labels first showed a series of this rule (for the new
    /// version: its start).
    pub(super) fn instance_joined(&mut self, side: Side, labels: &LabelSet, t: i64) -> i64 {
        let name = instance_of(labels).unwrap_or("");
        match self.joined.iter().find(|(s, n, _)| *s == side && n == name) {
            Some((_, _, at)) => *at,
            None => {
                self.joined.push((side, name.to_string(), t));
                t
            }
        }
    }

    pub(super) fn bucket_slot(&mut self, le: f64) -> usize {
        match self.bounds.iter().position(|b| *b == le) {
            Some(i) => i,
            None => {
                self.bounds.push(le);
                self.bounds.len() - 1
            }
        }
    }

    pub(super) fn instance_slot(&mut self, labels: &LabelSet, side: Side) -> usize {
        let name = instance_of(labels)
            .map(str::to_string)
            .unwrap_or_else(|| labels.to_string());
        match self
            .instances
            .iter()
            .position(|i| i.side == side && i.name == name)
        {
            Some(i) => i,
            None => {
                self.instances.push(Instance {
                    side,
                    name,
                    last_ts: None,
                    events: 0.0,
                    secs: 0.0,
                });
                self.instances.len() - 1
            }
        }
    }

    /// Offers a series of the old version after against before: kept, if a selector
    /// matches, to tell what the old version showed while it still served.
    pub fn offer_old(&mut self, series: &Arc<Series>) {
        let native = matches!(self.rule.signal, Signal::Quantile { .. })
            && series.data.lock().hist.is_some();
        let selected = if native {
            !self.selected_as_native(&series.labels).is_empty()
        } else {
            !self.selected_as(&series.labels).is_empty()
        };
        if selected && !self.old.iter().any(|s| Arc::ptr_eq(s, series)) {
            self.old.push(series.clone());
        }
    }

    /// The components a native histogram series with these labels feeds: the buckets,
    /// where a bucket selector names its classic form.
    fn selected_as_native(&self, labels: &LabelSet) -> Vec<Component> {
        self.rule
            .signal
            .selectors()
            .into_iter()
            .filter(|(c, sel)| *c == Component::Bucket && sel.matches_native(labels))
            .map(|(c, _)| c)
            .take(1)
            .collect()
    }

    /// The components (numerator, bucket, …) whose selectors match these labels.
    fn selected_as(&self, labels: &LabelSet) -> Vec<Component> {
        self.rule
            .signal
            .selectors()
            .into_iter()
            .filter(|(_, sel)| sel.matches(labels))
            .map(|(c, _)| c)
            .collect()
    }

    /// Bucket counts by another slot order (`bounds`, on the native grid if `on_grid`) in
    /// this rule's own. Between a native grid and classic bounds, the counts are read at
    /// this rule's bounds (interpolated within a bucket, as quantiles are): bounds added
    /// now would have no counts in what the rule already holds.
    pub(super) fn align_buckets(
        &mut self,
        bounds: &[f64],
        on_grid: bool,
        buckets: &[f64],
    ) -> Vec<f64> {
        if !self.bounds.is_empty() && on_grid != self.forms.grid.is_some() {
            return self
                .bounds
                .iter()
                .map(|b| {
                    if b.is_infinite() {
                        bucket_total(bounds, buckets)
                    } else {
                        cumulative_at(bounds, buckets, *b)
                    }
                })
                .collect();
        }
        if self.bounds.is_empty() && on_grid {
            self.forms.grid = Some(native::GRID_SCHEMA);
        }
        let slots: Vec<usize> = bounds.iter().map(|b| self.bucket_slot(*b)).collect();
        let mut out = vec![0.0; self.bounds.len()];
        for (slot, x) in slots.into_iter().zip(buckets) {
            out[slot] += x;
        }
        out
    }

    /// Sets the baseline measured before the deploy (before/after comparisons), the deploy
    /// having begun at `deploy_started`, and restarts the evidence: it is about a different
    /// comparison now.
    pub fn set_known_baseline(&mut self, mut known: KnownBaseline, deploy_started: i64) {
        let bounds = std::mem::take(&mut known.bounds);
        let grid = known.forms.grid.is_some();
        known.total.buckets = self.align_buckets(&bounds, grid, &known.total.buckets);
        for g in &mut known.latency_groups {
            g.1 = self.align_buckets(&bounds, grid, &g.1);
        }
        self.forms.classic |= known.forms.classic;
        self.forms.native |= known.forms.native;
        known.bounds = self.bounds.clone();
        known.forms.grid = self.forms.grid;
        self.deploy_started = Some(deploy_started);
        self.old_shared = None;
        self.known = Some(known);
        self.evidence = None;
        self.known_steps = 0;
        self.onset_early = None;
        self.late_since = None;
        self.late_gap = 0;
        // A detected deploy judged side by side until now: the new version's last minute
        // beside the old one is the minute before judging after against before began (a
        // deviation that shows only from now on began now, with the world as likely).
        self.before_judged.clear();
        let n = self.recent.len();
        for step in self.recent.range(n.saturating_sub(MINUTE_STEPS)..n) {
            self.before_judged
                .push_back(step[Side::Canary as usize].clone());
        }
        self.first_minute = None;
        self.first_judged = None;
        self.carry = Default::default();
        self.matched.retain(|m| m.side == Side::Canary);
        self.instances.retain(|i| i.side == Side::Canary);
        // Instance slots shifted: recompute them. Ratio groups start afresh against their
        // own pre-deploy counts.
        if let (Some(g), Some(k)) = (&mut self.groups, &self.known) {
            g.set_known(k.groups.clone());
        }
        if let (Some(g), Some(k)) = (&mut self.latency_groups, &self.known) {
            g.set_known(k.latency_groups.clone());
        }
        let labels: Vec<_> = self
            .matched
            .iter()
            .map(|m| m.series.labels.clone())
            .collect();
        for (i, l) in labels.iter().enumerate() {
            if self.matched[i].component != Component::Bucket {
                let slot = self.instance_slot(l, Side::Canary);
                self.matched[i].slot = slot;
            }
            match (
                &mut self.groups,
                &mut self.latency_groups,
                self.matched[i].component,
            ) {
                (Some(g), _, Component::Numerator | Component::Denominator) => {
                    self.matched[i].group = g.slot(l);
                }
                (_, Some(g), Component::Bucket) => self.matched[i].group = g.slot(l),
                _ => {}
            }
        }
        self.observed_since = None;
    }
}

/// A counter series first seen this long after its instance's other series was created
/// after the instance started: it counts from zero.
pub(super) const NEW_SERIES_AFTER_MS: i64 = 20_000;

/// The labels but those named in `skip`, as a key.
fn labels_but(labels: &LabelSet, skip: &[&str]) -> String {
    labels
        .iter()
        .filter(|(n, _)| !skip.contains(n))
        .map(|(n, v)| format!("{n}={v},"))
        .collect()
}

/// Which instance a series comes from: its `instance` label, else its `pod`.
pub(super) fn instance_of(labels: &LabelSet) -> Option<&str> {
    labels.get("instance").or_else(|| labels.get("pod"))
}

/// The `le` label of a `_bucket` series, parsed.
pub(super) fn bucket_bound(labels: &LabelSet) -> Option<f64> {
    let le = labels.get("le")?;
    match le {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        s => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Batch, Bucket, DecodeLimits, Sample};
    use crate::store::{store_for_tests, IngestScratch, Store};

    /// One instance's latency histogram in both forms: classic `_bucket` series and the
    /// native histogram of the same name.
    fn both_forms(store: &Store, instance: &str) -> (Vec<Arc<Series>>, Arc<Series>) {
        let labels = |name: &str, le: Option<&str>| {
            let mut l = vec![
                ("__name__", name),
                ("instance", instance),
                ("job", "shop"),
                ("version", "v1"),
            ];
            l.extend(le.map(|le| ("le", le)));
            LabelSet::from_strs(&l)
        };
        let mut batch = Batch::default();
        batch.reset(&DecodeLimits::default());
        let les = ["0.1", "0.5", "+Inf"];
        for (le, v) in les.iter().zip([50.0, 90.0, 100.0]) {
            let l = labels("http_request_duration_seconds_bucket", Some(le));
            batch.push_encoded(
                l.as_bytes(),
                &[Sample {
                    ts: 15_000,
                    value: v,
                }],
            );
        }
        let native = labels("http_request_duration_seconds", None);
        batch.push_encoded(native.as_bytes(), &[]);
        let h = NativeHistogram {
            schema: 3,
            count: 100.0,
            sum: 12.0,
            positive: vec![Bucket {
                index: -27,
                count: 100.0,
            }],
            ..Default::default()
        };
        batch.push_histogram(h.sample(15_000), &[], &h.positive);
        store
            .ingest(&mut batch, &mut IngestScratch::default())
            .unwrap();
        let classic = les
            .iter()
            .map(|le| {
                store
                    .get(&labels("http_request_duration_seconds_bucket", Some(le)))
                    .unwrap()
            })
            .collect();
        (classic, store.get(&native).unwrap())
    }

    fn p99() -> Rule {
        crate::rules::RuleSet::embedded()
            .rules
            .into_iter()
            .find(|r| r.name == "latency_p99")
            .unwrap()
    }

    #[test]
    fn an_instance_sending_both_forms_of_a_histogram_is_counted_once() {
        let s = store_for_tests(100);
        let (classic, native) = both_forms(&s, "a:80");
        // Classic first: its native twin is not matched.
        let mut r = RuleState::new(p99());
        for c in &classic {
            r.offer(c, Side::Baseline, 20_000);
        }
        r.offer(&native, Side::Baseline, 20_000);
        assert_eq!(r.matched_series(), 3);
        assert_eq!(r.histogram_form(), Some("classic"));
        // Native first: the classic buckets are not.
        let mut r = RuleState::new(p99());
        r.offer(&native, Side::Baseline, 20_000);
        for c in &classic {
            r.offer(c, Side::Baseline, 20_000);
        }
        assert_eq!(r.matched_series(), 1);
        assert_eq!(r.histogram_form(), Some("native"));
        assert_eq!(r.forms.grid, Some(native::GRID_SCHEMA));
        // Another instance's classic buckets beside a native one: both judged, the classic
        // ones counted at the native grid.
        let (other, _) = both_forms(&s, "b:80");
        for c in &other {
            r.offer(c, Side::Baseline, 20_000);
        }
        assert_eq!(r.matched_series(), 4);
        assert_eq!(r.histogram_form(), Some("classic+native"));
        assert!(
            r.matched
                .iter()
                .filter(|m| matches!(m.feed, Feed::Projected(..)))
                .count()
                == 3
        );
    }
}
