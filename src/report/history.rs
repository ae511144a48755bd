//! The deploy history: finished deploys in (DEPLOY JSON and final report), an append-only
//! log of JSON lines under `--storage.path` out (`deploys.jsonl`), read back at start.
//!
//! Retention is in event time, like everything else: a record is dropped once it finished
//! more than `storage.history_retention` before the newest record (so replaying last
//! month's data does not erase itself). The log is compacted (rewritten to a temporary
//! file, synced, renamed over) when it is opened and whenever its oldest record falls out
//! of retention. A torn last line (a crash mid-append) is skipped and compacted away.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Report;
use crate::deploy::DeployJson;

/// The log's file name under `--storage.path`.
pub const FILE_NAME: &str = "deploys.jsonl";

/// One finished deploy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Event time the deploy finished (its last judged step).
    pub finished_at: i64,
    pub deploy: DeployJson,
    pub report: Report,
}

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("deploy history {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The open log.
pub struct History {
    path: PathBuf,
    retention_ms: i64,
    /// `finished_at` of the records in the file, in file order.
    state: Mutex<Vec<i64>>,
}

impl History {
    /// Opens (or creates) the log in `dir`, returns it with the records kept, oldest first.
    pub fn open(
        dir: &Path,
        retention: std::time::Duration,
    ) -> Result<(History, Vec<Record>), HistoryError> {
        let path = dir.join(FILE_NAME);
        let io = |source| HistoryError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let (records, unreadable) = crate::jsonl::read::<Record>(&path).map_err(io)?;
        let h = History {
            path,
            retention_ms: retention.as_millis() as i64,
            state: Mutex::new(records.iter().map(|r| r.finished_at).collect()),
        };
        let before = records.len();
        let records = h.retain(records);
        if unreadable > 0 || records.len() < before {
            h.rewrite(&records)?;
        }
        Ok((h, records))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The records within retention of the newest.
    fn retain(&self, mut records: Vec<Record>) -> Vec<Record> {
        if let Some(newest) = records.iter().map(|r| r.finished_at).max() {
            records.retain(|r| r.finished_at >= newest - self.retention_ms);
        }
        records
    }

    /// Appends a finished deploy; compacts the log when its oldest record fell out of
    /// retention.
    pub fn append(&self, record: &Record) -> Result<(), HistoryError> {
        let io = |source| HistoryError::Io {
            path: self.path.clone(),
            source,
        };
        let mut state = self.state.lock();
        crate::jsonl::append(&self.path, record).map_err(io)?;
        state.push(record.finished_at);
        let newest = state.iter().copied().max().unwrap_or(record.finished_at);
        let expired = state.iter().any(|t| *t < newest - self.retention_ms);
        drop(state);
        if expired {
            let (_, kept) = Self::open(
                self.path.parent().unwrap_or(Path::new(".")),
                std::time::Duration::from_millis(self.retention_ms as u64),
            )?;
            *self.state.lock() = kept.iter().map(|r| r.finished_at).collect();
        }
        Ok(())
    }

    fn rewrite(&self, records: &[Record]) -> Result<(), HistoryError> {
        crate::jsonl::rewrite(&self.path, records).map_err(|source| HistoryError::Io {
            path: self.path.clone(),
            source,
        })?;
        *self.state.lock() = records.iter().map(|r| r.finished_at).collect();
        tracing::info!(path = %self.path.display(), records = records.len(), "Compacted the deploy history.");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(id: &str, finished_at: i64) -> Record {
        let deploy = serde_json::json!({
            "id": id, "service": "cart", "version": "v2", "baseline_version": "v1",
            "strategy": "canary", "source": "api", "started_at": finished_at - 60_000,
            "phase": "done", "verdict": "pass", "verdict_at": null, "commit": "", "author": "",
            "url": "", "changes": [], "rules": [], "suspects": [], "timeline": [],
            "comparison": "side-by-side", "reason": "", "report_url": ""
        });
        let report: Report =
            serde_json::from_str(include_str!("../../tests/golden/rollback_route.json")).unwrap();
        Record {
            finished_at,
            deploy: serde_json::from_value(deploy).unwrap(),
            report,
        }
    }

    #[test]
    fn records_survive_reopening_and_old_ones_are_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400_000;
        let t0 = 1_764_000_000_000;
        let (h, kept) = History::open(dir.path(), Duration::from_secs(2 * 86_400)).unwrap();
        assert!(kept.is_empty());
        h.append(&record("a", t0)).unwrap();
        h.append(&record("b", t0 + day)).unwrap();
        drop(h);
        let (h, kept) = History::open(dir.path(), Duration::from_secs(2 * 86_400)).unwrap();
        assert_eq!(
            kept.iter()
                .map(|r| r.deploy.id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(kept[1], record("b", t0 + day));
        // Three days after the first: "a" falls out of retention and the log is compacted.
        h.append(&record("c", t0 + 3 * day)).unwrap();
        let text = std::fs::read_to_string(h.path()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        // A torn last line (a crash mid-append) is skipped and compacted away.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(h.path())
            .unwrap();
        f.write_all(b"{\"finished_at\": 17").unwrap();
        drop(f);
        let (h, kept) = History::open(dir.path(), Duration::from_secs(2 * 86_400)).unwrap();
        assert_eq!(
            kept.iter()
                .map(|r| r.deploy.id.as_str())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(
            std::fs::read_to_string(h.path()).unwrap().lines().count(),
            2
        );
    }
}
