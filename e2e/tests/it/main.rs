//! End-to-end tests: the real `portunus-server` and `portunus-client` debug binaries on
//! loopback, one module per behaviour of the walking-skeleton issue. Build the binaries
//! first (`cargo build --bins`), then `cargo test -p portunus-e2e`.
//!
//! Invariant: tests share nothing but the binaries. Each has its own scenario directory,
//! kernel-picked ports and its own processes, so they run in parallel safely.

#![forbid(unsafe_code)]

mod harness;

mod accounts;
mod api_contract;
mod audit_durability;
mod audit_trail;
mod backup;
mod cli;
mod config;
mod descriptors;
mod disconnects;
mod dist;
mod enrollment;
mod forwarding;
mod happy_path;
mod lifecycle;
mod logs;
mod metrics;
mod operator_api;
mod pinning;
mod python_tools;
mod quotas;
mod rate_limit_api;
mod rate_limits;
mod rbac_matrix;
mod readme;
mod replay;
mod retry;
mod reuseaddr;
mod rule_targets;
mod secrets;
mod shutdown;
mod sni;
mod standalone;
mod store;
mod tenants;
mod tokens;
mod udp;
mod ui;
mod versions;
