//! Listeners: binding every port of a rule (all or nothing) and the accept loop per port.
//!
//! Invariants: a rule's listeners are bound with `SO_REUSEADDR` (a `TIME_WAIT` leftover never
//! blocks a rebind, a live listener still does) and never `SO_REUSEPORT`; when any port
//! fails, every listener already bound for the rule is closed before `bind` returns. A
//! listener lives in a [`ListenerSlot`], so unbinding closes it synchronously and the port is
//! free when `unbind` returns, not whenever the accept task next runs.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use portunus_core::rule::RuleDef;
use portunus_core::{ErrorCode, Failure};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::conn::{self, PortState, RuleShared};
use crate::events::Once;

/// Pending-connection queue per listener; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

/// Pause after an accept error that is not about one connection (out of descriptors or
/// memory), so a listener that cannot accept does not spin.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Whether the host can listen on dual-stack `[::]`; learnt on the first default bind.
#[derive(Debug, Default)]
pub(crate) struct Family {
    ipv6_unavailable: AtomicBool,
    fallback_noted: Once,
}

impl Family {
    /// Binds a listener for `port` of a rule whose bind address is `listen_addr`.
    pub(crate) fn bind(
        &self,
        listen_addr: Option<IpAddr>,
        port: u16,
        keepalive: Option<Duration>,
    ) -> io::Result<TcpListener> {
        self.bind_with(listen_addr, port, |addr, dual_stack| bind_one(addr, dual_stack, keepalive))
    }

    /// The address choice, with the socket work in `bind_one(addr, dual_stack)`: the rule's
    /// address if it has one; else dual-stack `[::]`, or `0.0.0.0` once the host turned out
    /// to have no IPv6 (remembered, and reported once per plane).
    pub(crate) fn bind_with<T>(
        &self,
        listen_addr: Option<IpAddr>,
        port: u16,
        bind_one: impl Fn(SocketAddr, bool) -> io::Result<T>,
    ) -> io::Result<T> {
        if let Some(ip) = listen_addr {
            return bind_one(SocketAddr::new(ip, port), false);
        }
        if !self.ipv6_unavailable.load(Relaxed) {
            match bind_one(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port), true) {
                Err(err) if crate::sys::is_family_unavailable(&err) => {
                    self.ipv6_unavailable.store(true, Relaxed);
                    if self.fallback_noted.first() {
                        tracing::warn!(
                            event = "dataplane.ipv6_unavailable_fallback",
                            errno_name = %crate::sys::errno_name(&err),
                        );
                    }
                }
                res => return res,
            }
        }
        bind_one(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port), false)
    }
}

/// Binds every listen port of `def`, in order; on the first failure every listener bound so
/// far is dropped (closed) and the failure names the port. Accepted sockets inherit
/// `TCP_NODELAY` and the keepalive settings from their listener, which saves each
/// connection those system calls on its peer leg.
pub(crate) fn bind_all(
    family: &Family,
    def: &RuleDef,
    keepalive: Option<Duration>,
) -> Result<Vec<(u16, TcpListener)>, Failure> {
    let mut bound = Vec::with_capacity(def.listen.len() as usize);
    for port in def.listen.iter() {
        match family.bind(def.listen_addr, port, keepalive) {
            Ok(listener) => bound.push((port, listener)),
            Err(err) => {
                drop(bound);
                return Err(bind_failure(port, &err));
            }
        }
    }
    Ok(bound)
}

pub(crate) fn bind_failure(port: u16, err: &io::Error) -> Failure {
    if err.kind() == io::ErrorKind::AddrInUse {
        Failure::new(ErrorCode::PortInUse, format!("port {port} already in use"))
    } else {
        Failure::new(ErrorCode::IoError, format!("cannot listen on port {port}: {err}"))
    }
}

fn bind_one(addr: SocketAddr, dual_stack: bool, keepalive: Option<Duration>) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    conn::tune_socket(&socket, keepalive)?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// A listener that can be closed from outside its accept task.
///
/// The lock is taken only for a non-blocking `poll_accept` and by `close`; it is per
/// listener, so connections of different ports never meet on it.
#[derive(Debug)]
pub(crate) struct ListenerSlot(Mutex<Option<TcpListener>>);

impl ListenerSlot {
    pub(crate) fn new(listener: TcpListener) -> Self {
        ListenerSlot(Mutex::new(Some(listener)))
    }

    fn lock(&self) -> MutexGuard<'_, Option<TcpListener>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the listener now; the accept loop ends on its next poll.
    pub(crate) fn close(&self) {
        let listener = self.lock().take();
        drop(listener);
    }

    /// `None` once closed.
    pub(crate) fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<(TcpStream, SocketAddr)>>> {
        match self.lock().as_ref() {
            Some(listener) => listener.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        }
    }
}

/// Accepts connections on one port until the slot is closed, then waits for the port's
/// connections to end. Each connection is a task in this loop's `JoinSet`, so aborting the
/// loop (unbind, shutdown) aborts every connection of the port with it, and no lock or
/// waker is shared between connections.
pub(crate) async fn accept_loop(rule: Arc<RuleShared>, port: Arc<PortState>, slot: Arc<ListenerSlot>) {
    let mut conns = JoinSet::new();
    let mut accepting = true;
    while accepting || !conns.is_empty() {
        tokio::select! {
            accepted = poll_fn(|cx| slot.poll_accept(cx)), if accepting => match accepted {
                Some(Ok((stream, _peer))) => {
                    conns.spawn(conn::serve(Arc::clone(&rule), Arc::clone(&port), stream));
                }
                Some(Err(err)) => accept_failed(&rule, &port, &err).await,
                None => accepting = false,
            },
            Some(joined) = conns.join_next(), if !conns.is_empty() => {
                if let Err(err) = joined
                    && err.is_panic()
                {
                    tracing::error!(event = "rule.connection_panicked", rule = %rule.id, port = port.port);
                }
            }
        }
    }
}

/// Handles an accept error without giving up the listener. A listener with a connection
/// waiting stays readable, so every error that is not about that one connection pauses the
/// loop for [`ACCEPT_BACKOFF`] instead of retrying at once.
async fn accept_failed(rule: &RuleShared, port: &PortState, err: &io::Error) {
    if crate::sys::is_per_connection_accept_error(err) {
        return;
    }
    if crate::sys::is_descriptor_exhaustion(err) {
        port.counters.fd_exhausted.fetch_add(1, Relaxed);
        rule.plan.fd_exhausted("accept", err);
    } else if rule.accept_failed.allow() {
        tracing::warn!(
            event = "rule.accept_failed",
            rule = %rule.id,
            port = port.port,
            errno_name = %crate::sys::errno_name(err),
        );
    }
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

#[cfg(test)]
mod tests;
