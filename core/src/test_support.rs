//! Test doubles for the ports, and the contract every `Store` adapter must pass.
//!
//! The in-memory store passes the same contract as the redb adapter, so tests built on it
//! say something about the real thing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::account::{ApiToken, PasswordHash, User, WebSession};
use crate::audit::{AuditQuery, AuditRecord, Outcome};
use crate::capability::{Capability, CapabilitySet};
use crate::client::{Client, Enrollment};
use crate::grant::{Grant, GrantClient};
use crate::ids::{ClientId, ClientName, GrantId, RuleId, SessionId, Timestamp, TokenId, UserId};
use crate::policy::Role;
use crate::ports::{
    ClientCommand, Clock, DisconnectReason, Entropy, PasswordHasher, SessionInfo, Sessions, Store,
    StoreError, StoreTx, Write,
};
use crate::rule::{ListenSpec, Protocol, Rule, RuleDef, RuleLimits, RuleSpec, RuleState};
use crate::secret::SecretHash;
use crate::service::Effect;
use crate::settings::RuntimeSettings;
use crate::stats::RuleTotals;
use crate::throttle::Throttle;

/// A clock that moves only when told.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at `ms` since the epoch.
    pub fn at(ms: u64) -> Self {
        ManualClock(AtomicU64::new(ms))
    }
    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// Deterministic "randomness": a counter spread over the buffer.
#[derive(Debug, Default)]
pub struct CountingEntropy(AtomicU64);

impl Entropy for CountingEntropy {
    fn fill(&self, buf: &mut [u8]) {
        let n = self.0.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (n.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(i as u32 * 7) >> 3) as u8;
        }
    }
}

/// A password "hash" that is the SHA-256 of the password: fast, for core's tests only.
#[derive(Debug, Default)]
pub struct FakeHasher;

impl PasswordHasher for FakeHasher {
    fn hash(&self, password: &str) -> Result<PasswordHash, crate::Failure> {
        Ok(PasswordHash::new(format!("$fake${}", crate::secret::sha256_hex(password.as_bytes()))))
    }
    fn verify(&self, password: &str, hash: &PasswordHash) -> bool {
        hash.as_str().strip_prefix("$fake$").is_some_and(|hex| {
            crate::secret::constant_time_eq(
                hex.as_bytes(),
                crate::secret::sha256_hex(password.as_bytes()).as_bytes(),
            )
        })
    }
}

pub use crate::memory::MemoryStore;

/// Sessions "connected" by the test, which records every command and disconnect it is
/// asked to perform and answers pushes with a scripted outcome.
#[derive(Default)]
pub struct FakeSessions {
    sessions: Mutex<BTreeMap<ClientId, SessionInfo>>,
    /// Commands sent, in order.
    pub sent: Mutex<Vec<(ClientId, ClientCommand)>>,
    /// Disconnects requested, in order.
    pub disconnects: Mutex<Vec<(ClientId, DisconnectReason)>>,
    /// What a push's wait resolves to; `None` simulates a timeout.
    pub outcome: Mutex<Option<RuleState>>,
}

/// The client process instance of every session [`FakeSessions::connect`] makes.
pub const FAKE_INSTANCE: u64 = 1;

impl FakeSessions {
    /// Marks `client` connected with `caps`.
    pub fn connect(&self, client: &ClientId, caps: &[Capability]) {
        let info = SessionInfo {
            capabilities: caps.iter().copied().collect::<CapabilitySet>(),
            version: "test".into(),
            connected_at: Timestamp::from_millis(0),
            instance: FAKE_INSTANCE,
        };
        self.sessions.lock().unwrap().insert(client.clone(), info);
    }
    /// Marks `client` disconnected.
    pub fn drop_session(&self, client: &ClientId) {
        self.sessions.lock().unwrap().remove(client);
    }
    /// Performs an effect the way the runtime would: false when a command found no stream.
    pub fn perform(&self, effect: &Effect) -> bool {
        match effect {
            Effect::Send { client, command } => {
                if !self.sessions.lock().unwrap().contains_key(client) {
                    return false;
                }
                self.sent.lock().unwrap().push((client.clone(), command.clone()));
            }
            Effect::Disconnect { client, reason } => {
                self.sessions.lock().unwrap().remove(client);
                self.disconnects.lock().unwrap().push((client.clone(), *reason));
            }
            Effect::ForgetRules(_) => {}
        }
        true
    }
}

impl Sessions for FakeSessions {
    fn session(&self, client: &ClientId) -> Option<SessionInfo> {
        self.sessions.lock().unwrap().get(client).cloned()
    }
}

/// A TCP rule on `port` to `127.0.0.1:9`.
pub fn tcp_rule(port: i64) -> RuleDef {
    RuleSpec {
        name: None,
        protocol: Protocol::Tcp,
        listen_port: ListenSpec::Port(port),
        listen_addr: None,
        target: Some("127.0.0.1:9".into()),
        targets: vec![],
        prefer_ipv6: false,
        health_check_interval_secs: None,
        sni_pattern: None,
        sni_fallback: false,
        rate_limit: None,
    }
    .validate(RuleLimits::default())
    .expect("valid literal rule")
}

fn sample_client(n: u8, name: &str) -> Client {
    Client {
        id: ClientId::from_random([n; 10]),
        name: ClientName::parse(name).expect("valid name"),
        token: Some(SecretHash::of("token")),
        revoked_at: None,
        created_at: Timestamp::from_millis(1),
        last_seen_at: None,
        version: None,
    }
}

fn sample_rule(id: RuleId, client: &ClientId, port: i64) -> Rule {
    Rule {
        id,
        client: client.clone(),
        owner: UserId::operator(),
        def: tcp_rule(port),
        state: RuleState::Pending,
        created_at: Timestamp::from_millis(2),
        updated_at: Timestamp::from_millis(2),
    }
}

/// The `Store` contract. `make` returns a fresh, empty store each call.
pub fn store_contract(make: &dyn Fn() -> Box<dyn Store>) {
    put_then_get_round_trips(&*make());
    rule_ids_increase_and_are_never_reused(&*make());
    rename_moves_the_name_index(&*make());
    delete_rule_removes_its_totals_and_is_idempotent(&*make());
    a_clients_rules_and_counts_follow_puts_moves_and_deletes(&*make());
    a_transaction_reads_its_own_writes_and_a_failed_one_writes_nothing(&*make());
    a_name_held_by_another_client_refuses_the_whole_batch(&*make());
    listings_are_ordered(&*make());
    delete_client_frees_its_name(&*make());
    accounts_round_trip_and_delete(&*make());
    audit_appends_in_order_and_pages(&*make());
    settings_and_throttles_round_trip(&*make());
    quotas_round_trip_and_list_by_user_then_client(&*make());
    traffic_samples_range_replace_and_prune_per_bucket(&*make());
}

fn traffic_samples_range_replace_and_prune_per_bucket(store: &dyn Store) {
    use crate::history::{Bucket, TrafficKey, TrafficSample};
    let sample = |bucket, secs: u64, user: &str, rule: u64, bytes| TrafficSample {
        bucket,
        start: Timestamp::from_millis(secs * 1_000),
        key: TrafficKey {
            user: UserId::new(user),
            client: sample_client(1, "edge-01").id,
            rule: RuleId::new(rule),
        },
        bytes_in: bytes,
        bytes_out: 1,
    };
    let at = |secs: u64| Timestamp::from_millis(secs * 1_000);
    let writes = vec![
        sample(Bucket::Minute, 120, "bob", 2, 5),
        sample(Bucket::Minute, 60, "alice", 1, 3),
        sample(Bucket::Minute, 60, "alice", 2, 4),
        sample(Bucket::Minute, 180, "alice", 1, 6),
        sample(Bucket::Hour, 0, "alice", 1, 7),
    ];
    store.commit(writes.into_iter().map(Write::PutTrafficSample).collect()).unwrap();
    let bytes = |bucket, from, to| -> Vec<u64> {
        store.traffic_samples(bucket, at(from), at(to)).unwrap().iter().map(|s| s.bytes_in).collect()
    };
    assert_eq!(bytes(Bucket::Minute, 60, 180), [3, 4, 5], "oldest first, the end excluded");
    assert_eq!(bytes(Bucket::Hour, 0, 3_600), [7], "the buckets are apart");
    assert!(bytes(Bucket::Minute, 180, 180).is_empty());
    store.commit(vec![Write::PutTrafficSample(sample(Bucket::Minute, 60, "alice", 1, 30))]).unwrap();
    assert_eq!(bytes(Bucket::Minute, 60, 61), [30, 4], "a sample's key replaces it");
    store.commit(vec![Write::PruneTraffic { bucket: Bucket::Minute, before: at(180) }]).unwrap();
    assert_eq!(bytes(Bucket::Minute, 0, 3_600), [6]);
    assert_eq!(bytes(Bucket::Hour, 0, 3_600), [7], "a prune keeps to its bucket");
}

fn quotas_round_trip_and_list_by_user_then_client(store: &dyn Store) {
    use crate::quota::{Quota, QuotaSpec, QuotaState};
    let quota = |user: &str, client: u8, bytes: u64| {
        let terms =
            QuotaSpec { monthly_bytes: bytes, billing_anchor: Some(1_800_000_000) }.validate().unwrap();
        Quota {
            user: UserId::new(user),
            client: sample_client(client, &format!("edge-{client:02}")).id,
            created_at: Timestamp::from_millis(5),
            state: QuotaState::new(terms, Timestamp::from_millis(1_800_000_000_000)),
        }
    };
    // "alice" sorts before "alice.ops", whose quota is written first.
    let (a1, a2, b) = (quota("alice", 2, 100), quota("alice", 1, 200), quota("alice.ops", 1, 300));
    store
        .commit(vec![Write::PutQuota(b.clone()), Write::PutQuota(a1.clone()), Write::PutQuota(a2.clone())])
        .unwrap();
    assert_eq!(store.get_quota(&a1.user, &a1.client).unwrap(), Some(a1.clone()));
    assert_eq!(store.get_quota(&b.user, &a1.client).unwrap(), None);
    let listed: Vec<(String, String)> = store
        .list_quotas()
        .unwrap()
        .into_iter()
        .map(|q| (q.user.as_str().to_owned(), q.client.as_str().to_owned()))
        .collect();
    let mut expected: Vec<(String, String)> =
        [&a1, &a2, &b].iter().map(|q| (q.user.as_str().to_owned(), q.client.as_str().to_owned())).collect();
    expected.sort();
    assert_eq!(listed, expected);
    let replaced = Quota { created_at: Timestamp::from_millis(6), ..a1.clone() };
    store.commit(vec![Write::PutQuota(replaced.clone())]).unwrap();
    assert_eq!(store.get_quota(&a1.user, &a1.client).unwrap(), Some(replaced));
    store.commit(vec![Write::DeleteQuota(a1.user.clone(), a1.client.clone())]).unwrap();
    store.commit(vec![Write::DeleteQuota(a1.user.clone(), a1.client.clone())]).unwrap();
    assert_eq!(store.get_quota(&a1.user, &a1.client).unwrap(), None);
    assert_eq!(store.list_quotas().unwrap().len(), 2);
}

fn delete_client_frees_its_name(store: &dyn Store) {
    let first = sample_client(8, "reused");
    store.commit(vec![Write::PutClient(first.clone())]).unwrap();
    store.commit(vec![Write::DeleteClient(first.id.clone())]).unwrap();
    store.commit(vec![Write::DeleteClient(first.id.clone())]).unwrap();
    assert_eq!(store.get_client(&first.id).unwrap(), None);
    assert_eq!(store.client_by_name(&first.name).unwrap(), None);
    let second = sample_client(9, "reused");
    store.commit(vec![Write::PutClient(second.clone())]).unwrap();
    assert_eq!(store.client_by_name(&second.name).unwrap(), Some(second));
}

/// A user with an API token, a session and a grant.
pub fn sample_account(name: &str) -> (User, ApiToken, WebSession, Grant) {
    let user = User {
        id: UserId::new(name),
        role: Role::User,
        password: Some(PasswordHash::new("$fake$00")),
        must_change_password: false,
        created_at: Timestamp::from_millis(5),
    };
    let n = name.as_bytes().first().copied().unwrap_or(0);
    let token = ApiToken {
        id: TokenId::from_random([n; 8]),
        user: user.id.clone(),
        hash: SecretHash::of(name),
        name: Some("ci".into()),
        created_at: Timestamp::from_millis(6),
    };
    let session = WebSession {
        id: SessionId::from_random([n; 16]),
        user: user.id.clone(),
        hash: SecretHash::of(name),
        csrf: SecretHash::of("csrf"),
        created_at: Timestamp::from_millis(7),
        expires_at: Timestamp::from_millis(8),
    };
    let grant = Grant {
        id: GrantId::from_random([n; 8]),
        user: user.id.clone(),
        client: GrantClient::Any,
        ports: crate::rule::PortRange::new(1000, 1999).expect("valid range"),
        protocols: vec![Protocol::Tcp],
        created_at: Timestamp::from_millis(9),
    };
    (user, token, session, grant)
}

fn accounts_round_trip_and_delete(store: &dyn Store) {
    let (alice, a_token, a_session, a_grant) = sample_account("alice");
    let (bob, b_token, b_session, b_grant) = sample_account("bobby");
    store
        .commit(vec![
            Write::PutUser(bob.clone()),
            Write::PutUser(alice.clone()),
            Write::PutApiToken(a_token.clone()),
            Write::PutApiToken(b_token.clone()),
            Write::PutSession(a_session.clone()),
            Write::PutSession(b_session.clone()),
            Write::PutGrant(a_grant.clone()),
            Write::PutGrant(b_grant.clone()),
        ])
        .unwrap();
    assert_eq!(store.get_user(&alice.id).unwrap(), Some(alice.clone()));
    let ids: Vec<UserId> = store.list_users().unwrap().into_iter().map(|u| u.id).collect();
    assert_eq!(ids, vec![alice.id.clone(), bob.id.clone()]);
    assert_eq!(store.get_api_token(&a_token.id).unwrap(), Some(a_token.clone()));
    assert_eq!(store.get_session(&b_session.id).unwrap(), Some(b_session.clone()));
    assert_eq!(store.get_grant(&a_grant.id).unwrap(), Some(a_grant.clone()));
    let mut grant_ids = vec![a_grant.id.clone(), b_grant.id.clone()];
    grant_ids.sort();
    assert_eq!(store.list_grants().unwrap().into_iter().map(|g| g.id).collect::<Vec<_>>(), grant_ids);
    assert_eq!(store.list_api_tokens().unwrap().len(), 2);
    assert_eq!(store.list_sessions().unwrap().len(), 2);
    store
        .commit(vec![
            Write::DeleteUser(alice.id.clone()),
            Write::DeleteApiToken(a_token.id.clone()),
            Write::DeleteSession(a_session.id.clone()),
            Write::DeleteGrant(a_grant.id.clone()),
            Write::DeleteGrant(a_grant.id.clone()),
        ])
        .unwrap();
    assert_eq!(store.get_user(&alice.id).unwrap(), None);
    assert_eq!(store.get_api_token(&a_token.id).unwrap(), None);
    assert_eq!(store.get_session(&a_session.id).unwrap(), None);
    assert_eq!(store.get_grant(&a_grant.id).unwrap(), None);
    assert_eq!(store.get_user(&bob.id).unwrap(), Some(bob));
}

fn audit_appends_in_order_and_pages(store: &dyn Store) {
    let record = |n: u64, code: Option<crate::ErrorCode>| {
        let mut r = AuditRecord::new("alice", "rule.push", Some("x"), code, None, Timestamp::from_millis(n));
        r.seq = 999; // ignored: the store numbers records
        r
    };
    store.commit(vec![Write::AppendAudit(record(10, None)), Write::AppendAudit(record(20, None))]).unwrap();
    store.commit(vec![Write::AppendAudit(record(30, Some(crate::ErrorCode::NotOwner)))]).unwrap();
    let all = AuditQuery::new(None, None, None, None, None).unwrap();
    let page = store.audit_page(&all).unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(page[2].outcome, Outcome::Denied);
    let after_first = AuditQuery { after: Some(1), limit: 1, ..all.clone() };
    assert_eq!(store.audit_page(&after_first).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
    let denied = AuditQuery { outcome: Some(Outcome::Denied), ..all.clone() };
    assert_eq!(store.audit_page(&denied).unwrap().len(), 1);
    let window =
        AuditQuery { from: Some(Timestamp::from_millis(15)), to: Some(Timestamp::from_millis(30)), ..all };
    assert_eq!(store.audit_page(&window).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
}

fn settings_and_throttles_round_trip(store: &dyn Store) {
    assert_eq!(store.runtime_settings().unwrap(), RuntimeSettings::default());
    let settings = RuntimeSettings {
        advertised_endpoint: Some("proxy.example.com:7443".into()),
        onboarding: crate::settings::Onboarding {
            completed_at: Some(Timestamp::from_millis(3)),
            ..Default::default()
        },
    };
    store.commit(vec![Write::PutSettings(settings.clone())]).unwrap();
    assert_eq!(store.runtime_settings().unwrap(), settings);
    let mut throttle = Throttle::default();
    throttle.on_failure(Timestamp::from_millis(1));
    store.commit(vec![Write::PutThrottle("login:ip:127.0.0.1".into(), throttle.clone())]).unwrap();
    assert_eq!(store.get_throttle("login:ip:127.0.0.1").unwrap(), Some(throttle));
    store.commit(vec![Write::DeleteThrottle("login:ip:127.0.0.1".into())]).unwrap();
    assert_eq!(store.get_throttle("login:ip:127.0.0.1").unwrap(), None);
}

fn put_then_get_round_trips(store: &dyn Store) {
    let client = sample_client(1, "edge-01");
    let rule = sample_rule(store.next_rule_id().unwrap(), &client.id, 18080);
    let enrollment = Enrollment {
        code_hash: SecretHash::of("code"),
        client: client.id.clone(),
        created_at: Timestamp::from_millis(3),
        expires_at: Timestamp::from_millis(4),
        endpoint: "127.0.0.1:7443".into(),
        consumed_at: None,
    };
    store
        .commit(vec![
            Write::PutClient(client.clone()),
            Write::PutRule(rule.clone()),
            Write::PutEnrollment(enrollment.clone()),
        ])
        .unwrap();
    assert_eq!(store.get_client(&client.id).unwrap(), Some(client.clone()));
    assert_eq!(store.client_by_name(&client.name).unwrap(), Some(client.clone()));
    assert_eq!(store.get_rule(rule.id).unwrap(), Some(rule.clone()));
    assert_eq!(store.rules_for_client(&client.id).unwrap(), vec![rule]);
    assert_eq!(store.get_enrollment(&SecretHash::of("code")).unwrap(), Some(enrollment));
    assert_eq!(store.get_enrollment(&SecretHash::of("other")).unwrap(), None);
}

fn rule_ids_increase_and_are_never_reused(store: &dyn Store) {
    let a = store.next_rule_id().unwrap();
    let b = store.next_rule_id().unwrap();
    assert!(b > a);
    store.commit(vec![Write::DeleteRule(b)]).unwrap();
    assert!(store.next_rule_id().unwrap() > b);
}

fn rename_moves_the_name_index(store: &dyn Store) {
    let mut client = sample_client(2, "old-name");
    store.commit(vec![Write::PutClient(client.clone())]).unwrap();
    client.name = ClientName::parse("new-name").unwrap();
    store.commit(vec![Write::PutClient(client.clone())]).unwrap();
    assert_eq!(store.client_by_name(&ClientName::parse("old-name").unwrap()).unwrap(), None);
    assert_eq!(store.client_by_name(&client.name).unwrap(), Some(client));
}

fn delete_rule_removes_its_totals_and_is_idempotent(store: &dyn Store) {
    let client = sample_client(3, "edge-03");
    let rule = sample_rule(store.next_rule_id().unwrap(), &client.id, 1);
    store
        .commit(vec![Write::PutRule(rule.clone()), Write::PutTotals(rule.id, RuleTotals::default())])
        .unwrap();
    assert_eq!(store.list_totals().unwrap().len(), 1);
    store.commit(vec![Write::DeleteRule(rule.id)]).unwrap();
    store.commit(vec![Write::DeleteRule(rule.id)]).unwrap();
    assert_eq!(store.get_rule(rule.id).unwrap(), None);
    assert!(store.list_totals().unwrap().is_empty());
    assert!(store.rules_for_client(&client.id).unwrap().is_empty(), "the per-client view forgets it");
    assert_eq!(store.rule_counts().unwrap().get(&client.id), None);
}

fn a_clients_rules_and_counts_follow_puts_moves_and_deletes(store: &dyn Store) {
    let a = sample_client(10, "edge-a");
    let b = sample_client(11, "edge-b");
    let r1 = sample_rule(store.next_rule_id().unwrap(), &a.id, 1);
    let r2 = sample_rule(store.next_rule_id().unwrap(), &a.id, 2);
    let r3 = sample_rule(store.next_rule_id().unwrap(), &b.id, 1);
    store
        .commit(vec![Write::PutRule(r1.clone()), Write::PutRule(r2.clone()), Write::PutRule(r3.clone())])
        .unwrap();
    assert_eq!(store.rules_for_client(&a.id).unwrap(), vec![r1.clone(), r2.clone()]);
    let counts = store.rule_counts().unwrap();
    assert_eq!((counts.get(&a.id), counts.get(&b.id)), (Some(&2), Some(&1)));
    // Rewriting a rule keeps one entry; a rule given to another client moves.
    let moved = Rule { client: b.id.clone(), ..r2.clone() };
    store.commit(vec![Write::PutRule(r1.clone()), Write::PutRule(moved.clone())]).unwrap();
    assert_eq!(store.rules_for_client(&a.id).unwrap(), vec![r1.clone()]);
    assert_eq!(store.rules_for_client(&b.id).unwrap(), vec![moved, r3]);
    store.commit(vec![Write::DeleteRule(r1.id)]).unwrap();
    assert_eq!(store.rule_counts().unwrap().get(&a.id), None);
}

fn a_transaction_reads_its_own_writes_and_a_failed_one_writes_nothing(store: &dyn Store) {
    let client = sample_client(12, "edge-tx");
    store
        .transact(&mut |tx| {
            tx.apply(vec![Write::PutClient(client.clone())])?;
            assert_eq!(
                tx.client_by_name(&client.name)?,
                Some(client.clone()),
                "a transaction sees its writes"
            );
            let rule = sample_rule(tx.next_rule_id()?, &client.id, 5);
            tx.apply(vec![Write::PutRule(rule)])?;
            assert_eq!(tx.rules_for_client(&client.id)?.len(), 1);
            Ok(())
        })
        .unwrap();
    assert_eq!(store.rules_for_client(&client.id).unwrap().len(), 1);
    let doomed = sample_client(13, "edge-doomed");
    let refused = store.transact(&mut |tx| {
        tx.apply(vec![Write::PutClient(doomed.clone())])?;
        Err(StoreError::Corrupted { detail: "the work failed".into() })
    });
    assert!(refused.is_err());
    assert_eq!(store.get_client(&doomed.id).unwrap(), None, "nothing of a failed transaction is written");
}

fn a_name_held_by_another_client_refuses_the_whole_batch(store: &dyn Store) {
    let first = sample_client(6, "taken");
    store.commit(vec![Write::PutClient(first.clone())]).unwrap();
    let mut second = sample_client(7, "free");
    let rule = sample_rule(store.next_rule_id().unwrap(), &second.id, 1);
    second.name = first.name.clone();
    assert!(store.commit(vec![Write::PutRule(rule.clone()), Write::PutClient(second.clone())]).is_err());
    assert_eq!(store.get_rule(rule.id).unwrap(), None, "nothing of a refused batch is applied");
    assert_eq!(store.get_client(&second.id).unwrap(), None);
    assert_eq!(store.client_by_name(&first.name).unwrap(), Some(first));
}

fn listings_are_ordered(store: &dyn Store) {
    let b = sample_client(4, "bbb");
    let a = sample_client(5, "aaa");
    let ids: Vec<RuleId> = (0..3).map(|_| store.next_rule_id().unwrap()).collect();
    let writes = vec![
        Write::PutClient(b.clone()),
        Write::PutClient(a.clone()),
        Write::PutRule(sample_rule(ids[2], &a.id, 3)),
        Write::PutRule(sample_rule(ids[0], &b.id, 1)),
        Write::PutRule(sample_rule(ids[1], &a.id, 2)),
    ];
    store.commit(writes).unwrap();
    let names: Vec<String> = store.list_clients().unwrap().into_iter().map(|c| c.name.to_string()).collect();
    assert_eq!(names, vec!["aaa", "bbb"]);
    let rule_ids: Vec<RuleId> = store.list_rules().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(rule_ids, ids);
    let for_a: Vec<RuleId> = store.rules_for_client(&a.id).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(for_a, vec![ids[1], ids[2]]);
}

/// The control plane driven synchronously, the way the async runtime drives it: each
/// mutation runs in one store transaction, its staged batch is applied in it, and its
/// effects are performed after the commit. Pushes get their outcome from
/// [`FakeSessions::outcome`]. For tests and for embedders who want to see the shape.
pub struct Plane {
    /// The store.
    pub store: std::sync::Arc<MemoryStore>,
    /// The live sessions.
    pub sessions: std::sync::Arc<FakeSessions>,
    /// The time.
    pub clock: std::sync::Arc<ManualClock>,
    /// Clients and their streams.
    pub clients: crate::service::ClientService,
    /// Rules.
    pub rules: crate::service::RuleService,
    /// Accounts, grants, tokens, authentication.
    pub accounts: crate::service::AccountService,
    /// Settings, audit, metrics.
    pub admin: crate::service::AdminService,
    /// Traffic folded from reports, as the runtime keeps it.
    pub stats: Mutex<crate::stats::StatsBook>,
}

impl Plane {
    /// A plane over `store` with the default settings, a loopback identity and the operator
    /// token `operator-secret`.
    pub fn new(
        store: std::sync::Arc<MemoryStore>,
        sessions: std::sync::Arc<FakeSessions>,
        clock: std::sync::Arc<ManualClock>,
    ) -> Self {
        use std::sync::Arc;
        let settings = crate::config::ServerSettings::resolve(Default::default()).expect("default settings");
        let identity = crate::service::ServerIdentity {
            cert_sha256: "ab".repeat(32),
            sans: vec![crate::endpoint::San::Ip("127.0.0.1".parse().expect("ip"))],
            control_addr: "0.0.0.0:7443".parse().expect("addr"),
        };
        let entropy: Arc<dyn Entropy> = Arc::new(CountingEntropy::default());
        let stats = crate::ports::RuleStore::list_totals(&*store).expect("totals").into_iter().collect();
        Plane {
            clients: crate::service::ClientService::new(settings.clone(), identity.clone(), entropy.clone()),
            rules: crate::service::RuleService::new(&settings),
            accounts: crate::service::AccountService::new(
                entropy,
                Arc::new(FakeHasher),
                SecretHash::of("operator-secret"),
            ),
            admin: crate::service::AdminService::new(settings, identity),
            store,
            sessions,
            clock,
            stats: Mutex::new(stats),
        }
    }

    /// Runs a mutation in one transaction, commits what it staged, then performs its
    /// effects. Returns the answer and whether every command found its stream.
    pub fn mutate<T>(&self, f: impl FnOnce(&mut crate::service::Cx<'_, dyn StoreTx + '_>) -> T) -> (T, bool) {
        let mut f = Some(f);
        let mut out = None;
        let mut effects = Vec::new();
        self.store
            .transact(&mut |tx| {
                let mut cx = crate::service::Cx::new(tx, &*self.sessions, self.clock.now());
                let answer = (f.take().expect("runs once"))(&mut cx);
                let staged = cx.finish();
                tx.apply(staged.writes)?;
                effects = staged.effects;
                out = Some(answer);
                Ok(())
            })
            .expect("memory store commit");
        let mut delivered = true;
        for effect in &effects {
            if let Effect::ForgetRules(ids) = effect {
                let mut stats = self.stats.lock().unwrap();
                for id in ids {
                    stats.remove(id);
                }
            }
            delivered &= self.sessions.perform(effect);
        }
        (out.expect("the transaction ran"), delivered)
    }

    /// [`Plane::mutate`], answer only.
    pub fn run<T>(&self, f: impl FnOnce(&mut crate::service::Cx<'_, dyn StoreTx + '_>) -> T) -> T {
        self.mutate(f).0
    }

    /// A push, both steps, with the scripted outcome.
    pub fn push_rule(
        &self,
        actor: &crate::policy::Actor,
        client: &str,
        spec: &RuleSpec,
        ack_timeout: Duration,
    ) -> Result<Rule, crate::service::PushFailure> {
        let begun = self.run(|cx| self.rules.begin_push(cx, actor, client, spec, ack_timeout))?;
        let sent = self
            .sessions
            .perform(&Effect::Send { client: begun.rule.client.clone(), command: begun.command.clone() });
        let outcome = match (sent, self.sessions.outcome.lock().unwrap().clone()) {
            (false, _) => crate::service::PushOutcome::NotDelivered,
            (true, Some(state)) => crate::service::PushOutcome::Reported(state),
            (true, None) => crate::service::PushOutcome::TimedOut,
        };
        self.run(|cx| self.rules.complete_push(cx, actor, begun, outcome, ack_timeout)).map(|view| view.rule)
    }

    /// Login, both halves.
    pub fn login(
        &self,
        user: &str,
        password: &str,
        remote: Option<std::net::IpAddr>,
    ) -> Result<crate::service::LoginOutcome, crate::Failure> {
        let prepared = self.accounts.prepare_login(&*self.store, user, password, remote, self.clock.now());
        self.run(|cx| self.accounts.finish_login(cx, user, remote, prepared))
    }

    /// Onboarding, both halves.
    pub fn complete_onboarding(
        &self,
        setup_token: &str,
        user: &str,
        password: &str,
        remote: Option<std::net::IpAddr>,
    ) -> Result<User, crate::Failure> {
        let prepared = self.accounts.prepare_onboarding(
            &*self.store,
            setup_token,
            user,
            password,
            remote,
            self.clock.now(),
        );
        self.run(|cx| self.accounts.finish_onboarding(cx, setup_token, user, remote, prepared))
    }

    /// A password change, both halves.
    pub fn change_password(
        &self,
        actor: &crate::policy::Actor,
        current: &str,
        new: &str,
        session: Option<&SessionId>,
    ) -> Result<(), crate::Failure> {
        let prepared =
            self.accounts.prepare_password_change(&*self.store, actor, current, new, self.clock.now());
        self.run(|cx| self.accounts.finish_password_change(cx, actor, session, prepared))
    }

    /// A new account, both halves.
    pub fn create_user(
        &self,
        actor: &crate::policy::Actor,
        new: &crate::service::NewUser,
    ) -> Result<User, crate::Failure> {
        let prepared = self.accounts.prepare_new_user(actor, new);
        self.run(|cx| self.accounts.create_user(cx, actor, new, prepared))
    }

    /// Folds a client's traffic report in.
    pub fn record_stats(
        &self,
        client: &ClientId,
        reports: Vec<(RuleId, crate::stats::RuleReport)>,
    ) -> Result<(), crate::Failure> {
        let owned = crate::service::owned_reports(&*self.store, client, reports)?;
        let mut stats = self.stats.lock().unwrap();
        for (rule, report) in owned {
            stats.entry(rule).or_default().record(report);
        }
        Ok(())
    }

    /// Persists every rule's totals; returns how many were written.
    pub fn flush_stats(&self) -> Result<usize, crate::Failure> {
        let changed: Vec<_> = self.stats.lock().unwrap().iter().map(|(k, v)| (*k, v.clone())).collect();
        let writes = self.run(|cx| crate::service::flush_writes(cx.store, changed))?;
        let n = writes.len();
        self.store.commit(writes)?;
        Ok(n)
    }

    /// One rule's traffic.
    pub fn rule_stats(
        &self,
        actor: &crate::policy::Actor,
        id: RuleId,
    ) -> Result<crate::service::RuleStatsView, crate::Failure> {
        self.run(|cx| {
            self.rules.rule_stats(cx, actor, id, &|rule| self.stats.lock().unwrap().get(&rule).cloned())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_passes_the_store_contract() {
        super::store_contract(&|| Box::new(super::MemoryStore::default()));
    }
}
