//! The live control streams: which clients are connected, a sender per stream, and the
//! waiters of rule outcomes. Implements core's `ClientLink` port.
//!
//! Invariants: at most one session per client (a new stream replaces the old one); a
//! session is only unregistered by the stream that registered it (generation check), so a
//! late cleanup of a replaced stream never removes its successor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portunus_core::ids::{ClientId, RuleId};
use portunus_core::ports::{
    BoxFuture, ClientCommand, ClientLink, DisconnectReason, NotConnected, SessionInfo,
};
use portunus_core::rule::RuleState;
use portunus_proto::v1 as pb;
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::Status;

use crate::convert;

type Waiters = HashMap<RuleId, Vec<oneshot::Sender<RuleState>>>;

/// Items of a session's outbound stream.
pub type Outbound = Result<pb::ServerMessage, Status>;

struct Session {
    generation: u64,
    /// The client's name, for events.
    name: String,
    info: SessionInfo,
    tx: mpsc::UnboundedSender<Outbound>,
    stop: Arc<Notify>,
}

/// The `ClientLink` over tonic streams.
#[derive(Default)]
pub struct GrpcClientLink {
    sessions: Mutex<HashMap<ClientId, Session>>,
    waiters: Arc<Mutex<Waiters>>,
    next_generation: AtomicU64,
}

/// A registered session's handle, owned by its stream task.
pub struct Registration {
    /// Identifies this stream among the client's successive streams.
    pub generation: u64,
    /// Notified when the server ends the stream (revoke, replacement, shutdown).
    pub stop: Arc<Notify>,
}

impl GrpcClientLink {
    /// Registers a new stream for `client`, replacing (and stopping) any earlier one.
    pub fn register(
        &self,
        client: &ClientId,
        name: &str,
        info: SessionInfo,
        tx: mpsc::UnboundedSender<Outbound>,
    ) -> Registration {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let stop = Arc::new(Notify::new());
        let old = self.lock_sessions().insert(
            client.clone(),
            Session { generation, name: name.to_owned(), info, tx, stop: stop.clone() },
        );
        if let Some(old) = old {
            let _ = old.tx.send(Err(Status::aborted("replaced by a newer stream of the same client")));
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
            true
        } else {
            false
        }
    }

    /// Resolves the waiters of `rule` with `state`.
    pub fn publish_outcome(&self, rule: RuleId, state: &RuleState) {
        let waiters = self.lock_waiters().remove(&rule).unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(state.clone());
        }
    }

    /// Ends every stream (server shutdown): each client sees `unavailable` and reconnects
    /// with backoff.
    pub fn close_all(&self) {
        let sessions: Vec<(ClientId, Session)> = self.lock_sessions().drain().collect();
        for (_, session) in sessions {
            let _ = session.tx.send(Err(Status::unavailable("server shutting down")));
            session.stop.notify_one();
        }
    }

    /// Number of live sessions.
    pub fn n_sessions(&self) -> usize {
        self.lock_sessions().len()
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        lock(&self.waiters)
    }
}

impl ClientLink for GrpcClientLink {
    fn session(&self, client: &ClientId) -> Option<SessionInfo> {
        self.lock_sessions().get(client).map(|s| s.info.clone())
    }

    fn send(&self, client: &ClientId, command: ClientCommand) -> Result<(), NotConnected> {
        let update = match command {
            ClientCommand::Upsert { rule, def } => pb::RuleUpdate {
                full_sync: false,
                upsert: vec![convert::rule_to_wire(rule, &def)],
                remove: vec![],
            },
            ClientCommand::Remove { rule } => {
                pb::RuleUpdate { full_sync: false, upsert: vec![], remove: vec![rule.get()] }
            }
        };
        let message = pb::ServerMessage { msg: Some(pb::server_message::Msg::RuleUpdate(update)) };
        let sessions = self.lock_sessions();
        let session = sessions.get(client).ok_or(NotConnected)?;
        session.tx.send(Ok(message)).map_err(|_| NotConnected)
    }

    fn disconnect(&self, client: &ClientId, reason: DisconnectReason) {
        let Some(session) = self.lock_sessions().remove(client) else { return };
        let status = Status::unauthenticated(reason.as_str());
        let _ = session.tx.send(Err(status));
        session.stop.notify_one();
        tracing::info!(
            event = "client.disconnected",
            client = %session.name,
            client_id = %client,
            reason = reason.as_str()
        );
    }

    fn await_outcome(&self, rule: RuleId, timeout: Duration) -> BoxFuture<'static, Option<RuleState>> {
        let (tx, rx) = oneshot::channel();
        self.lock_waiters().entry(rule).or_default().push(tx);
        let waiters = self.waiters.clone();
        Box::pin(async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(outcome) => outcome.ok(),
                Err(_elapsed) => {
                    // Drop this waiter (and any other abandoned one) so that rules whose
                    // client never answers do not accumulate senders.
                    let mut waiters = lock(&waiters);
                    if let Some(list) = waiters.get_mut(&rule) {
                        list.retain(|w| !w.is_closed());
                        if list.is_empty() {
                            waiters.remove(&rule);
                        }
                    }
                    None
                }
            }
        })
    }
}

fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    waiters.lock().unwrap_or_else(|p| p.into_inner())
}
