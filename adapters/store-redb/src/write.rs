//! The write side of the port: the rule id sequence and atomic batches.
//!
//! Invariants: a batch is one durable write transaction, and any error drops the transaction
//! uncommitted, so no part of a failed batch is ever visible; the name index holds exactly one
//! entry per client, naming it, and never lets two clients share a name.

use portunus_core::client::Client;
use portunus_core::ids::RuleId;
use portunus_core::ports::{Store, StoreError, Write};
use redb::{ReadableTable, Table, TableHandle, WriteTransaction};

use crate::error::{decode, encode, store_err};
use crate::schema::{CLIENT_NAMES, CLIENTS, ENROLLMENTS, META, NEXT_RULE_ID_KEY, RULES, TOTALS};
use crate::store::RedbStore;

impl Store for RedbStore {
    fn next_rule_id(&self) -> Result<RuleId, StoreError> {
        let tx = self.begin_durable_write()?;
        let id = {
            let mut meta = tx.open_table(META).map_err(store_err)?;
            let next = meta.get(NEXT_RULE_ID_KEY).map_err(store_err)?.map(|guard| guard.value());
            let next = next.filter(|n| *n >= 1).ok_or_else(|| StoreError::Corrupted {
                detail: format!("meta[{NEXT_RULE_ID_KEY}] is missing or zero"),
            })?;
            let after = next.checked_add(1).ok_or_else(|| StoreError::Corrupted {
                detail: "the rule id sequence is exhausted".into(),
            })?;
            meta.insert(NEXT_RULE_ID_KEY, after).map_err(store_err)?;
            next
        };
        // The id is handed out only after the advanced sequence is durable, so a crash can
        // never hand it out again.
        tx.commit().map_err(store_err)?;
        Ok(RuleId::new(id))
    }

    fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let tx = self.begin_durable_write()?;
        {
            let mut batch = Batch::open(&tx)?;
            for write in writes {
                batch.apply(write)?;
            }
        }
        tx.commit().map_err(store_err)
    }
}

/// The tables a batch writes, open in one write transaction.
struct Batch<'txn> {
    clients: Table<'txn, &'static str, &'static [u8]>,
    names: Table<'txn, &'static str, &'static str>,
    rules: Table<'txn, u64, &'static [u8]>,
    enrollments: Table<'txn, &'static str, &'static [u8]>,
    totals: Table<'txn, u64, &'static [u8]>,
}

impl<'txn> Batch<'txn> {
    fn open(tx: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Batch {
            clients: tx.open_table(CLIENTS).map_err(store_err)?,
            names: tx.open_table(CLIENT_NAMES).map_err(store_err)?,
            rules: tx.open_table(RULES).map_err(store_err)?,
            enrollments: tx.open_table(ENROLLMENTS).map_err(store_err)?,
            totals: tx.open_table(TOTALS).map_err(store_err)?,
        })
    }

    fn apply(&mut self, write: Write) -> Result<(), StoreError> {
        match write {
            Write::PutClient(client) => self.put_client(&client),
            Write::PutRule(rule) => {
                self.rules.insert(rule.id.get(), encode(&rule)?.as_slice()).map_err(store_err)?;
                Ok(())
            }
            Write::DeleteRule(id) => {
                self.rules.remove(id.get()).map_err(store_err)?;
                self.totals.remove(id.get()).map_err(store_err)?;
                Ok(())
            }
            Write::PutEnrollment(enrollment) => {
                let key = enrollment.code_hash.as_str();
                self.enrollments.insert(key, encode(&enrollment)?.as_slice()).map_err(store_err)?;
                Ok(())
            }
            Write::PutTotals(id, totals) => {
                self.totals.insert(id.get(), encode(&totals)?.as_slice()).map_err(store_err)?;
                Ok(())
            }
        }
    }

    /// Stores `client` and points its name at it, dropping the entry of its previous name.
    fn put_client(&mut self, client: &Client) -> Result<(), StoreError> {
        let id = client.id.as_str();
        let name = client.name.as_str();
        let holder = self.names.get(name).map_err(store_err)?.map(|guard| guard.value().to_owned());
        if let Some(holder) = holder
            && holder != id
        {
            // Core checks name uniqueness before it writes; reaching this means the check was
            // bypassed, and writing on would leave a client unreachable by name.
            return Err(StoreError::Corrupted {
                detail: format!(
                    "client name {name} already belongs to {holder}, refusing to give it to {id}"
                ),
            });
        }
        let previous = match self.clients.get(id).map_err(store_err)? {
            Some(row) => Some(decode::<Client>(CLIENTS.name(), &id, row.value())?.name),
            None => None,
        };
        if let Some(previous) = previous
            && previous != client.name
        {
            let points_here = self
                .names
                .get(previous.as_str())
                .map_err(store_err)?
                .is_some_and(|guard| guard.value() == id);
            if points_here {
                self.names.remove(previous.as_str()).map_err(store_err)?;
            }
        }
        self.names.insert(name, id).map_err(store_err)?;
        self.clients.insert(id, encode(client)?.as_slice()).map_err(store_err)?;
        Ok(())
    }
}
