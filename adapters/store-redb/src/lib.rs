//! `portunus-store-redb`: the [`Store`](portunus_core::ports::Store) port on one redb file.
//!
//! This crate owns the on-disk layout of the server's state: which tables exist, how keys and
//! values are encoded, the schema version and the forward-only migrations. It holds no policy:
//! every decision (who may rename a client, which rule id to use) is made in core.
//!
//! Invariants: a batch is applied in one durable write transaction, so a reader or a restart
//! sees all of it or none of it; every table exists once `open` returns, so read transactions
//! never meet a missing table; a file written by a newer schema, and one that is damaged or
//! not a Portunus store, is refused before anything is written to it.
//!
//! Layout (all values are JSON of the core type unless noted):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `schema_version`, `next_rule_id` | `u64` |
//! | `clients` | client id | `Client` |
//! | `client_names` | client name | client id (`&str`) |
//! | `rules` | rule id (`u64`) | `Rule` |
//! | `enrollments` | code hash, lowercase hex | `Enrollment` |
//! | `totals` | rule id (`u64`) | `RuleTotals` |
//! | `users` | user id | `User` (Argon2id PHC hash, never a password) |
//! | `grants` | grant id (`gr_…`) | `Grant` |
//! | `api_tokens` | token id (`tk_…`) | `ApiToken` (SHA-256 of the token) |
//! | `sessions` | session id (`ss_…`) | `WebSession` (SHA-256 of cookie and CSRF token) |
//! | `throttles` | `attempt:scope:value` | `Throttle` |
//! | `settings` | `runtime` | `RuntimeSettings` (onboarding, endpoint override) |
//! | `audit` | sequence number (`u64`) | `AuditRecord` |
#![forbid(unsafe_code)]

mod accounts;
mod backup;
mod error;
mod fs;
mod history;
mod quotas;
mod read;
mod schema;
mod scratch;
mod source;
mod store;
mod write;

pub use fs::filesystem_magic;
pub use schema::SCHEMA_VERSION;
pub use store::RedbStore;
