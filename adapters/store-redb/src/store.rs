//! Opening and closing the store: the file lock, the checks before a write, the schema check
//! and the redb settings.
//!
//! Invariants: a `RedbStore` only exists for a file at [`SCHEMA_VERSION`](crate::SCHEMA_VERSION)
//! whose tables all exist. A fresh store is made only where no file exists. An existing file is
//! first opened through a scratch backend that keeps every write in memory, where redb's crash
//! repair, its integrity check and the schema check all run; only a file that passes them is
//! opened for writing. So a damaged, truncated, empty or foreign file, and one of a newer
//! schema, is refused with its bytes as they were, while one that a crash merely left needing
//! repair is repaired.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use portunus_core::ports::StoreError;
use redb::backends::{FileBackend, InMemoryBackend};
use redb::{Builder, Database, Durability, ReadableDatabase, StorageBackend, WriteTransaction};

use crate::error::{as_damage, store_err};
use crate::schema;
use crate::scratch::ScratchBackend;

/// The server's state in one redb file (or in memory, for tests).
///
/// Every method is safe to call from several threads: reads run in their own snapshot, and
/// redb serialises write transactions.
#[derive(Debug)]
pub struct RedbStore {
    pub(crate) db: Database,
}

impl RedbStore {
    /// Opens the store at `path`, creating it (mode 0600) only if no file exists there.
    ///
    /// Fails with `InUse` while another handle (in this or another process) has the file open,
    /// with `SchemaTooNew` when a newer binary wrote it, and with `Damaged` when the file is
    /// empty, truncated, fails redb's integrity check or is not a Portunus store; each refusal
    /// leaves the file's bytes as they were. A file left by a crash is repaired to its last
    /// committed transaction and migrated forward.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(store) = Self::create_new(path)? {
            return Ok(store);
        }
        check_file(path)?;
        let db = builder().open(path).map_err(store_err)?;
        Self::prepare(db)
    }

    /// Checks, without writing a byte to it, that the file at `path` is a Portunus store this
    /// binary can open: what [`RedbStore::open`] checks before it writes. Returns the schema
    /// version recorded in the file (the one before any migration `open` would run).
    ///
    /// Fails as `open` does; a missing file is an `Unavailable` I/O error, and a redb file
    /// that Portunus never wrote to (no tables at all) is `Damaged`.
    pub fn check(path: &Path) -> Result<u64, StoreError> {
        check_file(path)?
            .ok_or_else(|| StoreError::Damaged { detail: "the file holds no Portunus tables".into() })
    }

    /// Makes a fresh store at `path` if, and only if, nothing exists there; `None` otherwise.
    fn create_new(path: &Path) -> Result<Option<Self>, StoreError> {
        let file = match OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
            Err(err) => return Err(StoreError::Unavailable { source: Box::new(err) }),
        };
        let backend = FileBackend::new(file).map_err(store_err)?;
        let db = builder().create_with_backend(backend).map_err(store_err)?;
        Self::prepare(db).map(Some)
    }

    /// A fresh, empty store in memory. Nothing outlives the value.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::with_backend(InMemoryBackend::new())
    }

    /// Opens (or initialises) the store on any redb storage backend, e.g. one that injects
    /// faults. The schema rules of [`RedbStore::open`] apply, except that a newer schema is only
    /// detected after redb opened the backend for writing.
    pub fn with_backend(backend: impl StorageBackend) -> Result<Self, StoreError> {
        let db = builder().create_with_backend(backend).map_err(store_err)?;
        Self::prepare(db)
    }

    /// Closes the file and releases its lock, reporting what dropping the store would ignore.
    pub fn close(self) -> Result<(), StoreError> {
        self.db.close().map_err(store_err)
    }

    /// A write transaction whose commit returns only once it is on stable storage.
    pub(crate) fn begin_durable_write(&self) -> Result<WriteTransaction, StoreError> {
        begin_durable_write(&self.db)
    }

    /// Checks the schema and creates what is missing, in one durable transaction.
    fn prepare(db: Database) -> Result<Self, StoreError> {
        let tx = begin_durable_write(&db)?;
        // On error `tx` is dropped uncommitted, which aborts it: nothing of ours is written.
        schema::prepare(&tx)?;
        tx.commit().map_err(store_err)?;
        Ok(RedbStore { db })
    }
}

fn begin_durable_write(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut tx = db.begin_write().map_err(store_err)?;
    // Immediate is redb's default; it is set anyway because an acknowledged write surviving a
    // crash is this adapter's whole contract.
    tx.set_durability(Durability::Immediate).map_err(store_err)?;
    Ok(tx)
}

/// redb settings shared by every open.
fn builder() -> Builder {
    let mut builder = Database::builder();
    // The control-plane file is small, so verifying it at open is cheap; without the check a
    // file damaged outside redb may panic on open instead of failing with `Corrupted`.
    builder.set_check_integrity_on_open(true);
    builder
}

/// Runs every check [`RedbStore::open`] makes before it writes, against a scratch view of the
/// file that keeps redb's writes in memory: crash repair, the integrity check of every page,
/// and the schema check with any migrations. Returns the recorded schema version (`None` for a
/// redb file nothing was committed to by Portunus).
fn check_file(path: &Path) -> Result<Option<u64>, StoreError> {
    let meta = std::fs::metadata(path).map_err(|err| StoreError::Unavailable { source: Box::new(err) })?;
    if !meta.is_file() {
        return Err(StoreError::Damaged { detail: format!("{} is not a regular file", path.display()) });
    }
    if meta.len() == 0 {
        // redb would initialise an empty file as a new database; an existing empty store is a
        // lost one, never a fresh install.
        return Err(StoreError::Damaged { detail: "the file is empty (0 bytes)".into() });
    }
    let backend =
        ScratchBackend::open(path).map_err(|err| StoreError::Unavailable { source: Box::new(err) })?;
    let dry_run = move || -> Result<Option<u64>, StoreError> {
        let db = builder().create_with_backend(backend).map_err(store_err)?;
        let tx = begin_durable_write(&db)?;
        let found = schema::prepare(&tx)?;
        // Dropped uncommitted: the scratch writes go nowhere either way.
        drop(tx);
        db.close().map_err(store_err)?;
        Ok(found)
    };
    // redb reads arbitrary bytes here; should a malformed file make it panic rather than
    // return an error, that too means the file is damaged, and the server must not go on.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(dry_run)) {
        Ok(result) => result.map_err(as_damage),
        Err(_) => Err(StoreError::Damaged { detail: "redb could not read the file's structure".into() }),
    }
}

impl RedbStore {
    /// A read view of the last committed state.
    pub(crate) fn snapshot(&self) -> Result<crate::source::View<redb::ReadTransaction>, StoreError> {
        Ok(crate::source::View(self.db.begin_read().map_err(store_err)?))
    }
}

// Each read of the store runs in its own read transaction: one committed snapshot per call.
portunus_core::delegate_read_ports!(RedbStore, |store: &RedbStore| store.snapshot());
