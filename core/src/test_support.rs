//! Test doubles for the ports, and the contract every `Store` adapter must pass.
//!
//! The in-memory store passes the same contract as the redb adapter, so tests built on it
//! say something about the real thing.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::capability::{Capability, CapabilitySet};
use crate::client::{Client, Enrollment};
use crate::ids::{ClientId, ClientName, RuleId, Timestamp, UserId};
use crate::ports::{
    BoxFuture, ClientCommand, ClientLink, ClientStore, Clock, DisconnectReason, EnrollmentStore, Entropy,
    NotConnected, RuleStore, SessionInfo, Store, StoreError, Write,
};
use crate::rule::{ListenSpec, Protocol, Rule, RuleDef, RuleLimits, RuleSpec, RuleState};
use crate::secret::SecretHash;
use crate::stats::RuleTotals;

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

#[derive(Default)]
struct MemoryState {
    clients: BTreeMap<ClientId, Client>,
    rules: BTreeMap<RuleId, Rule>,
    enrollments: BTreeMap<String, Enrollment>,
    totals: BTreeMap<RuleId, RuleTotals>,
    next_rule: u64,
}

/// A `Store` in memory.
#[derive(Default)]
pub struct MemoryStore(Mutex<MemoryState>);

impl MemoryStore {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.0.lock().expect("memory store lock")
    }
}

impl ClientStore for MemoryStore {
    fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        Ok(self.state().clients.get(id).cloned())
    }
    fn client_by_name(&self, name: &ClientName) -> Result<Option<Client>, StoreError> {
        Ok(self.state().clients.values().find(|c| &c.name == name).cloned())
    }
    fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let mut all: Vec<Client> = self.state().clients.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}

impl RuleStore for MemoryStore {
    fn get_rule(&self, id: RuleId) -> Result<Option<Rule>, StoreError> {
        Ok(self.state().rules.get(&id).cloned())
    }
    fn list_rules(&self) -> Result<Vec<Rule>, StoreError> {
        Ok(self.state().rules.values().cloned().collect())
    }
    fn rules_for_client(&self, client: &ClientId) -> Result<Vec<Rule>, StoreError> {
        Ok(self.state().rules.values().filter(|r| &r.client == client).cloned().collect())
    }
    fn list_totals(&self) -> Result<Vec<(RuleId, RuleTotals)>, StoreError> {
        Ok(self.state().totals.iter().map(|(k, v)| (*k, v.clone())).collect())
    }
}

impl EnrollmentStore for MemoryStore {
    fn get_enrollment(&self, code_hash: &SecretHash) -> Result<Option<Enrollment>, StoreError> {
        Ok(self.state().enrollments.get(code_hash.as_str()).cloned())
    }
}

impl Store for MemoryStore {
    fn next_rule_id(&self) -> Result<RuleId, StoreError> {
        let mut state = self.state();
        state.next_rule += 1;
        Ok(RuleId::new(state.next_rule))
    }

    fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut state = self.state();
        // Like a real store, refuse the whole batch when a client would take a name that
        // another client holds.
        for write in &writes {
            if let Write::PutClient(c) = write
                && state.clients.values().any(|other| other.name == c.name && other.id != c.id)
            {
                return Err(StoreError::Corrupted {
                    detail: format!("name {} is held by another client", c.name),
                });
            }
        }
        for write in writes {
            match write {
                Write::PutClient(c) => {
                    state.clients.insert(c.id.clone(), c);
                }
                Write::PutRule(r) => {
                    state.rules.insert(r.id, r);
                }
                Write::DeleteRule(id) => {
                    state.rules.remove(&id);
                    state.totals.remove(&id);
                }
                Write::PutEnrollment(e) => {
                    state.enrollments.insert(e.code_hash.as_str().to_owned(), e);
                }
                Write::PutTotals(id, t) => {
                    state.totals.insert(id, t);
                }
            }
        }
        Ok(())
    }
}

/// A `ClientLink` whose clients are "connected" by the test, which records every command and
/// answers activation waits with a scripted outcome.
#[derive(Default)]
pub struct FakeLink {
    sessions: Mutex<BTreeMap<ClientId, SessionInfo>>,
    /// Commands sent, in order.
    pub sent: Mutex<Vec<(ClientId, ClientCommand)>>,
    /// Disconnects requested, in order.
    pub disconnects: Mutex<Vec<(ClientId, DisconnectReason)>>,
    /// What `await_outcome` resolves to; `None` simulates a timeout.
    pub outcome: Mutex<Option<RuleState>>,
}

impl FakeLink {
    /// Marks `client` connected with `caps`.
    pub fn connect(&self, client: &ClientId, caps: &[Capability]) {
        let info = SessionInfo {
            capabilities: caps.iter().copied().collect::<CapabilitySet>(),
            version: "test".into(),
            connected_at: Timestamp::from_millis(0),
        };
        self.sessions.lock().unwrap().insert(client.clone(), info);
    }
    /// Marks `client` disconnected.
    pub fn drop_session(&self, client: &ClientId) {
        self.sessions.lock().unwrap().remove(client);
    }
}

impl ClientLink for FakeLink {
    fn session(&self, client: &ClientId) -> Option<SessionInfo> {
        self.sessions.lock().unwrap().get(client).cloned()
    }
    fn send(&self, client: &ClientId, command: ClientCommand) -> Result<(), NotConnected> {
        if !self.sessions.lock().unwrap().contains_key(client) {
            return Err(NotConnected);
        }
        self.sent.lock().unwrap().push((client.clone(), command));
        Ok(())
    }
    fn disconnect(&self, client: &ClientId, reason: DisconnectReason) {
        self.sessions.lock().unwrap().remove(client);
        self.disconnects.lock().unwrap().push((client.clone(), reason));
    }
    fn await_outcome(&self, _rule: RuleId, _timeout: Duration) -> BoxFuture<'static, Option<RuleState>> {
        let outcome = self.outcome.lock().unwrap().clone();
        Box::pin(std::future::ready(outcome))
    }
}

/// Runs a future to completion on the current thread (core has no runtime).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
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
    a_name_held_by_another_client_refuses_the_whole_batch(&*make());
    listings_are_ordered(&*make());
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

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_passes_the_store_contract() {
        super::store_contract(&|| Box::new(super::MemoryStore::default()));
    }
}
