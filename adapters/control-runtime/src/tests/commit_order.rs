//! Group commit, one audit row per call, and reconnects, pushes, removals and revokes in
//! commit order.

use super::*;

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
            let (rt, client, rule) = (rt.clone(), client.id.clone(), *rule);
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

    let stored = f.committed().list_rules().expect("store read");
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
    assert_eq!(denied.failure.code, ErrorCode::ClientNotFound);
    one_new_row(rt, &mut n, "rule.push", Some(ErrorCode::ClientNotGranted)).await;
    assert!(stream.drain().is_empty() && f.committed().list_rules().expect("store read").is_empty());

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
    report(rt, &client.id, alices, RuleEvent::Activated).await;
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
    assert!(clash.rule.is_none(), "a refused push stores nothing");

    let push = spawn_push(rt, &op, 18060, Duration::from_secs(2));
    let operators = stream.upsert().await;
    report(rt, &client.id, operators, RuleEvent::Activated).await;
    finished("the operator's push", push).await.expect("active");
    one_new_row(rt, &mut n, "rule.push", None).await;

    let (r, a) = (rt.clone(), alice.clone());
    let not_hers = off_thread(move || r.remove_rule(&a, operators)).await.expect_err("not hers");
    // To her it is a rule that does not exist; the trail records what it was.
    assert_eq!(not_hers.code, ErrorCode::RuleNotFound);
    one_new_row(rt, &mut n, "rule.remove", Some(ErrorCode::NotOwner)).await;
    assert!(stream.drain().is_empty(), "a refused removal tells the client nothing");

    let (r, a) = (rt.clone(), alice.clone());
    let listed = off_thread(move || r.list_rules(&a, &RuleFilter::default())).await.expect("her rules");
    assert_eq!(listed.len(), 1, "her Active rule");
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

// ----- 8. reconnects, pushes, removals and revokes in commit order -------------------------
//
// A reconnect's plan is read and its stream registered in one step of commit order, and a
// mutation's commands reach the streams in that order too: each of these races once lost a
// rule, kept a deleted one, or connected a revoked client.

/// Pushes a rule on `port` over `stream` and has the client activate it.
async fn active_rule(rt: &Runtime, client: &Enrolled, stream: &mut Stream, port: i64) -> RuleId {
    let push = spawn_push(rt, &Actor::operator(), port, Duration::from_secs(2));
    let rule = stream.upsert().await;
    assert_eq!(report(rt, &client.id, rule, RuleEvent::Activated).await, Some(RuleState::Active));
    assert_eq!(finished("the push", push).await.expect("active").id, rule);
    rule
}

/// A push and a reconnect in flight together (the old stream still registered), the push's
/// begin queued just before the reconnect or just after it.
async fn push_during_a_reconnect(push_first: bool) {
    let order = if push_first { "push, then reconnect" } else { "reconnect, then push" };
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut old = connect(rt, &client).await;
    old.plan().await;

    let hold = StoreHold::take(&f.store);
    let mut opening = std::pin::pin!(open(rt, &client));
    let push = if push_first {
        let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
        // The push task runs before this one resumes: its begin is queued first.
        tokio::task::yield_now().await;
        queue("the reconnect", &mut opening).await;
        push
    } else {
        queue("the reconnect", &mut opening).await;
        let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
        tokio::task::yield_now().await;
        push
    };
    hold.release();
    let mut new = opened(frozen(opening).await);
    let replayed = plan_ids(&new.plan().await);
    let rule = settle("the push's rule", || rule_on_port(&f.store, 18080)).await.id;

    // Once its Upsert is queued (on whichever stream), the push waits for the outcome.
    let (mut on_old, mut on_new) = (Vec::new(), Vec::new());
    settle("the push's Upsert", || {
        on_old.extend(old.drain());
        on_new.extend(new.drain());
        (upserts(&on_old).contains(&rule) || upserts(&on_new).contains(&rule)).then_some(())
    })
    .await;
    assert!(
        replayed.contains(&rule) || upserts(&on_new) == [rule],
        "{order}: the live stream never gets rule {rule}: not in its plan {replayed:?}, then {on_new:?} \
         (the replaced stream got {on_old:?})"
    );
    if push_first {
        assert!(replayed.contains(&rule), "{order}: it began before the plan was read: {replayed:?}");
    } else {
        assert!(!replayed.contains(&rule), "{order}: it began after the plan was read: {replayed:?}");
        assert_eq!(upserts(&on_new), [rule], "{order}: it follows the plan on the new stream");
        assert!(upserts(&on_old).is_empty(), "{order}: the replaced stream gets nothing: {on_old:?}");
    }
    assert!(
        on_new.iter().all(|item| matches!(item, Outbound::Command(ClientCommand::Upsert { .. }))),
        "{order}: only the push's Upsert follows the plan: {on_new:?}"
    );
    assert!(
        matches!(on_old.last(), Some(Outbound::End(EndReason::Replaced))),
        "{order}: the replaced stream ends, and hears nothing after: {on_old:?}"
    );

    // The client on the new stream answers, and the push completes.
    assert_eq!(report(rt, &client.id, rule, RuleEvent::Activated).await, Some(RuleState::Active));
    let done = finished("the push", push).await.expect("active");
    assert_eq!((done.id, done.state), (rule, RuleState::Active), "{order}");
    assert!(new.drain().is_empty() && old.drain().is_empty(), "{order}");
}

#[tokio::test(start_paused = true)]
async fn a_push_committed_during_a_reconnect_reaches_the_new_stream_and_completes() {
    push_during_a_reconnect(true).await;
    push_during_a_reconnect(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_rule_removed_during_a_reconnect_is_left_out_of_the_new_plan_or_removed_after_it() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut old = connect(rt, &client).await;
    old.plan().await;

    // The removal commits right after the reconnect (both in flight together): the plan
    // still carries the rule, and its Remove follows the plan on the new stream.
    let rule = active_rule(rt, &client, &mut old, 18080).await;
    let hold = StoreHold::take(&f.store);
    let mut opening = std::pin::pin!(open(rt, &client));
    queue("the reconnect", &mut opening).await;
    let r = rt.clone();
    let remover = std::thread::spawn(move || r.remove_rule(&Actor::operator(), rule));
    hold.release();
    let mut new = opened(frozen(opening).await);
    remover.join().expect("the remover thread").expect("removed");
    assert_eq!(stored_state(&f, rule), None);
    assert!(plan_ids(&new.plan().await).contains(&rule), "the plan was read before the removal");
    let after = new.drain();
    assert_eq!(removes(&after), [rule], "the new stream hears of the removal: {after:?}");
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(matches!(old.drain().as_slice(), [Outbound::End(EndReason::Replaced)]));

    // Then, a few times over, a removal and a reconnect race in whatever order the threads
    // produce: exactly one stream hears of the removal. The replaced one, when the plan was
    // read after it (and leaves the rule out); the new one, after a plan that carries it.
    let mut current = new;
    for round in 0..8 {
        let rule = active_rule(rt, &client, &mut current, 18100 + round).await;
        let r = rt.clone();
        let remover = std::thread::spawn(move || r.remove_rule(&Actor::operator(), rule));
        let mut next = connect(rt, &client).await;
        remover.join().expect("the remover thread").expect("removed");
        let replayed = plan_ids(&next.plan().await);
        let (on_old, on_new) = (current.drain(), next.drain());
        if replayed.contains(&rule) {
            assert!(
                matches!(on_new.as_slice(), [Outbound::Command(ClientCommand::Remove { rule: r })] if *r == rule),
                "round {round}: rule {rule} is in the new plan, so its Remove follows it: {on_new:?}"
            );
            assert!(matches!(on_old.as_slice(), [Outbound::End(EndReason::Replaced)]), "{on_old:?}");
        } else {
            assert!(on_new.is_empty(), "round {round}: {on_new:?}");
            assert!(
                matches!(
                    on_old.as_slice(),
                    [Outbound::Command(ClientCommand::Remove { rule: r }), Outbound::End(EndReason::Replaced)]
                        if *r == rule
                ),
                "round {round}: removed before the plan was read, the old stream heard of it: {on_old:?}"
            );
        }
        assert!(replayed.is_empty() || replayed == BTreeSet::from([rule]), "round {round}: {replayed:?}");
        current = next;
    }
}

#[tokio::test(start_paused = true)]
async fn a_removal_committed_after_a_pushs_begin_reaches_the_stream_after_its_upsert() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;

    // The push's begin commits; before its task runs again, another thread removes the rule.
    let (push, rule) = push_committed(&f, 18080).await;
    let rule = rule.id;
    let r = rt.clone();
    std::thread::spawn(move || r.remove_rule(&Actor::operator(), rule))
        .join()
        .expect("remover thread")
        .expect("removed");
    assert_eq!(stored_state(&f, rule), None);
    // Now the push task runs.
    let_tasks_run().await;
    let items = stream.drain();
    let heard: Vec<&str> = items
        .iter()
        .filter_map(|item| match item {
            Outbound::Command(ClientCommand::Upsert { rule: r, .. }) if *r == rule => Some("upsert"),
            Outbound::Command(ClientCommand::Remove { rule: r }) if *r == rule => Some("remove"),
            _ => None,
        })
        .collect();
    drop(push);
    assert_eq!(
        heard,
        ["upsert", "remove"],
        "the client hears of rule {rule} in commit order, the push's Upsert then the removal: {items:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_revoked_after_authenticating_is_refused_its_stream_and_not_registered() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    // The handshake authenticates the token…
    assert_eq!(rt.authenticate_client(&client.token).expect("a valid token").id, client.id);
    // …and while the stream waits for Hello, the operator revokes the client. Its
    // Disconnect finds no stream to end.
    let r = rt.clone();
    off_thread(move || r.revoke(&Actor::operator(), CLIENT)).await.expect("revoked");
    assert!(rt.sessions().is_empty());

    let (tx, mut rx) = unbounded_channel();
    let refused = match frozen(rt.open_session(&client.token, "test", session_info(rt), tx)).await {
        Ok(_) => panic!("revoked client {} opened a stream", client.id),
        Err(failure) => failure,
    };
    assert_eq!(refused.code, ErrorCode::TokenRevoked);
    assert!(rt.sessions().session(&client.id).is_none() && rt.sessions().is_empty());
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)), "no plan was queued");
    let stored = f.store.get_client(&client.id).expect("store read").expect("the client stays");
    assert_eq!((stored.last_seen_at, stored.version), (None, None), "a refused stream records no connect");
}

#[tokio::test(start_paused = true)]
async fn a_revoke_committed_right_after_a_stream_opened_ends_that_stream() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;

    // The stream's opening is queued first, the revoke right behind it.
    let hold = StoreHold::take(&f.store);
    let mut opening = std::pin::pin!(open(rt, &client));
    queue("the stream's opening", &mut opening).await;
    let r = rt.clone();
    let revoker = std::thread::spawn(move || r.revoke(&Actor::operator(), CLIENT));
    hold.release();
    let mut stream = opened(frozen(opening).await);
    revoker.join().expect("the revoker thread").expect("revoked");

    stream.plan().await;
    assert!(matches!(
        stream.drain().as_slice(),
        [Outbound::End(EndReason::Disconnected(DisconnectReason::TokenRevoked))]
    ));
    let stopped = tokio::select! {
        biased;
        () = stream.reg.stop.notified() => true,
        () = std::future::ready(()) => false,
    };
    assert!(stopped, "the stream's task is told to stop");
    assert!(rt.sessions().is_empty());
    let refused = frozen(open(rt, &client)).await.err().expect("a revoked token opens nothing");
    assert_eq!(refused.code, ErrorCode::TokenRevoked);
}

#[tokio::test(start_paused = true)]
async fn a_token_rotated_after_authenticating_is_refused_its_stream() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;
    assert!(rt.authenticate_client(&client.token).is_ok(), "the handshake passes");

    // Re-enrolled and redeemed meanwhile: the token the handshake checked is rotated away.
    let r = rt.clone();
    let ticket =
        off_thread(move || r.reenroll_client(&Actor::operator(), CLIENT, None)).await.expect("reenroll");
    let redeemed = frozen(rt.redeem(ticket.uri.code)).await.expect("redeem");
    let rotated = Enrolled { id: redeemed.client.id, token: redeemed.token.expose().to_owned() };
    assert_eq!(rotated.id, client.id);

    let refused = frozen(open(rt, &client)).await.err().expect("a rotated token opens nothing");
    assert_eq!(refused.code, ErrorCode::Unauthenticated);
    assert!(rt.sessions().is_empty());
    let mut stream = connect(rt, &rotated).await;
    assert_eq!(stream.plan().await.client.id, client.id);
    assert!(rt.sessions().session(&client.id).is_some());
}

// ----- races found while writing these tests, now fixed -------------------------------------

#[tokio::test(start_paused = true)]
async fn a_push_right_behind_a_first_connect_in_the_same_group_sees_the_new_stream() {
    let f = fixture();
    let rt = &f.runtime;
    let client = enrolled(rt, CLIENT).await;

    // The client's first stream opens, and a push is queued right behind it: both run in the
    // writer's next group, the opening first. In commit order the stream is open when the
    // push begins.
    let gate = WriterGate::close(rt);
    let mut opening = std::pin::pin!(open(rt, &client));
    queue("the stream's opening", &mut opening).await;
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
    // The push task runs before this one resumes: its begin is queued behind the opening.
    tokio::task::yield_now().await;
    gate.open();
    let mut stream = opened(frozen(opening).await);
    assert!(stream.plan().await.rules.is_empty());

    let mut items = Vec::new();
    settle("the push's Upsert or its answer", || {
        items.extend(stream.drain());
        (!upserts(&items).is_empty() || push.is_finished()).then_some(())
    })
    .await;
    if upserts(&items).is_empty() {
        let answer = push.await.expect("push task");
        panic!("a push that began after the stream opened (in commit order) was answered {answer:?}");
    }
    let rule = upserts(&items)[0];
    assert_eq!(report(rt, &client.id, rule, RuleEvent::Activated).await, Some(RuleState::Active));
    assert_eq!(finished("the push", push).await.expect("active").id, rule);
}

#[tokio::test(start_paused = true)]
async fn pushes_of_one_port_in_one_group_see_each_other_and_only_the_first_binds() {
    // The pushes queue together and share one transaction: each reads the client's rules
    // through the overlay, so every push after the first sees the first's rule (written in
    // the same transaction, not yet in the read model) and is refused.
    let f = fixture();
    let rt = &f.runtime;
    let op = Actor::operator();
    let client = enrolled(rt, CLIENT).await;
    let mut stream = connect(rt, &client).await;
    stream.plan().await;

    let gate = WriterGate::close(rt);
    let pushes: Vec<_> = (0..10).map(|_| spawn_push(rt, &op, 21_000, Duration::from_secs(30))).collect();
    // Every push's begin is queued behind the gate: they are the writer's next group.
    let_tasks_run().await;
    gate.open();
    let sent = stream.upsert().await;
    let outcome = {
        let (rt, client) = (rt.clone(), client.id.clone());
        tokio::spawn(async move { rt.rule_outcome(&client, sent, RuleEvent::Activated).await })
    };
    assert_eq!(finished("an outcome", outcome).await.expect("committed"), Some(RuleState::Active));
    let (mut active, mut refused) = (0, 0);
    for push in pushes {
        match finished("a push", push).await {
            Ok(rule) => {
                assert_eq!((rule.id, rule.state), (sent, RuleState::Active));
                active += 1;
            }
            Err(failure) => {
                assert_eq!(failure.failure.code, ErrorCode::PortInUse, "{failure:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((active, refused), (1, 9));
    assert!(upserts(&stream.drain()).is_empty(), "a refused push sent nothing");
    assert_eq!(f.committed().list_rules().expect("store read").len(), 1);
}
