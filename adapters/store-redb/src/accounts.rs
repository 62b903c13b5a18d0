//! The read side of the version 2 tables: users, grants, credentials, the audit trail,
//! runtime settings and throttles.
//!
//! Invariant: like every read here, a record is returned only after it decoded and its key
//! agrees with its content (a user stored under another user's id is `Corrupted`).

use portunus_core::account::{ApiToken, User, WebSession};
use portunus_core::audit::{AuditQuery, AuditRecord, AuditStats, PrunePlan, plan_prune};
use portunus_core::grant::Grant;
use portunus_core::ids::{GrantId, SessionId, Timestamp, TokenId, UserId};
use portunus_core::ports::{AuditStore, CredentialStore, GrantStore, StateStore, StoreError, UserStore};
use portunus_core::settings::RuntimeSettings;
use portunus_core::throttle::Throttle;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::de::DeserializeOwned;

use crate::error::{corrupted, decode, store_err};
use crate::schema::{API_TOKENS, AUDIT, GRANTS, RUNTIME_SETTINGS_KEY, SESSIONS, SETTINGS, THROTTLES, USERS};
use crate::source::{Source, View};

type TextTable = TableDefinition<'static, &'static str, &'static [u8]>;

/// A record's own key, for the key check.
trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for User {
    fn key(&self) -> &str {
        self.id.as_str()
    }
}
impl Keyed for Grant {
    fn key(&self) -> &str {
        self.id.as_str()
    }
}
impl Keyed for ApiToken {
    fn key(&self) -> &str {
        self.id.as_str()
    }
}
impl Keyed for WebSession {
    fn key(&self) -> &str {
        self.id.as_str()
    }
}

fn get_keyed<T: DeserializeOwned + Keyed>(
    tx: &impl Source,
    table: TextTable,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let rows = tx.table(table)?;
    let Some(row) = rows.get(key).map_err(store_err)? else { return Ok(None) };
    let value: T = decode(table.name(), &key, row.value())?;
    if value.key() != key {
        return Err(corrupted(table.name(), &key, format!("holds {}", value.key())));
    }
    Ok(Some(value))
}

fn list_keyed<T: DeserializeOwned + Keyed>(tx: &impl Source, table: TextTable) -> Result<Vec<T>, StoreError> {
    let rows = tx.table(table)?;
    let mut res = Vec::new();
    for row in rows.iter().map_err(store_err)? {
        let (key, value) = row.map_err(store_err)?;
        let key = key.value();
        let record: T = decode(table.name(), &key, value.value())?;
        if record.key() != key {
            return Err(corrupted(table.name(), &key, format!("holds {}", record.key())));
        }
        res.push(record);
    }
    Ok(res)
}

impl<S: Source> UserStore for View<S> {
    fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        get_keyed(&self.0, USERS, id.as_str())
    }
    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        list_keyed(&self.0, USERS)
    }
}

impl<S: Source> GrantStore for View<S> {
    fn get_grant(&self, id: &GrantId) -> Result<Option<Grant>, StoreError> {
        get_keyed(&self.0, GRANTS, id.as_str())
    }
    fn list_grants(&self) -> Result<Vec<Grant>, StoreError> {
        list_keyed(&self.0, GRANTS)
    }
}

impl<S: Source> CredentialStore for View<S> {
    fn get_api_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        get_keyed(&self.0, API_TOKENS, id.as_str())
    }
    fn list_api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        list_keyed(&self.0, API_TOKENS)
    }
    fn get_session(&self, id: &SessionId) -> Result<Option<WebSession>, StoreError> {
        get_keyed(&self.0, SESSIONS, id.as_str())
    }
    fn list_sessions(&self) -> Result<Vec<WebSession>, StoreError> {
        list_keyed(&self.0, SESSIONS)
    }
}

impl<S: Source> AuditStore for View<S> {
    fn audit_stats(&self) -> Result<AuditStats, StoreError> {
        let rows = self.0.table(AUDIT)?;
        let stats = rows.stats().map_err(store_err)?;
        Ok(AuditStats { rows: rows.len().map_err(store_err)?, bytes: stats.stored_bytes() })
    }
    fn audit_prune_plan(&self, before: Timestamp, limit: u64) -> Result<Option<PrunePlan>, StoreError> {
        let rows = self.0.table(AUDIT)?;
        let newest = match rows.last().map_err(store_err)? {
            Some((key, _)) => key.value(),
            None => return Ok(None),
        };
        let mut failure = None;
        let oldest_first = rows.iter().map_err(store_err)?.map_while(|row| {
            let decoded = row.map_err(store_err).and_then(|(key, value)| {
                let seq = key.value();
                decode::<AuditRecord>(AUDIT.name(), &seq, value.value()).map(|r| (seq, r.at))
            });
            decoded.map_err(|e| failure = Some(e)).ok()
        });
        let plan = plan_prune(oldest_first, newest, before, limit);
        match failure {
            Some(err) => Err(err),
            None => Ok(plan),
        }
    }
    fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = self.0.table(AUDIT)?;
        let start = query.after.map_or(0, |seq| seq.saturating_add(1));
        let mut res = Vec::new();
        if query.after == Some(u64::MAX) {
            return Ok(res);
        }
        for row in rows.range(start..).map_err(store_err)? {
            let (key, value) = row.map_err(store_err)?;
            let seq = key.value();
            let record: AuditRecord = decode(AUDIT.name(), &seq, value.value())?;
            if record.seq != seq {
                return Err(corrupted(AUDIT.name(), &seq, format!("holds record {}", record.seq)));
            }
            if query.matches(&record) {
                res.push(record);
                if res.len() >= query.limit {
                    break;
                }
            }
        }
        Ok(res)
    }
}

impl<S: Source> StateStore for View<S> {
    fn runtime_settings(&self) -> Result<RuntimeSettings, StoreError> {
        let rows = self.0.table(SETTINGS)?;
        match rows.get(RUNTIME_SETTINGS_KEY).map_err(store_err)? {
            Some(row) => decode(SETTINGS.name(), &RUNTIME_SETTINGS_KEY, row.value()),
            None => Ok(RuntimeSettings::default()),
        }
    }

    fn get_throttle(&self, key: &str) -> Result<Option<Throttle>, StoreError> {
        let rows = self.0.table(THROTTLES)?;
        let Some(row) = rows.get(key).map_err(store_err)? else { return Ok(None) };
        decode(THROTTLES.name(), &key, row.value()).map(Some)
    }
}
