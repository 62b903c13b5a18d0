//! One read path for both kinds of transaction: a use case that runs inside a write
//! transaction reads through the same code as a plain read, and sees the writes the
//! transaction has applied so far.

use redb::{
    Key, ReadOnlyTable, ReadTransaction, ReadableTable, Table, TableDefinition, Value, WriteTransaction,
};

use portunus_core::ports::StoreError;

use crate::error::store_err;

/// Something tables can be opened in for reading.
pub(crate) trait Source {
    /// The table handle it gives out.
    type Table<'s, K: Key + 'static, V: Value + 'static>: ReadableTable<K, V>
    where
        Self: 's;

    /// Opens `def` for reading. In a write transaction the handle must be dropped before the
    /// same table is opened again (redb refuses a table that is already open).
    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<'static, K, V>,
    ) -> Result<Self::Table<'_, K, V>, StoreError>;
}

impl Source for ReadTransaction {
    type Table<'s, K: Key + 'static, V: Value + 'static> = ReadOnlyTable<K, V>;

    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<'static, K, V>,
    ) -> Result<ReadOnlyTable<K, V>, StoreError> {
        self.open_table(def).map_err(store_err)
    }
}

impl Source for WriteTransaction {
    type Table<'s, K: Key + 'static, V: Value + 'static> = Table<'s, K, V>;

    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<'static, K, V>,
    ) -> Result<Table<'_, K, V>, StoreError> {
        self.open_table(def).map_err(store_err)
    }
}

/// The read ports over one transaction.
pub(crate) struct View<T>(pub T);
