//! The detection benchmark: randomized deploy scenarios (`deploywatch::demo::world`, 22
//! families) played through the same decode → store → judge path the server runs
//! (`App::push`, in process, Remote-Write 1.0 bodies as Prometheus sends them), registered
//! through the deploy API or left to detection, and judged beside three reference judges
//! (benches/detection/reference.rs: Kayenta-style Mann-Whitney, Argo Rollouts-style
//! threshold analysis, static alert rules with `for: 5m`) on the very same samples.
//!
//! ```sh
//! cargo bench --bench detection                       # the held-out scorecard (308 scenarios)
//! cargo bench --bench detection -- --set tuning       # the seeds the judge was tuned on
//! cargo bench --bench detection -- --family errors_x2 --seeds 1001..1003 --verbose
//! cargo bench --bench detection -- --tsv /tmp/detection.tsv   # one line per scenario and judge
//! cargo bench --bench detection -- --family crash_loop --seeds 1..1 --timeline
//! cargo bench --bench detection -- --histograms native --no-reference   # latency as native histograms
//! ```
//!
//! Seeds: tuning 1–4 and 1001–1014 … 28001–28014 of every family, held out 29001–29014
//! (never looked at while tuning).
//! docs/detection.md explains the families, the scoring and the latest scorecard.

#[path = "detection/reference.rs"]
#[allow(dead_code)]
mod reference;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use deploywatch::demo::sim::Native;
use deploywatch::demo::world::{self, generate, Family, Kind, Scenario};

/// Seeds looked at while tuning: 1–4 from the start, then each held-out set once its
/// scorecard had been read (docs/detection.md): 1001–1014, 2001–2014, 3001–3014, 4001–4014,
/// 5001–5014, 6001–6014, 7001–7014, 8001–8014, 9001–9014, 10001–10014, 11001–11014, 12001–12014,
/// 13001–13014, 14001–14014, 15001–15014, 16001–16014, 17001–17014, 18001–18014,
/// 19001–19014, 20001–20014, 21001–21014, 22001–22014, 23001–23014, 24001–24014,
/// 25001–25014, 26001–26014, 27001–27014, 28001–28014.
const TUNING: [std::ops::RangeInclusive<u64>; 29] = [
    1..=4,
    1001..=1014,
    2001..=2014,
    3001..=3014,
    4001..=4014,
    5001..=5014,
    6001..=6014,
    7001..=7014,
    8001..=8014,
    9001..=9014,
    10001..=10014,
    11001..=11014,
    12001..=12014,
    13001..=13014,
    14001..=14014,
    15001..=15014,
    16001..=16014,
    17001..=17014,
    18001..=18014,
    19001..=19014,
    20001..=20014,
    21001..=21014,
    22001..=22014,
    23001..=23014,
    24001..=24014,
    25001..=25014,
    26001..=26014,
    27001..=27014,
    28001..=28014,
];
const HELD_OUT: std::ops::RangeInclusive<u64> = 29001..=29014;

/// The metrics the reference judges read (the others are not recorded).
const RECORDED: [&str; 6] = [
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "kube_pod_container_status_restarts_total",
    "http_request_duration_seconds_count",
];

struct Args {
    seeds: Vec<u64>,
    set: &'static str,
    families: Vec<Family>,
    reference: bool,
    threads: usize,
    verbose: bool,
    /// With --verbose: each deploy's timeline too.
    timeline: bool,
    tsv: Option<String>,
    /// `--histograms native|mixed`: every pod (or the new version's) exposes latency as a
    /// native histogram instead of classic buckets.
    histograms: &'static str,
}

fn args() -> Args {
    let mut a = Args {
        seeds: HELD_OUT.collect(),
        set: "held-out",
        families: Family::ALL.to_vec(),
        reference: true,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        verbose: false,
        timeline: false,
        tsv: None,
        histograms: "classic",
    };
    let mut families = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--set" => match it.next().as_deref() {
                Some("tuning") => {
                    a.seeds = TUNING.into_iter().flatten().collect();
                    a.set = "tuning";
                }
                Some("held-out") => {}
                Some("all") => {
                    a.seeds = TUNING.into_iter().flatten().chain(HELD_OUT).collect();
                    a.set = "tuning + held-out";
                }
                other => panic!("--set tuning|held-out|all, not {other:?}"),
            },
            "--family" => {
                let name = it.next().unwrap_or_default();
                families
                    .push(Family::from_name(&name).unwrap_or_else(|| panic!("no family {name:?}")));
            }
            "--seeds" => {
                let s = it.next().unwrap_or_default();
                let (lo, hi) = s.split_once("..").unwrap_or((&s, &s));
                a.seeds = (lo.parse().unwrap()..=hi.parse().unwrap()).collect();
                a.set = "chosen seeds";
            }
            "--no-reference" => a.reference = false,
            "--threads" => a.threads = it.next().unwrap().parse().unwrap(),
            "--verbose" => a.verbose = true,
            "--timeline" => {
                a.verbose = true;
                a.timeline = true;
            }
            "--tsv" => a.tsv = it.next(),
            "--histograms" => {
                a.histograms = match it.next().as_deref() {
                    Some("classic") => "classic",
                    Some("native") => "native",
                    Some("mixed") => "mixed",
                    other => panic!("--histograms classic|native|mixed, not {other:?}"),
                }
            }
            _ => {} // cargo's --bench and the like
        }
    }
    if !families.is_empty() {
        a.families = families;
    }
    a
}

/// When a judge first asked for a pause (or worse) and a rollback.
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    pause: Option<i64>,
    rollback: Option<i64>,
    /// deploywatch only: when the deploy first passed.
    pass: Option<i64>,
}

struct Played {
    scenario: Scenario,
    /// deploywatch first, then the reference judges.
    outcomes: Vec<Outcome>,
    /// deploywatch's verdict and reason at the end.
    last: String,
}

/// Plays one scenario through deploywatch (`world::play`); returns its outcome, its last
/// verdict (and timeline) and, with `record`, the series the reference judges read.
fn play(sc: &Scenario, record: bool, timeline: bool) -> (Outcome, String, Vec<reference::Series>) {
    let dir = tempfile::tempdir().unwrap();
    let mut series: Vec<reference::Series> = Vec::new();
    let mut index: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    let judged = world::play(sc, dir.path(), |req| {
        if !record {
            return;
        }
        for ts in &req.timeseries {
            let metric = ts.labels.iter().find(|l| l.name == "__name__");
            if !metric.is_some_and(|m| RECORDED.contains(&m.value.as_str())) {
                continue;
            }
            let key: Vec<(String, String)> = ts
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            let i = *index.entry(key.clone()).or_insert_with(|| {
                series.push(reference::Series {
                    labels: key,
                    points: Vec::new(),
                });
                series.len() - 1
            });
            series[i]
                .points
                .extend(ts.samples.iter().map(|s| (s.timestamp, s.value)));
        }
    });
    let out = Outcome {
        pause: judged.pause,
        rollback: judged.rollback,
        pass: judged.pass,
    };
    let last = if timeline {
        format!("{}\n{}", judged.last, judged.timeline)
    } else {
        judged.last
    };
    (out, last, series)
}

fn run(sc: Scenario, with_reference: bool, timeline: bool) -> Played {
    let (dw, last, series) = play(&sc, with_reference, timeline);
    let mut outcomes = vec![dw];
    if with_reference {
        let d = reference::Deploy {
            job: sc.service.name.clone(),
            new_version: sc.version.clone(),
            old_version: sc.old_version.clone(),
            canary: matches!(sc.kind, Kind::Canary),
            start: sc.deploy_at,
            end: sc.end,
        };
        for j in reference::all() {
            let o = j.judge(&series, &d);
            outcomes.push(Outcome {
                pause: o.first_pause.or(o.first_rollback),
                rollback: o.first_rollback,
                pass: None,
            });
        }
    }
    Played {
        scenario: sc,
        outcomes,
        last,
    }
}

/// A judge's figures over a set of scenarios.
#[derive(Default)]
struct Score {
    regressions: usize,
    paused: usize,
    rolled_back: usize,
    delays: Vec<f64>,
    rollback_delays: Vec<f64>,
    clean: usize,
    false_pause: usize,
    false_rollback: usize,
}

impl Score {
    fn add(&mut self, sc: &Scenario, o: &Outcome) {
        match sc.onset {
            Some(onset) => {
                self.regressions += 1;
                // A pause before a delayed regression began is a false alarm, not a catch.
                if let Some(p) = o.pause.filter(|p| *p >= onset) {
                    self.paused += 1;
                    self.delays.push((p - onset) as f64 / 1000.0);
                }
                if let Some(r) = o.rollback.filter(|r| *r >= onset) {
                    self.rolled_back += 1;
                    self.rollback_delays.push((r - onset) as f64 / 1000.0);
                }
            }
            None => {
                self.clean += 1;
                self.false_pause += usize::from(o.pause.is_some());
                self.false_rollback += usize::from(o.rollback.is_some());
            }
        }
    }

    fn pct(a: usize, n: usize) -> String {
        if n == 0 {
            "-".into()
        } else {
            format!("{:.0}%", 100.0 * a as f64 / n as f64)
        }
    }

    fn quantile(v: &[f64], q: f64) -> String {
        if v.is_empty() {
            return "-".into();
        }
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        format!("{:.0}s", v[i])
    }

    /// `pause% rollback% median p90` for regressions, `false-pause% false-rollback%` else.
    fn cell(&self) -> String {
        if self.regressions > 0 {
            format!(
                "{:>4} {:>4} {:>5} {:>5}",
                Score::pct(self.paused, self.regressions),
                Score::pct(self.rolled_back, self.regressions),
                Score::quantile(&self.delays, 0.5),
                Score::quantile(&self.delays, 0.9)
            )
        } else {
            format!(
                "{:>4} {:>4} {:>5} {:>5}",
                Score::pct(self.false_pause, self.clean),
                Score::pct(self.false_rollback, self.clean),
                "",
                ""
            )
        }
    }
}

fn main() {
    let a = args();
    let names: Vec<&str> = if a.reference {
        std::iter::once("deploywatch")
            .chain(reference::all().iter().map(|j| j.name()))
            .collect()
    } else {
        vec!["deploywatch"]
    };
    let jobs: Vec<(Family, u64)> = a
        .families
        .iter()
        .flat_map(|f| a.seeds.iter().map(move |s| (*f, *s)))
        .collect();
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let played: Mutex<Vec<Played>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..a.threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(family, seed)) = jobs.get(i) else {
                    break;
                };
                let mut sc = generate(family, seed);
                sc.service.native = match a.histograms {
                    "native" => Native::All,
                    "mixed" => Native::Version(sc.version.clone()),
                    _ => Native::Off,
                };
                let p = run(sc, a.reference, a.timeline);
                if a.verbose {
                    let o = &p.outcomes[0];
                    let rel = |t: Option<i64>| {
                        t.map(|t| format!("{:+}s", (t - p.scenario.deploy_at) / 1000))
                            .unwrap_or_else(|| "-".into())
                    };
                    eprintln!(
                        "{:<28} pause {:>6} rollback {:>6} | {} | {}",
                        p.scenario.name(),
                        rel(o.pause),
                        rel(o.rollback),
                        p.scenario.summary,
                        p.last
                    );
                }
                played.lock().unwrap().push(p);
            });
        }
    });
    let mut played = played.into_inner().unwrap();
    played.sort_by_key(|p| (p.scenario.family, p.scenario.seed));

    if let Some(path) = &a.tsv {
        let mut f = std::fs::File::create(path).unwrap();
        writeln!(f, "family\tseed\tjudge\tregression\tdetectable\tregistered\tkind\tpause_s\trollback_s\tsummary\tlast\tpass_s\tearliest_s").unwrap();
        for p in &played {
            let sc = &p.scenario;
            let origin = sc.onset.unwrap_or(sc.deploy_at);
            for (j, o) in p.outcomes.iter().enumerate() {
                let rel = |t: Option<i64>| {
                    t.map(|t| ((t - origin) / 1000).to_string())
                        .unwrap_or_default()
                };
                writeln!(
                    f,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    sc.family.name(),
                    sc.seed,
                    names[j],
                    sc.onset.is_some(),
                    sc.detectable,
                    sc.registered,
                    if matches!(sc.kind, Kind::Canary) {
                        "canary"
                    } else {
                        "rolling"
                    },
                    rel(o.pause),
                    rel(o.rollback),
                    sc.summary,
                    if j == 0 { p.last.as_str() } else { "" },
                    rel(o.pass),
                    world::earliest_pause(sc)
                        .map(|ms| (ms / 1000).to_string())
                        .unwrap_or_default()
                )
                .unwrap();
            }
        }
    }

    println!(
        "deploywatch detection benchmark: {} scenarios ({} seeds {:?}..{:?} × {} families), {:.0} s",
        played.len(),
        a.set,
        a.seeds.first().unwrap(),
        a.seeds.last().unwrap(),
        a.families.len(),
        started.elapsed().as_secs_f64()
    );
    println!("regressions: pause-or-worse recall, rollback recall, median and p90 delay to the first pause from onset;");
    println!("not regressions: false pause and false rollback rates. Scenarios an oracle could not detect are left out of the regression rows (n counts the rest).\n");
    print!("{:<24} {:>5}", "family", "n");
    for n in &names {
        print!(" | {:^22}", n);
    }
    println!();
    let mut totals: Vec<[Score; 5]> = names.iter().map(|_| Default::default()).collect();
    for f in &a.families {
        let rows: Vec<&Played> = played
            .iter()
            .filter(|p| p.scenario.family == *f && p.scenario.detectable)
            .collect();
        let all = played.iter().filter(|p| p.scenario.family == *f).count();
        let n = if all == rows.len() {
            format!("{all}")
        } else {
            format!("{}/{all}", rows.len())
        };
        print!("{:<24} {:>5}", f.name(), n);
        for (j, total) in totals.iter_mut().enumerate() {
            let mut s = Score::default();
            for p in &rows {
                s.add(&p.scenario, &p.outcomes[j]);
                total[0].add(&p.scenario, &p.outcomes[j]);
                let k = if p.scenario.registered { 1 } else { 2 };
                total[k].add(&p.scenario, &p.outcomes[j]);
                let k = if matches!(p.scenario.kind, Kind::Canary) {
                    3
                } else {
                    4
                };
                total[k].add(&p.scenario, &p.outcomes[j]);
            }
            print!(" | {}", s.cell());
        }
        println!();
    }
    println!();
    for (k, label) in ["all", "registered", "detected", "canary", "rolling"]
        .iter()
        .enumerate()
    {
        println!("{label}:");
        for (j, n) in names.iter().enumerate() {
            let s = &totals[j][k];
            println!(
                "  {:<13} regressions {:>3}: pause {:>4}  rollback {:>4}  delay median {:>5} p90 {:>5} | clean {:>3}: false pause {:>4}  false rollback {:>4}",
                n,
                s.regressions,
                Score::pct(s.paused, s.regressions),
                Score::pct(s.rolled_back, s.regressions),
                Score::quantile(&s.delays, 0.5),
                Score::quantile(&s.delays, 0.9),
                s.clean,
                Score::pct(s.false_pause, s.clean),
                Score::pct(s.false_rollback, s.clean),
            );
        }
    }
    // How soon any judge could pause: the delay targets beside what the world allows.
    let mut bound: Vec<f64> = Vec::new();
    let mut by_family: Vec<(&str, Vec<f64>)> = Vec::new();
    for f in &a.families {
        let v: Vec<f64> = played
            .iter()
            .filter(|p| p.scenario.family == *f && p.scenario.detectable)
            .filter_map(|p| world::earliest_pause(&p.scenario))
            .map(|ms| ms as f64 / 1000.0)
            .collect();
        if !v.is_empty() {
            bound.extend(&v);
            by_family.push((f.name(), v));
        }
    }
    if !bound.is_empty() {
        let within = |s: f64| bound.iter().filter(|x| **x <= s).count();
        println!(
            "\nthe earliest any judge could pause (world::earliest_pause: knows the rates, ignores noise), {} regressions: median {}, p90 {}; within 60 s {} ({}), within 180 s {} ({})",
            bound.len(),
            Score::quantile(&bound, 0.5),
            Score::quantile(&bound, 0.9),
            within(60.0),
            Score::pct(within(60.0), bound.len()),
            within(180.0),
            Score::pct(within(180.0), bound.len()),
        );
        for (name, v) in &by_family {
            println!(
                "  {name:<24} {:>3}: median {:>5}, p90 {:>5}",
                v.len(),
                Score::quantile(v, 0.5),
                Score::quantile(v, 0.9)
            );
        }
    }
    // How long a clean canary takes to pass, by traffic per pod (for sizing an analysis).
    println!("\ndeploywatch's time to pass, clean canaries and clean rollouts (from the deploy's start):");
    for (label, lo, hi) in [
        ("< 1 req/s per pod", 0.0, 1.0),
        ("1-5 req/s per pod", 1.0, 5.0),
        (">= 5 req/s per pod", 5.0, f64::INFINITY),
    ] {
        let mut times = Vec::new();
        let mut n = 0;
        for p in played.iter().filter(|p| {
            matches!(
                p.scenario.family,
                Family::CleanCanary | Family::CleanRolling | Family::LowTrafficClean
            )
        }) {
            let sc = &p.scenario;
            let pods = sc
                .service
                .pods
                .iter()
                .filter(|x| x.version == sc.old_version)
                .count() as f64;
            let per_pod = sc.service.rps / pods.max(1.0);
            if per_pod < lo || per_pod >= hi {
                continue;
            }
            n += 1;
            if let Some(t) = p.outcomes[0].pass {
                times.push((t - sc.deploy_at) as f64 / 1000.0);
            }
        }
        println!(
            "  {label:<20} {:>3} deploys: passed {:>4} within the 20 minutes, median {:>5}, p90 {:>5}",
            n,
            Score::pct(times.len(), n),
            Score::quantile(&times, 0.5),
            Score::quantile(&times, 0.9)
        );
    }
    // A pass is what lets a rollout controller promote: a pass given to a regression that
    // was already running, before any pause, promotes a bad version.
    let mut promoted: Vec<(&str, usize, usize)> = Vec::new();
    for f in &a.families {
        let rows = played
            .iter()
            .filter(|p| p.scenario.family == *f && p.scenario.detectable);
        let (mut n, mut bad) = (0, 0);
        for p in rows {
            let Some(onset) = p.scenario.onset else {
                continue;
            };
            n += 1;
            let o = &p.outcomes[0];
            if o.pass
                .is_some_and(|t| t >= onset && o.pause.is_none_or(|q| q > t))
            {
                bad += 1;
            }
        }
        if n > 0 {
            promoted.push((f.name(), bad, n));
        }
    }
    let (bad, n) = promoted
        .iter()
        .fold((0, 0), |(b, m), (_, x, y)| (b + x, m + y));
    println!(
        "\ndeploywatch's passes of running regressions (a pass after the onset, before any pause): {} of {} ({})",
        bad,
        n,
        Score::pct(bad, n)
    );
    for (name, bad, n) in promoted.iter().filter(|(_, b, _)| *b > 0) {
        println!("  {name:<24} {bad:>3} of {n:>3}");
    }
    let undetectable: Vec<String> = played
        .iter()
        .filter(|p| !p.scenario.detectable)
        .map(|p| p.scenario.name())
        .collect();
    if !undetectable.is_empty() {
        println!(
            "\nleft out as undetectable in principle ({}): {}",
            undetectable.len(),
            undetectable.join(" ")
        );
    }
    // The worst of deploywatch, for whoever tunes it next.
    println!("\ndeploywatch's misses and false alarms:");
    for p in &played {
        let sc = &p.scenario;
        let o = &p.outcomes[0];
        let bad = match sc.onset {
            Some(onset) => sc.detectable && o.pause.is_none_or(|t| t < onset),
            None => o.pause.is_some(),
        };
        if bad {
            println!("  {:<28} {} — {}", sc.name(), sc.summary, p.last);
        }
    }
}
