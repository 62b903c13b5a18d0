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

/// Reclassifies an error met while checking a file before it is opened for writing: whatever
/// says the bytes are not an intact Portunus store (a checksum or structure redb rejects, a
/// wrong magic number, a file shorter than its header says, tables of the wrong types, a record
/// that does not decode) becomes `Damaged`. A lock held elsewhere, a newer schema and I/O
/// failures of the disk itself keep their own variants.
pub(crate) fn as_damage(err: StoreError) -> StoreError {
    match err {
        StoreError::Corrupted { detail } => StoreError::Damaged { detail },
        StoreError::Unavailable { source } => match source.downcast::<redb::Error>() {
            Ok(redb_err) if is_damage(&redb_err) => StoreError::Damaged { detail: redb_err.to_string() },
            Ok(redb_err) => StoreError::Unavailable { source: redb_err },
            Err(source) => StoreError::Unavailable { source },
        },
        other => other,
    }
}

fn is_damage(err: &redb::Error) -> bool {
    match err {
        redb::Error::Io(io) => {
            matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof)
        }
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => true,
        _ => false,
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
