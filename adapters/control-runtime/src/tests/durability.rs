//! Deferred commits: a client's outcome for a rule is committed without waiting for the disk,
//! visible at once, and made durable by the next durable commit or by the writer's own sync
//! at most `deferred_sync` later; a group with any durable mutation in it commits durably.

use std::sync::Mutex;

use portunus_core::ports::{RuleIds, StoreError, StoreTx};

use super::*;

/// How the writer asked the store to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Durable,
    Deferred,
    Sync,
}

/// A store port over a `MemoryStore` that records each commit's durability.
struct Recording {
    inner: Arc<MemoryStore>,
    calls: Mutex<Vec<Call>>,
}

impl Recording {
    fn new(inner: Arc<MemoryStore>) -> Arc<Recording> {
        Arc::new(Recording { inner, calls: Mutex::new(Vec::new()) })
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("log").clone()
    }
    fn log(&self, call: Call) {
        self.calls.lock().expect("log").push(call);
    }
}

portunus_core::delegate_read_ports!(Recording, |r: &Recording| Ok::<_, StoreError>(r.inner.clone()));

impl RuleIds for Recording {
    fn next_rule_id(&self) -> Result<RuleId, StoreError> {
        self.inner.next_rule_id()
    }
}

impl Store for Recording {
    fn transact(
        &self,
        work: &mut dyn FnMut(&dyn StoreTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.log(Call::Durable);
        self.inner.transact(work)
    }
    fn transact_deferred(
        &self,
        work: &mut dyn FnMut(&dyn StoreTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.log(Call::Deferred);
        self.inner.transact(work)
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.log(Call::Sync);
        Ok(())
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

#[tokio::test(start_paused = true)]
async fn an_outcome_commits_deferred_is_visible_at_once_and_is_synced_by_the_writer() {
    let (f, recording) = recording_fixture(Duration::from_millis(20));
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
    let rule = stream.upsert().await;
    let before_outcome = recording.calls();
    assert!(
        before_outcome.iter().all(|c| *c == Call::Durable),
        "operator mutations are durable: {before_outcome:?}"
    );

    assert_eq!(report(rt, &client.id, rule, RuleEvent::Activated).await, Some(RuleState::Active));
    let pushed = finished("the push", push).await.expect("activated");
    assert_eq!(pushed.state, RuleState::Active);
    // Committed and visible before any sync: the push answered Active from it.
    assert_eq!(stored_state(&f.store, rule), Some(RuleState::Active));
    let calls = recording.calls();
    assert_eq!(calls[before_outcome.len()..], [Call::Deferred], "the outcome is one deferred commit");

    // Nothing else comes along, so the writer syncs on its own.
    let synced = hold_thread_until("the writer's sync", || {
        let calls = recording.calls();
        calls[before_outcome.len()..].contains(&Call::Sync).then_some(calls)
    });
    assert_eq!(synced[before_outcome.len()..], [Call::Deferred, Call::Sync]);
    // Once synced, an idle writer does not sync again.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(recording.calls(), synced, "no sync without a deferred commit");
}

#[tokio::test(start_paused = true)]
async fn a_group_with_a_durable_mutation_in_it_commits_durably_and_needs_no_sync() {
    // A sync window far longer than the test: only a durable commit can make the outcome durable.
    let (f, recording) = recording_fixture(Duration::from_secs(3600));
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
    let rule = stream.upsert().await;

    // The outcome and a durable mutation (the shutdown sync, an empty one) queue up behind
    // the gate and share the next commit.
    let gate = WriterGate::close(rt);
    let n_before = recording.calls().len();
    let mut outcome = Box::pin(rt.rule_outcome(&client.id, rule, RuleEvent::Activated));
    queue("the outcome", &mut outcome).await;
    let mut durable = Box::pin(rt.sync());
    queue("the durable mutation", &mut durable).await;
    gate.open();
    assert_eq!(frozen(outcome).await.expect("committed"), Some(RuleState::Active));
    frozen(durable).await.expect("committed");
    finished("the push", push).await.expect("activated");

    let calls = recording.calls();
    assert_eq!(calls[n_before..], [Call::Durable], "one shared durable commit, no deferred one, no sync");
}
