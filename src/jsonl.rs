//! Append-only JSON-lines files under `--storage.path` (the deploy history, the
//! registration journal): records in, one synced line each out; read back skipping a torn
//! last line; rewritten atomically (temporary file, sync, rename) when compacted.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// Reads a plain number field that may hold `null`: serde_json writes a non-finite `f64` as
/// `null`, and a record deploywatch wrote itself must always load again (issue 15: a NaN
/// confidence once made a finished deploy vanish from the history on restart). `null`
/// reads as 0, which every such field (sample counts, confidence, a suspect's share) means
/// as "nothing".
pub fn number_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?
        .filter(|v| v.is_finite())
        .unwrap_or(0.0))
}

/// `v`, or 0 when it is not finite: what a JSON number field built from statistics holds.
pub fn finite_or_zero(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// The records of the file at `path` (none if it does not exist), and how many lines could
/// not be read (a torn last line after a crash, or damage); each is logged.
pub fn read<T: DeserializeOwned>(path: &Path) -> std::io::Result<(Vec<T>, usize)> {
    let mut records = Vec::new();
    let mut unreadable = 0;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((records, 0)),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<T>(&line) {
            Ok(r) => records.push(r),
            Err(error) => {
                unreadable += 1;
                tracing::warn!(path = %path.display(), %error, "Skipping an unreadable line.");
            }
        }
    }
    Ok((records, unreadable))
}

/// Appends one record as a line and syncs it to disk before returning.
pub fn append<T: Serialize>(path: &Path, record: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(record)?;
    line.push(b'\n');
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(&line)?;
    f.sync_data()
}

/// Replaces the file with `records`: written to a temporary file, synced, renamed over.
pub fn rewrite<T: Serialize>(path: &Path, records: &[T]) -> std::io::Result<()> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.push(b'\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&out)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::history::Record;

    /// Issue 15: a finished deploy whose numbers were not finite (a NaN confidence, an
    /// infinite share) is written with `null`s, and still loads.
    #[test]
    fn issue_15_a_record_with_non_finite_numbers_loads_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploys.jsonl");
        let deploy = serde_json::json!({
            "id": "cart-v2-1764000000", "service": "cart", "version": "v2",
            "baseline_version": "v1", "strategy": "canary", "source": "api",
            "started_at": 1_764_000_000_000i64, "phase": "done", "verdict": "pass",
            "verdict_at": null, "commit": "", "author": "", "url": "", "changes": [],
            "rules": [{"rule": "error_rate", "verdict": "pass",
                       "canary": {"value": 0.01, "samples": 10.0},
                       "baseline": {"value": 0.01, "samples": 10.0},
                       "effect": 1.0, "confidence": 0.5, "reason": "", "matched_series": 2}],
            "suspects": [{"dimension": "route", "value": "/x", "share": 0.5, "change": null}],
            "timeline": [], "comparison": "side-by-side", "reason": "", "report_url": ""
        });
        let mut record = Record {
            finished_at: 1_764_000_600_000,
            deploy: serde_json::from_value(deploy).unwrap(),
            report: serde_json::from_str(include_str!("../tests/golden/rollback_route.json"))
                .unwrap(),
        };
        record.deploy.rules[0].confidence = f64::NAN;
        record.deploy.rules[0].canary.samples = f64::INFINITY;
        record.deploy.suspects[0].share = f64::NEG_INFINITY;
        record.report.rules[0].confidence = f64::NAN;
        record.report.rules[0].before_samples = f64::INFINITY;
        record.report.suspects[0].share = f64::NAN;
        append(&path, &record).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""confidence":null"#), "{text}");
        let (back, unreadable) = read::<Record>(&path).unwrap();
        assert_eq!(unreadable, 0);
        let r = &back[0];
        assert_eq!(r.deploy.rules[0].confidence, 0.0);
        assert_eq!(r.deploy.rules[0].canary.samples, 0.0);
        assert_eq!(r.deploy.suspects[0].share, 0.0);
        assert_eq!(r.report.rules[0].confidence, 0.0);
        assert_eq!(r.report.rules[0].before_samples, 0.0);
        assert_eq!(r.report.suspects[0].share, 0.0);
        assert_eq!(r.deploy.id, "cart-v2-1764000000");
    }
}
