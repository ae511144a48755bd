//! Remote-write round trips through the real wire: requests built here (prost, snappy
//! block), POSTed to a running deploywatch, and read back from `/api/v1/services` and
//! `/metrics`.

use std::collections::BTreeMap;

use deploywatch::proto::prometheus as rw1;

use crate::harness::{
    labels, series, series_by_version, service, service_names, snappy, stale_nan, version,
    write_request, Deploywatch, Symbols, RW1_CONTENT_TYPE,
};

/// An event time well in the past (2025-11-24), so nothing here depends on the wall clock.
const T0: i64 = 1_764_000_000_000;

/// One series of a test scenario: its labels and its samples.
struct Spec {
    labels: Vec<(&'static str, &'static str)>,
    samples: Vec<(i64, f64)>,
}

impl Spec {
    fn get(&self, name: &str) -> &'static str {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or("")
    }
}

/// What `/api/v1/services` should say about a set of series.
#[derive(Debug, Default)]
struct Expected {
    /// (service, version) -> (series, first sample, newest sample)
    versions: BTreeMap<(String, String), (u64, i64, i64)>,
    /// service -> (series, newest sample)
    services: BTreeMap<String, (u64, i64)>,
    samples: u64,
}

fn expected(specs: &[Spec]) -> Expected {
    let mut e = Expected::default();
    for s in specs {
        let first = s.samples.iter().map(|x| x.0).min().expect("samples");
        let newest = s.samples.iter().map(|x| x.0).max().expect("samples");
        let v = e
            .versions
            .entry((s.get("job").to_string(), s.get("version").to_string()))
            .or_insert((0, i64::MAX, i64::MIN));
        v.0 += 1;
        v.1 = v.1.min(first);
        v.2 = v.2.max(newest);
        let svc = e
            .services
            .entry(s.get("job").to_string())
            .or_insert((0, i64::MIN));
        svc.0 += 1;
        svc.1 = svc.1.max(newest);
        e.samples += s.samples.len() as u64;
    }
    e
}

/// Checks `/api/v1/services` against what the specs imply, exactly.
fn assert_services(dw: &Deploywatch, e: &Expected) {
    let got = dw.services();
    let names = service_names(&got);
    let want_names: Vec<String> = e.services.keys().cloned().collect();
    assert_eq!(names, want_names, "services, sorted by name: {got:#}");
    for (name, &(series, newest)) in &e.services {
        let s = service(&got, name).expect("service listed");
        assert_eq!(s["series"], series, "series of {name}: {got:#}");
        assert_eq!(
            s["newest_sample_at"], newest,
            "newest_sample_at of {name}: {got:#}"
        );
        let want_versions: BTreeMap<String, u64> = e
            .versions
            .iter()
            .filter(|((svc, _), _)| svc == name)
            .map(|((_, v), x)| (v.clone(), x.0))
            .collect();
        assert_eq!(
            series_by_version(&got, name),
            want_versions,
            "versions of {name}: {got:#}"
        );
    }
    for ((svc, ver), &(_, first, newest)) in &e.versions {
        let v = version(&got, svc, ver).expect("version listed");
        assert_eq!(
            v["newest_sample_at"], newest,
            "newest_sample_at of {svc}/{ver}: {got:#}"
        );
        assert_eq!(
            v["first_sample_at"], first,
            "first_sample_at of {svc}/{ver}: {got:#}"
        );
    }
}

/// The label sets of the Prometheus-like scenario: two services (`job`), two versions each,
/// a different number of series per version so that a mix-up shows.
fn two_services_two_versions() -> Vec<Vec<(&'static str, &'static str)>> {
    let mut sets = Vec::new();
    for (job, instance, version, codes) in [
        (
            "checkout",
            "10.0.0.1:8080",
            "v1",
            &["200", "500", "503"][..],
        ),
        ("checkout", "10.0.0.2:8080", "v2", &["200", "500"][..]),
        ("payments", "10.0.1.1:8080", "v1", &["200"][..]),
        (
            "payments",
            "10.0.1.2:8080",
            "v2",
            &["200", "404", "500", "502"][..],
        ),
    ] {
        for code in codes {
            sets.push(vec![
                ("__name__", "http_requests_total"),
                ("code", *code),
                ("instance", instance),
                ("job", job),
                ("version", version),
            ]);
        }
        sets.push(vec![
            ("__name__", "process_resident_memory_bytes"),
            ("instance", instance),
            ("job", job),
            ("version", version),
        ]);
    }
    sets
}

#[test]
fn rw1_as_prometheus_2_42_sends_it() {
    let dw = Deploywatch::start();
    let sets = two_services_two_versions();
    // Each version scrapes at its own offset, so newest_sample_at differs per version.
    let offset = |l: &[(&str, &str)]| -> i64 {
        let job = l.iter().find(|x| x.0 == "job").unwrap().1;
        let ver = l.iter().find(|x| x.0 == "version").unwrap().1;
        match (job, ver) {
            ("checkout", "v1") => 0,
            ("checkout", "v2") => 250,
            ("payments", "v1") => 500,
            _ => 750,
        }
    };

    // Request 1: three scrape rounds, one sample per TimeSeries entry, the label sets
    // repeated and interleaved across services and versions, timestamps increasing.
    let mut specs: Vec<Spec> = sets
        .iter()
        .map(|l| Spec {
            labels: l.clone(),
            samples: Vec::new(),
        })
        .collect();
    let mut entries = Vec::new();
    for round in 0..3i64 {
        for (i, spec) in specs.iter_mut().enumerate() {
            let ts = T0 + round * 15_000 + offset(&spec.labels);
            let v = (round * 10 + i as i64) as f64;
            spec.samples.push((ts, v));
            entries.push(series(&spec.labels, &[(ts, v)]));
        }
    }
    let first = write_request(entries);
    assert!(first.timeseries.iter().all(|t| t.samples.len() == 1));
    let (status, body) = dw.push_v1(&first);
    assert_eq!(status, 204, "{body}");
    assert_services(&dw, &expected(&specs));

    // Request 2: the next rounds with each series' entries consecutive (the same label set
    // in adjacent entries), and one version a round ahead of the others.
    let mut entries = Vec::new();
    for (i, spec) in specs.iter_mut().enumerate() {
        let rounds = if spec.get("job") == "payments" && spec.get("version") == "v1" {
            5
        } else {
            4
        };
        for round in 3..rounds {
            let ts = T0 + round * 15_000 + offset(&spec.labels);
            spec.samples.push((ts, (round * 10 + i as i64) as f64));
            entries.push(series(
                &spec.labels,
                &[(ts, (round * 10 + i as i64) as f64)],
            ));
        }
    }
    let (status, body) = dw.push_v1(&write_request(entries));
    assert_eq!(status, 204, "{body}");

    let e = expected(&specs);
    assert_services(&dw, &e);
    assert_eq!(dw.samples_total("appended"), e.samples as f64);
    assert_eq!(dw.samples_total("duplicate"), 0.0);
    assert_eq!(dw.samples_total("out_of_order"), 0.0);
    assert_eq!(dw.samples_total("series_limit"), 0.0);
    assert_eq!(
        dw.must_metric("deploywatch_store_active_series", &[]),
        sets.len() as f64
    );
    assert_eq!(
        dw.must_metric(
            "deploywatch_ingest_requests_total",
            &[("protocol", "1.0"), ("code", "204")]
        ),
        2.0
    );

    // ?service= narrows the answer to one service.
    let one = dw.get_json("/api/v1/services?service=payments");
    assert_eq!(service_names(&one), ["payments"], "{one:#}");
    let none = dw.get_json("/api/v1/services?service=nope");
    assert_eq!(service_names(&none), Vec::<String>::new(), "{none:#}");
}

#[test]
fn retried_push_counts_duplicates_and_doubles_nothing() {
    let dw = Deploywatch::start();
    // What Prometheus 2.42 sends with a 1s scrape interval and a 5s send deadline: several
    // samples of each series in one request, one per entry, interleaved.
    let a = [
        ("__name__", "http_requests_total"),
        ("code", "200"),
        ("job", "checkout"),
        ("version", "v1"),
    ];
    let b = [
        ("__name__", "http_requests_total"),
        ("code", "500"),
        ("job", "checkout"),
        ("version", "v1"),
    ];
    let mut entries = Vec::new();
    for k in 0..3 {
        entries.push(series(&a, &[(T0 + k * 1000, 10.0 + k as f64)]));
        entries.push(series(&b, &[(T0 + k * 1000, 1.0)]));
    }
    let req = write_request(entries);
    let (status, body) = dw.push_v1(&req);
    assert_eq!(status, 204, "{body}");
    let before = dw.services();

    // The answer was lost; Prometheus sends the very same request again.
    let (status, body) = dw.push_v1(&req);
    assert_eq!(status, 204, "a retried push is accepted: {body}");

    assert_eq!(dw.services(), before, "a retried push changes nothing");
    assert_eq!(dw.samples_total("appended"), 6.0, "nothing doubled");
    assert_eq!(dw.must_metric("deploywatch_store_active_series", &[]), 2.0);
    assert_eq!(
        (
            dw.samples_total("duplicate"),
            dw.samples_total("out_of_order")
        ),
        (6.0, 0.0),
        "every sample of the retried push is a duplicate (same series, same timestamp as \
         already held), not out of order"
    );
}

#[test]
fn retried_single_sample_push_counts_duplicates() {
    let dw = Deploywatch::start();
    let req = write_request(vec![
        series(&[("__name__", "up"), ("job", "checkout")], &[(T0, 1.0)]),
        series(&[("__name__", "up"), ("job", "payments")], &[(T0, 1.0)]),
    ]);
    assert_eq!(dw.push_v1(&req).0, 204);
    assert_eq!(dw.push_v1(&req).0, 204);
    assert_eq!(dw.samples_total("appended"), 2.0);
    assert_eq!(dw.samples_total("duplicate"), 2.0);
    assert_eq!(dw.samples_total("out_of_order"), 0.0);
}

#[test]
fn out_of_order_samples_are_counted_and_dropped() {
    let dw = Deploywatch::start();
    let l = [
        ("__name__", "http_requests_total"),
        ("job", "checkout"),
        ("version", "v1"),
    ];
    let (status, body) = dw.push_v1(&write_request(vec![series(&l, &[(T0 + 2000, 5.0)])]));
    assert_eq!(status, 204, "{body}");
    // Older than what is held: accepted (Prometheus must not retry it) but dropped.
    let (status, body) = dw.push_v1(&write_request(vec![series(
        &l,
        &[(T0 + 1000, 4.0), (T0 + 500, 3.0)],
    )]));
    assert_eq!(status, 204, "{body}");
    assert_eq!(dw.samples_total("appended"), 1.0);
    assert_eq!(dw.samples_total("out_of_order"), 2.0);
    assert_eq!(dw.samples_total("duplicate"), 0.0);
    let s = dw.services();
    assert_eq!(
        version(&s, "checkout", "v1").unwrap()["newest_sample_at"],
        T0 + 2000,
        "{s:#}"
    );
    assert_eq!(version(&s, "checkout", "v1").unwrap()["series"], 1, "{s:#}");
}

#[test]
fn metadata_only_request_is_accepted_and_creates_no_series() {
    let dw = Deploywatch::start();
    let req = rw1::WriteRequest {
        metadata: vec![
            rw1::MetricMetadata {
                r#type: rw1::metric_metadata::MetricType::Counter as i32,
                metric_family_name: "http_requests_total".into(),
                help: "Requests served.".into(),
                unit: String::new(),
            },
            rw1::MetricMetadata {
                r#type: rw1::metric_metadata::MetricType::Histogram as i32,
                metric_family_name: "http_request_duration_seconds".into(),
                help: "Request latency.".into(),
                unit: "seconds".into(),
            },
        ],
        ..Default::default()
    };
    let (status, body) = dw.push_v1(&req);
    assert_eq!(status, 204, "{body}");
    let s = dw.services();
    assert_eq!(service_names(&s), Vec::<String>::new(), "{s:#}");
    assert_eq!(dw.must_metric("deploywatch_store_active_series", &[]), 0.0);
    assert_eq!(dw.samples_total("appended"), 0.0);
    assert_eq!(
        dw.must_metric("deploywatch_ingest_metadata_total", &[]),
        2.0
    );
}

#[test]
fn stale_markers_are_accepted_and_counted() {
    let dw = Deploywatch::start();
    let l = [
        ("__name__", "http_requests_total"),
        ("job", "checkout"),
        ("version", "v1"),
    ];
    let (status, body) = dw.push_v1(&write_request(vec![series(&l, &[(T0, 7.0)])]));
    assert_eq!(status, 204, "{body}");
    // The target went away: Prometheus writes a staleness marker at the next scrape.
    let marker = write_request(vec![series(&l, &[(T0 + 15_000, stale_nan())])]);
    assert_eq!(
        marker.timeseries[0].samples[0].value.to_bits(),
        0x7ff0_0000_0000_0002
    );
    let (status, body) = dw.push_v1(&marker);
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        dw.must_metric("deploywatch_ingest_stale_markers_total", &[]),
        1.0
    );
    assert_eq!(dw.samples_total("appended"), 2.0);
    let s = dw.services();
    assert_eq!(version(&s, "checkout", "v1").unwrap()["series"], 1, "{s:#}");
}

#[test]
fn classic_histogram_buckets_are_held_as_series() {
    let dw = Deploywatch::start();
    let base = [("job", "checkout"), ("route", "/pay"), ("version", "v2")];
    let mut entries = Vec::new();
    for (le, count) in [("0.05", 10.0), ("0.1", 14.0), ("0.5", 19.0), ("+Inf", 20.0)] {
        let mut l = base.to_vec();
        l.push(("__name__", "http_request_duration_seconds_bucket"));
        l.push(("le", le));
        entries.push(series(&l, &[(T0, count)]));
    }
    for (name, v) in [
        ("http_request_duration_seconds_sum", 1.7),
        ("http_request_duration_seconds_count", 20.0),
    ] {
        let mut l = base.to_vec();
        l.push(("__name__", name));
        entries.push(series(&l, &[(T0, v)]));
    }
    let (status, body) = dw.push_v1(&write_request(entries));
    assert_eq!(status, 204, "{body}");
    let s = dw.services();
    assert_eq!(
        series_by_version(&s, "checkout"),
        BTreeMap::from([("v2".to_string(), 6)]),
        "{s:#}"
    );
    assert_eq!(dw.samples_total("appended"), 6.0);
}

#[test]
fn native_histograms_are_kept_and_counted() {
    let dw = Deploywatch::start();
    let float = series(
        &[
            ("__name__", "http_requests_total"),
            ("job", "checkout"),
            ("version", "v1"),
        ],
        &[(T0, 3.0)],
    );
    let native = |t: i64| rw1::Histogram {
        count: Some(rw1::histogram::Count::CountInt(5)),
        sum: 0.8,
        schema: 3,
        zero_threshold: 1e-128,
        zero_count: Some(rw1::histogram::ZeroCount::ZeroCountInt(0)),
        positive_spans: vec![rw1::BucketSpan {
            offset: 0,
            length: 2,
        }],
        positive_deltas: vec![2, 1],
        timestamp: t,
        ..Default::default()
    };
    let hist = rw1::TimeSeries {
        labels: labels(&[
            ("__name__", "http_request_duration_seconds"),
            ("job", "checkout"),
            ("version", "v1"),
        ]),
        histograms: vec![native(T0), native(T0 + 1000)],
        ..Default::default()
    };
    let req = write_request(vec![float, hist]);
    let (status, body) = dw.push_v1(&req);
    assert_eq!(status, 204, "{body}");
    let histograms = |outcome: &str| {
        dw.must_metric(
            "deploywatch_ingest_histogram_samples_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(histograms("appended"), 2.0);
    assert_eq!(dw.samples_total("appended"), 1.0);
    // The histogram series is a series of its version like any other.
    let s = dw.services();
    assert_eq!(
        series_by_version(&s, "checkout"),
        BTreeMap::from([("v1".to_string(), 2)]),
        "{s:#}"
    );
    // A retried push: held already, nothing appended twice.
    let (status, body) = dw.push_v1(&req);
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        (histograms("appended"), histograms("duplicate")),
        (2.0, 2.0)
    );
}

#[test]
fn missing_content_encoding_on_rw1_is_read_as_snappy() {
    let dw = Deploywatch::start();
    let req = write_request(vec![series(
        &[("__name__", "up"), ("job", "checkout"), ("version", "v1")],
        &[(T0, 1.0)],
    )]);
    let (status, _, body) = dw.post_raw(
        "/api/v1/write",
        Some(RW1_CONTENT_TYPE),
        None,
        snappy(&prost::Message::encode_to_vec(&req)),
    );
    assert_eq!(status, 204, "{body}");
    let s = dw.services();
    assert_eq!(
        series_by_version(&s, "checkout"),
        BTreeMap::from([("v1".to_string(), 1)]),
        "{s:#}"
    );
    assert_eq!(dw.samples_total("appended"), 1.0);
}

fn header_u64(h: &hyper::HeaderMap, name: &str) -> u64 {
    h.get(name)
        .unwrap_or_else(|| panic!("response has no {name} header: {h:?}"))
        .to_str()
        .expect("ASCII header")
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not a number: {e}"))
}

#[test]
fn rw2_request_with_symbol_table() {
    let dw = Deploywatch::start();
    let mut syms = Symbols::default();
    let mut specs = Vec::new();
    let mut ts = Vec::new();
    for (code, ver, n) in [("200", "v1", 3), ("500", "v1", 2), ("200", "v2", 4)] {
        let labels = vec![
            ("__name__", "http_requests_total"),
            ("code", code),
            ("job", "checkout"),
            ("version", ver),
        ];
        let samples: Vec<(i64, f64)> = (0..n).map(|k| (T0 + k * 1000, k as f64)).collect();
        ts.push(syms.series(&labels, &samples));
        specs.push(Spec { labels, samples });
    }
    let req = syms.request(ts);
    assert_eq!(req.symbols[0], "", "symbols[0] is the empty string");
    let (status, headers, body) = dw.push_v2(&req);
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        header_u64(&headers, "X-Prometheus-Remote-Write-Samples-Written"),
        9
    );
    assert_eq!(
        header_u64(&headers, "X-Prometheus-Remote-Write-Histograms-Written"),
        0
    );
    assert_eq!(
        header_u64(&headers, "X-Prometheus-Remote-Write-Exemplars-Written"),
        0
    );
    assert_services(&dw, &expected(&specs));
    assert_eq!(dw.samples_total("appended"), 9.0);
    assert_eq!(
        dw.must_metric(
            "deploywatch_ingest_requests_total",
            &[("protocol", "2.0"), ("code", "204")]
        ),
        1.0
    );
}

#[test]
fn rw1_and_rw2_land_in_the_same_series() {
    let dw = Deploywatch::start();
    let l = [
        ("__name__", "http_requests_total"),
        ("code", "200"),
        ("job", "checkout"),
        ("version", "v1"),
    ];
    let (status, body) = dw.push_v1(&write_request(vec![series(&l, &[(T0, 1.0)])]));
    assert_eq!(status, 204, "{body}");

    let mut syms = Symbols::default();
    // Symbols in an order unrelated to the label order, as a real symbolizer may produce.
    for s in ["v1", "job", "checkout", "200"] {
        syms.sym(s);
    }
    let s2 = syms.series(&l, &[(T0, 1.0), (T0 + 1000, 2.0)]);
    let (status, headers, body) = dw.push_v2(&syms.request(vec![s2]));
    assert_eq!(status, 204, "{body}");
    // The first sample is the one 1.0 already wrote: a duplicate, counted as written.
    assert_eq!(
        header_u64(&headers, "X-Prometheus-Remote-Write-Samples-Written"),
        2
    );

    let (status, body) = dw.push_v1(&write_request(vec![series(&l, &[(T0 + 2000, 3.0)])]));
    assert_eq!(status, 204, "{body}");

    let s = dw.services();
    assert_eq!(
        series_by_version(&s, "checkout"),
        BTreeMap::from([("v1".to_string(), 1)]),
        "{s:#}"
    );
    assert_eq!(
        version(&s, "checkout", "v1").unwrap()["newest_sample_at"],
        T0 + 2000,
        "{s:#}"
    );
    assert_eq!(dw.must_metric("deploywatch_store_active_series", &[]), 1.0);
    assert_eq!(dw.samples_total("appended"), 3.0);
    assert_eq!(dw.samples_total("duplicate"), 1.0);
}
