//! The read side of the port: each call runs in one read transaction, so it sees one
//! committed snapshot.
//!
//! Invariant: a record is returned only after it decoded and its key agrees with its content
//! (a rule stored under another id, or a name index entry pointing at a client of another
//! name, is reported as `Corrupted`, never returned).

use portunus_core::client::{Client, Enrollment};
use portunus_core::ids::{ClientId, ClientName, RuleId};
use portunus_core::ports::{ClientStore, EnrollmentStore, RuleStore, StoreError};
use portunus_core::rule::Rule;
use portunus_core::secret::SecretHash;
use portunus_core::stats::RuleTotals;
use redb::{ReadableTable, TableHandle};

use crate::error::{corrupted, decode, store_err};
use crate::schema::{CLIENT_NAMES, CLIENTS, ENROLLMENTS, RULES, TOTALS};
use crate::source::{Source, View};

/// The client stored under `id` in `tx`, if any.
fn client_in<T: Source>(tx: &T, id: &str) -> Result<Option<Client>, StoreError> {
    let clients = tx.table(CLIENTS)?;
    let Some(row) = clients.get(id).map_err(store_err)? else { return Ok(None) };
    let client: Client = decode(CLIENTS.name(), &id, row.value())?;
    if client.id.as_str() != id {
        return Err(corrupted(CLIENTS.name(), &id, format!("holds client {}", client.id)));
    }
    Ok(Some(client))
}

/// Decodes a rule row and checks that it is stored under its own id.
fn rule_from_row(key: u64, bytes: &[u8]) -> Result<Rule, StoreError> {
    let rule: Rule = decode(RULES.name(), &key, bytes)?;
    if rule.id.get() != key {
        return Err(corrupted(RULES.name(), &key, format!("holds rule {}", rule.id)));
    }
    Ok(rule)
}

/// Every rule in id order, keeping those `keep` accepts.
fn rules_where<T: Source>(tx: &T, keep: impl Fn(&Rule) -> bool) -> Result<Vec<Rule>, StoreError> {
    let rules = tx.table(RULES)?;
    let mut res = Vec::new();
    for row in rules.iter().map_err(store_err)? {
        let (key, value) = row.map_err(store_err)?;
        let rule = rule_from_row(key.value(), value.value())?;
        if keep(&rule) {
            res.push(rule);
        }
    }
    Ok(res)
}

impl<T: Source> ClientStore for View<T> {
    fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        client_in(&self.0, id.as_str())
    }

    fn client_by_name(&self, name: &ClientName) -> Result<Option<Client>, StoreError> {
        let tx = &self.0;
        let id = {
            let names = tx.table(CLIENT_NAMES)?;
            let Some(row) = names.get(name.as_str()).map_err(store_err)? else { return Ok(None) };
            row.value().to_owned()
        };
        match client_in(tx, &id)? {
            Some(client) if &client.name == name => Ok(Some(client)),
            Some(client) => {
                Err(corrupted(CLIENT_NAMES.name(), name, format!("points at {id}, named {}", client.name)))
            }
            None => Err(corrupted(CLIENT_NAMES.name(), name, format!("points at missing client {id}"))),
        }
    }

    fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let clients = self.0.table(CLIENTS)?;
        let mut res = Vec::new();
        for row in clients.iter().map_err(store_err)? {
            let (key, value) = row.map_err(store_err)?;
            res.push(decode::<Client>(CLIENTS.name(), &key.value(), value.value())?);
        }
        // Names are unique, so this order is total.
        res.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(res)
    }
}

impl<T: Source> RuleStore for View<T> {
    fn get_rule(&self, id: RuleId) -> Result<Option<Rule>, StoreError> {
        let rules = self.0.table(RULES)?;
        let Some(row) = rules.get(id.get()).map_err(store_err)? else { return Ok(None) };
        rule_from_row(id.get(), row.value()).map(Some)
    }

    fn list_rules(&self) -> Result<Vec<Rule>, StoreError> {
        rules_where(&self.0, |_| true)
    }

    fn rules_for_client(&self, client: &ClientId) -> Result<Vec<Rule>, StoreError> {
        // No index (schema 6): the server reads this from memory; the store's answer serves
        // start-up and offline tools, where a scan of the rules is cheap enough.
        rules_where(&self.0, |rule| &rule.client == client)
    }

    fn rule_counts(&self) -> Result<std::collections::BTreeMap<ClientId, usize>, StoreError> {
        let mut counts = std::collections::BTreeMap::new();
        for rule in rules_where(&self.0, |_| true)? {
            *counts.entry(rule.client).or_insert(0usize) += 1;
        }
        Ok(counts)
    }

    fn list_totals(&self) -> Result<Vec<(RuleId, RuleTotals)>, StoreError> {
        let totals = self.0.table(TOTALS)?;
        let mut res = Vec::new();
        for row in totals.iter().map_err(store_err)? {
            let (key, value) = row.map_err(store_err)?;
            let id = key.value();
            res.push((RuleId::new(id), decode(TOTALS.name(), &id, value.value())?));
        }
        Ok(res)
    }
}

impl<T: Source> EnrollmentStore for View<T> {
    fn get_enrollment(&self, code_hash: &SecretHash) -> Result<Option<Enrollment>, StoreError> {
        let enrollments = self.0.table(ENROLLMENTS)?;
        let key = code_hash.as_str();
        let Some(row) = enrollments.get(key).map_err(store_err)? else { return Ok(None) };
        let enrollment: Enrollment = decode(ENROLLMENTS.name(), &key, row.value())?;
        if &enrollment.code_hash != code_hash {
            return Err(corrupted(ENROLLMENTS.name(), &key, "holds another code's enrollment"));
        }
        Ok(Some(enrollment))
    }
}
