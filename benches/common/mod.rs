//! Prometheus-shaped remote-write load shared by the benches: 100 k kube-like series, requests
//! of 2,000 single-sample series.
#![allow(dead_code)]

use prost::Message;

use deploywatch::proto::prometheus as pb;

pub const SERIES: usize = 100_000;
pub const PER_REQUEST: usize = 2_000;

/// The labels of series `i`, sorted by name, as Prometheus scrapes them from Kubernetes.
pub fn labels(i: usize) -> Vec<pb::Label> {
    let names = [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ];
    let svc = i % 10;
    let version = (i / 10) % 2;
    let pod = (i / 20) % 50;
    let l = |n: &str, v: String| pb::Label {
        name: n.into(),
        value: v,
    };
    vec![
        l("__name__", names[i % 4].into()),
        l("code", ["200", "500", "404"][(i / 4) % 3].into()),
        l("instance", format!("10.1.{}.{}:8080", pod / 250, pod % 250)),
        l("job", format!("service-{svc}")),
        l("namespace", "prod".into()),
        l("pod", format!("service-{svc}-v{version}-7d9f8b-{:05}", pod)),
        l("route", format!("/api/v1/route{}", i / 1000)),
        l("series", i.to_string()),
        l("version", format!("v{version}")),
    ]
}

/// Request `r` of a round: series `r*2000 .. r*2000+2000` at event time `ts`.
pub fn request(all: &[Vec<pb::Label>], r: usize, ts: i64) -> Vec<u8> {
    let start = (r * PER_REQUEST) % SERIES;
    let req = pb::WriteRequest {
        timeseries: (start..start + PER_REQUEST)
            .map(|i| pb::TimeSeries {
                labels: all[i].clone(),
                samples: vec![pb::Sample {
                    value: (ts / 15_000 * (i as i64 % 7 + 1)) as f64,
                    timestamp: ts,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}
