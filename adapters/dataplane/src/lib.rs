//! `portunus-dataplane`: the client's data plane. For TCP it binds a rule's listen ports,
//! connects each accepted connection to the rule's preferred reachable target and pumps bytes
//! both ways, with `splice(2)` on Linux and a userspace copy elsewhere or on request. For UDP
//! it keeps a flow per `(listen port, source)` with its own connected upstream socket and
//! moves datagrams in batches (`recvmmsg`/`sendmmsg` on Linux).
//!
//! Layout: [`plane`] owns the rule registry and implements
//! [`RuleRuntime`]; `listen` binds and accepts; `target` picks and
//! connects targets; `conn` runs one connection; [`mod@relay`] holds the two copy loops;
//! [`counters`] holds the live atomics; [`limits`] the rate limits' clock and the waiting
//! side of bandwidth caps; `udp` runs UDP rules (listeners, flows, reaper);
//! `events` the rate limits and once-flags of log events; `sys` the thin OS wrappers (pipes,
//! splice, batched datagram calls, rlimits).
//!
//! # Embedding
//!
//! Reach for this crate to forward ports from your own service; it needs no server. Rules
//! come in as `portunus-core`'s validated [`RuleDef`](portunus_core::rule::RuleDef) (build one
//! with [`RuleSpec::validate`](portunus_core::rule::RuleSpec::validate)); core also holds the
//! control-plane model and services, and the adapters `portunus-runtime`, `portunus-http`
//! and `portunus-control` the rest of a server and its gRPC client loop (see
//! `docs/ARCHITECTURE.md`). `cargo run -p portunus-dataplane --example forward -- 8080
//! 127.0.0.1:80` is a complete forwarder in one screen.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//!
//! use portunus_core::ids::RuleId;
//! use portunus_core::rule::{ListenSpec, RuleLimits, RuleSpec};
//! use portunus_dataplane::{DataPlane, DataPlaneOptions, RuleRuntime};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpStream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
//! // Something to forward to: an echo server on loopback.
//! let backend = TcpListener::bind("127.0.0.1:0").await?;
//! let target = backend.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((mut conn, _)) = backend.accept().await {
//!         tokio::spawn(async move {
//!             let (mut rd, mut wr) = conn.split();
//!             let _ = tokio::io::copy(&mut rd, &mut wr).await;
//!         });
//!     }
//! });
//!
//! // One rule: 127.0.0.1:`listen` to the backend, validated as the server would.
//! let def = RuleSpec {
//!     name: None,
//!     protocol: Default::default(),
//!     listen_port: ListenSpec::Port(i64::from(listen)),
//!     listen_addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
//!     target: Some(target.to_string()),
//!     targets: vec![],
//!     prefer_ipv6: false,
//!     health_check_interval_secs: None,
//!     sni_pattern: None,
//!     sni_fallback: false,
//!     rate_limit: None,
//! }
//! .validate(RuleLimits::default())?;
//!
//! // The plane runs on the current tokio runtime.
//! let plane = DataPlane::new(DataPlaneOptions::default());
//! let id = RuleId::new(1);
//! plane.bind(id, def).await?;
//!
//! let mut conn = TcpStream::connect(("127.0.0.1", listen)).await?;
//! conn.write_all(b"ping").await?;
//! let mut echoed = [0u8; 4];
//! conn.read_exact(&mut echoed).await?;
//! assert_eq!(&echoed, b"ping");
//!
//! // Counters per rule, per listen port and per target; bytes count once delivered.
//! let (_, report) = plane.report().into_iter().find(|(rule, _)| *rule == id).unwrap();
//! assert_eq!((report.totals.bytes_in, report.totals.bytes_out), (4, 4));
//! assert_eq!(report.per_target[0].counters.bytes_in, 4);
//!
//! // Unbinding closes the listener at once and cuts the rule's connections.
//! plane.unbind(id);
//! assert!(TcpStream::connect(("127.0.0.1", listen)).await.is_err());
//! # Ok(())
//! # }
//! ```
//!
//! Invariants: no policy lives here (core decides, this crate moves bytes); bytes are counted
//! when delivered to the destination socket, never when merely read; no payload byte is ever
//! logged; `unsafe` is denied everywhere but `sys`, which allows it for the batched datagram
//! calls, the reactor registration of datagram sockets and glibc's `malloc_trim` only (every
//! other OS call goes through nix and socket2).
#![deny(unsafe_code)]

pub mod budget;
mod conn;
pub mod counters;
mod events;
pub mod limits;
mod listen;
pub mod plane;
pub mod ports;
pub mod relay;
mod settings;
mod sni;
mod sys;
mod target;
mod udp;

pub use counters::TrafficCounters;
pub use plane::{DataPlane, DataPlaneOptions};
pub use ports::{ResolveFailure, Resolver, RuleRuntime};
pub use relay::{CopyPath, RelayEnd, RelayError, Side, SpliceFault, relay};

/// Empty pipes waiting in the fast path's pool (0 off Linux). For tests and benches.
#[doc(hidden)]
pub fn pooled_pipes() -> usize {
    relay::pool_stats().pipes_idle
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so a busy forwarder (two sockets per
/// connection, and at most 256 pipes of two ends on the fast path) does not run out of
/// descriptors at the usual soft default of 1024. Returns the soft limit before and after.
///
/// Calling it again is harmless: the second call finds the soft limit already raised.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    sys::raise_nofile_limit()
}
