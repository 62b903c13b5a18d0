//! Quotas through the service: who may set and read them, the grant they need, metering,
//! and rollover.

use std::time::Duration;

use super::{enrolled, grant, harness, user};
use crate::ErrorCode;
use crate::audit::AuditQuery;
use crate::policy::Actor;
use crate::ports::{AuditStore, QuotaStore};
use crate::quota::{QuotaPatch, QuotaSpec, Threshold};
use crate::service::QuotaService;

fn spec(bytes: u64) -> QuotaSpec {
    QuotaSpec { monthly_bytes: bytes, billing_anchor: None }
}

fn last_audit(h: &super::Harness) -> (String, Option<ErrorCode>) {
    let all = AuditQuery { after: None, from: None, to: None, outcome: None, limit: 500 };
    let page = h.store.audit_page(&all).unwrap();
    let last = page.iter().max_by_key(|r| r.seq).unwrap();
    let code = last.code.as_deref().map(|c| ErrorCode::parse(c).unwrap());
    (last.action.clone(), code)
}

#[test]
fn a_superadmin_sets_a_quota_only_for_a_granted_pair_and_every_attempt_is_audited() {
    let h = harness();
    let (edge, _) = enrolled(&h, "edge-01");
    enrolled(&h, "edge-02");
    let alice = user(&h, "alice");
    grant(&h, "alice", "edge-01");
    let op = Actor::operator();
    let set = |actor: &Actor, user: &str, client: &str, bytes: u64| {
        h.plane.run(|cx| QuotaService.set_quota(cx, actor, user, client, &spec(bytes))).map_err(|f| f.code)
    };

    assert_eq!(set(&op, "alice", "edge-02", 1_000).unwrap_err(), ErrorCode::ClientNotGranted);
    assert_eq!(last_audit(&h), ("quota.set".into(), Some(ErrorCode::ClientNotGranted)));
    assert_eq!(set(&op, "nobody", "edge-01", 1_000).unwrap_err(), ErrorCode::UserNotFound);
    assert_eq!(set(&op, "alice", "edge-09", 1_000).unwrap_err(), ErrorCode::ClientNotFound);
    assert_eq!(set(&op, "alice", "edge-01", 0).unwrap_err(), ErrorCode::QuotaBytesInvalid);
    assert_eq!(set(&alice, "alice", "edge-01", 1_000).unwrap_err(), ErrorCode::NotOwner);
    assert!(h.store.list_quotas().unwrap().is_empty(), "refusals store nothing");

    let made = set(&op, "alice", "edge-01", 1_000).unwrap();
    assert_eq!((made.quota.user.as_str(), &made.quota.client), ("alice", &edge));
    assert_eq!(last_audit(&h), ("quota.set".into(), None));
    // Replacing keeps the period's usage.
    h.plane.run(|cx| QuotaService.record_usage(cx, &made.quota.user, &edge, 400)).unwrap();
    let replaced = set(&op, "alice", edge.as_str(), 2_000).unwrap();
    assert_eq!(replaced.quota.state.used_bytes(), 400);
    assert_eq!(h.store.list_quotas().unwrap().len(), 1);
}

#[test]
fn a_user_reads_only_their_own_quota_and_anothers_answers_like_a_missing_one() {
    let h = harness();
    enrolled(&h, "edge-01");
    let alice = user(&h, "alice");
    let bob = user(&h, "bob");
    grant(&h, "alice", "edge-01");
    grant(&h, "bob", "edge-01");
    let op = Actor::operator();
    h.plane.run(|cx| QuotaService.set_quota(cx, &op, "alice", "edge-01", &spec(1_000))).unwrap();
    let get = |actor: &Actor, user: &str, client: &str| {
        h.plane.run(|cx| QuotaService.get_quota(cx, actor, user, client))
    };

    let own = get(&alice, "alice", "edge-01").unwrap();
    assert_eq!((own.monthly_bytes, own.current_period_bytes_used), (1_000, 0));
    let theirs = get(&bob, "alice", "edge-01").unwrap_err();
    let missing = get(&bob, "bob", "edge-01").unwrap_err();
    assert_eq!((theirs.code, missing.code), (ErrorCode::QuotaNotFound, ErrorCode::QuotaNotFound));
    assert_eq!(get(&op, "alice", "edge-77").unwrap_err().code, ErrorCode::QuotaNotFound);
    // The trail keeps the denial's own code.
    assert_eq!(last_audit(&h).1, Some(ErrorCode::QuotaNotFound));

    let listed = |actor: &Actor| h.plane.run(|cx| QuotaService.list_quotas(cx, actor, None)).unwrap().len();
    assert_eq!((listed(&op), listed(&alice), listed(&bob)), (1, 1, 0));
    let bobs_view = h.plane.run(|cx| QuotaService.list_quotas(cx, &bob, Some("alice"))).unwrap_err();
    assert_eq!(bobs_view.code, ErrorCode::NotOwner);
    let patch = QuotaPatch { monthly_bytes: Some(5), clear_period_usage: None };
    let patched = h.plane.run(|cx| QuotaService.patch_quota(cx, &alice, "alice", "edge-01", &patch));
    assert_eq!(patched.unwrap_err().code, ErrorCode::NotOwner);
}

#[test]
fn metering_exhausts_a_pair_a_credit_resumes_it_and_the_period_rolls_over() {
    let h = harness();
    let (edge, _) = enrolled(&h, "edge-01");
    user(&h, "alice");
    grant(&h, "alice", "edge-01");
    let op = Actor::operator();
    let alice = crate::ids::UserId::new("alice");
    h.plane.run(|cx| QuotaService.set_quota(cx, &op, "alice", "edge-01", &spec(1_000))).unwrap();

    let report =
        |bytes| h.plane.run(|cx| QuotaService.record_usage(cx, &alice, &edge, bytes)).unwrap().unwrap();
    assert_eq!(report(700).decisions.thresholds_crossed, Vec::<Threshold>::new());
    let crossed = report(150);
    assert_eq!(crossed.decisions.thresholds_crossed, vec![Threshold::ALL[0]]);
    let out = report(200);
    assert!(out.decisions.became_exhausted && out.quota.state.is_exhausted());
    assert_eq!(h.store.get_quota(&alice, &edge).unwrap().unwrap().state.used_bytes(), 1_050, "persisted");

    let credit = QuotaPatch { monthly_bytes: None, clear_period_usage: Some(true) };
    let credited = h.plane.run(|cx| QuotaService.patch_quota(cx, &op, "alice", "edge-01", &credit)).unwrap();
    assert!(credited.decisions.resumed && credited.quota.state.used_bytes() == 0);
    assert!(report(1_000).decisions.became_exhausted);

    // Nothing is due before the period ends; after it, one call starts the next period.
    let due = QuotaService.next_rollover(&*h.store).unwrap().unwrap();
    assert!(h.plane.run(|cx| QuotaService.roll_periods(cx)).unwrap().is_empty());
    h.clock.advance(Duration::from_millis(due.since(crate::ports::Clock::now(&*h.clock)).as_millis() as u64));
    let rolled = h.plane.run(|cx| QuotaService.roll_periods(cx)).unwrap();
    assert_eq!(rolled.len(), 1);
    assert!(rolled[0].decisions.rolled_over.is_some() && rolled[0].decisions.resumed);
    let stored = h.store.get_quota(&alice, &edge).unwrap().unwrap();
    assert_eq!((stored.state.used_bytes(), stored.state.is_exhausted()), (0, false));

    // Removing it unmeters the pair.
    h.plane.run(|cx| QuotaService.delete_quota(cx, &op, "alice", "edge-01")).unwrap();
    assert!(h.plane.run(|cx| QuotaService.record_usage(cx, &alice, &edge, 10)).unwrap().is_none());
    let again = h.plane.run(|cx| QuotaService.delete_quota(cx, &op, "alice", "edge-01")).unwrap_err();
    assert_eq!(again.code, ErrorCode::QuotaNotFound);
}

#[test]
fn a_minute_written_twice_adds_up_and_an_hour_rolls_up_once_however_often_it_runs() {
    use crate::history::{Bucket, TrafficKey, TrafficQuery, TrafficSample};
    use crate::ports::HistoryStore;
    use crate::service::{HistoryService, TrafficScope};
    let h = harness();
    let (edge, _) = enrolled(&h, "edge-01");
    let alice = user(&h, "alice");
    let now = crate::ports::Clock::now(&*h.clock);
    let minute = Bucket::Minute.start_of(now);
    let sample = |user: &str, bytes| TrafficSample {
        bucket: Bucket::Minute,
        start: minute,
        key: TrafficKey {
            user: crate::ids::UserId::new(user),
            client: edge.clone(),
            rule: crate::ids::RuleId::new(1),
        },
        bytes_in: bytes,
        bytes_out: 0,
    };
    h.plane.run(|cx| HistoryService.record_minutes(cx, vec![sample("alice", 5), sample("bob", 1)])).unwrap();
    h.plane.run(|cx| HistoryService.record_minutes(cx, vec![sample("alice", 7)])).unwrap();
    let stored = h
        .store
        .traffic_samples(Bucket::Minute, minute, crate::ids::Timestamp::from_millis(u64::MAX))
        .unwrap();
    assert_eq!(stored.iter().map(|s| s.bytes_in).collect::<Vec<_>>(), [12, 1]);

    let hour = Bucket::Hour.start_of(now);
    for _ in 0..2 {
        assert_eq!(h.plane.run(|cx| HistoryService.roll_up(cx, hour)).unwrap(), 2);
    }
    let hours =
        h.store.traffic_samples(Bucket::Hour, hour, crate::ids::Timestamp::from_millis(u64::MAX)).unwrap();
    assert_eq!(hours.iter().map(|s| s.bytes_in).collect::<Vec<_>>(), [12, 1]);

    // A user sees their own rules' traffic only, and may not ask for another's.
    let secs = (now.as_millis() / 1_000) as i64;
    let query = || TrafficQuery::new(secs - 60, secs + 60, Some(Bucket::Minute), now).unwrap();
    let own =
        h.plane.run(|cx| HistoryService.traffic(cx, &alice, query(), &TrafficScope::default())).unwrap();
    assert_eq!((own.samples.len(), own.total_bytes_in), (1, 12));
    let all =
        h.plane.run(|cx| HistoryService.traffic(cx, &Actor::operator(), query(), &TrafficScope::default()));
    assert_eq!(all.unwrap().total_bytes_in, 13);
    let bobs = TrafficScope { user: Some("bob".into()), client: None };
    let denied = h.plane.run(|cx| HistoryService.traffic(cx, &alice, query(), &bobs)).unwrap_err();
    assert_eq!(denied.code, ErrorCode::NotOwner);
}

#[test]
fn a_deleted_user_or_client_takes_its_quotas_along() {
    let h = harness();
    enrolled(&h, "edge-01");
    enrolled(&h, "edge-02");
    user(&h, "alice");
    user(&h, "bob");
    let op = Actor::operator();
    for (who, client) in [("alice", "edge-01"), ("bob", "edge-01"), ("bob", "edge-02")] {
        grant(&h, who, client);
        h.plane.run(|cx| QuotaService.set_quota(cx, &op, who, client, &spec(1_000))).unwrap();
    }
    h.plane.run(|cx| h.plane.accounts.delete_user(cx, &op, "alice")).unwrap();
    let left = |h: &super::Harness| -> Vec<(String, String)> {
        h.store
            .list_quotas()
            .unwrap()
            .into_iter()
            .map(|q| (q.user.to_string(), q.client.to_string()))
            .collect()
    };
    assert_eq!(left(&h).len(), 2);
    assert!(left(&h).iter().all(|(u, _)| u == "bob"));
    h.plane.run(|cx| h.plane.clients.revoke(cx, &op, "edge-02")).unwrap();
    h.plane.run(|cx| h.plane.clients.delete_client(cx, &op, "edge-02")).unwrap();
    assert_eq!(left(&h).len(), 1, "only bob's on edge-01 is left");
}
