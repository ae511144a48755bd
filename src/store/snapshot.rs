//! Snapshots of the store: every series' label set and compressed ring out to one file
//! under `--storage.path`, read back and checked at start.
//!
//! A snapshot is written to a temporary file, synced, and renamed over `snapshot.bin`
//! (the one it replaces is kept as `snapshot.prev.bin`), then the directory is synced: a
//! crash at any moment leaves a complete old or a complete new snapshot. Reading checks
//! every section's CRC-32 and the end marker, so a truncated or flipped file is refused
//! whole with the reason, never half-loaded.
//!
//! ```text
//! file    = MAGIC section* end
//! section = kind:u8 len:u32le payload crc:u32le     (crc over kind, len and payload)
//! SERIES  = (varint label_len, labels (canonical RW 1.0 bytes), varint ring_len, ring)*
//! ring    = float ring (store::ring), then its native histogram ring (store::hist), if any
//! STATE   = the caller's opaque bytes (JSON: deploy events kept beside the samples)
//! end     = section END whose payload is series:u64le sections:u64le
//! ```

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::hist::HistRing;
use super::ring::{put_varint, RingBuffer};
use super::Store;

/// The newest complete snapshot under `--storage.path`.
pub const FILE_NAME: &str = "snapshot.bin";
/// The one before it, read when the newest is missing or corrupt.
pub const PREV_FILE_NAME: &str = "snapshot.prev.bin";
const TMP_FILE_NAME: &str = "snapshot.tmp";
const MAGIC: &[u8; 8] = b"DWSNAP\x00\x01";

const SERIES: u8 = 1;
const STATE: u8 = 2;
const END: u8 = 0xff;
/// Series are written in sections of about this size, each with its own checksum.
const SECTION_BYTES: usize = 1 << 20;
/// A section longer than this is corrupt (bounds what a damaged length can allocate).
const MAX_SECTION_BYTES: usize = 64 << 20;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// A snapshot read back: series with their samples, and the caller's state section.
#[derive(Default)]
pub struct Snapshot {
    /// Label bytes, float samples, native histogram samples.
    pub series: Vec<(Vec<u8>, RingBuffer, Option<HistRing>)>,
    pub state: Vec<u8>,
    /// Bytes read.
    pub bytes: u64,
}

/// What writing one snapshot took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    pub series: u64,
    pub bytes: u64,
}

impl Store {
    /// Writes every series and `state` to `dir/snapshot.bin`, atomically. Pushes go on
    /// meanwhile: each series is copied under its own lock, one at a time.
    pub fn write_snapshot(&self, dir: &Path, state: &[u8]) -> Result<Written, SnapshotError> {
        let tmp = dir.join(TMP_FILE_NAME);
        let io = |source| SnapshotError::Io {
            path: tmp.clone(),
            source,
        };
        let file = File::create(&tmp).map_err(io)?;
        let mut w = SectionWriter::new(BufWriter::with_capacity(1 << 16, file));
        // One series' encoded ring, reused: its length goes before it.
        let mut ring = Vec::new();
        for svc in self.services() {
            for s in svc.series() {
                ring.clear();
                {
                    let data = s.data.lock();
                    data.ring.encode_into(&mut ring);
                    if let Some(h) = data.hist.as_ref().filter(|h| !h.is_empty()) {
                        h.encode_into(&mut ring);
                    }
                }
                w.series(s.labels.as_bytes(), &ring).map_err(io)?;
            }
        }
        let series = w.series;
        let file = w.finish(state).map_err(io)?;
        let file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        drop(file);
        let dst = dir.join(FILE_NAME);
        if dst.exists() {
            std::fs::rename(&dst, dir.join(PREV_FILE_NAME)).map_err(io)?;
        }
        std::fs::rename(&tmp, &dst).map_err(io)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(Written { series, bytes })
    }
}

/// Encodes a snapshot from series held by the caller, as [`Store::write_snapshot`] writes
/// them: for tests and tools that need a snapshot of a given content (a hostile one).
pub fn encode(series: &[(Vec<u8>, RingBuffer)], state: &[u8]) -> Vec<u8> {
    encode_with(series.iter().map(|(l, r)| (l, r, None)), state)
}

/// [`encode`], with native histogram samples.
pub fn encode_all(series: &[(Vec<u8>, RingBuffer, Option<HistRing>)], state: &[u8]) -> Vec<u8> {
    encode_with(series.iter().map(|(l, r, h)| (l, r, h.as_ref())), state)
}

fn encode_with<'a>(
    series: impl Iterator<Item = (&'a Vec<u8>, &'a RingBuffer, Option<&'a HistRing>)>,
    state: &[u8],
) -> Vec<u8> {
    let mut w = SectionWriter::new(Vec::new());
    let mut ring = Vec::new();
    for (labels, rb, hist) in series {
        ring.clear();
        rb.encode_into(&mut ring);
        if let Some(h) = hist.filter(|h| !h.is_empty()) {
            h.encode_into(&mut ring);
        }
        w.series(labels, &ring).expect("writing to memory");
    }
    w.finish(state).expect("writing to memory")
}

struct SectionWriter<W: Write> {
    out: W,
    sections: u64,
    /// Series sections being filled, and the series written.
    buf: Vec<u8>,
    series: u64,
}

impl<W: Write> SectionWriter<W> {
    fn new(out: W) -> Self {
        SectionWriter {
            out,
            sections: 0,
            buf: Vec::with_capacity(SECTION_BYTES + 4096),
            series: 0,
        }
    }

    /// Adds one series: its canonical label bytes and its encoded ring.
    fn series(&mut self, labels: &[u8], ring: &[u8]) -> std::io::Result<()> {
        put_varint(&mut self.buf, labels.len() as u64);
        self.buf.extend_from_slice(labels);
        put_varint(&mut self.buf, ring.len() as u64);
        self.buf.extend_from_slice(ring);
        self.series += 1;
        if self.buf.len() >= SECTION_BYTES {
            self.flush_series()?;
        }
        Ok(())
    }

    fn flush_series(&mut self) -> std::io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        self.section(SERIES, &buf)?;
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }

    /// Writes the last series, the state and the end marker; returns the output.
    fn finish(mut self, state: &[u8]) -> std::io::Result<W> {
        if !self.buf.is_empty() {
            self.flush_series()?;
        }
        self.section(STATE, state)?;
        let mut end = Vec::with_capacity(16);
        end.extend_from_slice(&self.series.to_le_bytes());
        end.extend_from_slice(&(self.sections + 1).to_le_bytes());
        self.section(END, &end)?;
        Ok(self.out)
    }

    fn section(&mut self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        if self.sections == 0 {
            self.out.write_all(MAGIC)?;
        }
        let len = (payload.len() as u32).to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[kind]);
        crc.update(&len);
        crc.update(payload);
        self.out.write_all(&[kind])?;
        self.out.write_all(&len)?;
        self.out.write_all(payload)?;
        self.out.write_all(&crc.finalize().to_le_bytes())?;
        self.sections += 1;
        Ok(())
    }
}

/// Reads and checks the snapshot at `path`. `Ok(None)`: there is none.
pub fn read(path: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f
            .read_to_end(&mut bytes)
            .map_err(|source| SnapshotError::Io {
                path: path.into(),
                source,
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: path.into(),
                source,
            })
        }
    };
    parse(&bytes)
        .map(Some)
        .map_err(|reason| SnapshotError::Corrupt {
            path: path.into(),
            reason,
        })
}

/// Parses a whole snapshot file; any damage is an error naming where.
pub fn parse(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a deploywatch snapshot (bad magic)".into());
    }
    let mut snap = Snapshot {
        bytes: bytes.len() as u64,
        ..Snapshot::default()
    };
    let mut pos = MAGIC.len();
    let mut sections = 0u64;
    loop {
        if bytes.len() - pos < 9 {
            return Err(format!("truncated at byte {pos}: no end marker"));
        }
        let kind = bytes[pos];
        let len = u32::from_le_bytes(bytes[pos + 1..pos + 5].try_into().unwrap()) as usize;
        if len > MAX_SECTION_BYTES || bytes.len() - pos - 9 < len {
            return Err(format!(
                "truncated or damaged at byte {pos}: section of {len} bytes"
            ));
        }
        let payload = &bytes[pos + 5..pos + 5 + len];
        let stored = u32::from_le_bytes(bytes[pos + 5 + len..pos + 9 + len].try_into().unwrap());
        let crc = crc32fast::hash(&bytes[pos..pos + 5 + len]);
        if crc != stored {
            return Err(format!(
                "checksum mismatch in the section at byte {pos} (stored {stored:08x}, computed {crc:08x})"
            ));
        }
        pos += 9 + len;
        sections += 1;
        match kind {
            SERIES => parse_series(payload, &mut snap.series)
                .map_err(|e| format!("section at byte {}: {e}", pos - 9 - len))?,
            STATE => snap.state = payload.to_vec(),
            END => {
                if len != 16 {
                    return Err("malformed end marker".into());
                }
                let series = u64::from_le_bytes(payload[..8].try_into().unwrap());
                let count = u64::from_le_bytes(payload[8..].try_into().unwrap());
                if series != snap.series.len() as u64 || count != sections {
                    return Err(format!(
                        "end marker counts {series} series in {count} sections, read {} in {sections}",
                        snap.series.len()
                    ));
                }
                if pos != bytes.len() {
                    return Err(format!("{} bytes after the end marker", bytes.len() - pos));
                }
                return Ok(snap);
            }
            k => return Err(format!("unknown section kind {k}")),
        }
    }
}

fn parse_series(
    mut b: &[u8],
    out: &mut Vec<(Vec<u8>, RingBuffer, Option<HistRing>)>,
) -> Result<(), String> {
    while !b.is_empty() {
        let labels = take_prefixed(&mut b).ok_or("truncated label set")?;
        let ring = take_prefixed(&mut b).ok_or("truncated ring")?;
        let (rb, used) = RingBuffer::decode_from(ring).ok_or("malformed ring")?;
        let hist = match &ring[used..] {
            [] => None,
            rest => {
                let (h, n) = HistRing::decode_from(rest).ok_or("malformed histogram ring")?;
                if n != rest.len() {
                    return Err("ring length mismatch".into());
                }
                Some(h)
            }
        };
        out.push((labels.to_vec(), rb, hist));
    }
    Ok(())
}

fn take_prefixed<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut len = 0u64;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let byte = *b.get(i)?;
        i += 1;
        len |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 35 {
            return None;
        }
    }
    let len = usize::try_from(len).ok()?;
    let rest = b.get(i..)?;
    if rest.len() < len {
        return None;
    }
    let (head, tail) = rest.split_at(len);
    *b = tail;
    Some(head)
}

/// Moves a snapshot that failed to read aside (`<name>.corrupt`), so the next start does
/// not trip on it again and it is kept for a look.
pub fn quarantine(path: &Path) -> Option<PathBuf> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).ok().map(|_| aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        crate::store::store_for_tests(1000)
    }

    fn filled() -> Store {
        let s = store();
        let mut batch = crate::ingest::Batch::default();
        for i in 0..50u32 {
            let labels = crate::store::LabelSet::from_strs(&[
                ("__name__", "m"),
                ("i", &i.to_string()),
                ("job", "a"),
            ]);
            let samples: Vec<crate::ingest::batch::Sample> = (0..100)
                .map(|k| crate::ingest::batch::Sample {
                    ts: k * 15_000,
                    value: (k * i as i64) as f64,
                })
                .collect();
            batch.push_encoded(labels.as_bytes(), &samples);
        }
        s.ingest(&mut batch, &mut Default::default()).unwrap();
        s
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = filled();
        let w = s.write_snapshot(dir.path(), b"{\"x\":1}").unwrap();
        assert_eq!(w.series, 50);
        let snap = read(&dir.path().join(FILE_NAME)).unwrap().unwrap();
        assert_eq!(snap.series.len(), 50);
        assert_eq!(snap.state, b"{\"x\":1}");
        for (labels, ring, _) in &snap.series {
            let live = s
                .get(&crate::store::LabelSet::from_encoded(labels))
                .unwrap();
            let live: Vec<_> = live.data.lock().ring.iter().collect();
            let read: Vec<_> = ring.iter().collect();
            assert_eq!(live, read);
        }
        // A second snapshot keeps the first as the previous one.
        s.write_snapshot(dir.path(), b"{}").unwrap();
        assert!(dir.path().join(PREV_FILE_NAME).exists());
    }

    #[test]
    fn every_truncation_and_flip_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        filled().write_snapshot(dir.path(), b"{}").unwrap();
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(parse(&bytes).is_ok());
        for cut in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
            assert!(parse(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        for at in (0..bytes.len()).step_by(89) {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            assert!(parse(&b).is_err(), "flipped byte {at}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(parse(&longer).is_err());
    }

    #[test]
    fn encode_writes_what_the_store_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = filled();
        s.write_snapshot(dir.path(), b"{}").unwrap();
        let written = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let snap = parse(&written).unwrap();
        assert_eq!(encode_all(&snap.series, b"{}"), written);
        // Rings of any content, the empty one included, as a hostile snapshot holds.
        let mut extreme = RingBuffer::new();
        for t in [i64::MIN, -1, 0, i64::MAX] {
            extreme.push(t, f64::NAN, 1);
        }
        let series = vec![(b"x".to_vec(), RingBuffer::new()), (b"y".to_vec(), extreme)];
        let back = parse(&encode(&series, b"")).unwrap();
        assert_eq!(back.series.len(), 2);
        assert!(back.series[0].1.is_empty());
        let times: Vec<i64> = back.series[1].1.iter().map(|s| s.0).collect();
        assert_eq!(times, [i64::MIN, -1, 0, i64::MAX]);
    }

    #[test]
    fn missing_snapshot_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join(FILE_NAME)).unwrap().is_none());
    }
}
