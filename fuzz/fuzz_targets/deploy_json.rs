//! The `POST /api/v1/deploys` body parser (`DeployRequest::parse`, as the handler calls it).
//!
//! Input: the request body. Checks: no panic; an accepted registration obeys the
//! documented constraints; it re-serialises to JSON that parses to the same registration;
//! its deploy id is made of safe characters.
#![no_main]

use deploywatch::deploy::{deploy_id, DeployRequest, Strategy};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(reg) = DeployRequest::parse(data) else {
        return;
    };
    for s in [&reg.service, &reg.version] {
        assert!(!s.trim().is_empty() && s.len() <= 256);
    }
    assert_ne!(reg.baseline_version.as_deref(), Some(reg.version.as_str()));
    assert_ne!(reg.baseline_version.as_deref(), Some(""));
    if let Some(at) = reg.at {
        assert!((1_000_000_000_000..10_000_000_000_000).contains(&at));
    }
    assert!(reg.changes.len() <= 1000);

    let strategy = reg.strategy.map(|s| match s {
        Strategy::Canary => "canary",
        Strategy::Rolling => "rolling",
        Strategy::BlueGreen => "blue-green",
    });
    let body = json!({
        "service": reg.service,
        "version": reg.version,
        "baseline_version": reg.baseline_version,
        "strategy": strategy,
        "at": reg.at,
        "commit": reg.commit,
        "author": reg.author,
        "url": reg.url,
        "changes": reg.changes,
    });
    let again = DeployRequest::parse(body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("re-serialised registration refused: {e}: {body}"));
    assert_eq!(again, reg);

    let id = deploy_id(&reg.service, &reg.version, reg.at.unwrap_or(0));
    assert!(id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
});
