//! Pushes whose command cannot be delivered, and a reconnect replacing a stream.

use super::*;

// ----- 4. not delivered -------------------------------------------------------------------

async fn assert_push_undone(f: &Fixture, rule: RuleId, failure: PushFailure) {
    assert_eq!(failure.failure.code, ErrorCode::ClientNotConnected);
    assert!(failure.rule.is_none(), "an undone push returns no rule");
    assert_eq!(stored_state(f, rule), None);
    assert!(f.committed().list_rules().expect("store read").is_empty());
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
    let Stream { rx, reg: _reg, .. } = stream;
    drop(rx);
    let started = Instant::now();
    let failure =
        finished("the undone push", spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2)))
            .await
            .expect_err("not delivered");
    assert_eq!(started.elapsed(), Duration::ZERO, "an undelivered push does not wait for its ack");
    assert_push_undone(&f, RuleId::new(1), failure).await;
    // A late report about it changes nothing; the next plan does not carry it.
    assert_eq!(report(rt, &client.id, RuleId::new(1), RuleEvent::Activated).await, None);
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

    // The push's begin, and right behind it in the same transaction the stream task's
    // cleanup: begin finds the session, and it is gone before that commit is answered, so
    // before the push's command can be queued. (A job ahead of the push in the same
    // transaction keeps it from being sent before the commit, as a push first in its
    // transaction is.)
    let gate = WriterGate::close(rt);
    let mut ahead = std::pin::pin!(rt.mutate_async(|_, _| ()));
    queue("the job ahead", &mut ahead).await;
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
    // The push task runs before this one resumes: it submits begin_push behind the gate.
    tokio::task::yield_now().await;
    let (cleaner, id, generation) = (rt.clone(), client.id.clone(), stream.reg.generation);
    let mut cleanup = std::pin::pin!(rt.mutate_async(move |_, cx| {
        let begun = cx
            .store
            .list_rules()
            .ok()
            .and_then(|rules| rules.into_iter().find(|r| r.def.listen.start() == 18080));
        (begun, cleaner.sessions().unregister(&id, generation))
    }));
    queue("the cleanup", &mut cleanup).await;
    gate.open();
    let (begun, unregistered) = frozen(cleanup).await.expect("the cleanup's transaction commits");
    let rule = begun.expect("begin_push ran just before the cleanup, in the same transaction");
    assert_eq!(rule.state, RuleState::Pending);
    assert!(unregistered, "the cleanup removed the live session");

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
    assert!(!rt.sessions().unregister(&client.id, first.reg.generation));
    assert_eq!(rt.sessions().len(), 1);
    assert!(rt.sessions().session(&client.id).is_some());

    // Pushes go to the new stream only.
    second.plan().await;
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
    let rule = second.upsert().await;
    report(rt, &client.id, rule, RuleEvent::Activated).await;
    assert_eq!(finished("the push", push).await.expect("active").state, RuleState::Active);
    assert!(first.drain().is_empty());

    assert!(rt.sessions().unregister(&client.id, second.reg.generation));
    assert!(rt.sessions().is_empty());
    assert!(!rt.sessions().unregister(&client.id, second.reg.generation), "only once");
}

// ----- 6. a push sent before its commit ---------------------------------------------------

/// A store port over a `MemoryStore` whose next transaction fails at its commit, after every
/// job in it ran (as a failed fsync would), once armed.
struct FailingCommit {
    inner: Arc<MemoryStore>,
    armed: std::sync::atomic::AtomicBool,
}

portunus_core::delegate_read_ports!(FailingCommit, |s: &FailingCommit| Ok::<
    _,
    portunus_core::ports::StoreError,
>(s.inner.clone()));

impl portunus_core::ports::RuleIds for FailingCommit {
    fn next_rule_id(&self) -> Result<RuleId, portunus_core::ports::StoreError> {
        self.inner.next_rule_id()
    }
}

impl Store for FailingCommit {
    fn transact(
        &self,
        work: &mut dyn FnMut(
            &dyn portunus_core::ports::StoreTx,
        ) -> Result<(), portunus_core::ports::StoreError>,
    ) -> Result<(), portunus_core::ports::StoreError> {
        let armed = &self.armed;
        self.inner.transact(&mut |tx| {
            work(tx)?;
            if armed.swap(false, Ordering::SeqCst) {
                return Err(portunus_core::ports::StoreError::Unavailable {
                    source: "the disk failed".into(),
                });
            }
            Ok(())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_push_sent_ahead_of_a_commit_that_fails_is_taken_back_from_the_client() {
    let store = Arc::new(MemoryStore::default());
    let port = Arc::new(FailingCommit { inner: store.clone(), armed: false.into() });
    let settings = ServerSettings::resolve(Default::default()).expect("default settings");
    let f = fixture_over(store, port.clone(), settings, Arc::new(FakeHasher), None);
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;

    port.armed.store(true, Ordering::SeqCst);
    let failure =
        finished("the failed push", spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2)))
            .await
            .expect_err("its commit failed");
    assert_eq!(failure.failure.code, ErrorCode::StoreError);
    // First in its transaction, the Upsert went out before the commit; the failure took it back.
    let items = stream.drain();
    assert_eq!(upserts(&items), removes(&items), "{items:?}");
    assert_eq!(upserts(&items).len(), 1, "{items:?}");
    assert!(f.committed().list_rules().expect("store read").is_empty(), "nothing of it was stored");

    // The next push goes through, and the client's late answer about the first changes nothing.
    assert_eq!(report(rt, &client.id, upserts(&items)[0], RuleEvent::Activated).await, None);
    let push = spawn_push(rt, &Actor::operator(), 18081, Duration::from_secs(2));
    let rule = stream.upsert().await;
    report(rt, &client.id, rule, RuleEvent::Activated).await;
    let pushed = finished("the second push", push).await.expect("activated");
    assert_eq!(pushed.state, RuleState::Active);
}
