//! The demo's stories: a [`Scenario`] and the event time it starts at in; a [`Story`] out —
//! the simulated services (with every pod and effect), the steps the pipeline takes (deploy
//! registrations at set times, rollbacks when deploywatch says so), and the verdict each
//! deploy is expected to end with. The verdicts themselves come from the judge.

use std::fmt;

use serde_json::{json, Value};

use super::sim::{Effect, Service, Shape, Signal, Who, MIN, SEC};
use crate::deploy::Verdict;

/// Event time before each story's first deploy, sent at full speed: the baseline history a
/// running deploywatch would have (the scenario tests use the same).
pub const PRELUDE: i64 = 30 * MIN;

/// The simulator seeds of the stories (bad-canary, latency, dependency-outage, low-traffic):
/// their own, played by no test of the judge (`tests/it/demo.rs` checks it), so what a
/// story expects is a case the judge was neither tuned nor tested on. Picked once, before
/// the stories were played with them: re-drawn until the stories pass, they would be
/// tuning seeds again.
pub const SEEDS: [u64; 4] = [9101, 9102, 9103, 9104];

/// The built-in stories (`--scenario`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A clean canary passes; the next one leaks database connections under load, fails on
    /// /checkout, is caught, explained (route and change) and rolled back.
    BadCanary,
    /// A canary twice as slow as its baseline: caught on latency and rolled back.
    Latency,
    /// The shared database fails for five minutes under both versions: not blamed on the
    /// canary.
    DependencyOutage,
    /// A clean canary that gets 0.2 requests a second: too little evidence, stays pending.
    LowTraffic,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::BadCanary,
        Scenario::Latency,
        Scenario::DependencyOutage,
        Scenario::LowTraffic,
    ];

    /// The name `--scenario` takes.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::BadCanary => "bad-canary",
            Scenario::Latency => "latency",
            Scenario::DependencyOutage => "dependency-outage",
            Scenario::LowTraffic => "low-traffic",
        }
    }

    /// One line on what happens.
    pub fn summary(self) -> &'static str {
        match self {
            Scenario::BadCanary => {
                "a clean canary passes; the next one leaks database connections under load, \
                 fails on /checkout, is caught, explained and rolled back (the default)"
            }
            Scenario::Latency => {
                "a canary twice as slow as its baseline is caught on latency and rolled back"
            }
            Scenario::DependencyOutage => {
                "the database fails for 5 minutes under both versions: not the canary's fault, \
                 so not blamed on it"
            }
            Scenario::LowTraffic => {
                "a canary that gets 0.2 requests a second stays pending: too little evidence"
            }
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A story, in absolute event time (Unix ms).
pub struct Story {
    pub scenario: Scenario,
    /// The simulated services start here.
    pub origin: i64,
    /// From here on the story is paced at `--speed`; before, it is history.
    pub start: i64,
    pub end: i64,
    pub services: Vec<Service>,
    pub steps: Vec<Step>,
    pub expect: Vec<Expectation>,
}

impl Story {
    /// Minutes of event time played at `--speed`.
    pub fn played_ms(&self) -> i64 {
        self.end - self.start
    }
}

/// Something the pipeline (or the world) does.
pub struct Step {
    pub when: When,
    pub action: Action,
}

pub enum When {
    /// Before the data of this event time is sent.
    At(i64),
    /// `delay` of event time after deploywatch gave the deploy of `service` to `version`
    /// this verdict (or a worse one), as a pipeline watching it would.
    OnVerdict {
        service: String,
        version: String,
        verdict: Verdict,
        delay: i64,
    },
}

pub enum Action {
    /// `POST /api/v1/deploys` with this body, `at` set to the step's event time.
    Register { body: Value, say: String },
    /// The pods of `version` go away (their series go stale).
    EndPods {
        service: String,
        version: String,
        say: String,
    },
    /// Only a line on the terminal.
    Say(String),
}

/// The verdict a deploy must end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Is(Verdict),
    /// This verdict or a milder one.
    AtMost(Verdict),
}

impl Expect {
    pub fn holds(self, v: Verdict) -> bool {
        match self {
            Expect::Is(want) => v == want,
            Expect::AtMost(most) => v <= most,
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Is(v) => write!(f, "{v}"),
            Expect::AtMost(v) => write!(f, "at most {v}"),
        }
    }
}

/// What a story expects of one deploy at its end.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub service: String,
    pub version: String,
    pub verdict: Expect,
    /// deploywatch must also have observed the rollback (the version gone, the baseline
    /// serving alone).
    pub rolled_back: bool,
}

/// The story of `scenario`, its services starting at `origin`.
pub fn build(scenario: Scenario, origin: i64) -> Story {
    match scenario {
        Scenario::BadCanary => bad_canary(origin),
        Scenario::Latency => latency(origin),
        Scenario::DependencyOutage => dependency_outage(origin),
        Scenario::LowTraffic => low_traffic(origin),
    }
}

fn expect(service: &str, version: &str, verdict: Expect, rolled_back: bool) -> Expectation {
    Expectation {
        service: service.into(),
        version: version.into(),
        verdict,
        rolled_back,
    }
}

fn at(t: i64, action: Action) -> Step {
    Step {
        when: When::At(t),
        action,
    }
}

/// The pipeline rolls back `version` 30 s after deploywatch says `rollback`.
fn rollback_on_verdict(service: &str, version: &str) -> Step {
    Step {
        when: When::OnVerdict {
            service: service.into(),
            version: version.into(),
            verdict: Verdict::Rollback,
            delay: 30 * SEC,
        },
        action: Action::EndPods {
            service: service.into(),
            version: version.into(),
            say: format!(
                "the pipeline rolls {service} {version} back, as deploywatch says: \
                 its pod goes away"
            ),
        },
    }
}

fn registration(
    service: &str,
    version: &str,
    baseline: &str,
    commit: &str,
    changes: Value,
) -> Value {
    json!({
        "service": service,
        "version": version,
        "baseline_version": baseline,
        "strategy": "canary",
        "commit": commit,
        "author": "ci",
        "url": format!("https://ci.example/{service}/runs/{commit}"),
        "changes": changes,
    })
}

/// `shop`: three pods of v1. A v2 canary (a search change) passes and is promoted; a v3
/// canary opens a database connection per request and never returns it, so under the
/// evening's load `/checkout` fails more and more; deploywatch says rollback, names
/// `/checkout` and the change, the pipeline removes the canary, and deploywatch sees v2
/// serving alone again.
fn bad_canary(origin: i64) -> Story {
    let t1 = origin + PRELUDE;
    let promote = t1 + 15 * MIN;
    let t2 = t1 + 18 * MIN;
    let load = t2 + 2 * MIN;
    let leak = Effect {
        shape: Shape::DriftPerHour,
        // Errors on /checkout ×(1 + 5 per minute) as the leaked connections pile up.
        ..Effect::step(
            Who::Version("v3".into()),
            Signal::Errors,
            300.0,
            load,
            i64::MAX,
        )
        .on_route("/checkout")
    };
    let svc = Service::new_at("shop", SEEDS[0], 3, origin)
        .canary("v2", t1, 1)
        // v2 promoted: v1's three pods replaced one by one, 20 s apart.
        .rolling("v2", promote, 20 * SEC)
        .canary("v3", t2, 1)
        .effect(Effect::step(Who::All, Signal::Traffic, 1.5, load, i64::MAX))
        .effect(leak);
    Story {
        scenario: Scenario::BadCanary,
        origin,
        start: t1,
        end: t2 + 10 * MIN,
        services: vec![svc],
        steps: vec![
            at(
                t1,
                Action::Register {
                    body: registration(
                        "shop",
                        "v2",
                        "v1",
                        "a41c9e0",
                        json!([{"component": "search", "summary": "rank results by stock level",
                                "files": ["src/search/rank.rs"]}]),
                    ),
                    say: "shop v2 goes out as a canary: 1 pod beside 3 of v1, registered by \
                          the pipeline with its change"
                        .into(),
                },
            ),
            at(
                promote,
                Action::Say(
                    "the pipeline promotes shop v2: v1's pods are replaced one by one".into(),
                ),
            ),
            at(
                t2,
                Action::Register {
                    body: registration(
                        "shop",
                        "v3",
                        "v2",
                        "7d03b2f",
                        json!([
                            {"component": "checkout-db",
                             "summary": "checkout opens a database connection per request",
                             "files": ["src/checkout/db.rs", "src/routes/checkout.rs"]},
                            {"component": "cart", "summary": "delivery estimates in the cart",
                             "files": ["src/routes/cart.rs"]}
                        ]),
                    ),
                    say: "shop v3 goes out as a canary: 1 pod beside 4 of v2".into(),
                },
            ),
            at(
                load,
                Action::Say(
                    "evening traffic, ×1.5: v3 leaks a database connection per checkout, and \
                     /checkout starts failing on it"
                        .into(),
                ),
            ),
            rollback_on_verdict("shop", "v3"),
        ],
        expect: vec![
            expect("shop", "v2", Expect::Is(Verdict::Pass), false),
            expect("shop", "v3", Expect::Is(Verdict::Rollback), true),
        ],
    }
}

/// `catalog`: a v2 canary resizes images on every request, doubling every request's
/// latency.
fn latency(origin: i64) -> Story {
    let t1 = origin + PRELUDE;
    let svc = Service::new_at("catalog", SEEDS[1], 3, origin)
        .canary("v2", t1, 1)
        .effect(Effect::step(
            Who::Version("v2".into()),
            Signal::Latency,
            2.0,
            t1,
            i64::MAX,
        ));
    Story {
        scenario: Scenario::Latency,
        origin,
        start: t1,
        end: t1 + 8 * MIN,
        services: vec![svc],
        steps: vec![
            at(
                t1,
                Action::Register {
                    body: registration(
                        "catalog",
                        "v2",
                        "v1",
                        "c0ffee1",
                        json!([{"component": "images",
                                "summary": "resize product images on every request",
                                "files": ["src/images/resize.rs"]}]),
                    ),
                    say: "catalog v2 goes out as a canary: every request of it takes twice as \
                          long"
                        .into(),
                },
            ),
            rollback_on_verdict("catalog", "v2"),
        ],
        expect: vec![expect("catalog", "v2", Expect::Is(Verdict::Rollback), true)],
    }
}

/// `orders`: a clean v2 canary; five minutes later the database both versions use fails
/// for five minutes (errors ×10, latency ×3 on every pod).
fn dependency_outage(origin: i64) -> Story {
    let t1 = origin + PRELUDE;
    let (from, until) = (t1 + 5 * MIN, t1 + 10 * MIN);
    let svc = Service::new_at("orders", SEEDS[2], 3, origin)
        .canary("v2", t1, 1)
        .effect(Effect::step(Who::All, Signal::Errors, 10.0, from, until))
        .effect(Effect::step(Who::All, Signal::Latency, 3.0, from, until));
    Story {
        scenario: Scenario::DependencyOutage,
        origin,
        start: t1,
        end: t1 + 20 * MIN,
        services: vec![svc],
        steps: vec![
            at(
                t1,
                Action::Register {
                    body: registration(
                        "orders",
                        "v2",
                        "v1",
                        "5be11a2",
                        json!([{"component": "invoices", "summary": "invoice numbers per year",
                                "files": ["src/invoices.rs"]}]),
                    ),
                    say: "orders v2 goes out as a canary: 1 pod beside 3 of v1".into(),
                },
            ),
            at(
                from,
                Action::Say(
                    "the database fails: every pod of both versions errors ×10 and slows ×3".into(),
                ),
            ),
            at(until, Action::Say("the database is back".into())),
        ],
        expect: vec![expect("orders", "v2", Expect::AtMost(Verdict::Warn), false)],
    }
}

/// `ledger`: 0.8 requests a second in all, 0.2 on the canary: a clean canary whose evidence
/// never suffices within the story.
fn low_traffic(origin: i64) -> Story {
    let t1 = origin + PRELUDE;
    let svc = Service::new_at("ledger", SEEDS[3], 3, origin)
        .canary("v2", t1, 1)
        .with(|s| s.rps = 0.8);
    Story {
        scenario: Scenario::LowTraffic,
        origin,
        start: t1,
        end: t1 + 12 * MIN,
        services: vec![svc],
        steps: vec![at(
            t1,
            Action::Register {
                body: registration(
                    "ledger",
                    "v2",
                    "v1",
                    "9e4d1c7",
                    json!([{"component": "export", "summary": "CSV export of entries",
                            "files": ["src/export/csv.rs"]}]),
                ),
                say: "ledger v2 goes out as a canary; the service gets 0.8 requests a second in \
                      all"
                .into(),
            },
        )],
        expect: vec![expect("ledger", "v2", Expect::Is(Verdict::Pending), false)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every story registers each deploy it expects a verdict of, at the event time its
    /// new pods start, between the history and the end; rollbacks name expected deploys.
    #[test]
    fn stories_are_consistent() {
        let origin = 1_795_000_000_000;
        for scenario in Scenario::ALL {
            let story = build(scenario, origin);
            assert_eq!(story.scenario, scenario);
            assert!(story.origin < story.start && story.start < story.end);
            let mut registered = Vec::new();
            for step in &story.steps {
                if let (When::At(t), Action::Register { body, .. }) = (&step.when, &step.action) {
                    assert!(*t >= story.start && *t < story.end, "{scenario}: {t}");
                    let (svc, ver) = (body["service"].as_str(), body["version"].as_str());
                    let (svc, ver) = (svc.expect("service"), ver.expect("version"));
                    let sim = story
                        .services
                        .iter()
                        .find(|s| s.name == svc)
                        .unwrap_or_else(|| panic!("{scenario}: {svc} is not simulated"));
                    let first = sim
                        .pods
                        .iter()
                        .filter(|p| p.version == ver)
                        .map(|p| p.start);
                    assert_eq!(first.min(), Some(*t), "{scenario}: {svc} {ver} starts then");
                    registered.push((svc.to_string(), ver.to_string()));
                }
                if let When::OnVerdict {
                    service, version, ..
                } = &step.when
                {
                    assert!(
                        story
                            .expect
                            .iter()
                            .any(|e| &e.service == service && &e.version == version),
                        "{scenario}: reacts to {service} {version}, which it expects nothing of"
                    );
                }
            }
            for e in &story.expect {
                assert!(
                    registered.contains(&(e.service.clone(), e.version.clone())),
                    "{scenario}: expects a verdict of {} {}, never registered",
                    e.service,
                    e.version
                );
            }
        }
    }

    #[test]
    fn expectations_hold_for_the_right_verdicts() {
        assert!(Expect::Is(Verdict::Pass).holds(Verdict::Pass));
        assert!(!Expect::Is(Verdict::Pass).holds(Verdict::Pending));
        assert!(Expect::AtMost(Verdict::Warn).holds(Verdict::Pending));
        assert!(Expect::AtMost(Verdict::Warn).holds(Verdict::Warn));
        assert!(!Expect::AtMost(Verdict::Warn).holds(Verdict::Pause));
        assert_eq!(Expect::AtMost(Verdict::Warn).to_string(), "at most warn");
    }
}
