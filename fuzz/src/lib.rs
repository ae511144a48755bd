//! Shared pieces of the deploywatch fuzz targets: the limits they decode under, the
//! invariants every decoded batch and every store ingest must satisfy, and the seed inputs
//! (`seeds::all`, written to `fuzz/seeds/` by this crate's test `seeds_are_current`).

use deploywatch::ingest::{Batch, DecodeError, DecodeLimits, ResetHint};
use deploywatch::proto::prometheus as pb;
use deploywatch::store::{IngestScratch, LabelSet, Store, StoreConfig, STALE_NAN_BITS};

pub mod seeds;

/// Small limits, so that the fuzzer reaches every limit branch with small inputs.
pub fn small_limits() -> DecodeLimits {
    DecodeLimits {
        max_body_bytes: 64 << 10,
        max_series_per_request: 16,
        max_labels_per_series: 8,
        max_label_name_length: 32,
        max_label_value_length: 64,
        max_histogram_buckets: 16,
    }
}

/// The shipped defaults (`examples/deploywatch.yml`): 32 MiB bodies and so on. Cached:
/// `DecodeLimits::default()` parses the embedded config.
pub fn default_limits() -> DecodeLimits {
    static LIMITS: std::sync::OnceLock<DecodeLimits> = std::sync::OnceLock::new();
    LIMITS.get_or_init(DecodeLimits::default).clone()
}

/// Chooses the limits by the low bit of a flags byte.
pub fn limits_for(flags: u8) -> DecodeLimits {
    if flags & 1 == 0 {
        small_limits()
    } else {
        default_limits()
    }
}

/// A fresh store with small series limits (so the over-limit paths are reached too).
pub fn small_store() -> Store {
    Store::new(StoreConfig {
        service_label: "job".into(),
        version_label: "version".into(),
        retention_ms: 2 * 3600 * 1000,
        max_active_series: 12,
        max_series_per_service: 6,
        // Small too, so that trimming a series to its bound is reached.
        max_samples_per_series: 5,
    })
}

/// One decoded series as owned data: labels (name, value) and samples (timestamp, value bits).
pub type OwnedSeries = (Vec<(Vec<u8>, Vec<u8>)>, Vec<(i64, u64)>);

/// Structural invariants of a successfully decoded batch, before labels are parsed on
/// demand: every range lies inside its array, sample ranges partition the samples in order,
/// histogram ranges the histograms and bucket ranges the buckets; histograms are valid.
pub fn check_batch_shape(batch: &Batch) {
    let mut next_sample = 0u32;
    let mut next_histogram = 0u32;
    for s in &batch.series {
        assert!(s.samples.start <= s.samples.end);
        assert_eq!(s.samples.start, next_sample, "sample ranges are contiguous");
        next_sample = s.samples.end;
        assert!(s.histograms.start <= s.histograms.end);
        assert_eq!(
            s.histograms.start, next_histogram,
            "histogram ranges are contiguous"
        );
        next_histogram = s.histograms.end;
        assert!(s.labels.start <= s.labels.end);
        assert!(s.labels.end as usize <= batch.labels.len());
        let (a, b) = s.raw_labels;
        if s.deferred {
            assert!(
                a <= b && b as usize <= batch.buf.len(),
                "raw labels inside the body"
            );
        }
    }
    assert_eq!(
        next_sample as usize,
        batch.samples.len(),
        "every sample belongs to a series"
    );
    assert_eq!(
        next_histogram as usize,
        batch.histograms.len(),
        "every histogram belongs to a series"
    );
    let mut next_bucket = 0u32;
    for h in &batch.histograms {
        assert!((-4..=8).contains(&h.schema), "an exponential schema");
        assert!(h.zero_threshold >= 0.0 && h.zero_threshold.is_finite());
        let stale = h.sum.to_bits() == STALE_NAN_BITS;
        for (a, b) in [h.negative, h.positive] {
            assert_eq!(a, next_bucket, "bucket ranges are contiguous");
            assert!(a <= b);
            next_bucket = b;
            let buckets = batch.histogram_buckets((a, b));
            assert!(
                buckets.windows(2).all(|w| w[0].index < w[1].index),
                "bucket indexes ascend"
            );
            if !stale {
                assert!(buckets
                    .iter()
                    .all(|k| k.count >= 0.0 && k.count.is_finite()));
            }
        }
        if !stale {
            for c in [h.count, h.zero_count] {
                assert!(c >= 0.0 && c.is_finite());
            }
        }
    }
    assert_eq!(
        next_bucket as usize,
        batch.buckets.len(),
        "every bucket belongs to a histogram"
    );
    for l in &batch.labels {
        for (a, b) in [l.name, l.value] {
            assert!(
                a <= b && b as usize <= batch.buf.len(),
                "label inside the body"
            );
        }
    }
}

/// Parses deferred labels and checks what `check_labels` promises of every series:
/// non-empty, names non-empty and strictly ascending, within the limits, no empty values.
pub fn parse_and_check_labels(batch: &mut Batch, limits: &DecodeLimits) -> Result<(), DecodeError> {
    batch.ensure_all_labels()?;
    check_batch_shape(batch);
    for s in &batch.series {
        let labels: Vec<_> = batch.series_labels(s).collect();
        assert!(!labels.is_empty());
        assert!(labels.len() <= limits.max_labels_per_series);
        for w in labels.windows(2) {
            assert!(w[0].0 < w[1].0, "label names strictly ascending");
        }
        for (n, v) in &labels {
            assert!(!n.is_empty() && n.len() <= limits.max_label_name_length);
            assert!(!v.is_empty() && v.len() <= limits.max_label_value_length);
        }
    }
    assert!(batch.series.len() <= limits.max_series_per_request);
    for h in &batch.histograms {
        for (a, b) in [h.negative, h.positive] {
            assert!((b - a) as usize <= limits.max_histogram_buckets);
        }
    }
    Ok(())
}

/// The batch as owned data (labels must have been parsed).
pub fn owned(batch: &Batch) -> Vec<OwnedSeries> {
    batch
        .series
        .iter()
        .map(|s| {
            (
                batch
                    .series_labels(s)
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect(),
                batch
                    .series_samples(s)
                    .iter()
                    .map(|x| (x.ts, x.value.to_bits()))
                    .collect(),
            )
        })
        .collect()
}

/// One decoded native histogram as owned data, floats as bits (so NaN compares): buckets
/// are (index, count bits) per side.
#[derive(Debug, PartialEq, Eq)]
pub struct OwnedHistogram {
    pub ts: i64,
    pub schema: i32,
    /// The `ResetHint` enum's number.
    pub reset_hint: i32,
    pub float: bool,
    pub count: u64,
    pub sum: u64,
    pub zero_threshold: u64,
    pub zero_count: u64,
    pub negative: Vec<(i32, u64)>,
    pub positive: Vec<(i32, u64)>,
}

/// Each series' histograms as owned data.
pub fn owned_histograms(batch: &Batch) -> Vec<Vec<OwnedHistogram>> {
    let side = |r: (u32, u32)| -> Vec<(i32, u64)> {
        batch
            .histogram_buckets(r)
            .iter()
            .map(|k| (k.index, k.count.to_bits()))
            .collect()
    };
    batch
        .series
        .iter()
        .map(|s| {
            batch
                .series_histograms(s)
                .iter()
                .map(|h| OwnedHistogram {
                    ts: h.ts,
                    schema: h.schema as i32,
                    reset_hint: match h.reset_hint {
                        ResetHint::Unknown => 0,
                        ResetHint::Yes => 1,
                        ResetHint::No => 2,
                        ResetHint::Gauge => 3,
                    },
                    float: h.float,
                    count: h.count.to_bits(),
                    sum: h.sum.to_bits(),
                    zero_threshold: h.zero_threshold.to_bits(),
                    zero_count: h.zero_count.to_bits(),
                    negative: side(h.negative),
                    positive: side(h.positive),
                })
                .collect()
        })
        .collect()
}

/// What the decoder must make of a histogram prost decoded (an RW 2.0 one re-read as RW
/// 1.0: fields 1 to 15 are the same), computed independently: a float histogram is one with
/// any float field, spans expand to consecutive indexes (each offset a gap after the first),
/// integer counts are running sums of the deltas. `None` if the spans do not cover exactly
/// the values sent, which the decoder must have refused.
pub fn expected_histogram(h: &pb::Histogram) -> Option<OwnedHistogram> {
    use pb::histogram::{Count, ZeroCount};
    let float = matches!(h.count, Some(Count::CountFloat(_)))
        || matches!(h.zero_count, Some(ZeroCount::ZeroCountFloat(_)))
        || !h.negative_counts.is_empty()
        || !h.positive_counts.is_empty();
    let side = |spans: &[pb::BucketSpan], deltas: &[i64], counts: &[f64]| {
        let values: Vec<f64> = if float {
            counts.to_vec()
        } else {
            deltas
                .iter()
                .scan(0i64, |c, d| {
                    *c = c.wrapping_add(*d);
                    Some(*c as f64)
                })
                .collect()
        };
        let need: u64 = spans.iter().map(|s| s.length as u64).sum();
        if need != values.len() as u64 {
            return None;
        }
        let mut out = Vec::with_capacity(values.len());
        let mut index = 0i64;
        let mut values = values.into_iter();
        for s in spans {
            index += s.offset as i64;
            for _ in 0..s.length {
                out.push((index as i32, values.next()?.to_bits()));
                index += 1;
            }
        }
        Some(out)
    };
    // An accepted histogram does not mix integer and float fields.
    let count = match h.count {
        Some(Count::CountInt(c)) => c as f64,
        Some(Count::CountFloat(c)) => c,
        None => 0.0,
    };
    let zero_count = match h.zero_count {
        Some(ZeroCount::ZeroCountInt(c)) => c as f64,
        Some(ZeroCount::ZeroCountFloat(c)) => c,
        None => 0.0,
    };
    Some(OwnedHistogram {
        ts: h.timestamp,
        schema: h.schema,
        reset_hint: h.reset_hint,
        float,
        count: count.to_bits(),
        sum: h.sum.to_bits(),
        zero_threshold: h.zero_threshold.to_bits(),
        zero_count: zero_count.to_bits(),
        negative: side(&h.negative_spans, &h.negative_deltas, &h.negative_counts)?,
        positive: side(&h.positive_spans, &h.positive_deltas, &h.positive_counts)?,
    })
}

/// Ingests a decoded batch into a fresh store, twice (a retried push), and checks the
/// outcome's bookkeeping: every sample is appended, a duplicate, out of order, over a
/// limit, non-finite (±Inf, NaN but the stale marker: dropped) or outside the time bounds
/// (`i64::MIN`); the retry appends and creates nothing; stored series are found by their
/// labels. Returns whether the store accepted the batch.
pub fn ingest_and_check(batch: &mut Batch) -> bool {
    let store = small_store();
    let mut scratch = IngestScratch::default();
    let total = (batch.sample_count() + batch.histograms.len()) as u64;
    let first = match store.ingest(batch, &mut scratch) {
        Ok(o) => o,
        Err(_) => {
            assert_eq!(store.active_series(), 0, "a refused push changes nothing");
            assert_eq!(store.samples_appended(), 0);
            return false;
        }
    };
    let unstored = |o: &deploywatch::store::IngestOutcome| {
        o.duplicates
            + o.out_of_order
            + o.histogram_duplicates
            + o.histograms_out_of_order
            + o.samples_over_limit
            + o.non_finite
            + o.too_far_in_future
            + o.too_old
    };
    assert_eq!(
        first.samples_appended + first.histograms_appended + unstored(&first),
        total,
        "every sample is accounted for: {first:?}"
    );
    assert!(first.stale_markers <= first.samples_appended + first.histograms_appended);
    assert_eq!(store.active_series() as u64, first.series_created);
    assert!(store.active_series() <= 12);
    assert_eq!(store.samples_appended(), first.samples_appended);
    for (i, (sid, _)) in first.touched.iter().enumerate() {
        assert!(
            first.touched[..i].iter().all(|(o, _)| o != sid),
            "touched once"
        );
    }

    // Every entry with a storable sample whose labels parse is stored under them, unless
    // a limit refused a series in this push.
    if first.series_over_limit == 0 {
        for i in 0..batch.series.len() {
            let entry = batch.series[i].clone();
            let storable = batch.series_samples(&entry).iter().any(|s| {
                s.ts != i64::MIN && (s.value.is_finite() || s.value.to_bits() == STALE_NAN_BITS)
            });
            if !storable || batch.ensure_labels(i).is_err() {
                continue;
            }
            let set = LabelSet::from_pairs(batch.series_labels(&batch.series[i]));
            let series = store
                .get(&set)
                .unwrap_or_else(|| panic!("series {i} ({set:?}) is stored"));
            let job = set.get("job").unwrap_or("");
            let svc = store
                .service_by_id(series.service)
                .expect("its service exists");
            assert_eq!(&*svc.name, job);
        }
    }

    // A retried push: nothing new.
    let again = store
        .ingest(batch, &mut scratch)
        .expect("a push the store accepted is accepted again");
    assert_eq!(
        again.samples_appended + again.histograms_appended,
        0,
        "a retry appends nothing: {again:?}"
    );
    assert_eq!(again.series_created, 0);
    assert_eq!(unstored(&again), total, "{again:?}");
    true
}
