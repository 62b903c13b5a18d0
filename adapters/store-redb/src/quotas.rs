//! The quotas table (schema version 4) and the owner envelopes table (version 5): one row
//! per (user, client) pair in each.
//!
//! Invariant: the key is `"<user> <client>"`. A space sorts below every character a user or
//! client id may hold, so rows list by user, then client; a row is returned only when its
//! content names the pair its key does.

use portunus_core::ids::{ClientId, UserId};
use portunus_core::ports::{QuotaStore, StoreError};
use portunus_core::quota::Quota;
use portunus_core::ratelimit::OwnerCaps;
use redb::{ReadableTable, TableHandle};

use crate::error::{corrupted, decode, store_err};
use crate::schema::{OWNER_CAPS, QUOTAS};
use crate::source::{Source, View};

/// The row key of a pair's quota.
pub(crate) fn quota_key(user: &UserId, client: &ClientId) -> String {
    format!("{} {}", user.as_str(), client.as_str())
}

fn checked(key: &str, quota: Quota) -> Result<Quota, StoreError> {
    let own = quota_key(&quota.user, &quota.client);
    if own != key {
        return Err(corrupted(QUOTAS.name(), &key, format!("holds {own}")));
    }
    Ok(quota)
}

impl<S: Source> QuotaStore for View<S> {
    fn get_quota(&self, user: &UserId, client: &ClientId) -> Result<Option<Quota>, StoreError> {
        let rows = self.0.table(QUOTAS)?;
        let key = quota_key(user, client);
        let Some(row) = rows.get(key.as_str()).map_err(store_err)? else { return Ok(None) };
        checked(&key, decode(QUOTAS.name(), &key, row.value())?).map(Some)
    }

    fn list_quotas(&self) -> Result<Vec<Quota>, StoreError> {
        let rows = self.0.table(QUOTAS)?;
        let mut quotas = Vec::new();
        for row in rows.iter().map_err(store_err)? {
            let (key, value) = row.map_err(store_err)?;
            let key = key.value();
            quotas.push(checked(key, decode(QUOTAS.name(), &key, value.value())?)?);
        }
        Ok(quotas)
    }
}

impl<S: Source> portunus_core::ports::OwnerCapsStore for View<S> {
    fn get_owner_caps(&self, user: &UserId, client: &ClientId) -> Result<Option<OwnerCaps>, StoreError> {
        let rows = self.0.table(OWNER_CAPS)?;
        let key = quota_key(user, client);
        let Some(row) = rows.get(key.as_str()).map_err(store_err)? else { return Ok(None) };
        checked_envelope(&key, decode(OWNER_CAPS.name(), &key, row.value())?).map(Some)
    }

    fn list_owner_caps(&self) -> Result<Vec<OwnerCaps>, StoreError> {
        let rows = self.0.table(OWNER_CAPS)?;
        let mut envelopes = Vec::new();
        for row in rows.iter().map_err(store_err)? {
            let (key, value) = row.map_err(store_err)?;
            let key = key.value();
            envelopes.push(checked_envelope(key, decode(OWNER_CAPS.name(), &key, value.value())?)?);
        }
        Ok(envelopes)
    }
}

fn checked_envelope(key: &str, envelope: OwnerCaps) -> Result<OwnerCaps, StoreError> {
    let own = quota_key(&envelope.user, &envelope.client);
    if own != key {
        return Err(corrupted(OWNER_CAPS.name(), &key, format!("holds {own}")));
    }
    Ok(envelope)
}
