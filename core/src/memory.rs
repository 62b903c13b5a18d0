//! The whole state in memory: [`MemoryState`] (maps of core types that apply write batches
//! with a durable store's semantics and answer every read port) and [`MemoryStore`], a
//! [`Store`] on it. The control runtime keeps a `MemoryState` as its read model; tests and
//! embedders use `MemoryStore`.
//!
//! Invariant: both pass the same store contract as the durable adapter (`test_support`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::account::{ApiToken, User, WebSession};
use crate::audit::{AuditQuery, AuditRecord};
use crate::client::{Client, Enrollment};
use crate::grant::Grant;
use crate::history::{Bucket, TrafficKey, TrafficSample};
use crate::ids::{ClientId, ClientName, GrantId, RuleId, SessionId, Timestamp, TokenId, UserId};
use crate::ports::{
    AuditStore, ClientStore, CredentialStore, EnrollmentStore, GrantStore, HistoryStore, QuotaStore, Reads,
    RuleIds, RuleStore, StateStore, Store, StoreError, StoreTx, UserStore, Write,
};
use crate::quota::Quota;
use crate::rule::Rule;
use crate::secret::SecretHash;
use crate::settings::RuntimeSettings;
use crate::stats::RuleTotals;
use crate::throttle::Throttle;

/// The whole state in memory: maps of core types, the same semantics as a durable store.
#[derive(Debug, Default, Clone)]
pub struct MemoryState {
    clients: BTreeMap<ClientId, Client>,
    /// Client names, for lookups by name and listings in name order.
    names: BTreeMap<ClientName, ClientId>,
    rules: BTreeMap<RuleId, Rule>,
    /// Each client's rules.
    by_client: BTreeMap<ClientId, std::collections::BTreeSet<RuleId>>,
    enrollments: BTreeMap<String, Enrollment>,
    totals: BTreeMap<RuleId, RuleTotals>,
    next_rule: u64,
    users: BTreeMap<UserId, User>,
    grants: BTreeMap<GrantId, Grant>,
    tokens: BTreeMap<TokenId, ApiToken>,
    sessions: BTreeMap<SessionId, WebSession>,
    throttles: BTreeMap<String, Throttle>,
    settings: Option<RuntimeSettings>,
    audit: BTreeMap<u64, AuditRecord>,
    quotas: BTreeMap<(UserId, ClientId), Quota>,
    owner_caps: BTreeMap<(UserId, ClientId), crate::ratelimit::OwnerCaps>,
    traffic: BTreeMap<(Bucket, Timestamp, TrafficKey), TrafficSample>,
}

/// A `Store` in memory (tests, embedders, and the shape of every other store).
///
/// ```
/// use portunus_core::client::Client;
/// use portunus_core::ids::{ClientId, ClientName, Timestamp};
/// use portunus_core::memory::MemoryStore;
/// use portunus_core::ports::{ClientStore, Store, Write};
///
/// let store = MemoryStore::default();
/// let client = Client {
///     id: ClientId::from_random([1; 10]),
///     name: ClientName::parse("edge-01")?,
///     token: None,
///     revoked_at: None,
///     created_at: Timestamp::from_millis(0),
///     last_seen_at: None,
///     version: None,
/// };
/// store.commit(vec![Write::PutClient(client.clone())])?;
/// assert_eq!(store.get_client(&client.id)?, Some(client));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct MemoryStore(Mutex<MemoryState>);

impl MemoryStore {
    fn locked(&self) -> Result<std::sync::MutexGuard<'_, MemoryState>, StoreError> {
        Ok(self.state())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic cannot leave half a batch applied (batches are checked before they are
        // applied), so a poisoned lock is safe to keep using.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientStore for MemoryState {
    fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        Ok(self.clients.get(id).cloned())
    }
    fn client_by_name(&self, name: &ClientName) -> Result<Option<Client>, StoreError> {
        Ok(self.names.get(name).and_then(|id| self.clients.get(id)).cloned())
    }
    fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        Ok(self.names.values().filter_map(|id| self.clients.get(id)).cloned().collect())
    }
    fn client_names(&self) -> Result<BTreeMap<ClientId, String>, StoreError> {
        Ok(self.names.iter().map(|(name, id)| (id.clone(), name.to_string())).collect())
    }
}

impl RuleStore for MemoryState {
    fn get_rule(&self, id: RuleId) -> Result<Option<Rule>, StoreError> {
        Ok(self.rules.get(&id).cloned())
    }
    fn list_rules(&self) -> Result<Vec<Rule>, StoreError> {
        Ok(self.rules.values().cloned().collect())
    }
    fn rules_for_client(&self, client: &ClientId) -> Result<Vec<Rule>, StoreError> {
        let ids = self.by_client.get(client).into_iter().flatten();
        Ok(ids.filter_map(|id| self.rules.get(id)).cloned().collect())
    }
    fn list_totals(&self) -> Result<Vec<(RuleId, RuleTotals)>, StoreError> {
        Ok(self.totals.iter().map(|(k, v)| (*k, v.clone())).collect())
    }
    fn rule_counts(&self) -> Result<BTreeMap<ClientId, usize>, StoreError> {
        Ok(self.by_client.iter().map(|(client, ids)| (client.clone(), ids.len())).collect())
    }
}

impl EnrollmentStore for MemoryState {
    fn get_enrollment(&self, code_hash: &SecretHash) -> Result<Option<Enrollment>, StoreError> {
        Ok(self.enrollments.get(code_hash.as_str()).cloned())
    }
}

impl UserStore for MemoryState {
    fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        Ok(self.users.get(id).cloned())
    }
    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        Ok(self.users.values().cloned().collect())
    }
}

impl GrantStore for MemoryState {
    fn get_grant(&self, id: &GrantId) -> Result<Option<Grant>, StoreError> {
        Ok(self.grants.get(id).cloned())
    }
    fn list_grants(&self) -> Result<Vec<Grant>, StoreError> {
        Ok(self.grants.values().cloned().collect())
    }
}

impl CredentialStore for MemoryState {
    fn get_api_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        Ok(self.tokens.get(id).cloned())
    }
    fn list_api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        Ok(self.tokens.values().cloned().collect())
    }
    fn get_session(&self, id: &SessionId) -> Result<Option<WebSession>, StoreError> {
        Ok(self.sessions.get(id).cloned())
    }
    fn list_sessions(&self) -> Result<Vec<WebSession>, StoreError> {
        Ok(self.sessions.values().cloned().collect())
    }
}

impl AuditStore for MemoryState {
    fn audit_stats(&self) -> Result<crate::audit::AuditStats, StoreError> {
        let bytes =
            self.audit.values().map(|r| 8 + serde_json::to_vec(r).map_or(0, |v| v.len() as u64)).sum();
        Ok(crate::audit::AuditStats { rows: self.audit.len() as u64, bytes })
    }
    fn audit_prune_plan(
        &self,
        before: crate::ids::Timestamp,
        limit: u64,
    ) -> Result<Option<crate::audit::PrunePlan>, StoreError> {
        let newest = self.audit.keys().next_back().copied().unwrap_or(0);
        Ok(crate::audit::plan_prune(self.audit.values().map(|r| (r.seq, r.at)), newest, before, limit))
    }
    fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let state = self;
        let after = query.after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        Ok(state
            .audit
            .range((after, std::ops::Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| query.matches(r))
            .take(query.limit)
            .cloned()
            .collect())
    }
}

impl StateStore for MemoryState {
    fn runtime_settings(&self) -> Result<RuntimeSettings, StoreError> {
        Ok(self.settings.clone().unwrap_or_default())
    }
    fn get_throttle(&self, key: &str) -> Result<Option<Throttle>, StoreError> {
        Ok(self.throttles.get(key).cloned())
    }
}

impl QuotaStore for MemoryState {
    fn get_quota(&self, user: &UserId, client: &ClientId) -> Result<Option<Quota>, StoreError> {
        Ok(self.quotas.get(&(user.clone(), client.clone())).cloned())
    }
    fn list_quotas(&self) -> Result<Vec<Quota>, StoreError> {
        Ok(self.quotas.values().cloned().collect())
    }
}

impl crate::ports::OwnerCapsStore for MemoryState {
    fn get_owner_caps(
        &self,
        user: &UserId,
        client: &ClientId,
    ) -> Result<Option<crate::ratelimit::OwnerCaps>, StoreError> {
        Ok(self.owner_caps.get(&(user.clone(), client.clone())).cloned())
    }
    fn list_owner_caps(&self) -> Result<Vec<crate::ratelimit::OwnerCaps>, StoreError> {
        Ok(self.owner_caps.values().cloned().collect())
    }
}

impl HistoryStore for MemoryState {
    fn traffic_samples(
        &self,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<TrafficSample>, StoreError> {
        Ok(self
            .traffic
            .iter()
            .filter(|((b, start, _), _)| *b == bucket && *start >= from && *start < to)
            .map(|(_, sample)| sample.clone())
            .collect())
    }
}

impl RuleIds for MemoryStore {
    fn next_rule_id(&self) -> Result<RuleId, StoreError> {
        let mut state = self.state();
        state.next_rule += 1;
        Ok(RuleId::new(state.next_rule))
    }
}

impl Store for MemoryStore {
    fn transact(
        &self,
        work: &mut dyn FnMut(&dyn StoreTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Transactions are serialised by holding the state for the whole call; the work runs
        // on a copy that replaces the state only when it succeeds.
        let mut state = self.state();
        let tx = MemoryStore(Mutex::new(state.clone()));
        work(&tx)?;
        *state = tx.0.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(())
    }
}

impl MemoryState {
    /// Applies a batch, all or nothing: a client taking a name another client holds refuses
    /// the whole batch.
    pub fn apply(&mut self, writes: Vec<Write>) -> Result<(), StoreError> {
        let state = self;
        // Like a real store, refuse the whole batch when a client would take a name that
        // another client holds.
        for write in &writes {
            if let Write::PutClient(c) = write
                && state.names.get(&c.name).is_some_and(|holder| holder != &c.id)
            {
                return Err(StoreError::Corrupted {
                    detail: format!("name {} is held by another client", c.name),
                });
            }
        }
        for write in writes {
            match write {
                Write::PutClient(c) => {
                    if let Some(previous) = state.clients.get(&c.id) {
                        state.names.remove(&previous.name);
                    }
                    state.names.insert(c.name.clone(), c.id.clone());
                    state.clients.insert(c.id.clone(), c);
                }
                Write::PutRule(r) => {
                    state.by_client.entry(r.client.clone()).or_default().insert(r.id);
                    if let Some(previous) = state.rules.insert(r.id, r) {
                        let moved =
                            state.rules.get(&previous.id).is_some_and(|now| now.client != previous.client);
                        if moved {
                            state.unindex(&previous.client, previous.id);
                        }
                    }
                }
                Write::DeleteRule(id) => {
                    if let Some(rule) = state.rules.remove(&id) {
                        state.unindex(&rule.client, id);
                    }
                    state.totals.remove(&id);
                }
                Write::PutEnrollment(e) => {
                    state.enrollments.insert(e.code_hash.as_str().to_owned(), e);
                }
                Write::PutTotals(id, t) => {
                    state.totals.insert(id, t);
                }
                Write::DeleteClient(id) => {
                    if let Some(client) = state.clients.remove(&id) {
                        state.names.remove(&client.name);
                    }
                }
                Write::PutUser(u) => {
                    state.users.insert(u.id.clone(), u);
                }
                Write::DeleteUser(id) => {
                    state.users.remove(&id);
                }
                Write::PutGrant(g) => {
                    state.grants.insert(g.id.clone(), g);
                }
                Write::DeleteGrant(id) => {
                    state.grants.remove(&id);
                }
                Write::PutApiToken(t) => {
                    state.tokens.insert(t.id.clone(), t);
                }
                Write::DeleteApiToken(id) => {
                    state.tokens.remove(&id);
                }
                Write::PutSession(s) => {
                    state.sessions.insert(s.id.clone(), s);
                }
                Write::DeleteSession(id) => {
                    state.sessions.remove(&id);
                }
                Write::PutThrottle(key, t) => {
                    state.throttles.insert(key, t);
                }
                Write::DeleteThrottle(key) => {
                    state.throttles.remove(&key);
                }
                Write::PutSettings(s) => {
                    state.settings = Some(s);
                }
                Write::AppendAudit(mut record) => {
                    record.seq = state.audit.keys().next_back().map_or(1, |last| last + 1);
                    state.audit.insert(record.seq, record);
                }
                Write::PruneAudit { through_seq } => {
                    state.audit.retain(|&seq, _| seq > through_seq);
                }
                Write::PutQuota(q) => {
                    state.quotas.insert((q.user.clone(), q.client.clone()), q);
                }
                Write::DeleteQuota(user, client) => {
                    state.quotas.remove(&(user, client));
                }
                Write::PutOwnerCaps(e) => {
                    state.owner_caps.insert((e.user.clone(), e.client.clone()), e);
                }
                Write::DeleteOwnerCaps(user, client) => {
                    state.owner_caps.remove(&(user, client));
                }
                Write::PutTrafficSample(sample) => {
                    state.traffic.insert((sample.bucket, sample.start, sample.key.clone()), sample);
                }
                Write::PruneTraffic { bucket, before } => {
                    state.traffic.retain(|(b, start, _), _| *b != bucket || *start >= before);
                }
            }
        }
        Ok(())
    }
}

impl MemoryState {
    /// Drops `rule` from `client`'s index entry (and the entry once empty).
    fn unindex(&mut self, client: &ClientId, rule: RuleId) {
        if let Some(ids) = self.by_client.get_mut(client) {
            ids.remove(&rule);
            if ids.is_empty() {
                self.by_client.remove(client);
            }
        }
    }
}

impl StoreTx for MemoryStore {
    fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.state().apply(writes)
    }
}

impl MemoryState {
    /// The state a store holds, for the tables that can be listed: clients, rules and their
    /// totals, users, grants, API tokens, Web sessions, settings and quotas. Enrollments, throttles
    /// and the audit trail are left out (a cache of the store answers those from it).
    pub fn listed_from<S: Reads + ?Sized>(store: &S) -> Result<MemoryState, StoreError> {
        let clients = store.list_clients()?;
        let rules = store.list_rules()?;
        let mut by_client: BTreeMap<ClientId, std::collections::BTreeSet<RuleId>> = BTreeMap::new();
        for rule in &rules {
            by_client.entry(rule.client.clone()).or_default().insert(rule.id);
        }
        Ok(MemoryState {
            names: clients.iter().map(|c| (c.name.clone(), c.id.clone())).collect(),
            clients: clients.into_iter().map(|c| (c.id.clone(), c)).collect(),
            rules: rules.into_iter().map(|r| (r.id, r)).collect(),
            by_client,
            totals: store.list_totals()?.into_iter().collect(),
            users: store.list_users()?.into_iter().map(|u| (u.id.clone(), u)).collect(),
            grants: store.list_grants()?.into_iter().map(|g| (g.id.clone(), g)).collect(),
            tokens: store.list_api_tokens()?.into_iter().map(|t| (t.id.clone(), t)).collect(),
            sessions: store.list_sessions()?.into_iter().map(|s| (s.id.clone(), s)).collect(),
            settings: Some(store.runtime_settings()?),
            quotas: store
                .list_quotas()?
                .into_iter()
                .map(|q| ((q.user.clone(), q.client.clone()), q))
                .collect(),
            ..MemoryState::default()
        })
    }
}

crate::delegate_read_ports!(MemoryStore, MemoryStore::locked);
