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
//!
//! The file is written off the caller's path (issue 15: a push that finished a deploy used
//! to append and `fsync` under its service's lock, on a runtime worker): [`History::append`]
//! records the deploy in memory at once (listed, served, its report kept in memory until
//! its line is on disk) and queues the line for the history's writer thread, which appends
//! what is queued in batches, one `fsync` per batch, and compacts. [`History::flush`] (and
//! a [`HistoryFlusher`]) waits until everything queued is on disk: a snapshot does so before
//! it is written, and dropping the history drains the queue, so a crash loses at most
//! records whose deploys the snapshot on disk can judge again from its samples.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use super::Report;
use crate::deploy::DeployJson;

/// The log's file name under `--storage.path`.
pub const FILE_NAME: &str = "deploys.jsonl";

/// A file with fewer dead lines than this is not compacted, however few live ones it has.
const MIN_DEAD_TO_COMPACT: usize = 16;

/// Records queued for the writer at most; beyond it an append waits for the disk
/// (backpressure, never a lost record).
const QUEUE: usize = 4096;
/// Records appended with one `fsync` at most.
const BATCH: usize = 1024;
/// Attempts to write a batch before its records are left in memory only (until exit).
const WRITE_ATTEMPTS: u32 = 3;

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
    /// Records queued for the writer and not yet on disk, by `seq`: their reports are
    /// served from here meanwhile.
    pending: HashMap<u64, Arc<Record>>,
}

impl State {
    fn insert(&mut self, a: Archived, retention_ms: Option<i64>) {
        let a = Arc::new(a);
        if let Some(old) = self.by_id.insert(a.deploy.id.clone(), a.clone()) {
            self.records.retain(|r| r.seq != old.seq); // the same deploy again: the newer wins
            self.pending.remove(&old.seq);
        }
        self.records.push(a.clone());
        self.newest = Some(self.newest.map_or(a.finished_at, |n| n.max(a.finished_at)));
        let (Some(retention), Some(newest)) = (retention_ms, self.newest) else {
            return;
        };
        let cutoff = newest.saturating_sub(retention);
        self.oldest = Some(self.oldest.map_or(a.finished_at, |o| o.min(a.finished_at)));
        if self.oldest.is_some_and(|o| o < cutoff) {
            let (by_id, pending) = (&mut self.by_id, &mut self.pending);
            self.records.retain(|r| {
                let keep = r.finished_at >= cutoff;
                if !keep {
                    pending.remove(&r.seq); // not written: it would be a dead line
                    if by_id.get(&r.deploy.id).is_some_and(|x| x.seq == r.seq) {
                        by_id.remove(&r.deploy.id);
                    }
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

/// One record for the writer.
struct Job {
    seq: u64,
    record: Arc<Record>,
}

/// Appends queued for the writer and handled by it (written, or given up on), for flushes.
#[derive(Default)]
struct Progress {
    queued: u64,
    handled: u64,
}

/// What the history and its writer thread share.
struct Inner {
    path: Option<PathBuf>,
    retention_ms: Option<i64>,
    state: Mutex<State>,
    /// The file's one writer at a time: a batch of appends, or a compaction.
    file_lock: Mutex<()>,
    progress: Mutex<Progress>,
    /// Signalled when the writer has handled a batch.
    handled: Condvar,
}

/// The writer thread and its queue.
struct Writer {
    tx: SyncSender<Job>,
    thread: JoinHandle<()>,
}

/// The deploy history: a log file, or (backtests, tests) memory only.
pub struct History {
    inner: Arc<Inner>,
    /// `None` for a history without a file, and once dropped.
    writer: Mutex<Option<Writer>>,
}

/// Waits for the history's queued records to be on disk; held by whoever must order its own
/// writes after them (the snapshot).
#[derive(Clone)]
pub struct HistoryFlusher(Arc<Inner>);

impl HistoryFlusher {
    /// Waits (at most `timeout`) until every record appended before the call is on disk
    /// (or given up on after a write error, which is logged). Whether it got there in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.0.flush(timeout)
    }

    /// Records appended so far: compare before and after a call to learn whether it
    /// appended any (or another thread did meanwhile).
    pub fn queued(&self) -> u64 {
        self.0.progress.lock().queued
    }

    /// Records appended and not yet handled by the writer.
    pub fn pending(&self) -> u64 {
        let p = self.0.progress.lock();
        p.queued - p.handled
    }
}

impl Drop for History {
    /// Drains the queue: every record appended is on disk when the history is gone.
    fn drop(&mut self) {
        if let Some(Writer { tx, thread }) = self.writer.lock().take() {
            drop(tx);
            let _ = thread.join();
        }
    }
}

impl History {
    /// A history without a file, bounded by `retention` (none: unbounded), for backtests.
    pub fn in_memory(retention: Option<std::time::Duration>) -> History {
        History {
            inner: Arc::new(Inner {
                path: None,
                retention_ms: retention.map(|r| r.as_millis() as i64),
                state: Mutex::new(State::default()),
                file_lock: Mutex::new(()),
                progress: Mutex::new(Progress::default()),
                handled: Condvar::new(),
            }),
            writer: Mutex::new(None),
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
        let h = Inner {
            path: Some(path.clone()),
            retention_ms: Some(retention.as_millis() as i64),
            state: Mutex::new(State::default()),
            file_lock: Mutex::new(()),
            progress: Mutex::new(Progress::default()),
            handled: Condvar::new(),
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
        let inner = Arc::new(h);
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let writing = inner.clone();
        let thread = std::thread::Builder::new()
            .name("deploy-history".into())
            .spawn(move || writing.run(rx))
            .map_err(io)?;
        Ok(History {
            inner,
            writer: Mutex::new(Some(Writer { tx, thread })),
        })
    }

    /// The log file, if the history has one.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// A handle that waits for this history's queued records to be on disk.
    pub fn flusher(&self) -> HistoryFlusher {
        HistoryFlusher(self.inner.clone())
    }

    /// Waits (at most `timeout`) until every record appended before the call is on disk.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.inner.flush(timeout)
    }

    /// Records a finished deploy: in memory at once (listed and served, its report too),
    /// and queued for the writer thread, which appends and syncs it to the file; forgets
    /// what fell out of retention. Waits only when the writer is [`QUEUE`] records behind.
    pub fn append(&self, record: Record) -> Result<(), HistoryError> {
        let tx = self.writer.lock().as_ref().map(|w| w.tx.clone());
        let Some(tx) = tx else {
            return self.inner.append_in_memory(record);
        };
        let record = Arc::new(record);
        let seq = {
            let mut st = self.inner.state.lock();
            let seq = st.next_seq;
            st.next_seq += 1;
            st.pending.insert(seq, record.clone());
            st.insert(
                Archived {
                    finished_at: record.finished_at,
                    deploy: record.deploy.clone(),
                    seq,
                    report: None,
                },
                self.inner.retention_ms,
            );
            seq
        };
        self.inner.progress.lock().queued += 1;
        if tx.send(Job { seq, record }).is_err() {
            // The writer is gone (it panicked): the record stays in memory until exit.
            tracing::error!("The deploy history's writer has stopped; a finished deploy is kept in memory only.");
            self.inner.progress.lock().handled += 1;
        }
        Ok(())
    }

    /// Rewrites the file with the live records' lines only (see [`Inner::compact`]).
    pub fn compact(&self) -> Result<(), HistoryError> {
        self.inner.compact()
    }

    /// A finished deploy, by id.
    pub fn get(&self, id: &str) -> Option<Arc<Archived>> {
        self.inner.state.lock().by_id.get(id).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.inner.state.lock().by_id.contains_key(id)
    }

    /// Finished deploys held, in order of arrival (oldest first).
    pub fn records(&self) -> Vec<Arc<Archived>> {
        self.inner.state.lock().records.clone()
    }

    /// How many finished deploys are held.
    pub fn len(&self) -> usize {
        self.inner.state.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The final report of a finished deploy: from memory while its line is queued, then
    /// read back from the file.
    pub fn report(&self, id: &str) -> Result<Option<Report>, HistoryError> {
        self.inner.report(id)
    }
}

impl Inner {
    /// The writer thread: appends what is queued, a batch per `fsync`, and compacts when
    /// half the file is dead; returns once the history is dropped and the queue drained.
    fn run(&self, rx: Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let n = jobs.len() as u64;
            self.write_batch(jobs);
            if self.state.lock().worth_compacting() {
                if let Err(error) = self.compact() {
                    tracing::error!(%error, "Cannot compact the deploy history.");
                }
            }
            self.progress.lock().handled += n;
            self.handled.notify_all();
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut p = self.progress.lock();
        let target = p.queued;
        while p.handled < target {
            if self.handled.wait_until(&mut p, deadline).timed_out() {
                return p.handled >= target;
            }
        }
        true
    }

    /// Appends the records still live (not expired or replaced meanwhile) with one sync;
    /// on an error, retries, then leaves them in memory (served until exit) and logs it.
    fn write_batch(&self, jobs: Vec<Job>) {
        // Serialised outside every lock.
        let mut lines: Vec<(u64, Vec<u8>)> = Vec::with_capacity(jobs.len());
        for job in jobs {
            match serde_json::to_vec(&*job.record) {
                Ok(mut line) => {
                    line.push(b'\n');
                    lines.push((job.seq, line));
                }
                Err(error) => {
                    tracing::error!(deploy_id = %job.record.deploy.id, %error, "Cannot serialise a finished deploy; it is kept in memory only.")
                }
            }
        }
        let _file = self.file_lock.lock();
        for attempt in 1..=WRITE_ATTEMPTS {
            let (file, len) = {
                let st = self.state.lock();
                let Some(log) = st.log.as_ref() else { return };
                lines.retain(|(seq, _)| st.pending.contains_key(seq));
                (log.file.clone(), log.len)
            };
            if lines.is_empty() {
                return;
            }
            let buf = lines
                .iter()
                .flat_map(|(_, l)| l.iter().copied())
                .collect::<Vec<u8>>();
            match (&*file).write_all(&buf).and_then(|()| file.sync_data()) {
                Ok(()) => {
                    let mut st = self.state.lock();
                    let State { log, pending, .. } = &mut *st;
                    let Some(log) = log.as_mut() else { return };
                    for (seq, line) in &lines {
                        log.at.insert(*seq, (log.len, line.len()));
                        log.len += line.len() as u64;
                        log.lines += 1;
                        pending.remove(seq);
                    }
                    return;
                }
                Err(error) => {
                    // Take a partial write back, so the next append starts a line of its own.
                    let _ = file.set_len(len);
                    let error = self.io(error);
                    if attempt == WRITE_ATTEMPTS {
                        tracing::error!(%error, records = lines.len(), "Cannot log finished deploys to the history; they are kept in memory only, until exit.");
                    } else {
                        tracing::warn!(%error, attempt, "Cannot log finished deploys to the history; retrying.");
                        std::thread::sleep(Duration::from_millis(100 << attempt));
                    }
                }
            }
        }
    }

    fn io(&self, source: std::io::Error) -> HistoryError {
        HistoryError::Io {
            path: self.path.clone().unwrap_or_default(),
            source,
        }
    }

    /// Appends a finished deploy to a history without a file.
    fn append_in_memory(&self, record: Record) -> Result<(), HistoryError> {
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let Record {
            finished_at,
            deploy,
            report,
        } = record;
        st.insert(
            Archived {
                finished_at,
                deploy,
                seq,
                report: Some(report),
            },
            self.retention_ms,
        );
        Ok(())
    }

    /// Rewrites the file with the live records' lines only. The bulk is copied without the
    /// state's lock; the lines appended meanwhile are copied and the file renamed under it,
    /// so no append is lost (an earlier version released the lock before re-reading the
    /// file and renaming, and lost what finished in between). It holds the file's lock
    /// throughout, so the writer appends nothing meanwhile; records queued wait for it and
    /// go to the new file.
    fn compact(&self) -> Result<(), HistoryError> {
        let Some(path) = self.path.as_deref() else {
            return Ok(());
        };
        let Some(_one) = self.file_lock.try_lock() else {
            return Ok(()); // the writer is busy; it compacts after its batch if worth it
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

    fn report(&self, id: &str) -> Result<Option<Report>, HistoryError> {
        let (file, (offset, n)) = {
            let st = self.state.lock();
            let Some(a) = st.by_id.get(id) else {
                return Ok(None);
            };
            if let Some(r) = &a.report {
                return Ok(Some(r.clone()));
            }
            if let Some(r) = st.pending.get(&a.seq) {
                return Ok(Some(r.report.clone()));
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
            assert!(h.flush(Duration::from_secs(10)));
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

    /// Issue 15: appending does not wait for the disk. A record is listed and its report
    /// served at once; a flush returns once its line is on disk, and dropping the history
    /// drains what is queued.
    #[test]
    fn appends_are_served_at_once_written_by_the_writer_and_drained_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), Duration::from_secs(3600)).unwrap();
        let flusher = h.flusher();
        let path = h.path().unwrap().to_path_buf();
        for i in 0..500 {
            h.append(record(&format!("d{i}"), "cart", T0 + i)).unwrap();
            // Served at once, whether its line is written yet or not.
            assert_eq!(
                h.report(&format!("d{i}")).unwrap().unwrap().deploy.id,
                format!("d{i}")
            );
        }
        assert!(flusher.flush(Duration::from_secs(10)));
        assert_eq!(flusher.pending(), 0);
        let on_disk = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(on_disk, 500);
        for i in 500..1000 {
            h.append(record(&format!("d{i}"), "cart", T0 + i)).unwrap();
        }
        drop(h);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count(),
            1000
        );
        let h = History::open(dir.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!(h.len(), 1000);
        assert_eq!(h.report("d999").unwrap().unwrap().deploy.id, "d999");
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
