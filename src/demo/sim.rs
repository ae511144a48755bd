//! A deterministic, seeded simulator of a Kubernetes service scraped by Prometheus and
//! forwarded over Remote-Write 1.0: [`Service`] descriptions in, [`Push`]es of
//! `WriteRequest`s out. `deploywatch demo` plays its stories with it; the scenario and
//! calibration tests (tests/it) hold the judge to its targets with it.
//!
//! What it models, all in EVENT time (sample timestamps; nothing here reads the wall clock):
//! - a service (`job`) with pods per version; each pod has `instance`, `pod`
//!   (`<svc>-<version>-<5 chars>`), `version` and `namespace` labels;
//! - every 15 s each pod is scraped at its own fixed offset within the interval (as
//!   Prometheus spreads targets), plus a few ms of jitter. A scrape exposes what a Go or Java
//!   client library would: `http_requests_total{code,method,route}` (a `code` series appears
//!   with its first request, as client libraries create children lazily), the classic
//!   histogram `http_request_duration_seconds` (`_bucket{le}`, `_sum`, `_count`; per pod, or
//!   per pod and route), `process_cpu_seconds_total`, `process_resident_memory_bytes`; the
//!   relabelled kube-state-metrics counter `kube_pod_container_status_restarts_total`; and
//!   Prometheus' own report series (`up`, `scrape_*`);
//! - traffic: a service-wide request rate split evenly over the pods that serve at that
//!   second (weights per pod), Poisson per route and second; errors binomial with a
//!   probability per route; latencies lognormal per request;
//! - effects: multipliers on errors, latency, traffic and CPU, and additive memory leaks, for
//!   all pods, one version or one pod, optionally one route, in a time window, as a step, a
//!   drift (per hour) or a cold start (decaying over the first seconds of each process);
//! - crash loops: the process dies every 20–40 s, stays down 10–20 s (its scrapes fail:
//!   `up` 0 and stale markers once), restarts with counters at 0, and the restart counter
//!   increments;
//! - pods that go away (rolling updates) get stale markers for all their series, once.
//!
//! Output: Remote-Write 1.0 requests as Prometheus 2.42 sends them: one sample per
//! `TimeSeries`, labels sorted, at most 500 entries per request, samples in timestamp order
//! (so pods interleave), a push per window of event time (5 s by default) carrying the
//! samples of that window, and metadata in requests of their own once a minute.
//!
//! Generation is independent of how the samples are batched: the same seed gives the same
//! samples whatever the push window.

use std::collections::{HashMap, VecDeque};

use crate::proto::prometheus as rw1;

/// The tests' simulator clock starts here (2025-11-24T16:00:00Z): far from the wall clock.
/// The demo starts its services elsewhere ([`Service::new_at`]).
pub const EPOCH: i64 = 1_764_000_000_000;
pub const SEC: i64 = 1000;
pub const MIN: i64 = 60 * SEC;
/// Prometheus' scrape interval.
pub const SCRAPE_INTERVAL: i64 = 15 * SEC;
/// Prometheus 2.42's `max_samples_per_send`.
pub const MAX_ENTRIES_PER_REQUEST: usize = 500;
const MIB: f64 = 1024.0 * 1024.0;

/// Classic histogram buckets (upper bounds in seconds), as the Go client's defaults.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

// ---------------------------------------------------------------------------------------
// Random numbers: the shared generator (`crate::rng`) and the samplers built on it.
// ---------------------------------------------------------------------------------------

pub use crate::rng::Rng;

/// The simulator's samplers, on the shared generator.
impl Rng {
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform integer in [lo, hi].
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo + 1) as u64)) as i64
    }

    /// Standard normal, Box–Muller (one of the pair; simple and reproducible).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.open01();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Lognormal with the given median and log-space sigma.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Poisson: Knuth's product of uniforms for small means, a rounded normal for large.
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 || !mean.is_finite() {
            return 0;
        }
        if mean < 30.0 {
            let limit = (-mean).exp();
            let mut k = 0u64;
            let mut p = self.f64();
            while p > limit {
                k += 1;
                p *= self.f64();
            }
            k
        } else {
            (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64
        }
    }

    /// Binomial: exact for small n, Poisson for rare events, normal otherwise.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        if n <= 64 {
            return (0..n).filter(|_| self.f64() < p).count() as u64;
        }
        let nf = n as f64;
        if nf * p < 15.0 {
            return self.poisson(nf * p).min(n);
        }
        if nf * (1.0 - p) < 15.0 {
            return n - self.poisson(nf * (1.0 - p)).min(n);
        }
        let sd = (nf * p * (1.0 - p)).sqrt();
        (nf * p + sd * self.normal()).round().clamp(0.0, nf) as u64
    }
}

// ---------------------------------------------------------------------------------------
// What is simulated
// ---------------------------------------------------------------------------------------

/// A route of the service.
#[derive(Debug, Clone)]
pub struct Route {
    pub path: String,
    pub method: String,
    /// Share of the service's requests.
    pub share: f64,
    /// Probability that a request fails with a 500, before effects.
    pub error_p: f64,
    /// Median latency in seconds, before effects.
    pub median_s: f64,
    /// Probability that a request is answered 404 (a client's mistake, not an error).
    pub not_found_p: f64,
}

/// The four routes every simulated service has: 1 % errors everywhere, medians 35–80 ms.
pub fn default_routes() -> Vec<Route> {
    let r = |path: &str, method: &str, share: f64, median_s: f64| Route {
        path: path.into(),
        method: method.into(),
        share,
        error_p: 0.01,
        median_s,
        not_found_p: 0.0,
    };
    vec![
        r("/products", "GET", 0.40, 0.040),
        r("/cart", "GET", 0.25, 0.050),
        r("/checkout", "POST", 0.20, 0.080),
        r("/search", "GET", 0.15, 0.060),
    ]
}

/// What an effect changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Multiplies the error probability (capped at 1).
    Errors,
    /// Multiplies every request's latency.
    Latency,
    /// Multiplies the request rate.
    Traffic,
    /// Multiplies CPU seconds used.
    Cpu,
    /// Adds `factor` bytes per second of resident memory (reset when the process restarts).
    LeakBytesPerSec,
    /// Adds `factor` to the error probability (an incident: a few % 5xx whatever the base).
    ErrorsPlus,
    /// Multiplies the latency of the slowest 3 % of requests only (a heavier tail: p99
    /// times `factor`, the median unchanged).
    LatencyTail,
    /// Multiplies the CPU seconds each request costs (not the constant part).
    CpuPerRequest,
}

/// Which pods an effect touches.
#[derive(Debug, Clone, PartialEq)]
pub enum Who {
    All,
    Version(String),
    /// By the index of the pod in [`Service::pods`].
    Pod(usize),
}

/// How an effect's factor evolves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// `factor` from `from` until `until`.
    Step,
    /// `1 + factor * hours since from` (a slow drift; `factor` is per hour).
    DriftPerHour,
    /// `factor` when a process starts, decaying linearly to 1 over `secs` of its uptime.
    ColdStart { secs: f64 },
    /// 1 at `from`, rising linearly to `factor` over `secs`, then `factor` (a regression
    /// that builds up: a queue filling, a cache expiring).
    Ramp { secs: f64 },
}

#[derive(Debug, Clone)]
pub struct Effect {
    pub who: Who,
    /// Only this route (errors and latency); `None` for all.
    pub route: Option<String>,
    pub signal: Signal,
    pub factor: f64,
    pub from: i64,
    pub until: i64,
    pub shape: Shape,
}

impl Effect {
    pub fn step(who: Who, signal: Signal, factor: f64, from: i64, until: i64) -> Effect {
        Effect {
            who,
            route: None,
            signal,
            factor,
            from,
            until,
            shape: Shape::Step,
        }
    }

    pub fn on_route(mut self, route: &str) -> Effect {
        self.route = Some(route.into());
        self
    }

    /// The multiplier at `t` for a process up since `process_start`.
    fn multiplier(&self, t: i64, process_start: i64) -> f64 {
        if t < self.from || t >= self.until {
            return 1.0;
        }
        match self.shape {
            Shape::Step => self.factor,
            Shape::DriftPerHour => 1.0 + self.factor * (t - self.from) as f64 / 3_600_000.0,
            Shape::ColdStart { secs } => {
                let age = (t - process_start) as f64 / 1000.0;
                1.0 + (self.factor - 1.0) * (1.0 - age / secs).max(0.0)
            }
            Shape::Ramp { secs } => {
                let x = ((t - self.from) as f64 / 1000.0 / secs).min(1.0);
                1.0 + (self.factor - 1.0) * x
            }
        }
    }

    /// The amount an additive effect adds at `t` (its factor, ramped or decayed alike).
    fn addend(&self, t: i64, process_start: i64) -> f64 {
        if t < self.from || t >= self.until {
            return 0.0;
        }
        match self.shape {
            Shape::Step | Shape::DriftPerHour => self.factor,
            Shape::ColdStart { secs } => {
                let age = (t - process_start) as f64 / 1000.0;
                self.factor * (1.0 - age / secs).max(0.0)
            }
            Shape::Ramp { secs } => self.factor * ((t - self.from) as f64 / 1000.0 / secs).min(1.0),
        }
    }
}

/// One pod: a version, when it starts and ends, its share of traffic.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub version: String,
    pub start: i64,
    /// When the pod goes away (`i64::MAX`: never).
    pub end: i64,
    /// Relative traffic weight among serving pods.
    pub weight: f64,
    pub crash_loop: bool,
}

/// A service and everything that happens to it.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub seed: u64,
    /// Requests per second to the whole service (split over serving pods).
    pub rps: f64,
    pub routes: Vec<Route>,
    /// Log-space sigma of request latencies.
    pub latency_sigma: f64,
    /// CPU cores used: `cpu_base + cpu_per_request * requests/s`, times effects, with noise.
    pub cpu_base: f64,
    pub cpu_per_request: f64,
    /// Relative noise of CPU use per second.
    pub cpu_noise: f64,
    /// Resident memory: base, per-pod spread, per-scrape noise (bytes).
    pub mem_base: f64,
    pub mem_pod_spread: f64,
    /// Each pod's CPU per unit of work differs by this relative standard deviation
    /// (nodes, neighbours): a single canary pod is never exactly its baseline's twin.
    pub cpu_pod_spread: f64,
    pub mem_noise: f64,
    /// A process starts `mem_warmup` below its steady level and approaches it with a
    /// `mem_warmup_tau_s` time constant (caches and heaps filling).
    pub mem_warmup: f64,
    pub mem_warmup_tau_s: f64,
    /// A garbage collector's sawtooth on resident memory: ± this fraction of `mem_base`,
    /// rising over `gc_period_s` and dropping at once (each pod at its own phase).
    pub gc_amplitude: f64,
    pub gc_period_s: f64,
    /// Autocorrelated noise on the service's request rate: the log-space amplitude of a sum
    /// of slow waves (periods of 1–10 minutes), the same for every pod. 0: none.
    pub traffic_wobble: f64,
    /// `process_cpu_seconds_total` in clock ticks (hundredths), as /proc reports it.
    pub cpu_ticks: bool,
    /// Planned restarts: (pod index, when); the process is down for 5–15 s, its counters
    /// start again from 0 and kube-state-metrics counts a restart.
    pub restarts: Vec<(usize, i64)>,
    pub pods: Vec<PodSpec>,
    pub effects: Vec<Effect>,
    /// Histograms per pod and route instead of per pod.
    pub per_route_histograms: bool,
    /// Which pods expose `http_request_duration_seconds` as a native histogram (schema 3,
    /// as client_golang's default) instead of classic buckets.
    pub native: Native,
    pub scrape_interval: i64,
    /// A dependency label on the request counters: its name and one value per route (e.g.
    /// `db` = `orders-db` for the routes that use it). `None` (the default): no such label,
    /// so the existing scenarios' series and random streams are unchanged.
    pub route_dependency: Option<(String, Vec<String>)>,
    /// Per-scrape timestamp jitter (ms, at most), on top of each pod's fixed offset.
    pub jitter_ms: i64,
    pub send_metadata: bool,
}

impl Service {
    /// A service of `pods` pods of version `v1` from [`EPOCH`] on, 40 requests/s in all.
    pub fn new(name: &str, seed: u64, pods: usize) -> Service {
        Service::new_at(name, seed, pods, EPOCH)
    }

    /// The same, its pods starting at `start` (Unix ms of event time).
    pub fn new_at(name: &str, seed: u64, pods: usize, start: i64) -> Service {
        Service {
            name: name.into(),
            namespace: "shop".into(),
            seed,
            rps: 40.0,
            routes: default_routes(),
            latency_sigma: 0.5,
            cpu_base: 0.10,
            cpu_per_request: 0.005,
            cpu_noise: 0.10,
            mem_base: 200.0 * MIB,
            mem_pod_spread: 4.0 * MIB,
            cpu_pod_spread: 0.0,
            mem_noise: 1.0 * MIB,
            mem_warmup: 30.0 * MIB,
            mem_warmup_tau_s: 15.0,
            gc_amplitude: 0.0,
            gc_period_s: 180.0,
            traffic_wobble: 0.0,
            cpu_ticks: false,
            restarts: Vec::new(),
            pods: (0..pods)
                .map(|_| PodSpec {
                    version: "v1".into(),
                    start,
                    end: i64::MAX,
                    weight: 1.0,
                    crash_loop: false,
                })
                .collect(),
            effects: Vec::new(),
            per_route_histograms: false,
            native: Native::Off,
            scrape_interval: SCRAPE_INTERVAL,
            route_dependency: None,
            jitter_ms: 20,
            send_metadata: true,
        }
    }

    /// `n` pods of `version` join at `at`; the old ones keep serving (a canary).
    pub fn canary(mut self, version: &str, at: i64, n: usize) -> Service {
        for _ in 0..n {
            self.pods.push(PodSpec {
                version: version.into(),
                start: at,
                end: i64::MAX,
                weight: 1.0,
                crash_loop: false,
            });
        }
        self
    }

    /// A rolling update with surge 1: a new pod starts at `at + i*step`, and the i-th old pod
    /// goes away when the next new one starts; the last old pod at `at + n*step`.
    pub fn rolling(self, version: &str, at: i64, step: i64) -> Service {
        self.rolling_with(version, at, step, true)
    }

    /// A rolling update; with `surge` as [`Service::rolling`], without it the i-th old pod
    /// goes away when its replacement starts (one pod fewer serving while it starts).
    pub fn rolling_with(mut self, version: &str, at: i64, step: i64, surge: bool) -> Service {
        let old: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].end == i64::MAX && self.pods[i].version != version)
            .collect();
        for (k, &i) in old.iter().enumerate() {
            self.pods.push(PodSpec {
                version: version.into(),
                start: at + k as i64 * step,
                end: i64::MAX,
                weight: 1.0,
                crash_loop: false,
            });
            self.pods[i].end = at + (k as i64 + i64::from(surge)) * step;
        }
        self
    }

    pub fn effect(mut self, e: Effect) -> Service {
        self.effects.push(e);
        self
    }

    pub fn with(mut self, f: impl FnOnce(&mut Service)) -> Service {
        f(&mut self);
        self
    }

    /// Indices of the pods of `version`.
    pub fn pods_of(&self, version: &str) -> Vec<usize> {
        (0..self.pods.len())
            .filter(|&i| self.pods[i].version == version)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The simulation
// ---------------------------------------------------------------------------------------

/// Which pods of a service expose native histograms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Native {
    Off,
    All,
    /// Only this version's pods (a fleet mid-way through a client library upgrade).
    Version(String),
}

/// The schema the simulated native histograms use (client_golang's default bucket factor
/// 1.1 gives schema 3).
pub const NATIVE_SCHEMA: i32 = 3;

/// One sample out: (series id in the owning [`Sim`], timestamp, value), or a native
/// histogram sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Out {
    pub series: usize,
    pub ts: i64,
    pub value: f64,
    pub hist: Option<Box<rw1::Histogram>>,
}

impl Out {
    fn float(series: usize, ts: i64, value: f64) -> Out {
        Out {
            series,
            ts,
            value,
            hist: None,
        }
    }
}

/// What a pod's process has counted since it started.
#[derive(Debug, Clone, Default)]
struct Process {
    start: i64,
    /// Per route: [ok, errors, not found].
    requests: Vec<[u64; 3]>,
    /// Per histogram (one, or one per route): bucket counts (non-cumulative; last is +Inf
    /// overflow), sum, count.
    buckets: Vec<[u64; 12]>,
    sum: Vec<f64>,
    /// Per histogram: native bucket counts by index at [`NATIVE_SCHEMA`] (a pod exposing
    /// native histograms).
    native: Vec<std::collections::BTreeMap<i32, u64>>,
    cpu: f64,
    leaked: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// `code`: 0 for 200, 1 for 500, 2 for 404.
    Requests {
        route: usize,
        code: u8,
    },
    Bucket {
        hist: usize,
        le: usize,
    },
    Sum {
        hist: usize,
    },
    Count {
        hist: usize,
    },
    Native {
        hist: usize,
    },
    Cpu,
    Memory,
    Restarts,
    Up,
    ScrapeDuration,
    ScrapeSamples,
    ScrapeSamplesPostRelabel,
    ScrapeSeriesAdded,
}

struct Pod {
    name: String,
    instance: String,
    offset: i64,
    mem_offset: f64,
    cpu_factor: f64,
    /// Where in its garbage collector's cycle the pod starts, in [0, 1).
    gc_phase: f64,
    rng: Rng,
    /// Down periods `[from, until)` of a crash-looping pod, ascending.
    downs: Vec<(i64, i64)>,
    proc: Process,
    restarts: u64,
    /// Simulated through this time (whole seconds).
    sim_until: i64,
    /// Series exposed by the last successful scrape of the pod itself.
    exposed: Vec<usize>,
    /// The relabelled kube-state-metrics restart series, once exposed.
    ksm: Option<usize>,
    series: HashMap<Key, usize>,
    gone: bool,
}

/// A running simulation of one service.
pub struct Sim {
    pub svc: Service,
    pods: Vec<Pod>,
    /// Label sets by series id, sorted by name.
    labels: Vec<Vec<rw1::Label>>,
    /// Version of each series.
    series_version: Vec<String>,
    /// Whether each series is a native histogram.
    series_native: Vec<bool>,
    next_slot: i64,
    pending: VecDeque<Out>,
    /// Where samples have been released up to (exclusive).
    released: i64,
    next_metadata: i64,
    /// The traffic wobble's waves: (period in s, phase in radians, log amplitude).
    waves: Vec<(f64, f64, f64)>,
}

impl Sim {
    pub fn new(svc: Service) -> Sim {
        let mut names = Rng::stream(svc.seed, 0xface);
        let mut pods = Vec::new();
        const ALNUM: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        for (i, spec) in svc.pods.iter().enumerate() {
            let mut rng = Rng::stream(svc.seed, 1000 + i as u64);
            let suffix: String = (0..5)
                .map(|_| ALNUM[(names.next_u64() % ALNUM.len() as u64) as usize] as char)
                .collect();
            let instance = format!(
                "10.{}.{}.{}:8080",
                names.range(1, 250),
                names.range(0, 255),
                names.range(2, 254)
            );
            // Prometheus spreads targets over the interval; keep room for the jitter.
            let offset = names.range(0, svc.scrape_interval - 2 * svc.jitter_ms - 1);
            let mem_offset = svc.mem_pod_spread * rng.normal();
            let mut downs = Vec::new();
            let mut extra = Rng::stream(svc.seed, 7000 + i as u64);
            let gc_phase = extra.f64();
            let cpu_factor = (1.0
                + svc.cpu_pod_spread * Rng::stream(svc.seed, 9000 + i as u64).normal())
            .max(0.5);
            for &(_, at) in svc.restarts.iter().filter(|r| r.0 == i) {
                let at = at.div_euclid(SEC) * SEC;
                downs.push((at, at + extra.range(5, 15) * SEC));
            }
            if spec.crash_loop {
                let mut crash_rng = Rng::stream(svc.seed, 5000 + i as u64);
                let mut t = spec.start.div_euclid(SEC) * SEC;
                while t < spec.end && t < spec.start + 48 * 3600 * SEC {
                    let up = crash_rng.range(20, 40) * SEC;
                    let down = crash_rng.range(10, 20) * SEC;
                    downs.push((t + up, t + up + down));
                    t += up + down;
                }
            }
            pods.push(Pod {
                name: format!("{}-{}-{}", svc.name, spec.version, suffix),
                instance,
                offset,
                mem_offset,
                cpu_factor,
                gc_phase,
                rng,
                downs,
                proc: Process::default(),
                restarts: 0,
                sim_until: spec.start.div_euclid(SEC) * SEC,
                exposed: Vec::new(),
                ksm: None,
                series: HashMap::new(),
                gone: false,
            });
        }
        let start = svc.pods.iter().map(|p| p.start).min().unwrap_or(EPOCH);
        let mut wave_rng = Rng::stream(svc.seed, 0xb0b);
        let waves = if svc.traffic_wobble > 0.0 {
            (0..4)
                .map(|_| {
                    let period = wave_rng.uniform(60.0, 600.0);
                    let phase = wave_rng.uniform(0.0, std::f64::consts::TAU);
                    (
                        period,
                        phase,
                        svc.traffic_wobble * wave_rng.uniform(0.3, 1.0) / 2.0,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let first_slot = start.div_euclid(svc.scrape_interval);
        let mut sim = Sim {
            svc,
            pods,
            labels: Vec::new(),
            series_version: Vec::new(),
            series_native: Vec::new(),
            next_slot: first_slot,
            pending: VecDeque::new(),
            released: i64::MIN,
            next_metadata: start,
            waves,
        };
        for i in 0..sim.pods.len() {
            let s = sim.svc.pods[i].start;
            sim.pods[i].proc = sim.fresh_process(s);
        }
        sim
    }

    pub fn service(&self) -> &str {
        &self.svc.name
    }

    /// Name of pod `i`.
    pub fn pod_name(&self, i: usize) -> &str {
        &self.pods[i].name
    }

    pub fn labels(&self, series: usize) -> &[rw1::Label] {
        &self.labels[series]
    }

    /// The pods of `version` still running go away at `at` (a rollback, the old version
    /// after a promotion), or at the first scrape slot not generated yet if that is later:
    /// what was already sent stays as it was. Their series get stale markers, once. The
    /// number of pods stopped.
    pub fn end_pods(&mut self, version: &str, at: i64) -> usize {
        let at = at.max(self.next_slot * self.svc.scrape_interval);
        let mut n = 0;
        for spec in self.svc.pods.iter_mut() {
            if spec.version == version && spec.end > at {
                spec.end = at;
                n += 1;
            }
        }
        n
    }

    /// Series created so far, per version.
    pub fn series_per_version(&self) -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        for v in &self.series_version {
            *m.entry(v.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Whether pod `i` exposes native histograms.
    fn is_native(&self, i: usize) -> bool {
        match &self.svc.native {
            Native::Off => false,
            Native::All => true,
            Native::Version(v) => self.svc.pods[i].version == *v,
        }
    }

    /// A stale marker for `series`: Prometheus' stale NaN, in a histogram for a native one.
    fn stale_out(&self, series: usize, ts: i64) -> Out {
        if self.series_native[series] {
            Out {
                series,
                ts,
                value: stale_nan(),
                hist: Some(Box::new(rw1::Histogram {
                    sum: stale_nan(),
                    timestamp: ts,
                    ..Default::default()
                })),
            }
        } else {
            Out::float(series, ts, stale_nan())
        }
    }

    fn hists(&self) -> usize {
        if self.svc.per_route_histograms {
            self.svc.routes.len()
        } else {
            1
        }
    }

    fn fresh_process(&self, start: i64) -> Process {
        let r = self.svc.routes.len();
        let h = self.hists();
        Process {
            start,
            requests: vec![[0, 0, 0]; r],
            buckets: vec![[0; 12]; h],
            sum: vec![0.0; h],
            native: vec![Default::default(); h],
            // What starting up costs.
            cpu: 0.3,
            leaked: 0.0,
        }
    }

    fn is_up(&self, pod: usize, t: i64) -> bool {
        let spec = &self.svc.pods[pod];
        if t < spec.start || t >= spec.end {
            return false;
        }
        !self.pods[pod]
            .downs
            .iter()
            .any(|&(from, until)| from <= t && t < until)
    }

    /// The effects of `signal` that touch a pod (and route).
    fn effects_on(
        &self,
        signal: Signal,
        pod: usize,
        route: Option<usize>,
    ) -> impl Iterator<Item = &Effect> {
        self.svc
            .effects
            .iter()
            .filter(move |e| e.signal == signal && self.touches(e, pod, route))
    }

    /// The product of the multipliers of `signal` for a pod (and route) at `t`.
    fn multiplier(
        &self,
        signal: Signal,
        pod: usize,
        route: Option<usize>,
        t: i64,
        process_start: i64,
    ) -> f64 {
        self.effects_on(signal, pod, route)
            .map(|e| e.multiplier(t, process_start))
            .product()
    }

    fn touches(&self, e: &Effect, pod: usize, route: Option<usize>) -> bool {
        let who = match &e.who {
            Who::All => true,
            Who::Version(v) => self.svc.pods[pod].version == *v,
            Who::Pod(i) => *i == pod,
        };
        let route_ok = match (&e.route, route) {
            (None, _) => true,
            (Some(want), Some(r)) => self.svc.routes[r].path == *want,
            (Some(_), None) => true,
        };
        who && route_ok
    }

    /// The sum of the additive effects of `signal` for a pod (and route) at `t`.
    fn addend(
        &self,
        signal: Signal,
        pod: usize,
        route: Option<usize>,
        t: i64,
        process_start: i64,
    ) -> f64 {
        self.effects_on(signal, pod, route)
            .map(|e| e.addend(t, process_start))
            .sum()
    }

    /// The service-wide traffic wobble's multiplier at `t`.
    fn wobble(&self, t: i64) -> f64 {
        if self.waves.is_empty() {
            return 1.0;
        }
        let s = t as f64 / 1000.0;
        self.waves
            .iter()
            .map(|(period, phase, amp)| amp * (std::f64::consts::TAU * s / period + phase).sin())
            .sum::<f64>()
            .exp()
    }

    /// Simulates pod `i` through the second ending at or before `t`.
    fn advance_pod(&mut self, i: usize, t: i64) {
        while self.pods[i].sim_until + SEC <= t {
            let s = self.pods[i].sim_until;
            self.pods[i].sim_until += SEC;
            self.second(i, s);
        }
    }

    /// One second `[s, s+1000)` of pod `i`.
    fn second(&mut self, i: usize, s: i64) {
        let spec_start = self.svc.pods[i].start;
        if s < spec_start.div_euclid(SEC) * SEC || s >= self.svc.pods[i].end {
            return;
        }
        // A crashed process counts nothing until it restarts, at the end of its down period.
        if self.pods[i].downs.iter().any(|d| d.0 <= s && s < d.1) {
            return;
        }
        if self.pods[i].downs.iter().any(|d| d.1 == s) {
            self.pods[i].restarts += 1;
            self.pods[i].proc = self.fresh_process(s);
        }
        let process_start = self.pods[i].proc.start;

        // This pod's share of the service's traffic.
        let serving: f64 = (0..self.pods.len())
            .filter(|&q| self.is_up(q, s))
            .map(|q| self.svc.pods[q].weight)
            .sum();
        if serving <= 0.0 {
            return;
        }
        let rate = self.svc.rps * self.svc.pods[i].weight / serving
            * self.multiplier(Signal::Traffic, i, None, s, process_start)
            * self.wobble(s);

        let sigma = self.svc.latency_sigma;
        let per_route_h = self.svc.per_route_histograms;
        let native = self.is_native(i);
        let mut total = 0u64;
        for r in 0..self.svc.routes.len() {
            let route = &self.svc.routes[r];
            let n = self.pods[i].rng.poisson(rate * route.share);
            if n == 0 {
                continue;
            }
            let p = (route.error_p * self.multiplier(Signal::Errors, i, Some(r), s, process_start)
                + self.addend(Signal::ErrorsPlus, i, Some(r), s, process_start))
            .min(1.0);
            let median =
                route.median_s * self.multiplier(Signal::Latency, i, Some(r), s, process_start);
            let tail = self.multiplier(Signal::LatencyTail, i, Some(r), s, process_start);
            let not_found_p = route.not_found_p;
            let pod = &mut self.pods[i];
            let errors = pod.rng.binomial(n, p);
            // Only services with 404s draw for them: the others' random streams stay as they were.
            let not_found = if not_found_p > 0.0 {
                pod.rng.binomial(n - errors, not_found_p)
            } else {
                0
            };
            pod.proc.requests[r][0] += n - errors - not_found;
            pod.proc.requests[r][1] += errors;
            pod.proc.requests[r][2] += not_found;
            let h = if per_route_h { r } else { 0 };
            for _ in 0..n {
                // The slowest 3 % (z above 1.88) are the tail an effect can stretch.
                let z = pod.rng.normal();
                let lat = median * (sigma * z).exp() * if z > 1.881 { tail } else { 1.0 };
                let b = BUCKETS.iter().position(|&le| lat <= le).unwrap_or(11);
                pod.proc.buckets[h][b] += 1;
                pod.proc.sum[h] += lat;
                if native {
                    let idx = (lat.log2() * f64::from(1 << NATIVE_SCHEMA)).ceil() as i32;
                    *pod.proc.native[h].entry(idx).or_insert(0) += 1;
                }
            }
            total += n;
        }
        let per_request = self.svc.cpu_per_request
            * self.multiplier(Signal::CpuPerRequest, i, None, s, process_start);
        let cores = (self.svc.cpu_base + per_request * total as f64)
            * self.multiplier(Signal::Cpu, i, None, s, process_start);
        let noise = self.svc.cpu_noise;
        let leak = self.addend(Signal::LeakBytesPerSec, i, None, s, process_start);
        let pod = &mut self.pods[i];
        pod.proc.cpu += (cores * pod.cpu_factor * (1.0 + noise * pod.rng.normal())).max(0.0);
        pod.proc.leaked += leak;
    }

    fn series_id(&mut self, pod: usize, key: Key) -> usize {
        if let Some(&id) = self.pods[pod].series.get(&key) {
            return id;
        }
        let p = &self.pods[pod];
        let spec = &self.svc.pods[pod];
        let mut l: Vec<(String, String)> = vec![
            ("job".into(), self.svc.name.clone()),
            ("instance".into(), p.instance.clone()),
            ("namespace".into(), self.svc.namespace.clone()),
            ("pod".into(), p.name.clone()),
            ("version".into(), spec.version.clone()),
        ];
        let mut name = |n: &str| l.push(("__name__".into(), n.into()));
        let hist_route = |h: usize| -> Option<(String, String)> {
            self.svc
                .per_route_histograms
                .then(|| ("route".to_string(), self.svc.routes[h].path.clone()))
        };
        match key {
            Key::Requests { route, code } => {
                name("http_requests_total");
                let r = &self.svc.routes[route];
                l.push(("code".into(), ["200", "500", "404"][code as usize].into()));
                l.push(("method".into(), r.method.clone()));
                l.push(("route".into(), r.path.clone()));
                if let Some((name, values)) = &self.svc.route_dependency {
                    if let Some(v) = values.get(route) {
                        l.push((name.clone(), v.clone()));
                    }
                }
            }
            Key::Bucket { hist, le } => {
                name("http_request_duration_seconds_bucket");
                let le = if le < BUCKETS.len() {
                    format_le(BUCKETS[le])
                } else {
                    "+Inf".into()
                };
                l.push(("le".into(), le));
                l.extend(hist_route(hist));
            }
            Key::Sum { hist } => {
                name("http_request_duration_seconds_sum");
                l.extend(hist_route(hist));
            }
            Key::Count { hist } => {
                name("http_request_duration_seconds_count");
                l.extend(hist_route(hist));
            }
            Key::Native { hist } => {
                name("http_request_duration_seconds");
                l.extend(hist_route(hist));
            }
            Key::Cpu => name("process_cpu_seconds_total"),
            Key::Memory => name("process_resident_memory_bytes"),
            Key::Restarts => {
                name("kube_pod_container_status_restarts_total");
                l.push(("container".into(), "app".into()));
            }
            Key::Up => name("up"),
            Key::ScrapeDuration => name("scrape_duration_seconds"),
            Key::ScrapeSamples => name("scrape_samples_scraped"),
            Key::ScrapeSamplesPostRelabel => name("scrape_samples_post_metric_relabeling"),
            Key::ScrapeSeriesAdded => name("scrape_series_added"),
        }
        let pairs: Vec<(&str, &str)> = l.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let id = self.labels.len();
        self.labels.push(labels(&pairs));
        self.series_version.push(spec.version.clone());
        self.series_native.push(matches!(key, Key::Native { .. }));
        self.pods[pod].series.insert(key, id);
        id
    }

    /// The scrape of pod `i` at `ts`, appended to `out`.
    fn scrape(&mut self, i: usize, ts: i64, out: &mut Vec<Out>) {
        let spec = self.svc.pods[i].clone();
        if ts < spec.start || self.pods[i].gone {
            return;
        }
        if ts >= spec.end {
            // The target is gone: Prometheus marks everything it scraped from it stale, and
            // kube-state-metrics stops exposing the pod.
            let mut stale: Vec<usize> = std::mem::take(&mut self.pods[i].exposed);
            for k in [
                Key::Up,
                Key::ScrapeDuration,
                Key::ScrapeSamples,
                Key::ScrapeSamplesPostRelabel,
                Key::ScrapeSeriesAdded,
            ] {
                if let Some(&id) = self.pods[i].series.get(&k) {
                    stale.push(id);
                }
            }
            stale.extend(self.pods[i].ksm);
            for series in stale {
                out.push(self.stale_out(series, ts));
            }
            self.pods[i].gone = true;
            return;
        }
        self.advance_pod(i, ts);
        let up = self.is_up(i, ts);
        let mut scraped: Vec<(usize, f64)> = Vec::new();
        let mut hists: Vec<(usize, rw1::Histogram)> = Vec::new();
        let mut added = 0usize;
        if up {
            let before = self.labels.len();
            let proc = self.pods[i].proc.clone();
            let native = self.is_native(i);
            for h in (0..proc.buckets.len()).filter(|_| native) {
                let id = self.series_id(i, Key::Native { hist: h });
                let count: u64 = proc.buckets[h].iter().sum();
                hists.push((
                    id,
                    native_histogram(&proc.native[h], count, proc.sum[h], ts),
                ));
            }
            for h in (0..proc.buckets.len()).filter(|_| !native) {
                let mut cum = 0u64;
                for le in 0..12 {
                    cum += proc.buckets[h][le];
                    let id = self.series_id(i, Key::Bucket { hist: h, le });
                    scraped.push((id, cum as f64));
                }
                let id = self.series_id(i, Key::Sum { hist: h });
                scraped.push((id, proc.sum[h]));
                let id = self.series_id(i, Key::Count { hist: h });
                scraped.push((id, cum as f64));
            }
            for (r, counts) in proc.requests.iter().enumerate() {
                for (code, &c) in counts.iter().enumerate() {
                    // Client libraries create a labelled child on its first increment.
                    if c > 0 {
                        let id = self.series_id(
                            i,
                            Key::Requests {
                                route: r,
                                code: code as u8,
                            },
                        );
                        scraped.push((id, c as f64));
                    }
                }
            }
            let id = self.series_id(i, Key::Cpu);
            let cpu = if self.svc.cpu_ticks {
                (proc.cpu * 100.0).floor() / 100.0
            } else {
                proc.cpu
            };
            scraped.push((id, cpu));
            let age = (ts - proc.start) as f64 / 1000.0;
            let svc = &self.svc;
            let pod = &mut self.pods[i];
            let gc = if svc.gc_amplitude > 0.0 {
                let x = age / svc.gc_period_s + pod.gc_phase;
                svc.gc_amplitude * svc.mem_base * (2.0 * (x - x.floor()) - 1.0)
            } else {
                0.0
            };
            let mem = svc.mem_base + pod.mem_offset + proc.leaked + gc
                - svc.mem_warmup * (-age / svc.mem_warmup_tau_s).exp()
                + svc.mem_noise * pod.rng.normal();
            let id = self.series_id(i, Key::Memory);
            scraped.push((id, mem.round()));
            added = self.labels.len() - before;
            // A series the last scrape returned and this one does not (a labelled child
            // gone with a restart of the process) gets a stale marker, as Prometheus' scrape
            // loop sends.
            let now: std::collections::HashSet<usize> = scraped
                .iter()
                .map(|x| x.0)
                .chain(hists.iter().map(|x| x.0))
                .collect();
            for &series in &self.pods[i].exposed {
                if !now.contains(&series) {
                    out.push(self.stale_out(series, ts));
                }
            }
            self.pods[i].exposed = now.into_iter().collect();
            self.pods[i].exposed.sort_unstable();
        } else {
            // A failed scrape: stale markers for what the last one returned, once.
            for series in std::mem::take(&mut self.pods[i].exposed) {
                out.push(self.stale_out(series, ts));
            }
        }
        let n = scraped.len() as f64;
        let duration = 0.004 + 0.002 * self.pods[i].rng.f64();
        for (k, v) in [
            (Key::Up, if up { 1.0 } else { 0.0 }),
            (Key::ScrapeDuration, if up { duration } else { 0.0012 }),
            (Key::ScrapeSamples, n),
            (Key::ScrapeSamplesPostRelabel, n),
            (Key::ScrapeSeriesAdded, added as f64),
        ] {
            let id = self.series_id(i, k);
            scraped.push((id, v));
        }
        // kube-state-metrics keeps reporting the pod, whether its process is up or not.
        let id = self.series_id(i, Key::Restarts);
        self.pods[i].ksm = Some(id);
        scraped.push((id, self.pods[i].restarts as f64));
        out.extend(hists.into_iter().map(|(series, h)| Out {
            series,
            ts,
            value: 0.0,
            hist: Some(Box::new(h)),
        }));
        out.extend(
            scraped
                .into_iter()
                .map(|(series, value)| Out::float(series, ts, value)),
        );
    }

    /// Generates the scrapes of slot `k` into `pending`, in timestamp order.
    fn generate_slot(&mut self, k: i64) {
        let base = k * self.svc.scrape_interval;
        let mut order: Vec<(i64, usize)> = Vec::new();
        for i in 0..self.pods.len() {
            let jitter = self.pods[i].rng.range(0, self.svc.jitter_ms);
            order.push((base + self.pods[i].offset + jitter, i));
        }
        order.sort();
        let mut out = Vec::new();
        for (ts, i) in order {
            self.scrape(i, ts, &mut out);
        }
        self.pending.extend(out);
    }

    /// All samples with timestamps before `t` not released yet, in timestamp order.
    pub fn take_until(&mut self, t: i64) -> Vec<Out> {
        while self.next_slot * self.svc.scrape_interval < t {
            let k = self.next_slot;
            self.next_slot += 1;
            self.generate_slot(k);
        }
        let mut out = Vec::new();
        while let Some(o) = self.pending.front() {
            if o.ts >= t {
                break;
            }
            out.push(self.pending.pop_front().unwrap());
        }
        self.released = t;
        out
    }

    /// Metadata for the metric families, as Prometheus sends it (once a minute).
    fn metadata_due(&mut self, t: i64) -> bool {
        if !self.svc.send_metadata || t < self.next_metadata {
            return false;
        }
        self.next_metadata = t + MIN;
        true
    }
}

/// A bucket bound as the Go client prints it (`le` label value).
pub fn format_le(le: f64) -> String {
    // As the Go client prints bucket bounds.
    let s = format!("{le}");
    s
}

/// The metadata request Prometheus sends for these metric families.
pub fn metadata_request() -> rw1::WriteRequest {
    use rw1::metric_metadata::MetricType;
    let m = |name: &str, t: MetricType, help: &str| rw1::MetricMetadata {
        r#type: t as i32,
        metric_family_name: name.into(),
        help: help.into(),
        unit: String::new(),
    };
    rw1::WriteRequest {
        timeseries: Vec::new(),
        metadata: vec![
            m(
                "http_requests_total",
                MetricType::Counter,
                "Requests served.",
            ),
            m(
                "http_request_duration_seconds",
                MetricType::Histogram,
                "Request latency.",
            ),
            m(
                "process_cpu_seconds_total",
                MetricType::Counter,
                "Total user and system CPU time spent in seconds.",
            ),
            m(
                "process_resident_memory_bytes",
                MetricType::Gauge,
                "Resident memory size in bytes.",
            ),
            m(
                "kube_pod_container_status_restarts_total",
                MetricType::Counter,
                "The number of container restarts per container.",
            ),
        ],
    }
}

// ---------------------------------------------------------------------------------------
// Batching: several services' samples into remote-write pushes
// ---------------------------------------------------------------------------------------

/// One push window's requests.
pub struct Push {
    /// The window's end (exclusive): the event time the push is sent at.
    pub end: i64,
    pub requests: Vec<rw1::WriteRequest>,
    /// Float samples in the requests (stale markers included).
    pub samples: u64,
}

/// The samples of one or more simulated services, cut into pushes every `window` of event
/// time, as Prometheus' queue manager sends them on its 5 s deadline.
pub struct Feed {
    pub sims: Vec<Sim>,
    pub window: i64,
    /// Start of the next window.
    pub t: i64,
}

impl Feed {
    pub fn new(sims: Vec<Sim>, window: i64) -> Feed {
        let start = sims
            .iter()
            .flat_map(|s| s.svc.pods.iter().map(|p| p.start))
            .min()
            .unwrap_or(EPOCH);
        Feed {
            sims,
            window,
            t: start.div_euclid(window) * window,
        }
    }

    pub fn one(svc: Service, window: i64) -> Feed {
        Feed::new(vec![Sim::new(svc)], window)
    }

    pub fn sim(&self, service: &str) -> &Sim {
        self.sims
            .iter()
            .find(|s| s.service() == service)
            .expect("a simulated service")
    }

    /// The next window's push.
    pub fn next_push(&mut self) -> Push {
        let end = self.t + self.window;
        self.t = end;
        let mut all: Vec<(i64, usize, Out)> = Vec::new();
        let mut metadata = false;
        for (k, sim) in self.sims.iter_mut().enumerate() {
            all.extend(sim.take_until(end).into_iter().map(|o| (o.ts, k, o)));
            metadata |= sim.metadata_due(end - self.window);
        }
        // Stable: within a timestamp, a scrape keeps its exposition order.
        all.sort_by_key(|x| x.0);
        let samples = all.len() as u64;
        let mut requests = Vec::new();
        if metadata {
            requests.push(metadata_request());
        }
        for chunk in all.chunks(MAX_ENTRIES_PER_REQUEST) {
            let timeseries = chunk
                .iter()
                .map(|(_, k, o)| match &o.hist {
                    Some(h) => rw1::TimeSeries {
                        labels: self.sims[*k].labels[o.series].clone(),
                        histograms: vec![(**h).clone()],
                        ..Default::default()
                    },
                    None => rw1::TimeSeries {
                        labels: self.sims[*k].labels[o.series].clone(),
                        samples: vec![rw1::Sample {
                            value: o.value,
                            timestamp: o.ts,
                        }],
                        ..Default::default()
                    },
                })
                .collect();
            requests.push(rw1::WriteRequest {
                timeseries,
                ..Default::default()
            });
        }
        Push {
            end,
            requests,
            samples,
        }
    }
}

/// A native histogram sample as Prometheus sends it: spans and deltas of the bucket counts
/// by index at [`NATIVE_SCHEMA`], client_golang's zero threshold.
fn native_histogram(
    buckets: &std::collections::BTreeMap<i32, u64>,
    count: u64,
    sum: f64,
    ts: i64,
) -> rw1::Histogram {
    use crate::proto::prometheus::histogram::{Count, ZeroCount};
    let mut spans: Vec<rw1::BucketSpan> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let (mut prev_idx, mut prev_count): (Option<i32>, i64) = (None, 0);
    for (&i, &c) in buckets {
        match (prev_idx, spans.last_mut()) {
            (Some(p), Some(last)) if i == p + 1 => last.length += 1,
            (Some(p), _) => spans.push(rw1::BucketSpan {
                offset: i - p - 1,
                length: 1,
            }),
            (None, _) => spans.push(rw1::BucketSpan {
                offset: i,
                length: 1,
            }),
        }
        deltas.push(c as i64 - prev_count);
        prev_count = c as i64;
        prev_idx = Some(i);
    }
    rw1::Histogram {
        count: Some(Count::CountInt(count)),
        sum,
        schema: NATIVE_SCHEMA,
        zero_threshold: (-128f64).exp2(),
        zero_count: Some(ZeroCount::ZeroCountInt(0)),
        positive_spans: spans,
        positive_deltas: deltas,
        timestamp: ts,
        ..Default::default()
    }
}

/// Prometheus' staleness marker (a NaN with a fixed bit pattern).
pub fn stale_nan() -> f64 {
    f64::from_bits(crate::store::STALE_NAN_BITS)
}

/// RW 1.0 labels, sorted by name as Prometheus sends them.
pub fn labels(pairs: &[(&str, &str)]) -> Vec<rw1::Label> {
    let mut v: Vec<rw1::Label> = pairs
        .iter()
        .map(|(n, v)| rw1::Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

// ---------------------------------------------------------------------------------------
// Checks of the simulator itself (the one that needs a running deploywatch is in tests/it/sim.rs)
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prng_is_deterministic_and_samplers_have_the_right_moments() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(Rng::stream(1, 2).next_u64(), Rng::stream(1, 3).next_u64());

        let mut r = Rng::new(7);
        let n = 200_000;
        let mean_var = |xs: &[f64]| {
            let m = xs.iter().sum::<f64>() / xs.len() as f64;
            let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64;
            (m, v)
        };
        for lambda in [0.3, 2.5, 29.0, 150.0] {
            let xs: Vec<f64> = (0..n).map(|_| r.poisson(lambda) as f64).collect();
            let (m, v) = mean_var(&xs);
            assert!(
                (m - lambda).abs() < 0.02 * lambda + 0.01,
                "poisson({lambda}) mean {m}"
            );
            assert!(
                (v - lambda).abs() < 0.05 * lambda + 0.01,
                "poisson({lambda}) var {v}"
            );
        }
        for (trials, p) in [
            (10u64, 0.3),
            (150, 0.01),
            (150, 0.5),
            (5000, 0.1),
            (400, 0.99),
        ] {
            let xs: Vec<f64> = (0..n / 4).map(|_| r.binomial(trials, p) as f64).collect();
            let (m, v) = mean_var(&xs);
            let (em, ev) = (trials as f64 * p, trials as f64 * p * (1.0 - p));
            assert!(
                (m - em).abs() < 0.03 * em + 0.02,
                "binomial({trials},{p}) mean {m} vs {em}"
            );
            assert!(
                (v - ev).abs() < 0.1 * ev + 0.02,
                "binomial({trials},{p}) var {v} vs {ev}"
            );
        }
        let mut ls: Vec<f64> = (0..n).map(|_| r.lognormal(0.05, 0.5)).collect();
        ls.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = ls[n / 2];
        let p99 = ls[n * 99 / 100];
        assert!((median - 0.05).abs() < 0.001, "lognormal median {median}");
        let want_p99 = 0.05 * (0.5f64 * 2.326).exp();
        assert!(
            (p99 - want_p99).abs() < 0.005,
            "lognormal p99 {p99} vs {want_p99}"
        );
    }

    fn canary_service() -> Service {
        Service::new("checkout", 11, 3).canary("v2", EPOCH + 10 * MIN, 1)
    }

    /// All samples of a feed through `until`, flattened to (labels, ts, value bits).
    fn flatten(mut feed: Feed, until: i64) -> Vec<(String, i64, u64)> {
        let mut out = Vec::new();
        while feed.t + feed.window <= until {
            for req in feed.next_push().requests {
                for ts in req.timeseries {
                    let l: Vec<String> = ts
                        .labels
                        .iter()
                        .map(|l| format!("{}={}", l.name, l.value))
                        .collect();
                    out.push((
                        l.join(","),
                        ts.samples[0].timestamp,
                        ts.samples[0].value.to_bits(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn batching_does_not_change_the_samples() {
        let until = EPOCH + 15 * MIN;
        let svc = canary_service().with(|s| s.pods[3].crash_loop = true);
        let a = flatten(Feed::one(svc.clone(), 5 * SEC), until);
        let b = flatten(Feed::one(svc.clone(), 30 * SEC), until);
        assert_eq!(a.len(), b.len());
        assert_eq!(a, b, "the same samples whatever the push window");
        let c = flatten(Feed::one(svc.with(|s| s.seed = 12), 5 * SEC), until);
        assert_ne!(a, c, "another seed, other samples");
    }

    /// Pods ended while the simulation runs (a rollback) get stale markers for their
    /// series once, then nothing; what was sent before is unchanged.
    #[test]
    fn ended_pods_go_stale_once() {
        let svc = canary_service();
        let stop = EPOCH + 12 * MIN;
        let mut feed = Feed::one(svc.clone(), 5 * SEC);
        let mut reference = Feed::one(svc, 5 * SEC);
        let mut before = Vec::new();
        while feed.t < stop {
            let (a, b) = (feed.next_push(), reference.next_push());
            before.push((a.samples, b.samples));
        }
        assert!(before.iter().all(|(a, b)| a == b));
        assert_eq!(feed.sims[0].end_pods("v2", stop), 1);
        let (mut stale, mut after) = (0, 0);
        while feed.t < stop + 3 * MIN {
            for req in feed.next_push().requests {
                for ts in req.timeseries {
                    let is_v2 = ts
                        .labels
                        .iter()
                        .any(|l| l.name == "version" && l.value == "v2");
                    if !is_v2 {
                        continue;
                    }
                    if ts.samples[0].value.to_bits() == stale_nan().to_bits() {
                        stale += 1;
                    } else {
                        after += 1;
                    }
                }
            }
        }
        assert!(stale > 10, "stale markers for every v2 series: {stale}");
        assert_eq!(after, 0, "no v2 sample after its pod ended");
    }

    /// A series a scrape no longer returns — a `code="500"` child gone with a restart of
    /// its process, which the scrape may not even have seen down — ends on a stale marker,
    /// as Prometheus' scrape loop sends; none falls silent while its pod still reports.
    #[test]
    fn series_gone_from_a_scrape_go_stale() {
        let mut svc = Service::new("checkout", 5, 3);
        // Errors rare enough that a restarted process's first one comes minutes later.
        for r in &mut svc.routes {
            r.error_p = 0.0004;
        }
        // Restarts at every phase of the 15 s scrape interval.
        for k in 0..6 {
            svc.restarts
                .push((k % 3, EPOCH + 10 * MIN + k as i64 * (MIN + 2_500)));
        }
        let until = EPOCH + 20 * MIN;
        let mut last: HashMap<String, (i64, u64)> = HashMap::new();
        for (labels, ts, bits) in flatten(Feed::one(svc, 5 * SEC), until) {
            last.insert(labels, (ts, bits));
        }
        let errors: Vec<_> = last
            .iter()
            .filter(|(l, _)| l.contains("code=500"))
            .collect();
        assert!(!errors.is_empty());
        let silent: Vec<_> = last
            .iter()
            .filter(|(_, (ts, bits))| *ts < until - MIN && *bits != stale_nan().to_bits())
            .map(|(l, _)| l)
            .collect();
        assert!(
            silent.is_empty(),
            "series fallen silent without a stale marker: {silent:?}"
        );
    }

    #[test]
    fn requests_look_like_prometheus_2_42() {
        let svc = Service::new("checkout", 3, 3).rolling("v2", EPOCH + 5 * MIN, 40 * SEC);
        let mut feed = Feed::one(svc, 5 * SEC);
        let mut last_ts: HashMap<Vec<(String, String)>, i64> = HashMap::new();
        let mut stale = 0;
        let mut metadata = 0;
        let mut newest = 0;
        while feed.t < EPOCH + 12 * MIN {
            let push = feed.next_push();
            for req in &push.requests {
                assert!(req.timeseries.len() <= MAX_ENTRIES_PER_REQUEST);
                if req.timeseries.is_empty() {
                    metadata += 1;
                    assert!(!req.metadata.is_empty());
                    continue;
                }
                for ts in &req.timeseries {
                    assert_eq!(ts.samples.len(), 1, "one sample per entry");
                    let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
                    let mut sorted = names.clone();
                    sorted.sort();
                    assert_eq!(names, sorted, "labels sorted");
                    let s = ts.samples[0];
                    assert!(s.timestamp < push.end && s.timestamp >= push.end - 5 * SEC);
                    assert!(s.timestamp >= newest, "timestamps ascend across a push");
                    newest = s.timestamp;
                    let key: Vec<(String, String)> = ts
                        .labels
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect();
                    let prev = last_ts.insert(key.clone(), s.timestamp);
                    if let Some(prev) = prev {
                        let gap = s.timestamp - prev;
                        assert!(
                            gap > 14 * SEC && gap < 16 * SEC,
                            "scrape gap {gap} of {key:?}"
                        );
                    }
                    if s.value.to_bits() == stale_nan().to_bits() {
                        stale += 1;
                        let version = key.iter().find(|l| l.0 == "version").unwrap();
                        assert_eq!(version.1, "v1", "only the old pods go stale");
                    }
                }
            }
        }
        // Three old pods, each with 5 report series, 14 histogram series, CPU, memory, the
        // restarts series and 8 request series (every code of every route seen by now).
        assert_eq!(
            stale,
            3 * (5 + 14 + 2 + 1 + 8),
            "stale markers once per series"
        );
        assert!(metadata >= 11, "metadata once a minute: {metadata}");
    }
}

/// The injected effects show in the data with the intended size: the ground truth the
/// judge is held to, measured from what the simulator sends (counter increases over the
/// 20 minutes after the deploy, per version).
#[cfg(test)]
mod ground_truth {
    use super::*;

    /// Per version: (requests, errors, histogram buckets, CPU seconds, memory first/last).
    #[derive(Debug, Default, Clone)]
    struct Totals {
        requests: f64,
        errors: f64,
        buckets: [f64; 12],
        cpu: f64,
        mem_first: f64,
        mem_last: f64,
        pods: f64,
    }

    fn totals(svc: Service, from: i64, to: i64) -> HashMap<String, Totals> {
        let mut feed = Feed::one(svc, 5 * SEC);
        // Series id -> (labels, value at `from` or first after, newest value).
        let mut first: HashMap<Vec<(String, String)>, f64> = HashMap::new();
        let mut last: HashMap<Vec<(String, String)>, f64> = HashMap::new();
        while feed.t < to {
            let push = feed.next_push();
            for req in push.requests {
                for ts in req.timeseries {
                    let s = ts.samples[0];
                    if s.timestamp < from || s.value.is_nan() {
                        continue;
                    }
                    let key: Vec<(String, String)> = ts
                        .labels
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect();
                    first.entry(key.clone()).or_insert(s.value);
                    last.insert(key, s.value);
                }
            }
        }
        let mut out: HashMap<String, Totals> = HashMap::new();
        for (key, newest) in &last {
            let get = |n: &str| {
                key.iter()
                    .find(|l| l.0 == n)
                    .map(|l| l.1.as_str())
                    .unwrap_or("")
            };
            let t = out.entry(get("version").to_string()).or_default();
            let inc = newest - first[key];
            match get("__name__") {
                "http_requests_total" => {
                    t.requests += inc;
                    if get("code") == "500" {
                        t.errors += inc;
                    }
                }
                "http_request_duration_seconds_bucket" => {
                    let le = get("le");
                    let i = BUCKETS
                        .iter()
                        .position(|b| format_le(*b) == le)
                        .unwrap_or(11);
                    t.buckets[i] += inc;
                }
                "process_cpu_seconds_total" => {
                    t.cpu += inc;
                    t.pods += 1.0;
                }
                "process_resident_memory_bytes" => {
                    t.mem_first += first[key];
                    t.mem_last += newest;
                }
                _ => {}
            }
        }
        out
    }

    /// A quantile from cumulative bucket counts, interpolated as Prometheus does.
    fn quantile(q: f64, cum: &[f64; 12]) -> f64 {
        let total = cum[11];
        let rank = q * total;
        let i = cum.iter().position(|&c| c >= rank).unwrap();
        let (lo, lo_c) = if i == 0 {
            (0.0, 0.0)
        } else {
            (BUCKETS[i - 1], cum[i - 1])
        };
        lo + (BUCKETS[i.min(10)] - lo) * (rank - lo_c) / (cum[i] - lo_c)
    }

    #[test]
    fn injected_effects_have_the_intended_size() {
        let t = EPOCH + 30 * MIN;
        let on =
            |signal, factor| Effect::step(Who::Version("v2".into()), signal, factor, t, i64::MAX);
        let svc = Service::new("truth", 77, 3)
            .canary("v2", t, 1)
            .effect(on(Signal::Errors, 3.0))
            .effect(on(Signal::Latency, 2.0))
            .effect(on(Signal::Cpu, 1.6))
            .effect(on(Signal::LeakBytesPerSec, 2.0 * MIB));
        let tot = totals(svc, t + MIN, t + 21 * MIN);
        let (c, b) = (&tot["v2"], &tot["v1"]);
        let er = |x: &Totals| x.errors / x.requests;
        eprintln!(
            "canary: {:.0} req, errors {:.4}; baseline {:.0} req, errors {:.4}",
            c.requests,
            er(c),
            b.requests,
            er(b)
        );
        assert!((er(c) / er(b) - 3.0).abs() < 0.4, "errors ×3");
        assert!((c.requests / c.pods) / (b.requests / b.pods) > 0.95);
        assert!((c.requests / c.pods) / (b.requests / b.pods) < 1.05);
        // Bucket series are cumulative already.
        let cum = |x: &Totals| x.buckets;
        let (p99c, p99b) = (quantile(0.99, &cum(c)), quantile(0.99, &cum(b)));
        let (p50c, p50b) = (quantile(0.5, &cum(c)), quantile(0.5, &cum(b)));
        eprintln!("p99 {p99c:.3} vs {p99b:.3}; p50 {p50c:.4} vs {p50b:.4}");
        assert!(p99c / p99b > 1.7 && p99c / p99b < 2.3, "p99 ×2 (bucketed)");
        assert!(p50c / p50b > 1.7 && p50c / p50b < 2.3, "p50 ×2 (bucketed)");
        let cpu_ratio = (c.cpu / c.pods) / (b.cpu / b.pods);
        eprintln!("cpu per pod ×{cpu_ratio:.3}");
        assert!((cpu_ratio - 1.6).abs() < 0.05, "cpu ×1.6");
        let leak = (c.mem_last - c.mem_first) / c.pods / (20.0 * 60.0) / MIB;
        let flat = (b.mem_last - b.mem_first) / b.pods / (20.0 * 60.0) / MIB;
        eprintln!("memory growth {leak:.3} MiB/s vs {flat:.3} MiB/s");
        assert!(
            (leak - 2.0).abs() < 0.05 && flat.abs() < 0.01,
            "leak 2 MiB/s"
        );
    }
}
