//! Generated types and services of `proto/portunus.proto`. Nothing else lives here: the
//! control adapter converts these to core types at its seam.
//!
//! Invariant: the .proto changes additively only (new fields, new messages, new oneof arms);
//! field numbers are never reused.
#![allow(missing_docs, clippy::all)]

/// `portunus.control.v1`.
pub mod v1 {
    tonic::include_proto!("portunus.control.v1");
}
