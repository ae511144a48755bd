//! Deploy lifecycle: each push's touched services in; detected and registered deploys
//! advanced step by step in event time, their rules judged and their verdicts and timelines
//! updated. Locks: one map read, then one lock per service, then one per deploy.
//!
//! Memory holds the deploys being judged and, per service, the newest finished one (for
//! its charts and the derived metrics); a finished deploy goes to the history
//! ([`History`], bounded by its retention) and is served from there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::{Mutex, RwLock};

use super::{
    deploy_id, Change, DeployError, DeployJson, Event, Phase, Registration, RuleJson, SideJson,
    Source, Strategy, Suspect, Verdict,
};
use crate::jsonl::finite_or_zero;
use crate::rca;
use crate::report::history::{Archived, History, Record};
use crate::rules::eval::{known_baseline, RuleState, Side};
use crate::rules::{Alphas, RuleSet};
use crate::store::{version_in, Series, Service, ServiceId, Store, VersionId};

/// Length of an evaluation step in event time.
pub const STEP_MS: i64 = 15_000;

/// Timing of detection and comparison.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The pre-deploy window a before/after comparison uses as its baseline.
    pub baseline_window_ms: i64,
    /// Versions first seen within this time of a service's first sample were already
    /// running when deploywatch started: not deploys.
    pub detect_grace_ms: i64,
    /// Versions serving at or before this event time were running before the judged range
    /// began (a backtest's `--from`, with history read from before it), for a service that
    /// reported by then; a service that first reports later gets the grace above. `None`
    /// (a live deploywatch): the grace alone.
    pub running_until: Option<i64>,
    /// A version with no sample for this long has stopped serving.
    pub stale_after_ms: i64,
    /// A deploy is observed for this long, then done.
    pub max_observation_ms: i64,
    /// The labels naming services and versions (never suspects).
    pub service_label: String,
    pub version_label: String,
}

/// How often (event time) both versions are compared with the pre-deploy level, and over
/// how long a window: a dependency outage shows on both sides.
const SHARED_CHECK_EVERY_MS: i64 = 60_000;
const SHARED_WINDOW_MS: i64 = 2 * 60_000;
/// After a rollback is observed: recovery is judged on the last minute, from a minute after
/// the rollback, for at most 15 minutes.
const RECOVERY_WINDOW_MS: i64 = 60_000;
const RECOVERY_WATCH_MS: i64 = 15 * 60_000;
/// While a deploy stays regressed, its suspects are recomputed this often on the grown window.
const REEXPLAIN_EVERY_MS: i64 = 5 * 60_000;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            baseline_window_ms: 30 * 60_000,
            detect_grace_ms: 60_000,
            running_until: None,
            stale_after_ms: 60_000,
            max_observation_ms: 60 * 60_000,
            service_label: "job".into(),
            version_label: "version".into(),
        }
    }
}

/// A deploy being judged, or judged.
pub struct DeployState {
    /// Order of creation: the newest deploy of a service has the highest.
    seq: u64,
    pub id: String,
    pub service: String,
    pub version: String,
    pub baseline_version: Option<String>,
    pub strategy: Strategy,
    pub source: Source,
    pub started_at: i64,
    pub commit: String,
    pub author: String,
    pub url: String,
    pub changes: Vec<Change>,
    pub phase: Phase,
    pub verdict: Verdict,
    pub verdict_at: Option<i64>,
    pub timeline: Vec<Event>,
    /// The timeline events other modules recorded (also in `timeline`), kept for snapshots.
    external: Vec<Event>,
    /// The baseline is the service before the deploy, not the old version beside it.
    pub before_after: bool,
    pub rules: Vec<RuleState>,
    /// Per rule: its row as it stood when the rule reached its verdict (issue 16). Shown
    /// instead of the live row once there is one, so a finished deploy shows the evidence
    /// that decided it, not what later steps (a promoted canary compared with before the
    /// deploy, a rolled-back version's last samples) made of it.
    decided_rows: Vec<Option<RuleJson>>,
    /// Suspects of the new version's regression, and of a degradation both versions share.
    pub suspects: Vec<Suspect>,
    pub shared_suspects: Vec<Suspect>,
    /// Event time the new version was seen gone and the baseline serving alone again.
    pub rollback_observed_at: Option<i64>,
    /// Event time the service was back to its pre-deploy level after the rollback.
    pub recovered_at: Option<i64>,
    /// The (rule, verdict) the suspects were computed for.
    explained: Option<(String, Verdict)>,
    explained_at: Option<i64>,
    /// Per rule: its pre-deploy level, measured once when first needed.
    pre_levels: Vec<Option<Option<rca::Level>>>,
    shared_at: Option<i64>,
    /// After against before: when a rule last held its deviation for the world's (an
    /// outage, a spike); the other rules' deviations at the same time are read alike.
    world_at: Option<i64>,
    /// After against before: the new version's load over the service's before the deploy,
    /// as a latency rule read it at the last step (traffic spikes; CPU follows the load).
    load: Option<f64>,
    /// Until when recovery is watched after a rollback.
    recovery_until: Option<i64>,
    alphas: Alphas,
    next_step: i64,
    /// The next series `seq` of the service this deploy has not offered to its rules.
    scanned: u64,
    canary_vid: Option<VersionId>,
    baseline_vid: Option<VersionId>,
    max_warmup_ms: i64,
    pre_measured: bool,
    /// Per gate (endpoint): the last answer recorded in the timeline.
    gate_answers: Vec<(String, String)>,
    /// The DEPLOY JSON as of the last change, published for the gates, which read it
    /// without this deploy's lock: a push holds that lock while it judges the deploy, and a
    /// judging step over many series can take seconds (issue 15).
    published: Arc<ArcSwapOption<DeployJson>>,
}

impl DeployState {
    fn event(&mut self, at: i64, event: &str, detail: String) {
        self.timeline.push(Event {
            at,
            event: event.into(),
            verdict: None,
            rule: None,
            detail,
        });
    }

    /// The confidence levels the deploy's rules are judged at.
    pub fn alphas(&self) -> Alphas {
        self.alphas
    }

    /// The event time of the latest judged step.
    pub fn last_step(&self) -> i64 {
        (self.next_step - STEP_MS).max(self.started_at)
    }

    /// Judged and done, with nothing left to watch: ready for the history.
    pub fn finished(&self) -> bool {
        self.phase == Phase::Done && self.recovery_until.is_none()
    }

    /// The contract's DEPLOY JSON.
    pub fn to_json(&self, external_url: &str) -> DeployJson {
        let mut timeline = self.timeline.clone();
        timeline.sort_by_key(|e| e.at);
        DeployJson {
            id: self.id.clone(),
            service: self.service.clone(),
            version: self.version.clone(),
            baseline_version: self.baseline_version.clone(),
            strategy: self.strategy,
            source: self.source,
            started_at: self.started_at,
            phase: self.phase,
            verdict: self.verdict,
            verdict_at: self.verdict_at,
            commit: self.commit.clone(),
            author: self.author.clone(),
            url: self.url.clone(),
            changes: self.changes.clone(),
            rules: self.rule_rows(),
            suspects: self
                .suspects
                .iter()
                .chain(&self.shared_suspects)
                .map(|s| Suspect {
                    share: finite_or_zero(s.share),
                    surprise: s.surprise.filter(|v| v.is_finite()),
                    ..s.clone()
                })
                .collect(),
            timeline,
            comparison: if self.before_after {
                "before-after"
            } else {
                "side-by-side"
            }
            .into(),
            reason: self.reason(),
            report_url: format!("{external_url}/api/v1/deploys/{}/report", self.id),
        }
    }

    /// The rules' rows: each frozen at its verdict, the live one while it has none. Once a
    /// rollback is decided (or a regressed deploy is done), a rule still pending was not
    /// needed: said so instead of "observing for 5m" (issue 16).
    fn rule_rows(&self) -> Vec<RuleJson> {
        let decider = self.deciding_rule().map(|r| r.rule.name.clone());
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut row = match self.decided_rows.get(i).cloned().flatten() {
                    Some(row) => RuleJson {
                        matched_series: r.matched_series(),
                        ..row
                    },
                    None => live_row(r),
                };
                if crate::report::not_needed(self.verdict, self.phase, row.verdict) {
                    row.reason = format!(
                        "not needed: {} decided the {} before this rule was decided",
                        decider.as_deref().unwrap_or("another rule"),
                        self.verdict
                    );
                }
                row
            })
            .collect()
    }

    /// The rule that brought a regression verdict: the most severe, critical first.
    fn deciding_rule(&self) -> Option<&RuleState> {
        if !self.verdict.is_regression() {
            return None;
        }
        self.rules
            .iter()
            .filter(|r| r.verdict.is_regression())
            .max_by_key(|r| (r.rule.critical, r.verdict))
    }

    /// One line on why the verdict is what it is: the deciding rule, or what is missing.
    pub fn reason(&self) -> String {
        if let Some(r) = self.deciding_rule() {
            return format!("{}: {}", r.rule.name, r.reason);
        }
        match self.verdict {
            Verdict::Pass => {
                "no rule found a regression and the evidence rules out one worth a rollback".into()
            }
            _ if self.phase == Phase::Warmup => "warming up: rules are not judged yet".into(),
            _ => {
                let waiting: Vec<String> = self
                    .rules
                    .iter()
                    .filter(|r| r.verdict == Verdict::Pending && r.has_data() && r.applicable())
                    .map(|r| format!("{} ({})", r.rule.name, r.reason))
                    .collect();
                if waiting.is_empty() {
                    "no rule has data for both sides yet".into()
                } else {
                    format!("waiting for evidence: {}", waiting.join("; "))
                }
            }
        }
    }
}

/// A rule's row as it stands now.
fn live_row(r: &RuleState) -> RuleJson {
    RuleJson {
        rule: r.rule.name.clone(),
        verdict: r.verdict,
        canary: SideJson {
            value: r.canary_value.filter(|v| v.is_finite()),
            samples: finite_or_zero(r.canary_samples),
        },
        baseline: SideJson {
            value: r.baseline_value.filter(|v| v.is_finite()),
            samples: finite_or_zero(r.baseline_samples),
        },
        effect: r.effect.filter(|v| v.is_finite()),
        confidence: finite_or_zero(r.confidence),
        reason: r.reason.clone(),
        matched_series: r.matched_series(),
        histogram: r.histogram_form().map(str::to_string),
    }
}

/// What deploywatch knows of one service's deploys.
#[derive(Default)]
struct ServiceTrack {
    first_seen: Option<i64>,
    /// The versions (by id) detection is done with (a deploy was detected or registered
    /// for it, it was running before deploywatch saw the service, or it has no name). A
    /// version not done yet is looked at again when it starts serving.
    decided: HashSet<VersionId>,
    /// Per version (by id) that serves: since when, the first sample of its first series
    /// a rule selects ([`Serving`]). A version without one is not here (a stray version
    /// label on a sidecar's or a batch job's metric).
    serving_since: HashMap<VersionId, i64>,
    /// The next series `seq` of the service detection has not looked at: each series is
    /// classified once, when it appears, under the rules then in force.
    scanned: u64,
    /// A version started serving and detection has not looked at it yet.
    started_serving: bool,
    /// Versions that serve but were running before deploywatch saw the service (or before
    /// the backtested range): not deploys. With why.
    running_before: Vec<(VersionId, NotDeployed)>,
    /// The store's service this tracks (its id): a service the store forgot and saw again
    /// is a new one ([`Deploys::adopt`]).
    service_id: Option<ServiceId>,
    /// Deploys being judged (or watched for recovery).
    active: Vec<Arc<Mutex<DeployState>>>,
    /// The newest finished deploy, whole: its page's charts and the derived metrics of the
    /// service's last deploy. Older finished ones are in the history only.
    last: Option<Arc<Mutex<DeployState>>>,
}

impl ServiceTrack {
    /// Nothing tracked: as a service never seen.
    fn is_blank(&self) -> bool {
        self.first_seen.is_none()
            && self.service_id.is_none()
            && self.active.is_empty()
            && self.last.is_none()
    }
}

/// What makes a version *serve*: a series one of the rules selects (any selector of any
/// rule: `http_requests_total`, `process_cpu_seconds_total`, ... under the default rules).
/// A version label value that appears only on other metrics (a sidecar's `*_build_info`, a
/// batch job's metrics under the service's job label) is not a deploy. Rebuilt with the
/// rules.
struct Serving {
    selectors: Vec<crate::rules::Selector>,
}

impl Serving {
    fn new(rules: &RuleSet) -> Serving {
        let mut selectors: Vec<crate::rules::Selector> = Vec::new();
        for r in &rules.rules {
            for (_, sel) in r.signal.selectors() {
                if !selectors.iter().any(|s| s.text == sel.text) {
                    selectors.push(sel.clone());
                }
            }
        }
        Serving { selectors }
    }

    fn matches(&self, labels: &crate::store::LabelSet) -> bool {
        self.selectors.iter().any(|s| s.matches(labels))
    }
}

/// A deploy held in memory, with what lookups need without taking its lock (which a push
/// judging it holds).
struct Held {
    id: String,
    service: String,
    version: String,
    seq: u64,
    state: Arc<Mutex<DeployState>>,
    /// The deploy's [`DeployState::published`] DEPLOY JSON.
    published: Arc<ArcSwapOption<DeployJson>>,
}

/// What a gate found for a service (and version): see [`Deploys::for_gate`].
#[derive(Debug, Default)]
pub struct GateLookup {
    /// The deploy the gate answers for, as last published.
    pub deploy: Option<Arc<DeployJson>>,
    /// The service's newest deploy held in memory, whatever its version and phase: named
    /// in the answer when there is no deploy to answer for.
    pub newest: Option<Arc<DeployJson>>,
}

/// How many deploys are held where (`/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Being judged, or watched for recovery after a rollback.
    pub active: usize,
    /// Held in memory: the active ones and each service's newest finished one.
    pub in_memory: usize,
    /// Finished deploys in the history (within its retention).
    pub history: usize,
}

/// Why a version the data shows is not a deploy ([`Deploys::not_deployed`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotDeployed {
    /// It served at or before `until` ([`Settings::running_until`]): running before the
    /// judged range.
    RunningBefore { serving_since: i64, until: i64 },
    /// It served within the detection grace of the service's first sample: running when
    /// deploywatch first saw the service.
    WithinGrace {
        serving_since: i64,
        first_sample: i64,
        grace_ms: i64,
    },
    /// It is on no series a rule selects (a sidecar's or a batch job's label): it does not
    /// serve, so it is no deploy.
    NotServing,
}

/// A version of a service that is not (yet) a deploy, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Undeployed {
    pub service: String,
    pub version: String,
    /// Its first sample on any series.
    pub first_seen: Option<i64>,
    #[serde(flatten)]
    pub why: NotDeployed,
}

/// What a registration did ([`Deploys::register`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub id: String,
    pub outcome: RegisterOutcome,
    /// Fields of a repeated registration that a running deploy does not take (how it is
    /// judged was fixed when it started), one line each: what was asked and what holds.
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// A new deploy.
    Created,
    /// A deploy detected in the data, registered now: the registration's metadata joined it.
    Adopted,
    /// Registered before; this registration brought a new commit, author, url or changes.
    Updated,
    /// Registered before with the same metadata (a retried pipeline step): nothing changed.
    Unchanged,
}

impl RegisterOutcome {
    /// Whether the registration made the deploy known through the API just now (`201`),
    /// rather than repeated an earlier one (`200`).
    pub fn is_new(self) -> bool {
        matches!(self, RegisterOutcome::Created | RegisterOutcome::Adopted)
    }
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Canary => "canary",
        Strategy::Rolling => "rolling",
        Strategy::BlueGreen => "blue-green",
    }
}

/// All deploys, and the judging of the running ones.
pub struct Deploys {
    settings: Settings,
    rules: ArcSwap<RuleSet>,
    /// What makes a version serve, from `rules`.
    serving: ArcSwap<Serving>,
    services: RwLock<HashMap<String, Arc<Mutex<ServiceTrack>>>>,
    /// Deploys in memory, in order of creation: every service's active ones and its newest
    /// finished one.
    live: RwLock<Vec<Held>>,
    next_seq: std::sync::atomic::AtomicU64,
    pub external_url: String,
    /// Finished deploys: logged when they finish, and those read back at start (not judged
    /// again). In memory only (unbounded) until [`Deploys::set_history`].
    history: RwLock<Arc<History>>,
    /// Where API registrations are made durable before they are answered.
    journal: std::sync::OnceLock<super::journal::Journal>,
    /// Samples of an earlier run are being replayed (a restart's restore): what the judge
    /// finds again (deploys detected, verdicts, rollbacks) was logged when it happened and
    /// is not logged again as new.
    replaying: std::sync::atomic::AtomicBool,
}

impl Deploys {
    pub fn new(rules: RuleSet, settings: Settings, external_url: String) -> Deploys {
        Deploys {
            settings,
            serving: ArcSwap::from_pointee(Serving::new(&rules)),
            rules: ArcSwap::from_pointee(rules),
            services: RwLock::new(HashMap::new()),
            live: RwLock::new(Vec::new()),
            next_seq: std::sync::atomic::AtomicU64::new(0),
            external_url,
            history: RwLock::new(Arc::new(History::in_memory(None))),
            journal: std::sync::OnceLock::new(),
            replaying: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Versions serving at or before `t` (event time) are not deploys: a backtest's
    /// `--from` ([`Settings::running_until`]).
    pub fn set_running_until(&mut self, t: i64) {
        self.settings.running_until = Some(t);
    }

    /// While `on`, the judge's findings are not logged: they replay an earlier run's
    /// (`App::restore`), whose log said them when they happened.
    pub fn set_replaying(&self, on: bool) {
        self.replaying
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether what the judge finds now is news (not a replay), to be logged.
    fn news(&self) -> bool {
        !self.replaying.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn history(&self) -> Arc<History> {
        self.history.read().clone()
    }

    /// A deploy held in memory, by id.
    fn held(&self, id: &str) -> Option<Arc<Mutex<DeployState>>> {
        self.live
            .read()
            .iter()
            .find(|h| h.id == id)
            .map(|h| h.state.clone())
    }

    /// How many deploys are held where.
    pub fn counts(&self) -> Counts {
        // Not under the list's lock: a push takes a service's lock, then the list's.
        let in_memory = self.live.read().len();
        let tracks: Vec<Arc<Mutex<ServiceTrack>>> =
            self.services.read().values().cloned().collect();
        let active = tracks.iter().map(|t| t.lock().active.len()).sum();
        Counts {
            active,
            in_memory,
            history: self.history().len(),
        }
    }

    /// Makes API registrations durable in `journal` from now on.
    pub fn set_journal(&self, journal: super::journal::Journal) {
        let _ = self.journal.set(journal);
    }

    /// Drops journal entries of deploys that finished and are in the history.
    pub fn compact_journal(&self) {
        let Some(j) = self.journal.get() else { return };
        let history = self.history();
        match j.compact(|e| !history.contains(&e.id)) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(dropped = n, "Compacted the registration journal."),
            Err(error) => tracing::error!(%error, "Cannot compact the registration journal."),
        }
    }

    /// Events other modules added to deploys' timelines (alerts, gate answers), for a
    /// snapshot: the judge's own events are recomputed when samples are replayed.
    pub fn external_events(&self) -> Vec<(String, Event)> {
        let mut out = Vec::new();
        let held: Vec<Arc<Mutex<DeployState>>> =
            self.live.read().iter().map(|h| h.state.clone()).collect();
        for d in held {
            let d = d.lock();
            out.extend(d.external.iter().map(|e| (d.id.clone(), e.clone())));
        }
        out
    }

    /// After a replay: deploys the history already holds (they finished) are shown as
    /// stored, not as judged again on the samples that survived; running deploys get a
    /// `resumed` event saying what happened.
    pub fn finish_restore(&self, detail: &str) {
        let history = self.history();
        self.live.write().retain(|h| !history.contains(&h.id));
        for track in self.services.read().values() {
            let mut tr = track.lock();
            tr.active.retain(|d| !history.contains(&d.lock().id));
            if tr
                .last
                .as_ref()
                .is_some_and(|d| history.contains(&d.lock().id))
            {
                tr.last = None;
            }
            for d in &tr.active {
                let mut d = d.lock();
                if !d.finished() {
                    let at = d.last_step();
                    d.event(at, "resumed", detail.to_string());
                    self.publish(&d);
                }
            }
        }
    }

    /// Logs finished deploys to `history` from now on; the finished deploys it holds (read
    /// from it at start) are listed and reported as stored, not judged again.
    pub fn set_history(&self, history: History) {
        *self.history.write() = Arc::new(history);
    }

    /// Writes a finished deploy and its final report to the history, once.
    fn archive(&self, d: &DeployState) {
        let h = self.history();
        if h.contains(&d.id) {
            return; // judged again in a replay after a restart: logged already
        }
        let record = Record {
            finished_at: d.last_step(),
            deploy: d.to_json(&self.external_url),
            report: crate::report::build(d),
        };
        match h.append(record) {
            Ok(()) => {
                tracing::debug!(deploy_id = %d.id, "Logged the finished deploy to the history.")
            }
            Err(error) => {
                tracing::error!(deploy_id = %d.id, %error, "Cannot log the finished deploy to the history.")
            }
        }
    }

    /// A finished deploy leaves memory: it becomes its service's `last` if it is the newest
    /// finished one (the one it replaces leaves), else it is served from the history only.
    fn retire(&self, tr: &mut ServiceTrack, d: Arc<Mutex<DeployState>>) {
        let seq = d.lock().seq;
        let gone = match &tr.last {
            Some(last) if last.lock().seq > seq => d,
            _ => match tr.last.replace(d) {
                Some(old) => old,
                None => return,
            },
        };
        let gone = gone.lock().seq;
        self.live.write().retain(|h| h.seq != gone);
    }

    /// Forgets the deploy state of services not seen for the retention: those the store
    /// forgot ([`Store::sweep`] decides, and says when in its docs), and those registered
    /// through the API that never reported, once the store's event time (not past the wall
    /// clock) is `retention_ms` past their deploys. A deploy still open on one ends — its
    /// samples are gone with the service — and goes to the history as every finished
    /// deploy does; its newest finished deploy leaves memory with its derived metrics; the
    /// service's per-version state goes, and seen again it starts afresh (the versions
    /// running then are not deploys). For the services kept, the state of the versions the
    /// store forgot goes. Returns how many deploys left memory.
    pub fn forget_idle(&self, store: &Store, retention_ms: i64) -> usize {
        let cutoff = store
            .newest()
            .map(|n| n.min(crate::now_ms()).saturating_sub(retention_ms));
        let tracks: Vec<(String, Arc<Mutex<ServiceTrack>>)> = self
            .services
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut gone = Vec::new();
        let mut blank = Vec::new();
        for (name, track) in tracks {
            // A track a push is judging under is looked at next time, not waited for.
            let Some(mut tr) = track.try_lock() else {
                continue;
            };
            let forget = match store.service(&name) {
                // The store's service, or one it forgot and saw again (then the old one's
                // deploys end here rather than at its next push).
                Some(svc) if tr.service_id.is_none_or(|id| id == svc.id) => {
                    let versions = svc.versions();
                    let held = |id: &VersionId| version_in(&versions, *id).is_some();
                    tr.decided.retain(held);
                    tr.serving_since.retain(|id, _| held(id));
                    false
                }
                Some(_) => true,
                // Forgotten by the store (it had reported), or registered and never seen.
                None => {
                    tr.first_seen.is_some()
                        || cutoff.is_some_and(|c| {
                            tr.active
                                .iter()
                                .chain(&tr.last)
                                .all(|d| d.lock().last_step() < c)
                        })
                }
            };
            if forget {
                gone.extend(self.forget_track(&mut tr));
                blank.push(name);
            }
        }
        if !gone.is_empty() {
            self.live.write().retain(|h| !gone.contains(&h.seq));
            tracing::debug!(
                deploys = gone.len(),
                "Forgot the deploys of services not seen for the retention."
            );
        }
        // Tracks nobody else holds (a push takes its own reference under the map's lock)
        // and nobody used since: their names leave too.
        if blank.is_empty() {
            return gone.len();
        }
        let mut map = self.services.write();
        for name in blank {
            if map
                .get(&name)
                .is_some_and(|t| Arc::strong_count(t) == 1 && t.lock().is_blank())
            {
                map.remove(&name);
            }
        }
        gone.len()
    }

    /// Makes `tr` the track of the store's service `svc`. If it tracked an earlier service
    /// of that name, one the store forgot and saw again, that one's deploys end first.
    fn adopt(&self, tr: &mut ServiceTrack, svc: &Service) {
        if tr.service_id.is_some_and(|id| id != svc.id) {
            let gone = self.forget_track(tr);
            self.live.write().retain(|h| !gone.contains(&h.seq));
        }
        tr.service_id = Some(svc.id);
    }

    /// Ends the service's open deploys (to the history), lets its deploys leave memory and
    /// resets its track. Returns the `seq`s of the deploys that left.
    fn forget_track(&self, tr: &mut ServiceTrack) -> Vec<u64> {
        let mut gone = Vec::new();
        for d in std::mem::take(&mut tr.active) {
            let mut d = d.lock();
            let at = d.last_step();
            if d.phase != Phase::Done {
                d.phase = Phase::Done;
                let detail = format!(
                    "observation ended with verdict {}: the service has not reported for the retention",
                    d.verdict
                );
                d.event(at, "observation_ended", detail);
            }
            if d.recovery_until.take().is_some() {
                d.event(
                    at,
                    "recovery_not_seen",
                    "the service stopped reporting".into(),
                );
            }
            self.archive(&d);
            gone.push(d.seq);
        }
        if let Some(d) = tr.last.take() {
            gone.push(d.lock().seq);
        }
        *tr = ServiceTrack::default();
        gone
    }

    /// A finished deploy in the history, by id.
    pub fn archived(&self, id: &str) -> Option<Arc<Archived>> {
        self.history().get(id)
    }

    /// The post-deploy report of a deploy, live or from the history.
    pub fn report(&self, id: &str) -> Result<Option<crate::report::Report>, DeployError> {
        if let Some(r) = self.with_deploy(id, crate::report::build) {
            return Ok(Some(r));
        }
        self.history()
            .report(id)
            .map_err(|e| DeployError::History(e.to_string()))
    }

    /// Rules for deploys that start from now on; running deploys keep theirs.
    pub fn set_rules(&self, rules: RuleSet) {
        self.serving.store(Arc::new(Serving::new(&rules)));
        self.rules.store(Arc::new(rules));
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    fn track(&self, service: &str) -> Arc<Mutex<ServiceTrack>> {
        if let Some(t) = self.services.read().get(service) {
            return t.clone();
        }
        self.services
            .write()
            .entry(service.to_string())
            .or_default()
            .clone()
    }

    /// Detects new versions and advances the deploys of every service the push touched.
    pub fn on_push(&self, store: &Store, touched: &[(ServiceId, i64)]) {
        for &(sid, _) in touched {
            let Some(svc) = store.service_by_id(sid) else {
                continue;
            };
            let Some(now) = svc.newest() else { continue };
            let track = self.track(&svc.name);
            let mut tr = track.lock();
            self.adopt(&mut tr, &svc);
            self.detect(&svc, now, &mut tr);
            for d in &tr.active {
                let mut d = d.lock();
                let before = d.next_step;
                self.advance(&mut d, &svc, now);
                // Every change the judge makes is made in a step.
                if d.next_step != before {
                    self.publish(&d);
                }
            }
            self.settle(&mut tr);
        }
    }

    /// Archives the service's deploys that finished and lets them leave memory.
    fn settle(&self, tr: &mut ServiceTrack) {
        let mut finished = Vec::new();
        tr.active.retain(|d| {
            let done = d.lock().finished();
            if done {
                finished.push(d.clone());
            }
            !done
        });
        for d in finished {
            self.archive(&d.lock());
            self.retire(tr, d);
        }
    }

    /// Classifies the service's series that appeared since the last look: a version with a
    /// series a rule selects serves from that series' first sample. Stops at such a series
    /// without a sample yet (a push still appending to it): it is looked at on the next
    /// push. Only new series are looked at, so a push that creates none costs a lock and a
    /// comparison.
    fn scan_serving(&self, svc: &Service, tr: &mut ServiceTrack) {
        let new = svc.series_since(tr.scanned);
        if new.is_empty() {
            return;
        }
        let serving = self.serving.load();
        for s in &new {
            if !tr.serving_since.contains_key(&s.version) && serving.matches(&s.labels) {
                let Some(first) = s.data.lock().first_ts() else {
                    return;
                };
                tr.serving_since.insert(s.version, first);
                tr.started_serving = true;
            }
            tr.scanned = s.seq + 1;
        }
    }

    /// Whether version `v` of the service serves (see [`Serving`]).
    fn serves(tr: &ServiceTrack, v: VersionId) -> bool {
        tr.serving_since.contains_key(&v)
    }

    /// The version a new version `name` replaces: the other version that reported last,
    /// among those that serve if any does (a stray version label is nobody's baseline).
    fn baseline_of<'a>(
        tr: &ServiceTrack,
        versions: &'a [Arc<crate::store::Version>],
        name: &str,
    ) -> Option<&'a Arc<crate::store::Version>> {
        let others = || {
            versions
                .iter()
                .filter(move |o| *o.name != *name && !o.name.is_empty())
        };
        let newest = |o: &&Arc<crate::store::Version>| o.newest().unwrap_or(i64::MIN);
        others()
            .filter(|o| Self::serves(tr, o.id))
            .max_by_key(newest)
            .or_else(|| others().max_by_key(newest))
    }

    /// Starts a detected deploy for every version that started serving since the last push
    /// (docs: README, "How deploys are judged"): a new value of the version label counts
    /// once it is on a series the rules judge, from that series' first sample.
    fn detect(&self, svc: &Service, now: i64, tr: &mut ServiceTrack) {
        self.scan_serving(svc, tr);
        let versions = svc.versions();
        let first = versions
            .iter()
            .filter_map(|v| v.first_seen())
            .min()
            .unwrap_or(now);
        let first_seen = *tr.first_seen.get_or_insert(first);
        if !std::mem::take(&mut tr.started_serving) {
            return;
        }
        for v in &versions {
            let name = &*v.name;
            let Some(&seen) = tr.serving_since.get(&v.id) else {
                continue; // not serving (yet)
            };
            if !tr.decided.insert(v.id) {
                continue;
            }
            if name.is_empty() {
                continue; // series without a version label
            }
            if tr.active.iter().any(|d| d.lock().version == *name) {
                continue; // registered through the API before it reported
            }
            // Running before deploywatch saw the service (or before a backtest's range).
            let why = match self.settings.running_until {
                Some(until) if first_seen <= until => {
                    (seen <= until).then_some(NotDeployed::RunningBefore {
                        serving_since: seen,
                        until,
                    })
                }
                _ => (seen - first_seen <= self.settings.detect_grace_ms).then_some(
                    NotDeployed::WithinGrace {
                        serving_since: seen,
                        first_sample: first_seen,
                        grace_ms: self.settings.detect_grace_ms,
                    },
                ),
            };
            if let Some(why) = why {
                tr.running_before.push((v.id, why));
                continue;
            }
            let baseline = Self::baseline_of(tr, &versions, name);
            let serving = baseline
                .and_then(|b| b.newest())
                .is_some_and(|t| t >= seen - self.settings.stale_after_ms);
            let reg = Registration {
                service: svc.name.to_string(),
                version: name.to_string(),
                baseline_version: baseline.map(|b| b.name.to_string()),
                strategy: Some(if serving {
                    Strategy::Canary
                } else {
                    Strategy::Rolling
                }),
                at: Some(seen),
                commit: String::new(),
                author: String::new(),
                url: String::new(),
                changes: Vec::new(),
            };
            let d = self.create(reg, Source::Detected, seen, tr);
            if self.news() {
                tracing::info!(deploy_id = %d.lock().id, service = %svc.name, version = %name, "Detected a deploy.");
            }
        }
    }

    fn create(
        &self,
        reg: Registration,
        source: Source,
        started_at: i64,
        tr: &mut ServiceTrack,
    ) -> Arc<Mutex<DeployState>> {
        let rules = self.rules.load();
        let strategy = reg.strategy.unwrap_or(Strategy::Canary);
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut d = DeployState {
            seq,
            id: deploy_id(&reg.service, &reg.version, started_at),
            service: reg.service,
            version: reg.version,
            baseline_version: reg.baseline_version,
            strategy,
            source,
            started_at,
            commit: reg.commit,
            author: reg.author,
            url: reg.url,
            changes: reg.changes,
            phase: Phase::Warmup,
            verdict: Verdict::Pending,
            verdict_at: None,
            timeline: Vec::new(),
            external: Vec::new(),
            before_after: strategy != Strategy::Canary,
            max_warmup_ms: rules
                .rules
                .iter()
                .map(|r| r.warmup.as_millis() as i64)
                .max()
                .unwrap_or(0),
            rules: rules.rules.iter().cloned().map(RuleState::new).collect(),
            decided_rows: vec![None; rules.rules.len()],
            suspects: Vec::new(),
            shared_suspects: Vec::new(),
            rollback_observed_at: None,
            recovered_at: None,
            explained: None,
            explained_at: None,
            pre_levels: vec![None; rules.rules.len()],
            shared_at: None,
            world_at: None,
            load: None,
            recovery_until: None,
            alphas: rules.alphas,
            next_step: (started_at.div_euclid(STEP_MS) + 1) * STEP_MS,
            scanned: 0,
            canary_vid: None,
            baseline_vid: None,
            pre_measured: false,
            gate_answers: Vec::new(),
            published: Arc::new(ArcSwapOption::empty()),
        };
        let how = match (source, strategy) {
            (Source::Detected, Strategy::Canary) => {
                "new version detected beside the old one: canary".to_string()
            }
            (Source::Detected, _) => "new version detected, old one gone: rolling".to_string(),
            (Source::Api, s) => format!("registered through the API as {s:?}").to_lowercase(),
        };
        let base = d.baseline_version.clone().unwrap_or_else(|| "none".into());
        d.event(
            started_at,
            "deploy_started",
            format!("{} {} (baseline {base}): {how}", d.service, d.version),
        );
        // Older running deploys of the service are superseded.
        for old in &tr.active {
            let mut o = old.lock();
            if o.phase != Phase::Done {
                o.phase = Phase::Done;
                let detail = format!("superseded by {} {}", d.service, d.version);
                let at = started_at.max(o.started_at);
                o.event(at, "superseded", detail);
                self.publish(&o);
            }
        }
        self.publish(&d);
        let held = Held {
            id: d.id.clone(),
            service: d.service.clone(),
            version: d.version.clone(),
            seq,
            published: d.published.clone(),
            state: Arc::new(Mutex::new(d)),
        };
        let d = held.state.clone();
        tr.active.push(d.clone());
        self.live.write().push(held);
        d
    }

    /// Registers a deploy from CI/CD. The same service and version already being judged
    /// (seen in the data or registered) is the same deploy: a first registration completes
    /// a detected deploy's metadata, and a repeat (a retried pipeline step) changes nothing
    /// unless it brings new metadata (README, "From a pipeline").
    /// The registration is in the journal (synced) before anything changes, so a deploy
    /// this returns an id for survives a crash.
    pub fn register(&self, store: &Store, reg: Registration) -> Result<Registered, DeployError> {
        let r = self.register_with(store, reg, true)?;
        self.publish_held(&r.id);
        Ok(r)
    }

    /// Applies a registration read back from the journal (a replay after a restart).
    pub fn replay_registration(&self, store: &Store, entry: super::journal::Entry) {
        if self.history().contains(&entry.id) {
            return; // finished: in the history
        }
        match self.register_with(store, entry.registration, false) {
            Ok(r) => self.publish_held(&r.id),
            Err(error) => {
                tracing::warn!(deploy_id = %entry.id, %error, "Cannot replay a registration.")
            }
        }
    }

    fn journal(&self, id: &str, received_at: i64, reg: &Registration) -> Result<(), DeployError> {
        let Some(j) = self.journal.get() else {
            return Ok(());
        };
        j.append(&super::journal::Entry {
            id: id.to_string(),
            received_at,
            registration: reg.clone(),
        })
        .map_err(|e| DeployError::Journal(e.to_string()))
    }

    fn register_with(
        &self,
        store: &Store,
        reg: Registration,
        journal: bool,
    ) -> Result<Registered, DeployError> {
        let svc = store.service(&reg.service);
        let track = self.track(&reg.service);
        let mut tr = track.lock();
        let newest = svc.as_ref().and_then(|s| s.newest());
        if let Some(s) = &svc {
            self.adopt(&mut tr, s);
            // Which versions serve, up to now: the baseline is one of them.
            self.scan_serving(s, &mut tr);
        }
        // The deploy of this version being judged; a rolled-back one (watched for recovery)
        // is over: registering its version again is a new deploy.
        let running = tr.active.iter().find(|d| {
            let d = d.lock();
            d.version == reg.version && d.rollback_observed_at.is_none()
        });
        if let Some(d) = running {
            let mut guard = d.lock();
            return self.register_again(&mut guard, reg, newest, journal);
        }
        let now = svc
            .as_ref()
            .and_then(|s| s.newest())
            .unwrap_or_else(crate::now_ms);
        let started_at = reg.at.unwrap_or(now);
        let mut reg = reg;
        if reg.baseline_version.is_none() {
            reg.baseline_version = svc.as_ref().and_then(|s| {
                Self::baseline_of(&tr, &s.versions(), &reg.version).map(|v| v.name.to_string())
            });
        }
        if reg.strategy.is_none() {
            let serving = svc.as_ref().is_some_and(|s| {
                s.versions().iter().any(|v| {
                    Some(&*v.name) == reg.baseline_version.as_deref()
                        && v.newest()
                            .is_some_and(|t| t >= started_at - self.settings.stale_after_ms)
                })
            });
            reg.strategy = Some(if serving {
                Strategy::Canary
            } else {
                Strategy::Rolling
            });
        }
        if journal {
            let id = deploy_id(&reg.service, &reg.version, started_at);
            let resolved = Registration {
                at: Some(started_at),
                ..reg.clone()
            };
            self.journal(&id, newest.unwrap_or(started_at), &resolved)?;
        }
        // Versions seen so far are not detected again.
        if let Some(s) = &svc {
            tr.first_seen
                .get_or_insert(s.newest().unwrap_or(started_at));
        }
        let d = self.create(reg, Source::Api, started_at, &mut tr);
        let id = d.lock().id.clone();
        // The deploys it superseded are finished now, even if the service never reports.
        self.settle(&mut tr);
        Ok(Registered {
            id,
            outcome: RegisterOutcome::Created,
            ignored: Vec::new(),
        })
    }

    /// A registration of the version a running deploy judges: the first one (of a detected
    /// deploy) completes its metadata; a repeat changes what it brings that differs
    /// (commit, author, url, changes: non-empty values replace) and nothing else. How the
    /// deploy is judged (baseline, strategy, start) was fixed when it started: a
    /// registration that says otherwise is answered with what it ignored. Only a
    /// registration that changes something is journaled and leaves a timeline event.
    fn register_again(
        &self,
        d: &mut DeployState,
        reg: Registration,
        newest: Option<i64>,
        journal: bool,
    ) -> Result<Registered, DeployError> {
        let first = d.source != Source::Api;
        let mut ignored = Vec::new();
        if let Some(b) = reg.baseline_version.as_deref() {
            if d.baseline_version.as_deref() != Some(b) {
                ignored.push(format!(
                    "baseline_version {b:?}: the deploy is judged against {}",
                    d.baseline_version
                        .as_deref()
                        .map_or_else(|| "the service before it".to_string(), |v| format!("{v:?}"))
                ));
            }
        }
        if let Some(s) = reg.strategy {
            if s != d.strategy {
                ignored.push(format!(
                    "strategy {}: the deploy is judged as {} since it started",
                    strategy_name(s),
                    strategy_name(d.strategy)
                ));
            }
        }
        if let Some(at) = reg.at {
            if at != d.started_at {
                ignored.push(format!(
                    "at {at}: the deploy started at {} ({})",
                    d.started_at,
                    crate::logging::rfc3339_ms(d.started_at)
                ));
            }
        }
        let mut changed = Vec::new();
        for (name, slot, v) in [
            ("commit", &d.commit, &reg.commit),
            ("author", &d.author, &reg.author),
            ("url", &d.url, &reg.url),
        ] {
            if !v.is_empty() && slot != v {
                changed.push(name);
            }
        }
        if !reg.changes.is_empty() && reg.changes != d.changes {
            changed.push("changes");
        }
        if !first && changed.is_empty() {
            return Ok(Registered {
                id: d.id.clone(),
                outcome: RegisterOutcome::Unchanged,
                ignored,
            });
        }
        if journal {
            // Replayed, it must find or make this very deploy: same start, same id.
            let resolved = Registration {
                at: Some(d.started_at),
                baseline_version: d.baseline_version.clone(),
                strategy: Some(d.strategy),
                ..reg.clone()
            };
            self.journal(&d.id, newest.unwrap_or(d.started_at), &resolved)?;
        }
        d.source = Source::Api;
        for (slot, v) in [
            (&mut d.commit, reg.commit),
            (&mut d.author, reg.author),
            (&mut d.url, reg.url),
        ] {
            if !v.is_empty() {
                *slot = v;
            }
        }
        if !reg.changes.is_empty() {
            d.changes = reg.changes;
        }
        let at = d.started_at.max(newest.unwrap_or(d.started_at));
        let outcome = if first {
            d.event(at, "registered", "registered through the API".into());
            RegisterOutcome::Adopted
        } else {
            let detail = format!("registered again with a new {}", changed.join(", "));
            d.event(at, "registration_updated", detail);
            RegisterOutcome::Updated
        };
        Ok(Registered {
            id: d.id.clone(),
            outcome,
            ignored,
        })
    }

    /// Advances a deploy through every step that ended by `now`.
    fn advance(&self, d: &mut DeployState, svc: &Service, now: i64) {
        if d.phase == Phase::Done {
            if d.recovery_until.is_some() {
                while d.next_step <= now && d.recovery_until.is_some() {
                    let t = d.next_step;
                    d.next_step += STEP_MS;
                    self.watch_recovery(d, svc, t);
                }
            }
            return;
        }
        let versions = svc.versions();
        let vid = |name: &Option<String>| {
            versions
                .iter()
                .find(|v| Some(&*v.name) == name.as_deref())
                .map(|v| v.id)
        };
        // Looked up again once gone: a version forgotten after the retention (`Store::sweep`)
        // that reports again is a new version of the store, with a new id.
        let held = |id: Option<VersionId>| id.is_some_and(|id| version_in(&versions, id).is_some());
        if !held(d.canary_vid) {
            d.canary_vid = vid(&Some(d.version.clone()));
        }
        if !held(d.baseline_vid) {
            d.baseline_vid = vid(&d.baseline_version);
        }
        // A jump far ahead (a replay after a gap) does not evaluate every empty step.
        if now - d.next_step > self.settings.max_observation_ms {
            d.next_step = (now.div_euclid(STEP_MS)) * STEP_MS;
        }
        while d.next_step <= now && d.phase != Phase::Done {
            let t = d.next_step;
            d.next_step += STEP_MS;
            self.step(d, svc, &versions, t);
        }
    }

    fn step(
        &self,
        d: &mut DeployState,
        svc: &Service,
        versions: &[Arc<crate::store::Version>],
        t: i64,
    ) {
        // New series of the compared versions join the rules.
        let new = svc.series_since(d.scanned);
        if let Some(last) = new.last() {
            d.scanned = last.seq + 1;
        }
        for s in &new {
            let side = if Some(s.version) == d.canary_vid {
                Side::Canary
            } else if Some(s.version) == d.baseline_vid && !d.before_after {
                Side::Baseline
            } else {
                if d.pre_measured {
                    // After against before: what the old version shows while it serves.
                    for r in &mut d.rules {
                        r.offer_old(s);
                    }
                }
                continue;
            };
            for r in &mut d.rules {
                r.offer(s, side, t);
            }
        }
        if self.rollback_observed(d, svc, versions, t) {
            return;
        }
        // A surge rollout: once the old version stops serving, compare after with before.
        // It has stopped when it has been silent for `stale_after_ms`, or at once when
        // Prometheus marked every one of its series stale (its last targets went away).
        if !d.before_after {
            let stale = self.settings.stale_after_ms;
            let silent = d
                .baseline_vid
                .and_then(|b| version_in(versions, b))
                .is_none_or(|b| b.newest().is_none_or(|n| n < t - stale));
            let marked = || d.baseline_vid.is_some_and(|b| svc.version_marked_stale(b));
            if (silent && t - d.started_at > stale) || marked() {
                self.switch_to_before_after(d, svc, t);
            }
        } else if !d.pre_measured {
            // Rolling and blue-green deploys get their baseline once, at the first step.
            self.measure_pre_window(d, svc);
        }
        let mut changed_rule: Option<String> = None;
        let mut left_pass = false;
        for (i, r) in d.rules.iter_mut().enumerate() {
            r.read(t);
            let warm = t >= d.started_at + r.rule.warmup.as_millis() as i64;
            r.world_elsewhere = d.world_at;
            r.load_elsewhere = d.load;
            let o = r.judge(t, warm, &d.alphas);
            if o.world_event {
                d.world_at = Some(t);
            }
            left_pass |= o.first_deviation || (o.verdict_changed && r.verdict.is_regression());
            if o.verdict_changed {
                d.decided_rows[i] = Some(live_row(r));
            }
            // A deviation that reaches a regression verdict at the same step is said once,
            // by the verdict (issue 16: each change once in the timeline).
            if o.first_deviation && !(o.verdict_changed && r.verdict.is_regression()) {
                d.timeline.push(Event {
                    at: t,
                    event: "rule_deviation".into(),
                    verdict: None,
                    rule: Some(r.rule.name.clone()),
                    detail: r.reason.clone(),
                });
            }
            if o.verdict_changed {
                d.timeline.push(Event {
                    at: t,
                    event: "rule_verdict".into(),
                    verdict: Some(r.verdict),
                    rule: Some(r.rule.name.clone()),
                    detail: r.reason.clone(),
                });
                if r.verdict.is_regression() {
                    changed_rule = Some(r.rule.name.clone());
                }
            }
        }
        d.load = d.rules.iter().find_map(|r| r.load_now());
        if d.phase == Phase::Warmup && t >= d.started_at + d.max_warmup_ms {
            d.phase = Phase::Observing;
            d.event(t, "warmup_over", "every rule is judged from now on".into());
        }
        self.update_verdict(d, t, changed_rule);
        if left_pass {
            self.explain(d, svc, t, false);
        } else if d.verdict.is_regression()
            && d.explained_at.is_none_or(|e| t - e >= REEXPLAIN_EVERY_MS)
        {
            // More data, a better explanation: refreshed while the regression lasts.
            self.explain(d, svc, t, true);
        }
        if d.verdict == Verdict::Pass && !d.suspects.is_empty() {
            // Deviations that did not hold explain nothing.
            d.suspects.clear();
            d.explained = None;
        }
        self.watch_shared(d, t);
        if t - d.started_at >= self.settings.max_observation_ms {
            if d.verdict.is_regression() {
                self.explain(d, svc, t, true);
            }
            d.phase = Phase::Done;
            let detail = format!("observation ended with verdict {}", d.verdict);
            d.event(t, "observation_ended", detail);
        }
    }

    fn update_verdict(&self, d: &mut DeployState, t: i64, changed_rule: Option<String>) {
        let mut worst: Option<(Verdict, String)> = None;
        let mut any_pass = false;
        let mut all_pass = true;
        for r in &d.rules {
            let v = if r.rule.critical {
                r.verdict
            } else {
                r.verdict.min(Verdict::Warn)
            };
            if v.is_regression() {
                if worst.as_ref().is_none_or(|(w, _)| v > *w) {
                    worst = Some((v, r.rule.name.clone()));
                }
            } else if v == Verdict::Pass {
                any_pass = true;
            } else if r.has_data() && r.applicable() && !r.rule.slow() {
                // Slow rules (trends need many minutes) do not hold a pass back; they go on
                // judging after it and can still escalate it.
                all_pass = false;
            }
        }
        let (candidate, rule) = match worst {
            Some((v, rule)) => (v, Some(rule)),
            None if any_pass && all_pass => (Verdict::Pass, None),
            None => (Verdict::Pending, None),
        };
        if candidate > d.verdict {
            d.verdict = candidate;
            d.verdict_at = Some(t);
            let rule = rule.or(changed_rule);
            let detail = match &rule {
                Some(name) => {
                    let why = d
                        .rules
                        .iter()
                        .find(|r| &r.rule.name == name)
                        .map(|r| r.reason.clone())
                        .unwrap_or_default();
                    format!("{name}: {why}")
                }
                None => "every rule with data passed".into(),
            };
            if self.news() {
                tracing::info!(deploy_id = %d.id, verdict = %candidate, rule = rule.as_deref().unwrap_or(""), "Verdict changed.");
            }
            // The deciding rule's own `rule_verdict` of this step says the same: the deploy's
            // verdict change says it once (issue 16).
            if let Some(name) = &rule {
                d.timeline.retain(|e| {
                    !(e.at == t
                        && e.event == "rule_verdict"
                        && e.verdict == Some(candidate)
                        && e.rule.as_deref() == Some(name.as_str()))
                });
            }
            d.timeline.push(Event {
                at: t,
                event: "verdict_changed".into(),
                verdict: Some(candidate),
                rule,
                detail,
            });
        }
    }

    /// The new version stopped reporting (no sample for the staleness time) while the
    /// baseline version still reports: the deploy was rolled back, and is done.
    fn rollback_observed(
        &self,
        d: &mut DeployState,
        svc: &Service,
        versions: &[Arc<crate::store::Version>],
        t: i64,
    ) -> bool {
        let stale = self.settings.stale_after_ms;
        let newest = |vid: Option<VersionId>| {
            vid.and_then(|v| version_in(versions, v))
                .and_then(|v| v.newest())
        };
        let (Some(new), Some(old)) = (newest(d.canary_vid), newest(d.baseline_vid)) else {
            return false;
        };
        if new >= t - stale || old < t - stale || new < d.started_at || t - d.started_at <= stale {
            return false;
        }
        // The final explanation, on everything the new version served.
        if d.verdict.is_regression() {
            self.explain(d, svc, new, true);
        }
        d.rollback_observed_at = Some(t);
        d.phase = Phase::Done;
        d.recovery_until = Some(t + RECOVERY_WATCH_MS);
        let base = d.baseline_version.clone().unwrap_or_default();
        let detail = format!(
            "{} has not reported since {}; {base} serves alone again: rolled back",
            d.version,
            crate::logging::rfc3339_ms(new)
        );
        if self.news() {
            tracing::info!(deploy_id = %d.id, "Rollback observed.");
        }
        d.event(t, "rollback_observed", detail);
        true
    }

    /// Recovery after a rollback (docs/explain.md): from a minute after the rollback was
    /// observed, every error-type rule (ratio) of the baseline version over the last minute
    /// is back within its warn threshold of the pre-deploy level; a deploy without such
    /// rules has recovered once the baseline served alone for that minute.
    fn watch_recovery(&self, d: &mut DeployState, svc: &Service, t: i64) {
        let Some(rolled) = d.rollback_observed_at else {
            d.recovery_until = None;
            return;
        };
        if t < rolled + RECOVERY_WINDOW_MS {
            return;
        }
        let mut ok = true;
        let mut checked = Vec::new();
        for i in 0..d.rules.len() {
            if !matches!(d.rules[i].rule.signal, crate::rules::Signal::Ratio { .. }) {
                continue;
            }
            let Some(pre) = self.pre_level(d, svc, i) else {
                continue;
            };
            let old = self.old_series(d, svc, i);
            let now = rca::level(&d.rules[i].rule, &old, (t - RECOVERY_WINDOW_MS, t), None);
            if let Some(now) = now {
                let back = rca::within_warn(&d.rules[i].rule, &pre, &now);
                ok &= back;
                checked.push(format!(
                    "{} {:.4} (before the deploy {:.4})",
                    d.rules[i].rule.name,
                    now.rate(),
                    pre.rate()
                ));
            }
        }
        if ok {
            d.recovered_at = Some(t);
            d.recovery_until = None;
            let detail = if checked.is_empty() {
                "the baseline served alone for a minute".to_string()
            } else {
                format!("back to the pre-deploy level: {}", checked.join(", "))
            };
            d.event(t, "recovered", detail);
        } else if d.recovery_until.is_some_and(|u| t >= u) {
            d.recovery_until = None;
            let detail = format!("not back to the pre-deploy level: {}", checked.join(", "));
            d.event(t, "recovery_not_seen", detail);
        }
    }

    /// The service's series of rule `i` that are not the new version's.
    fn old_series(&self, d: &DeployState, svc: &Service, i: usize) -> Vec<Arc<Series>> {
        let selectors = d.rules[i].rule.signal.selectors();
        svc.series()
            .into_iter()
            .filter(|s| Some(s.version) != d.canary_vid)
            .filter(|s| selectors.iter().any(|(_, sel)| sel.matches(&s.labels)))
            .collect()
    }

    /// Rule `i`'s level over the pre-deploy window (the old version), measured once.
    fn pre_level(&self, d: &mut DeployState, svc: &Service, i: usize) -> Option<rca::Level> {
        if let Some(l) = d.pre_levels[i] {
            return l;
        }
        let old = self.old_series(d, svc, i);
        let w = (
            d.started_at - self.settings.baseline_window_ms,
            d.started_at,
        );
        let l = rca::level(&d.rules[i].rule, &old, w, None);
        d.pre_levels[i] = Some(l);
        l
    }

    fn context<'a>(&'a self, d: &'a DeployState) -> rca::Context<'a> {
        rca::Context {
            service: &d.service,
            version: &d.version,
            changes: &d.changes,
            service_label: &self.settings.service_label,
            version_label: &self.settings.version_label,
        }
    }

    /// Names suspects when a rule left `pass`: for the worst rule (by verdict, then earliest
    /// deviation), once per (rule, verdict).
    fn explain(&self, d: &mut DeployState, svc: &Service, t: i64, force: bool) {
        let Some(i) = (0..d.rules.len())
            .filter(|&i| d.rules[i].verdict.is_regression() || d.rules[i].first_deviation.is_some())
            .max_by(|&a, &b| {
                let (ra, rb) = (&d.rules[a], &d.rules[b]);
                ra.verdict
                    .cmp(&rb.verdict)
                    .then(rb.first_deviation.cmp(&ra.first_deviation))
                    .then(b.cmp(&a))
            })
        else {
            return;
        };
        let key = (d.rules[i].rule.name.clone(), d.rules[i].verdict);
        if d.explained.as_ref() == Some(&key) && !force {
            return;
        }
        d.explained = Some(key);
        d.explained_at = Some(t);
        let r = &d.rules[i];
        let from = d.started_at + r.rule.warmup.as_millis() as i64;
        let canary: Vec<Arc<Series>> = r.matched_on(Side::Canary).cloned().collect();
        let (reference, ref_w) = if d.before_after {
            (
                self.old_series(d, svc, i),
                (
                    d.started_at - self.settings.baseline_window_ms,
                    d.started_at,
                ),
            )
        } else {
            (r.matched_on(Side::Baseline).cloned().collect(), (from, t))
        };
        let mut suspects = rca::explain(
            &self.context(d),
            &r.rule,
            r.baseline_value,
            &canary,
            (from, t),
            &reference,
            ref_w,
            rca::Mode::Deploy,
        );
        if !r.verdict.is_regression() {
            // A deviation that is not (yet) a regression names located suspects only.
            suspects.retain(|s| s.surprise.is_some());
        }
        if suspects.is_empty() || suspects == d.suspects {
            return;
        }
        // The same suspects with other shares (more data) are not news for the timeline.
        let same = |a: &[Suspect], b: &[Suspect]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    (&x.rule, &x.dimension, &x.value, x.scope, &x.change)
                        == (&y.rule, &y.dimension, &y.value, y.scope, &y.change)
                })
        };
        let news = !same(&suspects, &d.suspects);
        let detail = format!("{}: {}", r.rule.name, rca::summary(&suspects));
        let rule = r.rule.name.clone();
        d.suspects = suspects;
        if !news {
            return;
        }
        d.timeline.push(Event {
            at: t,
            event: "suspects_named".into(),
            verdict: None,
            rule: Some(rule),
            detail,
        });
    }

    /// Side by side, once a minute: both versions worse than the pre-deploy level beyond
    /// noise (a dependency outage, not the deploy) is recorded and explained once.
    fn watch_shared(&self, d: &mut DeployState, t: i64) {
        if d.before_after || d.shared_at.is_some() || t % SHARED_CHECK_EVERY_MS != 0 {
            return;
        }
        for i in 0..d.rules.len() {
            if !rca::has_level(&d.rules[i].rule) {
                continue;
            }
            let rule = d.rules[i].rule.clone();
            let rule = &rule;
            let warm_end = d.started_at + rule.warmup.as_millis() as i64;
            if t - SHARED_WINDOW_MS < warm_end {
                continue;
            }
            let sides: [Vec<Arc<Series>>; 2] = [
                d.rules[i].matched_on(Side::Canary).cloned().collect(),
                d.rules[i].matched_on(Side::Baseline).cloned().collect(),
            ];
            if sides.iter().any(Vec::is_empty) {
                continue;
            }
            // "Worse than before the deploy" needs a "before": without enough of the old
            // version's data before the deploy, nothing is claimed (issue 16).
            if rca::history_before(&sides[1], d.started_at) < rca::MIN_PRE_HISTORY_MS {
                continue;
            }
            // The pre-deploy level: the baseline's own series before the deploy.
            let pre = match d.pre_levels[i] {
                Some(l) => l,
                None => {
                    let w = (
                        d.started_at - self.settings.baseline_window_ms,
                        d.started_at,
                    );
                    let l = rca::level(rule, &sides[1], w, None);
                    d.pre_levels[i] = Some(l);
                    l
                }
            };
            let Some(pre) = pre else { continue };
            // The recent level of each side (the last RECENT_STEPS steps = SHARED_WINDOW_MS)
            // from the steps already read: no ring reads on the push path.
            let levels: Vec<Option<rca::Level>> = [Side::Canary, Side::Baseline]
                .iter()
                .map(|&side| {
                    d.rules[i]
                        .recent_level(side, pre.latency)
                        .map(|(events, exposure)| rca::Level {
                            events,
                            exposure,
                            latency: pre.latency,
                        })
                })
                .collect();
            let both = levels
                .iter()
                .all(|l| l.is_some_and(|l| rca::deviates(rule, &pre, &l)));
            if !both {
                continue;
            }
            d.shared_at = Some(t);
            let rates: Vec<String> = levels
                .iter()
                .flatten()
                .map(|l| format!("{:.4}", l.rate()))
                .collect();
            // The old version degrading too says something besides the deploy is wrong; it
            // acquits the deploy only while the new version is not judged worse than the old.
            // and the new version is not worse than the old one beside it either.
            let canary_worse = matches!(
                (&levels[0], &levels[1]),
                (Some(c), Some(b)) if rca::beyond_warn(rule, b, c)
            );
            let acquits =
                !canary_worse && !d.verdict.is_regression() && !d.rules[i].verdict.is_regression();
            let detail = format!(
                "{}: both versions worse than before the deploy ({} now, {:.4} before): {}",
                rule.name,
                rates.join(" and "),
                pre.rate(),
                if acquits {
                    "not the deploy"
                } else {
                    "the new version worse still: a degradation beside the deploy's own (a dependency or the load)"
                }
            );
            let name = rule.name.clone();
            d.timeline.push(Event {
                at: t,
                event: "shared_degradation".into(),
                verdict: None,
                rule: Some(name.clone()),
                detail,
            });
            let all: Vec<Arc<Series>> = sides.concat();
            let w = (t - SHARED_WINDOW_MS, t);
            let suspects = rca::explain(
                &self.context(d),
                rule,
                pre.latency,
                &all,
                w,
                &sides[1],
                (
                    d.started_at - self.settings.baseline_window_ms,
                    d.started_at,
                ),
                rca::Mode::Shared,
            );
            if !suspects.is_empty() {
                let detail = format!("{name}: {}", rca::summary(&suspects));
                d.shared_suspects = suspects;
                d.timeline.push(Event {
                    at: t,
                    event: "suspects_named".into(),
                    verdict: None,
                    rule: Some(name),
                    detail,
                });
            }
            return;
        }
    }

    fn switch_to_before_after(&self, d: &mut DeployState, svc: &Service, t: i64) {
        d.before_after = true;
        if d.source == Source::Detected {
            d.strategy = Strategy::Rolling;
        }
        self.measure_pre_window(d, svc);
        d.event(t, "comparison_changed", "the old version stopped serving: comparing the service after the deploy with before it".into());
    }

    /// Measures every rule's baseline over the window before the deploy.
    fn measure_pre_window(&self, d: &mut DeployState, svc: &Service) {
        let old: Vec<_> = svc
            .series()
            .into_iter()
            .filter(|s| Some(s.version) != d.canary_vid)
            .collect();
        d.pre_measured = true;
        let (from, to) = (
            d.started_at - self.settings.baseline_window_ms,
            d.started_at,
        );
        for r in &mut d.rules {
            let k = known_baseline(&r.rule, &old, from, to);
            r.set_known_baseline(k, d.started_at);
            for s in &old {
                r.offer_old(s);
            }
        }
    }

    /// Every deploy, newest first, optionally of one service: those in memory as they are
    /// now, the finished ones from the history as they were stored.
    /// Every version of every service the store holds that is not a deploy, with why:
    /// running before the service (or the range) was first seen, or serving on no series
    /// the rules select. For backtests, which say what they did not judge.
    pub fn not_deployed(&self, store: &Store) -> Vec<Undeployed> {
        let deployed: std::collections::HashSet<(String, String)> = self
            .list(None)
            .into_iter()
            .map(|d| (d.service, d.version))
            .collect();
        let mut out = Vec::new();
        for svc in store.services() {
            let track = self.services.read().get(&*svc.name).cloned();
            for v in svc.versions() {
                if v.name.is_empty()
                    || deployed.contains(&(svc.name.to_string(), v.name.to_string()))
                {
                    continue;
                }
                let why = track
                    .as_ref()
                    .and_then(|t| {
                        let t = t.lock();
                        t.running_before
                            .iter()
                            .find(|(id, _)| *id == v.id)
                            .map(|(_, why)| why.clone())
                    })
                    .unwrap_or(NotDeployed::NotServing);
                out.push(Undeployed {
                    service: svc.name.to_string(),
                    version: v.name.to_string(),
                    first_seen: v.first_seen(),
                    why,
                });
            }
        }
        out.sort_by(|a, b| (&a.service, a.first_seen).cmp(&(&b.service, b.first_seen)));
        out
    }

    pub fn list(&self, service: Option<&str>) -> Vec<DeployJson> {
        let held: Vec<Arc<Mutex<DeployState>>> = self
            .live
            .read()
            .iter()
            .rev()
            .filter(|h| service.is_none_or(|s| s == h.service))
            .map(|h| h.state.clone())
            .collect();
        let mut out: Vec<DeployJson> = held
            .iter()
            .map(|d| d.lock().to_json(&self.external_url))
            .collect();
        let history = self.history().records();
        if !history.is_empty() {
            let listed: std::collections::HashSet<String> =
                out.iter().map(|d| d.id.clone()).collect();
            for r in history.iter().rev() {
                if service.is_none_or(|s| s == r.deploy.service) && !listed.contains(&r.deploy.id) {
                    out.push(r.deploy.clone());
                }
            }
            // Newest first; a stable sort keeps the order of equal starts.
            out.sort_by_key(|d| std::cmp::Reverse(d.started_at));
        }
        out
    }

    /// The deploys held in memory (being judged, and each service's newest finished one),
    /// oldest first: what the alert tick compares, O(active deploys).
    pub fn list_held(&self) -> Vec<DeployJson> {
        let held: Vec<Arc<Mutex<DeployState>>> =
            self.live.read().iter().map(|h| h.state.clone()).collect();
        held.iter()
            .map(|d| d.lock().to_json(&self.external_url))
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<DeployJson> {
        match self.held(id) {
            Some(d) => Some(d.lock().to_json(&self.external_url)),
            None => self.archived(id).map(|a| a.deploy.clone()),
        }
    }

    /// The service's newest deploy.
    pub fn current(&self, service: &str) -> Option<DeployJson> {
        let d = self
            .live
            .read()
            .iter()
            .rev()
            .find(|h| h.service == service)
            .map(|h| h.state.clone())?;
        let d = d.lock();
        Some(d.to_json(&self.external_url))
    }

    /// Publishes `d`'s DEPLOY JSON for the readers that must not wait for its lock.
    fn publish(&self, d: &DeployState) {
        d.published
            .store(Some(Arc::new(d.to_json(&self.external_url))));
    }

    /// Publishes a held deploy again after a change made outside the judge (a
    /// registration completing its metadata).
    fn publish_held(&self, id: &str) {
        if let Some(d) = self.held(id) {
            self.publish(&d.lock());
        }
    }

    /// The deploy a gate answers for (contract, "Gates for rollout controllers"), as last
    /// published: no deploy's or service's lock is taken, so a gate never waits for a push
    /// judging that deploy. With `version`: the newest deploy of that service and version,
    /// held or in the history; none if that version has not been seen. Without: the
    /// service's newest deploy still being observed (warm-up or observing), if any.
    pub fn for_gate(&self, service: &str, version: Option<&str>) -> GateLookup {
        let mut found = GateLookup::default();
        for h in self
            .live
            .read()
            .iter()
            .rev()
            .filter(|h| h.service == service)
        {
            let Some(p) = h.published.load_full() else {
                continue;
            };
            if found.newest.is_none() {
                found.newest = Some(p.clone());
            }
            let hit = match version {
                Some(v) => h.version == v,
                None => p.phase != Phase::Done,
            };
            if hit {
                found.deploy = Some(p);
                return found;
            }
        }
        if let Some(v) = version {
            found.deploy = self
                .history()
                .records()
                .iter()
                .rev()
                .find(|a| a.deploy.service == service && a.deploy.version == v)
                .map(|a| Arc::new(a.deploy.clone()));
        }
        found
    }

    /// The services with a deploy held or in the history, sorted.
    pub fn services(&self) -> Vec<String> {
        let mut names: std::collections::BTreeSet<String> =
            self.live.read().iter().map(|h| h.service.clone()).collect();
        for a in self.history().records() {
            if !names.contains(&a.deploy.service) {
                names.insert(a.deploy.service.clone());
            }
        }
        names.into_iter().collect()
    }

    /// Appends an event from another module (alerts sent, gate answers) to a deploy's
    /// timeline. `at` is event time: callers without one pass the deploy's latest step.
    pub fn record(&self, id: &str, event: &str, detail: String, at: Option<i64>) -> bool {
        let Some(d) = self.held(id) else {
            return false;
        };
        let mut d = d.lock();
        let at = at.unwrap_or(d.next_step - STEP_MS).max(d.started_at);
        d.event(at, event, detail);
        let e = d.timeline.last().cloned().expect("just pushed");
        d.external.push(e);
        self.publish(&d);
        true
    }

    /// Records a gate's answer in the deploy's timeline only when it differs from the last
    /// answer recorded for that gate: a controller (or anyone) calling every few seconds
    /// does not grow the timeline. Returns whether it was recorded.
    pub fn record_gate_answer(&self, id: &str, gate: &str, answer: &str, detail: String) -> bool {
        let Some(d) = self.held(id) else {
            return false;
        };
        {
            let mut d = d.lock();
            match d.gate_answers.iter_mut().find(|(g, _)| g == gate) {
                Some((_, last)) if last == answer => return false,
                Some((_, last)) => *last = answer.to_string(),
                None => d.gate_answers.push((gate.to_string(), answer.to_string())),
            }
        }
        self.record(id, "gate_answered", detail, None)
    }

    /// Runs `f` on one deploy's full state (rules, history), if it is held in memory.
    pub fn with_deploy<R>(&self, id: &str, f: impl FnOnce(&DeployState) -> R) -> Option<R> {
        let d = self.held(id)?;
        let d = d.lock();
        Some(f(&d))
    }

    /// Runs `f` over every deploy held in memory (for metrics), oldest first.
    pub fn for_each(&self, mut f: impl FnMut(&DeployState)) {
        let held: Vec<Arc<Mutex<DeployState>>> =
            self.live.read().iter().map(|h| h.state.clone()).collect();
        for d in held {
            f(&d.lock());
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::ingest::{DecodeLimits, Decoder, Protocol};
    use crate::proto::prometheus as pb;
    use crate::store::{IngestScratch, StoreConfig};

    const T0: i64 = 1_764_000_000_000;
    const MIN: i64 = 60_000;

    fn parts() -> (Store, Deploys) {
        let store = Store::new(StoreConfig {
            service_label: "job".into(),
            version_label: "version".into(),
            retention_ms: 2 * 3_600_000,
            max_active_series: 100_000,
            max_series_per_service: 10_000,
            max_samples_per_series: usize::MAX,
        });
        let deploys = Deploys::new(RuleSet::embedded(), Settings::default(), "http://dw".into());
        (store, deploys)
    }

    /// One `http_requests_total` sample per (service, version) at `ts` (a series the
    /// rules judge: each version serves), through the decoder and the store, then judged,
    /// as a push is.
    fn push(store: &Store, deploys: &Deploys, series: &[(&str, &str)], ts: i64) {
        push_metric(store, deploys, "http_requests_total", series, ts)
    }

    /// One `metric` sample per (service, version) at `ts`, pushed and judged.
    fn push_metric(
        store: &Store,
        deploys: &Deploys,
        metric: &str,
        series: &[(&str, &str)],
        ts: i64,
    ) {
        let req = pb::WriteRequest {
            timeseries: series
                .iter()
                .map(|(job, version)| pb::TimeSeries {
                    labels: [("__name__", metric), ("job", job), ("version", version)]
                        .iter()
                        .map(|(n, v)| pb::Label {
                            name: (*n).into(),
                            value: (*v).into(),
                        })
                        .collect(),
                    samples: vec![pb::Sample {
                        value: 1.0,
                        timestamp: ts,
                    }],
                    ..Default::default()
                })
                .collect(),
            metadata: vec![],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        let mut d = Decoder::default();
        let batch = d
            .decode(Protocol::V1, &body, &DecodeLimits::default())
            .unwrap();
        let o = store.ingest(batch, &mut IngestScratch::default()).unwrap();
        deploys.on_push(store, &o.touched);
    }

    /// Rolls out `versions` versions of each service, one every `every` ms from `from`
    /// (each supersedes the one before); returns the event time of the last push.
    fn roll_out(
        store: &Store,
        deploys: &Deploys,
        services: &[String],
        versions: std::ops::Range<usize>,
        from: i64,
        every: i64,
    ) -> i64 {
        let mut t = from;
        for v in versions {
            let version = format!("v{v}");
            // A few scrapes of each version: the service's "now" moves on.
            for _ in 0..4 {
                let s: Vec<(&str, &str)> = services
                    .iter()
                    .map(|s| (s.as_str(), version.as_str()))
                    .collect();
                push(store, deploys, &s, t);
                t += every / 4;
            }
        }
        t
    }

    /// Issue 15: finished deploys leave memory for the history. Many deploys run to
    /// completion; memory holds the active ones and each service's newest finished one,
    /// every deploy is still listed and readable, the derived metrics cover only those
    /// held, and a service idle for the retention is forgotten.
    #[test]
    fn issue_15_finished_deploys_leave_memory_for_the_history() {
        let (store, deploys) = parts();
        let services: Vec<String> = (0..5).map(|i| format!("svc{i}")).collect();
        let t = roll_out(&store, &deploys, &services, 0..41, T0, 2 * MIN);
        let counts = deploys.counts();
        // v0 was running before deploywatch saw the services: 40 deploys each.
        assert_eq!(counts.history, 5 * 39, "{counts:?}");
        assert_eq!(counts.active, 5, "{counts:?}");
        assert!(counts.in_memory <= 2 * 5, "{counts:?}");
        let mut held = 0;
        deploys.for_each(|_| held += 1);
        assert_eq!(held, counts.in_memory);
        // The API answers as before: every deploy listed, newest first, each readable.
        let list = deploys.list(None);
        assert_eq!(list.len(), 5 * 40);
        assert!(list.windows(2).all(|w| w[0].started_at >= w[1].started_at));
        assert_eq!(deploys.list(Some("svc3")).len(), 40);
        let first = list.last().unwrap();
        assert_eq!(first.phase, Phase::Done);
        assert_eq!(deploys.get(&first.id).as_ref(), Some(first));
        let report = deploys.report(&first.id).unwrap().unwrap();
        assert_eq!(report.deploy.id, first.id);
        assert!(first.timeline.iter().any(|e| e.event == "superseded"));
        // The alert tick sees what is held only.
        assert_eq!(deploys.list_held().len(), counts.in_memory);
        // svc0 stops; the others go on past the retention: svc0's last deploy is forgotten
        // (it stays in the history), the others keep theirs.
        let others = &services[1..];
        let t = roll_out(&store, &deploys, others, 41..44, t, 50 * MIN);
        // The store forgets svc0 (fed nothing for a sweep interval), then the judge does.
        assert_eq!(deploys.forget_idle(&store, 2 * 3_600_000), 0);
        assert_eq!(store.sweep().services, 0, "fed since the start");
        assert_eq!(store.sweep().services, 1);
        assert_eq!(deploys.forget_idle(&store, 2 * 3_600_000), 2);
        assert!(deploys.current("svc0").is_none());
        assert!(deploys.current("svc1").is_some());
        let svc0 = deploys.list(Some("svc0"));
        assert_eq!(svc0.len(), 40);
        assert!(svc0.iter().all(|d| d.phase == Phase::Done));
        assert_eq!(deploys.counts().active, 4);
        assert!(deploys.counts().in_memory <= 2 * 4);
        assert_eq!(deploys.forget_idle(&store, 2 * 3_600_000), 0);
        assert!(t > T0);
    }

    /// Issue 15: deploys finishing on several services at once, pushed from threads as
    /// Prometheus' shards do, while their appends compact the history again and again:
    /// none is lost, in memory or in the file read back.
    #[test]
    fn issue_15_deploys_finishing_concurrently_are_all_in_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let retention = std::time::Duration::from_secs(30 * 60);
        let (store, deploys) = parts();
        deploys.set_history(History::open(dir.path(), retention).unwrap());
        let (store, deploys) = (Arc::new(store), Arc::new(deploys));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (store, deploys) = (store.clone(), deploys.clone());
                std::thread::spawn(move || {
                    let services = vec![format!("svc{i}")];
                    roll_out(&store, &deploys, &services, 0..41, T0, 2 * MIN)
                })
            })
            .collect();
        let end = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .max()
            .unwrap();
        // Every deploy that finished within the retention of the newest is in the history.
        let expected: std::collections::BTreeSet<String> = deploys
            .list(None)
            .into_iter()
            .filter(|d| d.phase == Phase::Done && d.started_at >= end - 25 * MIN)
            .map(|d| d.id)
            .collect();
        assert!(expected.len() >= 4 * 10, "{}", expected.len());
        let held: std::collections::BTreeSet<String> = deploys
            .history()
            .records()
            .iter()
            .map(|r| r.deploy.id.clone())
            .collect();
        assert!(
            held.is_superset(&expected),
            "{:?}",
            expected.difference(&held)
        );
        // What the writer thread has not appended yet is not on disk to read back.
        assert!(deploys.history().flush(std::time::Duration::from_secs(30)));
        let reloaded = History::open(dir.path(), retention).unwrap();
        let reloaded: std::collections::BTreeSet<String> = reloaded
            .records()
            .iter()
            .map(|r| r.deploy.id.clone())
            .collect();
        assert_eq!(reloaded, held);
    }

    /// Two minutes of `gone` and `live` at v1, then two of a v2 canary on `gone`: the
    /// time of the next push.
    fn canary_on_gone(store: &Store, deploys: &Deploys) -> i64 {
        let mut t = T0;
        for _ in 0..8 {
            push(store, deploys, &[("gone", "v1"), ("live", "v1")], t);
            t += 15_000;
        }
        for _ in 0..8 {
            push(
                store,
                deploys,
                &[("gone", "v1"), ("gone", "v2"), ("live", "v1")],
                t,
            );
            t += 15_000;
        }
        t
    }

    /// Issue 15: a service the store forgot is forgotten by the judge too: its running
    /// canary ends ("has not reported for the retention") into the history, its state goes,
    /// and seen again it starts afresh (the versions running then are not deploys). A
    /// service registered through the API that never reports is kept for the retention.
    #[test]
    fn issue_15_a_forgotten_service_ends_its_deploy_and_comes_back_afresh() {
        const H: i64 = 3_600_000;
        let (store, deploys) = parts();
        let mut t = canary_on_gone(&store, &deploys);
        let canary = deploys.current("gone").unwrap();
        assert_eq!(canary.version, "v2");
        assert_ne!(canary.phase, Phase::Done);
        let reg = |service: &str, at: i64| Registration {
            service: service.into(),
            version: "v9".into(),
            baseline_version: None,
            strategy: None,
            at: Some(at),
            commit: String::new(),
            author: String::new(),
            url: String::new(),
            changes: vec![],
        };
        let ghost = deploys.register(&store, reg("ghost", t)).unwrap().id;
        // live goes on past the retention; gone and ghost are silent.
        while t < T0 + 2 * H + 10 * MIN {
            push(&store, &deploys, &[("live", "v1")], t);
            t += 5 * MIN;
        }
        store.sweep();
        // ghost's registration is past the retention; gone is still fed (since the start).
        assert_eq!(deploys.forget_idle(&store, 2 * H), 1);
        assert!(deploys.current("gone").is_some(), "the store kept it");
        assert_eq!(store.sweep().services, 1);
        // The canary leaves memory; live is untouched.
        assert_eq!(deploys.forget_idle(&store, 2 * H), 1);
        assert!(deploys.current("gone").is_none());
        let ended = deploys.get(&canary.id).expect("in the history");
        assert_eq!(ended.phase, Phase::Done);
        let last = ended.timeline.last().unwrap();
        assert_eq!(last.event, "observation_ended");
        assert!(last.detail.contains("has not reported for the retention"));
        assert!(deploys.archived(&canary.id).is_some());
        assert!(deploys.archived(&ghost).is_some());
        assert!(!deploys.services.read().contains_key("gone"));
        assert!(!deploys.services.read().contains_key("ghost"));
        assert!(deploys.services.read().contains_key("live"));
        assert_eq!(deploys.forget_idle(&store, 2 * H), 0);
        // A registration for a service not seen yet, within the retention: kept.
        let fresh = deploys.register(&store, reg("fresh", t)).unwrap().id;
        assert_eq!(deploys.forget_idle(&store, 2 * H), 0);
        assert_eq!(deploys.current("fresh").unwrap().id, fresh);
        // gone reports again with v2 and v3: running when it came back, not deploys.
        for _ in 0..4 {
            push(&store, &deploys, &[("gone", "v2"), ("gone", "v3")], t);
            t += 15_000;
        }
        assert!(deploys.current("gone").is_none());
        assert_eq!(deploys.list(Some("gone")).len(), 1);
    }

    /// Issue 15: a service the store forgot and saw again before the judge's sweep: its
    /// old deploys end at the next push, and it starts afresh.
    #[test]
    fn issue_15_a_service_forgotten_and_seen_again_between_sweeps_starts_afresh() {
        let (store, deploys) = parts();
        let mut t = canary_on_gone(&store, &deploys);
        let canary = deploys.current("gone").unwrap().id;
        t += 3 * 3_600_000;
        push(&store, &deploys, &[("live", "v1")], t);
        store.sweep();
        assert_eq!(store.sweep().services, 1);
        push(&store, &deploys, &[("gone", "v2")], t);
        assert!(deploys.current("gone").is_none());
        assert_eq!(deploys.get(&canary).unwrap().phase, Phase::Done);
        assert!(deploys.archived(&canary).is_some());
        assert_eq!(deploys.counts().active, 0);
    }

    /// Issue 15: registrations of a service that never reports supersede each other; the
    /// superseded ones leave memory at once, not at a push that never comes.
    #[test]
    fn issue_15_superseded_registrations_leave_memory_without_a_push() {
        let (store, deploys) = parts();
        for v in 0..200 {
            let reg = Registration {
                service: "ghost".into(),
                version: format!("v{v}"),
                baseline_version: None,
                strategy: None,
                at: Some(T0 + v * MIN),
                commit: String::new(),
                author: String::new(),
                url: String::new(),
                changes: vec![],
            };
            deploys.register(&store, reg).unwrap();
        }
        let counts = deploys.counts();
        assert_eq!((counts.active, counts.history), (1, 199), "{counts:?}");
        assert!(counts.in_memory <= 2, "{counts:?}");
        assert_eq!(deploys.list(Some("ghost")).len(), 200);
    }

    /// Issue 15: a gate answer is recorded when it changes, not on every call.
    #[test]
    fn issue_15_gate_answers_are_recorded_when_they_change() {
        let (store, deploys) = parts();
        let services = vec!["cart".to_string()];
        roll_out(&store, &deploys, &services, 0..2, T0, 2 * MIN);
        let id = deploys.current("cart").unwrap().id;
        let before = deploys.get(&id).unwrap().timeline.len();
        for i in 0..1000 {
            let answer = if i < 500 { "go pending" } else { "halt pause" };
            deploys.record_gate_answer(&id, "gate", answer, format!("call {i}"));
            deploys.record_gate_answer(&id, "gate?require=pass", "halt pending", "x".into());
        }
        let d = deploys.get(&id).unwrap();
        let gates: Vec<&str> = d
            .timeline
            .iter()
            .filter(|e| e.event == "gate_answered")
            .map(|e| e.detail.as_str())
            .collect();
        assert_eq!(gates, ["call 0", "x", "call 500"]);
        assert_eq!(d.timeline.len(), before + 3);
    }

    /// The deploys of `service`, oldest first: (version, baseline, source, phase).
    fn deploys_of(deploys: &Deploys, service: &str) -> Vec<(String, Option<String>, Phase)> {
        let mut list = deploys.list(Some(service));
        list.reverse();
        list.into_iter()
            .map(|d| (d.version, d.baseline_version, d.phase))
            .collect()
    }

    /// v1 serves from T0; v2 joins it as a canary at T0 + 5 min. Returns the event time
    /// of the next scrape.
    fn canary_v2(store: &Store, deploys: &Deploys) -> i64 {
        let mut t = T0;
        while t < T0 + 5 * MIN {
            push(store, deploys, &[("shop", "v1")], t);
            t += 15_000;
        }
        push(store, deploys, &[("shop", "v1"), ("shop", "v2")], t);
        t + 15_000
    }

    /// Issue 15: a version counts once it serves. A new version label value on a metric no
    /// rule selects (a sidecar's build info, a batch job's counter) starts no deploy and
    /// leaves the running canary alone; the same value on a judged metric is a deploy,
    /// from the first sample of that metric.
    #[test]
    fn issue_15_a_stray_version_label_does_not_cancel_a_canary() {
        let (store, deploys) = parts();
        let mut t = canary_v2(&store, &deploys);
        assert_eq!(
            deploys_of(&deploys, "shop"),
            [("v2".into(), Some("v1".into()), Phase::Warmup)]
        );
        let canary = deploys.current("shop").unwrap();
        assert_eq!(canary.strategy, Strategy::Canary);
        assert_eq!(canary.source, Source::Detected);
        for i in 0..8 {
            push(&store, &deploys, &[("shop", "v1"), ("shop", "v2")], t);
            push_metric(
                &store,
                &deploys,
                "sidecar_build_info",
                &[("shop", "abc123")],
                t + 1,
            );
            push_metric(
                &store,
                &deploys,
                "batch_runs_total",
                &[("shop", &format!("build-{i}"))],
                t + 2,
            );
            t += 15_000;
        }
        let now = deploys_of(&deploys, "shop");
        assert_eq!(now.len(), 1, "{now:?}");
        let d = deploys.get(&canary.id).unwrap();
        assert_ne!(d.phase, Phase::Done);
        assert!(
            d.timeline.iter().all(|e| e.event != "superseded"),
            "{:?}",
            d.timeline
        );
        // abc123 starts serving: a deploy, from its first request, against the version
        // that serves (not a stray one that reported later).
        let served = t + 5;
        push(&store, &deploys, &[("shop", "abc123")], served);
        push_metric(
            &store,
            &deploys,
            "batch_runs_total",
            &[("shop", "build-9")],
            served + 1,
        );
        let now = deploys_of(&deploys, "shop");
        assert_eq!(now.len(), 2, "{now:?}");
        assert_eq!(
            now[0].2,
            Phase::Done,
            "v2 superseded by a version that serves"
        );
        let new = deploys.current("shop").unwrap();
        assert_eq!(new.version, "abc123");
        assert_eq!(new.started_at, served);
        assert_ne!(new.baseline_version.as_deref(), Some("build-9"));
        assert!(matches!(new.baseline_version.as_deref(), Some("v2" | "v1")));
    }

    /// Issue 15: a version seen first on a stray metric and serving later starts its deploy
    /// when it serves, even after the detection grace of the service's first sample.
    #[test]
    fn issue_15_a_version_is_deployed_from_when_it_serves() {
        let (store, deploys) = parts();
        // Both from the start: v1 serves, v2 only labels a sidecar metric.
        let mut t = T0;
        for _ in 0..20 {
            push(&store, &deploys, &[("api", "v1")], t);
            push_metric(&store, &deploys, "sidecar_build_info", &[("api", "v2")], t);
            t += 15_000;
        }
        assert!(deploys.list(Some("api")).is_empty());
        push(&store, &deploys, &[("api", "v1"), ("api", "v2")], t);
        let d = deploys.current("api").expect("v2 serves now: a deploy");
        assert_eq!((d.version.as_str(), d.started_at), ("v2", t));
        assert_eq!(d.baseline_version.as_deref(), Some("v1"));
        assert_eq!(d.strategy, Strategy::Canary);
    }

    /// Issue 15: a registration without a baseline compares with the version that serves,
    /// not with a stray label that reported last; registrations need no serving series.
    #[test]
    fn issue_15_a_registration_takes_a_serving_baseline() {
        let (store, deploys) = parts();
        let mut t = T0;
        for _ in 0..8 {
            push(&store, &deploys, &[("cart", "v1")], t);
            push_metric(
                &store,
                &deploys,
                "sidecar_build_info",
                &[("cart", "sidecar-7")],
                t + 1,
            );
            t += 15_000;
        }
        let reg = Registration {
            service: "cart".into(),
            version: "v2".into(),
            baseline_version: None,
            strategy: None,
            at: None,
            commit: String::new(),
            author: String::new(),
            url: String::new(),
            changes: vec![],
        };
        let id = deploys.register(&store, reg).unwrap().id;
        let d = deploys.get(&id).unwrap();
        assert_eq!(d.baseline_version.as_deref(), Some("v1"));
        assert_eq!(d.strategy, Strategy::Canary);
        // A registered version that never serves stays registered: nothing detected.
        push_metric(&store, &deploys, "sidecar_build_info", &[("cart", "v2")], t);
        assert_eq!(deploys.list(Some("cart")).len(), 1);
        assert_eq!(deploys.current("cart").unwrap().id, id);
    }

    /// Every held deploy's published DEPLOY JSON is its current state's.
    fn assert_published(deploys: &Deploys) {
        deploys.for_each(|d| {
            assert_eq!(
                d.published.load_full().as_deref(),
                Some(&d.to_json(&deploys.external_url)),
                "{}",
                d.id
            );
        });
    }

    /// Issue 16: a gate answers for the deploy of the version it asks about, held or in the
    /// history; a version not seen is none; without a version, the deploy being observed.
    /// What it reads is what the judge published, equal to the deploy's state.
    #[test]
    fn issue_16_gates_find_the_deploy_of_their_version() {
        let (store, deploys) = parts();
        let services = vec!["cart".to_string()];
        // v0 ran before deploywatch saw the service; v1 … v4 are deploys, each superseding
        // the one before: v1, v2 in the history, v3 held as the newest finished one.
        roll_out(&store, &deploys, &services, 0..5, T0, 2 * MIN);
        assert_published(&deploys);
        for v in ["v1", "v2", "v3", "v4"] {
            let found = deploys.for_gate("cart", Some(v));
            let d = found.deploy.unwrap_or_else(|| panic!("{v}"));
            assert_eq!(d.version, v);
            assert_eq!(Some(&*d), deploys.get(&d.id).as_ref(), "{v}");
        }
        assert!(deploys
            .history()
            .records()
            .iter()
            .any(|a| a.deploy.version == "v1"));
        let unseen = deploys.for_gate("cart", Some("v5"));
        assert!(unseen.deploy.is_none());
        assert_eq!(unseen.newest.unwrap().version, "v4");
        let observed = deploys.for_gate("cart", None).deploy.unwrap();
        assert_eq!(observed.version, "v4");
        assert_ne!(observed.phase, Phase::Done);
        assert!(deploys.for_gate("shop", None).newest.is_none());
        assert_eq!(deploys.services(), vec!["cart".to_string()]);

        // A gate answer is published with the deploy's timeline.
        let id = observed.id.clone();
        assert!(deploys.record_gate_answer(&id, "gate", "go pending", "x".into()));
        let d = deploys.for_gate("cart", Some("v4")).deploy.unwrap();
        assert_eq!(d.timeline.last().unwrap().event, "gate_answered");
        assert_published(&deploys);

        // v4 (started 8 minutes in) ends after its hour of observation: no deploy is
        // observed, and v4 still answers for v4.
        push(&store, &deploys, &[("cart", "v4")], T0 + 90 * MIN);
        assert_published(&deploys);
        let v4 = deploys.for_gate("cart", Some("v4")).deploy.unwrap();
        assert_eq!(v4.phase, Phase::Done);
        let none = deploys.for_gate("cart", None);
        assert!(none.deploy.is_none());
        assert_eq!(none.newest.unwrap().version, "v4");
    }

    /// Issue 15/16: a gate never waits for the deploy's lock, which a push holds while it
    /// judges the deploy (seconds for a big canary's first steps).
    #[test]
    fn issue_16_a_gate_does_not_wait_for_a_deploy_being_judged() {
        let (store, deploys) = parts();
        let deploys = Arc::new(deploys);
        roll_out(&store, &deploys, &["cart".to_string()], 0..2, T0, 2 * MIN);
        let id = deploys.current("cart").unwrap().id;
        let state = deploys.held(&id).unwrap();
        let judging = state.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let reading = deploys.clone();
        std::thread::spawn(move || {
            let _ = tx.send(
                reading
                    .for_gate("cart", Some("v1"))
                    .deploy
                    .map(|d| d.verdict),
            );
        });
        let verdict = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the gate waited for the deploy's lock");
        assert_eq!(verdict, Some(judging.verdict));
        drop(judging);
    }

    /// Issue 16: registering the same version again (a retried pipeline step) is the same
    /// deploy: the same id, no second timeline event; new metadata is taken (one event),
    /// a different baseline, strategy or start is ignored and said so.
    #[test]
    fn issue_16_registering_the_same_version_again_changes_nothing() {
        let (store, deploys) = parts();
        let mut t = T0;
        for _ in 0..8 {
            push(&store, &deploys, &[("cart", "v1")], t);
            t += 15_000;
        }
        let reg = Registration {
            service: "cart".into(),
            version: "v2".into(),
            baseline_version: None,
            strategy: None,
            at: None,
            commit: "3f2c9e1".into(),
            author: String::new(),
            url: String::new(),
            changes: vec![],
        };
        let first = deploys.register(&store, reg.clone()).unwrap();
        assert_eq!(first.outcome, RegisterOutcome::Created);
        let events = |id: &str| deploys.get(id).unwrap().timeline.len();
        let n = events(&first.id);
        push(&store, &deploys, &[("cart", "v1"), ("cart", "v2")], t);
        let n_after_push = events(&first.id);
        assert!(n_after_push >= n);
        let again = deploys.register(&store, reg.clone()).unwrap();
        assert_eq!(
            again,
            Registered {
                id: first.id.clone(),
                outcome: RegisterOutcome::Unchanged,
                ignored: vec![]
            }
        );
        assert_eq!(events(&first.id), n_after_push, "no event for a repeat");
        // New metadata: taken, one event saying which.
        let newer = Registration {
            author: "ci".into(),
            ..reg.clone()
        };
        let updated = deploys.register(&store, newer.clone()).unwrap();
        assert_eq!(updated.outcome, RegisterOutcome::Updated);
        let d = deploys.get(&first.id).unwrap();
        assert_eq!((d.author.as_str(), d.commit.as_str()), ("ci", "3f2c9e1"));
        let last = d.timeline.last().unwrap();
        assert_eq!(last.event, "registration_updated");
        assert!(last.detail.contains("author"), "{}", last.detail);
        assert_eq!(
            deploys.register(&store, newer).unwrap().outcome,
            RegisterOutcome::Unchanged
        );
        // How it is judged stays; the answer says what was ignored.
        let other = Registration {
            strategy: Some(Strategy::BlueGreen),
            baseline_version: Some("v0".into()),
            ..reg
        };
        let r = deploys.register(&store, other).unwrap();
        assert_eq!(r.outcome, RegisterOutcome::Unchanged);
        assert_eq!(r.ignored.len(), 2, "{:?}", r.ignored);
        assert!(r.ignored[0].contains("\"v1\""), "{:?}", r.ignored);
        assert!(r.ignored[1].contains("canary"), "{:?}", r.ignored);
        let d = deploys.get(&first.id).unwrap();
        assert_eq!(d.strategy, Strategy::Canary);
        assert_eq!(d.baseline_version.as_deref(), Some("v1"));
        assert_eq!(deploys.list(Some("cart")).len(), 1);
    }
}
