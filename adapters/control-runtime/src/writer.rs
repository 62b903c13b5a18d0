//! The one writer: a dedicated thread that runs mutations inside write transactions and
//! group-commits them.
//!
//! Invariants: mutations run one after another inside the transaction, so each sees the
//! writes of those before it (checks and the writes they guard never race); several queued
//! mutations share one durable commit, and each is answered only after that commit returned;
//! when a transaction fails, every mutation in it is answered with the failure and none of
//! their effects happen. No tokio worker ever waits on a commit.
//!
//! Write-behind: a client's outcome for a rule is state the client reports again when its
//! rules are replayed, and a refused authentication's audit row records no change, so
//! neither waits for the disk. When nothing uncommitted is queued
//! before it, its job ([`Work::Behind`]) decides against the committed state (the read model,
//! current because every earlier job's completion has run), is answered at once, and the
//! writer keeps its writes and applies them first in the next transaction; when none comes
//! along within `deferred_sync`, or at shutdown, the writer commits them on their own. A crash
//! before that (or a failed transaction they joined) loses only such outcomes and refusal
//! rows, never a mutation or its audit row. Queued behind transactional jobs, it simply joins
//! their transaction.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ports::{LatencyObserver, Stage, Store, StoreError, StoreTx, Write};

use crate::model::ReadModel;
use crate::overlay::Overlay;

/// Called with the commit's result once the transaction that ran the job has ended.
pub type Completion = Box<dyn FnOnce(Result<(), Failure>) + Send>;

/// Runs inside the write transaction, applies its writes, returns how to answer.
pub type TxJob = Box<dyn FnOnce(&dyn StoreTx) -> Result<Completion, StoreError> + Send>;

/// Decides against committed state (`None`: the read model) or, queued behind transactional
/// jobs not yet committed, inside their transaction (`Some`); returns its writes and how to
/// answer.
pub type BehindJob = Box<dyn FnOnce(Option<&dyn StoreTx>) -> (Vec<Write>, Completion) + Send>;

/// A mutation.
pub enum Work {
    /// Answered once its transaction is durable.
    Tx(TxJob),
    /// Answered at once, the writer keeping its writes for the next transaction; or, when
    /// transactional jobs are queued before it in the same group, run and answered with them.
    Behind(BehindJob),
}

/// Most mutations one transaction carries.
const MAX_GROUP: usize = 256;

/// The handle to the writer thread.
pub struct Writer {
    jobs: mpsc::Sender<Work>,
}

/// How many transactional jobs have started in the transaction in progress: zero at the
/// start of each transaction (the writer resets it), counted up by the jobs themselves. A
/// job that finds zero is the first of its transaction, with nothing before it whose effects
/// are still to come.
pub type JobsInTx = Arc<std::sync::atomic::AtomicUsize>;

impl Writer {
    /// Starts the writer thread over `store`, whose committed state `model` mirrors (jobs read
    /// from it through an [`Overlay`]); kept write-behind writes are committed at most
    /// `deferred_sync` after the first of them.
    pub fn start(
        store: Arc<dyn Store>,
        model: Arc<ReadModel>,
        observer: Option<Arc<dyn LatencyObserver>>,
        deferred_sync: Duration,
        jobs_in_tx: JobsInTx,
    ) -> Result<Writer, Failure> {
        let (jobs, queue) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("portunus-writer".into())
            .spawn(move || {
                let mut state = State {
                    store: &*store,
                    model: &model,
                    observer: observer.as_deref(),
                    behind: Behind::default(),
                    jobs_in_tx,
                };
                state.run(&queue, deferred_sync);
            })
            .map_err(|err| {
                Failure::new(ErrorCode::Internal, format!("cannot start the store writer thread: {err}"))
            })?;
        Ok(Writer { jobs })
    }

    /// Queues a job. Fails only when the writer thread is gone.
    pub fn submit(&self, work: Work) -> Result<(), Failure> {
        self.jobs.send(work).map_err(|_| Failure::new(ErrorCode::StoreError, "the store writer stopped"))
    }
}

/// Write-behind writes not yet in any transaction, and since when.
#[derive(Default)]
struct Behind {
    writes: Vec<Write>,
    since: Option<Instant>,
}

struct State<'a> {
    store: &'a dyn Store,
    model: &'a ReadModel,
    observer: Option<&'a dyn LatencyObserver>,
    behind: Behind,
    jobs_in_tx: JobsInTx,
}

impl State<'_> {
    fn run(&mut self, queue: &mpsc::Receiver<Work>, deferred_sync: Duration) {
        loop {
            let first = match self.behind.since {
                None => match queue.recv() {
                    Ok(work) => work,
                    Err(mpsc::RecvError) => return,
                },
                Some(since) => match queue.recv_timeout(deferred_sync.saturating_sub(since.elapsed())) {
                    Ok(work) => work,
                    Err(idle) => {
                        self.commit(Vec::new());
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
                    Ok(work) => group.push(work),
                    Err(_) => break,
                }
            }
            // In queue order. A write-behind job with nothing uncommitted before it decides
            // against the read model and is answered at once; one queued behind transactional
            // jobs joins their transaction, so it sees their writes and the group still
            // shares one commit (32 operators pushing keep their group commit).
            let mut txs: Vec<TxJob> = Vec::new();
            for work in group {
                match work {
                    Work::Tx(job) => txs.push(job),
                    Work::Behind(job) if txs.is_empty() => {
                        let (writes, completion) = job(None);
                        if !writes.is_empty() {
                            self.behind.writes.extend(writes);
                            self.behind.since.get_or_insert_with(Instant::now);
                        }
                        completion(Ok(()));
                    }
                    Work::Behind(job) => {
                        // It counts as a job of the transaction: its effects wait for the
                        // commit, so no job after it may send ahead of them.
                        let jobs_in_tx = self.jobs_in_tx.clone();
                        txs.push(Box::new(move |tx: &dyn StoreTx| {
                            jobs_in_tx.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let (writes, completion) = job(Some(tx));
                            tx.apply(writes)?;
                            Ok(completion)
                        }))
                    }
                }
            }
            if !txs.is_empty() {
                self.commit(txs);
            }
        }
    }

    /// Commits `jobs` (possibly none) in one durable transaction that first applies the kept
    /// write-behind writes, then answers every job in order.
    fn commit(&mut self, jobs: Vec<TxJob>) {
        let started = Instant::now();
        let behind = std::mem::take(&mut self.behind.writes);
        let n_behind = behind.len();
        let span = tracing::debug_span!("store.commit", mutations = jobs.len(), behind = n_behind);
        let _entered = span.enter();
        let mut completions: Vec<Completion> = Vec::with_capacity(jobs.len());
        let (mut pending, mut behind) = (Some(jobs), Some(behind));
        let model = self.model;
        let jobs_in_tx = &self.jobs_in_tx;
        let committed = self.store.transact(&mut |tx| {
            jobs_in_tx.store(0, std::sync::atomic::Ordering::SeqCst);
            // The kept write-behind writes are in the read model already: applied straight to
            // the transaction, they leave the overlay's reads on the model.
            tx.apply(behind.take().unwrap_or_default())?;
            let view = Overlay::new(tx, model);
            for job in pending.take().unwrap_or_default() {
                completions.push(job(&view)?);
            }
            Ok(())
        });
        if let Some(observer) = self.observer {
            observer.observe(Stage::Commit, started.elapsed().as_secs_f64());
        }
        // Committed, or dropped with the failed transaction: they are not offered again (a
        // write the store refuses would fail every later transaction); the outcomes they held
        // are reported again when the client's rules are replayed.
        self.behind.since = None;
        let result = committed.map_err(|err| {
            tracing::error!(event = "store.error", error = %err, behind_dropped = n_behind,
                "a write transaction failed; nothing of it was written");
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
