//! `portunus-core`: the Portunus domain. Models, validation, the rule lifecycle, policy,
//! sans-io protocol pieces and the use cases, over ports that adapters implement.
//!
//! Invariants: no tokio, no sockets, no files, no clock reads, and the use cases never wait.
//! Time comes in as [`ids::Timestamp`] (or `now` arguments), randomness through
//! [`ports::Entropy`], and every failure that reaches a user carries an [`ErrorCode`].
//!
//! # Embedding
//!
//! Which crate to reach for (`docs/ARCHITECTURE.md` has the full map):
//!
//! - **this one** for the control-plane model and its decisions: rule specs and their
//!   validation, names and ids, settings, error codes, RBAC, the rule lifecycle, and the
//!   use cases as synchronous services over ports you implement (or over
//!   [`memory::MemoryStore`]);
//! - **`portunus-dataplane`** to forward ports from your own service: bind a validated
//!   [`rule::RuleDef`] and it moves the bytes (no control plane needed);
//! - the adapters for the rest: `portunus-runtime` (a ready async control plane over a
//!   [`ports::Store`]: writer thread, sessions, stats), `portunus-store-redb` (the durable
//!   store), `portunus-http` (the operator HTTP API), `portunus-control` (the gRPC control
//!   stream and its TLS pinning), `portunus-resolver` (DNS-name targets).
//!
//! ```
//! use portunus_core::rule::{RuleLimits, RuleSpec};
//! use portunus_core::ErrorCode;
//!
//! // The same spec the CLI, the HTTP API and the standalone TOML take.
//! let spec: RuleSpec = serde_json::from_str(r#"{"listen_port": 8080, "target": "127.0.0.1:80"}"#)?;
//! let def = spec.validate(RuleLimits::default())?;
//! assert_eq!(def.listen.start(), 8080);
//!
//! let spec: RuleSpec = serde_json::from_str(r#"{"listen_port": 70000, "target": "127.0.0.1:80"}"#)?;
//! let refused = spec.validate(RuleLimits::default()).unwrap_err();
//! assert_eq!((refused.code, refused.code.exit_status()), (ErrorCode::InvalidPort, 2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
pub mod history;
pub mod ids;
pub mod memory;
pub mod policy;
pub mod ports;
pub mod proxy_protocol;
pub mod quota;
pub mod ratelimit;
pub mod rule;
pub mod secret;
pub mod service;
pub mod settings;
pub mod sni;
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
