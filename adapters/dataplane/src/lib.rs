//! `portunus-dataplane`: the client's data plane. For TCP it binds a rule's listen ports,
//! connects each accepted connection to the rule's preferred reachable target and pumps bytes
//! both ways, with `splice(2)` on Linux and a userspace copy elsewhere or on request. For UDP
//! it keeps a flow per `(listen port, source)` with its own connected upstream socket and
//! moves datagrams in batches (`recvmmsg`/`sendmmsg` on Linux).
//!
//! Layout: [`plane`] owns the rule registry and implements
//! [`RuleRuntime`]; `listen` binds and accepts; `target` picks and
//! connects targets; `conn` runs one connection; [`mod@relay`] holds the two copy loops;
//! [`counters`] holds the live atomics; `udp` runs UDP rules (listeners, flows, reaper);
//! `events` the rate limits and once-flags of log events; `sys` the thin OS wrappers (pipes,
//! splice, batched datagram calls, rlimits).
//!
//! Invariants: no policy lives here (core decides, this crate moves bytes); bytes are counted
//! when delivered to the destination socket, never when merely read; no payload byte is ever
//! logged; `unsafe` is denied everywhere but `sys`, which allows it for the batched datagram
//! calls and the reactor registration of datagram sockets only (every other OS call goes
//! through nix and socket2).
#![deny(unsafe_code)]

mod conn;
pub mod counters;
mod events;
mod listen;
pub mod plane;
pub mod ports;
pub mod relay;
mod settings;
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
    #[cfg(target_os = "linux")]
    return sys::pooled();
    #[cfg(not(target_os = "linux"))]
    return 0;
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so a busy forwarder (two sockets and,
/// on the fast path, four pipe ends per connection) does not run out of descriptors at the
/// usual soft default of 1024. Returns the soft limit before and after.
///
/// Calling it again is harmless: the second call finds the soft limit already raised.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    sys::raise_nofile_limit()
}
