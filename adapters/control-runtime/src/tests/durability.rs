//! Write-behind outcomes: a client's outcome for a rule is answered without a commit of its
//! own, visible at once through the runtime, and reaches the store with the next transaction:
//! an operator's mutation, or the writer's own commit at most `deferred_sync` later.

use std::sync::Mutex;

use portunus_core::ports::{RuleIds, StoreError, StoreTx};

use super::*;

/// A store port over a `MemoryStore` that records how many writes each transaction applied.
struct Recording {
    inner: Arc<MemoryStore>,
    transactions: Mutex<Vec<usize>>,
}

impl Recording {
    fn new(inner: Arc<MemoryStore>) -> Arc<Recording> {
        Arc::new(Recording { inner, transactions: Mutex::new(Vec::new()) })
    }
    /// Writes applied by each transaction so far, in order.
    fn transactions(&self) -> Vec<usize> {
        self.transactions.lock().expect("log").clone()
    }
}

portunus_core::delegate_read_ports!(Recording, |r: &Recording| Ok::<_, StoreError>(r.inner.clone()));

impl RuleIds for Recording {
    fn next_rule_id(&self) -> Result<RuleId, StoreError> {
        self.inner.next_rule_id()
    }
}

/// Counts the writes a transaction applies on their way to the inner one.
struct Counting<'a> {
    tx: &'a dyn StoreTx,
    applied: &'a AtomicUsize,
}

impl Counting<'_> {
    fn view(&self) -> Result<&dyn StoreTx, StoreError> {
        Ok(self.tx)
    }
}

portunus_core::delegate_read_ports!(Counting<'_>, Counting::view);

impl RuleIds for Counting<'_> {
    fn next_rule_id(&self) -> Result<RuleId, StoreError> {
        self.tx.next_rule_id()
    }
}

impl StoreTx for Counting<'_> {
    fn apply(&self, writes: Vec<portunus_core::ports::Write>) -> Result<(), StoreError> {
        self.applied.fetch_add(writes.len(), Ordering::SeqCst);
        self.tx.apply(writes)
    }
}

impl Store for Recording {
    fn transact(
        &self,
        work: &mut dyn FnMut(&dyn StoreTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Logged as the work ends, before the inner store publishes it, so a reader that saw
        // the commit in the store also finds it in the log. (A memory transaction whose work
        // succeeded always commits.)
        self.inner.transact(&mut |tx| {
            let applied = AtomicUsize::new(0);
            work(&Counting { tx, applied: &applied })?;
            self.transactions.lock().expect("log").push(applied.load(Ordering::SeqCst));
            Ok(())
        })
    }
}

fn recording_fixture(deferred_sync: Duration) -> (Fixture, Arc<Recording>) {
    let store = Arc::new(MemoryStore::default());
    let recording = Recording::new(store.clone());
    let mut settings = ServerSettings::resolve(Default::default()).expect("default settings");
    settings.control.deferred_sync = deferred_sync;
    let f = fixture_over(store, recording.clone(), settings, Arc::new(FakeHasher), None);
    (f, recording)
}

/// The rule's state in the store itself.
fn in_store(store: &MemoryStore, rule: RuleId) -> Option<RuleState> {
    store.get_rule(rule).expect("store read").map(|r| r.state)
}

/// A push whose Upsert reached the client's stream and which waits for the outcome.
struct Waiting {
    client: Enrolled,
    /// Kept open: the push's stream.
    stream: Stream,
    push: JoinHandle<Result<Rule, PushFailure>>,
    rule: RuleId,
}

/// Returns once the push's own transaction is in `store` (and in the log): its Upsert is
/// sent before its commit, so the stream alone does not say the commit happened.
async fn waiting_push(rt: &Runtime, store: &MemoryStore) -> Waiting {
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
    let rule = stream.upsert().await;
    hold_thread_until("the push's commit", || in_store(store, rule).map(|_| ()));
    Waiting { client, stream, push, rule }
}

async fn listed_state(rt: &Runtime, rule: RuleId) -> RuleState {
    let rt = rt.clone();
    off_thread(move || rt.get_rule(&Actor::operator(), rule)).await.expect("listed").rule.state
}

#[tokio::test(start_paused = true)]
async fn an_outcome_is_answered_without_a_commit_and_reaches_the_store_within_the_sync_window() {
    let (f, recording) = recording_fixture(Duration::from_millis(20));
    let rt = &f.runtime;
    let Waiting { client, stream: _stream, push, rule } = waiting_push(rt, &f.store).await;
    let before_outcome = recording.transactions().len();

    assert_eq!(report(rt, &client.id, rule, RuleEvent::Activated).await, Some(RuleState::Active));
    let pushed = finished("the push", push).await.expect("activated");
    assert_eq!(pushed.state, RuleState::Active);
    // Visible through the runtime at once; the store has not seen it yet.
    assert_eq!(listed_state(rt, rule).await, RuleState::Active);
    let after_outcome = recording.transactions();
    if after_outcome.len() == before_outcome {
        assert_eq!(in_store(&f.store, rule), Some(RuleState::Pending), "not in the store before its commit");
    }

    // Nothing else comes along, so the writer commits it on its own: one transaction, one write.
    let committed = hold_thread_until("the writer's own commit", || {
        let all = recording.transactions();
        (all.len() > before_outcome).then_some(all)
    });
    assert_eq!(committed[before_outcome..], [1], "the kept outcome, alone");
    assert_eq!(in_store(&f.store, rule), Some(RuleState::Active));
    // Nothing kept, nothing more to commit.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(recording.transactions(), committed, "an idle writer commits nothing");
}

#[tokio::test(start_paused = true)]
async fn a_kept_outcome_rides_with_the_next_operator_mutation() {
    // A window far longer than the test: only the next transaction can carry the outcome.
    let (f, recording) = recording_fixture(Duration::from_secs(3600));
    let rt = &f.runtime;
    let Waiting { client, stream: _stream, push, rule } = waiting_push(rt, &f.store).await;
    report(rt, &client.id, rule, RuleEvent::Activated).await;
    finished("the push", push).await.expect("activated");
    let before = recording.transactions().len();
    assert_eq!(in_store(&f.store, rule), Some(RuleState::Pending));

    // The shutdown sync is an empty mutation: its transaction applies the kept outcome.
    frozen(rt.sync()).await.expect("synced");
    assert_eq!(recording.transactions()[before..], [1], "one transaction carrying the outcome");
    assert_eq!(in_store(&f.store, rule), Some(RuleState::Active));
}

#[tokio::test(start_paused = true)]
async fn an_outcome_queued_behind_a_mutation_sees_that_mutation_committed() {
    let (f, _recording) = recording_fixture(Duration::from_secs(3600));
    let rt = &f.runtime;
    let Waiting { client, stream: _stream, push, rule } = waiting_push(rt, &f.store).await;

    // Behind the gate: a removal of the rule, then the client's outcome for it. The outcome
    // must be decided after the removal committed, so it finds no rule and changes nothing.
    let gate = WriterGate::close(rt);
    let mut remove =
        Box::pin(rt.mutate_async(move |s, cx| s.rules.remove_rule(cx, &Actor::operator(), rule)));
    queue("the removal", &mut remove).await;
    let mut outcome = Box::pin(rt.rule_outcome(&client.id, rule, RuleEvent::Activated));
    queue("the outcome", &mut outcome).await;
    gate.open();
    frozen(remove).await.expect("committed").expect("removed");
    assert_eq!(frozen(outcome).await.expect("answered"), None, "the outcome found the rule gone");
    assert!(finished("the push", push).await.is_err());
    assert_eq!(in_store(&f.store, rule), None);
}

#[tokio::test(start_paused = true)]
async fn an_outcome_queued_behind_a_mutation_joins_its_transaction() {
    let (f, recording) = recording_fixture(Duration::from_secs(3600));
    let rt = &f.runtime;
    let Waiting { client, stream: _stream, push, rule } = waiting_push(rt, &f.store).await;

    let gate = WriterGate::close(rt);
    let before = recording.transactions().len();
    let mut durable = Box::pin(rt.sync());
    queue("a durable mutation", &mut durable).await;
    let mut outcome = Box::pin(rt.rule_outcome(&client.id, rule, RuleEvent::Activated));
    queue("the outcome", &mut outcome).await;
    gate.open();
    frozen(durable).await.expect("committed");
    assert_eq!(frozen(outcome).await.expect("committed"), Some(RuleState::Active));
    finished("the push", push).await.expect("activated");
    // The gate's own (empty) transaction, then one for both: the empty mutation and the
    // outcome's one write, durable at once.
    assert_eq!(recording.transactions()[before..], [0, 1]);
    assert_eq!(in_store(&f.store, rule), Some(RuleState::Active));
}
