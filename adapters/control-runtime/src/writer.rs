//! The one writer: a dedicated thread that runs mutations inside write transactions and
//! group-commits them.
//!
//! Invariants: mutations run one after another inside the transaction, so each sees the
//! writes of those before it (checks and the writes they guard never race); several queued
//! mutations share one durable commit, and each is answered only after that commit returned;
//! when a transaction fails, every mutation in it is answered with the failure and none of
//! their effects happen. No tokio worker ever waits on a commit.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ports::{LatencyObserver, Stage, Store, StoreError, StoreTx};

/// Called with the commit's result once the transaction that ran the job has ended.
pub type Completion = Box<dyn FnOnce(Result<(), Failure>) + Send>;

/// A mutation: runs inside the write transaction, applies its writes, returns how to answer.
pub type Job = Box<dyn FnOnce(&dyn StoreTx) -> Result<Completion, StoreError> + Send>;

/// Most mutations one transaction carries.
const MAX_GROUP: usize = 256;

/// The handle to the writer thread.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread over `store`.
    pub fn start(
        store: Arc<dyn Store>,
        observer: Option<Arc<dyn LatencyObserver>>,
    ) -> Result<Writer, Failure> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("portunus-writer".into())
            .spawn(move || run(&*store, observer.as_deref(), &queue))
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

fn run(store: &dyn Store, observer: Option<&dyn LatencyObserver>, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let span = tracing::debug_span!("store.commit", mutations = group.len());
        let _entered = span.enter();
        let mut completions: Vec<Completion> = Vec::with_capacity(group.len());
        let mut pending = Some(group);
        let committed = store.transact(&mut |tx| {
            for job in pending.take().unwrap_or_default() {
                completions.push(job(tx)?);
            }
            Ok(())
        });
        if let Some(observer) = observer {
            observer.observe(Stage::Commit, started.elapsed().as_secs_f64());
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
