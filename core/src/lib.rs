//! `portunus-core`: the Portunus domain. Models, validation, the rule lifecycle, policy,
//! sans-io protocol pieces and the use cases, over ports that adapters implement.
//!
//! Invariants: no tokio, no sockets, no files, no clock reads, and the use cases never wait.
//! Time comes in as [`ids::Timestamp`] (or `now` arguments), randomness through
//! [`ports::Entropy`], and every failure that reaches a user carries an [`ErrorCode`].
//!
//! # Embedding
//!
//! Which crate to reach for: this one for the decisions (validation, RBAC, the rule lifecycle,
//! the control-plane use cases); `portunus-runtime` for a ready async control plane over a
//! [`ports::Store`]; `portunus-dataplane` to forward ports from your own service.
//!
//! The control plane's use cases are four services ([`service::ClientService`],
//! [`service::RuleService`], [`service::AccountService`], [`service::AdminService`]). Each
//! method runs against a [`service::Cx`] — a store view, the live [`ports::Sessions`] and
//! `now` — and stages its writes, its audit record and its effects on live clients; you commit
//! the staged batch in one [`ports::Store::transact`] and then perform the effects. The ports
//! you provide:
//!
//! - [`ports::Store`]: the read ports ([`ports::ClientStore`], [`ports::RuleStore`], …) plus
//!   `transact`, whose [`ports::StoreTx`] reads see the transaction's own writes;
//! - [`ports::Sessions`]: which clients are connected, with which capabilities;
//! - [`ports::Entropy`] and [`ports::PasswordHasher`] for the services that mint secrets.
//!
//! `cargo run -p portunus-core --example embed` pushes a rule with [`service::RuleService`]
//! over the in-memory store of `test_support` (feature `test-support`) and prints the command
//! it would send and the audit row committed with it.
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
pub mod memory;
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
