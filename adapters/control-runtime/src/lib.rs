//! `portunus-runtime`: the async shell around core's synchronous control-plane services.
//!
//! It owns everything that waits: the store writer thread (mutations run inside write
//! transactions and share durable commits), the live control streams and the waiters of
//! rule outcomes, the ack timeout of a push, the traffic book and its flusher, and the real
//! clock. The HTTP and gRPC adapters call only this crate; they never touch the store.
//!
//! Two kinds of entry points:
//! - blocking use-case calls (`enroll_client`, `list_rules`, …) for a blocking thread
//!   (`tokio::task::spawn_blocking`): reads run on the calling thread against committed
//!   state; mutations are handed to the writer and the call returns after their commit;
//! - async calls for what waits on a client (`push_rule`) or runs on a stream task
//!   (`session_opened`, `rule_outcome`, `record_stats`, `session_closed`).
//!
//! Invariants: nothing commits on a tokio worker; a mutation's effects on live streams
//! happen only after its batch committed; a stream's plan is queued before the stream is
//! registered, so a replay always precedes any push.

#![forbid(unsafe_code)]

mod history;
mod model;
mod overlay;
mod quotas;
mod sessions;
mod use_cases;
mod writer;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use portunus_core::account::{ApiToken, User};
use portunus_core::audit::AuditQuery;
use portunus_core::client::Client;
use portunus_core::config::ServerSettings;
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::grant::Grant;
use portunus_core::ids::{ClientId, RuleId, SessionId, Timestamp};
use portunus_core::policy::Actor;
use portunus_core::ports::{
    AuditStore, Clock, Entropy, LatencyObserver, PasswordHasher, Reads, SessionInfo, Sessions, Stage, Store,
    StoreError, StoreTx, Write,
};
use portunus_core::rule::{Rule, RuleEvent, RuleSpec, RuleState};
use portunus_core::secret::{Secret, SecretHash};
use portunus_core::service::{
    AccountService, AdminService, AuditPage, AuditPruned, AuthFailure, Authenticated, Begun, ClientService,
    ClientView, Credentials, Cx, Effect, EndpointView, EnrollTicket, LoginOutcome, MetricsSnapshot,
    MintedToken, NewGrant, NewUser, PushFailure, PushOutcome, Redeemed, RuleFilter, RuleService,
    RuleStatsView, RuleView, ServerIdentity, SessionPlan, Staged,
};
use portunus_core::settings::Onboarding;
use portunus_core::stats::{RuleReport, StatsBook};

use model::ReadModel;
pub use portunus_telemetry::clock::SystemClock;
pub use sessions::{EndReason, Outbound, Registration, SessionRegistry};
use tracing::Instrument;
use writer::{Completion, Work, Writer};

/// The adapters behind core's ports, as the server wires them.
pub struct Ports {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Randomness.
    pub entropy: Arc<dyn Entropy>,
    /// Password hashing.
    pub hasher: Arc<dyn PasswordHasher>,
    /// Where control-plane latencies go, if anywhere.
    pub observer: Option<Arc<dyn LatencyObserver>>,
}

/// The services, one per aggregate.
pub struct Services {
    /// Clients, enrollment and their streams.
    pub clients: ClientService,
    /// Rules.
    pub rules: RuleService,
    /// Accounts, grants, tokens and authentication.
    pub accounts: AccountService,
    /// Settings, audit and metrics.
    pub admin: AdminService,
}

#[derive(Default)]
struct StatsState {
    book: StatsBook,
    dirty: BTreeSet<RuleId>,
    /// Traffic of the minutes not yet written to the history.
    minutes: portunus_core::history::MinuteBook,
}

/// The runtime's shared state.
pub struct Inner {
    /// Committed state for reads, kept in commit order by the writer.
    model: Arc<ReadModel>,
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn LatencyObserver>>,
    services: Services,
    sessions: SessionRegistry,
    /// Streams opened by a mutation of the transaction in progress, until it commits.
    opening: Mutex<std::collections::HashMap<ClientId, SessionInfo>>,
    writer: Writer,
    /// Transactional jobs started in the writer's transaction in progress.
    jobs_in_tx: writer::JobsInTx,
    stats: Mutex<StatsState>,
    /// The SNI listeners each connected client last reported (kept in memory only: they are
    /// the client's live state, restated in full with every report that has any).
    sni: Mutex<std::collections::BTreeMap<ClientId, Vec<portunus_core::sni::SniListenerReport>>>,
    /// What each pair's quota did since start, for `/metrics`.
    quota_events: Mutex<
        std::collections::BTreeMap<
            (portunus_core::ids::UserId, ClientId),
            portunus_core::service::QuotaEventCounts,
        >,
    >,
}

/// The control runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// An operator request refused at authentication.
#[derive(Debug)]
pub struct Refused {
    /// Why (`unauthenticated`, `csrf_failed`, `bootstrap_required`, …).
    pub failure: Failure,
    /// An audit record was written for it (unauthenticated requests beyond their source's
    /// budget leave none; they are counted instead).
    pub audited: bool,
}

fn writer_gone() -> Failure {
    Failure::new(ErrorCode::StoreError, "the store writer stopped before answering")
}

impl Runtime {
    /// Builds the services, loads persisted traffic totals and starts the writer thread.
    pub fn new(
        ports: Ports,
        settings: ServerSettings,
        identity: ServerIdentity,
        operator_token: SecretHash,
    ) -> Result<Runtime, Failure> {
        let book = ports.store.list_totals()?.into_iter().collect();
        let model = Arc::new(ReadModel::load(ports.store.clone())?);
        let deferred_sync = settings.control.deferred_sync;
        let services = Services {
            clients: ClientService::new(settings.clone(), identity.clone(), ports.entropy.clone()),
            rules: RuleService::new(&settings),
            accounts: AccountService::new(ports.entropy, ports.hasher, operator_token)
                .with_audit_policy(&settings.audit),
            admin: AdminService::new(settings, identity),
        };
        let jobs_in_tx = writer::JobsInTx::default();
        let writer = Writer::start(
            ports.store.clone(),
            model.clone(),
            ports.observer.clone(),
            deferred_sync,
            jobs_in_tx.clone(),
        )?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                model,
                clock: ports.clock,
                observer: ports.observer,
                services,
                sessions: SessionRegistry::default(),
                opening: Mutex::new(std::collections::HashMap::new()),
                writer,
                jobs_in_tx,
                stats: Mutex::new(StatsState { book, dirty: BTreeSet::new(), minutes: Default::default() }),
                sni: Mutex::new(std::collections::BTreeMap::new()),
                quota_events: Mutex::new(std::collections::BTreeMap::new()),
            }),
        })
    }

    /// The settings the server runs with.
    pub fn settings(&self) -> &ServerSettings {
        self.inner.services.clients.settings()
    }

    /// The live streams.
    pub fn sessions(&self) -> &SessionRegistry {
        &self.inner.sessions
    }

    /// A number that changes whenever anything a listing shows may have changed: a committed
    /// batch (the read model) or a stream opening or closing. Equal numbers mean equal
    /// listings, so an adapter may keep a rendered listing until it moves.
    pub fn generation(&self) -> u64 {
        self.inner.model.generation().wrapping_add(self.inner.sessions.changes())
    }

    /// The current time from the runtime's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn observe(&self, stage: Stage, since: Instant) {
        if let Some(observer) = &self.inner.observer {
            observer.observe(stage, since.elapsed().as_secs_f64());
        }
    }

    fn stats(&self) -> MutexGuard<'_, StatsState> {
        self.inner.stats()
    }

    // ----- the two ways to run a use case -------------------------------------------------

    /// Queues `f` on the writer: it runs inside a write transaction and its staged writes are
    /// applied there. Once the commit returned, still on the writer thread and so in commit
    /// order, its effects are performed on the live streams, then `after` runs (a push
    /// queues its command there, a new stream registers there), and `reply` gets both
    /// answers. A failed commit performs nothing.
    ///
    /// With an `undo`, the job may go ahead of its commit: when it is the first of its
    /// transaction and its effects are only sends, those effects and `after` run as soon as it
    /// staged its writes, and if the commit then fails `undo` runs with what `after` returned.
    /// Behind other jobs of the same transaction (whose effects wait for the commit, and which
    /// may open the very stream it needs) it waits for the commit like any job.
    fn submit<T, P, F, A, U>(
        &self,
        f: F,
        after: A,
        undo: Option<U>,
        reply: impl FnOnce(Result<(T, P), Failure>) + Send + 'static,
    ) where
        T: Send + 'static,
        P: Send + 'static,
        F: FnOnce(&Services, &mut Cx<'_, dyn StoreTx + '_>) -> T + Send + 'static,
        A: FnOnce(&Inner, &T) -> P + Send + 'static,
        U: FnOnce(&Inner, &T, &P) + Send + 'static,
    {
        /// Where a job's `after` stands when its transaction's jobs have all run.
        enum Step<A, P> {
            /// To run once the commit returned.
            Later(A),
            /// Ran ahead of the commit (its effects too), with this outcome.
            Done(P),
        }
        let inner = self.inner.clone();
        let job = move |tx: &dyn StoreTx| -> Result<Completion, StoreError> {
            let first = inner.jobs_in_tx.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let view = GroupSessions(&inner);
            let mut cx = Cx::new(tx, &view as &dyn Sessions, inner.clock.now());
            let answer = f(&inner.services, &mut cx);
            let Staged { writes, mut effects } = cx.finish();
            let committed_writes = writes.clone();
            tx.apply(writes)?;
            let early = undo.is_some()
                && first
                && effects.iter().all(|effect| matches!(effect, Effect::Send { .. }))
                && inner.opening.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
            let step = if early {
                inner.perform(std::mem::take(&mut effects));
                Step::Done(after(&inner, &answer))
            } else {
                Step::Later(after)
            };
            Ok(Box::new(move |committed: Result<(), Failure>| match committed {
                Ok(()) => {
                    inner.model.committed(committed_writes);
                    let done = match step {
                        Step::Done(done) => done,
                        Step::Later(after) => {
                            inner.perform(effects);
                            after(&inner, &answer)
                        }
                    };
                    reply(Ok((answer, done)));
                }
                Err(failure) => {
                    // The whole transaction failed: no stream it opened will be registered.
                    inner.opening.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    if let (Step::Done(done), Some(undo)) = (&step, undo) {
                        undo(&inner, &answer, done);
                    }
                    reply(Err(failure));
                }
            }) as Completion)
        };
        if let Err(failure) = self.inner.writer.submit(Work::Tx(Box::new(job))) {
            tracing::error!(event = "store.error", error = %failure.message);
        }
    }

    /// [`Runtime::mutate_then`] for a push, pipelined (see [`Runtime::submit`]'s `undo`): the
    /// client binds while the disk syncs, and the caller, who waits for both, waits for the
    /// longer rather than the sum. A commit that fails after the command went out runs `undo`
    /// (a push sends the client a Remove) and the caller gets the failure.
    async fn mutate_pipelined<T, P, F, A, U>(&self, f: F, after: A, undo: U) -> Result<(T, P), Failure>
    where
        T: Send + 'static,
        P: Send + 'static,
        F: FnOnce(&Services, &mut Cx<'_, dyn StoreTx + '_>) -> T + Send + 'static,
        A: FnOnce(&Inner, &T) -> P + Send + 'static,
        U: FnOnce(&Inner, &T, &P) + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, after, Some(undo), move |result| {
            let _ = tx.send(result);
        });
        rx.await.map_err(|_| writer_gone())?
    }

    /// Runs `f` on the writer, in queue order. With nothing uncommitted queued before it, it
    /// reads the committed state (the read model) and is answered at once: its writes update
    /// the read model now and reach the store with the next transaction, at most the policy's
    /// `deferred_sync` later. Queued behind mutations not yet committed, it runs inside their
    /// transaction and is answered with them. Only for state a client reports again after a
    /// restart (see `writer`).
    async fn write_behind<T, F>(&self, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Services, &mut Cx<'_, dyn Reads + '_>) -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inner = self.inner.clone();
        let job = move |in_tx: Option<&dyn StoreTx>| -> (Vec<Write>, Completion) {
            let group = GroupSessions(&inner);
            let (store, sessions): (&dyn Reads, &dyn Sessions) = match in_tx {
                Some(store_tx) => (store_tx, &group),
                None => (&*inner.model, &inner.sessions),
            };
            let mut cx = Cx::new(store, sessions, inner.clock.now());
            let answer = f(&inner.services, &mut cx);
            let Staged { writes, effects } = cx.finish();
            let kept = writes.clone();
            let completion: Completion = Box::new(move |committed: Result<(), Failure>| {
                // A failed transaction drops `tx`: the caller sees the writer's failure.
                if committed.is_ok() {
                    inner.model.committed(writes);
                    inner.perform(effects);
                    let _ = tx.send(answer);
                }
            });
            (kept, completion)
        };
        self.inner.writer.submit(Work::Behind(Box::new(job)))?;
        rx.await.map_err(|_| writer_gone())
    }

    /// Runs a mutation and blocks until it committed (call from a blocking thread).
    fn mutate<T, F>(&self, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Services, &mut Cx<'_, dyn StoreTx + '_>) -> T + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            f,
            |_, _| (),
            None::<fn(&Inner, &T, &())>,
            move |result| {
                let _ = tx.send(result);
            },
        );
        Ok(rx.recv().map_err(|_| writer_gone())??.0)
    }

    /// Runs a mutation from async code, then `after` in commit order; waits for both
    /// without blocking a worker.
    async fn mutate_then<T, P, F, A>(&self, f: F, after: A) -> Result<(T, P), Failure>
    where
        T: Send + 'static,
        P: Send + 'static,
        F: FnOnce(&Services, &mut Cx<'_, dyn StoreTx + '_>) -> T + Send + 'static,
        A: FnOnce(&Inner, &T) -> P + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, after, None::<fn(&Inner, &T, &P)>, move |result| {
            let _ = tx.send(result);
        });
        rx.await.map_err(|_| writer_gone())?
    }

    /// [`Runtime::mutate_then`] with nothing to do after.
    async fn mutate_async<T, F>(&self, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Services, &mut Cx<'_, dyn StoreTx + '_>) -> T + Send + 'static,
    {
        Ok(self.mutate_then(f, |_, _| ()).await?.0)
    }

    /// Runs a read on the calling thread against committed state. A read that staged
    /// something (the audit record of a denial, an expired session's deletion) has it
    /// committed before the answer.
    fn read<T>(&self, f: impl FnOnce(&Services, &mut Cx<'_, ReadModel>) -> T) -> Result<T, Failure> {
        let inner = &self.inner;
        let mut cx = Cx::new(&*inner.model, &inner.sessions as &dyn Sessions, inner.clock.now());
        let answer = f(&inner.services, &mut cx);
        let staged = cx.finish();
        if !staged.is_empty() {
            self.mutate(move |_, cx| cx.restage(staged))?;
        }
        Ok(answer)
    }
}

/// The sessions as a mutation in the writer sees them: the registered streams, plus those
/// opened by earlier mutations of the same transaction (registered once it commits).
struct GroupSessions<'a>(&'a Inner);

impl Sessions for GroupSessions<'_> {
    fn session(&self, client: &ClientId) -> Option<SessionInfo> {
        let opening = self.0.opening.lock().unwrap_or_else(|p| p.into_inner()).get(client).cloned();
        opening.or_else(|| self.0.sessions.session(client))
    }
}

impl Inner {
    fn stats(&self) -> MutexGuard<'_, StatsState> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Performs the effects of a committed batch on the live streams (on the writer thread,
    /// so in commit order).
    fn perform(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { client, command } => {
                    // A client without a stream gets the full rule set when it reconnects.
                    let _ = self.sessions.send(&client, command);
                }
                Effect::Disconnect { client, reason } => self.sessions.disconnect(&client, reason),
                Effect::ForgetRules(rules) => {
                    let mut stats = self.stats();
                    for rule in rules {
                        stats.book.remove(&rule);
                        stats.dirty.remove(&rule);
                        // A push still waiting on a deleted rule learns so now.
                        self.sessions.publish_outcome(rule, &RuleState::Removed);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
