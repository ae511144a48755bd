//! The registration journal: each deploy registered through the API in (resolved: its
//! start, baseline and strategy fixed), one synced JSON line under `--storage.path` out
//! (`registrations.jsonl`) before the `201` is sent, so a registered deploy survives a
//! crash from that moment. Read back at start and replayed with the samples; entries of
//! deploys that finished (and are in the history) are compacted away.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Registration;

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

/// The open journal.
pub struct Journal {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and returns its entries, oldest first. A torn
    /// last line (a crash mid-append, before the `201`) is skipped.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Entry>), JournalError> {
        let path = dir.join(FILE_NAME);
        let io = |source| JournalError {
            path: path.clone(),
            source,
        };
        let mut entries = Vec::new();
        let mut unreadable = 0;
        match File::open(&path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let line = line.map_err(io)?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Entry>(&line) {
                        Ok(e) => entries.push(e),
                        Err(error) => {
                            unreadable += 1;
                            tracing::warn!(path = %path.display(), %error, "Skipping an unreadable registration.")
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if unreadable > 0 {
            // A torn line would swallow the next append: rewrite without it.
            write_atomically(&path, &entries).map_err(io)?;
        }
        Ok((
            Journal {
                path,
                file: Mutex::new(None),
            },
            entries,
        ))
    }

    /// Appends one entry and syncs it to disk.
    pub fn append(&self, entry: &Entry) -> Result<(), JournalError> {
        let io = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(entry).map_err(|e| io(e.into()))?;
        line.push(b'\n');
        let mut file = self.file.lock();
        if file.is_none() {
            *file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(io)?,
            );
        }
        let f = file.as_mut().expect("opened above");
        let written = f.write_all(&line).and_then(|()| f.sync_data());
        if written.is_err() {
            *file = None; // reopen next time
        }
        written.map_err(io)
    }

    /// Rewrites the journal with the entries `keep` accepts (temporary file, sync, rename).
    pub fn compact(&self, keep: impl Fn(&Entry) -> bool) -> Result<usize, JournalError> {
        let io = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        let mut file = self.file.lock();
        let (_, entries) = Journal::open(self.path.parent().unwrap_or(Path::new(".")))?;
        let kept: Vec<&Entry> = entries.iter().filter(|e| keep(e)).collect();
        if kept.len() == entries.len() {
            return Ok(0);
        }
        let kept: Vec<Entry> = kept.into_iter().cloned().collect();
        write_atomically(&self.path, &kept).map_err(io)?;
        *file = None;
        Ok(entries.len() - kept.len())
    }
}

/// Writes `entries` to a temporary file, syncs it and renames it over `path`.
fn write_atomically(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    let mut out = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut out, e)?;
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
        let mut f = OpenOptions::new()
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
