//! What a mutation reads inside the write transaction: the read model, except where the
//! transaction itself has written.
//!
//! At the start of every write transaction the read model and the transaction agree: the
//! model holds every committed batch (applied in commit order, on the writer thread, before
//! the next transaction begins) and every write-behind write, and the transaction applies the
//! kept write-behind writes first, before any job runs. From then on only the jobs' own writes
//! can make them differ. The overlay remembers which keys (or, for whole-table reads, which
//! tables) those writes touched and sends a read that could see one of them to the store
//! transaction, which sees its own writes; every other read is answered from memory, without
//! decoding a stored row. A push to a client reads its rules, its record and the grants: from
//! memory, unless a mutation earlier in the same group changed them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use portunus_core::account::{ApiToken, User, WebSession};
use portunus_core::audit::{AuditQuery, AuditRecord, AuditStats, PrunePlan};
use portunus_core::client::{Client, Enrollment};
use portunus_core::grant::Grant;
use portunus_core::history::{Bucket, TrafficSample};
use portunus_core::ids::{ClientId, ClientName, GrantId, RuleId, SessionId, Timestamp, TokenId, UserId};
use portunus_core::ports::{
    AuditStore, ClientStore, CredentialStore, EnrollmentStore, GrantStore, HistoryStore, QuotaStore, RuleIds,
    RuleStore, StateStore, StoreError, StoreTx, UserStore, Write,
};
use portunus_core::quota::Quota;
use portunus_core::rule::Rule;
use portunus_core::secret::SecretHash;
use portunus_core::settings::RuntimeSettings;
use portunus_core::stats::RuleTotals;
use portunus_core::throttle::Throttle;

use crate::model::ReadModel;

/// What the transaction's jobs have written so far.
#[derive(Default)]
struct Touched {
    /// Clients put or deleted, by id.
    clients: BTreeSet<ClientId>,
    /// Rules put or deleted, each as the transaction now holds it (`None`: deleted), kept
    /// from the writes themselves so reads of them never decode a stored row.
    rules: BTreeMap<RuleId, Option<Rule>>,
    /// Clients whose rule set may have changed.
    rule_clients: BTreeSet<ClientId>,
    /// Any rule totals put (or dropped with a rule).
    totals: bool,
    users: bool,
    grants: bool,
    tokens: bool,
    sessions: bool,
    settings: bool,
    quotas: bool,
    owner_caps: bool,
}

/// A store transaction seen through the read model.
pub(crate) struct Overlay<'a> {
    tx: &'a dyn StoreTx,
    model: &'a ReadModel,
    touched: RefCell<Touched>,
}

impl<'a> Overlay<'a> {
    /// Wraps `tx`, which must agree with `model` at this moment (see the module's doc).
    pub(crate) fn new(tx: &'a dyn StoreTx, model: &'a ReadModel) -> Overlay<'a> {
        Overlay { tx, model, touched: RefCell::new(Touched::default()) }
    }

    /// The client a rule belongs to, as the transaction sees it before `write` applies.
    fn rule_owner(&self, id: RuleId) -> Result<Option<ClientId>, StoreError> {
        Ok(self.get_rule(id)?.map(|rule| rule.client))
    }

    fn note(&self, write: &Write) -> Result<(), StoreError> {
        // The previous owner of a rule is looked up before borrowing `touched` mutably
        // (`get_rule` reads it).
        let previous_owner = match write {
            Write::PutRule(rule) => self.rule_owner(rule.id)?,
            Write::DeleteRule(id) => self.rule_owner(*id)?,
            _ => None,
        };
        let mut t = self.touched.borrow_mut();
        t.rule_clients.extend(previous_owner);
        match write {
            Write::PutClient(client) => {
                t.clients.insert(client.id.clone());
            }
            Write::DeleteClient(id) => {
                t.clients.insert(id.clone());
            }
            Write::PutRule(rule) => {
                t.rules.insert(rule.id, Some(rule.clone()));
                t.rule_clients.insert(rule.client.clone());
            }
            Write::DeleteRule(id) => {
                t.rules.insert(*id, None);
                t.totals = true;
            }
            Write::PutTotals(..) => t.totals = true,
            Write::PutUser(_) | Write::DeleteUser(_) => t.users = true,
            Write::PutGrant(_) | Write::DeleteGrant(_) => t.grants = true,
            Write::PutApiToken(_) | Write::DeleteApiToken(_) => t.tokens = true,
            Write::PutSession(_) | Write::DeleteSession(_) => t.sessions = true,
            Write::PutSettings(_) => t.settings = true,
            Write::PutQuota(_) | Write::DeleteQuota(..) => t.quotas = true,
            Write::PutOwnerCaps(_) | Write::DeleteOwnerCaps(..) => t.owner_caps = true,
            // Read from the transaction always.
            Write::PutEnrollment(_)
            | Write::PutThrottle(..)
            | Write::DeleteThrottle(_)
            | Write::AppendAudit(_)
            | Write::PruneAudit { .. }
            | Write::PutTrafficSample(_)
            | Write::PruneTraffic { .. } => {}
        }
        Ok(())
    }

    fn touched(&self) -> std::cell::Ref<'_, Touched> {
        self.touched.borrow()
    }
}

impl StoreTx for Overlay<'_> {
    fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        for write in &writes {
            self.note(write)?;
        }
        self.tx.apply(writes)
    }
}

impl RuleIds for Overlay<'_> {
    fn next_rule_id(&self) -> Result<RuleId, StoreError> {
        self.tx.next_rule_id()
    }
}

impl ClientStore for Overlay<'_> {
    fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        if self.touched().clients.contains(id) { self.tx.get_client(id) } else { self.model.get_client(id) }
    }
    fn client_by_name(&self, name: &ClientName) -> Result<Option<Client>, StoreError> {
        // A rename moves a name between records: any client written sends it to the store.
        if self.touched().clients.is_empty() {
            self.model.client_by_name(name)
        } else {
            self.tx.client_by_name(name)
        }
    }
    fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        if self.touched().clients.is_empty() { self.model.list_clients() } else { self.tx.list_clients() }
    }
    fn client_names(&self) -> Result<BTreeMap<ClientId, String>, StoreError> {
        if self.touched().clients.is_empty() { self.model.client_names() } else { self.tx.client_names() }
    }
}

impl RuleStore for Overlay<'_> {
    fn get_rule(&self, id: RuleId) -> Result<Option<Rule>, StoreError> {
        match self.touched().rules.get(&id) {
            Some(now) => Ok(now.clone()),
            None => self.model.get_rule(id),
        }
    }
    fn list_rules(&self) -> Result<Vec<Rule>, StoreError> {
        if self.touched().rules.is_empty() { self.model.list_rules() } else { self.tx.list_rules() }
    }
    fn rules_for_client(&self, client: &ClientId) -> Result<Vec<Rule>, StoreError> {
        let touched = self.touched();
        if !touched.rule_clients.contains(client) {
            return self.model.rules_for_client(client);
        }
        // The client's rules in the transaction are its rules in memory that no job touched,
        // plus every touched rule that now belongs to it, as the jobs wrote it: nothing is
        // read from the store, so the store needs no client→rules index.
        let mut by_id: BTreeMap<RuleId, Rule> = self
            .model
            .rules_for_client(client)?
            .into_iter()
            .filter(|rule| !touched.rules.contains_key(&rule.id))
            .map(|rule| (rule.id, rule))
            .collect();
        for rule in touched.rules.values().flatten().filter(|rule| &rule.client == client) {
            by_id.insert(rule.id, rule.clone());
        }
        Ok(by_id.into_values().collect())
    }
    fn list_totals(&self) -> Result<Vec<(RuleId, RuleTotals)>, StoreError> {
        if self.touched().totals { self.tx.list_totals() } else { self.model.list_totals() }
    }
    fn rule_counts(&self) -> Result<BTreeMap<ClientId, usize>, StoreError> {
        let mut counts = self.model.rule_counts()?;
        // Each touched rule moves one count from its owner in memory to its owner in the
        // transaction (either may be none: created, deleted).
        for (id, now) in &self.touched().rules {
            if let Some(before) = self.model.get_rule(*id)?
                && let Some(n) = counts.get_mut(&before.client)
            {
                *n = n.saturating_sub(1);
            }
            if let Some(after) = now {
                *counts.entry(after.client.clone()).or_insert(0) += 1;
            }
        }
        counts.retain(|_, n| *n > 0);
        Ok(counts)
    }
}

impl EnrollmentStore for Overlay<'_> {
    fn get_enrollment(&self, code_hash: &SecretHash) -> Result<Option<Enrollment>, StoreError> {
        self.tx.get_enrollment(code_hash)
    }
}

impl UserStore for Overlay<'_> {
    fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        if self.touched().users { self.tx.get_user(id) } else { self.model.get_user(id) }
    }
    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        if self.touched().users { self.tx.list_users() } else { self.model.list_users() }
    }
}

impl GrantStore for Overlay<'_> {
    fn get_grant(&self, id: &GrantId) -> Result<Option<Grant>, StoreError> {
        if self.touched().grants { self.tx.get_grant(id) } else { self.model.get_grant(id) }
    }
    fn list_grants(&self) -> Result<Vec<Grant>, StoreError> {
        if self.touched().grants { self.tx.list_grants() } else { self.model.list_grants() }
    }
}

impl CredentialStore for Overlay<'_> {
    fn get_api_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        if self.touched().tokens { self.tx.get_api_token(id) } else { self.model.get_api_token(id) }
    }
    fn list_api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        if self.touched().tokens { self.tx.list_api_tokens() } else { self.model.list_api_tokens() }
    }
    fn get_session(&self, id: &SessionId) -> Result<Option<WebSession>, StoreError> {
        if self.touched().sessions { self.tx.get_session(id) } else { self.model.get_session(id) }
    }
    fn list_sessions(&self) -> Result<Vec<WebSession>, StoreError> {
        if self.touched().sessions { self.tx.list_sessions() } else { self.model.list_sessions() }
    }
}

impl AuditStore for Overlay<'_> {
    fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.tx.audit_page(query)
    }
    fn audit_stats(&self) -> Result<AuditStats, StoreError> {
        self.tx.audit_stats()
    }
    fn audit_prune_plan(&self, before: Timestamp, limit: u64) -> Result<Option<PrunePlan>, StoreError> {
        self.tx.audit_prune_plan(before, limit)
    }
}

impl HistoryStore for Overlay<'_> {
    fn traffic_samples(
        &self,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<TrafficSample>, StoreError> {
        self.tx.traffic_samples(bucket, from, to)
    }
}

impl QuotaStore for Overlay<'_> {
    fn get_quota(&self, user: &UserId, client: &ClientId) -> Result<Option<Quota>, StoreError> {
        if self.touched().quotas {
            self.tx.get_quota(user, client)
        } else {
            self.model.get_quota(user, client)
        }
    }
    fn list_quotas(&self) -> Result<Vec<Quota>, StoreError> {
        if self.touched().quotas { self.tx.list_quotas() } else { self.model.list_quotas() }
    }
}

impl portunus_core::ports::OwnerCapsStore for Overlay<'_> {
    fn get_owner_caps(
        &self,
        user: &UserId,
        client: &ClientId,
    ) -> Result<Option<portunus_core::ratelimit::OwnerCaps>, StoreError> {
        if self.touched().owner_caps {
            self.tx.get_owner_caps(user, client)
        } else {
            self.model.get_owner_caps(user, client)
        }
    }
    fn list_owner_caps(&self) -> Result<Vec<portunus_core::ratelimit::OwnerCaps>, StoreError> {
        if self.touched().owner_caps { self.tx.list_owner_caps() } else { self.model.list_owner_caps() }
    }
}

impl StateStore for Overlay<'_> {
    fn runtime_settings(&self) -> Result<RuntimeSettings, StoreError> {
        if self.touched().settings { self.tx.runtime_settings() } else { self.model.runtime_settings() }
    }
    fn get_throttle(&self, key: &str) -> Result<Option<Throttle>, StoreError> {
        self.tx.get_throttle(key)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use portunus_core::client::Client;
    use portunus_core::ids::{ClientId, ClientName, RuleId, Timestamp, UserId};
    use portunus_core::memory::MemoryStore;
    use portunus_core::ports::{ClientStore, RuleStore, Store, StoreTx, Write};
    use portunus_core::rule::{Rule, RuleState};
    use portunus_core::test_support::tcp_rule;

    use super::Overlay;
    use crate::model::ReadModel;

    fn client(id: u8, name: &str) -> Client {
        Client {
            id: ClientId::from_random([id; 10]),
            name: ClientName::parse(name).expect("name"),
            token: None,
            revoked_at: None,
            created_at: Timestamp::from_millis(0),
            last_seen_at: None,
            version: None,
        }
    }

    fn rule(id: u64, client: &Client, port: i64) -> Rule {
        Rule {
            id: RuleId::new(id),
            client: client.id.clone(),
            owner: UserId::operator(),
            def: tcp_rule(port),
            state: RuleState::Active,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
        }
    }

    /// A store holding `writes`, and a read model that missed a later write the test makes
    /// straight to the store: a read the overlay answers from memory shows the model's
    /// (stale) value, one it sends to the transaction shows the store's.
    fn diverged(writes: Vec<Write>, behind_the_models_back: Vec<Write>) -> (Arc<MemoryStore>, ReadModel) {
        let store = Arc::new(MemoryStore::default());
        store.commit(writes).expect("commit");
        let model = ReadModel::load(store.clone()).expect("load");
        store.commit(behind_the_models_back).expect("commit");
        (store, model)
    }

    #[test]
    fn untouched_keys_are_read_from_memory_and_touched_ones_from_the_transaction() {
        let (a, b) = (client(1, "edge-a"), client(2, "edge-b"));
        let (a1, b1) = (rule(1, &a, 80), rule(2, &b, 80));
        let (store, model) = diverged(
            vec![Write::PutClient(a.clone()), Write::PutClient(b.clone()), Write::PutRule(a1.clone())],
            vec![Write::PutRule(b1.clone())],
        );
        store
            .transact(&mut |tx| {
                let view = Overlay::new(tx, &model);
                // Nothing written yet: memory answers (the model never saw b's rule).
                assert!(view.rules_for_client(&b.id)?.is_empty());
                assert_eq!(view.rules_for_client(&a.id)?, vec![a1.clone()]);
                assert_eq!(view.list_rules()?.len(), 1);

                // A rule written for a: a's rules come from the transaction, b's still from memory.
                let a2 = rule(3, &a, 81);
                view.apply(vec![Write::PutRule(a2.clone())])?;
                assert_eq!(view.rules_for_client(&a.id)?, vec![a1.clone(), a2.clone()]);
                assert!(view.rules_for_client(&b.id)?.is_empty());
                assert_eq!(view.get_rule(a2.id)?, Some(a2.clone()));
                // Whole-table reads go to the transaction once any rule was written.
                assert_eq!(view.list_rules()?.len(), 3);
                // Counts are memory's, corrected by the touched rules only: a gains a2, and
                // b's count is memory's (which missed b's rule).
                let counts = view.rule_counts()?;
                assert_eq!((counts.get(&a.id), counts.get(&b.id)), (Some(&2), None));

                // Deleting b's rule (which only the transaction knows) moves b's reads there.
                view.apply(vec![Write::DeleteRule(b1.id)])?;
                assert!(view.rules_for_client(&b.id)?.is_empty());
                assert_eq!(view.get_rule(b1.id)?, None);
                Err(portunus_core::ports::StoreError::Corrupted { detail: "roll back".into() })
            })
            .expect_err("rolled back");
    }

    #[test]
    fn per_client_reads_agree_with_the_transaction_through_moves_creations_and_deletions() {
        let (a, b, c) = (client(1, "edge-a"), client(2, "edge-b"), client(3, "edge-c"));
        let start = vec![
            Write::PutClient(a.clone()),
            Write::PutClient(b.clone()),
            Write::PutClient(c.clone()),
            Write::PutRule(rule(1, &a, 80)),
            Write::PutRule(rule(2, &a, 81)),
            Write::PutRule(rule(3, &b, 80)),
            Write::PutRule(rule(4, &c, 80)),
        ];
        let (store, model) = diverged(start, vec![]);
        // Each step is applied, then every per-client read of the overlay is compared with
        // the transaction's own (the memory store's index is the oracle).
        let steps = vec![
            vec![Write::PutRule(rule(5, &b, 90))],
            vec![Write::PutRule(rule(1, &b, 82))],
            vec![Write::DeleteRule(RuleId::new(3))],
            vec![Write::PutRule(rule(5, &c, 91)), Write::DeleteRule(RuleId::new(4))],
            vec![Write::PutRule(rule(2, &a, 85))],
            vec![Write::DeleteRule(RuleId::new(2)), Write::PutRule(rule(6, &a, 86))],
            vec![Write::DeleteRule(RuleId::new(99))],
        ];
        store
            .transact(&mut |tx| {
                let view = Overlay::new(tx, &model);
                for writes in steps.clone() {
                    view.apply(writes)?;
                    for who in [&a, &b, &c] {
                        assert_eq!(view.rules_for_client(&who.id)?, tx.rules_for_client(&who.id)?);
                    }
                    assert_eq!(view.rule_counts()?, tx.rule_counts()?);
                }
                assert!(view.rules_for_client(&c.id)?.iter().map(|r| r.id.get()).eq([5]));
                Ok(())
            })
            .expect("commit");
    }

    #[test]
    fn a_deleted_rule_moves_its_owners_reads_to_the_transaction() {
        let a = client(1, "edge-a");
        let a1 = rule(1, &a, 80);
        let store = Arc::new(MemoryStore::default());
        store.commit(vec![Write::PutClient(a.clone()), Write::PutRule(a1.clone())]).expect("commit");
        let model = ReadModel::load(store.clone()).expect("load");
        store
            .transact(&mut |tx| {
                let view = Overlay::new(tx, &model);
                view.apply(vec![Write::DeleteRule(a1.id)])?;
                assert!(view.rules_for_client(&a.id)?.is_empty(), "the deletion is seen");
                assert!(view.list_totals()?.is_empty());
                Ok(())
            })
            .expect("commit");
    }

    #[test]
    fn a_rename_is_seen_by_name_lookups_in_the_same_transaction() {
        let a = client(1, "edge-a");
        let (store, model) = diverged(vec![Write::PutClient(a.clone())], vec![]);
        store
            .transact(&mut |tx| {
                let view = Overlay::new(tx, &model);
                let renamed = Client { name: ClientName::parse("edge-z").expect("name"), ..a.clone() };
                view.apply(vec![Write::PutClient(renamed.clone())])?;
                assert_eq!(view.client_by_name(&a.name)?, None);
                assert_eq!(view.client_by_name(&renamed.name)?, Some(renamed.clone()));
                assert_eq!(view.get_client(&a.id)?, Some(renamed.clone()));
                assert_eq!(view.list_clients()?, vec![renamed.clone()]);
                Ok(())
            })
            .expect("commit");
    }
}
