//! A storage backend over an existing file that never writes to it: reads come from the file,
//! and every write, resize and sync lands in memory instead. Locks are the file's own, so a
//! scratch open conflicts with a server holding the file exactly as a real open does.
//!
//! Invariant: no method of [`ScratchBackend`] changes the file's bytes or length. It exists so
//! that redb's crash repair, its integrity check and the schema check can run against a file
//! before anything is allowed to write to it (see `store::check_file`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Granularity of the in-memory copy of written bytes. Any size works; redb's page size keeps
/// most writes to whole chunks.
const CHUNK: u64 = 4096;

/// The file underneath and what redb wrote on top of it.
#[derive(Debug)]
pub(crate) struct ScratchBackend {
    /// Read through, and locked through; never written (see the module invariant).
    file: FileBackend,
    /// False for a file this process may only read (a backup kept read-only): it cannot be
    /// locked, and needs no lock, since no server can be writing a file it cannot write either.
    locks: bool,
    state: Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    /// The length redb sees.
    len: u64,
    /// Bytes of the file at or past this offset read as zeros unless written: the file's length,
    /// lowered by every shrink (a shrink followed by a grow must not bring old bytes back).
    file_visible: u64,
    /// Written chunks by index; always `CHUNK` long.
    chunks: BTreeMap<u64, Vec<u8>>,
}

impl ScratchBackend {
    /// A scratch view of the file at `path`. The file is opened for writing, when this
    /// process may, only so that redb can take the exclusive locks a writer takes; no byte is
    /// ever written through it.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let (file, locks): (File, bool) = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => (file, true),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                (File::open(path)?, false)
            }
            Err(err) => return Err(err),
        };
        Self::over(file, locks)
    }

    /// A scratch view of `file`, taking its locks only when `locks` is set.
    fn over(file: File, locks: bool) -> io::Result<Self> {
        let len = file.metadata()?.len();
        let file = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(ScratchBackend {
            file,
            locks,
            state: Mutex::new(Overlay { len, file_visible: len, chunks: BTreeMap::new() }),
        })
    }

    /// The file's lock methods, or `Unsupported` (which redb accepts) for a read-only file.
    fn lockable(&self) -> Result<&FileBackend, BackendError> {
        if self.locks { Ok(&self.file) } else { Err(BackendError::Unsupported) }
    }

    fn overlay(&self) -> io::Result<std::sync::MutexGuard<'_, Overlay>> {
        self.state.lock().map_err(|_| io::Error::other("scratch overlay lock poisoned"))
    }

    /// The bytes of chunk `idx` as they stand now: written ones, else the file's, else zeros.
    fn base_chunk(&self, overlay: &Overlay, idx: u64) -> io::Result<Vec<u8>> {
        if let Some(chunk) = overlay.chunks.get(&idx) {
            return Ok(chunk.clone());
        }
        let mut chunk = vec![0u8; CHUNK as usize];
        let start = idx * CHUNK;
        let from_file = overlay.file_visible.saturating_sub(start).min(CHUNK);
        if from_file > 0 {
            self.file.read(start, &mut chunk[..from_file as usize])?;
        }
        Ok(chunk)
    }
}

impl StorageBackend for ScratchBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.overlay()?.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let overlay = self.overlay()?;
        let end = offset.checked_add(out.len() as u64).ok_or_else(|| io::Error::other("read past u64"))?;
        if end > overlay.len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
        }
        let mut at = offset;
        while at < end {
            let idx = at / CHUNK;
            let within = (at % CHUNK) as usize;
            let n = ((CHUNK - at % CHUNK).min(end - at)) as usize;
            let dst = &mut out[(at - offset) as usize..][..n];
            match overlay.chunks.get(&idx) {
                Some(chunk) => dst.copy_from_slice(&chunk[within..within + n]),
                None => {
                    let from_file = overlay.file_visible.saturating_sub(at).min(n as u64) as usize;
                    if from_file > 0 {
                        self.file.read(at, &mut dst[..from_file])?;
                    }
                    dst[from_file..].fill(0);
                }
            }
            at += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut overlay = self.overlay()?;
        if len < overlay.len {
            overlay.file_visible = overlay.file_visible.min(len);
            // Drop whole chunks past the end and zero the tail of the last one, so that growing
            // again reads zeros there, as a real file would.
            let first_gone = len.div_ceil(CHUNK);
            overlay.chunks.retain(|idx, _| *idx < first_gone);
            if !len.is_multiple_of(CHUNK)
                && let Some(last) = overlay.chunks.get_mut(&(len / CHUNK))
            {
                last[(len % CHUNK) as usize..].fill(0);
            }
        }
        overlay.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        // Nothing reaches the file, so there is nothing to make durable.
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut overlay = self.overlay()?;
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| io::Error::other("write past u64"))?;
        if end > overlay.len {
            // A file grows on a write past its end; redb resizes first, but match a file anyway.
            overlay.len = end;
        }
        let mut at = offset;
        while at < end {
            let idx = at / CHUNK;
            let within = (at % CHUNK) as usize;
            let n = ((CHUNK - at % CHUNK).min(end - at)) as usize;
            let mut chunk = self.base_chunk(&overlay, idx)?;
            chunk[within..within + n].copy_from_slice(&data[(at - offset) as usize..][..n]);
            overlay.chunks.insert(idx, chunk);
            at += n as u64;
        }
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        // Releases the file's locks; the file itself was never written.
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.lockable()?.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.lockable()?.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.lockable()?.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.lockable()?.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.lockable()?.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.lockable()?.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests;
