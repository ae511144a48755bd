//! The registration journal: each deploy registered through the API in (resolved: its
//! start, baseline and strategy fixed), one synced JSON line under `--storage.path` out
//! (`registrations.jsonl`) before the `201` is sent, so a registered deploy survives a
//! crash from that moment. Read back at start and replayed with the samples; entries of
//! deploys that finished (and are in the history) are compacted away.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Registration;
use crate::jsonl;

pub const FILE_NAME: &str = "registrations.jsonl";

/// One registration as it was applied.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// The deploy it created or completed.
    pub id: String,
    /// The service's "now" (event time) when it arrived: where a replay applies it.
    pub received_at: i64,
    pub registration: Registration,
}

#[derive(Debug, thiserror::Error)]
#[error("registration journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    source: std::io::Error,
}

/// The open journal; appends and compactions one at a time.
pub struct Journal {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and returns its entries, oldest first. A torn
    /// last line (a crash mid-append, before the `201`) is skipped and rewritten away, so
    /// the next append starts on a line of its own.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Entry>), JournalError> {
        let path = dir.join(FILE_NAME);
        let io = |source| JournalError {
            path: path.clone(),
            source,
        };
        let (entries, unreadable) = jsonl::read::<Entry>(&path).map_err(io)?;
        if unreadable > 0 {
            jsonl::rewrite(&path, &entries).map_err(io)?;
        }
        Ok((
            Journal {
                path,
                lock: Mutex::new(()),
            },
            entries,
        ))
    }

    /// Appends one entry and syncs it to disk.
    pub fn append(&self, entry: &Entry) -> Result<(), JournalError> {
        let _one = self.lock.lock();
        jsonl::append(&self.path, entry).map_err(|source| JournalError {
            path: self.path.clone(),
            source,
        })
    }

    /// Rewrites the journal with the entries `keep` accepts; returns how many were dropped.
    pub fn compact(&self, keep: impl Fn(&Entry) -> bool) -> Result<usize, JournalError> {
        let io = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        let _one = self.lock.lock();
        let (entries, _) = jsonl::read::<Entry>(&self.path).map_err(io)?;
        let kept: Vec<&Entry> = entries.iter().filter(|e| keep(e)).collect();
        if kept.len() == entries.len() {
            return Ok(0);
        }
        jsonl::rewrite(&self.path, &kept).map_err(io)?;
        Ok(entries.len() - kept.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, at: i64) -> Entry {
        Entry {
            id: id.into(),
            received_at: at,
            registration: Registration {
                service: "s".into(),
                version: id.into(),
                baseline_version: Some("v1".into()),
                strategy: Some(super::super::Strategy::Canary),
                at: Some(at),
                commit: "abc".into(),
                author: String::new(),
                url: String::new(),
                changes: vec![],
            },
        }
    }

    #[test]
    fn append_reopen_compact() {
        let dir = tempfile::tempdir().unwrap();
        let (j, e) = Journal::open(dir.path()).unwrap();
        assert!(e.is_empty());
        j.append(&entry("a", 1)).unwrap();
        j.append(&entry("b", 2)).unwrap();
        let (_, e) = Journal::open(dir.path()).unwrap();
        assert_eq!(e, vec![entry("a", 1), entry("b", 2)]);
        assert_eq!(j.compact(|e| e.id != "a").unwrap(), 1);
        j.append(&entry("c", 3)).unwrap();
        let (_, e) = Journal::open(dir.path()).unwrap();
        assert_eq!(e, vec![entry("b", 2), entry("c", 3)]);
    }

    #[test]
    fn torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.append(&entry("a", 1)).unwrap();
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        f.write_all(b"{\"id\":\"b\",\"rece").unwrap();
        let (j, e) = Journal::open(dir.path()).unwrap();
        assert_eq!(e, vec![entry("a", 1)]);
        // The torn line is gone: the next append reads back.
        j.append(&entry("c", 3)).unwrap();
        let (_, e) = Journal::open(dir.path()).unwrap();
        assert_eq!(e, vec![entry("a", 1), entry("c", 3)]);
    }
}
