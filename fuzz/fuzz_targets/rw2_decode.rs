//! The RW 2.0 decoder on raw protobuf bytes (no snappy), then the store.
//!
//! Input: one flags byte (bit 0: the shipped default limits instead of small ones), then an
//! `io.prometheus.write.v2.Request` message. Checks: no panic; a decoded batch is well
//! formed and its labels obey the limits; where prost also decodes the bytes, both resolve
//! the same labels from the symbol table and the same samples, native histograms and
//! counts; the store accounts for every sample and a retried push appends nothing.
#![no_main]

use std::cell::RefCell;

use deploywatch::ingest::{Decoder, Protocol};
use deploywatch::proto::{prometheus as pb, write_v2 as v2};
use deploywatch_fuzz::*;
use libfuzzer_sys::fuzz_target;
use prost::Message;

thread_local! {
    static DECODER: RefCell<Decoder> = RefCell::new(Decoder::default());
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, msg)) = data.split_first() else {
        return;
    };
    let limits = limits_for(flags);
    DECODER.with(|d| {
        let mut d = d.borrow_mut();
        let Ok(batch) = d.decode_decompressed(Protocol::V2, msg, &limits) else {
            return;
        };
        check_batch_shape(batch);
        assert!(
            batch.series.iter().all(|s| !s.deferred),
            "RW 2.0 labels are resolved at once"
        );
        let extras = batch.extras;
        parse_and_check_labels(batch, &limits).expect("RW 2.0 labels were checked when decoded");
        let ours = owned(batch);
        if let Ok(theirs) = v2::Request::decode(msg) {
            let sym = |r: u32| theirs.symbols[r as usize].as_bytes().to_vec();
            let expected: Vec<OwnedSeries> = theirs
                .timeseries
                .iter()
                .map(|ts| {
                    (
                        ts.labels_refs
                            .chunks(2)
                            .filter(|p| !theirs.symbols[p[1] as usize].is_empty())
                            .map(|p| (sym(p[0]), sym(p[1])))
                            .collect(),
                        ts.samples
                            .iter()
                            .map(|s| (s.timestamp, s.value.to_bits()))
                            .collect(),
                    )
                })
                .collect();
            assert_eq!(ours, expected, "our decoder and prost disagree");
            // Fields 1 to 15 of the two `Histogram`s are the same: re-read as RW 1.0's (an
            // accepted one has no custom values, 16; the start timestamp, 17, is ignored).
            let expected: Vec<Vec<OwnedHistogram>> = theirs
                .timeseries
                .iter()
                .map(|ts| {
                    ts.histograms
                        .iter()
                        .map(|h| {
                            assert!(h.custom_values.is_empty(), "custom values are refused");
                            let h = pb::Histogram::decode(&h.encode_to_vec()[..])
                                .expect("the same fields");
                            expected_histogram(&h).expect("spans cover the values")
                        })
                        .collect()
                })
                .collect();
            assert_eq!(
                owned_histograms(batch),
                expected,
                "our decoder and prost disagree on histograms"
            );
            let n = |f: fn(&v2::TimeSeries) -> usize| -> u64 {
                theirs.timeseries.iter().map(|t| f(t) as u64).sum()
            };
            assert_eq!(extras.exemplars, n(|t| t.exemplars.len()));
            // prost merges repeated `metadata` fields into one; we count fields.
            assert!(extras.metadata >= n(|t| t.metadata.is_some() as usize));
        }
        ingest_and_check(batch);
    });
});
