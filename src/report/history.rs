//! The deploy history: finished deploys in (DEPLOY JSON and final report), an append-only
//! log of JSON lines under `--storage.path` out (`deploys.jsonl`), read back at start, and
//! the finished deploys served from it: their DEPLOY JSON from memory, their reports read
//! back from the file on demand (a report is most of a record).
//!
//! Retention is in event time, like everything else: a record is dropped once it finished
//! more than `storage.history_retention` before the newest record (so replaying last
//! month's data does not erase itself). Memory forgets it at once; the file is compacted
//! (its live lines copied to a temporary file, synced, renamed over) once as many of its
//! lines are dead as alive, so a rewrite costs O(1) per append amortised. A compaction
//! copies the bulk without the lock and takes it only to copy the lines appended meanwhile
//! and rename: a deploy finishing while it runs is never lost. A torn last line (a crash
//! mid-append) is skipped and compacted away at start.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Report;
use crate::deploy::DeployJson;

/// The log's file name under `--storage.path`.
pub const FILE_NAME: &str = "deploys.jsonl";

/// A file with fewer dead lines than this is not compacted, however few live ones it has.
const MIN_DEAD_TO_COMPACT: usize = 16;

/// One finished deploy, as a line of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Event time the deploy finished (its last judged step).
    pub finished_at: i64,
    pub deploy: DeployJson,
    pub report: Report,
}

/// What the history holds in memory of one finished deploy.
#[derive(Debug)]
pub struct Archived {
    pub finished_at: i64,
    pub deploy: DeployJson,
    /// Order of arrival; where its line is in the file.
    seq: u64,
    /// The report, for a history without a file; otherwise read back from the file.
    report: Option<Report>,
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

/// A record's line: its `seq`, and (offset, length with its newline) in the file.
type Line = (u64, (u64, usize));

/// The log file and where each live record's line is in it.
struct LogFile {
    /// Open for reading and appending; replaced by the compacted file on a compaction
    /// (readers holding the old one read the old, unchanged lines).
    file: Arc<File>,
    len: u64,
    /// Lines in the file, live or not.
    lines: usize,
    /// Line (offset, length with its newline) by record `seq`.
    at: HashMap<u64, (u64, usize)>,
}

#[derive(Default)]
struct State {
    /// Records within retention, in order of arrival.
    records: Vec<Arc<Archived>>,
    by_id: HashMap<String, Arc<Archived>>,
    newest: Option<i64>,
    /// The earliest `finished_at` held (once retention applies).
    oldest: Option<i64>,
    next_seq: u64,
    log: Option<LogFile>,
}

impl State {
    fn insert(&mut self, a: Archived, retention_ms: Option<i64>) {
        let a = Arc::new(a);
        if let Some(old) = self.by_id.insert(a.deploy.id.clone(), a.clone()) {
            self.records.retain(|r| r.seq != old.seq); // the same deploy again: the newer wins
        }
        self.records.push(a.clone());
        self.newest = Some(self.newest.map_or(a.finished_at, |n| n.max(a.finished_at)));
        let (Some(retention), Some(newest)) = (retention_ms, self.newest) else {
            return;
        };
        let cutoff = newest.saturating_sub(retention);
        self.oldest = Some(self.oldest.map_or(a.finished_at, |o| o.min(a.finished_at)));
        if self.oldest.is_some_and(|o| o < cutoff) {
            let by_id = &mut self.by_id;
            self.records.retain(|r| {
                let keep = r.finished_at >= cutoff;
                if !keep && by_id.get(&r.deploy.id).is_some_and(|x| x.seq == r.seq) {
                    by_id.remove(&r.deploy.id);
                }
                keep
            });
            self.oldest = self.records.iter().map(|r| r.finished_at).min();
        }
    }

    /// Whether the file has as many dead lines as live ones (and a few).
    fn worth_compacting(&self) -> bool {
        self.log.as_ref().is_some_and(|l| {
            let dead = l.lines.saturating_sub(self.records.len());
            dead >= MIN_DEAD_TO_COMPACT.max(self.records.len())
        })
    }
}

/// The deploy history: a log file, or (backtests, tests) memory only.
pub struct History {
    path: Option<PathBuf>,
    retention_ms: Option<i64>,
    state: Mutex<State>,
    /// One compaction at a time.
    compacting: Mutex<()>,
}

impl History {
    /// A history without a file, bounded by `retention` (none: unbounded), for backtests.
    pub fn in_memory(retention: Option<std::time::Duration>) -> History {
        History {
            path: None,
            retention_ms: retention.map(|r| r.as_millis() as i64),
            state: Mutex::new(State::default()),
            compacting: Mutex::new(()),
        }
    }

    /// Opens (or creates) the log in `dir` and reads back the records within retention.
    /// Unreadable lines (a torn last line) and expired records are compacted away at once.
    pub fn open(dir: &Path, retention: std::time::Duration) -> Result<History, HistoryError> {
        let path = dir.join(FILE_NAME);
        let io = |source| HistoryError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = File::options()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let bytes = std::fs::read(&path).map_err(io)?;
        let h = History {
            path: Some(path.clone()),
            retention_ms: Some(retention.as_millis() as i64),
            state: Mutex::new(State::default()),
            compacting: Mutex::new(()),
        };
        let mut st = h.state.lock();
        let mut log = LogFile {
            file: Arc::new(file),
            len: bytes.len() as u64,
            lines: 0,
            at: HashMap::new(),
        };
        let mut unreadable = 0;
        let mut offset = 0usize;
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let start = offset;
            offset += line.len();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            log.lines += 1;
            if line.last() != Some(&b'\n') {
                unreadable += 1; // a torn last line: the next append must start a line
                tracing::warn!(path = %path.display(), "Skipping a torn last line.");
                continue;
            }
            match serde_json::from_slice::<Record>(line) {
                Ok(r) => {
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    log.at.insert(seq, (start as u64, line.len()));
                    st.insert(
                        Archived {
                            finished_at: r.finished_at,
                            deploy: r.deploy,
                            seq,
                            report: None,
                        },
                        h.retention_ms,
                    );
                }
                Err(error) => {
                    unreadable += 1;
                    tracing::warn!(path = %path.display(), %error, "Skipping an unreadable line.");
                }
            }
        }
        let dead = log.lines - st.records.len();
        st.log = Some(log);
        drop(st);
        if unreadable > 0 || dead > 0 {
            h.compact()?;
        }
        Ok(h)
    }

    /// The log file, if the history has one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn io(&self, source: std::io::Error) -> HistoryError {
        HistoryError::Io {
            path: self.path.clone().unwrap_or_default(),
            source,
        }
    }

    /// Appends a finished deploy (synced before it returns); forgets what fell out of
    /// retention, and compacts the file when half of it is dead.
    pub fn append(&self, record: Record) -> Result<(), HistoryError> {
        let line = match self.path {
            Some(_) => {
                let mut line =
                    serde_json::to_vec(&record).map_err(|e| self.io(std::io::Error::other(e)))?;
                line.push(b'\n');
                line
            }
            None => Vec::new(),
        };
        let mut st = self.state.lock();
        let seq = st.next_seq;
        if let Some(log) = st.log.as_mut() {
            let written = (&*log.file)
                .write_all(&line)
                .and_then(|()| log.file.sync_data());
            if let Err(e) = written {
                // Take a partial line back, so the next append starts a line of its own.
                let _ = log.file.set_len(log.len);
                return Err(self.io(e));
            }
            log.at.insert(seq, (log.len, line.len()));
            log.len += line.len() as u64;
            log.lines += 1;
        }
        st.next_seq += 1;
        let Record {
            finished_at,
            deploy,
            report,
        } = record;
        let report = self.path.is_none().then_some(report);
        st.insert(
            Archived {
                finished_at,
                deploy,
                seq,
                report,
            },
            self.retention_ms,
        );
        let compact = st.worth_compacting();
        drop(st);
        if compact {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with the live records' lines only. The bulk is copied without the
    /// lock; the lines appended meanwhile are copied and the file renamed under it, so no
    /// append is lost (an earlier version released the lock before re-reading the file and
    /// renaming, and lost what finished in between).
    pub fn compact(&self) -> Result<(), HistoryError> {
        let Some(path) = self.path.as_deref() else {
            return Ok(());
        };
        let Some(_one) = self.compacting.try_lock() else {
            return Ok(()); // one is running; it will catch up with this append
        };
        let io = |e| self.io(e);
        let (old, lines): (Arc<File>, Vec<Line>) = {
            let st = self.state.lock();
            let Some(log) = st.log.as_ref() else {
                return Ok(());
            };
            let lines = st
                .records
                .iter()
                .filter_map(|r| log.at.get(&r.seq).map(|&at| (r.seq, at)))
                .collect();
            (log.file.clone(), lines)
        };
        let tmp = path.with_extension("jsonl.tmp");
        let mut out = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        let mut at = HashMap::new();
        let mut len = 0u64;
        let mut copy = |out: &mut File, seq: u64, (offset, n): (u64, usize)| {
            let mut buf = vec![0; n];
            read_at(&old, offset, &mut buf)?;
            out.write_all(&buf)?;
            at.insert(seq, (len, n));
            len += n as u64;
            std::io::Result::Ok(())
        };
        let bulk = lines
            .iter()
            .try_for_each(|&(seq, loc)| copy(&mut out, seq, loc))
            .and_then(|()| out.sync_data());
        if let Err(e) = bulk {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        let mut st = self.state.lock();
        let State { records, log, .. } = &mut *st;
        let Some(log) = log.as_mut() else {
            return Ok(());
        };
        // Appended while the bulk was copied (the same file: its lines do not move).
        let live: HashSet<u64> = records.iter().map(|r| r.seq).collect();
        let copied: HashSet<u64> = lines.iter().map(|(seq, _)| *seq).collect();
        let mut meanwhile: Vec<Line> = log
            .at
            .iter()
            .filter(|(seq, _)| !copied.contains(seq) && live.contains(seq))
            .map(|(&s, &a)| (s, a))
            .collect();
        meanwhile.sort_by_key(|(seq, _)| *seq);
        let done = meanwhile
            .iter()
            .try_for_each(|&(seq, loc)| copy(&mut out, seq, loc))
            .and_then(|()| out.sync_data())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        if let Some(dir) = path.parent().and_then(|d| File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        let written = at.len();
        // Records forgotten while copying are dead lines of the new file.
        at.retain(|seq, _| live.contains(seq));
        let kept = at.len();
        *log = LogFile {
            file: Arc::new(out),
            len,
            lines: written,
            at,
        };
        drop(st);
        tracing::info!(path = %path.display(), records = kept, "Compacted the deploy history.");
        Ok(())
    }

    /// A finished deploy, by id.
    pub fn get(&self, id: &str) -> Option<Arc<Archived>> {
        self.state.lock().by_id.get(id).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.state.lock().by_id.contains_key(id)
    }

    /// Finished deploys held, in order of arrival (oldest first).
    pub fn records(&self) -> Vec<Arc<Archived>> {
        self.state.lock().records.clone()
    }

    /// How many finished deploys are held.
    pub fn len(&self) -> usize {
        self.state.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The final report of a finished deploy, read back from the file.
    pub fn report(&self, id: &str) -> Result<Option<Report>, HistoryError> {
        let (file, (offset, n)) = {
            let st = self.state.lock();
            let Some(a) = st.by_id.get(id) else {
                return Ok(None);
            };
            if let Some(r) = &a.report {
                return Ok(Some(r.clone()));
            }
            let Some(log) = st.log.as_ref() else {
                return Ok(None);
            };
            let Some(&at) = log.at.get(&a.seq) else {
                return Ok(None);
            };
            (log.file.clone(), at)
        };
        let mut buf = vec![0; n];
        read_at(&file, offset, &mut buf).map_err(|e| self.io(e))?;
        let r: Record =
            serde_json::from_slice(&buf).map_err(|e| self.io(std::io::Error::other(e)))?;
        Ok(Some(r.report))
    }
}

#[cfg(unix)]
fn read_at(f: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
}

#[cfg(windows)]
fn read_at(f: &File, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_read(f, buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn record(id: &str, service: &str, finished_at: i64) -> Record {
        let deploy = serde_json::json!({
            "id": id, "service": service, "version": "v2", "baseline_version": "v1",
            "strategy": "canary", "source": "api", "started_at": finished_at - 60_000,
            "phase": "done", "verdict": "pass", "verdict_at": null, "commit": "", "author": "",
            "url": "", "changes": [], "rules": [], "suspects": [], "timeline": [],
            "comparison": "side-by-side", "reason": "", "report_url": ""
        });
        let mut report: Report =
            serde_json::from_str(include_str!("../../tests/golden/rollback_route.json")).unwrap();
        report.deploy.id = id.into();
        Record {
            finished_at,
            deploy: serde_json::from_value(deploy).unwrap(),
            report,
        }
    }

    fn ids(h: &History) -> Vec<String> {
        h.records().iter().map(|r| r.deploy.id.clone()).collect()
    }

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_764_000_000_000;

    #[test]
    fn records_survive_reopening_and_old_ones_are_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let two_days = Duration::from_secs(2 * 86_400);
        let h = History::open(dir.path(), two_days).unwrap();
        assert!(h.is_empty());
        h.append(record("a", "cart", T0)).unwrap();
        h.append(record("b", "cart", T0 + DAY)).unwrap();
        drop(h);
        let h = History::open(dir.path(), two_days).unwrap();
        assert_eq!(ids(&h), ["a", "b"]);
        assert_eq!(
            h.get("b").unwrap().deploy,
            record("b", "cart", T0 + DAY).deploy
        );
        assert_eq!(
            h.report("b").unwrap(),
            Some(record("b", "cart", T0 + DAY).report)
        );
        // Three days after the first: "a" falls out of retention; memory forgets it at once,
        // and reopening compacts it away.
        h.append(record("c", "cart", T0 + 3 * DAY)).unwrap();
        assert_eq!(ids(&h), ["b", "c"]);
        assert!(h.get("a").is_none() && h.report("a").unwrap().is_none());
        // A torn last line (a crash mid-append) is skipped and compacted away.
        let path = h.path().unwrap().to_path_buf();
        drop(h);
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"finished_at\": 17").unwrap();
        drop(f);
        let h = History::open(dir.path(), two_days).unwrap();
        assert_eq!(ids(&h), ["b", "c"]);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        // The next append starts a line of its own; reports are read from the right lines.
        h.append(record("d", "cart", T0 + 3 * DAY)).unwrap();
        for id in ["b", "c", "d"] {
            assert_eq!(h.report(id).unwrap().unwrap().deploy.id, id);
        }
        drop(h);
        let h = History::open(dir.path(), two_days).unwrap();
        assert_eq!(ids(&h), ["b", "c", "d"]);
    }

    #[test]
    fn the_file_is_compacted_once_half_of_it_is_dead() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), Duration::from_secs(3600)).unwrap();
        let lines = |h: &History| {
            std::fs::read_to_string(h.path().unwrap())
                .unwrap()
                .lines()
                .count()
        };
        // A deploy a minute; an hour of retention holds about 60.
        for i in 0..200 {
            h.append(record(&format!("d{i}"), "cart", T0 + i * 60_000))
                .unwrap();
            assert!(h.len() <= 61, "{}", h.len());
            assert!(lines(&h) <= 2 * 61 + MIN_DEAD_TO_COMPACT, "{}", lines(&h));
        }
        assert_eq!(h.len(), 61);
        for i in 139..200 {
            let id = format!("d{i}");
            assert_eq!(h.report(&id).unwrap().unwrap().deploy.id, id);
        }
        drop(h);
        let h = History::open(dir.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!(h.len(), 61);
        assert_eq!(lines(&h), 61);
    }

    /// Issue 15: the compaction released its lock before re-reading the file and renaming,
    /// so a deploy finishing on another service in that window was lost. Threads finish
    /// deploys on their own services while others' appends expire old records (compacting
    /// again and again) and another thread compacts in a loop: every deploy is there after
    /// reopening, with its own report.
    #[test]
    fn issue_15_deploys_finishing_during_a_compaction_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let h = History::open(dir.path(), hour).unwrap();
        for i in 0..100 {
            h.append(record(&format!("old{i}"), "old", T0 + i)).unwrap();
        }
        let h = Arc::new(h);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let compactor = {
            let (h, stop) = (h.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    h.compact().unwrap();
                    n += 1;
                }
                n
            })
        };
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..60 {
                        // Two hours on: every append can expire records and compact.
                        let at = T0 + 2 * 3_600_000 + i * 1000 + w;
                        h.append(record(&format!("s{w}-{i}"), &format!("s{w}"), at))
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(compactor.join().unwrap() > 0);
        let expected: std::collections::BTreeSet<String> = (0..4)
            .flat_map(|w| (0..60).map(move |i| format!("s{w}-{i}")))
            .collect();
        let held: std::collections::BTreeSet<String> = ids(&h).into_iter().collect();
        assert_eq!(held, expected);
        for id in &expected {
            assert_eq!(&h.report(id).unwrap().unwrap().deploy.id, id);
        }
        drop(h);
        let h = History::open(dir.path(), hour).unwrap();
        let reloaded: std::collections::BTreeSet<String> = ids(&h).into_iter().collect();
        assert_eq!(reloaded, expected, "lost in the file");
        for id in &expected {
            assert_eq!(&h.report(id).unwrap().unwrap().deploy.id, id);
        }
    }

    #[test]
    fn a_history_without_a_file_keeps_reports_in_memory() {
        let h = History::in_memory(None);
        h.append(record("a", "cart", T0)).unwrap();
        h.append(record("b", "cart", T0 + 400 * DAY)).unwrap();
        assert_eq!(ids(&h), ["a", "b"]);
        assert_eq!(h.report("a").unwrap().unwrap().deploy.id, "a");
        let h = History::in_memory(Some(Duration::from_secs(3600)));
        h.append(record("a", "cart", T0)).unwrap();
        h.append(record("b", "cart", T0 + DAY)).unwrap();
        assert_eq!(ids(&h), ["b"]);
    }
}
