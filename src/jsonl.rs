//! Append-only JSON-lines files under `--storage.path` (the deploy history, the
//! registration journal): records in, one synced line each out; read back skipping a torn
//! last line; rewritten atomically (temporary file, sync, rename) when compacted.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

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
