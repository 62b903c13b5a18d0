//! The tables, the schema version and the forward-only migrations.
//!
//! Invariants: `SCHEMA_VERSION` is one more than the number of migrations (checked at compile
//! time); a file is only ever moved forward, inside the same write transaction that checks its
//! version; a version newer than this binary's is reported, never rewritten.

use portunus_core::ports::StoreError;
use redb::{MultimapTableDefinition, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::error::store_err;

/// The schema version this binary writes and reads.
pub const SCHEMA_VERSION: u64 = 6;

/// Store-wide counters: [`SCHEMA_VERSION_KEY`] and [`NEXT_RULE_ID_KEY`].
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Client id → JSON `Client`.
pub(crate) const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("clients");
/// Client name → client id; exactly one entry per client, moved on rename.
pub(crate) const CLIENT_NAMES: TableDefinition<&str, &str> = TableDefinition::new("client_names");
/// Rule id → JSON `Rule`.
pub(crate) const RULES: TableDefinition<u64, &[u8]> = TableDefinition::new("rules");
/// Client id → ids of its rules: an index of versions 3 to 5, dropped by version 6 (the server
/// answers these reads from memory, and the tree cost every rule write a fourth B-tree in its
/// commit). Named only by the migrations that built and dropped it.
pub(crate) const CLIENT_RULES: MultimapTableDefinition<&str, u64> =
    MultimapTableDefinition::new("client_rules");
/// Enrollment code hash (lowercase hex) → JSON `Enrollment`.
pub(crate) const ENROLLMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrollments");
/// Rule id → JSON `RuleTotals`.
pub(crate) const TOTALS: TableDefinition<u64, &[u8]> = TableDefinition::new("totals");
/// User id → JSON `User`. (Version 2.)
pub(crate) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// Grant id → JSON `Grant`. (Version 2.)
pub(crate) const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");
/// API token id → JSON `ApiToken` (holding only the token's hash). (Version 2.)
pub(crate) const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
/// Session id → JSON `WebSession` (holding only hashes). (Version 2.)
pub(crate) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// Throttle key → JSON `Throttle`. (Version 2.)
pub(crate) const THROTTLES: TableDefinition<&str, &[u8]> = TableDefinition::new("throttles");
/// [`RUNTIME_SETTINGS_KEY`] → JSON `RuntimeSettings`. (Version 2.)
pub(crate) const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// Sequence number (from 1, gap-free) → JSON `AuditRecord`. (Version 2.)
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Traffic quotas, keyed `"<user> <client>"` (see `quotas`).
pub(crate) const QUOTAS: TableDefinition<&str, &[u8]> = TableDefinition::new("quotas");
/// Owner envelopes (rate limits of a user's rules on a client), keyed `"<user> <client>"`
/// like quotas. (Version 5.)
pub(crate) const OWNER_CAPS: TableDefinition<&str, &[u8]> = TableDefinition::new("owner_caps");
/// One-minute traffic samples, keyed by (start in ms, `"<user> <client> <rule>"`).
pub(crate) const TRAFFIC_1M: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("traffic_1m");
/// One-hour traffic samples, keyed like `traffic_1m`.
pub(crate) const TRAFFIC_1H: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("traffic_1h");

/// `settings` key of the one runtime settings record.
pub(crate) const RUNTIME_SETTINGS_KEY: &str = "runtime";

/// `meta` key of the schema version.
pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";
/// `meta` key of the next rule id to hand out; starts at 1 and only grows.
pub(crate) const NEXT_RULE_ID_KEY: &str = "next_rule_id";

/// One forward step: rewrites a file of version `n` into version `n + 1`.
type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` moves a file from version `i + 1` to `i + 2`. To change the layout, append a
/// step here and bump [`SCHEMA_VERSION`]; released steps are never edited.
const MIGRATIONS: &[Migration] = &[v1_to_v2, v2_to_v3, v3_to_v4, v4_to_v5, v5_to_v6];

/// Version 2 adds users, grants, credentials, throttles, settings and the audit trail. A
/// version 1 file has none of them; they start empty, so onboarding is open on an upgraded
/// server exactly as on a fresh one.
fn v1_to_v2(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(USERS).map_err(store_err)?;
    tx.open_table(GRANTS).map_err(store_err)?;
    tx.open_table(API_TOKENS).map_err(store_err)?;
    tx.open_table(SESSIONS).map_err(store_err)?;
    tx.open_table(THROTTLES).map_err(store_err)?;
    tx.open_table(SETTINGS).map_err(store_err)?;
    tx.open_table(AUDIT).map_err(store_err)?;
    Ok(())
}

/// Version 3 indexes rules by client: the index is built from the rules already stored.
fn v2_to_v3(tx: &WriteTransaction) -> Result<(), StoreError> {
    let rules = tx.open_table(RULES).map_err(store_err)?;
    let mut index = tx.open_multimap_table(CLIENT_RULES).map_err(store_err)?;
    for row in rules.iter().map_err(store_err)? {
        let (key, value) = row.map_err(store_err)?;
        let rule: portunus_core::rule::Rule =
            crate::error::decode(RULES.name(), &key.value(), value.value())?;
        index.insert(rule.client.as_str(), rule.id.get()).map_err(store_err)?;
    }
    Ok(())
}

/// Version 4 adds traffic quotas and the traffic history; a file without them starts with
/// none.
fn v3_to_v4(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(QUOTAS).map_err(store_err)?;
    tx.open_table(TRAFFIC_1M).map_err(store_err)?;
    tx.open_table(TRAFFIC_1H).map_err(store_err)?;
    Ok(())
}

/// Version 5 adds owner envelopes; a file without them starts with none.
fn v4_to_v5(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(OWNER_CAPS).map_err(store_err)?;
    Ok(())
}

/// Version 6 drops the client→rules index: a client's rules and the per-client counts are
/// read from the rules themselves (the server keeps both in memory), so a rule write no longer
/// touches a second tree. The rules table is unchanged.
fn v5_to_v6(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.delete_multimap_table(CLIENT_RULES).map_err(store_err)?;
    Ok(())
}

const _: () = assert!(MIGRATIONS.len() as u64 + 1 == SCHEMA_VERSION, "one migration per version step");

/// The error for a file written by a newer binary.
pub(crate) fn too_new(found: u64) -> StoreError {
    StoreError::SchemaTooNew { found, supported: SCHEMA_VERSION }
}

/// Checks the file's version in `tx` and brings it to [`SCHEMA_VERSION`]: a fresh file gets
/// every table and the counters, an older one runs the migrations it lacks. Every table exists
/// afterwards. A newer file yields `SchemaTooNew`; the caller must then drop `tx` uncommitted.
/// Returns the version the file had before (`None` for a fresh one).
pub(crate) fn prepare(tx: &WriteTransaction) -> Result<Option<u64>, StoreError> {
    let found = written_version(tx)?;
    match found {
        None => initialize(tx)?,
        Some(found) if found > SCHEMA_VERSION => return Err(too_new(found)),
        Some(found) => migrate(tx, found)?,
    }
    create_tables(tx)?;
    Ok(found)
}

/// The version in the file, read inside the write transaction, without creating anything.
fn written_version(tx: &WriteTransaction) -> Result<Option<u64>, StoreError> {
    let mut n_tables = 0usize;
    let mut has_meta = false;
    for table in tx.list_tables().map_err(store_err)? {
        n_tables += 1;
        has_meta |= table.name() == META.name();
    }
    if !has_meta {
        // Tables without a version were not written by Portunus: refuse rather than adopt them.
        return if n_tables == 0 {
            Ok(None)
        } else {
            Err(StoreError::Corrupted { detail: "the file holds tables but no schema version".into() })
        };
    }
    let meta = tx.open_table(META).map_err(store_err)?;
    let version = meta.get(SCHEMA_VERSION_KEY).map_err(store_err)?.map(|guard| guard.value());
    version.map(Some).ok_or_else(missing_version)
}

fn missing_version() -> StoreError {
    StoreError::Corrupted { detail: format!("meta[{SCHEMA_VERSION_KEY}] is missing") }
}

/// Writes the counters of a fresh file.
fn initialize(tx: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META).map_err(store_err)?;
    meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION).map_err(store_err)?;
    meta.insert(NEXT_RULE_ID_KEY, 1u64).map_err(store_err)?;
    Ok(())
}

/// Runs every migration from `found` up to [`SCHEMA_VERSION`], recording each step.
fn migrate(tx: &WriteTransaction, found: u64) -> Result<(), StoreError> {
    if found == 0 {
        return Err(StoreError::Corrupted { detail: "schema version 0 was never written".into() });
    }
    // `found` is at most SCHEMA_VERSION here, so the index is small.
    let first_step = usize::try_from(found - 1).unwrap_or(usize::MAX);
    for (version, step) in (found + 1..).zip(MIGRATIONS.iter().skip(first_step)) {
        step(tx)?;
        let mut meta = tx.open_table(META).map_err(store_err)?;
        meta.insert(SCHEMA_VERSION_KEY, version).map_err(store_err)?;
    }
    Ok(())
}

/// Opens every table once in `tx`, which creates the missing ones, so that read transactions
/// never fail on a missing table.
fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(META).map_err(store_err)?;
    tx.open_table(CLIENTS).map_err(store_err)?;
    tx.open_table(CLIENT_NAMES).map_err(store_err)?;
    tx.open_table(RULES).map_err(store_err)?;
    tx.open_table(ENROLLMENTS).map_err(store_err)?;
    tx.open_table(TOTALS).map_err(store_err)?;
    v1_to_v2(tx)?;
    v3_to_v4(tx)
}
