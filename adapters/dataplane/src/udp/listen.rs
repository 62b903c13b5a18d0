//! UDP listeners: binding every port of a rule and the receive loop of one port.
//!
//! Invariants: a listener never sets `SO_REUSEADDR` or `SO_REUSEPORT`, so binding a port that
//! any other socket holds fails (`port_in_use`); when any port of a range fails, every socket
//! already bound for the rule is closed before `bind_all` returns. A listener lives in a
//! [`PortSocket`], so dropping the rule closes it synchronously (the port is free at once)
//! even though reply tasks also send through it.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use portunus_core::Failure;
use portunus_core::rule::RuleDef;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;

use super::{PortIo, RuleIo, flow};
use crate::listen::{Family, bind_failure};
use crate::sys::batch::{BATCH, DatagramFd, watch_reads, with_batch};

/// Receive and send buffer sizes a listener asks for. Only queued datagrams use memory;
/// the kernel caps the request at `net.core.rmem_max` / `wmem_max`. A large receive buffer
/// absorbs bursts while the receive task is not running.
const LISTENER_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Pause after a receive error that is not "nothing queued", so a listener that cannot
/// receive does not spin.
const RECV_BACKOFF: Duration = Duration::from_millis(10);

/// Binds every listen port of `def`, in order; on the first failure every socket bound so far
/// is closed and the failure names the port.
pub(crate) fn bind_all(family: &Family, def: &RuleDef) -> Result<Vec<(u16, DatagramFd)>, Failure> {
    let mut bound = Vec::with_capacity(def.listen.len() as usize);
    for port in def.listen.iter() {
        match family.bind_with(def.listen_addr, port, bind_one) {
            Ok(socket) => bound.push((port, socket)),
            Err(err) => {
                drop(bound);
                return Err(bind_failure(port, &err));
            }
        }
    }
    Ok(bound)
}

fn bind_one(addr: SocketAddr, dual_stack: bool) -> io::Result<DatagramFd> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Deliberately no SO_REUSEADDR / SO_REUSEPORT: two UDP sockets that both set it share
    // a port on Linux, and datagrams would go to whichever the kernel picks.
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    // Best effort: a host with a low ceiling keeps its default.
    let _ = socket.set_recv_buffer_size(LISTENER_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(LISTENER_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    watch_reads(socket.into())
}

/// A listener socket that can be closed from outside its tasks.
///
/// The lock is only ever held for a non-blocking call (a readiness poll, a batch receive or
/// send), never across an await; readers (the port's receive task and its flows' reply
/// tasks) do not exclude each other.
#[derive(Debug)]
pub(crate) struct PortSocket(RwLock<Option<DatagramFd>>);

impl PortSocket {
    pub(crate) fn new(socket: DatagramFd) -> Self {
        PortSocket(RwLock::new(Some(socket)))
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<DatagramFd>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the socket now; every later use sees `None`.
    pub(crate) fn close(&self) {
        let socket = self.0.write().unwrap_or_else(PoisonError::into_inner).take();
        drop(socket);
    }

    /// Runs `f` on the socket; `None` once it is closed.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&DatagramFd) -> R) -> Option<R> {
        self.read().as_ref().map(f)
    }

    /// Polls for queued datagrams; `None` once closed.
    fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<Option<io::Result<()>>> {
        match self.read().as_ref() {
            // The guard is dropped at once: readiness is only cleared by a receive that
            // comes back empty-handed (`try_io`).
            Some(socket) => socket.poll_read_ready(cx).map(|ready| Some(ready.map(drop))),
            None => Poll::Ready(None),
        }
    }
}

/// Receives on one port until its socket is closed: each wake-up takes one batch and hands
/// it to the flows. A short batch means the queue was empty, so readiness is cleared then
/// (tokio keeps any wake-up that raced with it) instead of paying an empty `recvmmsg`.
pub(crate) async fn serve_port(io: Arc<RuleIo>, port: Arc<PortIo>) {
    let mut routes = Vec::with_capacity(BATCH);
    loop {
        match poll_fn(|cx| port.socket.poll_recv_ready(cx)).await {
            None => return,
            Some(Ok(())) => {}
            Some(Err(err)) => {
                recv_failed(&io, &port, &err).await;
                continue;
            }
        }
        let outcome = with_batch(|batch| {
            let res = port.socket.with(|socket| {
                socket.try_io(Interest::READABLE, |socket| {
                    let n = batch.recv(socket)?;
                    if n < BATCH { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(()) }
                })
            });
            if res.is_some() && batch.len() > 0 {
                flow::forward_batch(&io, &port, batch, &mut routes);
            }
            res
        });
        match outcome {
            None => return,
            Some(Ok(())) => {}
            Some(Err(err)) if err.kind() == io::ErrorKind::WouldBlock => {}
            Some(Err(err)) => recv_failed(&io, &port, &err).await,
        }
    }
}

/// A receive error on a listener (resource shortage; never one peer's fault): logged at most
/// once per period, then a short pause. The listener goes on.
async fn recv_failed(io: &RuleIo, port: &PortIo, err: &io::Error) {
    if io.notes.recv_failed.allow() {
        tracing::warn!(
            event = "rule.udp_recv_failed",
            rule = %io.id,
            port = port.port,
            errno_name = %crate::sys::errno_name(err),
        );
    }
    tokio::time::sleep(RECV_BACKOFF).await;
}
