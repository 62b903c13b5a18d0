//! Crash consistency: a file-backed redb backend that starts failing every write, resize and
//! sync after a chosen number of calls, as a process does when the disk goes away mid-commit.
//! After each injected failure the file is reopened with the normal backend and must hold
//! every acknowledged commit, and the failed batch either whole or not at all.
//!
//! Invariant: the fault point sweeps every mutating call of the batch's commit (found by a
//! fault-free probe run), including the point just past it, where the commit succeeds and
//! only the close fails.

use std::fs::OpenOptions;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portunus_core::ids::{ClientName, RuleId};
use portunus_core::ports::{RuleIds, Store, StoreError, Write};
use portunus_core::test_support::MemoryStore;
use portunus_store_redb::RedbStore;
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use crate::support::{Snapshot, client, enrollment, rule, store_path, temp_dir, totals};

/// Counts mutating calls and fails every one from `fail_from` on.
#[derive(Debug)]
struct FaultPlan {
    n_calls: AtomicU64,
    fail_from: AtomicU64,
}

impl FaultPlan {
    fn new() -> Arc<Self> {
        Arc::new(FaultPlan { n_calls: AtomicU64::new(0), fail_from: AtomicU64::new(u64::MAX) })
    }
    fn n_calls(&self) -> u64 {
        self.n_calls.load(Ordering::SeqCst)
    }
    /// Lets `n_ok` more mutating calls through, then fails every later one.
    fn fail_after(&self, n_ok: u64) {
        self.fail_from.store(self.n_calls() + n_ok, Ordering::SeqCst);
    }
    fn mutation(&self) -> std::io::Result<()> {
        let call = self.n_calls.fetch_add(1, Ordering::SeqCst);
        if call >= self.fail_from.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected fault"));
        }
        Ok(())
    }
}

/// redb's own file backend behind a [`FaultPlan`]. Reads and locks always pass through.
#[derive(Debug)]
struct FaultyBackend {
    inner: FileBackend,
    plan: Arc<FaultPlan>,
}

impl FaultyBackend {
    fn open(path: &std::path::Path, plan: Arc<FaultPlan>) -> Self {
        let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
        FaultyBackend { inner: FileBackend::new(file).unwrap(), plan }
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.plan.mutation()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.plan.mutation()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.plan.mutation()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

const NAMES: [&str; 4] = ["edge-01", "edge-02", "edge-03", "renamed-01"];
const CODES: [&str; 3] = ["code-1", "code-2", "code-3"];
/// Enough rules in the failing batch to span many pages, so the sweep has points to hit.
const N_BATCH_RULES: u64 = 40;

/// The history: batches acknowledged before the fault, and the batch that meets it. Rule ids
/// are fixed so a reference `MemoryStore` can replay the same batches.
struct History {
    /// Committed and closed through a normal handle.
    closed: Vec<Write>,
    /// Committed through the faulty handle before it is armed.
    acknowledged: Vec<Write>,
    /// Committed after arming.
    failing: Vec<Write>,
    /// Rule ids handed out before arming (the sequence is advanced to the last one).
    last_acknowledged_id: RuleId,
}

fn history() -> History {
    let (a, b, c) = (client(1, NAMES[0]), client(2, NAMES[1]), client(3, NAMES[2]));
    let id = RuleId::new;
    let closed = vec![
        Write::PutClient(a.clone()),
        Write::PutClient(b.clone()),
        Write::PutRule(rule(id(1), &a.id, 18001)),
        Write::PutRule(rule(id(2), &b.id, 18002)),
        Write::PutTotals(id(1), totals(1_000)),
        Write::PutTotals(id(2), totals(2_000)),
        Write::PutEnrollment(enrollment(CODES[0], &a.id)),
    ];
    let acknowledged = vec![
        Write::PutClient(c.clone()),
        Write::PutRule(rule(id(3), &c.id, 18003)),
        Write::PutEnrollment(enrollment(CODES[1], &c.id)),
    ];
    let mut renamed = a.clone();
    renamed.name = ClientName::parse(NAMES[3]).unwrap();
    let mut failing = vec![
        Write::PutClient(renamed),
        Write::DeleteRule(id(2)),
        Write::PutTotals(id(1), totals(5_000)),
        Write::PutEnrollment(enrollment(CODES[2], &b.id)),
    ];
    for n in 0..N_BATCH_RULES {
        let rule_id = id(4 + n);
        failing.push(Write::PutRule(rule(rule_id, &b.id, 20_000 + n as i64)));
        failing.push(Write::PutTotals(rule_id, totals(n)));
    }
    History { closed, acknowledged, failing, last_acknowledged_id: id(3 + N_BATCH_RULES) }
}

/// Snapshots of the reference store before and after the failing batch.
fn expected(history: &History) -> (Snapshot, Snapshot) {
    let reference = MemoryStore::default();
    reference.commit(history.closed.clone()).unwrap();
    reference.commit(history.acknowledged.clone()).unwrap();
    let before = Snapshot::of(&reference, &NAMES, &CODES);
    reference.commit(history.failing.clone()).unwrap();
    (before, Snapshot::of(&reference, &NAMES, &CODES))
}

/// Replays the history into a new file, arming the fault `fail_after` mutating calls before
/// the failing batch's commit (never, for `None`). Returns the commit's outcome and the number
/// of mutating calls the commit made.
fn run(path: &std::path::Path, history: &History, fail_after: Option<u64>) -> (Result<(), StoreError>, u64) {
    let store = RedbStore::open(path).unwrap();
    store.commit(history.closed.clone()).unwrap();
    store.close().unwrap();

    let plan = FaultPlan::new();
    let store = RedbStore::with_backend(FaultyBackend::open(path, plan.clone())).unwrap();
    store.commit(history.acknowledged.clone()).unwrap();
    while store.next_rule_id().unwrap() < history.last_acknowledged_id {}
    if let Some(n_ok) = fail_after {
        plan.fail_after(n_ok);
    }
    let calls_before = plan.n_calls();
    let outcome = store.commit(history.failing.clone());
    let n_calls = plan.n_calls() - calls_before;
    // Dropping closes the file; with the fault armed the close fails too, as a crash would.
    drop(store);
    (outcome, n_calls)
}

#[test]
fn a_failed_commit_leaves_all_or_nothing_and_keeps_acknowledged_commits() {
    let history = history();
    let (before, after) = expected(&history);
    assert_ne!(before, after);

    let probe_dir = temp_dir();
    let (outcome, n_commit_calls) = run(&store_path(&probe_dir), &history, None);
    outcome.unwrap();
    assert!(n_commit_calls >= 2, "the commit made only {n_commit_calls} mutating calls");

    let (mut n_applied, mut n_dropped) = (0, 0);
    for n_ok in 0..=n_commit_calls {
        let dir = temp_dir();
        let path = store_path(&dir);
        let (outcome, _) = run(&path, &history, Some(n_ok));

        let store = RedbStore::open(&path).unwrap_or_else(|err| panic!("fault after {n_ok} calls: {err:?}"));
        let seen = Snapshot::of(&store, &NAMES, &CODES);
        if outcome.is_ok() || seen == after {
            assert_eq!(seen, after, "fault after {n_ok} calls: acknowledged batch lost or partial");
            n_applied += 1;
        } else {
            assert_eq!(seen, before, "fault after {n_ok} calls: batch partly applied or history lost");
            n_dropped += 1;
        }
        // No id handed out before the fault is handed out again.
        assert!(store.next_rule_id().unwrap() > history.last_acknowledged_id, "fault after {n_ok} calls");
    }
    // The sweep must have hit both sides of the commit point.
    assert!(n_dropped > 0 && n_applied > 0, "dropped {n_dropped}, applied {n_applied}");
}

#[test]
fn a_failed_sequence_step_never_reissues_an_acknowledged_id() {
    let dir = temp_dir();
    let path = store_path(&dir);
    RedbStore::open(&path).unwrap().close().unwrap();
    for n_ok in 0..8 {
        let plan = FaultPlan::new();
        let store = RedbStore::with_backend(FaultyBackend::open(&path, plan.clone())).unwrap();
        let mut acknowledged = store.next_rule_id().unwrap();
        plan.fail_after(n_ok);
        if let Ok(id) = store.next_rule_id() {
            acknowledged = id;
        }
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        let next = store.next_rule_id().unwrap();
        assert!(next > acknowledged, "fault after {n_ok} calls: {next} reissued");
        store.close().unwrap();
    }
}
