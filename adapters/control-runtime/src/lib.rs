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

mod model;
mod sessions;
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
    Clock, Entropy, LatencyObserver, PasswordHasher, SessionInfo, Sessions, Stage, Store, StoreError,
    StoreTx, Write,
};
use portunus_core::rule::{Rule, RuleEvent, RuleSpec, RuleState};
use portunus_core::secret::{Secret, SecretHash};
use portunus_core::service::{
    AccountService, AdminService, AuditPage, AuthFailure, Authenticated, Begun, ClientService, ClientView,
    Credentials, Cx, Effect, EndpointView, EnrollTicket, LoginOutcome, MetricsSnapshot, MintedToken,
    NewGrant, NewUser, PushFailure, PushOutcome, Redeemed, RuleFilter, RuleService, RuleStatsView, RuleView,
    ServerIdentity, SessionPlan, Staged,
};
use portunus_core::settings::Onboarding;
use portunus_core::stats::{RuleReport, StatsBook};

use model::ReadModel;
pub use portunus_telemetry::clock::SystemClock;
pub use sessions::{EndReason, Outbound, Registration, SessionRegistry};
use tracing::Instrument;
use writer::{Completion, Job, Writer};

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
}

/// The runtime's shared state.
pub struct Inner {
    /// Committed state for reads, kept in commit order by the writer.
    model: ReadModel,
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn LatencyObserver>>,
    services: Services,
    sessions: SessionRegistry,
    /// Streams opened by a mutation of the transaction in progress, until it commits.
    opening: Mutex<std::collections::HashMap<ClientId, SessionInfo>>,
    writer: Writer,
    stats: Mutex<StatsState>,
}

/// The control runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
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
        let model = ReadModel::load(ports.store.clone())?;
        let services = Services {
            clients: ClientService::new(settings.clone(), identity.clone(), ports.entropy.clone()),
            rules: RuleService::new(&settings),
            accounts: AccountService::new(ports.entropy, ports.hasher, operator_token),
            admin: AdminService::new(settings, identity),
        };
        let writer = Writer::start(ports.store.clone(), ports.observer.clone());
        Ok(Runtime {
            inner: Arc::new(Inner {
                model,
                clock: ports.clock,
                observer: ports.observer,
                services,
                sessions: SessionRegistry::default(),
                opening: Mutex::new(std::collections::HashMap::new()),
                writer,
                stats: Mutex::new(StatsState { book, dirty: BTreeSet::new() }),
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
    fn submit<T, P, F, A>(&self, f: F, after: A, reply: impl FnOnce(Result<(T, P), Failure>) + Send + 'static)
    where
        T: Send + 'static,
        P: Send + 'static,
        F: FnOnce(&Services, &mut Cx<'_, dyn StoreTx + '_>) -> T + Send + 'static,
        A: FnOnce(&Inner, &T) -> P + Send + 'static,
    {
        let inner = self.inner.clone();
        let job: Job = Box::new(move |tx: &dyn StoreTx| -> Result<Completion, StoreError> {
            let view = GroupSessions(&inner);
            let mut cx = Cx::new(tx, &view as &dyn Sessions, inner.clock.now());
            let answer = f(&inner.services, &mut cx);
            let Staged { writes, effects } = cx.finish();
            let committed_writes = writes.clone();
            tx.apply(writes)?;
            Ok(Box::new(move |committed: Result<(), Failure>| {
                if committed.is_ok() {
                    inner.model.committed(committed_writes);
                }
                if committed.is_err() {
                    // The whole transaction failed: no stream it opened will be registered.
                    inner.opening.lock().unwrap_or_else(|p| p.into_inner()).clear();
                }
                reply(committed.map(|()| {
                    inner.perform(effects);
                    let extra = after(&inner, &answer);
                    (answer, extra)
                }))
            }))
        });
        if let Err(failure) = self.inner.writer.submit(job) {
            tracing::error!(event = "store.error", error = %failure.message);
        }
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
        self.submit(f, after, move |result| {
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
        let mut cx = Cx::new(&inner.model, &inner.sessions as &dyn Sessions, inner.clock.now());
        let answer = f(&inner.services, &mut cx);
        let staged = cx.finish();
        if !staged.is_empty() {
            self.mutate(move |_, cx| {
                cx_stage(cx, staged);
            })?;
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

/// Re-stages what a read staged, inside the writer's transaction.
fn cx_stage(cx: &mut Cx<'_, dyn StoreTx + '_>, staged: Staged) {
    cx.restage(staged);
}

// ----- use cases ------------------------------------------------------------------------

impl Runtime {
    /// Authenticates an operator request (blocking).
    pub fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Authenticated, Failure> {
        self.read(|s, cx| s.accounts.authenticate(cx, credentials))?
    }

    /// Issues an enrollment code (blocking).
    pub fn enroll_client(
        &self,
        actor: &Actor,
        name: &str,
        ttl_secs: Option<u64>,
    ) -> Result<EnrollTicket, Failure> {
        let (actor, name) = (actor.clone(), name.to_owned());
        self.mutate(move |s, cx| s.clients.enroll_client(cx, &actor, &name, ttl_secs))?
    }

    /// Issues a re-enrollment code (blocking).
    pub fn reenroll_client(
        &self,
        actor: &Actor,
        reference: &str,
        ttl_secs: Option<u64>,
    ) -> Result<EnrollTicket, Failure> {
        let (actor, reference) = (actor.clone(), reference.to_owned());
        self.mutate(move |s, cx| s.clients.reenroll_client(cx, &actor, &reference, ttl_secs))?
    }

    /// Redeems an enrollment code.
    pub async fn redeem(&self, code: Secret) -> Result<Redeemed, Failure> {
        self.mutate_async(move |s, cx| s.clients.redeem(cx, &code)).await?
    }

    /// Revokes a client (blocking).
    pub fn revoke(&self, actor: &Actor, reference: &str) -> Result<Client, Failure> {
        let (actor, reference) = (actor.clone(), reference.to_owned());
        self.mutate(move |s, cx| s.clients.revoke(cx, &actor, &reference))?
    }

    /// Renames a client (blocking).
    pub fn rename_client(&self, actor: &Actor, reference: &str, new_name: &str) -> Result<Client, Failure> {
        let (actor, reference, new_name) = (actor.clone(), reference.to_owned(), new_name.to_owned());
        self.mutate(move |s, cx| s.clients.rename_client(cx, &actor, &reference, &new_name))?
    }

    /// Deletes a revoked client (blocking).
    pub fn delete_client(&self, actor: &Actor, reference: &str) -> Result<Client, Failure> {
        let (actor, reference) = (actor.clone(), reference.to_owned());
        self.mutate(move |s, cx| s.clients.delete_client(cx, &actor, &reference))?
    }

    /// The clients `actor` may see (blocking).
    pub fn list_clients(&self, actor: &Actor) -> Result<Vec<ClientView>, Failure> {
        self.read(|s, cx| s.clients.list_clients(cx, actor))?
    }

    /// One client (blocking).
    pub fn get_client(&self, actor: &Actor, reference: &str) -> Result<ClientView, Failure> {
        self.read(|s, cx| s.clients.get_client(cx, actor, reference))?
    }

    /// Pushes a rule and waits up to `ack_timeout` for the client's outcome.
    ///
    /// The steps, each a debug-level span under `control.push`: `begin` (decided and
    /// committed by the writer, `store.commit`), the command queued on the stream, `link.ack`
    /// (the wait), `complete` (only an undelivered command commits anything).
    pub async fn push_rule(
        &self,
        actor: &Actor,
        client_ref: &str,
        spec: &RuleSpec,
        ack_timeout: Duration,
    ) -> Result<RuleView, PushFailure> {
        let started = Instant::now();
        let span = tracing::debug_span!("control.push", client = client_ref, rule = tracing::field::Empty);
        let result = self.push_steps(actor, client_ref, spec, ack_timeout).instrument(span).await;
        self.observe(Stage::Push, started);
        result
    }

    async fn push_steps(
        &self,
        actor: &Actor,
        client_ref: &str,
        spec: &RuleSpec,
        ack_timeout: Duration,
    ) -> Result<RuleView, PushFailure> {
        let (a, c, sp) = (actor.clone(), client_ref.to_owned(), spec.clone());
        // The command is queued right after the commit, in commit order, with its waiter
        // registered first: a later removal can never overtake it, and an answer that comes
        // at once is not missed.
        let queue = |inner: &Inner, begun: &Result<Begun, PushFailure>| {
            begun.as_ref().ok().map(|begun| {
                let waiter = inner.sessions.wait_outcome(begun.rule.id);
                let sent = inner.sessions.send(&begun.rule.client, begun.command.clone());
                (waiter, sent, Instant::now())
            })
        };
        let (begun, queued) =
            self.mutate_then(move |s, cx| s.rules.begin_push(cx, &a, &c, &sp, ack_timeout), queue).await?;
        let begun = begun?;
        let (waiter, sent, sent_at) =
            queued.ok_or_else(|| Failure::new(ErrorCode::Internal, "a begun push was not queued"))?;
        let rule = begun.rule.id;
        tracing::Span::current().record("rule", rule.get());
        let outcome = if sent {
            let waited = tokio::time::timeout(ack_timeout, waiter)
                .instrument(tracing::debug_span!("link.ack", rule = rule.get()))
                .await;
            match waited {
                Ok(Ok(state)) => {
                    self.observe(Stage::Ack, sent_at);
                    PushOutcome::Reported(state)
                }
                _ => PushOutcome::TimedOut,
            }
        } else {
            drop(waiter);
            PushOutcome::NotDelivered
        };
        self.inner.sessions.forget_waiters(rule);
        if outcome == PushOutcome::NotDelivered {
            let a = actor.clone();
            self.mutate_async(move |s, cx| s.rules.complete_push(cx, &a, begun, outcome, ack_timeout)).await?
        } else {
            // Only an undelivered push writes anything; the others just shape the answer.
            let mut cx = Cx::new(&self.inner.model, &self.inner.sessions as &dyn Sessions, self.now());
            self.inner.services.rules.complete_push(&mut cx, actor, begun, outcome, ack_timeout)
        }
    }

    /// Removes a rule (blocking).
    pub fn remove_rule(&self, actor: &Actor, id: RuleId) -> Result<Rule, Failure> {
        let actor = actor.clone();
        self.mutate(move |s, cx| s.rules.remove_rule(cx, &actor, id))?
    }

    /// The rules `actor` may see (blocking).
    pub fn list_rules(&self, actor: &Actor, filter: &RuleFilter) -> Result<Vec<RuleView>, Failure> {
        self.read(|s, cx| s.rules.list_rules(cx, actor, filter))?
    }

    /// One rule (blocking).
    pub fn get_rule(&self, actor: &Actor, id: RuleId) -> Result<RuleView, Failure> {
        self.read(|s, cx| s.rules.get_rule(cx, actor, id))?
    }

    /// One rule's traffic (blocking).
    pub fn rule_stats(&self, actor: &Actor, id: RuleId) -> Result<RuleStatsView, Failure> {
        let totals = |rule: RuleId| self.stats().book.get(&rule).cloned();
        self.read(|s, cx| s.rules.rule_stats(cx, actor, id, &totals))?
    }

    // ----- accounts -----------------------------------------------------------------------

    /// Where onboarding stands (blocking).
    pub fn onboarding_status(&self) -> Result<Onboarding, Failure> {
        self.inner.services.accounts.onboarding_status(&self.inner.model)
    }

    /// Issues a new setup token while onboarding is open (blocking; at server start).
    pub fn start_onboarding(&self) -> Result<Option<(Secret, Timestamp)>, Failure> {
        self.mutate(|s, cx| s.accounts.start_onboarding(cx))?
    }

    /// Creates the first superadmin (blocking; the password is hashed on this thread).
    pub fn complete_onboarding(
        &self,
        setup_token: &str,
        user_id: &str,
        password: &str,
        remote: Option<IpAddr>,
    ) -> Result<User, Failure> {
        let prepared = self.inner.services.accounts.prepare_onboarding(
            &self.inner.model,
            setup_token,
            user_id,
            password,
            remote,
            self.now(),
        );
        let (token, user) = (setup_token.to_owned(), user_id.to_owned());
        self.mutate(move |s, cx| s.accounts.finish_onboarding(cx, &token, &user, remote, prepared))?
    }

    /// Checks a password and opens a Web session (blocking).
    pub fn login(
        &self,
        user_id: &str,
        password: &str,
        remote: Option<IpAddr>,
    ) -> Result<LoginOutcome, Failure> {
        let prepared = self.inner.services.accounts.prepare_login(
            &self.inner.model,
            user_id,
            password,
            remote,
            self.now(),
        );
        let user = user_id.to_owned();
        self.mutate(move |s, cx| s.accounts.finish_login(cx, &user, remote, prepared))?
    }

    /// Ends the caller's Web session (blocking).
    pub fn logout(&self, actor: &Actor, session: Option<&SessionId>) -> Result<(), Failure> {
        let (actor, session) = (actor.clone(), session.cloned());
        self.mutate(move |s, cx| s.accounts.logout(cx, &actor, session.as_ref()))?
    }

    /// The caller's own account (blocking).
    pub fn whoami(&self, actor: &Actor) -> Result<User, Failure> {
        self.inner.services.accounts.whoami(&self.inner.model, actor)
    }

    /// Changes the caller's password (blocking; hashing runs on this thread).
    pub fn change_password(
        &self,
        actor: &Actor,
        current: &str,
        new: &str,
        session: Option<&SessionId>,
    ) -> Result<(), Failure> {
        let prepared = self.inner.services.accounts.prepare_password_change(
            &self.inner.model,
            actor,
            current,
            new,
            self.now(),
        );
        let (actor, session) = (actor.clone(), session.cloned());
        self.mutate(move |s, cx| s.accounts.finish_password_change(cx, &actor, session.as_ref(), prepared))?
    }

    /// Every user (blocking).
    pub fn list_users(&self, actor: &Actor) -> Result<Vec<User>, Failure> {
        self.read(|s, cx| s.accounts.list_users(cx, actor))?
    }

    /// One user (blocking).
    pub fn get_user(&self, actor: &Actor, id: &str) -> Result<User, Failure> {
        self.read(|s, cx| s.accounts.get_user(cx, actor, id))?
    }

    /// Creates an account (blocking; hashing runs on this thread).
    pub fn create_user(&self, actor: &Actor, new: &NewUser) -> Result<User, Failure> {
        let prepared = self.inner.services.accounts.prepare_new_user(actor, new);
        let (actor, new) = (actor.clone(), new.clone());
        self.mutate(move |s, cx| s.accounts.create_user(cx, &actor, &new, prepared))?
    }

    /// Deletes an account (blocking).
    pub fn delete_user(&self, actor: &Actor, id: &str) -> Result<User, Failure> {
        let (actor, id) = (actor.clone(), id.to_owned());
        self.mutate(move |s, cx| s.accounts.delete_user(cx, &actor, &id))?
    }

    /// A user's API tokens (blocking).
    pub fn list_tokens(&self, actor: &Actor, user: &str) -> Result<Vec<ApiToken>, Failure> {
        self.read(|s, cx| s.accounts.list_tokens(cx, actor, user))?
    }

    /// Mints an API token (blocking).
    pub fn create_token(
        &self,
        actor: &Actor,
        user: &str,
        name: Option<&str>,
    ) -> Result<MintedToken, Failure> {
        let (actor, user, name) = (actor.clone(), user.to_owned(), name.map(str::to_owned));
        self.mutate(move |s, cx| s.accounts.create_token(cx, &actor, &user, name.as_deref()))?
    }

    /// Revokes an API token (blocking).
    pub fn revoke_token(&self, actor: &Actor, user: &str, token: &str) -> Result<(), Failure> {
        let (actor, user, token) = (actor.clone(), user.to_owned(), token.to_owned());
        self.mutate(move |s, cx| s.accounts.revoke_token(cx, &actor, &user, &token))?
    }

    /// Grants (blocking).
    pub fn list_grants(&self, actor: &Actor, user: Option<&str>) -> Result<Vec<Grant>, Failure> {
        self.read(|s, cx| s.accounts.list_grants(cx, actor, user))?
    }

    /// One grant (blocking).
    pub fn get_grant(&self, actor: &Actor, id: &str) -> Result<Grant, Failure> {
        self.read(|s, cx| s.accounts.get_grant(cx, actor, id))?
    }

    /// Creates a grant (blocking).
    pub fn create_grant(&self, actor: &Actor, new: &NewGrant) -> Result<Grant, Failure> {
        let (actor, new) = (actor.clone(), new.clone());
        self.mutate(move |s, cx| s.accounts.create_grant(cx, &actor, &new))?
    }

    /// Revokes a grant and the rules it alone covered (blocking).
    pub fn delete_grant(&self, actor: &Actor, id: &str) -> Result<(Grant, Vec<Rule>), Failure> {
        let (actor, id) = (actor.clone(), id.to_owned());
        self.mutate(move |s, cx| s.accounts.delete_grant(cx, &actor, &id))?
    }

    // ----- administration -----------------------------------------------------------------

    /// The advertised-endpoint settings (blocking).
    pub fn endpoint_settings(&self, actor: &Actor) -> Result<EndpointView, Failure> {
        self.read(|s, cx| s.admin.endpoint_settings(cx, actor))?
    }

    /// Sets or clears the advertised-endpoint override (blocking).
    pub fn set_endpoint_override(&self, actor: &Actor, value: Option<&str>) -> Result<EndpointView, Failure> {
        let (actor, value) = (actor.clone(), value.map(str::to_owned));
        self.mutate(move |s, cx| s.admin.set_endpoint_override(cx, &actor, value.as_deref()))?
    }

    /// A page of the audit trail (blocking).
    pub fn audit_page(&self, actor: &Actor, query: &AuditQuery) -> Result<AuditPage, Failure> {
        self.read(|s, cx| s.admin.audit_page(cx, actor, query))?
    }

    /// The metrics on the operator API (blocking).
    pub fn metrics_for(&self, actor: &Actor) -> Result<MetricsSnapshot, Failure> {
        let totals = |rule: RuleId| self.stats().book.get(&rule).map(|t| t.totals());
        self.read(|s, cx| s.admin.metrics_for(cx, actor, &totals))?
    }

    /// The data behind `/metrics` (blocking).
    pub fn metrics_snapshot(&self) -> Result<MetricsSnapshot, Failure> {
        let totals = |rule: RuleId| self.stats().book.get(&rule).map(|t| t.totals());
        portunus_core::service::metrics_snapshot(&self.inner.model, &self.inner.sessions, &totals)
    }

    // ----- the server side of control streams ---------------------------------------------

    /// Checks a client's bearer token.
    pub fn authenticate_client(&self, token: &str) -> Result<Client, AuthFailure> {
        self.inner.services.clients.authenticate_client(&self.inner.model, token)
    }

    /// Opens a client's stream: checks its token again (a revoke or rotation since the
    /// handshake refuses it), records the connect, queues the plan on `tx` and registers the
    /// stream, the last two in commit order, so every later mutation's commands reach this
    /// stream and every earlier one is in its plan. Returns the registration and the number
    /// of rules replayed.
    pub async fn open_session(
        &self,
        token: &str,
        version: &str,
        info: SessionInfo,
        tx: tokio::sync::mpsc::UnboundedSender<Outbound>,
    ) -> Result<(Registration, usize), Failure> {
        let (token, version) = (token.to_owned(), version.to_owned());
        let announced = info.clone();
        let inner = self.inner.clone();
        let open = move |s: &Services, cx: &mut Cx<'_, dyn StoreTx + '_>| {
            let plan = s.clients.session_opened(cx, &token, &version);
            if let Ok(plan) = &plan {
                // Later mutations of this transaction see the stream as connected.
                inner
                    .opening
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(plan.client.id.clone(), announced);
            }
            plan
        };
        let register = move |inner: &Inner, plan: &Result<SessionPlan, Failure>| {
            plan.as_ref().ok().map(|plan| {
                inner.opening.lock().unwrap_or_else(|p| p.into_inner()).remove(&plan.client.id);
                let _ = tx.send(Outbound::Plan(Box::new(plan.clone())));
                inner.sessions.register(&plan.client.id, plan.client.name.as_str(), info, tx)
            })
        };
        let (plan, registration) = self.mutate_then(open, register).await?;
        let n_rules = plan?.rules.len();
        let registration =
            registration.ok_or_else(|| Failure::new(ErrorCode::Internal, "stream not registered"))?;
        Ok((registration, n_rules))
    }

    /// Applies a client's activation report and wakes the push waiting for it.
    pub async fn rule_outcome(
        &self,
        client: &ClientId,
        rule: RuleId,
        event: RuleEvent,
    ) -> Result<Option<RuleState>, Failure> {
        let client = client.clone();
        let state =
            self.mutate_async(move |s, cx| s.clients.rule_outcome(cx, &client, rule, event)).await??;
        if let Some(state) = &state {
            self.inner.sessions.publish_outcome(rule, state);
        }
        Ok(state)
    }

    /// Folds a client's traffic report into the book (rules it does not carry are ignored).
    pub async fn record_stats(
        &self,
        client: &ClientId,
        reports: Vec<(RuleId, RuleReport)>,
    ) -> Result<(), Failure> {
        let this = self.clone();
        let client = client.clone();
        blocking(move || {
            let owned = portunus_core::service::owned_reports(&this.inner.model, &client, reports)?;
            let mut stats = this.stats();
            for (rule, report) in owned {
                stats.book.entry(rule).or_default().record(report);
                stats.dirty.insert(rule);
            }
            Ok(())
        })
        .await
    }

    /// Marks a client's stream gone: its active gauges drop to zero.
    pub async fn session_closed(&self, client: &ClientId) -> Result<(), Failure> {
        let this = self.clone();
        let client = client.clone();
        blocking(move || {
            let rules = portunus_core::ports::RuleStore::rules_for_client(&this.inner.model, &client)?;
            let mut stats = this.stats();
            for rule in rules {
                if let Some(totals) = stats.book.get_mut(&rule.id) {
                    totals.client_gone();
                    stats.dirty.insert(rule.id);
                }
            }
            Ok(())
        })
        .await
    }

    /// Persists traffic totals that changed since the last flush; returns how many.
    pub async fn flush_stats(&self) -> Result<usize, Failure> {
        let changed: Vec<_> = {
            let mut stats = self.stats();
            let dirty = std::mem::take(&mut stats.dirty);
            dirty.into_iter().filter_map(|id| stats.book.get(&id).map(|t| (id, t.clone()))).collect()
        };
        if changed.is_empty() {
            return Ok(0);
        }
        self.mutate_async(move |_, cx| {
            let writes = portunus_core::service::flush_writes(cx.store, changed)?;
            let n = writes.len();
            cx_stage(cx, Staged { writes, effects: Vec::new() });
            Ok::<usize, Failure>(n)
        })
        .await?
    }

    /// Flushes changed totals every `every` until the task is aborted.
    pub fn spawn_flusher(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(err) = this.flush_stats().await {
                    tracing::warn!(event = "store.error", error = %err, "could not persist traffic totals");
                }
            }
        })
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|err| Err(Failure::new(ErrorCode::Internal, err.to_string())))
}

#[allow(dead_code)]
fn _assert_write_is_send(w: Write) -> impl Send {
    w
}

#[cfg(test)]
mod tests;
