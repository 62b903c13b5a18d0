//! The read model: the committed state in memory, so reads decode nothing and take no store
//! transaction. The writer applies each committed batch to it, in commit order, before the
//! batch's effects and answers, so a caller that got an answer reads its own write.
//!
//! Enrollments, throttles and the audit trail stay in the store (they are read by one key or
//! one page at a time, and the trail grows without bound); the model answers those reads from
//! it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use portunus_core::account::{ApiToken, User, WebSession};
use portunus_core::audit::{AuditQuery, AuditRecord};
use portunus_core::client::{Client, Enrollment};
use portunus_core::grant::Grant;
use portunus_core::history::{Bucket, TrafficSample};
use portunus_core::ids::Timestamp;
use portunus_core::ids::{ClientId, ClientName, GrantId, RuleId, SessionId, TokenId, UserId};
use portunus_core::memory::MemoryState;
use portunus_core::ports::{
    AuditStore, ClientStore, CredentialStore, EnrollmentStore, GrantStore, HistoryStore, QuotaStore,
    RuleStore, StateStore, Store, StoreError, UserStore, Write,
};
use portunus_core::quota::Quota;
use portunus_core::rule::Rule;
use portunus_core::secret::SecretHash;
use portunus_core::settings::RuntimeSettings;
use portunus_core::stats::RuleTotals;
use portunus_core::throttle::Throttle;

/// Committed state for reads.
pub struct ReadModel {
    state: RwLock<MemoryState>,
    durable: Arc<dyn Store>,
    /// Bumped (under the write lock) by every batch that changed the model.
    generation: AtomicU64,
    /// The audit trail's size as last measured (measuring walks the whole table), reused for
    /// [`AUDIT_STATS_TTL`] and dropped by a prune.
    audit_stats: std::sync::Mutex<Option<(std::time::Instant, portunus_core::audit::AuditStats)>>,
}

/// How long a measured size of the audit trail is reused (metrics scrapes come every few
/// seconds; the size is a gauge for trends, not a count to the row).
const AUDIT_STATS_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl ReadModel {
    /// Loads the listable tables of `durable`.
    pub fn load(durable: Arc<dyn Store>) -> Result<ReadModel, StoreError> {
        Ok(ReadModel {
            state: RwLock::new(MemoryState::listed_from(&*durable)?),
            durable,
            generation: AtomicU64::new(0),
            audit_stats: std::sync::Mutex::new(None),
        })
    }

    /// A number that changes whenever a committed batch changed the model.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn state(&self) -> RwLockReadGuard<'_, MemoryState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a committed batch. A batch the model refuses (which the store just accepted)
    /// means the two disagree: the model is reloaded from the store.
    pub fn committed(&self, writes: Vec<Write>) {
        if writes.iter().any(|w| matches!(w, Write::PruneAudit { .. })) {
            *self.audit_stats.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        let kept: Vec<Write> = writes.into_iter().filter(is_modelled).collect();
        if kept.is_empty() {
            return;
        }
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Err(err) = state.apply(kept) {
            tracing::error!(event = "store.read_model_reloaded", error = %err);
            match MemoryState::listed_from(&*self.durable) {
                Ok(fresh) => *state = fresh,
                Err(err) => {
                    tracing::error!(event = "store.error", error = %err, "could not reload the read model")
                }
            }
        }
    }
}

/// Writes of the tables the model holds.
fn is_modelled(write: &Write) -> bool {
    !matches!(
        write,
        Write::AppendAudit(_)
            | Write::PruneAudit { .. }
            | Write::PutTrafficSample(_)
            | Write::PruneTraffic { .. }
            | Write::PutEnrollment(_)
            | Write::PutThrottle(..)
            | Write::DeleteThrottle(_)
    )
}

impl ClientStore for ReadModel {
    fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        self.state().get_client(id)
    }
    fn client_by_name(&self, name: &ClientName) -> Result<Option<Client>, StoreError> {
        self.state().client_by_name(name)
    }
    fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        self.state().list_clients()
    }
    fn client_names(&self) -> Result<BTreeMap<ClientId, String>, StoreError> {
        self.state().client_names()
    }
}

impl RuleStore for ReadModel {
    fn get_rule(&self, id: RuleId) -> Result<Option<Rule>, StoreError> {
        self.state().get_rule(id)
    }
    fn list_rules(&self) -> Result<Vec<Rule>, StoreError> {
        self.state().list_rules()
    }
    fn rules_for_client(&self, client: &ClientId) -> Result<Vec<Rule>, StoreError> {
        self.state().rules_for_client(client)
    }
    fn list_totals(&self) -> Result<Vec<(RuleId, RuleTotals)>, StoreError> {
        self.state().list_totals()
    }
    fn rule_counts(&self) -> Result<BTreeMap<ClientId, usize>, StoreError> {
        self.state().rule_counts()
    }
}

impl EnrollmentStore for ReadModel {
    fn get_enrollment(&self, code_hash: &SecretHash) -> Result<Option<Enrollment>, StoreError> {
        self.durable.get_enrollment(code_hash)
    }
}

impl UserStore for ReadModel {
    fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.state().get_user(id)
    }
    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.state().list_users()
    }
}

impl GrantStore for ReadModel {
    fn get_grant(&self, id: &GrantId) -> Result<Option<Grant>, StoreError> {
        self.state().get_grant(id)
    }
    fn list_grants(&self) -> Result<Vec<Grant>, StoreError> {
        self.state().list_grants()
    }
}

impl CredentialStore for ReadModel {
    fn get_api_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        self.state().get_api_token(id)
    }
    fn list_api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.state().list_api_tokens()
    }
    fn get_session(&self, id: &SessionId) -> Result<Option<WebSession>, StoreError> {
        self.state().get_session(id)
    }
    fn list_sessions(&self) -> Result<Vec<WebSession>, StoreError> {
        self.state().list_sessions()
    }
}

impl AuditStore for ReadModel {
    fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.durable.audit_page(query)
    }
    fn audit_stats(&self) -> Result<portunus_core::audit::AuditStats, StoreError> {
        let mut cached = self.audit_stats.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, stats)) = *cached
            && at.elapsed() < AUDIT_STATS_TTL
        {
            return Ok(stats);
        }
        let stats = self.durable.audit_stats()?;
        *cached = Some((std::time::Instant::now(), stats));
        Ok(stats)
    }
    fn audit_prune_plan(
        &self,
        before: portunus_core::ids::Timestamp,
        limit: u64,
    ) -> Result<Option<portunus_core::audit::PrunePlan>, StoreError> {
        self.durable.audit_prune_plan(before, limit)
    }
}

impl HistoryStore for ReadModel {
    fn traffic_samples(
        &self,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<TrafficSample>, StoreError> {
        self.durable.traffic_samples(bucket, from, to)
    }
}

impl QuotaStore for ReadModel {
    fn get_quota(&self, user: &UserId, client: &ClientId) -> Result<Option<Quota>, StoreError> {
        self.state().get_quota(user, client)
    }
    fn list_quotas(&self) -> Result<Vec<Quota>, StoreError> {
        self.state().list_quotas()
    }
}

impl portunus_core::ports::OwnerCapsStore for ReadModel {
    fn get_owner_caps(
        &self,
        user: &UserId,
        client: &ClientId,
    ) -> Result<Option<portunus_core::ratelimit::OwnerCaps>, StoreError> {
        self.state().get_owner_caps(user, client)
    }
    fn list_owner_caps(&self) -> Result<Vec<portunus_core::ratelimit::OwnerCaps>, StoreError> {
        self.state().list_owner_caps()
    }
}

impl StateStore for ReadModel {
    fn runtime_settings(&self) -> Result<RuntimeSettings, StoreError> {
        self.state().runtime_settings()
    }
    fn get_throttle(&self, key: &str) -> Result<Option<Throttle>, StoreError> {
        self.durable.get_throttle(key)
    }
}
