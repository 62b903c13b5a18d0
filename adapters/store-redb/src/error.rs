//! The seam between redb's errors (and the JSON codec's) and core's `StoreError`.
//!
//! Invariant: every foreign error is mapped here, in one place, and keeps its cause chain:
//! only a record that cannot be decoded becomes a `Corrupted` detail string, because that
//! variant carries no source.

use portunus_core::ports::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Maps any redb error to the store error a caller can act on.
pub(crate) fn store_err(err: impl Into<redb::Error>) -> StoreError {
    match err.into() {
        redb::Error::Corrupted(detail) => StoreError::Corrupted { detail },
        // Both mean another handle (this process or another) has the file open for writing.
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => StoreError::InUse,
        other => StoreError::Unavailable { source: Box::new(other) },
    }
}

/// A record whose bytes do not decode, named by table and key.
pub(crate) fn corrupted(table: &str, key: &dyn std::fmt::Display, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupted { detail: format!("{table}[{key}]: {why}") }
}

/// Decodes a JSON record read from `table` under `key`.
pub(crate) fn decode<T: DeserializeOwned>(
    table: &str,
    key: &dyn std::fmt::Display,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| corrupted(table, key, err))
}

/// Encodes a record as JSON. The core types serialise to JSON without fail (string map keys,
/// no non-finite floats), so an error here is an adapter bug, reported with its cause.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|err| StoreError::Unavailable { source: Box::new(err) })
}
