//! Every class of bad remote-write input gets its documented status (400 for data that will
//! stay bad, 413 over the size limit, 415 for an unsupported format) and changes no state.
//! Each test seeds deploywatch with valid data first, so "unchanged" means something. And
//! (issue 16) every error of the rest of the API is JSON naming what is wrong in the
//! user's terms.

use hyper::Method;
use prost::Message;
use serde_json::Value;

use deploywatch::proto::prometheus as rw1;

use crate::harness::{
    request, series, snappy, version, write_request, Deploywatch, Symbols, RW1_CONTENT_TYPE,
    RW2_CONTENT_TYPE,
};

const T0: i64 = 1_764_000_000_000;

/// The series every test starts with.
fn seed_labels() -> Vec<(&'static str, &'static str)> {
    vec![
        ("__name__", "http_requests_total"),
        ("code", "200"),
        ("job", "checkout"),
        ("version", "v1"),
    ]
}

/// A deploywatch holding one series with one sample.
fn seeded(dw: Deploywatch) -> Deploywatch {
    let (status, body) = dw.push_v1(&write_request(vec![series(&seed_labels(), &[(T0, 1.0)])]));
    assert_eq!(status, 204, "seeding: {body}");
    dw
}

/// What a rejected request must leave as it was.
#[derive(Debug, PartialEq)]
struct State {
    services: Value,
    samples: Vec<(String, f64)>,
    active_series: f64,
    stale_markers: f64,
    dropped: f64,
    metadata: f64,
}

fn state(dw: &Deploywatch) -> State {
    State {
        services: dw.services(),
        samples: ["appended", "duplicate", "out_of_order", "series_limit"]
            .iter()
            .map(|o| (o.to_string(), dw.samples_total(o)))
            .collect(),
        active_series: dw.must_metric("deploywatch_store_active_series", &[]),
        stale_markers: dw.must_metric("deploywatch_ingest_stale_markers_total", &[]),
        dropped: dw.must_metric("deploywatch_ingest_dropped_total", &[]),
        metadata: dw.must_metric("deploywatch_ingest_metadata_total", &[]),
    }
}

/// POSTs `body` to /api/v1/write and checks the status, that the answer is one line
/// naming the problem (`keyword`, case-insensitive), and that nothing changed.
fn assert_rejected(
    dw: &Deploywatch,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: Vec<u8>,
    want_status: u16,
    keyword: &str,
) {
    let before = state(dw);
    let (status, _, text) = dw.post_raw("/api/v1/write", content_type, content_encoding, body);
    assert_eq!(status, want_status, "answer: {text:?}");
    let line = text.strip_suffix('\n').unwrap_or(&text);
    assert!(
        !line.is_empty() && !line.contains('\n'),
        "expected a one-line reason, got {text:?}"
    );
    assert!(
        line.to_lowercase().contains(&keyword.to_lowercase()),
        "the reason {line:?} should mention {keyword:?}"
    );
    assert_eq!(state(dw), before, "a rejected request changed state");
    // The refused request was counted as such.
    assert!(
        dw.metric(
            "deploywatch_ingest_requests_total",
            &[("code", &want_status.to_string())]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "deploywatch_ingest_requests_total{{code=\"{want_status}\"}} not counted"
    );
}

/// A bad RW 1.0 body: snappy-compressed `encoded`, sent with Prometheus' headers.
fn assert_rw1_rejected(dw: &Deploywatch, encoded: &[u8], want_status: u16, keyword: &str) {
    assert_rejected(
        dw,
        Some(RW1_CONTENT_TYPE),
        Some("snappy"),
        snappy(encoded),
        want_status,
        keyword,
    );
}

/// Encodes `req`, then swaps the bytes of `placeholder` (which must occur exactly once) for
/// `replacement` of the same length: a way to put bytes prost would not write, such as
/// invalid UTF-8, into an otherwise valid message.
fn patched(req: &rw1::WriteRequest, placeholder: &[u8], replacement: &[u8]) -> Vec<u8> {
    assert_eq!(placeholder.len(), replacement.len());
    let mut bytes = req.encode_to_vec();
    let at: Vec<usize> = bytes
        .windows(placeholder.len())
        .enumerate()
        .filter(|(_, w)| *w == placeholder)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "placeholder must occur once");
    bytes[at[0]..at[0] + placeholder.len()].copy_from_slice(replacement);
    bytes
}

/// A series whose labels are taken as given (not sorted).
fn raw_series(pairs: &[(&str, &str)], ts: i64) -> rw1::TimeSeries {
    rw1::TimeSeries {
        labels: pairs
            .iter()
            .map(|(n, v)| rw1::Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: vec![rw1::Sample {
            value: 1.0,
            timestamp: ts,
        }],
        ..Default::default()
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a failure reproduces.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn not_snappy_is_400() {
    let dw = seeded(Deploywatch::start());
    // Random bytes whose first byte announces a small length, so the only problem is that
    // they are not a snappy block (a huge announced length would be a 413).
    let mut body = noise(200, 0x5eed);
    body[0] = 0x7f;
    assert!(
        snap::raw::Decoder::new().decompress_vec(&body).is_err(),
        "test data must not be snappy"
    );
    assert_rejected(
        &dw,
        Some(RW1_CONTENT_TYPE),
        Some("snappy"),
        body,
        400,
        "snappy",
    );
}

#[test]
fn truncated_snappy_is_400() {
    let dw = seeded(Deploywatch::start());
    let req = write_request(
        (0..20)
            .map(|i| {
                series(
                    &[
                        ("__name__", "up"),
                        ("instance", &format!("host-{i}")),
                        ("job", "checkout"),
                    ],
                    &[(T0, 1.0)],
                )
            })
            .collect(),
    );
    let full = snappy(&req.encode_to_vec());
    let cut = full[..full.len() / 2].to_vec();
    assert_rejected(
        &dw,
        Some(RW1_CONTENT_TYPE),
        Some("snappy"),
        cut,
        400,
        "snappy",
    );
}

#[test]
fn snappy_of_garbage_is_400() {
    let dw = seeded(Deploywatch::start());
    // Field 1 (timeseries) announcing 2^35 bytes: not a WriteRequest however read.
    let mut garbage = vec![0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
    garbage.extend(noise(64, 42));
    assert!(
        rw1::WriteRequest::decode(&garbage[..]).is_err(),
        "test data must not decode"
    );
    assert_rw1_rejected(&dw, &garbage, 400, "protobuf");
}

#[test]
fn protobuf_with_wrong_wire_type_is_400() {
    let dw = seeded(Deploywatch::start());
    // WriteRequest field 1 (timeseries, a message) sent as a varint.
    assert_rw1_rejected(&dw, &[0x08, 0x01], 400, "wire type");
    // Sample.timestamp (field 2, a varint) sent as fixed64, inside an otherwise valid
    // series; built by hand, as prost cannot write it.
    let sample = {
        let mut s = vec![0x09];
        s.extend(1.0f64.to_le_bytes());
        s.push(0x11);
        s.extend(T0.to_le_bytes());
        s
    };
    let label = |n: &str, v: &str| {
        let mut l = vec![0x0a, n.len() as u8];
        l.extend(n.as_bytes());
        l.push(0x12);
        l.push(v.len() as u8);
        l.extend(v.as_bytes());
        l
    };
    let mut ts = Vec::new();
    for l in [label("__name__", "up"), label("job", "checkout")] {
        ts.push(0x0a);
        ts.push(l.len() as u8);
        ts.extend(l);
    }
    ts.push(0x12);
    ts.push(sample.len() as u8);
    ts.extend(sample);
    let mut msg = vec![0x0a, ts.len() as u8];
    msg.extend(ts);
    assert_rw1_rejected(&dw, &msg, 400, "wire type");
}

#[test]
fn unsorted_labels_are_400() {
    let dw = seeded(Deploywatch::start());
    let req = write_request(vec![raw_series(
        &[("job", "checkout"), ("__name__", "up")],
        T0,
    )]);
    assert_rw1_rejected(&dw, &req.encode_to_vec(), 400, "sorted");
}

#[test]
fn duplicate_label_names_are_400() {
    let dw = seeded(Deploywatch::start());
    let req = write_request(vec![raw_series(
        &[("__name__", "up"), ("job", "checkout"), ("job", "payments")],
        T0,
    )]);
    assert_rw1_rejected(&dw, &req.encode_to_vec(), 400, "duplicate");
}

#[test]
fn empty_label_name_is_400() {
    let dw = seeded(Deploywatch::start());
    let req = write_request(vec![raw_series(
        &[("", "x"), ("__name__", "up"), ("job", "checkout")],
        T0,
    )]);
    assert_rw1_rejected(&dw, &req.encode_to_vec(), 400, "empty label name");
}

#[test]
fn invalid_utf8_in_a_new_series_label_value_is_400() {
    let dw = seeded(Deploywatch::start());
    let req = write_request(vec![series(
        &[("__name__", "up"), ("job", "checkout"), ("route", "/a@@")],
        &[(T0, 1.0)],
    )]);
    let bytes = patched(&req, b"/a@@", b"/a\xff\xfe");
    assert_rw1_rejected(&dw, &bytes, 400, "UTF-8");
}

#[test]
fn series_without_labels_is_400() {
    let dw = seeded(Deploywatch::start());
    let req = write_request(vec![rw1::TimeSeries {
        samples: vec![rw1::Sample {
            value: 1.0,
            timestamp: T0,
        }],
        ..Default::default()
    }]);
    assert_rw1_rejected(&dw, &req.encode_to_vec(), 400, "no labels");
}

#[test]
fn rw2_label_ref_outside_the_symbol_table_is_400() {
    let dw = seeded(Deploywatch::start());
    let mut syms = Symbols::default();
    let mut ts = syms.series(&[("__name__", "up"), ("job", "checkout")], &[(T0, 1.0)]);
    ts.labels_refs[3] = 99; // the value of `job`
    let req = syms.request(vec![ts]);
    assert!(req.symbols.len() < 99);
    assert_rejected(
        &dw,
        Some(RW2_CONTENT_TYPE),
        Some("snappy"),
        snappy(&req.encode_to_vec()),
        400,
        "symbol table",
    );
}

#[test]
fn empty_body_is_400() {
    let dw = seeded(Deploywatch::start());
    assert_rejected(
        &dw,
        Some(RW1_CONTENT_TYPE),
        Some("snappy"),
        Vec::new(),
        400,
        "empty",
    );
}

#[test]
fn wrong_content_type_is_415() {
    let dw = seeded(Deploywatch::start());
    let body =
        snappy(&write_request(vec![series(&seed_labels(), &[(T0 + 1000, 2.0)])]).encode_to_vec());
    assert_rejected(
        &dw,
        Some("text/plain"),
        Some("snappy"),
        body.clone(),
        415,
        "content type",
    );
    assert_rejected(
        &dw,
        Some("application/x-protobuf;proto=io.prometheus.write.v9.Nope"),
        Some("snappy"),
        body,
        415,
        "content type",
    );
}

#[test]
fn wrong_content_encoding_is_415() {
    let dw = seeded(Deploywatch::start());
    let body =
        snappy(&write_request(vec![series(&seed_labels(), &[(T0 + 1000, 2.0)])]).encode_to_vec());
    assert_rejected(
        &dw,
        Some(RW1_CONTENT_TYPE),
        Some("gzip"),
        body,
        415,
        "encoding",
    );
}

#[test]
fn body_over_the_limit_is_413() {
    let dw = seeded(Deploywatch::start_with_config(
        "limits: {max_body_bytes: 1000}\n",
    ));

    // Over the limit as sent: incompressible label values.
    let big = write_request(
        (0..20)
            .map(|i| {
                let v: String = noise(60, i + 1)
                    .iter()
                    .map(|b| char::from(b'a' + b % 26))
                    .collect();
                series(
                    &[("__name__", "up"), ("job", "checkout"), ("pod", &v)],
                    &[(T0, 1.0)],
                )
            })
            .collect(),
    );
    let compressed = snappy(&big.encode_to_vec());
    assert!(
        compressed.len() > 1000,
        "compressed body {} bytes",
        compressed.len()
    );
    assert_rejected(
        &dw,
        Some(RW1_CONTENT_TYPE),
        Some("snappy"),
        compressed,
        413,
        "limit",
    );

    // Small as sent, over the limit once decompressed: the same entry many times.
    let bomb = write_request(vec![series(&seed_labels(), &[(T0 + 1000, 1.0)]); 40]);
    let encoded = bomb.encode_to_vec();
    let compressed = snappy(&encoded);
    assert!(
        compressed.len() < 1000 && encoded.len() > 1000,
        "{} -> {} bytes",
        encoded.len(),
        compressed.len()
    );
    assert_rejected(
        &dw,
        Some(RW1_CONTENT_TYPE),
        Some("snappy"),
        compressed,
        413,
        "limit",
    );
}

#[test]
fn mixed_valid_and_invalid_series_is_400_and_stores_nothing() {
    let dw = seeded(Deploywatch::start());
    let new_valid = series(
        &[("__name__", "up"), ("job", "checkout"), ("version", "v2")],
        &[(T0, 1.0)],
    );
    let next_sample = series(&seed_labels(), &[(T0 + 1000, 2.0)]);

    // Caught while decoding: unsorted labels after two valid series.
    let req = write_request(vec![
        new_valid.clone(),
        next_sample.clone(),
        raw_series(&[("job", "checkout"), ("__name__", "up")], T0),
    ]);
    assert_rw1_rejected(&dw, &req.encode_to_vec(), 400, "sorted");

    // Caught after decoding, when the store meets a new series: invalid UTF-8.
    let req = write_request(vec![
        new_valid,
        next_sample,
        series(
            &[("__name__", "up"), ("job", "checkout"), ("route", "/b@@")],
            &[(T0, 1.0)],
        ),
    ]);
    assert_rw1_rejected(&dw, &patched(&req, b"/b@@", b"/b\xc3\x28"), 400, "UTF-8");

    let s = dw.services();
    assert!(
        version(&s, "checkout", "v2").is_none(),
        "the valid new series was stored: {s:#}"
    );
    assert_eq!(
        version(&s, "checkout", "v1").unwrap()["newest_sample_at"],
        T0,
        "{s:#}"
    );
    assert_eq!(dw.samples_total("appended"), 1.0);

    // The same valid series alone go through.
    let (status, body) = dw.push_v1(&write_request(vec![series(
        &seed_labels(),
        &[(T0 + 1000, 2.0)],
    )]));
    assert_eq!(status, 204, "{body}");
    assert_eq!(dw.samples_total("appended"), 2.0);
}

#[test]
fn rw2_malformed_label_refs_are_400() {
    let dw = seeded(Deploywatch::start());
    // symbols[0] must be the empty string.
    let mut syms = Symbols::default();
    let ts = syms.series(&[("__name__", "up"), ("job", "checkout")], &[(T0, 1.0)]);
    let mut req = syms.request(vec![ts]);
    req.symbols[0] = "x".into();
    assert_rejected(
        &dw,
        Some(RW2_CONTENT_TYPE),
        Some("snappy"),
        snappy(&req.encode_to_vec()),
        400,
        "symbols[0]",
    );
    // An odd number of label references: a name without a value.
    let mut syms = Symbols::default();
    let mut ts = syms.series(&[("__name__", "up"), ("job", "checkout")], &[(T0, 1.0)]);
    ts.labels_refs.pop();
    let req = syms.request(vec![ts]);
    assert_rejected(
        &dw,
        Some(RW2_CONTENT_TYPE),
        Some("snappy"),
        snappy(&req.encode_to_vec()),
        400,
        "odd number",
    );
}

// ---------------------------------------------------------------------------------------
// The rest of the API (issue 16): every error answer is JSON, `{"error": "one line"}`,
// names the field or parameter, quotes no implementation and says nothing twice.
// ---------------------------------------------------------------------------------------

/// Words of the implementation an error message must not quote: type names, serde's and the
/// JSON parser's vocabulary, axum's rejections.
const INTERNALS: [&str; 12] = [
    "struct",
    "DeployRequest",
    "FlaggerPayload",
    "Change",
    "sequence",
    "i64",
    "elements",
    "serde",
    "Failed to deserialize",
    "EOF while parsing",
    "key must be a string",
    "expected map",
];

/// Checks an API error answer: `status`, JSON `{"error": …}` of one line mentioning `says`,
/// no implementation words, no part repeated. Returns the message.
fn assert_api_error(res: &crate::harness::Response, status: u16, says: &str, what: &str) -> String {
    assert_eq!(res.status, status, "{what}: {}", res.text());
    let ct = res
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        ct.as_deref(),
        Some("application/json"),
        "{what}: {}",
        res.text()
    );
    let v: Value = serde_json::from_slice(&res.body)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", res.text()));
    let error = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no \"error\" in {v}"))
        .to_string();
    assert!(
        !error.is_empty() && !error.contains('\n'),
        "{what}: {error:?}"
    );
    assert!(
        error.contains(says),
        "{what}: {error:?} should say {says:?}"
    );
    for word in INTERNALS {
        assert!(!error.contains(word), "{what}: {error:?} quotes {word:?}");
    }
    // Nothing said twice ("invalid deploy: body: invalid deploy: …").
    let parts: Vec<&str> = error.split(": ").collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[..i].contains(p), "{what}: {error:?} repeats {p:?}");
    }
    error
}

/// Registration bodies that are not a registration: each `400` names the field in the
/// user's terms — what it must be and what it was — never serde's words (`expected struct
/// DeployRequest with 9 elements`).
#[test]
fn issue_16_a_bad_registration_is_json_naming_the_field_in_the_users_terms() {
    let dw = Deploywatch::start();
    let cases: [(&[u8], &str); 14] = [
        (br#"["checkout", "v2"]"#, "body: expected a JSON object with at least \"service\" and \"version\", got a list"),
        (br#""checkout""#, "body: expected a JSON object"),
        (b"", "body: empty"),
        (b"{not json", "body: not valid JSON (line 1, column 2)"),
        (br#"{"service": "a", "version": "v2""#, "body: not valid JSON"),
        (br#"{"service": 3, "version": "v2"}"#, "service: expected a string, got the number 3"),
        (br#"{"service": "a", "version": "v2", "at": "now"}"#, "at: expected Unix milliseconds of event time (an integer), got the string \"now\""),
        (br#"{"service": "a", "version": "v2", "at": 1764000000}"#, "at: 1764000000 is not Unix milliseconds"),
        (br#"{"service": "a", "version": "v2", "changes": {"component": "db"}}"#, "changes: expected a list of changes, each {\"component\", \"summary\", \"files\"}, got an object"),
        (br#"{"service": "a", "version": "v2", "changes": ["db"]}"#, "changes[0]: expected a change: an object with component, summary and files, got the string \"db\""),
        (br#"{"service": "a", "version": "v2", "changes": [{"component": "db", "files": "src/db.rs"}]}"#, "changes[0].files: expected a list of file paths (strings), got the string \"src/db.rs\""),
        (br#"{"service": "a", "version": "v2", "changes": [{"component": "db", "file": ["x"]}]}"#, "changes[0].file: unknown field; the fields are component, summary, files"),
        (br#"{"service": "a", "version": "v2", "colour": "red"}"#, "colour: unknown field; the fields are service, version,"),
        (br#"{"service": "a", "version": "v2", "strategy": "yolo"}"#, "strategy: expected canary, rolling or blue-green, got \"yolo\""),
    ];
    for (body, says) in cases {
        let res = request(
            Method::POST,
            &format!("{}/api/v1/deploys", dw.url()),
            &[("content-type", "application/json")],
            body.to_vec(),
        );
        assert_api_error(&res, 400, says, &String::from_utf8_lossy(body));
    }
    let res = request(
        Method::POST,
        &format!("{}/api/v1/deploys?dry_run=1", dw.url()),
        &[("content-type", "application/json")],
        br#"{"service": "a", "version": "v2"}"#.to_vec(),
    );
    assert_api_error(&res, 400, "unknown query parameter \"dry_run\"", "?dry_run");
    assert_eq!(
        dw.get_json("/api/v1/deploys"),
        serde_json::json!({"deploys": []})
    );
}

/// Every other API error: unknown query parameters and values (`400`, not ignored), the
/// verdict without a service, unknown ids, paths and methods (`404`, `405`), a gate's bad
/// payload, and a refused remote-write request — each JSON.
#[test]
fn issue_16_every_api_error_is_json_and_unknown_parameters_are_400() {
    let dw = seeded(Deploywatch::start());
    let url = |path: &str| format!("{}{path}", dw.url());
    let get = |path: &str| request(Method::GET, &url(path), &[], Vec::new());
    let id = crate::sim::register_deploy(
        &dw,
        &serde_json::json!({"service": "checkout", "version": "v2", "at": T0}),
    )
    .unwrap();
    for (path, status, says) in [
        (
            "/api/v1/deploys?servce=checkout",
            400,
            "unknown query parameter \"servce\": GET /api/v1/deploys takes only service",
        ),
        (
            "/api/v1/deploys?verdict=rollback",
            400,
            "unknown query parameter \"verdict\"",
        ),
        (
            "/api/v1/deploys?service=checkout&service=cart",
            400,
            "query parameter \"service\" given twice",
        ),
        (
            "/api/v1/deploys?service=",
            400,
            "service: must not be empty",
        ),
        (
            "/api/v1/services?job=checkout",
            400,
            "unknown query parameter \"job\": GET /api/v1/services takes only service",
        ),
        (
            &format!("/api/v1/deploys/{id}?format=json"),
            400,
            "unknown query parameter \"format\"",
        ),
        (
            &format!("/api/v1/deploys/{id}/report?format=xml"),
            400,
            "format: expected markdown, md or json, got \"xml\"",
        ),
        (
            &format!("/api/v1/deploys/{id}/report?fmt=json"),
            400,
            "unknown query parameter \"fmt\"",
        ),
        ("/api/v1/verdict", 400, "service: required"),
        (
            "/api/v1/verdict?service=checkout&env=prod",
            400,
            "unknown query parameter \"env\"",
        ),
        ("/api/v1/deploys/nope", 404, "no deploy with id \"nope\""),
        (
            "/api/v1/deploys/nope/report",
            404,
            "no deploy with id \"nope\"",
        ),
        ("/api/v1/deploy", 404, "no API endpoint GET /api/v1/deploy"),
    ] {
        assert_api_error(&get(path), status, says, path);
    }
    // The filters that are taken still work.
    assert_eq!(get("/api/v1/deploys?service=checkout").status, 200);
    assert_eq!(
        get(&format!("/api/v1/deploys/{id}/report?format=md")).status,
        200
    );

    let res = request(Method::DELETE, &url("/api/v1/deploys"), &[], Vec::new());
    let e = assert_api_error(
        &res,
        405,
        "DELETE is not allowed on /api/v1/deploys",
        "DELETE",
    );
    assert!(res.headers.contains_key("allow"), "{e}");
    for (path, body, says) in [
        (
            "/api/v1/gate",
            br#"{"namespace": 3}"#.to_vec(),
            "namespace: expected a string, got the number 3",
        ),
        (
            "/api/v1/gate",
            br#"[1, 2]"#.to_vec(),
            "body: expected Flagger's webhook payload",
        ),
        ("/api/v1/gate", b"{".to_vec(), "body: not valid JSON"),
        (
            "/api/v1/gate",
            br#"{"namespace": "shop"}"#.to_vec(),
            "name: required (or metadata.service)",
        ),
        (
            "/api/v1/rollback-hook",
            br#"{"name": "web", "metadata": {"version": 2}}"#.to_vec(),
            "metadata.version: expected a string, got the number 2",
        ),
    ] {
        let res = request(
            Method::POST,
            &url(path),
            &[("content-type", "application/json")],
            body.clone(),
        );
        assert_api_error(&res, 400, says, &String::from_utf8_lossy(&body));
    }
    // Remote write, refused: JSON too (Prometheus logs the body as it is).
    let res = request(
        Method::POST,
        &url("/api/v1/write"),
        &[("content-type", "text/plain")],
        b"x".to_vec(),
    );
    assert_api_error(
        &res,
        415,
        "unsupported content type \"text/plain\"",
        "write",
    );
}

/// The JSON report gives its times as the rest of the API does: Unix milliseconds of event
/// time (the Markdown report keeps RFC 3339).
#[test]
fn issue_16_the_json_report_gives_times_as_unix_milliseconds() {
    let dw = seeded(Deploywatch::start());
    let id = crate::sim::register_deploy(
        &dw,
        &serde_json::json!({"service": "checkout", "version": "v2", "at": T0}),
    )
    .unwrap();
    let r = dw.get_json(&format!("/api/v1/deploys/{id}/report?format=json"));
    assert_eq!(r["deploy"]["started_at"], T0, "{r}");
    assert!(r["as_of"].is_i64(), "{r}");
    let timeline = r["timeline"].as_array().unwrap();
    assert!(!timeline.is_empty());
    for e in timeline {
        assert!(e["at"].is_i64(), "{e}");
    }
    assert_eq!(timeline[0]["at"], T0);
    assert_eq!(
        dw.get_json(&format!("/api/v1/deploys/{id}"))["started_at"],
        T0
    );
    let md = request(
        Method::GET,
        &format!("{}/api/v1/deploys/{id}/report", dw.url()),
        &[],
        Vec::new(),
    )
    .text();
    assert!(md.contains("2025-11-24T16:00:00.000Z"), "{md}");
}

#[test]
fn an_invalid_native_histogram_is_400_naming_it_and_stores_nothing() {
    let dw = seeded(Deploywatch::start());
    let next_sample = series(&seed_labels(), &[(T0 + 1000, 2.0)]);
    let histogram = rw1::Histogram {
        count: Some(rw1::histogram::Count::CountInt(3)),
        sum: 0.8,
        schema: 3,
        positive_spans: vec![rw1::BucketSpan {
            offset: 0,
            length: 2,
        }],
        positive_deltas: vec![2, 1],
        timestamp: T0,
        ..Default::default()
    };
    let hist_series = |h: rw1::Histogram| rw1::TimeSeries {
        labels: series(&seed_labels(), &[]).labels,
        histograms: vec![h],
        ..Default::default()
    };
    // Buckets of 2 and 3 observations: the count says 3.
    let req = write_request(vec![next_sample.clone(), hist_series(histogram.clone())]);
    assert_rw1_rejected(
        &dw,
        &req.encode_to_vec(),
        400,
        "series 1 histogram 0: count 3 differs from 5",
    );
    let req = write_request(vec![
        next_sample,
        hist_series(rw1::Histogram {
            schema: 9,
            count: Some(rw1::histogram::Count::CountInt(5)),
            ..histogram
        }),
    ]);
    assert_rw1_rejected(&dw, &req.encode_to_vec(), 400, "unknown schema 9");
    assert_eq!(dw.samples_total("appended"), 1.0);
}
