//! The RW 1.0 decoder on raw protobuf bytes (no snappy), then the store.
//!
//! Input: one flags byte (bit 0: the shipped default limits instead of small ones), then a
//! `prometheus.WriteRequest` message. Checks: no panic; a decoded batch is well formed and
//! its labels obey the limits; where prost also decodes the bytes (and the labels are
//! UTF-8) both agree on every label, sample, native histogram and count; the store accounts
//! for every sample and a retried push appends nothing.
#![no_main]

use std::cell::RefCell;

use deploywatch::ingest::{Decoder, Protocol};
use deploywatch::proto::prometheus as pb;
use deploywatch_fuzz::*;
use libfuzzer_sys::fuzz_target;
use prost::Message;

thread_local! {
    // Reused like the server's per-thread decoder, so stale scratch state is exercised too.
    static DECODER: RefCell<Decoder> = RefCell::new(Decoder::default());
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, msg)) = data.split_first() else {
        return;
    };
    let limits = limits_for(flags);
    DECODER.with(|d| {
        let mut d = d.borrow_mut();
        let Ok(batch) = d.decode_decompressed(Protocol::V1, msg, &limits) else {
            return;
        };
        check_batch_shape(batch);
        let extras = batch.extras;
        if parse_and_check_labels(batch, &limits).is_ok() {
            let ours = owned(batch);
            let ours_histograms = owned_histograms(batch);
            if let Ok(theirs) = pb::WriteRequest::decode(msg) {
                let expected: Vec<OwnedSeries> = theirs
                    .timeseries
                    .iter()
                    .map(|ts| {
                        (
                            ts.labels
                                .iter()
                                .filter(|l| !l.value.is_empty())
                                .map(|l| (l.name.as_bytes().to_vec(), l.value.as_bytes().to_vec()))
                                .collect(),
                            ts.samples
                                .iter()
                                .map(|s| (s.timestamp, s.value.to_bits()))
                                .collect(),
                        )
                    })
                    .collect();
                assert_eq!(ours, expected, "our decoder and prost disagree");
                let expected: Vec<Vec<OwnedHistogram>> = theirs
                    .timeseries
                    .iter()
                    .map(|ts| {
                        ts.histograms
                            .iter()
                            .map(|h| expected_histogram(h).expect("spans cover the values"))
                            .collect()
                    })
                    .collect();
                assert_eq!(
                    ours_histograms, expected,
                    "our decoder and prost disagree on histograms"
                );
                assert_eq!(extras.metadata, theirs.metadata.len() as u64);
                let n = |f: fn(&pb::TimeSeries) -> usize| -> u64 {
                    theirs.timeseries.iter().map(|t| f(t) as u64).sum()
                };
                assert_eq!(extras.exemplars, n(|t| t.exemplars.len()));
            }
        }
        ingest_and_check(batch);
    });
});
