//! Integration tests of the redb store: the core `Store` contract, opening rules (lock,
//! schema version, persistence), crash consistency under injected I/O faults, and the
//! filesystem probe.
//!
//! Invariant: every file lives under `CARGO_TARGET_TMPDIR` (a real disk, never /tmp or a
//! tmpfs), so fsync and file locks behave as they do for the server.
#![forbid(unsafe_code)]

mod backup;
mod contract;
mod crash;
mod damaged;
mod fs;
mod open;
mod support;
mod timing;
