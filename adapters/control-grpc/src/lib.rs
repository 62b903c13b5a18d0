//! `portunus-control`: the control stream between server and clients over gRPC (tonic) with
//! TLS (rustls, ring) and certificate pinning, plus enrollment.
//!
//! Invariants: adapters hold no policy — every decision (authentication, replay set,
//! lifecycle transitions, reconciliation) is a call into `portunus-core`; generated protobuf
//! types never leave this crate's seam (`convert`).
#![forbid(unsafe_code)]

pub mod client;
pub mod convert;
mod journal;
mod limits;
mod quota;
pub mod server;
pub mod tls;

pub use client::{ClientInfo, connect_pinned, redeem, run};
pub use server::{ControlService, ServerInfo, serve};
pub use tls::{TlsIdentity, install_default_provider, load_or_generate};
