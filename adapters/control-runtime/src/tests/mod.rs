//! The runtime's riskiest parts under a paused tokio clock: replay ordering on reconnect,
//! ack timeouts, streams that vanish around a push, session replacement, group commit and
//! the audit trail.
//!
//! How time moves here: the writer is a real OS thread, so a task awaiting it looks idle to
//! tokio, and a paused clock auto-advances to the next timer whenever every task is idle. A
//! test that awaited the writer while a push's ack timer is pending could therefore see that
//! timer fire "early". So these tests never idle-wait on the writer with a timer pending:
//! they either poll (`settle`, which yields and never lets the clock move) or hold
//! auto-advance off with an in-flight blocking task (`frozen`). Time moves only where a
//! test awaits a push that is expected to time out.
//!
//! How order is pinned: the writer runs jobs in the order they were submitted, and performs
//! each commit's effects (and a new stream's plan and registration) in its completion, in
//! that order. A test that needs "this commits before that" holds the store (`StoreHold`) or
//! the writer (`WriterGate`), submits in the order it wants by polling each future once
//! (`queue`), then lets the writer go.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portunus_core::account::{PasswordHash, User};
use portunus_core::audit::{AuditQuery, AuditRecord, Outcome};
use portunus_core::capability::Capability;
use portunus_core::config::ServerSettings;
use portunus_core::endpoint::San;
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ids::{ClientId, RuleId};
use portunus_core::policy::{Actor, Credential, Role};
use portunus_core::ports::{
    ClientCommand, ClientStore, DisconnectReason, LatencyObserver, PasswordHasher, RuleStore, SessionInfo,
    Sessions, Stage, Store,
};
use portunus_core::rule::{ListenSpec, Protocol, Rule, RuleEvent, RuleSpec, RuleState};
use portunus_core::secret::SecretHash;
use portunus_core::service::{NewGrant, NewUser, PushFailure, RuleFilter, ServerIdentity, SessionPlan};
use portunus_core::test_support::{CountingEntropy, FakeHasher, ManualClock, MemoryStore};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{EndReason, Outbound, Ports, Registration, Runtime};

/// The client every test enrolls.
const CLIENT: &str = "edge-01";

/// The longest a test waits, in wall-clock time, for something that needs no virtual time.
const WALL: Duration = Duration::from_secs(5);

// ----- fixture ---------------------------------------------------------------------------

struct Fixture {
    runtime: Runtime,
    store: Arc<MemoryStore>,
    /// The runtime's clock (tokio's paused clock does not move it).
    clock: Arc<ManualClock>,
}

impl Fixture {
    /// The committed state the runtime reads (outcomes reach `store` later: write-behind).
    fn committed(&self) -> &crate::model::ReadModel {
        &self.runtime.inner.model
    }
}

fn fixture() -> Fixture {
    fixture_with(Arc::new(FakeHasher), None)
}

fn fixture_with(hasher: Arc<dyn PasswordHasher>, observer: Option<Arc<dyn LatencyObserver>>) -> Fixture {
    let store = Arc::new(MemoryStore::default());
    let settings = ServerSettings::resolve(Default::default()).expect("default settings");
    fixture_over(store.clone(), store, settings, hasher, observer)
}

/// A runtime whose store port is `port` (which may wrap `store`, the state tests read).
fn fixture_over(
    store: Arc<MemoryStore>,
    port: Arc<dyn Store>,
    settings: ServerSettings,
    hasher: Arc<dyn PasswordHasher>,
    observer: Option<Arc<dyn LatencyObserver>>,
) -> Fixture {
    let identity = ServerIdentity {
        cert_sha256: "ab".repeat(32),
        sans: vec![San::Ip("127.0.0.1".parse().expect("ip"))],
        control_addr: "0.0.0.0:7443".parse().expect("addr"),
    };
    let clock = Arc::new(ManualClock::at(1_000_000));
    let ports = Ports {
        store: port,
        clock: clock.clone(),
        entropy: Arc::new(CountingEntropy::default()),
        hasher,
        observer,
    };
    let runtime =
        Runtime::new(ports, settings, identity, SecretHash::of("operator-secret")).expect("runtime starts");
    Fixture { runtime, store, clock }
}

/// A password hasher that counts its calls (a create_user has hashed just before it
/// submits its mutation).
#[derive(Default)]
struct CountingHasher {
    calls: AtomicUsize,
}

impl PasswordHasher for CountingHasher {
    fn hash(&self, password: &str) -> Result<PasswordHash, Failure> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        FakeHasher.hash(password)
    }
    fn verify(&self, password: &str, hash: &PasswordHash) -> bool {
        FakeHasher.verify(password, hash)
    }
}

/// Counts the writer's store transactions.
#[derive(Default)]
struct CommitCounter {
    commits: AtomicUsize,
}

impl LatencyObserver for CommitCounter {
    fn observe(&self, stage: Stage, _seconds: f64) {
        if matches!(stage, Stage::Commit) {
            self.commits.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn spec(port: i64) -> RuleSpec {
    RuleSpec {
        name: None,
        protocol: Protocol::Tcp,
        listen_port: ListenSpec::Port(port),
        listen_addr: None,
        target: Some("127.0.0.1:8080".into()),
        targets: vec![],
        prefer_ipv6: false,
        health_check_interval_secs: None,
        sni_pattern: None,
        sni_fallback: false,
        rate_limit: None,
    }
}

// ----- waiting without moving the clock ---------------------------------------------------

/// Polls `probe` until it answers, yielding to the other tasks in between. Yielding never
/// auto-advances the paused clock, so no ack timer fires while a test settles. Fails after
/// `WALL` of real time.
async fn settle<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + WALL;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "gave up waiting for {what}");
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Awaits `fut` with auto-advance held off: an in-flight blocking task inhibits it, so the
/// runtime really waits for the writer thread instead of jumping to the next timer.
async fn frozen<F: Future>(fut: F) -> F::Output {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let guard = tokio::task::spawn_blocking(move || {
        let _ = wait.recv();
    });
    let out = fut.await;
    // Not awaited: awaiting it would let other tasks run between `fut`'s answer and the
    // caller's next step. It ends on its own; auto-advance resumes when it has.
    drop((release, guard));
    out
}

/// Runs a blocking use case on the blocking pool (which also holds auto-advance off).
async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("the blocking call ends")
}

/// The output of a task that must end without any virtual time passing.
async fn finished<T>(what: &str, handle: JoinHandle<T>) -> T {
    settle(what, || handle.is_finished().then_some(())).await;
    handle.await.expect("the task did not panic")
}

/// Lets every ready task run a few times over (no virtual time passes).
async fn let_tasks_run() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Blocks this (the runtime's only) thread until `probe` answers: no task runs meanwhile.
fn hold_thread_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + WALL;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Holds the store's write lock (MemoryStore serialises transactions on its state lock) on
/// a thread of its own, so the writer cannot commit anything until `release`.
struct StoreHold {
    release: std::sync::mpsc::Sender<()>,
    holder: std::thread::JoinHandle<()>,
}

impl StoreHold {
    fn take(store: &Arc<MemoryStore>) -> StoreHold {
        let (locked_tx, locked_rx) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let store: Arc<dyn Store> = store.clone();
        let holder = std::thread::spawn(move || {
            store
                .transact(&mut |_| {
                    let _ = locked_tx.send(());
                    let _ = release_rx.recv();
                    Ok(())
                })
                .expect("an empty transaction");
        });
        locked_rx.recv_timeout(WALL).expect("the store is held");
        StoreHold { release, holder }
    }

    fn release(self) {
        self.release.send(()).expect("the holder waits");
        self.holder.join().expect("the holder ends");
    }
}

/// Holds the writer itself inside a transaction (a mutation that waits), so that whatever is
/// submitted meanwhile queues up behind it and runs together in the next group: unlike
/// `StoreHold`, which stops the writer after it has already taken its next group.
struct WriterGate {
    open: std::sync::mpsc::Sender<()>,
    holder: std::thread::JoinHandle<()>,
}

impl WriterGate {
    /// Returns once the writer is inside the gate's transaction.
    fn close(rt: &Runtime) -> WriterGate {
        let (entered, is_entered) = std::sync::mpsc::channel::<()>();
        let (open, wait) = std::sync::mpsc::channel::<()>();
        let rt = rt.clone();
        let holder = std::thread::spawn(move || {
            rt.mutate(move |_, _| {
                let _ = entered.send(());
                let _ = wait.recv();
            })
            .expect("the gate commits");
        });
        is_entered.recv_timeout(WALL).expect("the writer is inside the gate");
        WriterGate { open, holder }
    }

    /// Lets the writer go and blocks this thread until the gate's own commit was answered:
    /// what queued behind it is the writer's next group.
    fn open(self) {
        self.open.send(()).expect("the gate waits");
        self.holder.join().expect("the gate's thread ends");
    }
}

/// Polls `fut` once without letting any other task run, so whatever it submits to the writer
/// is queued when this returns. The writer is held: it cannot have answered yet.
async fn queue<F: Future + Unpin>(what: &str, fut: &mut F) {
    tokio::select! {
        biased;
        _ = fut => panic!("{what} was answered while the writer is held"),
        () = std::future::ready(()) => {}
    }
}

/// Spawns a push and returns once its begin_push committed, holding this (the runtime's
/// only) thread meanwhile: the push task has not run since its begin was queued.
async fn push_committed(f: &Fixture, port: u16) -> (JoinHandle<Result<Rule, PushFailure>>, Rule) {
    let hold = StoreHold::take(&f.store);
    let push = spawn_push(&f.runtime, &Actor::operator(), i64::from(port), Duration::from_secs(2));
    // The push task runs before this one resumes: it submits begin_push, which waits on the lock.
    tokio::task::yield_now().await;
    hold.release();
    let rule = hold_thread_until("the Pending rule", || rule_on_port(&f.store, port));
    (push, rule)
}

// ----- a simulated client ---------------------------------------------------------------

/// An enrolled client: its id, and the bearer token its streams present.
struct Enrolled {
    id: ClientId,
    token: String,
}

async fn enrolled(rt: &Runtime, name: &str) -> Enrolled {
    let (issuer, owned) = (rt.clone(), name.to_owned());
    let ticket =
        off_thread(move || issuer.enroll_client(&Actor::operator(), &owned, None)).await.expect("enroll");
    let redeemed = frozen(rt.redeem(ticket.uri.code)).await.expect("redeem");
    Enrolled { id: redeemed.client.id, token: redeemed.token.expose().to_owned() }
}

fn session_info(rt: &Runtime) -> SessionInfo {
    SessionInfo {
        capabilities: Capability::ALL.iter().copied().collect(),
        version: "test".into(),
        connected_at: rt.now(),
        // One client process: every stream these tests open is a reconnect of it.
        instance: 7,
    }
}

/// One control stream as the gRPC adapter runs it: `open_session` queues the plan on it and
/// registers it in the commit's completion.
struct Stream {
    rx: UnboundedReceiver<Outbound>,
    reg: Registration,
    /// How many rules `open_session` said it replayed.
    replayed: usize,
}

impl Stream {
    /// The next item, waiting (without moving the clock) until there is one.
    async fn next(&mut self) -> Outbound {
        let rx = &mut self.rx;
        settle("an item on the stream", || rx.try_recv().ok()).await
    }

    /// The first item must be the plan (with as many rules as `open_session` counted).
    async fn plan(&mut self) -> SessionPlan {
        match self.next().await {
            Outbound::Plan(plan) => {
                assert_eq!(plan.rules.len(), self.replayed, "open_session counts the rules it replays");
                *plan
            }
            other => panic!("the first item on a stream must be the plan, got {other:?}"),
        }
    }

    /// The next item must be an Upsert; returns its rule.
    async fn upsert(&mut self) -> RuleId {
        match self.next().await {
            Outbound::Command(ClientCommand::Upsert { rule, .. }) => rule,
            other => panic!("expected an Upsert, got {other:?}"),
        }
    }

    /// Everything queued right now.
    fn drain(&mut self) -> Vec<Outbound> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

/// Opens a stream with the client's token: the plan is on it once this answers.
async fn open(rt: &Runtime, client: &Enrolled) -> Result<Stream, Failure> {
    let (tx, rx) = unbounded_channel();
    let (reg, replayed) = rt.open_session(&client.token, "test", session_info(rt), tx).await?;
    Ok(Stream { rx, reg, replayed })
}

/// The stream an `open` that must succeed opened.
fn opened(result: Result<Stream, Failure>) -> Stream {
    match result {
        Ok(stream) => stream,
        Err(failure) => panic!("the stream did not open: {failure:?}"),
    }
}

async fn connect(rt: &Runtime, client: &Enrolled) -> Stream {
    opened(frozen(open(rt, client)).await)
}

/// The rules of the Upserts among `items`, in order.
fn upserts(items: &[Outbound]) -> Vec<RuleId> {
    items
        .iter()
        .filter_map(|item| match item {
            Outbound::Command(ClientCommand::Upsert { rule, .. }) => Some(*rule),
            _ => None,
        })
        .collect()
}

/// The rules of the Removes among `items`, in order.
fn removes(items: &[Outbound]) -> Vec<RuleId> {
    items
        .iter()
        .filter_map(|item| match item {
            Outbound::Command(ClientCommand::Remove { rule }) => Some(*rule),
            _ => None,
        })
        .collect()
}

fn plan_ids(plan: &SessionPlan) -> BTreeSet<RuleId> {
    plan.rules.iter().map(|(id, _)| *id).collect()
}

fn spawn_push(
    rt: &Runtime,
    actor: &Actor,
    port: i64,
    ack: Duration,
) -> JoinHandle<Result<Rule, PushFailure>> {
    let (rt, actor) = (rt.clone(), actor.clone());
    tokio::spawn(async move {
        let view = rt.push_rule(&actor, CLIENT, &spec(port), ack).await?;
        assert_eq!(view.client_name, CLIENT);
        Ok(view.rule)
    })
}

async fn report(rt: &Runtime, client: &ClientId, rule: RuleId, event: RuleEvent) -> Option<RuleState> {
    frozen(rt.rule_outcome(client, rule, event)).await.expect("the outcome commits")
}

/// The rule's state as committed (the read model: what every read and mutation sees).
fn stored_state(f: &Fixture, rule: RuleId) -> Option<RuleState> {
    f.committed().get_rule(rule).expect("model read").map(|r| r.state)
}

fn rule_on_port(store: &MemoryStore, port: u16) -> Option<Rule> {
    store.list_rules().expect("store read").into_iter().find(|r| r.def.listen.start() == port)
}

async fn audit(rt: &Runtime) -> Vec<AuditRecord> {
    let rt = rt.clone();
    off_thread(move || {
        let all = AuditQuery::new(None, None, None, None, Some(500)).expect("query");
        rt.audit_page(&Actor::operator(), &all)
    })
    .await
    .expect("audit page")
    .records
}

fn port_in_use() -> RuleEvent {
    RuleEvent::Failed { code: ErrorCode::PortInUse, message: "address already in use".into() }
}

mod audit;
mod commit_order;
mod durability;
mod pushes;
mod streams;
