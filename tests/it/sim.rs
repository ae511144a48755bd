//! The simulator (`deploywatch::demo::sim`, a seeded Kubernetes service scraped by
//! Prometheus and sent over Remote-Write 1.0) as the tests use it: everything it exports,
//! plus the glue to the test harness — a [`Driver`] pushing a [`Feed`] into a
//! [`Deploywatch`] started by the harness, and the deploy API read back as JSON.

#![allow(dead_code)] // Not every test uses every helper.

use std::collections::HashMap;
use std::time::Duration;

use hyper::Method;
use serde_json::Value;

pub use deploywatch::demo::sim::*;

use crate::harness::{self, Deploywatch};

// ---------------------------------------------------------------------------------------
// Driving a deploywatch
// ---------------------------------------------------------------------------------------

/// Pushes a [`Feed`] to a running deploywatch as fast as it answers.
pub struct Driver<'a> {
    pub dw: &'a Deploywatch,
    pub feed: Feed,
    /// Float samples sent and accepted (204).
    pub samples_sent: u64,
    pub requests_sent: u64,
}

impl<'a> Driver<'a> {
    pub fn new(dw: &'a Deploywatch, feed: Feed) -> Driver<'a> {
        Driver {
            dw,
            feed,
            samples_sent: 0,
            requests_sent: 0,
        }
    }

    /// Event time the data sent so far reaches (exclusive).
    pub fn now(&self) -> i64 {
        self.feed.t
    }

    /// Pushes every window ending at or before `t`; after each push calls `after` with the
    /// push's end.
    pub fn run_until(&mut self, t: i64, mut after: impl FnMut(&Deploywatch, i64)) {
        while self.feed.t + self.feed.window <= t {
            let push = self.feed.next_push();
            for req in &push.requests {
                let (status, body) = self.dw.push_v1(req);
                assert_eq!(
                    status,
                    204,
                    "push ending at {} ({} entries) refused: {body}",
                    push.end,
                    req.timeseries.len()
                );
                self.requests_sent += 1;
            }
            self.samples_sent += push.samples;
            after(self.dw, push.end);
        }
    }

    pub fn run_to(&mut self, t: i64) {
        self.run_until(t, |_, _| {});
    }
}

// ---------------------------------------------------------------------------------------
// The deploy API
// ---------------------------------------------------------------------------------------

fn get(dw: &Deploywatch, path: &str) -> Result<Value, String> {
    let res = harness::try_request(Method::GET, &format!("{}{path}", dw.url()), &[], Vec::new())?;
    if res.status != 200 {
        return Err(format!("GET {path}: {} {}", res.status, res.text()));
    }
    serde_json::from_slice(&res.body).map_err(|e| format!("GET {path}: not JSON ({e})"))
}

/// `POST /api/v1/deploys`; the new deploy's id.
pub fn register_deploy(dw: &Deploywatch, body: &Value) -> Result<String, String> {
    let res = harness::try_request(
        Method::POST,
        &format!("{}/api/v1/deploys", dw.url()),
        &[("Content-Type", "application/json")],
        serde_json::to_vec(body).unwrap(),
    )?;
    if res.status != 201 {
        return Err(format!(
            "POST /api/v1/deploys {body}: {} {}",
            res.status,
            res.text()
        ));
    }
    let v: Value = serde_json::from_slice(&res.body)
        .map_err(|e| format!("POST /api/v1/deploys: not JSON ({e}): {}", res.text()))?;
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("POST /api/v1/deploys: no id in {v}"))
}

/// `GET /api/v1/deploys/{id}`.
pub fn deploy(dw: &Deploywatch, id: &str) -> Result<Value, String> {
    get(dw, &format!("/api/v1/deploys/{id}"))
}

/// `GET /api/v1/deploys?service=S`, newest first.
pub fn deploys(dw: &Deploywatch, service: &str) -> Result<Vec<Value>, String> {
    let v = get(dw, &format!("/api/v1/deploys?service={service}"))?;
    v["deploys"]
        .as_array()
        .cloned()
        .ok_or_else(|| format!("GET /api/v1/deploys?service={service}: no deploys in {v}"))
}

/// The deploy of `service` to `version`, registered or detected.
pub fn find_deploy(dw: &Deploywatch, service: &str, version: &str) -> Result<Value, String> {
    deploys(dw, service)?
        .into_iter()
        .find(|d| d["version"] == version)
        .ok_or_else(|| format!("no deploy of {service} to {version}"))
}

/// Severity of a verdict string: pending 0 … rollback 4; unknown strings are a failure.
pub fn severity(verdict: &str) -> u8 {
    match verdict {
        "pending" => 0,
        "pass" => 1,
        "warn" => 2,
        "pause" => 3,
        "rollback" => 4,
        other => panic!("unknown verdict {other:?}"),
    }
}

/// Each rule's warm-up, read from rules/default.yml (the rules in force by default).
pub fn default_warmups() -> HashMap<String, i64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/default.yml");
    let text = std::fs::read_to_string(path).expect("reading rules/default.yml");
    let mut out = HashMap::new();
    let mut rule: Option<String> = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(name) = l.strip_prefix("- name:") {
            rule = Some(name.trim().to_string());
        } else if let (Some(w), Some(r)) = (l.strip_prefix("warmup:"), &rule) {
            let w = w.split('#').next().unwrap().trim();
            let d: Duration = humantime::parse_duration(w)
                .unwrap_or_else(|e| panic!("warmup {w:?} of {r} in default.yml: {e}"));
            out.insert(r.clone(), d.as_millis() as i64);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The simulator against the real binary (its own checks are unit tests beside it)
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{series_by_version, service, version};

    /// A canary with a crash-looping pod and a rolling update, pushed to the real binary:
    /// every sample appended (none out of order), the series per version and the newest
    /// timestamps as simulated.
    #[test]
    fn deploywatch_takes_everything_the_simulator_sends() {
        let dw = Deploywatch::start();
        let t_end = EPOCH + 40 * MIN;
        let canary = Service::new("checkout", 5, 3)
            .canary("v2", EPOCH + 30 * MIN, 1)
            .with(|s| s.pods[3].crash_loop = true);
        let rolling = Service::new("payments", 6, 3).rolling("v2", EPOCH + 30 * MIN, 40 * SEC);
        let mut driver = Driver::new(
            &dw,
            Feed::new(vec![Sim::new(canary), Sim::new(rolling)], 5 * SEC),
        );
        let mut newest_seen = Vec::new();
        driver.run_until(t_end, |dw, end| {
            if (end - EPOCH) % (5 * MIN) == 0 {
                let s = dw.services();
                newest_seen.push((
                    end,
                    service(&s, "checkout").unwrap()["newest_sample_at"]
                        .as_i64()
                        .unwrap(),
                ));
            }
        });
        for w in newest_seen.windows(2) {
            assert!(
                w[1].1 > w[0].1,
                "newest_sample_at advances with event time: {newest_seen:?}"
            );
        }
        for (end, newest) in &newest_seen {
            assert!(
                *newest < *end && *newest >= end - SCRAPE_INTERVAL - 5 * SEC,
                "{end} {newest}"
            );
        }
        assert_eq!(dw.samples_total("out_of_order"), 0.0);
        assert_eq!(dw.samples_total("duplicate"), 0.0);
        assert_eq!(dw.samples_total("series_limit"), 0.0);
        assert_eq!(dw.samples_total("appended"), driver.samples_sent as f64);
        let s = dw.services();
        eprintln!("{s:#}");
        assert_eq!(
            series_by_version(&s, "checkout"),
            driver.feed.sim("checkout").series_per_version(),
            "checkout's series per version"
        );
        let v2 = version(&s, "checkout", "v2").unwrap();
        assert!(v2["newest_sample_at"].as_i64().unwrap() > t_end - 20 * SEC);
        let pay = series_by_version(&s, "payments");
        let sim_pay = driver.feed.sim("payments").series_per_version();
        assert_eq!(
            pay.get("v2"),
            sim_pay.get("v2"),
            "payments v2: {pay:?} vs {sim_pay:?}"
        );
        eprintln!(
            "sim: {} samples in {} requests; payments series {pay:?} (sim {sim_pay:?})",
            driver.samples_sent, driver.requests_sent
        );
    }
}
