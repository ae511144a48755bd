use prost::Message;

use super::*;
use crate::ingest::{DecodeLimits, Decoder, Protocol};
use crate::proto::prometheus as pb;

fn store() -> Store {
    Store::new(StoreConfig {
        service_label: "job".into(),
        version_label: "version".into(),
        retention_ms: 3_600_000,
        max_active_series: 100,
        max_series_per_service: 3,
        max_samples_per_series: usize::MAX,
    })
}

/// One sample to push: its series' labels, timestamp and value.
type Entry<'a> = (&'a [(&'a str, &'a str)], i64, f64);

fn push(store: &Store, series: &[Entry]) -> Result<IngestOutcome, StoreError> {
    let req = pb::WriteRequest {
        timeseries: series
            .iter()
            .map(|(ls, ts, v)| pb::TimeSeries {
                labels: ls
                    .iter()
                    .map(|(n, v)| pb::Label {
                        name: (*n).into(),
                        value: (*v).into(),
                    })
                    .collect(),
                samples: vec![pb::Sample {
                    value: *v,
                    timestamp: *ts,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let mut d = Decoder::default();
    let batch = d
        .decode(Protocol::V1, &body, &DecodeLimits::default())
        .unwrap();
    store.ingest(batch, &mut IngestScratch::default())
}

fn push_within(store: &Store, series: &[Entry], bounds: &TimeBounds) -> IngestOutcome {
    let mut batch = crate::ingest::Batch::default();
    batch.reset(&DecodeLimits::default());
    for (ls, ts, v) in series {
        batch.push_encoded(
            LabelSet::from_strs(ls).as_bytes(),
            &[crate::ingest::Sample { ts: *ts, value: *v }],
        );
    }
    store
        .ingest_within(&mut batch, &mut IngestScratch::default(), bounds)
        .unwrap()
}

const A1: &[(&str, &str)] = &[("__name__", "up"), ("job", "a"), ("version", "v1")];
const A2: &[(&str, &str)] = &[("__name__", "up"), ("job", "a"), ("version", "v2")];
const B: &[(&str, &str)] = &[("__name__", "up"), ("job", "b")];

#[test]
fn groups_by_service_and_version_and_tracks_newest() {
    let s = store();
    let o = push(
        &s,
        &[
            (A1, 1000, 1.0),
            (A2, 2000, 1.0),
            (A1, 3000, 2.0),
            (B, 500, 1.0),
        ],
    )
    .unwrap();
    assert_eq!(o.samples_appended, 4);
    assert_eq!(o.series_created, 3);
    assert_eq!(s.active_series(), 3);
    let a = s.service("a").unwrap();
    assert_eq!(a.newest(), Some(3000));
    let vs = a.versions();
    assert_eq!(
        vs.iter()
            .map(|v| (&*v.name, v.series_count(), v.newest()))
            .collect::<Vec<_>>(),
        vec![("v1", 1, Some(3000)), ("v2", 1, Some(2000))]
    );
    assert_eq!(vs[0].first_seen(), Some(1000));
    let b = s.service("b").unwrap();
    assert_eq!(b.versions()[0].name.as_ref(), "");
    let mut touched = o.touched.clone();
    touched.sort();
    assert_eq!(touched, vec![(a.id, 3000), (b.id, 500)]);
    let series = s.get(&LabelSet::from_strs(A1)).unwrap();
    assert_eq!(
        series.data.lock().ring.iter().collect::<Vec<_>>(),
        vec![(1000, 1.0), (3000, 2.0)]
    );
}

#[test]
fn duplicates_and_out_of_order_are_counted_not_stored() {
    let s = store();
    push(&s, &[(A1, 2000, 1.0)]).unwrap();
    let o = push(&s, &[(A1, 2000, 9.0), (A1, 1000, 9.0), (A1, 3000, 3.0)]).unwrap();
    assert_eq!(
        (o.samples_appended, o.duplicates, o.out_of_order),
        (1, 1, 1)
    );
    let series = s.get(&LabelSet::from_strs(A1)).unwrap();
    assert_eq!(
        series.data.lock().ring.iter().collect::<Vec<_>>(),
        vec![(2000, 1.0), (3000, 3.0)]
    );
}

#[test]
fn stale_markers_mark_the_series() {
    let s = store();
    push(
        &s,
        &[(A1, 1000, 1.0), (A1, 2000, f64::from_bits(STALE_NAN_BITS))],
    )
    .unwrap();
    let series = s.get(&LabelSet::from_strs(A1)).unwrap();
    assert!(series.data.lock().stale);
}

#[test]
fn per_service_limit_drops_new_series_only() {
    let s = store();
    let l =
        |i: &'static str| -> Vec<(&'static str, &'static str)> { vec![("id", i), ("job", "a")] };
    let (x, y, z, w) = (l("1"), l("2"), l("3"), l("4"));
    let o = push(
        &s,
        &[
            (&x, 1, 1.0),
            (&y, 1, 1.0),
            (&z, 1, 1.0),
            (&w, 1, 1.0),
            (B, 1, 1.0),
        ],
    )
    .unwrap();
    assert_eq!(o.series_over_limit, 1);
    assert_eq!(o.samples_over_limit, 1);
    assert_eq!(s.service("a").unwrap().series_count(), 3);
    // Other services are unaffected.
    assert_eq!(s.service("b").unwrap().series_count(), 1);
}

#[test]
fn invalid_utf8_in_a_new_series_changes_nothing() {
    let s = store();
    // prost's String cannot hold invalid UTF-8: encode a placeholder, then patch its bytes.
    let req = pb::WriteRequest {
        timeseries: ["ok", "\u{1}\u{1}"]
            .iter()
            .map(|v| pb::TimeSeries {
                labels: vec![pb::Label {
                    name: "job".into(),
                    value: (*v).into(),
                }],
                samples: vec![pb::Sample {
                    value: 1.0,
                    timestamp: 1,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    let mut raw = req.encode_to_vec();
    let pos = raw.windows(2).rposition(|w| w == [1, 1]).unwrap();
    raw[pos] = 0xc3;
    raw[pos + 1] = 0x28;
    let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    let mut d = Decoder::default();
    let batch = d
        .decode(Protocol::V1, &body, &DecodeLimits::default())
        .unwrap();
    let e = s.ingest(batch, &mut IngestScratch::default()).unwrap_err();
    assert_eq!(
        e,
        StoreError::InvalidUtf8 {
            series: 1,
            what: "value"
        }
    );
    assert_eq!(s.active_series(), 0);
    assert!(s.services().is_empty());
}

#[test]
fn raw_and_parsed_label_sets_find_the_same_series() {
    // Canonical raw bytes (deferred), then the same labels with an extra empty-valued label
    // (not canonical: parsed, the empty label dropped): one series.
    let s = store();
    push(&s, &[(A1, 1000, 1.0)]).unwrap();
    let with_empty: &[(&str, &str)] = &[
        ("__name__", "up"),
        ("extra", ""),
        ("job", "a"),
        ("version", "v1"),
    ];
    let o = push(&s, &[(with_empty, 2000, 2.0)]).unwrap();
    assert_eq!((o.series_created, o.samples_appended), (0, 1));
    assert_eq!(s.active_series(), 1);
    // Invalid labels not known by their bytes are still refused, with nothing changed.
    let unsorted: &[(&str, &str)] = &[("job", "a"), ("__name__", "up")];
    let req = pb::WriteRequest {
        timeseries: vec![pb::TimeSeries {
            labels: unsorted
                .iter()
                .map(|(n, v)| pb::Label {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            samples: vec![pb::Sample {
                value: 1.0,
                timestamp: 3000,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let mut d = Decoder::default();
    let batch = d
        .decode(Protocol::V1, &body, &DecodeLimits::default())
        .unwrap();
    assert!(matches!(
        s.ingest(batch, &mut IngestScratch::default()),
        Err(StoreError::Labels(_))
    ));
    assert_eq!(s.active_series(), 1);
}

#[test]
fn sweep_drops_series_idle_beyond_retention_and_they_come_back_new() {
    let s = store();
    let a3: &[(&str, &str)] = &[("__name__", "x"), ("job", "a"), ("version", "v1")];
    push(&s, &[(A1, 1_000, 1.0), (a3, 1_000, 1.0)]).unwrap();
    // A1 keeps reporting; a3 stops.
    push(&s, &[(A1, 3_000_000, 1.0)]).unwrap();
    assert_eq!(s.sweep().series, 0, "within retention");
    push(&s, &[(A1, 3_602_000, 1.0)]).unwrap();
    assert_eq!(
        s.sweep(),
        Swept {
            series: 1,
            versions: 0,
            services: 0
        }
    );
    assert_eq!(s.active_series(), 1);
    let svc = s.service("a").unwrap();
    assert_eq!(svc.series_count(), 1);
    assert_eq!(svc.versions()[0].series_count(), 1);
    assert!(s.get(&LabelSet::from_strs(a3)).is_none());
    // It reports again: a new series, handed out once more by `series_since`.
    let seen = svc.series_since(0).last().unwrap().seq;
    let o = push(&s, &[(a3, 3_603_000, 2.0)]).unwrap();
    assert_eq!(o.series_created, 1);
    let new = svc.series_since(seen + 1);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].labels, LabelSet::from_strs(a3));
    assert_eq!(new[0].data.lock().ring.len(), 1);
}

/// Issue 15: a service not seen for the retention is forgotten whole (series, index
/// entries, versions, name), counted back from the store's event time since its own stands
/// still; not while a push still feeds it (a replay behind the others); not from a sample
/// ahead of the wall clock; and not in a snapshot after. Seen again, it is new.
#[test]
fn issue_15_a_service_not_seen_for_the_retention_is_forgotten_once_nothing_feeds_it() {
    const HOUR: i64 = 3_600_000;
    let s = store();
    let b2: &[(&str, &str)] = &[("__name__", "x"), ("job", "b"), ("version", "v2")];
    push(&s, &[(A1, 1_000, 1.0), (B, 1_000, 1.0), (b2, 1_000, 1.0)]).unwrap();
    let old = s.service("b").unwrap();
    let old_versions: Vec<VersionId> = old.versions().iter().map(|v| v.id).collect();
    let old_seq = old.series().iter().map(|x| x.seq).max().unwrap();
    // a goes on past the retention; b is silent in event time.
    push(&s, &[(A1, HOUR + 2_000, 1.0)]).unwrap();
    // Both were fed since the start: nothing goes at the first sweep.
    assert_eq!(s.sweep_at(i64::MAX), Swept::default());
    // b is still fed, with old samples (a replay behind the others): kept.
    push(&s, &[(B, 1_500, 1.0)]).unwrap();
    assert_eq!(s.sweep_at(i64::MAX), Swept::default());
    assert!(s.service("b").is_some());
    // Behind a by more than the retention and fed nothing for a whole sweep interval.
    let gone = s.sweep_at(i64::MAX);
    assert_eq!(
        gone,
        Swept {
            series: 2,
            versions: 2,
            services: 1
        }
    );
    assert!(s.service("b").is_none());
    assert!(s.service_by_id(old.id).is_none());
    assert!(s.get(&LabelSet::from_strs(B)).is_none());
    assert_eq!(s.services().len(), 1);
    assert_eq!(s.active_series(), 1);
    assert_eq!(s.newest(), Some(HOUR + 2_000));
    // a itself, live, is untouched, and stays so at every sweep.
    let a = s.service("a").unwrap();
    assert_eq!((a.series_count(), a.versions().len()), (1, 1));
    assert_eq!(s.sweep_at(i64::MAX), Swept::default());
    // A snapshot holds what is left: after a restart b is still forgotten.
    let dir = tempfile::tempdir().unwrap();
    s.write_snapshot(dir.path(), b"").unwrap();
    let snap = snapshot::read(&dir.path().join(snapshot::FILE_NAME))
        .unwrap()
        .unwrap();
    let names: Vec<LabelSet> = snap
        .series
        .iter()
        .map(|(l, _, _)| LabelSet::from_encoded(l))
        .collect();
    assert_eq!(names, vec![LabelSet::from_strs(A1)]);
    // Seen again, b is a new service: new ids, new series handed out after the old ones.
    let o = push(&s, &[(B, HOUR + 3_000, 2.0)]).unwrap();
    assert_eq!(o.series_created, 1);
    let new = s.service("b").unwrap();
    assert_ne!(new.id, old.id);
    assert!(new.versions().iter().all(|v| !old_versions.contains(&v.id)));
    assert!(new.series()[0].seq > old_seq);
    assert_eq!(new.newest(), Some(HOUR + 3_000));
    assert_eq!(o.touched, vec![(new.id, HOUR + 3_000)]);
}

/// Issue 15: the store's event time stops at the wall clock: a service that ran ahead of
/// it (within `limits.max_time_ahead`, or replayed by a trusted caller) does not make the
/// others look silent.
#[test]
fn issue_15_a_sample_ahead_of_the_wall_clock_forgets_nothing() {
    let s = store();
    push(&s, &[(A1, 10 * 3_600_000, 1.0), (B, 1_000, 1.0)]).unwrap();
    for _ in 0..3 {
        assert_eq!(s.sweep_at(2_000_000), Swept::default());
    }
    assert_eq!(s.services().len(), 2);
}

/// Issue 15: a version left without a series (none for the retention, in its service's
/// own event time) is forgotten; reporting again, it is a new version, with a new id.
#[test]
fn issue_15_a_version_not_seen_for_the_retention_is_forgotten() {
    let s = store();
    push(&s, &[(A1, 1_000, 1.0), (A2, 1_000, 1.0)]).unwrap();
    let a = s.service("a").unwrap();
    let v1 = a.versions()[0].id;
    push(&s, &[(A2, 3_602_000, 1.0)]).unwrap();
    assert_eq!(
        s.sweep(),
        Swept {
            series: 1,
            versions: 1,
            services: 0
        }
    );
    let names: Vec<String> = a.versions().iter().map(|v| v.name.to_string()).collect();
    assert_eq!(names, ["v2"]);
    assert!(a.version(v1).is_none());
    push(&s, &[(A1, 3_603_000, 1.0)]).unwrap();
    let again = a.versions();
    assert_eq!(again.len(), 2);
    assert!(again[1].id > v1 && &*again[1].name == "v1");
    assert_eq!(again[1].first_seen(), Some(3_603_000));
    assert_eq!(again[1].series_count(), 1);
}

#[test]
fn samples_per_series_are_bounded() {
    let s = Store::new(StoreConfig {
        max_samples_per_series: 500,
        ..store().cfg.clone()
    });
    for k in 0..3_000i64 {
        push(&s, &[(A1, k * 10, k as f64)]).unwrap();
    }
    let series = s.get(&LabelSet::from_strs(A1)).unwrap();
    let data = series.data.lock();
    assert!(data.ring.len() <= 500 + 240, "{}", data.ring.len());
    assert_eq!(data.ring.last(), Some((29_990, 2_999.0)));
}

#[test]
fn a_series_limit_names_itself_and_limits_apply_on_reload() {
    let s = store();
    let c: &[(&str, &str)] = &[("__name__", "c"), ("job", "a")];
    let d: &[(&str, &str)] = &[("__name__", "d"), ("job", "a")];
    let o = push(&s, &[(A1, 1, 1.0), (A2, 1, 1.0), (c, 1, 1.0), (d, 1, 1.0)]).unwrap();
    assert_eq!(o.series_over_limit, 1);
    assert_eq!(
        o.limited_by,
        Some(SeriesLimit::PerService {
            service: "a".into(),
            limit: 3
        })
    );
    let mut limits = crate::config::Config::embedded().limits;
    limits.max_series_per_service = 4;
    s.set_limits(&limits);
    let o = push(&s, &[(d, 2, 1.0)]).unwrap();
    assert_eq!((o.series_created, o.limited_by), (1, None));
}

/// Issue 15: samples outside the time bounds are refused and counted, the first named; the
/// others of the push are stored, and the service's "now" does not move.
#[test]
fn issue_15_samples_outside_the_time_bounds_are_refused_the_rest_stored() {
    let s = store();
    let wall = 1_764_000_000_000;
    let bounds = TimeBounds::live(wall, std::time::Duration::from_secs(600));
    let o = push_within(&s, &[(A1, wall - 60_000, 1.0)], &bounds);
    assert_eq!((o.samples_appended, o.refused), (1, None));
    let c1: &[(&str, &str)] = &[("__name__", "c"), ("job", "a"), ("version", "v1")];
    let junk: &[(&str, &str)] = &[("__name__", "junk"), ("job", "a"), ("version", "evil")];
    let o = push_within(
        &s,
        &[
            (A1, wall, 2.0),
            (c1, i64::MAX, 1.0),         // too far in the future
            (c1, wall * 1000, 1.0),      // microseconds
            (c1, wall + 601_000, 1.0),   // just beyond max_time_ahead
            (c1, wall + 600_000, 3.0),   // just within: stored
            (A2, wall - 3_700_000, 1.0), // before a's window (newest wall - 60 s, minus 1 h)
            (A2, 0, 1.0),
            (A2, -5, 1.0),
            (A2, i64::MIN, 1.0),
            (junk, i64::MAX, 1.0), // a new series with nothing storable: not created
            (junk, wall - 10 * 86_400_000, 1.0),
        ],
        &bounds,
    );
    assert_eq!(o.samples_appended, 2, "{o:?}");
    assert_eq!(o.too_far_in_future, 4, "{o:?}");
    assert_eq!(o.too_old, 5, "{o:?}");
    assert_eq!(o.series_created, 1, "only c: {o:?}");
    let refused = o.refused.unwrap().to_string();
    assert!(refused.contains(r#"__name__="c""#), "{refused}");
    assert!(refused.contains("too far in the future"), "{refused}");
    assert!(refused.contains("micro- or nanoseconds"), "{refused}");
    let a = s.service("a").unwrap();
    assert_eq!(a.newest(), Some(wall + 600_000));
    assert_eq!(
        a.versions().iter().map(|v| &*v.name).collect::<Vec<_>>(),
        vec!["v1"],
        "no version from refused samples"
    );
    // The first refused sample in request order is named, whatever the reason.
    let o = push_within(&s, &[(A1, wall + 700_000, 4.0), (A2, 7, 1.0)], &bounds);
    let refused = o.refused.unwrap();
    assert!(matches!(refused, SampleRefused::TooFarInFuture { .. }));
    let o = push_within(&s, &[(A2, 0, 1.0), (A1, wall + 700_000, 4.0)], &bounds);
    let refused = o.refused.unwrap().to_string();
    assert!(refused.contains("Unix epoch"), "{refused}");
    let o = push_within(&s, &[(A2, wall - 2 * 3_600_000, 1.0)], &bounds);
    let refused = o.refused.unwrap().to_string();
    assert!(
        refused.contains(r#"service "a"'s retention window"#),
        "{refused}"
    );
}

/// Issue 15: ±Inf and NaN (other than the stale marker) are accepted, counted and never
/// stored; a stale marker is kept.
#[test]
fn issue_15_non_finite_values_are_dropped_and_counted_stale_markers_kept() {
    let s = store();
    let stale = f64::from_bits(STALE_NAN_BITS);
    let o = push(
        &s,
        &[
            (A1, 1000, 1.0),
            (A1, 2000, f64::INFINITY),
            (A1, 3000, f64::INFINITY),
            (A1, 4000, f64::NAN),
            (A1, 5000, f64::NEG_INFINITY),
            (A1, 6000, 2.0),
            (A2, 1000, f64::NAN), // only non-finite: no series, no version
            (A1, 7000, stale),
        ],
    )
    .unwrap();
    assert_eq!(o.samples_appended, 3, "{o:?}");
    assert_eq!(o.non_finite, 5, "{o:?}");
    assert_eq!(o.stale_markers, 1);
    assert_eq!(o.refused, None);
    let a = s.service("a").unwrap();
    assert_eq!(a.versions().len(), 1);
    let series = s.get(&LabelSet::from_strs(A1)).unwrap();
    let data = series.data.lock();
    let values: Vec<_> = data.ring.iter().map(|(t, v)| (t, v.to_bits())).collect();
    assert_eq!(
        values,
        vec![
            (1000, 1f64.to_bits()),
            (6000, 2f64.to_bits()),
            (7000, STALE_NAN_BITS)
        ]
    );
}

#[test]
fn per_service_limit_holds_under_concurrent_creation() {
    // Pushes from several connections create series of one service in different shards at
    // once: together they never pass the limit (each checked it before the other added).
    const LIMIT: usize = 64;
    for round in 0..50 {
        let s = Store::new(StoreConfig {
            service_label: "job".into(),
            version_label: "version".into(),
            retention_ms: 3_600_000,
            max_active_series: 100_000,
            max_series_per_service: LIMIT,
            max_samples_per_series: usize::MAX,
        });
        std::thread::scope(|scope| {
            for t in 0..4 {
                let s = &s;
                scope.spawn(move || {
                    for i in 0..LIMIT {
                        let id = format!("{round}-{t}-{i}");
                        push(s, &[(&[("id", id.as_str()), ("job", "a")], 1, 1.0)]).unwrap();
                    }
                });
            }
        });
        assert_eq!(
            s.service("a").unwrap().series_count(),
            LIMIT,
            "round {round}"
        );
    }
}

/// A latency histogram at schema 3 after `n` requests, half in bucket 10, half in 12.
fn native(n: f64) -> NativeHistogram {
    NativeHistogram {
        schema: 3,
        count: n,
        sum: n * 0.05,
        zero_threshold: 1e-128,
        positive: vec![
            crate::ingest::Bucket {
                index: -35,
                count: (n / 2.0).floor(),
            },
            crate::ingest::Bucket {
                index: -33,
                count: n - (n / 2.0).floor(),
            },
        ],
        ..Default::default()
    }
}

fn push_native(
    store: &Store,
    labels: &[(&str, &str)],
    hists: &[(i64, NativeHistogram)],
    bounds: &TimeBounds,
) -> IngestOutcome {
    let mut batch = crate::ingest::Batch::default();
    batch.reset(&DecodeLimits::default());
    batch.push_encoded(LabelSet::from_strs(labels).as_bytes(), &[]);
    for (ts, h) in hists {
        batch.push_histogram(h.sample(*ts), &h.negative, &h.positive);
    }
    store
        .ingest_within(&mut batch, &mut IngestScratch::default(), bounds)
        .unwrap()
}

#[test]
fn native_histograms_are_held_per_series_snapshotted_and_swept_like_floats() {
    const H: &[(&str, &str)] = &[
        ("__name__", "http_request_duration_seconds"),
        ("job", "shop"),
        ("version", "v1"),
    ];
    let s = store();
    let hists: Vec<(i64, NativeHistogram)> = (1..=10)
        .map(|k| (k * 15_000, native(k as f64 * 40.0)))
        .collect();
    // A series made of histograms alone is created, its service and version too.
    let o = push_native(&s, H, &hists[..6], &TimeBounds::NONE);
    assert_eq!((o.histograms_appended, o.series_created), (6, 1));
    let series = s.get(&LabelSet::from_strs(H)).expect("created");
    // A retried push: duplicates; an older one: out of order; the rest appended.
    let o = push_native(&s, H, &hists[4..], &TimeBounds::NONE);
    assert_eq!((o.histograms_appended, o.histogram_duplicates), (4, 2));
    {
        let data = series.data.lock();
        let ring = data.hist.as_ref().expect("held");
        assert_eq!(ring.len(), 10);
        assert_eq!(ring.last().unwrap().1, &hists[9].1);
        let mut h = NativeHistogram::default();
        assert_eq!(ring.at_or_before(100_000, &mut h), Some(90_000));
        assert_eq!(h, hists[5].1);
        assert_eq!(data.first_ts(), Some(15_000));
        assert_eq!(data.newest_ts(), Some(150_000));
    }
    // Refused for their time as floats are: the too-old one counted, the others stored.
    let bounds = TimeBounds {
        newest: 200_000,
        max_ahead_ms: 0,
        oldest: 1,
        service_retention: false,
    };
    let o = push_native(
        &s,
        H,
        &[(300_000, native(500.0)), (165_000, native(420.0))],
        &bounds,
    );
    assert_eq!((o.histograms_appended, o.too_far_in_future), (1, 1));
    // A stale marker marks the series gone.
    let stale = NativeHistogram {
        sum: f64::from_bits(STALE_NAN_BITS),
        ..Default::default()
    };
    let o = push_native(&s, H, &[(180_000, stale)], &TimeBounds::NONE);
    assert_eq!(o.stale_markers, 1);
    assert!(series.data.lock().stale);
    // A snapshot keeps them, bit for bit.
    let dir = tempfile::tempdir().unwrap();
    s.write_snapshot(dir.path(), b"").unwrap();
    let snap = snapshot::read(&dir.path().join(snapshot::FILE_NAME))
        .unwrap()
        .unwrap();
    let (_, floats, hist) = &snap.series[0];
    assert!(floats.is_empty());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    hist.as_ref()
        .unwrap()
        .for_each_in(i64::MIN, i64::MAX, |t, h| a.push((t, h.clone())));
    series
        .data
        .lock()
        .hist
        .as_ref()
        .unwrap()
        .for_each_in(i64::MIN, i64::MAX, |t, h| b.push((t, h.clone())));
    assert_eq!(a.len(), 12);
    assert!(a.iter().zip(&b).all(|(x, y)| x.0 == y.0
        && x.1.sum.to_bits() == y.1.sum.to_bits()
        && x.1.positive == y.1.positive));
    // Idle beyond the retention while its service goes on, it is swept.
    let later = 180_000 + 3_600_001;
    push_within(
        &s,
        &[(
            &[("__name__", "up"), ("job", "shop"), ("version", "v1")],
            later,
            1.0,
        )],
        &TimeBounds::NONE,
    );
    let swept = s.sweep_at(later);
    assert_eq!(swept.series, 1);
    assert!(s.get(&LabelSet::from_strs(H)).is_none());
}
