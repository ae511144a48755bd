//! Decode and decode+ingest throughput on Prometheus-shaped RW 1.0 requests: 2,000
//! single-sample series per request, 8 kube-like labels, into a store holding 100 k active
//! series. Run: `cargo bench --bench ingest`. Samples/s per core = 2,000 / time per iteration.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use deploywatch::ingest::{DecodeLimits, Decoder, Protocol};
use deploywatch::store::{IngestScratch, Store, StoreConfig};

mod common;
use common::{labels, request, PER_REQUEST, SERIES};

fn store() -> Store {
    Store::new(StoreConfig {
        service_label: "job".into(),
        version_label: "version".into(),
        retention_ms: 2 * 3_600_000,
        max_active_series: 10_000_000,
        max_series_per_service: 10_000_000,
        max_samples_per_series: usize::MAX,
    })
}

fn bench(c: &mut Criterion) {
    let all: Vec<_> = (0..SERIES).map(labels).collect();
    let limits = DecodeLimits::default();
    let mut g = c.benchmark_group("rw1");
    g.throughput(Throughput::Elements(PER_REQUEST as u64));

    let body = request(&all, 0, 1_000_000);
    let mut decoder = Decoder::default();
    g.bench_function("decode_2000", |b| {
        b.iter(|| {
            decoder
                .decode(Protocol::V1, &body, &limits)
                .unwrap()
                .sample_count()
        })
    });

    // A store with 100 k active series; each iteration appends the next scrape's samples.
    let store = store();
    let mut scratch = IngestScratch::default();
    let rounds = SERIES / PER_REQUEST;
    for r in 0..rounds {
        let body = request(&all, r, 1_000_000);
        let batch = decoder.decode(Protocol::V1, &body, &limits).unwrap();
        store.ingest(batch, &mut scratch).unwrap();
    }
    assert_eq!(store.active_series(), SERIES);
    let mut n = 0usize;
    g.bench_function("decode_ingest_2000_at_100k_series", |b| {
        b.iter_batched(
            || {
                n += 1;
                request(
                    &all,
                    n % rounds,
                    1_000_000 + (n / rounds) as i64 * 15_000 + 15_000,
                )
            },
            |body| {
                let batch = decoder.decode(Protocol::V1, &body, &limits).unwrap();
                let o = store.ingest(batch, &mut scratch).unwrap();
                assert_eq!(o.samples_appended, PER_REQUEST as u64);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
