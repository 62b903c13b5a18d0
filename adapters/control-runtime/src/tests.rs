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
    ClientCommand, LatencyObserver, PasswordHasher, RuleStore, SessionInfo, Sessions, Stage, Store,
};
use portunus_core::rule::{ListenSpec, Protocol, Rule, RuleEvent, RuleSpec, RuleState};
use portunus_core::secret::SecretHash;
use portunus_core::service::{NewGrant, NewUser, PushFailure, RuleFilter, ServerIdentity, SessionPlan};
use portunus_core::test_support::{CountingEntropy, FakeHasher, ManualClock, MemoryStore};
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
}

fn fixture() -> Fixture {
    fixture_with(Arc::new(FakeHasher), None)
}

fn fixture_with(hasher: Arc<dyn PasswordHasher>, observer: Option<Arc<dyn LatencyObserver>>) -> Fixture {
    let store = Arc::new(MemoryStore::default());
    let settings = ServerSettings::resolve(Default::default()).expect("default settings");
    let identity = ServerIdentity {
        cert_sha256: "ab".repeat(32),
        sans: vec![San::Ip("127.0.0.1".parse().expect("ip"))],
        control_addr: "0.0.0.0:7443".parse().expect("addr"),
    };
    let ports = Ports {
        store: store.clone(),
        clock: Arc::new(ManualClock::at(1_000_000)),
        entropy: Arc::new(CountingEntropy::default()),
        hasher,
        observer,
    };
    let runtime =
        Runtime::new(ports, settings, identity, SecretHash::of("operator-secret")).expect("runtime starts");
    Fixture { runtime, store }
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

/// Spawns a push and returns once its begin_push is queued but cannot have committed, then
/// lets it commit and holds this (the runtime's only) thread until it has: the push task
/// has not run since, so it has not sent its command yet.
async fn push_stopped_before_send(f: &Fixture, port: u16) -> (JoinHandle<Result<Rule, PushFailure>>, Rule) {
    let hold = StoreHold::take(&f.store);
    let push = spawn_push(&f.runtime, &Actor::operator(), i64::from(port), Duration::from_secs(2));
    // The push task runs before this one resumes: it submits begin_push, which waits on the lock.
    tokio::task::yield_now().await;
    hold.release();
    let rule = hold_thread_until("the Pending rule", || rule_on_port(&f.store, port));
    (push, rule)
}

// ----- a simulated client ---------------------------------------------------------------

async fn enrolled(rt: &Runtime, name: &str) -> ClientId {
    let (issuer, owned) = (rt.clone(), name.to_owned());
    let ticket =
        off_thread(move || issuer.enroll_client(&Actor::operator(), &owned, None)).await.expect("enroll");
    frozen(rt.redeem(ticket.uri.code)).await.expect("redeem").client.id
}

fn session_info(rt: &Runtime) -> SessionInfo {
    SessionInfo {
        capabilities: Capability::ALL.iter().copied().collect(),
        version: "test".into(),
        connected_at: rt.now(),
    }
}

/// One control stream as the gRPC adapter runs it: the plan is queued before registering.
struct Stream {
    rx: UnboundedReceiver<Outbound>,
    reg: Registration,
}

impl Stream {
    /// The next item, waiting (without moving the clock) until there is one.
    async fn next(&mut self) -> Outbound {
        let rx = &mut self.rx;
        settle("an item on the stream", || rx.try_recv().ok()).await
    }

    /// The first item must be the plan.
    async fn plan(&mut self) -> SessionPlan {
        match self.next().await {
            Outbound::Plan(plan) => *plan,
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

fn queue_and_register(rt: &Runtime, client: &ClientId, plan: SessionPlan) -> Stream {
    let (tx, rx) = unbounded_channel();
    tx.send(Outbound::Plan(Box::new(plan))).expect("the receiver is alive");
    let reg = rt.sessions().register(client, CLIENT, session_info(rt), tx);
    Stream { rx, reg }
}

async fn connect(rt: &Runtime, client: &ClientId) -> Stream {
    let plan = frozen(rt.session_opened(client, "test")).await.expect("session plan");
    queue_and_register(rt, client, plan)
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

fn stored_state(store: &MemoryStore, rule: RuleId) -> Option<RuleState> {
    store.get_rule(rule).expect("store read").map(|r| r.state)
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

// ----- 1. replay ordering -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_reconnecting_client_gets_its_plan_first_with_pending_and_active_rules_only() {
    let f = fixture();
    let rt = &f.runtime;
    let op = Actor::operator();
    let client = enrolled(rt, CLIENT).await;
    let mut old = connect(rt, &client).await;
    assert!(old.plan().await.rules.is_empty());

    // Active.
    let push = spawn_push(rt, &op, 18001, Duration::from_secs(5));
    let active = old.upsert().await;
    assert_eq!(report(rt, &client, active, RuleEvent::Activated).await, Some(RuleState::Active));
    assert_eq!(finished("the answered push", push).await.expect("active").state, RuleState::Active);
    // Pending: the client never answers.
    let push = spawn_push(rt, &op, 18002, Duration::from_secs(1));
    let pending = old.upsert().await;
    let timed_out = push.await.expect("push task").expect_err("no answer");
    assert_eq!(timed_out.failure.code, ErrorCode::AckTimeout);
    // Failed by the server: the port is reserved by the Active rule.
    let clash = finished("the clashing push", spawn_push(rt, &op, 18001, Duration::from_secs(1)))
        .await
        .expect_err("port clash");
    assert_eq!(clash.failure.code, ErrorCode::PortInUse);
    let failed_by_server = clash.rule.expect("a Failed rule is stored").id;
    // Failed by the client.
    let push = spawn_push(rt, &op, 18004, Duration::from_secs(5));
    let failed_by_client = old.upsert().await;
    assert!(matches!(
        report(rt, &client, failed_by_client, port_in_use()).await,
        Some(RuleState::Failed { code: ErrorCode::PortInUse, .. })
    ));
    assert_eq!(
        finished("the refused push", push).await.expect_err("client refused").failure.code,
        ErrorCode::PortInUse
    );
    assert!(old.drain().is_empty());

    // Reconnect (the old stream is still registered, as when the server has not noticed the
    // drop yet) while a push races it: the plan is read and the push begins in the same
    // batch of commits, the plan first, and the new stream registers before the push task
    // runs again.
    let hold = StoreHold::take(&f.store);
    let racing = spawn_push(rt, &op, 18005, Duration::from_secs(5));
    let mut opened = std::pin::pin!(rt.session_opened(&client, "test"));
    tokio::select! {
        biased;
        _ = &mut opened => panic!("the plan cannot be read while the store is held"),
        () = tokio::task::yield_now() => {}
    }
    hold.release();
    let opened = frozen(opened).await.expect("session plan");
    let mut new = queue_and_register(rt, &client, opened);
    let plan = new.plan().await;
    assert_eq!(plan.client.id, client);
    assert_eq!(plan.client.version.as_deref(), Some("test"));
    let replayed = plan_ids(&plan);
    assert!(replayed.contains(&active) && replayed.contains(&pending), "{replayed:?}");
    assert!(!replayed.contains(&failed_by_server) && !replayed.contains(&failed_by_client), "{replayed:?}");
    let raced = settle("the racing push's rule", || rule_on_port(&f.store, 18005)).await.id;
    assert!(!replayed.contains(&raced), "it began after the plan was read");
    assert_eq!(new.upsert().await, raced, "a push racing the reconnect comes after the plan");
    assert_eq!(report(rt, &client, raced, RuleEvent::Activated).await, Some(RuleState::Active));
    assert_eq!(finished("the racing push", racing).await.expect("active").id, raced);
    assert!(new.drain().is_empty());
    assert!(matches!(old.drain().as_slice(), [Outbound::End(EndReason::Replaced)]));
}

#[tokio::test(start_paused = true)]
async fn pushes_queued_after_registration_never_overtake_the_plan() {
    let f = fixture();
    let rt = &f.runtime;
    let op = Actor::operator();
    let client = enrolled(rt, CLIENT).await;
    let mut first = connect(rt, &client).await;
    first.plan().await;
    // Several pushes in flight while the client reconnects, in whatever interleaving the
    // scheduler and the writer produce: whatever reaches the new stream comes after its plan.
    // (Where each rule lands varies; one sent to the old stream after the new plan was read
    // is lost: see `a_push_between_plan_and_registration_reaches_the_new_stream`.)
    let pushes: Vec<_> = (0..8).map(|i| spawn_push(rt, &op, 18100 + i, Duration::from_secs(5))).collect();
    tokio::task::yield_now().await;
    let mut second = connect(rt, &client).await;
    let replayed = plan_ids(&second.plan().await);
    // Every push sends exactly one Upsert, to whichever stream is registered when its task
    // runs again (the client restates an unchanged rule's outcome, so replayed rules are
    // answered again too). Collect them all.
    let (mut on_first, mut on_second) = (Vec::new(), Vec::new());
    let upserts = |items: &[Outbound]| -> Vec<RuleId> {
        items
            .iter()
            .filter_map(|item| match item {
                Outbound::Command(ClientCommand::Upsert { rule, .. }) => Some(*rule),
                _ => None,
            })
            .collect()
    };
    let every = settle("all eight pushes sent", || {
        on_first.extend(first.drain());
        on_second.extend(second.drain());
        let sent: BTreeSet<RuleId> = upserts(&on_first).into_iter().chain(upserts(&on_second)).collect();
        (sent.len() == 8).then_some(sent)
    })
    .await;
    assert_eq!(upserts(&on_first).len() + upserts(&on_second).len(), 8, "each push sends once");
    let stored: BTreeSet<RuleId> = f.store.list_rules().expect("store read").iter().map(|r| r.id).collect();
    assert_eq!(every, stored);
    assert!(replayed.is_subset(&stored));
    for item in &on_second {
        assert!(
            matches!(item, Outbound::Command(ClientCommand::Upsert { .. })),
            "only commands follow the plan on the new stream, got {item:?}"
        );
    }
    for item in &on_first {
        assert!(
            matches!(
                item,
                Outbound::Command(ClientCommand::Upsert { .. }) | Outbound::End(EndReason::Replaced)
            ),
            "the old stream gets commands and its end, never a plan: {item:?}"
        );
    }
    for rule in &every {
        report(rt, &client, *rule, RuleEvent::Activated).await;
    }
    for push in pushes {
        assert_eq!(finished("a push", push).await.expect("active").state, RuleState::Active);
    }
}

// ----- 2. ack timeout ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_unanswered_push_times_out_after_exactly_its_ack_timeout_and_activates_later() {
    let f = fixture();
    let rt = &f.runtime;
    let op = Actor::operator();
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;

    let started = Instant::now();
    let push = spawn_push(rt, &op, 18080, Duration::from_secs(2));
    let first = stream.upsert().await;
    let failure = push.await.expect("push task").expect_err("the client never answers");
    assert_eq!(started.elapsed(), Duration::from_secs(2), "exactly the ack timeout of virtual time");
    assert_eq!(failure.failure.code, ErrorCode::AckTimeout);
    let returned = failure.rule.expect("the timed-out rule is returned");
    assert_eq!((returned.id, returned.state), (first, RuleState::Pending));
    assert_eq!(stored_state(&f.store, first), Some(RuleState::Pending));

    // A second unanswered push, with another timeout.
    let started = Instant::now();
    let push = spawn_push(rt, &op, 18081, Duration::from_millis(1500));
    let second = stream.upsert().await;
    let failure = push.await.expect("push task").expect_err("the client never answers");
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
    assert_eq!(failure.failure.code, ErrorCode::AckTimeout);
    assert_eq!(stored_state(&f.store, second), Some(RuleState::Pending));

    // Late outcomes find no waiter and are applied all the same.
    assert_eq!(report(rt, &client, first, RuleEvent::Activated).await, Some(RuleState::Active));
    assert_eq!(stored_state(&f.store, first), Some(RuleState::Active));
    assert!(matches!(report(rt, &client, second, port_in_use()).await, Some(RuleState::Failed { .. })));
    assert!(matches!(stored_state(&f.store, second), Some(RuleState::Failed { .. })));
    // Repeating an outcome changes nothing and still answers.
    assert_eq!(report(rt, &client, first, RuleEvent::Activated).await, Some(RuleState::Active));

    // The waiting machinery still works: an answered push resolves with no time passing.
    let started = Instant::now();
    let push = spawn_push(rt, &op, 18082, Duration::from_secs(2));
    let third = stream.upsert().await;
    assert_eq!(report(rt, &client, third, RuleEvent::Activated).await, Some(RuleState::Active));
    let rule = finished("the answered push", push).await.expect("active");
    assert_eq!((rule.id, rule.state), (third, RuleState::Active));
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_outcome_for_another_clients_rule_neither_applies_nor_wakes_the_push() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let other = enrolled(rt, "edge-02").await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;
    let started = Instant::now();
    let push = spawn_push(rt, &Actor::operator(), 18090, Duration::from_secs(3));
    let rule = stream.upsert().await;
    assert_eq!(report(rt, &other, rule, RuleEvent::Activated).await, None);
    assert_eq!(report(rt, &client, RuleId::new(9_999), RuleEvent::Activated).await, None);
    let failure = push.await.expect("push task").expect_err("no answer from its own client");
    assert_eq!(failure.failure.code, ErrorCode::AckTimeout);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(stored_state(&f.store, rule), Some(RuleState::Pending));
}

// ----- 3. the stream drops between send and ack -------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_stream_lost_after_the_send_leaves_the_rule_pending_and_replays_it() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;

    let started = Instant::now();
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
    let rule = stream.upsert().await;
    // The stream dies with the command queued: its task unregisters and drops the receiver.
    assert!(rt.sessions().unregister(&client, stream.reg.generation));
    drop(stream);
    assert!(rt.sessions().is_empty());

    let failure = push.await.expect("push task").expect_err("nobody answers");
    assert_eq!(failure.failure.code, ErrorCode::AckTimeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(stored_state(&f.store, rule), Some(RuleState::Pending));

    let mut again = connect(rt, &client).await;
    assert!(plan_ids(&again.plan().await).contains(&rule), "the Pending rule is replayed");
    assert_eq!(report(rt, &client, rule, RuleEvent::Activated).await, Some(RuleState::Active));
    assert_eq!(stored_state(&f.store, rule), Some(RuleState::Active));
    assert!(again.drain().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_receiver_dropped_after_the_send_times_out_and_the_next_stream_replays_the_rule() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(4));
    let rule = stream.upsert().await;
    // Only the receiver goes (the stream task died without cleaning up).
    let Stream { rx, reg } = stream;
    drop(rx);
    let failure = push.await.expect("push task").expect_err("nobody answers");
    assert_eq!(failure.failure.code, ErrorCode::AckTimeout);
    assert_eq!(stored_state(&f.store, rule), Some(RuleState::Pending));

    let mut again = connect(rt, &client).await;
    assert!(!rt.sessions().unregister(&client, reg.generation), "the dead stream was replaced");
    assert!(plan_ids(&again.plan().await).contains(&rule));
    assert_eq!(report(rt, &client, rule, RuleEvent::Activated).await, Some(RuleState::Active));
}

// ----- 4. not delivered -------------------------------------------------------------------

async fn assert_push_undone(f: &Fixture, rule: RuleId, failure: PushFailure) {
    assert_eq!(failure.failure.code, ErrorCode::ClientNotConnected);
    assert!(failure.rule.is_none(), "an undone push returns no rule");
    assert_eq!(stored_state(&f.store, rule), None);
    assert!(f.store.list_rules().expect("store read").is_empty());
    let records = audit(&f.runtime).await;
    let tail: Vec<(&str, Option<&str>, Outcome)> = records
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(|r| (r.action.as_str(), r.target.as_deref(), r.outcome))
        .collect();
    let push_target = format!("{CLIENT} rule {rule}");
    let undo_target = rule.to_string();
    assert_eq!(
        tail,
        vec![
            ("rule.push", Some(push_target.as_str()), Outcome::Success),
            ("rule.push_undone", Some(undo_target.as_str()), Outcome::Success),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_push_to_a_stream_whose_receiver_is_gone_is_undone() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let stream = connect(rt, &client).await;
    let Stream { rx, reg: _reg } = stream;
    drop(rx);
    let started = Instant::now();
    let failure =
        finished("the undone push", spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2)))
            .await
            .expect_err("not delivered");
    assert_eq!(started.elapsed(), Duration::ZERO, "an undelivered push does not wait for its ack");
    assert_push_undone(&f, RuleId::new(1), failure).await;
    // A late report about it changes nothing; the next plan does not carry it.
    assert_eq!(report(rt, &client, RuleId::new(1), RuleEvent::Activated).await, None);
    let mut again = connect(rt, &client).await;
    assert!(again.plan().await.rules.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_session_unregistered_between_begin_and_send_undoes_the_push() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;

    let (push, rule) = push_stopped_before_send(&f, 18080).await;
    assert_eq!(rule.state, RuleState::Pending);
    assert!(rt.sessions().unregister(&client, stream.reg.generation));

    let failure = finished("the undone push", push).await.expect_err("not delivered");
    assert_push_undone(&f, rule.id, failure).await;
    assert!(stream.drain().is_empty(), "nothing reached the unregistered stream");
}

// ----- 5. a reconnect replaces the stream -------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_second_stream_replaces_the_first_and_a_late_cleanup_keeps_it() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut first = connect(rt, &client).await;
    let mut second = connect(rt, &client).await;
    assert_ne!(first.reg.generation, second.reg.generation);

    first.plan().await;
    assert!(matches!(first.next().await, Outbound::End(EndReason::Replaced)));
    assert!(first.drain().is_empty());
    let stopped = tokio::select! {
        biased;
        () = first.reg.stop.notified() => true,
        () = std::future::ready(()) => false,
    };
    assert!(stopped, "the replaced stream's task is told to stop");

    // The old stream's task cleans up late: the new session stays.
    assert!(!rt.sessions().unregister(&client, first.reg.generation));
    assert_eq!(rt.sessions().len(), 1);
    assert!(rt.sessions().session(&client).is_some());

    // Pushes go to the new stream only.
    second.plan().await;
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
    let rule = second.upsert().await;
    report(rt, &client, rule, RuleEvent::Activated).await;
    assert_eq!(finished("the push", push).await.expect("active").state, RuleState::Active);
    assert!(first.drain().is_empty());

    assert!(rt.sessions().unregister(&client, second.reg.generation));
    assert!(rt.sessions().is_empty());
    assert!(!rt.sessions().unregister(&client, second.reg.generation), "only once");
}

// ----- 6. group commit --------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_mutations_share_commits_and_each_has_one_audit_row() {
    let hasher = Arc::new(CountingHasher::default());
    let counter = Arc::new(CommitCounter::default());
    let f = fixture_with(hasher.clone(), Some(counter.clone()));
    let rt = &f.runtime;

    // Hold the store so the writer cannot commit while the mutations queue up.
    let hold = StoreHold::take(&f.store);
    let calls: Vec<JoinHandle<Result<User, Failure>>> = (0..50)
        .map(|i| {
            let rt = rt.clone();
            tokio::task::spawn_blocking(move || {
                let new = NewUser {
                    id: format!("user-{i:02}"),
                    role: Role::User,
                    password: Some("correct horse battery staple".into()),
                };
                rt.create_user(&Actor::operator(), &new)
            })
        })
        .collect();
    settle("every create_user hashed", || (hasher.calls.load(Ordering::SeqCst) == 50).then_some(())).await;
    // Each call submits right after hashing; give the last ones a moment to be queued.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(counter.commits.load(Ordering::SeqCst), 0, "nothing commits while the store is held");
    hold.release();

    let mut ids = BTreeSet::new();
    for call in calls {
        let user = call.await.expect("the blocking call did not panic").expect("created");
        assert!(ids.insert(user.id.to_string()));
    }
    assert_eq!(ids.len(), 50);
    let commits = counter.commits.load(Ordering::SeqCst);
    assert!(commits <= 5, "50 queued mutations took {commits} transactions");

    let records = audit(rt).await;
    for id in &ids {
        let rows: Vec<_> =
            records.iter().filter(|r| r.action == "user.create" && r.target.as_deref() == Some(id)).collect();
        assert_eq!(rows.len(), 1, "one audit row for {id}");
        assert_eq!(rows[0].outcome, Outcome::Success);
    }
    assert_eq!(records.len(), 50);
    let seqs: BTreeSet<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), 50, "every row has its own sequence number");
}

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_pushes_get_distinct_rule_ids_and_all_activate() {
    let f = fixture();
    let rt = &f.runtime;
    let op = Actor::operator();
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;

    let started = Instant::now();
    let pushes: Vec<_> = (0..50).map(|i| spawn_push(rt, &op, 20_000 + i, Duration::from_secs(30))).collect();
    let mut sent = Vec::new();
    while sent.len() < 50 {
        sent.push(stream.upsert().await);
    }
    let distinct: BTreeSet<RuleId> = sent.iter().copied().collect();
    assert_eq!(distinct.len(), 50, "every push got its own rule id: {sent:?}");

    let answers: Vec<_> = sent
        .iter()
        .map(|rule| {
            let (rt, client, rule) = (rt.clone(), client.clone(), *rule);
            tokio::spawn(async move { rt.rule_outcome(&client, rule, RuleEvent::Activated).await })
        })
        .collect();
    for answer in answers {
        assert_eq!(finished("an outcome", answer).await.expect("committed"), Some(RuleState::Active));
    }
    let mut answered = BTreeSet::new();
    for push in pushes {
        let rule = finished("a push", push).await.expect("active");
        assert_eq!(rule.state, RuleState::Active);
        assert!(answered.insert(rule.id));
    }
    assert_eq!(answered, distinct);
    assert_eq!(started.elapsed(), Duration::ZERO, "no push waited for a timeout");

    let stored = f.store.list_rules().expect("store read");
    assert_eq!(stored.len(), 50);
    assert!(stored.iter().all(|r| r.state == RuleState::Active));
    let ports: BTreeSet<u16> = stored.iter().map(|r| r.def.listen.start()).collect();
    assert_eq!(ports.len(), 50);
    let pushes_audited = audit(rt)
        .await
        .into_iter()
        .filter(|r| r.action == "rule.push" && r.outcome == Outcome::Success)
        .count();
    assert_eq!(pushes_audited, 50);
}

// ----- 7. every mutation is audited -------------------------------------------------------

/// Checks that the trail grew by exactly one row since `before`, for `action` with `code`.
async fn one_new_row(rt: &Runtime, before: &mut usize, action: &str, code: Option<ErrorCode>) {
    let records = audit(rt).await;
    let new = &records[*before..];
    assert_eq!(new.len(), 1, "one audit row for {action}, got {new:?}");
    let row = &new[0];
    assert_eq!(row.action, action);
    assert_eq!(row.code.as_deref(), code.map(ErrorCode::as_str), "{row:?}");
    let outcome = match code {
        None => Outcome::Success,
        Some(code) if portunus_core::audit::is_denial(code) => Outcome::Denied,
        Some(_) => Outcome::Failed,
    };
    assert_eq!(row.outcome, outcome, "{row:?}");
    *before = records.len();
}

async fn no_new_row(rt: &Runtime, before: usize) {
    assert_eq!(audit(rt).await.len(), before, "a successful read is not audited");
}

#[tokio::test(start_paused = true)]
async fn every_mutation_and_refusal_leaves_exactly_one_audit_row() {
    let f = fixture();
    let rt = &f.runtime;
    let op = Actor::operator();
    let client = enrolled(rt, CLIENT).await;
    let mut n = audit(rt).await.len();
    assert_eq!(n, 2, "client.enroll and client.redeem");
    let mut stream = connect(rt, &client).await;
    stream.plan().await;
    no_new_row(rt, n).await;

    let new_alice = NewUser { id: "alice".into(), role: Role::User, password: None };
    let (r, new) = (rt.clone(), new_alice.clone());
    let alice = off_thread(move || r.create_user(&Actor::operator(), &new)).await.expect("alice");
    one_new_row(rt, &mut n, "user.create", None).await;
    let alice = Actor::for_user(&alice, Credential::ApiToken, None);

    let (r, new) = (rt.clone(), new_alice.clone());
    let again = off_thread(move || r.create_user(&Actor::operator(), &new)).await.expect_err("exists");
    assert_eq!(again.code, ErrorCode::UserExists);
    one_new_row(rt, &mut n, "user.create", Some(ErrorCode::UserExists)).await;

    let denied = finished("a push without a grant", spawn_push(rt, &alice, 18050, Duration::from_secs(2)))
        .await
        .expect_err("no grant");
    assert_eq!(denied.failure.code, ErrorCode::ClientNotGranted);
    one_new_row(rt, &mut n, "rule.push", Some(ErrorCode::ClientNotGranted)).await;
    assert!(stream.drain().is_empty() && f.store.list_rules().expect("store read").is_empty());

    let r = rt.clone();
    off_thread(move || {
        r.create_grant(
            &Actor::operator(),
            &NewGrant {
                user: "alice".into(),
                client: CLIENT.into(),
                ports: "18000-18100".into(),
                protocols: vec![Protocol::Tcp],
            },
        )
    })
    .await
    .expect("grant");
    one_new_row(rt, &mut n, "grant.create", None).await;

    let push = spawn_push(rt, &alice, 18050, Duration::from_secs(2));
    let alices = stream.upsert().await;
    report(rt, &client, alices, RuleEvent::Activated).await;
    assert_eq!(finished("alice's push", push).await.expect("active").owner.as_str(), "alice");
    one_new_row(rt, &mut n, "rule.push", None).await;

    let outside = finished("a push outside the grant", spawn_push(rt, &alice, 19000, Duration::from_secs(2)))
        .await
        .expect_err("outside the grant");
    assert_eq!(outside.failure.code, ErrorCode::PortOutsideGrant);
    one_new_row(rt, &mut n, "rule.push", Some(ErrorCode::PortOutsideGrant)).await;

    let clash = finished("a clashing push", spawn_push(rt, &alice, 18050, Duration::from_secs(2)))
        .await
        .expect_err("port clash");
    assert_eq!(clash.failure.code, ErrorCode::PortInUse);
    one_new_row(rt, &mut n, "rule.push", Some(ErrorCode::PortInUse)).await;
    let clashed = clash.rule.expect("stored Failed").id;

    let push = spawn_push(rt, &op, 18060, Duration::from_secs(2));
    let operators = stream.upsert().await;
    report(rt, &client, operators, RuleEvent::Activated).await;
    finished("the operator's push", push).await.expect("active");
    one_new_row(rt, &mut n, "rule.push", None).await;

    let (r, a) = (rt.clone(), alice.clone());
    let not_hers = off_thread(move || r.remove_rule(&a, operators)).await.expect_err("not hers");
    assert_eq!(not_hers.code, ErrorCode::NotOwner);
    one_new_row(rt, &mut n, "rule.remove", Some(ErrorCode::NotOwner)).await;
    assert!(stream.drain().is_empty(), "a refused removal tells the client nothing");

    let (r, a) = (rt.clone(), alice.clone());
    let listed = off_thread(move || r.list_rules(&a, &RuleFilter::default())).await.expect("her rules");
    assert_eq!(listed.len(), 2, "her Active rule and her Failed one");
    no_new_row(rt, n).await;
    let (r, a) = (rt.clone(), alice.clone());
    let filter = RuleFilter { owner: Some("_operator".into()), ..RuleFilter::default() };
    let refused = off_thread(move || r.list_rules(&a, &filter)).await.expect_err("not hers");
    assert_eq!(refused.code, ErrorCode::NotOwner);
    one_new_row(rt, &mut n, "rule.list", Some(ErrorCode::NotOwner)).await;

    let r = rt.clone();
    off_thread(move || r.remove_rule(&Actor::operator(), alices)).await.expect("removed");
    one_new_row(rt, &mut n, "rule.remove", None).await;
    assert!(matches!(
        stream.drain().as_slice(),
        [Outbound::Command(ClientCommand::Remove { rule })] if *rule == alices
    ));
    let r = rt.clone();
    off_thread(move || r.remove_rule(&Actor::operator(), clashed)).await.expect("removed");
    one_new_row(rt, &mut n, "rule.remove", None).await;
    assert!(matches!(
        stream.drain().as_slice(),
        [Outbound::Command(ClientCommand::Remove { rule })] if *rule == clashed
    ));
    let r = rt.clone();
    let gone = off_thread(move || r.remove_rule(&Actor::operator(), alices)).await.expect_err("gone");
    assert_eq!(gone.code, ErrorCode::RuleNotFound);
    one_new_row(rt, &mut n, "rule.remove", Some(ErrorCode::RuleNotFound)).await;

    let (r, a) = (rt.clone(), alice.clone());
    let not_admin = off_thread(move || r.enroll_client(&a, "edge-09", None)).await.expect_err("not admin");
    assert_eq!(not_admin.code, ErrorCode::NotOwner);
    one_new_row(rt, &mut n, "client.enroll", Some(ErrorCode::NotOwner)).await;
    let r = rt.clone();
    let bad_name = off_thread(move || r.enroll_client(&Actor::operator(), "Not A Name!", None))
        .await
        .expect_err("invalid name");
    one_new_row(rt, &mut n, "client.enroll", Some(bad_name.code)).await;

    let r = rt.clone();
    off_thread(move || r.revoke(&Actor::operator(), CLIENT)).await.expect("revoked");
    one_new_row(rt, &mut n, "client.revoke", None).await;
    assert!(matches!(stream.drain().as_slice(), [Outbound::End(EndReason::Disconnected(_))]));
    let revoked = finished("a push to a revoked client", spawn_push(rt, &op, 18070, Duration::from_secs(2)))
        .await
        .expect_err("revoked");
    assert_eq!(revoked.failure.code, ErrorCode::ClientRevoked);
    one_new_row(rt, &mut n, "rule.push", Some(ErrorCode::ClientRevoked)).await;
}

// ----- races found while writing these tests (ignored until fixed) -------------------------

#[tokio::test(start_paused = true)]
#[ignore = "bug: a push committed after a reconnect's plan was read is sent to the old stream and never reaches the new one"]
async fn a_push_between_plan_and_registration_reaches_the_new_stream() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut old = connect(rt, &client).await;
    old.plan().await;

    // The client reconnects: its plan is read while the old stream is still registered.
    let plan = frozen(rt.session_opened(&client, "test")).await.expect("plan");
    // A push lands in that window: it commits after the plan was read and is sent while the
    // old stream is the registered one (today it is queued there).
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
    let rule = settle("the push's rule", || rule_on_port(&f.store, 18080)).await.id;
    let_tasks_run().await;
    let on_old = old.drain();
    // The new stream registers (replacing the old one).
    let mut new = queue_and_register(rt, &client, plan);
    let replayed = plan_ids(&new.plan().await);
    let_tasks_run().await;
    let later: Vec<RuleId> = new
        .drain()
        .into_iter()
        .filter_map(|item| match item {
            Outbound::Command(ClientCommand::Upsert { rule, .. }) => Some(rule),
            _ => None,
        })
        .collect();
    assert!(
        replayed.contains(&rule) || later.contains(&rule),
        "the live stream never gets rule {rule}: not in its plan {replayed:?}, no Upsert after it \
         (the replaced stream got {on_old:?})"
    );
    drop(push);
}

#[tokio::test(start_paused = true)]
#[ignore = "bug: a rule removed after a reconnect's plan was read stays in the new stream's plan with no Remove after it"]
async fn a_removal_between_plan_and_registration_reaches_the_new_stream() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut old = connect(rt, &client).await;
    old.plan().await;
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
    let rule = old.upsert().await;
    report(rt, &client, rule, RuleEvent::Activated).await;
    finished("the push", push).await.expect("active");

    let plan = frozen(rt.session_opened(&client, "test")).await.expect("plan");
    let r = rt.clone();
    off_thread(move || r.remove_rule(&Actor::operator(), rule)).await.expect("removed");
    assert_eq!(stored_state(&f.store, rule), None);
    let mut new = queue_and_register(rt, &client, plan);
    let replayed = plan_ids(&new.plan().await);
    let_tasks_run().await;
    let removed_later = new
        .drain()
        .iter()
        .any(|item| matches!(item, Outbound::Command(ClientCommand::Remove { rule: r }) if *r == rule));
    assert!(
        !replayed.contains(&rule) || removed_later,
        "the live stream keeps running deleted rule {rule}: in its plan {replayed:?}, no Remove after it"
    );
}

#[tokio::test(start_paused = true)]
#[ignore = "bug: a push's Upsert is queued after a Remove of the same rule committed later, so the client binds a deleted rule"]
async fn a_removal_committed_before_the_push_sends_is_not_overtaken_by_its_upsert() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;

    // The push's begin_push commits, but its task has not run again yet: meanwhile another
    // thread removes the rule, and that removal's Remove is queued.
    let (push, rule) = push_stopped_before_send(&f, 18080).await;
    let rule = rule.id;
    let r = rt.clone();
    std::thread::spawn(move || r.remove_rule(&Actor::operator(), rule))
        .join()
        .expect("remover thread")
        .expect("removed");
    assert_eq!(stored_state(&f.store, rule), None);
    // Now the push task runs and sends.
    let_tasks_run().await;
    let items = stream.drain();
    let last = items.iter().rev().find_map(|item| match item {
        Outbound::Command(ClientCommand::Upsert { rule: r, .. }) if *r == rule => Some("upsert"),
        Outbound::Command(ClientCommand::Remove { rule: r }) if *r == rule => Some("remove"),
        _ => None,
    });
    drop(push);
    assert_eq!(
        last,
        Some("remove"),
        "the client's last word on deleted rule {rule} must be Remove: {items:?}"
    );
}

#[tokio::test(start_paused = true)]
#[ignore = "bug: session_opened does not re-check the client, so a revoke between authentication and registration leaves a revoked client connected"]
async fn a_client_revoked_between_authentication_and_registration_is_not_connected() {
    let f = fixture();
    let rt = &f.runtime;
    let (issuer, name) = (rt.clone(), CLIENT.to_owned());
    let ticket =
        off_thread(move || issuer.enroll_client(&Actor::operator(), &name, None)).await.expect("enroll");
    let redeemed = frozen(rt.redeem(ticket.uri.code)).await.expect("redeem");
    let client = rt.authenticate_client(redeemed.token.expose()).expect("a valid token").id;

    // The stream waits for Hello; meanwhile the operator revokes the client. Its Disconnect
    // finds no stream to end.
    let r = rt.clone();
    off_thread(move || r.revoke(&Actor::operator(), CLIENT)).await.expect("revoked");
    assert!(rt.sessions().is_empty());

    match frozen(rt.session_opened(&client, "test")).await {
        Err(failure) => assert_eq!(failure.code, ErrorCode::TokenRevoked),
        Ok(plan) => {
            let _stream = queue_and_register(rt, &client, plan);
            assert!(
                rt.sessions().session(&client).is_none(),
                "revoked client {client} has a live session (and its plan replayed)"
            );
        }
    }
}
