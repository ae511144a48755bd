//! Native histograms in the store: bytes per sample held (`store::hist::HistRing`) beside
//! the same observations kept as a classic histogram (12 `_bucket` series, `_sum` and
//! `_count` in float rings), and the time to append one.
//!
//! ```sh
//! cargo bench --bench native
//! ```
//!
//! Each series is one pod's `http_request_duration_seconds` scraped every 15 s for 2 hours
//! (480 samples): lognormal latencies (median 15–120 ms, σ 0.3–0.7) at 0.2–50 requests/s,
//! counted at schema 3 (client_golang's default resolution) and at the Go client's default
//! buckets, with 2–50 ms scrape jitter.

use std::time::Instant;

use deploywatch::demo::sim::Rng;
use deploywatch::ingest::Bucket;
use deploywatch::store::{HistRing, NativeHistogram, RingBuffer};

const SERIES: usize = 400;
const SAMPLES: usize = 480;
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn main() {
    let mut rng = Rng::new(17);
    let (mut native_bytes, mut classic_bytes, mut native_heap) = (0usize, 0usize, 0usize);
    let (mut buckets_held, mut pushes) = (0usize, 0usize);
    let mut push_ns = Vec::new();
    for _ in 0..SERIES {
        let median = (rng.f64() * (120f64 / 15.0).ln()).exp() * 0.015;
        let sigma = 0.3 + 0.4 * rng.f64();
        let rate = (rng.f64() * (50f64 / 0.2).ln()).exp() * 0.2;
        let jitter = 2 + (rng.f64() * 48.0) as i64;
        let mut h = NativeHistogram {
            schema: 3,
            zero_threshold: (-128f64).exp2(),
            ..Default::default()
        };
        let mut classic = [0u64; 12];
        let mut ring = HistRing::new();
        let mut floats: Vec<RingBuffer> = (0..14).map(|_| RingBuffer::new()).collect();
        let mut ts = 1_700_000_000_000i64;
        let mut scrapes: Vec<(i64, NativeHistogram)> = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            ts += 15_000 + (rng.f64() * jitter as f64) as i64 - jitter / 2;
            for _ in 0..rng.poisson(rate * 15.0) {
                let lat = rng.lognormal(median, sigma);
                let idx = (lat.log2() * 8.0).ceil() as i32;
                match h.positive.binary_search_by_key(&idx, |b| b.index) {
                    Ok(k) => h.positive[k].count += 1.0,
                    Err(k) => h.positive.insert(
                        k,
                        Bucket {
                            index: idx,
                            count: 1.0,
                        },
                    ),
                }
                h.count += 1.0;
                h.sum += lat;
                classic[BUCKETS.iter().position(|&b| lat <= b).unwrap_or(11)] += 1;
            }
            scrapes.push((ts, h.clone()));
            let mut cum = 0;
            for (k, c) in classic.iter().enumerate() {
                cum += c;
                floats[k].push(ts, cum as f64, i64::MAX);
            }
            floats[12].push(ts, h.sum, i64::MAX);
            floats[13].push(ts, h.count, i64::MAX);
        }
        let started = Instant::now();
        for (ts, h) in &scrapes {
            ring.push(*ts, h, i64::MAX);
        }
        push_ns.push(started.elapsed().as_nanos() as f64 / SAMPLES as f64);
        pushes += SAMPLES;
        buckets_held += h.positive.len();
        native_bytes += ring.encoded_bytes();
        native_heap += ring.heap_bytes();
        classic_bytes += floats.iter().map(|f| f.heap_bytes()).sum::<usize>();
    }
    push_ns.sort_by(f64::total_cmp);
    let samples = (SERIES * SAMPLES) as f64;
    println!(
        "native histograms: {SERIES} series x {SAMPLES} samples (15 s, 2 h), {:.1} populated buckets per series at the end",
        buckets_held as f64 / SERIES as f64
    );
    println!(
        "  HistRing: {:.1} B per histogram sample encoded, {:.1} B with the ring's own heap",
        native_bytes as f64 / samples,
        native_heap as f64 / samples
    );
    println!(
        "  the same observations as a classic histogram (12 _bucket + _sum + _count float rings): {:.1} B per scrape",
        classic_bytes as f64 / samples
    );
    println!(
        "  append: median {:.0} ns per histogram sample over the series ({pushes} appends)",
        push_ns[push_ns.len() / 2]
    );
}
