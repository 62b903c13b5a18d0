//! `portunus-core`: the Portunus domain. Models, validation, the rule lifecycle, policy,
//! sans-io protocol pieces and the use cases, over ports that adapters implement.
//!
//! Invariants: no tokio, no sockets, no files, no clock reads. Time comes in as
//! [`ids::Timestamp`] (or `now` arguments), randomness through [`ports::Entropy`], and every
//! failure that reaches a user carries an [`ErrorCode`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod account;
pub mod agent;
pub mod audit;
pub mod backoff;
pub mod capability;
pub mod client;
pub mod config;
pub mod dns_cache;
pub mod endpoint;
pub mod enroll;
pub mod error;
pub mod fsclass;
pub mod grant;
pub mod health;
pub mod ids;
pub mod policy;
pub mod ports;
pub mod proxy_protocol;
pub mod rule;
pub mod secret;
pub mod service;
pub mod settings;
pub mod standalone;
pub mod stats;
pub mod throttle;
pub mod udp;

#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

pub use error::{ErrorCode, Failure};

/// Version of the control protocol this build speaks. Bumped only for additive changes that a
/// peer may want to know about; old peers keep working.
pub const PROTOCOL_VERSION: u32 = 1;
