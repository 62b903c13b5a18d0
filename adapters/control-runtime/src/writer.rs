//! The one writer: a dedicated thread that runs mutations inside write transactions and
//! group-commits them.
//!
//! Invariants: mutations run one after another inside the transaction, so each sees the
//! writes of those before it (checks and the writes they guard never race); several queued
//! mutations share one commit, and each is answered only after that commit returned;
//! when a transaction fails, every mutation in it is answered with the failure and none of
//! their effects happen. No tokio worker ever waits on a commit.
//!
//! A commit is durable when any mutation in it asks to be ([`Durability::Immediate`]); a
//! group of only deferred mutations (a client's outcome for a rule) commits without waiting
//! for the disk, and the writer makes a durable commit at the latest `deferred_sync` later,
//! or before stopping.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ports::{LatencyObserver, Stage, Store, StoreError, StoreTx};

/// Called with the commit's result once the transaction that ran the job has ended.
pub type Completion = Box<dyn FnOnce(Result<(), Failure>) + Send>;

/// A mutation: runs inside the write transaction, applies its writes, returns how to answer.
pub type Work = Box<dyn FnOnce(&dyn StoreTx) -> Result<Completion, StoreError> + Send>;

/// When a mutation's commit must be on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the mutation is answered.
    Immediate,
    /// With the next durable commit, at most `deferred_sync` later: only for state a client
    /// reports again after a restart.
    Deferred,
}

/// A queued mutation.
pub struct Job {
    /// How durable its commit must be before it is answered.
    pub durability: Durability,
    /// What it does.
    pub work: Work,
}

/// Most mutations one transaction carries.
const MAX_GROUP: usize = 256;

/// The handle to the writer thread.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread over `store`; deferred commits are made durable at most
    /// `deferred_sync` after the first of them.
    pub fn start(
        store: Arc<dyn Store>,
        observer: Option<Arc<dyn LatencyObserver>>,
        deferred_sync: Duration,
    ) -> Result<Writer, Failure> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("portunus-writer".into())
            .spawn(move || run(&*store, observer.as_deref(), &queue, deferred_sync))
            .map_err(|err| {
                Failure::new(ErrorCode::Internal, format!("cannot start the store writer thread: {err}"))
            })?;
        Ok(Writer { jobs })
    }

    /// Queues a job. Fails only when the writer thread is gone.
    pub fn submit(&self, job: Job) -> Result<(), Failure> {
        self.jobs.send(job).map_err(|_| Failure::new(ErrorCode::StoreError, "the store writer stopped"))
    }
}

fn run(
    store: &dyn Store,
    observer: Option<&dyn LatencyObserver>,
    queue: &mpsc::Receiver<Job>,
    deferred_sync: Duration,
) {
    // When the oldest commit not yet durable was made.
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let first = match unsynced_since {
            None => match queue.recv() {
                Ok(job) => job,
                Err(mpsc::RecvError) => return,
            },
            Some(since) => match queue.recv_timeout(deferred_sync.saturating_sub(since.elapsed())) {
                Ok(job) => job,
                Err(idle) => {
                    sync(store, observer);
                    unsynced_since = None;
                    if idle == mpsc::RecvTimeoutError::Disconnected {
                        return;
                    }
                    continue;
                }
            },
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let durable = group.iter().any(|job| job.durability == Durability::Immediate)
            || unsynced_since.is_some_and(|since| since.elapsed() >= deferred_sync);
        let started = Instant::now();
        let span = tracing::debug_span!("store.commit", mutations = group.len(), durable);
        let _entered = span.enter();
        let mut completions: Vec<Completion> = Vec::with_capacity(group.len());
        let mut pending = Some(group);
        let mut work = |tx: &dyn StoreTx| {
            for job in pending.take().unwrap_or_default() {
                completions.push((job.work)(tx)?);
            }
            Ok(())
        };
        let committed = if durable { store.transact(&mut work) } else { store.transact_deferred(&mut work) };
        if durable && let Some(observer) = observer {
            observer.observe(Stage::Commit, started.elapsed().as_secs_f64());
        }
        match (&committed, durable) {
            (Ok(()), true) => unsynced_since = None,
            (Ok(()), false) => unsynced_since = unsynced_since.or(Some(started)),
            (Err(_), _) => {}
        }
        let result = committed.map_err(|err| {
            tracing::error!(event = "store.error", error = %err, "a write transaction failed; nothing of it was written");
            Failure::from(err)
        });
        drop(_entered);
        for completion in completions {
            completion(result.clone());
        }
        // Jobs that never ran (the transaction failed before them) drop their reply channels,
        // which their callers see as a store failure.
    }
}

/// Makes the deferred commits durable. A failure is an event: the next durable commit (every
/// operator's mutation is one) carries them, or they are reported again after a restart.
fn sync(store: &dyn Store, observer: Option<&dyn LatencyObserver>) {
    let started = Instant::now();
    let _entered = tracing::debug_span!("store.sync").entered();
    match store.sync() {
        Ok(()) => {
            if let Some(observer) = observer {
                observer.observe(Stage::Commit, started.elapsed().as_secs_f64());
            }
        }
        Err(err) => {
            tracing::error!(event = "store.error", error = %err, "could not make deferred commits durable")
        }
    }
}
