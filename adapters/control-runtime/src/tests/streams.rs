//! Replay ordering, ack timeouts, and a stream that drops between send and ack.

use super::*;

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
    assert_eq!(report(rt, &client.id, active, RuleEvent::Activated).await, Some(RuleState::Active));
    assert_eq!(finished("the answered push", push).await.expect("active").state, RuleState::Active);
    // Pending: the client never answers.
    let push = spawn_push(rt, &op, 18002, Duration::from_secs(1));
    let pending = old.upsert().await;
    let timed_out = push.await.expect("push task").expect_err("no answer");
    assert_eq!(timed_out.failure.code, ErrorCode::AckTimeout);
    // Refused by the server: the port is reserved by the Active rule, and nothing is stored.
    let clash = finished("the clashing push", spawn_push(rt, &op, 18001, Duration::from_secs(1)))
        .await
        .expect_err("port clash");
    assert_eq!(clash.failure.code, ErrorCode::PortInUse);
    assert!(clash.rule.is_none(), "a refused push stores nothing");
    // Failed by the client.
    let push = spawn_push(rt, &op, 18004, Duration::from_secs(5));
    let failed_by_client = old.upsert().await;
    assert!(matches!(
        report(rt, &client.id, failed_by_client, port_in_use()).await,
        Some(RuleState::Failed { code: ErrorCode::PortInUse, .. })
    ));
    assert_eq!(
        finished("the refused push", push).await.expect_err("client refused").failure.code,
        ErrorCode::PortInUse
    );
    assert!(old.drain().is_empty());

    // Reconnect (the old stream is still registered, as when the server has not noticed the
    // drop yet) while a push races it: the reconnect is queued first and the push's begin
    // right after it, so the plan is read before the push begins, and the new stream is
    // registered (in that commit's completion) before the push is answered.
    let hold = StoreHold::take(&f.store);
    let racing = spawn_push(rt, &op, 18005, Duration::from_secs(5));
    let mut opening = std::pin::pin!(open(rt, &client));
    tokio::select! {
        biased;
        _ = &mut opening => panic!("the plan cannot be read while the store is held"),
        () = tokio::task::yield_now() => {}
    }
    hold.release();
    let mut new = opened(frozen(opening).await);
    let plan = new.plan().await;
    assert_eq!(plan.client.id, client.id);
    assert_eq!(plan.client.version.as_deref(), Some("test"));
    let replayed = plan_ids(&plan);
    assert!(replayed.contains(&active) && replayed.contains(&pending), "{replayed:?}");
    assert!(!replayed.contains(&failed_by_client), "{replayed:?}");
    let raced = settle("the racing push's rule", || rule_on_port(&f.store, 18005)).await.id;
    assert!(!replayed.contains(&raced), "it began after the plan was read");
    assert_eq!(new.upsert().await, raced, "a push racing the reconnect comes after the plan");
    assert_eq!(report(rt, &client.id, raced, RuleEvent::Activated).await, Some(RuleState::Active));
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
    // scheduler and the writer produce: whatever reaches the new stream comes after its plan,
    // and every rule reaches it (in the plan, or as an Upsert after it).
    let pushes: Vec<_> = (0..8).map(|i| spawn_push(rt, &op, 18100 + i, Duration::from_secs(5))).collect();
    tokio::task::yield_now().await;
    let mut second = connect(rt, &client).await;
    let replayed = plan_ids(&second.plan().await);
    // Every push sends exactly one Upsert, to whichever stream is registered when it is
    // queued (the client restates an unchanged rule's outcome, so replayed rules are
    // answered again too). Collect them all.
    let (mut on_first, mut on_second) = (Vec::new(), Vec::new());
    let every = settle("all eight pushes sent", || {
        on_first.extend(first.drain());
        on_second.extend(second.drain());
        let sent: BTreeSet<RuleId> = upserts(&on_first).into_iter().chain(upserts(&on_second)).collect();
        (sent.len() == 8).then_some(sent)
    })
    .await;
    assert_eq!(upserts(&on_first).len() + upserts(&on_second).len(), 8, "each push sends once");
    let stored: BTreeSet<RuleId> =
        f.committed().list_rules().expect("store read").iter().map(|r| r.id).collect();
    assert_eq!(every, stored);
    assert!(replayed.is_subset(&stored));
    let reached: BTreeSet<RuleId> = replayed.iter().copied().chain(upserts(&on_second)).collect();
    assert_eq!(reached, stored, "every rule reaches the live stream: plan {replayed:?}, then {on_second:?}");
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
        report(rt, &client.id, *rule, RuleEvent::Activated).await;
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
    assert_eq!(stored_state(&f, first), Some(RuleState::Pending));

    // A second unanswered push, with another timeout.
    let started = Instant::now();
    let push = spawn_push(rt, &op, 18081, Duration::from_millis(1500));
    let second = stream.upsert().await;
    let failure = push.await.expect("push task").expect_err("the client never answers");
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
    assert_eq!(failure.failure.code, ErrorCode::AckTimeout);
    assert_eq!(stored_state(&f, second), Some(RuleState::Pending));

    // Late outcomes find no waiter and are applied all the same.
    assert_eq!(report(rt, &client.id, first, RuleEvent::Activated).await, Some(RuleState::Active));
    assert_eq!(stored_state(&f, first), Some(RuleState::Active));
    assert!(matches!(report(rt, &client.id, second, port_in_use()).await, Some(RuleState::Failed { .. })));
    assert!(matches!(stored_state(&f, second), Some(RuleState::Failed { .. })));
    // Repeating an outcome changes nothing and still answers.
    assert_eq!(report(rt, &client.id, first, RuleEvent::Activated).await, Some(RuleState::Active));

    // The waiting machinery still works: an answered push resolves with no time passing.
    let started = Instant::now();
    let push = spawn_push(rt, &op, 18082, Duration::from_secs(2));
    let third = stream.upsert().await;
    assert_eq!(report(rt, &client.id, third, RuleEvent::Activated).await, Some(RuleState::Active));
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
    assert_eq!(report(rt, &other.id, rule, RuleEvent::Activated).await, None);
    assert_eq!(report(rt, &client.id, RuleId::new(9_999), RuleEvent::Activated).await, None);
    let failure = push.await.expect("push task").expect_err("no answer from its own client");
    assert_eq!(failure.failure.code, ErrorCode::AckTimeout);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(stored_state(&f, rule), Some(RuleState::Pending));
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
    assert!(rt.sessions().unregister(&client.id, stream.reg.generation));
    drop(stream);
    assert!(rt.sessions().is_empty());

    let failure = push.await.expect("push task").expect_err("nobody answers");
    assert_eq!(failure.failure.code, ErrorCode::AckTimeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(stored_state(&f, rule), Some(RuleState::Pending));

    let mut again = connect(rt, &client).await;
    assert!(plan_ids(&again.plan().await).contains(&rule), "the Pending rule is replayed");
    assert_eq!(report(rt, &client.id, rule, RuleEvent::Activated).await, Some(RuleState::Active));
    assert_eq!(stored_state(&f, rule), Some(RuleState::Active));
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
    let Stream { rx, reg, .. } = stream;
    drop(rx);
    let failure = push.await.expect("push task").expect_err("nobody answers");
    assert_eq!(failure.failure.code, ErrorCode::AckTimeout);
    assert_eq!(stored_state(&f, rule), Some(RuleState::Pending));

    let mut again = connect(rt, &client).await;
    assert!(!rt.sessions().unregister(&client.id, reg.generation), "the dead stream was replaced");
    assert!(plan_ids(&again.plan().await).contains(&rule));
    assert_eq!(report(rt, &client.id, rule, RuleEvent::Activated).await, Some(RuleState::Active));
}

#[tokio::test(start_paused = true)]
async fn the_generation_moves_with_every_change_a_listing_shows() {
    let f = fixture();
    let rt = &f.runtime;
    let g0 = rt.generation();
    let client = enrolled(rt, CLIENT).await;
    let g1 = rt.generation();
    assert!(g1 > g0, "an enrollment moves it");
    let mut stream = connect(rt, &client).await;
    stream.plan().await;
    let g2 = rt.generation();
    assert!(g2 > g1, "a stream opening moves it");
    let push = spawn_push(rt, &Actor::operator(), 18080, Duration::from_secs(2));
    let rule = stream.upsert().await;
    // A push first in its transaction is sent before its commit lands: the listing moves
    // once it has.
    let g3 = super::settle("the push's commit", || (rt.generation() > g2).then(|| rt.generation())).await;
    assert!(g3 > g2, "a push's begin moves it");
    report(rt, &client.id, rule, RuleEvent::Activated).await;
    finished("the push", push).await.expect("activated");
    let g4 = rt.generation();
    assert!(g4 > g3, "a client's outcome moves it");
    assert_eq!(rt.generation(), g4, "nothing else happened");
    let Stream { reg, .. } = stream;
    assert!(rt.sessions().unregister(&client.id, reg.generation));
    assert!(rt.generation() > g4, "a stream closing moves it");
}
