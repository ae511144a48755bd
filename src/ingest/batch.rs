//! A decoded remote-write request as flat arrays (labels, samples, series entries) that index
//! into the decompressed body. Reused across requests, so decoding allocates nothing per sample.

use std::ops::Range;

/// One label: byte ranges of its name and value within [`Batch::buf`].
#[derive(Debug, Clone, Copy)]
pub struct LabelRef {
    pub name: (u32, u32),
    pub value: (u32, u32),
}

/// One `TimeSeries` entry of the request.
#[derive(Debug, Clone)]
pub struct SeriesEntry {
    /// Its labels in [`Batch::labels`], sorted by name.
    pub labels: Range<u32>,
    /// Its float samples in [`Batch::samples`].
    pub samples: Range<u32>,
    /// Bytes of the encoded label set in `buf` (RW 1.0 only): equal bytes mean equal labels,
    /// which lets a request repeating a series skip the index lookup.
    pub raw_labels: (u32, u32),
}

/// A float sample: event time in Unix milliseconds and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts: i64,
    pub value: f64,
}

/// What one request carried besides float samples; these are counted, not stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Extras {
    /// Native histogram samples (dropped: deploywatch judges classic `_bucket` series).
    pub histograms: u64,
    pub exemplars: u64,
    pub metadata: u64,
}

/// A decoded request. `buf` holds the decompressed body that the ranges point into.
#[derive(Debug, Default)]
pub struct Batch {
    pub buf: Vec<u8>,
    pub labels: Vec<LabelRef>,
    pub series: Vec<SeriesEntry>,
    pub samples: Vec<Sample>,
    pub extras: Extras,
}

impl Batch {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.clear_keep_buf();
    }

    /// Clears everything but `buf`, whose bytes the next decompression overwrites.
    pub(crate) fn clear_keep_buf(&mut self) {
        self.labels.clear();
        self.series.clear();
        self.samples.clear();
        self.extras = Extras::default();
    }

    #[inline]
    pub fn bytes(&self, r: (u32, u32)) -> &[u8] {
        &self.buf[r.0 as usize..r.1 as usize]
    }

    /// Label (name, value) byte pairs of one series.
    #[inline]
    pub fn series_labels<'a>(
        &'a self,
        s: &SeriesEntry,
    ) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a {
        self.labels[s.labels.start as usize..s.labels.end as usize]
            .iter()
            .map(move |l| (self.bytes(l.name), self.bytes(l.value)))
    }

    #[inline]
    pub fn series_samples(&self, s: &SeriesEntry) -> &[Sample] {
        &self.samples[s.samples.start as usize..s.samples.end as usize]
    }

    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }
}
