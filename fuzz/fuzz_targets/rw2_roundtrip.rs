//! RW 2.0 round trip: an arbitrary request, encoded by prost with a symbol table, decodes
//! to exactly what was encoded, or is refused exactly when it breaks a rule (labels
//! unsorted, duplicate or empty, over a limit).
#![no_main]

use std::cell::RefCell;

use arbitrary::Arbitrary;
use deploywatch::ingest::{DecodeError, Decoder, Protocol};
use deploywatch::proto::write_v2 as v2;
use deploywatch_fuzz::*;
use libfuzzer_sys::fuzz_target;
use prost::Message;

thread_local! {
    // `Decoder::default()` parses the embedded config: one per thread, reused.
    static DECODER: RefCell<Decoder> = RefCell::new(Decoder::default());
}

#[derive(Arbitrary, Debug)]
struct Req {
    sort: bool,
    default_limits: bool,
    /// Extra symbols nobody refers to.
    unused: Vec<String>,
    series: Vec<Ser>,
}

#[derive(Arbitrary, Debug)]
struct Ser {
    labels: Vec<(String, String)>,
    samples: Vec<(i64, f64)>,
    exemplars: u8,
    histograms: u8,
    metadata: bool,
}

fuzz_target!(|req: Req| {
    let limits = if req.default_limits {
        default_limits()
    } else {
        small_limits()
    };
    let mut series = req.series;
    if req.sort {
        for s in &mut series {
            s.labels.sort_by(|a, b| a.0.cmp(&b.0));
            s.labels.dedup_by(|a, b| a.0 == b.0);
        }
    }
    let mut symbols: Vec<String> = vec![String::new()];
    let mut intern = |s: &str| -> u32 {
        match symbols.iter().position(|x| x == s) {
            Some(i) => i as u32,
            None => {
                symbols.push(s.to_string());
                (symbols.len() - 1) as u32
            }
        }
    };
    for u in &req.unused {
        intern(u);
    }
    let timeseries: Vec<v2::TimeSeries> = series
        .iter()
        .map(|s| v2::TimeSeries {
            labels_refs: s
                .labels
                .iter()
                .flat_map(|(n, v)| [intern(n), intern(v)])
                .collect(),
            samples: s
                .samples
                .iter()
                .map(|&(timestamp, value)| v2::Sample {
                    value,
                    timestamp,
                    start_timestamp: 0,
                })
                .collect(),
            exemplars: vec![v2::Exemplar::default(); (s.exemplars % 3) as usize],
            histograms: vec![v2::Histogram::default(); (s.histograms % 3) as usize],
            metadata: s.metadata.then(v2::Metadata::default),
            created_timestamp: 0,
        })
        .collect();
    let msg = v2::Request {
        symbols,
        timeseries,
    }
    .encode_to_vec();

    let effective: Vec<Vec<(&str, &str)>> = series
        .iter()
        .map(|s| {
            s.labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect()
        })
        .collect();
    let valid = msg.len() <= limits.max_body_bytes
        && series.len() <= limits.max_series_per_request
        && effective.iter().all(|ls| {
            !ls.is_empty()
                && ls.len() <= limits.max_labels_per_series
                && ls.iter().all(|(n, v)| {
                    !n.is_empty()
                        && n.len() <= limits.max_label_name_length
                        && v.len() <= limits.max_label_value_length
                })
                && ls.windows(2).all(|w| w[0].0.as_bytes() < w[1].0.as_bytes())
        });

    DECODER.with(|cell| {
        let mut d = cell.borrow_mut();
        match d.decode_decompressed(Protocol::V2, &msg, &limits) {
            Err(e) => {
                assert!(!valid, "a valid request was refused: {e}");
                assert!(
                    matches!(
                        e,
                        DecodeError::Labels(_)
                            | DecodeError::Limit(_)
                            | DecodeError::TooLarge { .. }
                    ),
                    "a well-formed message fails only on labels or limits: {e:?}"
                );
            }
            Ok(batch) => {
                assert!(valid, "an invalid request was accepted");
                let expected: Vec<OwnedSeries> = effective
                    .iter()
                    .zip(&series)
                    .map(|(ls, s)| {
                        (
                            ls.iter()
                                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                                .collect(),
                            s.samples
                                .iter()
                                .map(|&(t, v)| (t, encoded_bits(v)))
                                .collect(),
                        )
                    })
                    .collect();
                assert_eq!(owned(batch), expected);
                let sum = |f: fn(&Ser) -> u64| series.iter().map(f).sum::<u64>();
                assert_eq!(batch.extras.exemplars, sum(|s| (s.exemplars % 3) as u64));
                // Default histograms: valid, empty integer ones.
                assert_eq!(
                    batch.histograms.len() as u64,
                    sum(|s| (s.histograms % 3) as u64)
                );
                assert_eq!(batch.extras.metadata, sum(|s| s.metadata as u64));
                assert!(ingest_and_check(batch), "valid UTF-8 labels are stored");
            }
        }
    });
});

/// The value bits prost's encoding carries: proto3 omits a field equal to its default, and
/// -0.0 == 0.0, so a -0.0 sample arrives as 0.0 (the decoder keeps -0.0 when it is sent).
fn encoded_bits(v: f64) -> u64 {
    if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}
