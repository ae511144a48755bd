//! Randomized deploy scenarios for the detection benchmark: a family and a seed in; a
//! [`Scenario`] out — a simulated service ([`super::sim::Service`]) with its history, its deploy
//! (canary or rolling, registered or left to be detected) and, for a regression, what goes
//! wrong on the new version and when.
//!
//! The world is drawn broadly and at random, from the ranges real services show, never from
//! what the judge assumes: 0.2–250 requests/s over 3–9 pods and 3–5 routes of skewed weight,
//! a slow drift of traffic (±20 % per hour) with autocorrelated noise, short error blips on
//! every pod (half of them slow too), 404s, per-route base 5xx ratios of 0.05–0.5 % and
//! lognormal latencies (medians 15–120 ms) through classic buckets, CPU as a constant plus a
//! per-request part in clock ticks, every new process warming up (memory 30–50 % low with a
//! 2–6 minute time constant, latency ×2–×4 and CPU ×1.5 for its first 1–3 minutes) under a
//! GC sawtooth, restarts, scrape jitter, stale markers, and error series created at their
//! first error.
//! docs/detection.md lists the families and what each draws.

use super::sim::{Effect, PodSpec, Route, Service, Shape, Signal, Who, EPOCH, MIN, SEC};
use crate::rng::Rng;

const MIB: f64 = 1024.0 * 1024.0;

/// How long a deploy is watched in the benchmark, from its start.
pub const OBSERVE_MS: i64 = 20 * MIN;

/// A harder start than usual (the `cold_start` family, not a regression): the new version's
/// latency and CPU this much higher when a process starts, fading linearly over a duration
/// drawn from `HARDER_START_SECS`.
const HARDER_START_LATENCY: f64 = 2.0;
const HARDER_START_CPU: f64 = 1.3;
const HARDER_START_SECS: (f64, f64) = (60.0, 180.0);

/// What happens in a scenario: a regression of the new version, or something that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    // Regressions: the new version (canary pod, or every new pod of a rollout) only.
    Errors2x,
    Errors3x,
    Errors10x,
    RouteErrors3x,
    RouteErrors10x,
    P99Tail1_5x,
    P99Shift1_5x,
    P99x3,
    CpuPerRequest1_6x,
    MemoryLeak,
    CrashLoop,
    DelayedErrors,
    LowTrafficErrors10x,
    // Not regressions.
    CleanCanary,
    CleanRolling,
    ColdStart,
    DependencyOutage,
    TrafficSpike,
    Improvement,
    LowTrafficClean,
    RestartDuringDeploy,
    ErrorBlips,
}

impl Family {
    pub const ALL: [Family; 22] = [
        Family::Errors2x,
        Family::Errors3x,
        Family::Errors10x,
        Family::RouteErrors3x,
        Family::RouteErrors10x,
        Family::P99Tail1_5x,
        Family::P99Shift1_5x,
        Family::P99x3,
        Family::CpuPerRequest1_6x,
        Family::MemoryLeak,
        Family::CrashLoop,
        Family::DelayedErrors,
        Family::LowTrafficErrors10x,
        Family::CleanCanary,
        Family::CleanRolling,
        Family::ColdStart,
        Family::DependencyOutage,
        Family::TrafficSpike,
        Family::Improvement,
        Family::LowTrafficClean,
        Family::RestartDuringDeploy,
        Family::ErrorBlips,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Errors2x => "errors_x2",
            Family::Errors3x => "errors_x3",
            Family::Errors10x => "errors_x10",
            Family::RouteErrors3x => "route_errors_x3",
            Family::RouteErrors10x => "route_errors_x10",
            Family::P99Tail1_5x => "p99_tail_x1.5",
            Family::P99Shift1_5x => "p99_shift_x1.5",
            Family::P99x3 => "p99_x3",
            Family::CpuPerRequest1_6x => "cpu_per_request_x1.6",
            Family::MemoryLeak => "memory_leak",
            Family::CrashLoop => "crash_loop",
            Family::DelayedErrors => "delayed_errors",
            Family::LowTrafficErrors10x => "low_traffic_errors_x10",
            Family::CleanCanary => "clean_canary",
            Family::CleanRolling => "clean_rolling",
            Family::ColdStart => "cold_start",
            Family::DependencyOutage => "dependency_outage",
            Family::TrafficSpike => "traffic_spike_x3",
            Family::Improvement => "improvement",
            Family::LowTrafficClean => "low_traffic_clean",
            Family::RestartDuringDeploy => "restart_during_deploy",
            Family::ErrorBlips => "error_blips",
        }
    }

    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn is_regression(self) -> bool {
        (self as usize) <= Family::LowTrafficErrors10x as usize
    }
}

/// How the new version replaces the old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One new pod beside the old ones for the whole observation.
    Canary,
    /// Pods replaced one by one; `surge`: the new pod starts before the old one goes.
    Rolling { surge: bool, step_ms: i64 },
}

/// One generated deploy scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub family: Family,
    pub seed: u64,
    pub service: Service,
    pub old_version: String,
    pub version: String,
    pub kind: Kind,
    /// Registered through the API at the deploy's start; otherwise left to detection.
    pub registered: bool,
    pub deploy_at: i64,
    /// When the regression begins (the deploy's start, or later for a delayed one); `None`
    /// for a non-regression.
    pub onset: Option<i64>,
    /// The last event time simulated.
    pub end: i64,
    /// Whether the regression is detectable in principle within the observation: enough
    /// excess bad events that an ideal test knowing both rates would see it (see
    /// [`detectable`]). Always true for a non-regression.
    pub detectable: bool,
    /// The parameters drawn, in a line, for the benchmark's worst cases.
    pub summary: String,
}

impl Scenario {
    pub fn name(&self) -> String {
        format!("{}#{}", self.family.name(), self.seed)
    }
}

fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    (rng.uniform(lo.ln(), hi.ln())).exp()
}

const ROUTES: [(&str, &str); 6] = [
    ("/api/products", "GET"),
    ("/api/cart", "GET"),
    ("/api/checkout", "POST"),
    ("/api/search", "GET"),
    ("/api/users", "GET"),
    ("/api/orders", "POST"),
];

/// Draws the scenario `seed` of `family`.
pub fn generate(family: Family, seed: u64) -> Scenario {
    let mut rng = Rng::stream(seed, 0x5ce0 + family as u64);
    let name = format!("svc-{}-{seed}", family.name().replace(['_', '.'], "-"));

    // The service.
    let old_pods = rng.range(3, 9) as usize;
    let history = rng.range(15, 40) * MIN;
    let start = EPOCH;
    let deploy_at = start + history;
    let mut svc = Service::new_at(&name, seed ^ ((family as u64) << 32), old_pods, start);
    svc.namespace = "prod".into();
    svc.rps = match family {
        Family::LowTrafficErrors10x | Family::LowTrafficClean => 0.5 * (old_pods as f64 + 1.0),
        _ => log_uniform(&mut rng, 0.2, 250.0),
    };
    let n_routes = rng.range(3, 5) as usize;
    let skew = rng.uniform(0.5, 1.5);
    let weights: Vec<f64> = (1..=n_routes)
        .map(|k| 1.0 / (k as f64).powf(skew))
        .collect();
    let wsum: f64 = weights.iter().sum();
    let first_route = rng.range(0, (ROUTES.len() - n_routes) as i64) as usize;
    svc.routes = (0..n_routes)
        .map(|k| {
            let (path, method) = ROUTES[first_route + k];
            Route {
                path: path.into(),
                method: method.into(),
                share: weights[k] / wsum,
                error_p: log_uniform(&mut rng, 0.0005, 0.005),
                median_s: log_uniform(&mut rng, 0.015, 0.120),
                not_found_p: if rng.f64() < 0.5 {
                    rng.uniform(0.0, 0.03)
                } else {
                    0.0
                },
            }
        })
        .collect();
    svc.latency_sigma = rng.uniform(0.3, 0.7);
    svc.per_route_histograms = rng.f64() < 0.5;
    svc.cpu_base = rng.uniform(0.02, 0.2);
    svc.cpu_per_request = log_uniform(&mut rng, 0.001, 0.01);
    svc.cpu_noise = rng.uniform(0.05, 0.2);
    svc.cpu_ticks = true;
    svc.mem_base = log_uniform(&mut rng, 80.0 * MIB, 600.0 * MIB);
    svc.mem_pod_spread = svc.mem_base * rng.uniform(0.005, 0.03);
    // Its own stream: the other draws (and so every earlier scenario) stay as they were.
    svc.cpu_pod_spread = Rng::stream(seed, 8999).uniform(0.02, 0.08);
    svc.mem_noise = svc.mem_base * rng.uniform(0.002, 0.01);
    svc.mem_warmup = svc.mem_base * rng.uniform(0.3, 0.5);
    svc.mem_warmup_tau_s = rng.uniform(120.0, 360.0);
    svc.gc_amplitude = rng.uniform(0.03, 0.08);
    svc.gc_period_s = rng.uniform(120.0, 300.0);
    svc.traffic_wobble = rng.uniform(0.05, 0.2);
    svc.jitter_ms = rng.range(2, 50);
    // Time of day: a slow drift of the traffic, up or down.
    svc.effects.push(Effect {
        shape: Shape::DriftPerHour,
        ..Effect::step(
            Who::All,
            Signal::Traffic,
            rng.uniform(-0.2, 0.2),
            start,
            i64::MAX,
        )
    });
    // Every process warms up: slow and CPU-hungry for its first minutes.
    let cold = rng.uniform(60.0, 180.0);
    let cold_factor = rng.uniform(2.0, 4.0);
    svc.effects.push(Effect {
        shape: Shape::ColdStart { secs: cold },
        ..Effect::step(Who::All, Signal::Latency, cold_factor, start, i64::MAX)
    });
    svc.effects.push(Effect {
        shape: Shape::ColdStart { secs: cold },
        ..Effect::step(Who::All, Signal::Cpu, 1.5, start, i64::MAX)
    });

    // The deploy.
    let kind = match family {
        Family::CleanCanary => Kind::Canary,
        Family::CleanRolling => Kind::Rolling {
            surge: rng.f64() < 0.5,
            step_ms: 0,
        },
        _ if rng.f64() < 0.5 => Kind::Canary,
        _ => Kind::Rolling {
            surge: rng.f64() < 0.5,
            step_ms: 0,
        },
    };
    let kind = match kind {
        Kind::Rolling { surge, .. } => {
            // The whole rollout takes 1–3 minutes.
            let total = rng.range(60, 180) * SEC;
            Kind::Rolling {
                surge,
                step_ms: (total / old_pods as i64).max(5 * SEC),
            }
        }
        k => k,
    };
    let registered = rng.f64() < 0.5;
    let end = deploy_at + OBSERVE_MS;
    let v2 = "v2";
    let mut svc = match kind {
        Kind::Canary => svc.canary(v2, deploy_at, 1),
        Kind::Rolling { surge, step_ms } => svc.rolling_with(v2, deploy_at, step_ms, surge),
    };

    // Short error blips on every pod (a flaky dependency), anywhere in the run; half of
    // them slow too (its timeouts and retries).
    let blips = match family {
        Family::ErrorBlips => rng.range(2, 4),
        _ => rng.range(0, 2),
    };
    for _ in 0..blips {
        let at = rng.range(start + 2 * MIN, end - MIN);
        let len = rng.range(30, 60) * SEC;
        let p = rng.uniform(0.01, 0.05);
        svc.effects
            .push(Effect::step(Who::All, Signal::ErrorsPlus, p, at, at + len));
        let slow = rng.uniform(1.5, 3.0);
        if rng.f64() < 0.5 {
            svc.effects
                .push(Effect::step(Who::All, Signal::Latency, slow, at, at + len));
        }
    }
    // A pod restarts now and then (an OOM kill, a node drain).
    if rng.f64() < 0.3 || family == Family::RestartDuringDeploy {
        let old: Vec<usize> = svc.pods_of("v1");
        let pod = old[rng.range(0, old.len() as i64 - 1) as usize];
        let at = if family == Family::RestartDuringDeploy {
            rng.range(deploy_at, deploy_at + 10 * MIN)
        } else {
            rng.range(start + 5 * MIN, end - 2 * MIN)
        };
        svc.restarts.push((pod, at));
    }

    // What goes wrong, or what happens that is not the deploy's fault.
    let new = Who::Version(v2.into());
    let mut onset = Some(deploy_at);
    let route_k = rng.range(0, n_routes as i64 - 1) as usize;
    let route = svc.routes[route_k].path.clone();
    let mut summary = String::new();
    let mut eff = |svc: &mut Service, e: Effect| svc.effects.push(e);
    match family {
        Family::Errors2x | Family::Errors3x | Family::Errors10x | Family::LowTrafficErrors10x => {
            let f = match family {
                Family::Errors2x => 2.0,
                Family::Errors3x => 3.0,
                _ => 10.0,
            };
            eff(
                &mut svc,
                Effect::step(new, Signal::Errors, f, deploy_at, i64::MAX),
            );
            summary = format!("5xx ×{f} on all routes");
        }
        Family::RouteErrors3x | Family::RouteErrors10x => {
            let f = if family == Family::RouteErrors3x {
                3.0
            } else {
                10.0
            };
            eff(
                &mut svc,
                Effect::step(new, Signal::Errors, f, deploy_at, i64::MAX).on_route(&route),
            );
            summary = format!("5xx ×{f} on {route}");
        }
        Family::P99Tail1_5x => {
            eff(
                &mut svc,
                Effect::step(new, Signal::LatencyTail, 1.5, deploy_at, i64::MAX),
            );
            summary = "slowest 3 % ×1.5".into();
        }
        Family::P99Shift1_5x => {
            eff(
                &mut svc,
                Effect::step(new, Signal::Latency, 1.5, deploy_at, i64::MAX),
            );
            summary = "latency ×1.5".into();
        }
        Family::P99x3 => {
            eff(
                &mut svc,
                Effect::step(new, Signal::Latency, 3.0, deploy_at, i64::MAX),
            );
            summary = "latency ×3".into();
        }
        Family::CpuPerRequest1_6x => {
            eff(
                &mut svc,
                Effect::step(new, Signal::CpuPerRequest, 1.6, deploy_at, i64::MAX),
            );
            summary = "CPU per request ×1.6".into();
        }
        Family::MemoryLeak => {
            let mib_min = rng.uniform(2.0, 8.0);
            eff(
                &mut svc,
                Effect::step(
                    new,
                    Signal::LeakBytesPerSec,
                    mib_min * MIB / 60.0,
                    deploy_at,
                    i64::MAX,
                ),
            );
            summary = format!("leak {mib_min:.1} MiB/min per pod");
        }
        Family::CrashLoop => {
            for p in svc.pods.iter_mut().filter(|p| p.version == v2) {
                p.crash_loop = true;
            }
            summary = "crash loop".into();
        }
        Family::DelayedErrors => {
            let at = deploy_at + 10 * MIN;
            let f = rng.uniform(5.0, 10.0);
            let ramp = rng.uniform(60.0, 180.0);
            eff(
                &mut svc,
                Effect {
                    shape: Shape::Ramp { secs: ramp },
                    ..Effect::step(new, Signal::Errors, f, at, i64::MAX)
                },
            );
            onset = Some(at);
            summary = format!("5xx ramping to ×{f:.1} over {ramp:.0} s from +10m");
        }
        Family::DependencyOutage => {
            // At any time in the first 10 minutes: during the rollout too.
            let at = rng.range(deploy_at, deploy_at + 10 * MIN);
            let len = rng.range(2, 5) * MIN;
            let p = rng.uniform(0.03, 0.2);
            let slow = rng.uniform(1.5, 3.0);
            eff(
                &mut svc,
                Effect::step(Who::All, Signal::ErrorsPlus, p, at, at + len),
            );
            eff(
                &mut svc,
                Effect::step(Who::All, Signal::Latency, slow, at, at + len),
            );
            onset = None;
            summary = format!(
                "outage +{:.0}% 5xx, latency ×{slow:.1} on all pods",
                p * 100.0
            );
        }
        Family::TrafficSpike => {
            let at = rng.range(deploy_at, deploy_at + 10 * MIN);
            let len = rng.range(3, 6) * MIN;
            let slow = rng.uniform(1.1, 1.5);
            eff(
                &mut svc,
                Effect::step(Who::All, Signal::Traffic, 3.0, at, at + len),
            );
            eff(
                &mut svc,
                Effect::step(Who::All, Signal::Latency, slow, at, at + len),
            );
            onset = None;
            summary = format!("traffic ×3 and latency ×{slow:.1} on all pods");
        }
        Family::Improvement => {
            let e = rng.uniform(0.3, 0.7);
            let l = rng.uniform(0.7, 0.9);
            eff(
                &mut svc,
                Effect::step(new.clone(), Signal::Errors, e, deploy_at, i64::MAX),
            );
            eff(
                &mut svc,
                Effect::step(new, Signal::Latency, l, deploy_at, i64::MAX),
            );
            onset = None;
            summary = format!("5xx ×{e:.2}, latency ×{l:.2}");
        }
        Family::ColdStart => {
            // A harder start than usual, fading within 1–3 minutes.
            let secs = rng.uniform(HARDER_START_SECS.0, HARDER_START_SECS.1);
            eff(
                &mut svc,
                Effect {
                    shape: Shape::ColdStart { secs },
                    ..Effect::step(
                        new.clone(),
                        Signal::Latency,
                        HARDER_START_LATENCY,
                        deploy_at,
                        i64::MAX,
                    )
                },
            );
            eff(
                &mut svc,
                Effect {
                    shape: Shape::ColdStart { secs },
                    ..Effect::step(new, Signal::Cpu, HARDER_START_CPU, deploy_at, i64::MAX)
                },
            );
            onset = None;
            summary = format!(
                "cold start: latency ×{:.1}, CPU ×1.95 fading over {secs:.0} s",
                cold_factor * 2.0
            );
        }
        Family::CleanCanary
        | Family::CleanRolling
        | Family::LowTrafficClean
        | Family::RestartDuringDeploy
        | Family::ErrorBlips => onset = None,
    }
    let _ = &mut eff;
    let detectable = detectable(family, &svc, kind, onset, end);
    let kind_s = match kind {
        Kind::Canary => "canary".to_string(),
        Kind::Rolling { surge, step_ms } => format!(
            "rolling ({} surge, a pod every {} s)",
            if surge { "with" } else { "no" },
            step_ms / SEC
        ),
    };
    let summary = format!(
        "{kind_s}, {}, {:.1} req/s over {old_pods} pods, {n_routes} routes; {summary}",
        if registered { "registered" } else { "detected" },
        svc.rps,
    );
    Scenario {
        family,
        seed,
        service: svc,
        old_version: "v1".into(),
        version: v2.into(),
        kind,
        registered,
        deploy_at,
        onset,
        end,
        detectable,
        summary,
    }
}

/// Whether a regression could be seen at all within the observation: an oracle knowing
/// both rates needs enough excess events. For errors: the new version's expected excess 5xx
/// from the onset to the end at least 8 and 3 standard deviations of its base count; for
/// latency: at least 1,000 requests of the new version (10 beyond the baseline's p99); for
/// CPU per request: the per-request part at least a quarter of a pod's CPU (×1.6 of it is
/// then a 15 % change, above the scrape noise). Leaks and crash loops always are.
pub fn detectable(family: Family, svc: &Service, kind: Kind, onset: Option<i64>, end: i64) -> bool {
    let Some(onset) = onset else { return true };
    let old = svc
        .pods
        .iter()
        .filter(|p: &&PodSpec| p.version == "v1")
        .count() as f64;
    // The new version's request rate once it serves.
    let rate = match kind {
        Kind::Canary => svc.rps / (old + 1.0),
        Kind::Rolling { .. } => svc.rps,
    };
    // Half a minute of warm-up is lost to any judge that waits for cold starts.
    let secs = ((end - onset) as f64 / 1000.0 - 30.0).max(0.0);
    let requests = rate * secs;
    let errors = |f: f64, share: f64, p: f64| {
        let base = requests * share * p;
        let excess = base * (f - 1.0);
        excess >= 8.0 && excess >= 3.0 * base.max(1.0).sqrt()
    };
    let mean_p: f64 = svc.routes.iter().map(|r| r.share * r.error_p).sum();
    match family {
        Family::Errors2x => errors(2.0, 1.0, mean_p),
        Family::Errors3x => errors(3.0, 1.0, mean_p),
        Family::Errors10x | Family::LowTrafficErrors10x => errors(10.0, 1.0, mean_p),
        Family::DelayedErrors => errors(5.0, 1.0, mean_p),
        Family::RouteErrors3x | Family::RouteErrors10x => {
            let f = if family == Family::RouteErrors3x {
                3.0
            } else {
                10.0
            };
            regressed_route(svc).is_some_and(|r| errors(f, r.share, r.error_p))
        }
        Family::P99Tail1_5x | Family::P99Shift1_5x | Family::P99x3 => {
            let (shift, tail) = match family {
                Family::P99Tail1_5x => (1.0, 1.5),
                Family::P99Shift1_5x => (1.5, 1.0),
                _ => (3.0, 1.0),
            };
            latency_visible(svc, requests, shift, tail)
        }
        Family::CpuPerRequest1_6x => {
            let per_pod = rate
                / if matches!(kind, Kind::Canary) {
                    1.0
                } else {
                    old
                };
            let req = svc.cpu_per_request * per_pod;
            req / (req + svc.cpu_base) >= 0.25
        }
        _ => true,
    }
}

/// The route a route-local regression hits.
fn regressed_route(svc: &Service) -> Option<&crate::demo::sim::Route> {
    let path = svc.effects.iter().find_map(|e| e.route.as_deref())?;
    svc.routes.iter().find(|x| x.path == path)
}

/// The earliest any judge could pause this scenario's regression, from its onset: a lower
/// bound that knows the rates and ignores noise, by the criteria of [`detectable`] taken in
/// time. `None` for a non-regression.
///
/// - errors: the new version's expected excess 5xx reach 8 and 3 standard deviations of
///   its base count, the new version at full traffic from the onset (a rollout's whole
///   traffic at once), a delayed regression at its largest factor (×10) at once;
/// - latency: 1,000 requests of the new version, and no sooner than a harder start (the
///   `cold_start` family, ×2 fading over up to 3 minutes, which must not pause) could
///   still explain the new version's slowdown: 90 s for ×1.5, none for ×3;
/// - CPU per request: no sooner than a harder start's CPU (×1.3 fading over up to 3
///   minutes) could still explain the new pod's CPU;
/// - a crash loop: its first crash, 20 s after the start at the soonest; a leak: at once
///   (not bounded: how soon a leak parts from a warm-up depends on both).
pub fn earliest_pause(sc: &Scenario) -> Option<i64> {
    sc.onset?;
    let svc = &sc.service;
    let old = svc
        .pods
        .iter()
        .filter(|p| p.version == sc.old_version)
        .count() as f64;
    let rate = match sc.kind {
        Kind::Canary => svc.rps / (old + 1.0),
        Kind::Rolling { .. } => svc.rps,
    };
    let mean_p: f64 = svc.routes.iter().map(|r| r.share * r.error_p).sum();
    let errors = |f: f64, share: f64, p: f64| {
        let base = rate * share * p;
        let excess = base * (f - 1.0);
        (8.0 / excess).max(9.0 * base / (excess * excess))
    };
    // How long the longest harder start (`factor`, fading linearly) stays above the ratio `r`.
    let harder_start_above =
        |factor: f64, r: f64| (HARDER_START_SECS.1 * (1.0 - (r - 1.0) / (factor - 1.0))).max(0.0);
    let secs = match sc.family {
        Family::Errors2x => errors(2.0, 1.0, mean_p),
        Family::Errors3x => errors(3.0, 1.0, mean_p),
        Family::Errors10x | Family::LowTrafficErrors10x | Family::DelayedErrors => {
            errors(10.0, 1.0, mean_p)
        }
        Family::RouteErrors3x | Family::RouteErrors10x => {
            let f = if sc.family == Family::RouteErrors3x {
                3.0
            } else {
                10.0
            };
            let route = regressed_route(svc)?;
            errors(f, route.share, route.error_p)
        }
        Family::P99Tail1_5x | Family::P99Shift1_5x => {
            (1000.0 / rate).max(harder_start_above(HARDER_START_LATENCY, 1.5))
        }
        Family::P99x3 => (1000.0 / rate).max(harder_start_above(HARDER_START_LATENCY, 3.0)),
        Family::CpuPerRequest1_6x => {
            let per_pod = rate
                / if matches!(sc.kind, Kind::Canary) {
                    1.0
                } else {
                    old
                };
            let req = svc.cpu_per_request * per_pod;
            let r = (1.6 * req + svc.cpu_base) / (req + svc.cpu_base);
            harder_start_above(HARDER_START_CPU, r)
        }
        Family::CrashLoop => 20.0,
        _ => 0.0,
    };
    Some((secs * 1000.0).round() as i64)
}

/// Whether a latency regression shows where a latency rule can see it: in the quantiles
/// `histogram_quantile` computes from the buckets the service exposes (per route when its
/// histograms carry the route, else service-wide), computed from the simulator's own
/// distributions. It counts when some exposed histogram with 1,000 requests of the new
/// version moves its p99 by the default rules' pause threshold (×1.25 and +20 ms) or its
/// median by theirs (×1.3 and +10 ms). A heavier tail that stays within one bucket, or a
/// slow route's tail under the service-wide p99, changes no count a histogram keeps.
fn latency_visible(svc: &Service, requests: f64, shift: f64, tail: f64) -> bool {
    let groups: Vec<Vec<&crate::demo::sim::Route>> = if svc.per_route_histograms {
        svc.routes.iter().map(|r| vec![r]).collect()
    } else {
        vec![svc.routes.iter().collect()]
    };
    groups.iter().any(|routes| {
        let share: f64 = routes.iter().map(|r| r.share).sum();
        let q = |p: f64, shift: f64, tail: f64| {
            histogram_quantile_of(p, |x| {
                routes
                    .iter()
                    .map(|r| {
                        r.share * lognormal_cdf(x, r.median_s * shift, svc.latency_sigma, tail)
                    })
                    .sum::<f64>()
                    / share
            })
        };
        let moved = |p: f64, rel: f64, abs: f64| {
            let (before, after) = (q(p, 1.0, 1.0), q(p, shift, tail));
            after >= before * rel && after - before >= abs
        };
        requests * share >= 1000.0 && (moved(0.99, 1.25, 0.02) || moved(0.5, 1.3, 0.01))
    })
}

/// P(latency ≤ x) for the simulator's latencies: lognormal, the slowest 3 % (z > 1.881)
/// times `tail`.
fn lognormal_cdf(x: f64, median: f64, sigma: f64, tail: f64) -> f64 {
    use crate::stats::normal_cdf;
    if x <= 0.0 {
        return 0.0;
    }
    let z = |x: f64| (x / median).ln() / sigma;
    normal_cdf(z(x).min(1.881)) + (normal_cdf(z(x / tail)) - normal_cdf(1.881)).max(0.0)
}

/// `histogram_quantile` over the simulator's classic buckets, from a CDF.
fn histogram_quantile_of(p: f64, cdf: impl Fn(f64) -> f64) -> f64 {
    let mut lo = (0.0, 0.0);
    for &le in crate::demo::sim::BUCKETS.iter() {
        let f = cdf(le);
        if f >= p {
            return lo.0 + (le - lo.0) * (p - lo.1) / (f - lo.1).max(1e-12);
        }
        lo = (le, f);
    }
    lo.0
}

/// What deploywatch made of a played scenario: when its deploy first paused (or worse),
/// rolled back and passed (event time), and its verdict and reason at the end.
#[derive(Debug, Clone, Default)]
pub struct Judged {
    pub pause: Option<i64>,
    pub rollback: Option<i64>,
    pub pass: Option<i64>,
    pub last: String,
    /// The deploy's timeline, a line an event, times from the deploy's start.
    pub timeline: String,
}

/// Plays a scenario through the server's own decode → store → judge path, in process: an
/// [`App`](crate::app::App) on the embedded config and rules (its storage in a fresh
/// directory under `storage`), Remote-Write 1.0 bodies as Prometheus sends them every 5 s,
/// the deploy registered through the API at its start or left to detection. `on_request`
/// sees every request pushed (the benchmark records them for its reference judges).
pub fn play(
    sc: &Scenario,
    storage: &std::path::Path,
    mut on_request: impl FnMut(&crate::proto::prometheus::WriteRequest),
) -> Judged {
    use crate::deploy::{Registration, Strategy, Verdict};
    use prost::Message;

    let app = crate::app::App::new(
        crate::app::Runtime {
            config_path: None,
            external_url: "http://localhost:10997".into(),
            storage_path: storage.to_path_buf(),
            alertmanager_urls: vec![],
            limit_flags: Default::default(),
        },
        crate::config::Config::embedded(),
        crate::rules::RuleSet::embedded(),
    );
    let name = sc.service.name.clone();
    let mut feed = super::sim::Feed::one(sc.service.clone(), 5 * SEC);
    let mut registered = !sc.registered;
    let mut out = Judged::default();
    let mut body = Vec::new();
    let mut encoder = snap::raw::Encoder::new();
    while feed.t < sc.end {
        if !registered && feed.t + feed.window > sc.deploy_at {
            // CI registers the deploy as it starts it, before the new pods report.
            registered = true;
            app.deploys
                .register(
                    &app.store,
                    Registration {
                        service: name.clone(),
                        version: sc.version.clone(),
                        baseline_version: Some(sc.old_version.clone()),
                        strategy: Some(match sc.kind {
                            Kind::Canary => Strategy::Canary,
                            Kind::Rolling { .. } => Strategy::Rolling,
                        }),
                        at: Some(sc.deploy_at),
                        commit: String::new(),
                        author: String::new(),
                        url: String::new(),
                        changes: vec![],
                    },
                )
                .expect("a registration the simulator made is valid");
        }
        let push = feed.next_push();
        for req in &push.requests {
            body.clear();
            req.encode(&mut body).expect("encoding into a Vec");
            let compressed = encoder.compress_vec(&body).expect("snappy into a Vec");
            app.push(crate::ingest::Protocol::V1, &compressed)
                .expect("the simulator's pushes are valid");
            on_request(req);
        }
        app.deploys.for_each(|d| {
            if d.service != name || d.version != sc.version {
                return;
            }
            let at = push.end;
            if d.verdict >= Verdict::Pause {
                out.pause.get_or_insert(at);
            }
            if d.verdict >= Verdict::Rollback {
                out.rollback.get_or_insert(at);
            }
            if d.verdict == Verdict::Pass {
                out.pass.get_or_insert(at);
            }
            out.last = format!("{}: {}", d.verdict, d.reason());
            if feed.t < sc.end {
                return; // the timeline is read once, after the last push
            }
            out.timeline = d
                .timeline
                .iter()
                .map(|e| {
                    format!(
                        "    {:+5}s {} {} {}\n",
                        (e.at - sc.deploy_at) / 1000,
                        e.event,
                        e.rule.as_deref().unwrap_or(""),
                        e.detail
                    )
                })
                .collect();
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_generates_and_is_reproducible() {
        for f in Family::ALL {
            let a = generate(f, 7);
            let b = generate(f, 7);
            assert_eq!(a.summary, b.summary);
            assert_eq!(a.service.pods.len(), b.service.pods.len());
            assert!(a.end > a.deploy_at && a.deploy_at > EPOCH);
            assert_eq!(a.onset.is_some(), f.is_regression(), "{}", a.name());
            assert!(a.service.pods.iter().any(|p| p.version == "v2"));
        }
        assert_eq!(Family::from_name("p99_x3"), Some(Family::P99x3));
    }

    #[test]
    fn a_latency_change_counts_where_the_exposed_buckets_show_it() {
        let mut svc = generate(Family::P99Tail1_5x, 7).service;
        svc.latency_sigma = 0.5;
        svc.per_route_histograms = true;
        for r in &mut svc.routes {
            r.median_s = 0.06; // p99 ≈ 0.19 s, its tail ×1.5 ≈ 0.29 s: across the 0.25 bound
        }
        assert!(latency_visible(&svc, 1e5, 1.0, 1.5));
        assert!(latency_visible(&svc, 1e5, 3.0, 1.0));
        // Too few requests of the new version to tell.
        assert!(!latency_visible(&svc, 500.0, 3.0, 1.0));
        // A tail ×1.2 that stays inside the (0.1, 0.25] bucket moves no count.
        for r in &mut svc.routes {
            r.median_s = 0.045; // p99 ≈ 0.14 s → 0.17 s
        }
        assert!(!latency_visible(&svc, 1e5, 1.0, 1.2));
    }
}
