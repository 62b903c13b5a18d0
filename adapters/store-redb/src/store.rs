//! Opening and closing the store: the file lock, the schema check and the redb settings.
//!
//! Invariant: a `RedbStore` only exists for a file at [`SCHEMA_VERSION`] whose tables all
//! exist. A cleanly closed file of a newer schema is refused before redb is asked to open it
//! for writing, so the refusal leaves its bytes as they were; one that a crash left needing
//! repair is repaired first and refused after, still without a write of ours.

use std::path::Path;

use portunus_core::ports::StoreError;
use redb::backends::InMemoryBackend;
use redb::{
    Builder, Database, DatabaseError, Durability, ReadableDatabase, StorageBackend, WriteTransaction,
};

use crate::error::store_err;
use crate::schema::{self, SCHEMA_VERSION};

/// The server's state in one redb file (or in memory, for tests).
///
/// Every method is safe to call from several threads: reads run in their own snapshot, and
/// redb serialises write transactions.
#[derive(Debug)]
pub struct RedbStore {
    pub(crate) db: Database,
}

impl RedbStore {
    /// Opens the store at `path`, creating the file if it does not exist.
    ///
    /// Fails with `InUse` while another handle (in this or another process) has the file open,
    /// with `SchemaTooNew` (leaving the file untouched) when a newer binary wrote it, and with
    /// `Corrupted` when redb's integrity check or the schema record finds damage. A file left
    /// by a crash is repaired to its last committed transaction.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(found) = peek_version(path)?
            && found > SCHEMA_VERSION
        {
            return Err(schema::too_new(found));
        }
        let db = builder().create(path).map_err(store_err)?;
        Self::prepare(db)
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

    /// A write transaction whose commit is durable only with the next durable one.
    pub(crate) fn begin_deferred_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut tx = self.db.begin_write().map_err(store_err)?;
        tx.set_durability(Durability::None).map_err(store_err)?;
        Ok(tx)
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

/// The schema version of an existing file, read through a read-only handle that writes
/// nothing. `None` when there is no file yet, or when only a writer can open it (a crash left
/// it needing repair; the version is then checked after the repair).
fn peek_version(path: &Path) -> Result<Option<u64>, StoreError> {
    let has_content = std::fs::metadata(path).is_ok_and(|meta| meta.len() > 0);
    if !has_content {
        return Ok(None);
    }
    let db = match Builder::new().open_read_only(path) {
        Ok(db) => db,
        Err(DatabaseError::RepairAborted) => return Ok(None),
        Err(err) => return Err(store_err(err)),
    };
    let tx = db.begin_read().map_err(store_err)?;
    let version = schema::recorded_version(&tx)?;
    drop(tx);
    db.close().map_err(store_err)?;
    Ok(version)
}

impl RedbStore {
    /// A read view of the last committed state.
    pub(crate) fn snapshot(&self) -> Result<crate::source::View<redb::ReadTransaction>, StoreError> {
        Ok(crate::source::View(self.db.begin_read().map_err(store_err)?))
    }
}

// Each read of the store runs in its own read transaction: one committed snapshot per call.
portunus_core::delegate_read_ports!(RedbStore, |store: &RedbStore| store.snapshot());
