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
    /// Its native histogram samples in [`Batch::histograms`].
    pub histograms: Range<u32>,
    /// Bytes of the encoded label set in `buf` (RW 1.0 only): equal bytes mean equal labels,
    /// which lets a request repeating a series skip the index lookup.
    pub raw_labels: (u32, u32),
    /// The labels are not parsed yet (RW 1.0 with contiguous label fields): `raw_labels`
    /// holds exactly them, and [`Batch::ensure_labels`] parses and checks them on demand.
    /// A known series is found by these bytes alone.
    pub deferred: bool,
}

/// A native histogram sample (`Histogram` of RW 1.0 and 2.0), checked as Prometheus checks
/// it. Its buckets are in [`Batch::buckets`], absolute counts by ascending index (integer
/// histograms' deltas already summed). Bucket `index` at `schema` s covers
/// `(2^((index-1)·2^-s), 2^(index·2^-s)]` (negated for the negative side).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistogramSample {
    pub ts: i64,
    /// -4..=8: the exponential schemas.
    pub schema: i8,
    pub reset_hint: ResetHint,
    /// A float histogram (counts sent as doubles), not an integer one.
    pub float: bool,
    pub count: f64,
    /// A stale marker has `sum` = Prometheus' stale NaN and no buckets.
    pub sum: f64,
    pub zero_threshold: f64,
    pub zero_count: f64,
    /// Its negative and positive buckets: ranges of [`Batch::buckets`].
    pub negative: (u32, u32),
    pub positive: (u32, u32),
}

/// `Histogram.ResetHint`: whether the sender knows the counts restarted since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetHint {
    #[default]
    Unknown,
    Yes,
    No,
    /// A gauge histogram: counts go up and down, never a reset.
    Gauge,
}

/// One populated native-histogram bucket: its index at the sample's schema and its count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub index: i32,
    pub count: f64,
}

/// A float sample: event time in Unix milliseconds and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts: i64,
    pub value: f64,
}

/// What one request carried besides float and native histogram samples; these are counted,
/// not stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Extras {
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
    pub histograms: Vec<HistogramSample>,
    pub buckets: Vec<Bucket>,
    pub extras: Extras,
    /// The limits labels are checked against when parsed on demand.
    pub(crate) limits: super::DecodeLimits,
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
        self.histograms.clear();
        self.buckets.clear();
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

    /// Parses and checks entry `i`'s labels if they were deferred. Errors are the decoder's:
    /// a malformed label, or labels that are unsorted, duplicate, empty or over a limit.
    pub fn ensure_labels(&mut self, i: usize) -> Result<(), super::DecodeError> {
        if !self.series[i].deferred {
            return Ok(());
        }
        let (start, end) = self.series[i].raw_labels;
        let first = self.labels.len() as u32;
        super::rw1::parse_label_fields(
            &self.buf[start as usize..end as usize],
            start,
            &mut self.labels,
        )?;
        let entry = &mut self.series[i];
        entry.labels = first..self.labels.len() as u32;
        entry.deferred = false;
        super::check_labels(&self.buf, &self.labels, &self.series[i], i, &self.limits)
    }

    /// Parses every deferred entry's labels (for callers that read all labels).
    pub fn ensure_all_labels(&mut self) -> Result<(), super::DecodeError> {
        for i in 0..self.series.len() {
            self.ensure_labels(i)?;
        }
        Ok(())
    }

    #[inline]
    pub fn series_samples(&self, s: &SeriesEntry) -> &[Sample] {
        &self.samples[s.samples.start as usize..s.samples.end as usize]
    }

    /// The native histogram samples of one series.
    #[inline]
    pub fn series_histograms(&self, s: &SeriesEntry) -> &[HistogramSample] {
        &self.histograms[s.histograms.start as usize..s.histograms.end as usize]
    }

    /// The buckets of one side of a histogram ([`HistogramSample::negative`] or `positive`).
    #[inline]
    pub fn histogram_buckets(&self, r: (u32, u32)) -> &[Bucket] {
        &self.buckets[r.0 as usize..r.1 as usize]
    }

    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }

    /// Empties the batch for building by hand with [`Batch::push_encoded`]; labels are
    /// checked against `limits` when the store parses them.
    pub fn reset(&mut self, limits: &super::DecodeLimits) {
        self.clear();
        self.limits = limits.clone();
    }

    /// Appends one series as the RW 1.0 decoder produces a Prometheus-shaped `TimeSeries`:
    /// `label_fields` are its encoded `Label` fields (field 1 of a `TimeSeries`, as prost
    /// encodes a `TimeSeries` without samples), kept as raw bytes and parsed on demand.
    /// For callers that hold samples rather than request bodies (a backtest or a restart
    /// replaying history; [`crate::store::LabelSet`] bytes are exactly such fields).
    pub fn push_encoded(&mut self, label_fields: &[u8], samples: &[Sample]) {
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(label_fields);
        let end = self.buf.len() as u32;
        let first = self.samples.len() as u32;
        self.samples.extend_from_slice(samples);
        let labels = self.labels.len() as u32;
        self.series.push(SeriesEntry {
            labels: labels..labels,
            samples: first..self.samples.len() as u32,
            histograms: self.histograms.len() as u32..self.histograms.len() as u32,
            raw_labels: (start, end),
            deferred: true,
        });
    }

    /// Adds a native histogram sample, with its buckets, to the entry added last (by
    /// [`Batch::push_encoded`]): for callers replaying held histograms.
    pub fn push_histogram(
        &mut self,
        mut h: HistogramSample,
        negative: &[Bucket],
        positive: &[Bucket],
    ) {
        let n0 = self.buckets.len() as u32;
        self.buckets.extend_from_slice(negative);
        let n1 = self.buckets.len() as u32;
        self.buckets.extend_from_slice(positive);
        h.negative = (n0, n1);
        h.positive = (n1, self.buckets.len() as u32);
        let k = self.histograms.len() as u32;
        let entry = self
            .series
            .last_mut()
            .expect("push_histogram follows push_encoded");
        if entry.histograms.is_empty() {
            entry.histograms = k..k;
        }
        debug_assert_eq!(
            entry.histograms.end, k,
            "an entry's histograms are contiguous"
        );
        self.histograms.push(h);
        entry.histograms.end = k + 1;
    }
}
