//! A fixed-work driver for the ingest hot path, for instruction counting (callgrind), `perf`
//! and memory accounting. Not a criterion bench (`harness = false`, no statistics): it does
//! exactly the work it is told, so `valgrind --tool=callgrind` counts are deterministic.
//!
//! ```sh
//! cargo bench --bench hotpath --no-run            # prints the binary's path
//! B=$(ls -t target/release/deps/hotpath-* | grep -v '\.d$' | head -1)
//! $B decode 200            # decode one 2,000-series RW 1.0 request 200 times
//! $B ingest 200            # decode + ingest 200 requests into a store at 100 k series
//! $B ingest 200 300        # the same with every series 300 scrapes old (closed chunks)
//! $B memory [JITTER_MS]    # 100 k series × 2 h of 15 s samples: bytes per series / sample
//! $B latency               # random 8-byte loads over 1–128 MiB: independent vs. dependent
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*hotpath*measured*' $B ingest 50
//! ```
//!
//! Only the `measured` function is counted by that callgrind line; setup (building the
//! requests and filling the store to 100 k series) is not. Instructions per sample =
//! `Ir / (iterations × 2000)`.

use std::hint::black_box;
use std::time::Instant;

use deploywatch::ingest::{Batch, DecodeLimits, Decoder, LabelRef, Protocol, Sample, SeriesEntry};
use deploywatch::store::{IngestScratch, Store, StoreConfig};

mod common;
use common::{labels, request, PER_REQUEST, SERIES};

fn store(retention_ms: i64) -> Store {
    Store::new(StoreConfig {
        service_label: "job".into(),
        version_label: "version".into(),
        retention_ms,
        max_active_series: 10_000_000,
        max_series_per_service: 10_000_000,
        max_samples_per_series: usize::MAX,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn vm_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`): unlike wall
/// clock, it excludes time spent waiting for a CPU on a loaded machine.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The counted work: decode (and, with a store, ingest) each body in turn. Returns the
/// per-iteration wall-clock durations in seconds.
#[inline(never)]
fn measured(
    decoder: &mut Decoder,
    store: Option<(&Store, &mut IngestScratch)>,
    bodies: &[Vec<u8>],
    iterations: usize,
    limits: &DecodeLimits,
) -> Vec<f64> {
    let mut times = Vec::with_capacity(iterations);
    match store {
        None => {
            for i in 0..iterations {
                let t = Instant::now();
                let b = decoder
                    .decode(Protocol::V1, &bodies[i % bodies.len()], limits)
                    .unwrap();
                black_box(b.sample_count());
                times.push(t.elapsed().as_secs_f64());
            }
        }
        Some((store, scratch)) => {
            for body in bodies.iter().take(iterations) {
                let t = Instant::now();
                let b = decoder.decode(Protocol::V1, body, limits).unwrap();
                let o = store.ingest(b, scratch).unwrap();
                assert_eq!(o.samples_appended, PER_REQUEST as u64);
                times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    times
}

fn report(what: &str, mut times: Vec<f64>, cpu_ns: u64) {
    let n = times.len();
    println!(
        "{what}: on-CPU time {:.0} ns/sample = {:.2} M samples per CPU-second",
        cpu_ns as f64 / (n * PER_REQUEST) as f64,
        (n * PER_REQUEST) as f64 / cpu_ns as f64 * 1e3
    );
    let total: f64 = times.iter().sum();
    let med = median(&mut times);
    println!(
        "{what}: {n} iterations, median {:.1} µs / 2000 samples = {:.0} ns/sample = {:.2} M samples/s; mean {:.1} µs; loadavg {}",
        med * 1e6,
        med * 1e9 / PER_REQUEST as f64,
        PER_REQUEST as f64 / med / 1e6,
        total / n as f64 * 1e6,
        loadavg()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; ignore flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("ingest");
    let iterations: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let limits = DecodeLimits::default();
    let mut decoder = Decoder::default();
    match mode {
        "decode" => {
            let all: Vec<_> = (0..PER_REQUEST).map(labels).collect();
            let body = request(&all, 0, 1_000_000);
            let cpu = thread_cpu_ns();
            let times = measured(&mut decoder, None, &[body], iterations, &limits);
            report("decode", times, thread_cpu_ns() - cpu);
        }
        "ingest" => {
            let all: Vec<_> = (0..SERIES).map(labels).collect();
            let store = store(2 * 3_600_000);
            let mut scratch = IngestScratch::default();
            // `ingest N AGE`: every series already holds AGE scrapes (15 s apart) before the
            // measured ones, e.g. 300 = 75 min: a closed chunk and a part-filled open one.
            let age: i64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
            if age > 0 {
                let mut batches = hand_built_batches();
                for k in 0..age {
                    for b in &mut batches {
                        for (j, s) in b.samples.iter_mut().enumerate() {
                            *s = Sample {
                                ts: 1_000_000 - (age - k) * 15_000,
                                value: (k * (j as i64 % 7 + 1)) as f64,
                            };
                        }
                        store.ingest(b, &mut scratch).unwrap();
                    }
                }
            }
            let rounds = SERIES / PER_REQUEST;
            for r in 0..rounds {
                let body = request(&all, r, 1_000_000);
                let batch = decoder.decode(Protocol::V1, &body, &limits).unwrap();
                store.ingest(batch, &mut scratch).unwrap();
            }
            assert_eq!(store.active_series(), SERIES);
            // Request n: the next scrape of series block n % 50.
            let bodies: Vec<_> = (1..=iterations)
                .map(|n| {
                    request(
                        &all,
                        n % rounds,
                        1_000_000 + (n / rounds + 1) as i64 * 15_000,
                    )
                })
                .collect();
            let cpu = thread_cpu_ns();
            let times = measured(
                &mut decoder,
                Some((&store, &mut scratch)),
                &bodies,
                iterations,
                &limits,
            );
            let what = if age > 0 {
                format!("decode+ingest at 100k series aged {age} scrapes")
            } else {
                "decode+ingest at 100k series".to_string()
            };
            report(&what, times, thread_cpu_ns() - cpu);
        }
        "memory" => memory(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0)),
        "latency" => latency(),
        other => {
            eprintln!(
                "usage: hotpath decode|ingest [ITERATIONS [AGE]] | hotpath memory [JITTER_MS] | hotpath latency  (got {other:?})"
            );
            std::process::exit(2);
        }
    }
}

/// One hand-built batch per block of 2,000 series (the labels above, parsed; one sample each
/// to be filled in): a store is filled through `Store::ingest` without encoding requests.
fn hand_built_batches() -> Vec<Batch> {
    let mut batches: Vec<Batch> = Vec::new();
    for block in 0..SERIES / PER_REQUEST {
        let mut b = Batch::default();
        for i in block * PER_REQUEST..(block + 1) * PER_REQUEST {
            let start = b.labels.len() as u32;
            for l in labels(i) {
                let n0 = b.buf.len() as u32;
                b.buf.extend_from_slice(l.name.as_bytes());
                let n1 = b.buf.len() as u32;
                b.buf.extend_from_slice(l.value.as_bytes());
                let v1 = b.buf.len() as u32;
                b.labels.push(LabelRef {
                    name: (n0, n1),
                    value: (n1, v1),
                });
            }
            let k = b.samples.len() as u32;
            b.samples.push(Sample { ts: 0, value: 0.0 });
            b.series.push(SeriesEntry {
                labels: start..b.labels.len() as u32,
                samples: k..k + 1,
                histograms: 0..0,
                raw_labels: (0, 0),
                deferred: false,
            });
        }
        batches.push(b);
    }
    batches
}

/// What a cache miss costs on this machine, and how much of it overlapping hides: 2 M random
/// 8-byte loads over arrays of 1–128 MiB, once independent of each other (the core overlaps
/// their misses) and once each address depending on the previous load (one miss at a time).
/// The write path's design follows from the gap between the two (docs/performance.md).
fn latency() {
    let mut rng = Rng(7);
    for mib in [1usize, 4, 16, 64, 128] {
        let n = mib << 17; // u64s
        let a: Vec<u64> = (0..n as u64).collect();
        let idx: Vec<usize> = (0..2_000_000)
            .map(|_| rng.below(n as u64) as usize)
            .collect();
        let t = Instant::now();
        let mut sum = 0u64;
        for &i in &idx {
            sum = sum.wrapping_add(a[i]);
        }
        let independent = t.elapsed().as_nanos() as f64 / idx.len() as f64;
        let t = Instant::now();
        let mut j = 0usize;
        for &i in &idx {
            j = (a[(i + j) % n] & 1) as usize;
        }
        let dependent = t.elapsed().as_nanos() as f64 / idx.len() as f64;
        black_box((sum, j));
        println!(
            "{mib:4} MiB: independent loads {independent:6.1} ns each, dependent {dependent:6.1} ns; loadavg {}",
            loadavg()
        );
    }
}

/// A small deterministic generator (splitmix64, from `deploywatch::rng`).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        deploywatch::rng::splitmix64(&mut self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Fills 100 k series (the labels above) with 2 h of 15 s samples (480 each, 48 M in all)
/// shaped like what they name: request counters, histogram buckets, CPU-seconds counters and
/// resident-memory gauges in 4 KiB pages; each scrape 0–`jitter_ms` ms late (default 0: a
/// regular 15 s series; `memory 3` for Prometheus-like scrape jitter). Reports the resident-set
/// growth per series and per sample, and the store's own heap accounting.
fn memory(jitter_ms: u64) {
    const SAMPLES: usize = 480; // 2 h at 15 s
    let rss0 = vm_rss_kib();
    let store = store(2 * 3_600_000);
    let mut scratch = IngestScratch::default();

    let mut batches = hand_built_batches();
    let batch_bytes: usize = batches
        .iter()
        .map(|b| {
            b.buf.capacity()
                + b.labels.capacity() * std::mem::size_of::<LabelRef>()
                + b.series.capacity() * std::mem::size_of::<SeriesEntry>()
                + b.samples.capacity() * 16
        })
        .sum();

    // Per-series state of the value generators.
    let mut rng = Rng(42);
    let mut value: Vec<f64> = (0..SERIES)
        .map(|i| match i % 4 {
            0 | 1 => rng.below(100_000) as f64,
            2 => rng.below(10_000) as f64 / 100.0,
            _ => (50_000 + rng.below(50_000)) as f64 * 4096.0,
        })
        .collect();
    let rate: Vec<u64> = (0..SERIES).map(|_| 1 + rng.below(200)).collect();
    let t0: i64 = 1_700_000_000_000;
    let offset: Vec<i64> = (0..SERIES).map(|_| rng.below(15_000) as i64).collect();

    let mut fill = |store: &Store, scratch: &mut IngestScratch, k: usize, value: &mut [f64]| {
        for (block, b) in batches.iter_mut().enumerate() {
            for j in 0..PER_REQUEST {
                let i = block * PER_REQUEST + j;
                let v = &mut value[i];
                *v = match i % 4 {
                    // Request counters: Poisson-ish increments around the series' rate.
                    0 => *v + (rate[i] + rng.below(rate[i] / 2 + 1)) as f64,
                    // Buckets: most scrapes leave a bucket unchanged or add a little.
                    1 => {
                        *v + if rng.below(3) == 0 {
                            0.0
                        } else {
                            rng.below(rate[i]) as f64
                        }
                    }
                    // CPU seconds: float counter with 10 ms resolution.
                    2 => ((*v * 100.0).round() + rng.below(150) as f64) / 100.0,
                    // Resident memory: random walk in 4 KiB pages.
                    _ => (*v + (rng.below(33) as f64 - 16.0) * 4096.0).max(4096.0),
                };
                b.samples[j] = Sample {
                    ts: t0 + offset[i] + k as i64 * 15_000 + rng.below(jitter_ms + 1) as i64,
                    value: *v,
                };
            }
            store.ingest(b, scratch).unwrap();
        }
    };

    let rss_batches = vm_rss_kib();
    fill(&store, &mut scratch, 0, &mut value);
    let rss_series = vm_rss_kib();
    assert_eq!(store.active_series(), SERIES);
    let started = Instant::now();
    for k in 1..SAMPLES {
        fill(&store, &mut scratch, k, &mut value);
    }
    let took = started.elapsed().as_secs_f64();
    let rss_full = vm_rss_kib();

    // The store's own accounting.
    let (mut ring_bytes, mut label_bytes, mut samples) = (0usize, 0usize, 0usize);
    for svc in store.services() {
        svc.for_each_series(|s| {
            label_bytes += s.labels.heap_bytes();
            let d = s.data.lock();
            ring_bytes += d.ring.heap_bytes();
            samples += d.ring.len();
        });
    }
    let n = SERIES as f64;
    let per_series_kib = (rss_series - rss_batches) as f64;
    let sample_kib = (rss_full - rss_series) as f64;
    println!(
        "memory: {SERIES} series x {SAMPLES} samples (15 s + 0..={jitter_ms} ms jitter, 2 h), loadavg {}",
        loadavg()
    );
    println!(
        "  RSS: start {rss0} KiB, +request batches {} KiB ({} KiB accounted), +100k series with 1 sample {} KiB, +479 samples each {} KiB, total {} KiB",
        rss_batches - rss0,
        batch_bytes / 1024,
        rss_series - rss_batches,
        rss_full - rss_series,
        rss_full
    );
    println!(
        "  RSS per series (Series, label set, index slot, service list slot, empty ring): {:.0} B",
        per_series_kib * 1024.0 / n
    );
    println!(
        "  RSS per sample after the first: {:.3} B (samples retained: {samples})",
        sample_kib * 1024.0 / (n * (SAMPLES - 1) as f64)
    );
    println!(
        "  RSS per series all in: {:.0} B = {:.3} B/sample over {SAMPLES} samples",
        (rss_full - rss_batches) as f64 * 1024.0 / n,
        (rss_full - rss_batches) as f64 * 1024.0 / (n * SAMPLES as f64)
    );
    println!(
        "  heap accounting: ring buffers {:.3} B/sample ({:.0} B/series), label sets {:.0} B/series, size_of Series {} B",
        ring_bytes as f64 / samples as f64,
        ring_bytes as f64 / n,
        label_bytes as f64 / n,
        std::mem::size_of::<deploywatch::store::Series>()
    );
    println!(
        "  fill rate (ingest of hand-built batches, no decode): {:.2} M samples/s",
        (SERIES * (SAMPLES - 1)) as f64 / took / 1e6
    );
}
