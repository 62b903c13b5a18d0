//! SNI listeners: one TCP listener per (address, port) shared by the SNI rules on it. Each
//! accepted connection is peeked (its TLS ClientHello read with core's [`HelloReader`],
//! nothing decrypted) for at most [`PEEK_DEADLINE`], routed by its server name (exact, then
//! wildcard, then the fallback), and handed to the chosen rule's connection path with the
//! peeked bytes to replay unchanged to the target.
//!
//! Invariants: a listener lives exactly as long as some rule is a member of it (the last
//! member leaving closes it, and the port is free on return); a member leaving cuts its own
//! connections and no other member's, and a member joining touches no live connection; at
//! most [`MAX_CONCURRENT_PEEKS`] connections of one listener are being peeked at once, a
//! newer one closing the oldest; a peek buffers at most core's bound; every peek ends counted
//! in exactly one of the listener's counters.

use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use portunus_core::Failure;
use portunus_core::rule::SniRoute;
use portunus_core::sni::{
    HelloReader, MAX_CONCURRENT_PEEKS, MatchKind, PEEK_BUCKETS_SECONDS, PEEK_DEADLINE, PeekEnd, Progress,
    SniListenerReport, SniRoutes, peek_bucket,
};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};

use crate::conn::{self, PortState, RuleShared};
use crate::events::RateLimit;
use crate::listen::{self, Family, ListenerSlot};

/// Bytes read from a peeking socket per call.
const READ_CHUNK: usize = 2048;

/// How long a target may take to accept the replayed hello.
const REPLAY_DEADLINE: Duration = Duration::from_secs(5);

/// How often at most a listener logs `sni.connection_refused`.
const EVENT_PERIOD: Duration = Duration::from_secs(10);

/// Where an SNI listener listens: the rules' bind address (`None`: dual-stack any) and port.
type ListenKey = (Option<IpAddr>, u16);

/// The SNI listeners of a plane, by address and port. Holds them weakly: the rules' memberships
/// own them.
#[derive(Debug, Default)]
pub(crate) struct SniListeners {
    listeners: Mutex<HashMap<ListenKey, Weak<SniListener>>>,
}

impl SniListeners {
    fn lock(&self) -> MutexGuard<'_, HashMap<ListenKey, Weak<SniListener>>> {
        self.listeners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The listener for `key`, bound (and its accept loop started on `runtime`) if no rule
    /// holds one yet. Must run inside the runtime's context.
    pub(crate) fn listener(
        &self,
        runtime: &Handle,
        family: &Family,
        key: ListenKey,
        keepalive: Option<Duration>,
    ) -> Result<Arc<SniListener>, Failure> {
        let mut listeners = self.lock();
        listeners.retain(|_, weak| weak.strong_count() > 0);
        if let Some(live) = listeners.get(&key).and_then(Weak::upgrade) {
            return Ok(live);
        }
        let (listen_addr, port) = key;
        let socket =
            family.bind(listen_addr, port, keepalive).map_err(|err| listen::bind_failure(port, &err))?;
        let shared = Arc::new(ListenerShared {
            listen_addr,
            port,
            keepalive,
            slot: ListenerSlot::new(socket),
            routes: RwLock::new(SniRoutes::default()),
            peeks: Arc::new(PeekSlots::default()),
            stats: ListenerStats::default(),
            instance: rand::random::<u64>().max(1),
            refused: RateLimit::new(EVENT_PERIOD),
        });
        let task = runtime.spawn(accept_loop(Arc::clone(&shared)));
        let listener = Arc::new(SniListener { shared, accept_task: task.abort_handle() });
        listeners.insert(key, Arc::downgrade(&listener));
        tracing::debug!(event = "sni.listener_bound", port, listen_addr = ?listen_addr);
        Ok(listener)
    }

    /// Counters of every live listener, by address and port.
    pub(crate) fn report(&self) -> Vec<SniListenerReport> {
        let live: Vec<Arc<SniListener>> = self.lock().values().filter_map(Weak::upgrade).collect();
        let mut reports: Vec<SniListenerReport> = live.iter().map(|l| l.shared.report()).collect();
        reports.sort_by_key(|r| (r.port, r.listen_addr));
        reports
    }
}

/// One shared listener. Dropped with its last member: closes the socket and ends its accept
/// loop, with every connection still being peeked.
#[derive(Debug)]
pub(crate) struct SniListener {
    shared: Arc<ListenerShared>,
    accept_task: AbortHandle,
}

impl SniListener {
    /// The keepalive idle time the listener was bound with (accepted sockets inherit it).
    pub(crate) fn keepalive(&self) -> Option<Duration> {
        self.shared.keepalive
    }

    /// Adds a rule's route. Refuses a pattern another member routes, or a second fallback,
    /// with their codes, leaving the listener as it was.
    pub(crate) fn join(
        self: &Arc<Self>,
        route: &SniRoute,
        rule: Arc<RuleShared>,
        port: Arc<PortState>,
    ) -> Result<Membership, Failure> {
        let (cut, cut_rx) = watch::channel(false);
        let member = Arc::new(Member { rule, port, cut: cut_rx });
        self.shared.write_routes().insert(route.pattern().cloned(), member)?;
        Ok(Membership { listener: Arc::clone(self), route: route.clone(), _cut: cut })
    }
}

impl Drop for SniListener {
    fn drop(&mut self) {
        self.shared.slot.close();
        self.accept_task.abort();
        tracing::debug!(event = "sni.listener_closed", port = self.shared.port);
    }
}

/// A rule's place on a shared listener. Dropping it removes the route and cuts the rule's
/// connections on the listener (and closes the listener if it was the last member).
#[derive(Debug)]
pub(crate) struct Membership {
    listener: Arc<SniListener>,
    route: SniRoute,
    /// Dropped with the membership: every connection of the member sees the channel close.
    _cut: watch::Sender<bool>,
}

impl Membership {
    /// Stops accepting on the shared listener (shutdown's first step).
    pub(crate) fn close_listener(&self) {
        self.listener.shared.slot.close();
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let removed = self.listener.shared.write_routes().remove(self.route.pattern());
        // The member's connections hold it too; they end when `_cut` drops just after this.
        drop(removed);
    }
}

/// What a route leads to: the rule's shared state and its one port's counters.
#[derive(Debug)]
struct Member {
    rule: Arc<RuleShared>,
    port: Arc<PortState>,
    /// Closes (or turns true) when the member leaves the listener.
    cut: watch::Receiver<bool>,
}

/// What the accept loop and the connections of one listener share.
#[derive(Debug)]
struct ListenerShared {
    listen_addr: Option<IpAddr>,
    port: u16,
    keepalive: Option<Duration>,
    slot: ListenerSlot,
    routes: RwLock<SniRoutes<Arc<Member>>>,
    peeks: Arc<PeekSlots>,
    stats: ListenerStats,
    instance: u64,
    refused: RateLimit,
}

impl ListenerShared {
    fn write_routes(&self) -> std::sync::RwLockWriteGuard<'_, SniRoutes<Arc<Member>>> {
        self.routes.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn report(&self) -> SniListenerReport {
        let s = &self.stats;
        SniListenerReport {
            listen_addr: self.listen_addr,
            port: self.port,
            instance: self.instance,
            routed_exact: s.routed_exact.load(Relaxed),
            routed_wildcard: s.routed_wildcard.load(Relaxed),
            routed_fallback: s.routed_fallback.load(Relaxed),
            miss: s.miss.load(Relaxed),
            parse_failures: s.parse_failures.load(Relaxed),
            peek_timeouts: s.peek_timeouts.load(Relaxed),
            peeks_shed: s.peeks_shed.load(Relaxed),
            peek_buckets: s.peek_buckets.iter().map(|b| b.load(Relaxed)).collect(),
            peek_sum_us: s.peek_sum_us.load(Relaxed),
        }
    }

    /// Counts how a peek ended and how long it took; logs a refusal (rate-limited).
    fn record(&self, end: PeekEnd, elapsed: Duration) {
        let s = &self.stats;
        let counter = match end {
            PeekEnd::Routed(MatchKind::Exact) => &s.routed_exact,
            PeekEnd::Routed(MatchKind::Wildcard) => &s.routed_wildcard,
            PeekEnd::Routed(MatchKind::Fallback) => &s.routed_fallback,
            PeekEnd::Miss => &s.miss,
            PeekEnd::Refused(_) => &s.parse_failures,
            PeekEnd::TimedOut => &s.peek_timeouts,
            PeekEnd::Shed => &s.peeks_shed,
        };
        counter.fetch_add(1, Relaxed);
        if let Some(cell) = s.peek_buckets.get(peek_bucket(elapsed)) {
            cell.fetch_add(1, Relaxed);
        }
        s.peek_sum_us.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Relaxed);
        let reason = match end {
            PeekEnd::Routed(_) => return,
            PeekEnd::Miss => "no_route",
            PeekEnd::Refused(refusal) => refusal.as_str(),
            PeekEnd::TimedOut => "timeout",
            PeekEnd::Shed => "shed",
        };
        if self.refused.allow() {
            tracing::debug!(event = "sni.connection_refused", port = self.port, reason);
        }
    }
}

/// The live counters of one listener (see [`SniListenerReport`]).
#[derive(Debug)]
struct ListenerStats {
    routed_exact: AtomicU64,
    routed_wildcard: AtomicU64,
    routed_fallback: AtomicU64,
    miss: AtomicU64,
    parse_failures: AtomicU64,
    peek_timeouts: AtomicU64,
    peeks_shed: AtomicU64,
    peek_buckets: Box<[AtomicU64]>,
    peek_sum_us: AtomicU64,
}

impl Default for ListenerStats {
    fn default() -> Self {
        ListenerStats {
            routed_exact: AtomicU64::new(0),
            routed_wildcard: AtomicU64::new(0),
            routed_fallback: AtomicU64::new(0),
            miss: AtomicU64::new(0),
            parse_failures: AtomicU64::new(0),
            peek_timeouts: AtomicU64::new(0),
            peeks_shed: AtomicU64::new(0),
            peek_buckets: (0..=PEEK_BUCKETS_SECONDS.len()).map(|_| AtomicU64::new(0)).collect(),
            peek_sum_us: AtomicU64::new(0),
        }
    }
}

/// The peeks in progress on one listener, oldest first, each with the sender whose drop
/// tells it to give up.
#[derive(Debug, Default)]
struct PeekSlots {
    table: Mutex<PeekTable>,
}

#[derive(Debug, Default)]
struct PeekTable {
    next: u64,
    live: BTreeMap<u64, oneshot::Sender<()>>,
}

impl PeekSlots {
    /// Registers a new peek; at the bound, the oldest one is told to give up first. The
    /// receiver resolves when this peek is shed in turn.
    fn enter(self: &Arc<Self>) -> (PeekTicket, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.live.len() >= MAX_CONCURRENT_PEEKS {
            // Dropping its sender wakes the oldest peek, which closes its connection.
            drop(table.live.pop_first());
        }
        let id = table.next;
        table.next += 1;
        table.live.insert(id, tx);
        (PeekTicket { slots: Arc::clone(self), id }, rx)
    }
}

/// A peek's place in [`PeekSlots`], given back when dropped.
struct PeekTicket {
    slots: Arc<PeekSlots>,
    id: u64,
}

impl Drop for PeekTicket {
    fn drop(&mut self) {
        let removed = self.slots.table.lock().unwrap_or_else(PoisonError::into_inner).live.remove(&self.id);
        drop(removed);
    }
}

/// Accepts connections until the listener is closed, then waits for its connections to
/// end. Each connection is a task of this loop's `JoinSet`, so aborting the loop (the last
/// member left, or shutdown) aborts them all.
async fn accept_loop(shared: Arc<ListenerShared>) {
    let mut conns = JoinSet::new();
    let mut accepting = true;
    while accepting || !conns.is_empty() {
        tokio::select! {
            accepted = poll_fn(|cx| shared.slot.poll_accept(cx)), if accepting => match accepted {
                Some(Ok((stream, _peer))) => {
                    conns.spawn(serve(Arc::clone(&shared), stream));
                }
                Some(Err(err)) => accept_failed(&shared, &err).await,
                None => accepting = false,
            },
            Some(joined) = conns.join_next(), if !conns.is_empty() => {
                if let Err(err) = joined
                    && err.is_panic()
                {
                    tracing::error!(event = "rule.connection_panicked", port = shared.port);
                }
            }
        }
    }
}

/// An accept error that is not about one connection pauses the loop, as plain listeners do.
async fn accept_failed(shared: &ListenerShared, err: &io::Error) {
    if crate::sys::is_per_connection_accept_error(err) {
        return;
    }
    if shared.refused.allow() {
        tracing::warn!(
            event = "sni.accept_failed",
            port = shared.port,
            errno_name = %crate::sys::errno_name(err),
        );
    }
    tokio::time::sleep(listen::ACCEPT_BACKOFF).await;
}

/// One accepted connection: peek, route, then serve it as the chosen rule's connection.
async fn serve(shared: Arc<ListenerShared>, stream: TcpStream) {
    let started = Instant::now();
    let (ticket, shed) = shared.peeks.enter();
    let peeked = tokio::select! {
        peeked = tokio::time::timeout(PEEK_DEADLINE, peek(&stream)) => peeked,
        _ = shed => {
            shared.record(PeekEnd::Shed, started.elapsed());
            return;
        }
    };
    drop(ticket);
    let elapsed = started.elapsed();
    let (hello, replay) = match peeked {
        Err(_deadline) => return shared.record(PeekEnd::TimedOut, elapsed),
        // The peer closed or reset before its hello was complete.
        Ok(Err(_)) => {
            return shared.record(PeekEnd::Refused(portunus_core::sni::Refusal::Malformed), elapsed);
        }
        Ok(Ok((Progress::Refused(refusal), _))) => return shared.record(PeekEnd::Refused(refusal), elapsed),
        Ok(Ok((Progress::NeedMore, _))) => return shared.record(PeekEnd::TimedOut, elapsed),
        Ok(Ok((Progress::Done(hello), replay))) => (hello, replay),
    };
    let chosen = {
        let routes = shared.routes.read().unwrap_or_else(PoisonError::into_inner);
        routes.lookup(hello.server_name.as_ref()).map(|(member, kind)| (Arc::clone(member), kind))
    };
    let Some((member, kind)) = chosen else {
        return shared.record(PeekEnd::Miss, elapsed);
    };
    shared.record(PeekEnd::Routed(kind), elapsed);
    let mut cut = member.cut.clone();
    tokio::select! {
        () = conn::serve_replaying(Arc::clone(&member.rule), Arc::clone(&member.port), stream, replay) => {}
        // A closed channel (the member left) is a cut too.
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

/// Reads from `stream` into a [`HelloReader`] until it answers; returns the answer and
/// every byte read, to replay. An end of stream before the answer is an error.
async fn peek(stream: &TcpStream) -> io::Result<(Progress, Vec<u8>)> {
    let mut reader = HelloReader::default();
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                let progress = reader.handle_bytes(chunk.get(..n).unwrap_or_default());
                if progress != Progress::NeedMore {
                    return Ok((progress, reader.into_buffered()));
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
}

/// Writes the peeked bytes to the target before the relay starts (not counted here: the
/// caller counts them as delivered once written).
pub(crate) async fn replay(target: &TcpStream, bytes: &[u8]) -> Result<(), &'static str> {
    let write = async {
        let mut written = 0;
        while let Some(rest) = bytes.get(written..).filter(|rest| !rest.is_empty()) {
            target.writable().await.map_err(|_| "target_gone")?;
            match target.try_write(rest) {
                Ok(0) => return Err("target_gone"),
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Err("target_gone"),
            }
        }
        Ok(())
    };
    tokio::time::timeout(REPLAY_DEADLINE, write).await.map_err(|_| "deadline")?
}
