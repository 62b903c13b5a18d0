//! The live control streams: which clients are connected, a sender per stream, and the
//! waiters of rule outcomes. Implements core's `Sessions` view.
//!
//! Invariants: at most one session per client (a new stream replaces the old one); a
//! session is only unregistered by the stream that registered it (generation check), so a
//! late cleanup of a replaced stream never removes its successor; a waiter is registered
//! before its command is queued, so an outcome reported right after the send is not missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use portunus_core::ids::{ClientId, RuleId};
use portunus_core::ports::{ClientCommand, DisconnectReason, SessionInfo, Sessions};
use portunus_core::rule::RuleState;
use portunus_core::service::SessionPlan;
use tokio::sync::{Notify, mpsc, oneshot};

/// Why the server ends a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Revoked, rotated or deleted.
    Disconnected(DisconnectReason),
    /// A newer stream of the same client took over.
    Replaced,
    /// The server is stopping.
    ShuttingDown,
}

/// What a stream carries to its client, in order.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Welcome and the full rule set: always first.
    Plan(Box<SessionPlan>),
    /// One rule to bind or stop.
    Command(ClientCommand),
    /// The server ends the stream.
    End(EndReason),
}

// One queue block (32 slots) per connected client: keep a slot at three words.
const _: () = assert!(std::mem::size_of::<Outbound>() <= 24);

struct Session {
    generation: u64,
    /// The client's name, for events.
    name: String,
    info: SessionInfo,
    tx: mpsc::UnboundedSender<Outbound>,
    stop: Arc<Notify>,
}

/// A registered session's handle, owned by its stream task.
pub struct Registration {
    /// Identifies this stream among the client's successive streams.
    pub generation: u64,
    /// Notified when the server ends the stream (revoke, replacement, shutdown).
    pub stop: Arc<Notify>,
}

type Waiters = HashMap<RuleId, Vec<oneshot::Sender<RuleState>>>;

/// Every live stream.
#[derive(Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<ClientId, Session>>,
    /// Set by `close_all`: the server is stopping and takes no new stream.
    closed: std::sync::atomic::AtomicBool,
    waiters: Mutex<Waiters>,
    next_generation: AtomicU64,
    /// Bumped (under the sessions lock) whenever a session is added or removed.
    changes: AtomicU64,
}

impl Sessions for SessionRegistry {
    fn session(&self, client: &ClientId) -> Option<SessionInfo> {
        self.lock_sessions().get(client).map(|s| s.info.clone())
    }
}

impl SessionRegistry {
    /// Registers a new stream for `client`, replacing (and stopping) any earlier one. Queue
    /// the stream's plan on `tx` before calling this, so that the replay precedes any push.
    pub fn register(
        &self,
        client: &ClientId,
        name: &str,
        info: SessionInfo,
        tx: mpsc::UnboundedSender<Outbound>,
    ) -> Registration {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let stop = Arc::new(Notify::new());
        let old = {
            let mut sessions = self.lock_sessions();
            // Checked under the lock `close_all` drains with, so no stream slips in after it.
            if self.closed.load(Ordering::SeqCst) {
                drop(sessions);
                // The server is stopping: the stream ends right after its plan.
                let _ = tx.send(Outbound::End(EndReason::ShuttingDown));
                stop.notify_one();
                return Registration { generation, stop };
            }
            self.changes.fetch_add(1, Ordering::SeqCst);
            sessions.insert(
                client.clone(),
                Session { generation, name: name.to_owned(), info, tx, stop: stop.clone() },
            )
        };
        if let Some(old) = old {
            let _ = old.tx.send(Outbound::End(EndReason::Replaced));
            old.stop.notify_one();
            tracing::info!(event = "client.disconnected", client = %old.name, client_id = %client, reason = "replaced");
        }
        Registration { generation, stop }
    }

    /// Removes the session if it is still the one registered with `generation`. Returns
    /// true when it was (so the caller reports the disconnect exactly once).
    pub fn unregister(&self, client: &ClientId, generation: u64) -> bool {
        let mut sessions = self.lock_sessions();
        if sessions.get(client).is_some_and(|s| s.generation == generation) {
            sessions.remove(client);
            self.changes.fetch_add(1, Ordering::SeqCst);
            true
        } else {
            false
        }
    }

    /// Queues `command` on the client's stream; false when it has none.
    pub fn send(&self, client: &ClientId, command: ClientCommand) -> bool {
        self.lock_sessions().get(client).is_some_and(|s| s.tx.send(Outbound::Command(command)).is_ok())
    }

    /// Ends the client's stream now, if it has one.
    pub fn disconnect(&self, client: &ClientId, reason: DisconnectReason) {
        let Some(session) = self.lock_sessions().remove(client) else { return };
        self.changes.fetch_add(1, Ordering::SeqCst);
        let _ = session.tx.send(Outbound::End(EndReason::Disconnected(reason)));
        session.stop.notify_one();
        tracing::info!(event = "client.disconnected", client = %session.name, client_id = %client, reason = reason.as_str());
    }

    /// Starts waiting for the next reported outcome of `rule`.
    pub fn wait_outcome(&self, rule: RuleId) -> oneshot::Receiver<RuleState> {
        let (tx, rx) = oneshot::channel();
        self.lock_waiters().entry(rule).or_default().push(tx);
        rx
    }

    /// Drops abandoned waiters of `rule` (after a timeout), so rules whose client never
    /// answers do not accumulate senders.
    pub fn forget_waiters(&self, rule: RuleId) {
        let mut waiters = self.lock_waiters();
        if let Some(list) = waiters.get_mut(&rule) {
            list.retain(|w| !w.is_closed());
            if list.is_empty() {
                waiters.remove(&rule);
            }
        }
    }

    /// Resolves the waiters of `rule` with `state`.
    pub fn publish_outcome(&self, rule: RuleId, state: &RuleState) {
        let waiters = self.lock_waiters().remove(&rule).unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(state.clone());
        }
    }

    /// Ends every stream and takes no new one (server shutdown): each client reconnects with
    /// backoff to whatever serves next.
    pub fn close_all(&self) {
        let sessions: Vec<(ClientId, Session)> = {
            let mut locked = self.lock_sessions();
            self.closed.store(true, Ordering::SeqCst);
            self.changes.fetch_add(1, Ordering::SeqCst);
            locked.drain().collect()
        };
        for (_, session) in sessions {
            let _ = session.tx.send(Outbound::End(EndReason::ShuttingDown));
            session.stop.notify_one();
        }
    }

    /// A number that changes whenever a session is added or removed.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock_sessions().len()
    }

    /// True when no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock_sessions(&self) -> MutexGuard<'_, HashMap<ClientId, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}
