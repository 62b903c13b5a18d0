//! The audit trail's own upkeep: unauthenticated requests leave records only within their
//! source's budget and never a commit each; retention prunes what is older than its window,
//! batch by batch, and keeps the newest record.

use portunus_core::audit::{AuditQuery, AuditRecord};
use portunus_core::policy::RequestOrigin;
use portunus_core::service::Credentials;

use super::*;

fn records(f: &Fixture) -> Vec<AuditRecord> {
    let query = AuditQuery::new(None, None, None, None, Some(500)).expect("query");
    portunus_core::ports::AuditStore::audit_page(&*f.store, &query).expect("audit read")
}

async fn bad_token(rt: &Runtime, remote: &str) -> bool {
    let credentials = Credentials {
        bearer: Some("pt_not-a-token"),
        session_cookie: None,
        request: RequestOrigin::default(),
        remote: Some(remote.parse().expect("ip")),
        route: "GET /v1/rules",
    };
    let refused = rt.authenticate_async(&credentials).await.expect_err("a bad token is refused");
    assert_eq!(refused.failure.code, ErrorCode::Unauthenticated);
    refused.audited
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_bad_tokens_is_audited_within_its_budget_and_in_batches() {
    let counter = Arc::new(CommitCounter::default());
    let store = Arc::new(MemoryStore::default());
    let settings = ServerSettings::resolve(Default::default()).expect("settings");
    let burst = settings.audit.anonymous_burst as usize;
    let f = fixture_over(store.clone(), store, settings, Arc::new(FakeHasher), Some(counter.clone()));
    let rt = &f.runtime;

    let mut audited = 0;
    for _ in 0..burst + 30 {
        audited += usize::from(bad_token(rt, "192.0.2.7").await);
    }
    assert_eq!(audited, burst, "one source leaves its burst of records, then none");
    assert_eq!(rt.audit_rows_dropped(), 30);
    assert!(bad_token(rt, "192.0.2.8").await, "another source has its own budget");

    // Written behind: the records reach the store together, not one commit each.
    rt.sync().await.expect("sync");
    let anonymous = records(&f).iter().filter(|r| r.actor == "anonymous").count();
    assert_eq!(anonymous, burst + 1);
    let commits = counter.commits.load(Ordering::SeqCst);
    assert!(commits <= 2, "{} refusals cost {commits} commits", burst + 31);

    // Then the source earns records back at its rate (60 a minute: one a second).
    f.clock.advance(Duration::from_secs(1));
    assert!(bad_token(rt, "192.0.2.7").await);
    assert!(!bad_token(rt, "192.0.2.7").await);
}

#[tokio::test(start_paused = true)]
async fn retention_prunes_records_older_than_its_window_and_keeps_the_newest() {
    let f = fixture();
    let rt = &f.runtime;
    let retention = rt.settings().audit.retention.expect("on by default");
    for n in 0..5 {
        enrolled(rt, &format!("old-{n}")).await;
    }
    let old = records(&f).len();
    assert!(old >= 5, "{old}");
    assert_eq!(rt.apply_audit_retention().await.expect("prune"), 0, "nothing is old yet");
    assert_eq!(records(&f).len(), old, "and nothing was written for it");

    f.clock.advance(retention + Duration::from_secs(60));
    enrolled(rt, "new").await;
    let fresh: Vec<u64> = records(&f)
        .iter()
        .filter(|r| r.target.as_deref().is_some_and(|t| t.starts_with("new")))
        .map(|r| r.seq)
        .collect();
    assert!(!fresh.is_empty());

    assert_eq!(rt.apply_audit_retention().await.expect("prune"), old as u64);
    let kept = records(&f);
    assert!(kept.iter().all(|r| r.target.as_deref().is_none_or(|t| !t.starts_with("old-"))), "{kept:?}");
    assert!(fresh.iter().all(|seq| kept.iter().any(|r| r.seq == *seq)), "recent records stay");
    let prune = kept.last().expect("the prune's own record");
    assert_eq!((prune.actor.as_str(), prune.action.as_str()), ("_operator", "audit.prune"));
    // Numbering continues after a prune.
    assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq));

    // An operator's prune with a cut-off in the future keeps only the newest record (and
    // its own).
    let now = rt.now();
    let pruned = off_thread({
        let rt = rt.clone();
        move || rt.prune_audit(&Actor::operator(), now.plus(Duration::from_secs(3600)))
    })
    .await
    .expect("prune");
    assert!(!pruned.more);
    assert_eq!(records(&f).len(), 2, "{:?}", records(&f));
    let denied = off_thread({
        let rt = rt.clone();
        move || rt.prune_audit(&user_actor("mallory"), now)
    })
    .await
    .expect_err("users may not prune");
    assert_eq!(denied.code, ErrorCode::NotOwner);
}

fn user_actor(name: &str) -> Actor {
    let user = portunus_core::account::User {
        id: portunus_core::ids::UserId::new(name),
        role: portunus_core::policy::Role::User,
        password: None,
        must_change_password: false,
        created_at: portunus_core::ids::Timestamp::from_millis(0),
    };
    Actor::for_user(&user, portunus_core::policy::Credential::ApiToken, None)
}
