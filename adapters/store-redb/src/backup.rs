//! Backups: a copy of the whole store as of one committed snapshot, written to a new file
//! while the store stays open for reads and writes.
//!
//! Invariants: every row of the copy comes from one read transaction, so the copy is a state
//! the store was really in (never half of a batch); every table of the source is copied (a
//! table this module does not know fails the backup rather than leave it out); the new file
//! is created 0600, never overwrites anything, and is synced before `backup_to` returns.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use portunus_core::ports::StoreError;
use redb::backends::FileBackend;
use redb::{
    Builder, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value, WriteTransaction,
};

use crate::error::store_err;
use crate::schema::{
    API_TOKENS, AUDIT, CLIENT_NAMES, CLIENTS, ENROLLMENTS, GRANTS, META, OWNER_CAPS, QUOTAS, RULES, SESSIONS,
    SETTINGS, THROTTLES, TOTALS, TRAFFIC_1H, TRAFFIC_1M, USERS,
};
use crate::store::RedbStore;

impl RedbStore {
    /// Writes a copy of the whole store, as of the last commit when the call starts, to a new
    /// file at `path` (mode 0600), synced to disk. Writes to the store may go on meanwhile;
    /// none of them is in the copy, and none waits for it. Fails if `path` exists; a failed
    /// backup removes what it had written. The copy opens with [`RedbStore::open`] like any
    /// store of this schema.
    pub fn backup_to(&self, path: &Path) -> Result<(), StoreError> {
        let snapshot = self.db.begin_read().map_err(store_err)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|err| StoreError::Unavailable { source: Box::new(err) })?;
        let written = write_copy(&snapshot, file);
        if written.is_err() {
            let _ = std::fs::remove_file(path);
        }
        written
    }
}

fn write_copy(snapshot: &ReadTransaction, file: std::fs::File) -> Result<(), StoreError> {
    let copy =
        Builder::new().create_with_backend(FileBackend::new(file).map_err(store_err)?).map_err(store_err)?;
    let mut tx = copy.begin_write().map_err(store_err)?;
    tx.set_durability(redb::Durability::Immediate).map_err(store_err)?;
    let n_copied = copy_tables(snapshot, &tx)?;
    let n_tables = snapshot.list_tables().map_err(store_err)?.count()
        + snapshot.list_multimap_tables().map_err(store_err)?.count();
    if n_copied != n_tables {
        return Err(StoreError::Corrupted {
            detail: format!("the store has {n_tables} tables and a backup knows {n_copied}"),
        });
    }
    tx.commit().map_err(store_err)?;
    // Closing flushes and releases the file; `Immediate` made the commit durable already.
    copy.close().map_err(store_err)
}

/// Copies every table of the schema that exists in `from` into `to`; returns how many.
fn copy_tables(from: &ReadTransaction, to: &WriteTransaction) -> Result<usize, StoreError> {
    let copied = [
        copy_table(from, to, META)?,
        copy_table(from, to, CLIENTS)?,
        copy_table(from, to, CLIENT_NAMES)?,
        copy_table(from, to, RULES)?,
        copy_table(from, to, ENROLLMENTS)?,
        copy_table(from, to, TOTALS)?,
        copy_table(from, to, USERS)?,
        copy_table(from, to, GRANTS)?,
        copy_table(from, to, API_TOKENS)?,
        copy_table(from, to, SESSIONS)?,
        copy_table(from, to, THROTTLES)?,
        copy_table(from, to, SETTINGS)?,
        copy_table(from, to, AUDIT)?,
        copy_table(from, to, QUOTAS)?,
        copy_table(from, to, OWNER_CAPS)?,
        copy_table(from, to, TRAFFIC_1M)?,
        copy_table(from, to, TRAFFIC_1H)?,
    ];
    Ok(copied.into_iter().filter(|present| *present).count())
}

/// Copies one table row by row; false when `from` has no such table.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<bool, StoreError> {
    let source = match from.open_table(table) {
        Ok(source) => source,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
        Err(err) => return Err(store_err(err)),
    };
    let mut target = to.open_table(table).map_err(store_err)?;
    for row in source.iter().map_err(store_err)? {
        let (key, value) = row.map_err(store_err)?;
        target.insert(key.value(), value.value()).map_err(store_err)?;
    }
    Ok(true)
}
