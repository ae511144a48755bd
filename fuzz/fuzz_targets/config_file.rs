//! The config-file parser (`Config::parse`) and the duration syntax it uses.
//!
//! Input: the file's text. Checks: no panic; an accepted config keeps its documented
//! constraints and every duration in it survives `format_duration` → `parse_duration`;
//! the input as a duration string, when accepted, round-trips too.
#![no_main]

use std::time::Duration;

use deploywatch::config::{format_duration, parse_duration, Config};
use libfuzzer_sys::fuzz_target;

fn round_trips(d: Duration) {
    let text = format_duration(d);
    assert_eq!(parse_duration(&text), Ok(d), "{d:?} formatted as {text:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(text) {
        round_trips(d);
    }
    let Ok(c) = Config::parse(text, "fuzz.yml") else {
        return;
    };
    assert_ne!(c.global.service_label, c.global.version_label);
    assert!(c.global.retention >= Duration::from_secs(60));
    assert!(c.storage.history_retention >= Duration::from_secs(3600));
    for d in [
        c.global.retention,
        c.alerting.resend_interval,
        c.storage.snapshot_interval,
        c.storage.history_retention,
    ] {
        round_trips(d);
    }
    let l = &c.limits;
    for n in [
        l.max_body_bytes,
        l.max_series_per_request,
        l.max_labels_per_series,
        l.max_label_name_length,
        l.max_label_value_length,
        l.max_active_series,
        l.max_series_per_service,
        l.max_inflight_requests,
    ] {
        let _ = n;
    }
    let _ = c.to_string();
});
