//! The write side of the port: the rule id sequence and atomic batches.
//!
//! Invariants: a batch is one durable write transaction, and any error drops the transaction
//! uncommitted, so no part of a failed batch is ever visible; the name index holds exactly one
//! entry per client, naming it, and never lets two clients share a name.

use portunus_core::client::Client;
use portunus_core::history::Bucket;
use portunus_core::ids::RuleId;
use portunus_core::ports::{RuleIds, Store, StoreError, StoreTx, Write};
use redb::{ReadableTable, Table, TableHandle, WriteTransaction};

use crate::error::{decode, encode, store_err};
use crate::schema::{
    API_TOKENS, AUDIT, CLIENT_NAMES, CLIENTS, ENROLLMENTS, GRANTS, META, NEXT_RULE_ID_KEY, OWNER_CAPS,
    QUOTAS, RULES, RUNTIME_SETTINGS_KEY, SESSIONS, SETTINGS, THROTTLES, TOTALS, TRAFFIC_1H, TRAFFIC_1M,
    USERS,
};
use crate::source::View;
use crate::store::RedbStore;

/// Takes the next id of the rule sequence inside `tx`.
fn take_rule_id(tx: &WriteTransaction) -> Result<RuleId, StoreError> {
    let mut meta = tx.open_table(META).map_err(store_err)?;
    let next = meta.get(NEXT_RULE_ID_KEY).map_err(store_err)?.map(|guard| guard.value());
    let next = next.filter(|n| *n >= 1).ok_or_else(|| StoreError::Corrupted {
        detail: format!("meta[{NEXT_RULE_ID_KEY}] is missing or zero"),
    })?;
    let after = next
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupted { detail: "the rule id sequence is exhausted".into() })?;
    meta.insert(NEXT_RULE_ID_KEY, after).map_err(store_err)?;
    Ok(RuleId::new(next))
}

/// A write transaction in progress: reads see what it has applied so far.
pub(crate) struct RedbTx {
    pub(crate) view: View<WriteTransaction>,
}

// Reads inside the transaction see what it has applied so far.
portunus_core::delegate_read_ports!(RedbTx, RedbTx::view);

impl RedbTx {
    fn view(&self) -> Result<&View<WriteTransaction>, StoreError> {
        Ok(&self.view)
    }
}

impl RuleIds for RedbTx {
    fn next_rule_id(&self) -> Result<RuleId, StoreError> {
        // The id is handed out only once this transaction is durable; if it never commits,
        // the sequence did not move and nothing that used the id was stored either.
        take_rule_id(&self.view.0)
    }
}

impl StoreTx for RedbTx {
    fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut batch = Batch::open(&self.view.0)?;
        for write in writes {
            batch.apply(write)?;
        }
        Ok(())
    }
}

impl RuleIds for RedbStore {
    fn next_rule_id(&self) -> Result<RuleId, StoreError> {
        let tx = self.begin_durable_write()?;
        let id = take_rule_id(&tx)?;
        // The id is handed out only after the advanced sequence is durable, so a crash can
        // never hand it out again.
        tx.commit().map_err(store_err)?;
        Ok(id)
    }
}

impl Store for RedbStore {
    fn transact(
        &self,
        work: &mut dyn FnMut(&dyn StoreTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tx = RedbTx { view: View(self.begin_durable_write()?) };
        // On error `tx` is dropped uncommitted, which aborts it: nothing of it is written.
        work(&tx)?;
        tx.view.0.commit().map_err(store_err)
    }
}

/// The tables a batch writes, open in one write transaction.
struct Batch<'txn> {
    clients: Table<'txn, &'static str, &'static [u8]>,
    names: Table<'txn, &'static str, &'static str>,
    rules: Table<'txn, u64, &'static [u8]>,
    enrollments: Table<'txn, &'static str, &'static [u8]>,
    totals: Table<'txn, u64, &'static [u8]>,
    users: Table<'txn, &'static str, &'static [u8]>,
    grants: Table<'txn, &'static str, &'static [u8]>,
    api_tokens: Table<'txn, &'static str, &'static [u8]>,
    sessions: Table<'txn, &'static str, &'static [u8]>,
    throttles: Table<'txn, &'static str, &'static [u8]>,
    settings: Table<'txn, &'static str, &'static [u8]>,
    audit: Table<'txn, u64, &'static [u8]>,
    quotas: Table<'txn, &'static str, &'static [u8]>,
    owner_caps: Table<'txn, &'static str, &'static [u8]>,
    traffic_1m: Table<'txn, (u64, &'static str), &'static [u8]>,
    traffic_1h: Table<'txn, (u64, &'static str), &'static [u8]>,
}

impl<'txn> Batch<'txn> {
    fn open(tx: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Batch {
            clients: tx.open_table(CLIENTS).map_err(store_err)?,
            names: tx.open_table(CLIENT_NAMES).map_err(store_err)?,
            rules: tx.open_table(RULES).map_err(store_err)?,
            enrollments: tx.open_table(ENROLLMENTS).map_err(store_err)?,
            totals: tx.open_table(TOTALS).map_err(store_err)?,
            users: tx.open_table(USERS).map_err(store_err)?,
            grants: tx.open_table(GRANTS).map_err(store_err)?,
            api_tokens: tx.open_table(API_TOKENS).map_err(store_err)?,
            sessions: tx.open_table(SESSIONS).map_err(store_err)?,
            throttles: tx.open_table(THROTTLES).map_err(store_err)?,
            settings: tx.open_table(SETTINGS).map_err(store_err)?,
            audit: tx.open_table(AUDIT).map_err(store_err)?,
            quotas: tx.open_table(QUOTAS).map_err(store_err)?,
            owner_caps: tx.open_table(OWNER_CAPS).map_err(store_err)?,
            traffic_1m: tx.open_table(TRAFFIC_1M).map_err(store_err)?,
            traffic_1h: tx.open_table(TRAFFIC_1H).map_err(store_err)?,
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
            Write::DeleteClient(id) => self.delete_client(id.as_str()),
            Write::PutUser(user) => put(&mut self.users, user.id.as_str(), &user),
            Write::DeleteUser(id) => delete(&mut self.users, id.as_str()),
            Write::PutGrant(grant) => put(&mut self.grants, grant.id.as_str(), &grant),
            Write::DeleteGrant(id) => delete(&mut self.grants, id.as_str()),
            Write::PutApiToken(token) => put(&mut self.api_tokens, token.id.as_str(), &token),
            Write::DeleteApiToken(id) => delete(&mut self.api_tokens, id.as_str()),
            Write::PutSession(session) => put(&mut self.sessions, session.id.as_str(), &session),
            Write::DeleteSession(id) => delete(&mut self.sessions, id.as_str()),
            Write::PutThrottle(key, throttle) => put(&mut self.throttles, &key, &throttle),
            Write::DeleteThrottle(key) => delete(&mut self.throttles, &key),
            Write::PutSettings(settings) => put(&mut self.settings, RUNTIME_SETTINGS_KEY, &settings),
            Write::AppendAudit(mut record) => {
                // Gap-free numbering in commit order: one more than the last record.
                let last = self.audit.last().map_err(store_err)?.map(|(key, _)| key.value());
                record.seq = last.map_or(1, |n| n.saturating_add(1));
                self.audit.insert(record.seq, encode(&record)?.as_slice()).map_err(store_err)?;
                Ok(())
            }
            Write::PruneAudit { through_seq } => {
                self.audit.retain_in(..=through_seq, |_, _| false).map_err(store_err)?;
                Ok(())
            }
            Write::PutQuota(quota) => {
                let key = crate::quotas::quota_key(&quota.user, &quota.client);
                put(&mut self.quotas, &key, &quota)
            }
            Write::DeleteQuota(user, client) => {
                delete(&mut self.quotas, &crate::quotas::quota_key(&user, &client))
            }
            Write::PutOwnerCaps(envelope) => {
                let key = crate::quotas::quota_key(&envelope.user, &envelope.client);
                put(&mut self.owner_caps, &key, &envelope)
            }
            Write::DeleteOwnerCaps(user, client) => {
                delete(&mut self.owner_caps, &crate::quotas::quota_key(&user, &client))
            }
            Write::PutTrafficSample(sample) => {
                let key = crate::history::sample_key(&sample);
                let table = match sample.bucket {
                    Bucket::Minute => &mut self.traffic_1m,
                    Bucket::Hour => &mut self.traffic_1h,
                };
                table
                    .insert((sample.start.as_millis(), key.as_str()), encode(&sample)?.as_slice())
                    .map_err(store_err)?;
                Ok(())
            }
            Write::PruneTraffic { bucket, before } => {
                let table = match bucket {
                    Bucket::Minute => &mut self.traffic_1m,
                    Bucket::Hour => &mut self.traffic_1h,
                };
                table.retain_in(..(before.as_millis(), ""), |_, _| false).map_err(store_err)?;
                Ok(())
            }
        }
    }

    /// Deletes a client and the name index entry that points at it.
    fn delete_client(&mut self, id: &str) -> Result<(), StoreError> {
        let name = match self.clients.remove(id).map_err(store_err)? {
            Some(row) => Some(decode::<Client>(CLIENTS.name(), &id, row.value())?.name),
            None => None,
        };
        if let Some(name) = name {
            let points_here =
                self.names.get(name.as_str()).map_err(store_err)?.is_some_and(|guard| guard.value() == id);
            if points_here {
                self.names.remove(name.as_str()).map_err(store_err)?;
            }
        }
        Ok(())
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

/// Inserts a JSON record under a text key.
fn put<T: serde::Serialize>(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    table.insert(key, encode(value)?.as_slice()).map_err(store_err)?;
    Ok(())
}

/// Removes a text key; a missing key is not an error.
fn delete(table: &mut Table<'_, &'static str, &'static [u8]>, key: &str) -> Result<(), StoreError> {
    table.remove(key).map_err(store_err)?;
    Ok(())
}
