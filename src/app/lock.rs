//! One deploywatch per `--storage.path`: a directory in, an exclusive lock on its `lock` file
//! out (or an error naming the process that holds it). Two processes writing snapshots,
//! the journal and the history into one directory would each overwrite the other's.
//!
//! The lock is the kernel's (`flock(2)`, through rustix, already in the build for
//! `tempfile`): it goes when the process dies, however it dies, so a `kill -9` never
//! leaves a stale lock behind, and no pid has to be checked for liveness. The file's text
//! (`pid=…`, `address=…`) only names the holder in the error.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

/// The lock file's name inside `--storage.path` (as Prometheus' TSDB names its own).
pub const LOCK_FILE: &str = "lock";

/// Why `--storage.path` could not be locked; nothing in the directory changed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "--storage.path {dir} is in use by another deploywatch ({holder}); stop it, or give this one another --storage.path"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock --storage.path {dir}: {error}")]
    Io { dir: PathBuf, error: std::io::Error },
}

/// The held lock on a storage directory; released when dropped or when the process exits.
#[derive(Debug)]
pub struct StorageLock {
    file: File,
    dir: PathBuf,
}

impl StorageLock {
    /// Locks `dir` (which must exist) for this process, without waiting: if another process
    /// holds it, fails at once naming that process. Records this process' id in the file.
    pub fn acquire(dir: &Path) -> Result<StorageLock, LockError> {
        let io = |error| LockError::Io {
            dir: dir.to_path_buf(),
            error,
        };
        // Opened without truncating: the holder's text stays readable until the lock is ours.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == Errno::WOULDBLOCK => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: describe_holder(&text),
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        let lock = StorageLock {
            file,
            dir: dir.to_path_buf(),
        };
        lock.record(None).map_err(io)?;
        Ok(lock)
    }

    /// Adds the address this process listens on to the holder's description.
    pub fn set_address(&self, address: SocketAddr) {
        if let Err(error) = self.record(Some(address)) {
            tracing::warn!(%error, dir = %self.dir.display(), "Cannot write the listen address into the storage lock file.");
        }
    }

    fn record(&self, address: Option<SocketAddr>) -> std::io::Result<()> {
        let mut text = format!("pid={}\n", std::process::id());
        if let Some(a) = address {
            text.push_str(&format!("address={a}\n"));
        }
        self.file.set_len(0)?;
        self.file.write_all_at(text.as_bytes(), 0)
    }
}

/// "pid 4242, listening on 127.0.0.1:10997" from the lock file's text.
fn describe_holder(text: &str) -> String {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match (field("pid"), field("address")) {
        (Some(pid), Some(addr)) => format!("pid {pid}, listening on {addr}"),
        (Some(pid), None) => format!("pid {pid}, starting"),
        _ => "a process that has not written its pid yet".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_fails_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StorageLock::acquire(dir.path()).unwrap();
        first.set_address("127.0.0.1:10997".parse().unwrap());
        // Another open file description, as another process has: flock refuses it too.
        let err = StorageLock::acquire(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{msg}");
        assert!(
            msg.contains(&format!(
                "pid {}, listening on 127.0.0.1:10997",
                std::process::id()
            )),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "one line: {msg}");
        // The refused attempt left the holder's text alone.
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(text.contains("address=127.0.0.1:10997"), "{text}");
        drop(first);
        StorageLock::acquire(dir.path()).expect("free again once dropped");
    }

    #[test]
    fn holders_are_described_from_what_they_wrote() {
        assert_eq!(describe_holder("pid=7\n"), "pid 7, starting");
        assert_eq!(
            describe_holder("pid=7\naddress=[::1]:1\n"),
            "pid 7, listening on [::1]:1"
        );
        assert_eq!(
            describe_holder(""),
            "a process that has not written its pid yet"
        );
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = StorageLock::acquire(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }), "{err}");
    }
}
