//! Ports: the traits adapters implement so core can run without I/O.
//!
//! Every port here is synchronous: core's use cases never wait. (The client side's two
//! waiting ports live with their adapters: `portunus_dataplane::RuleRuntime` and
//! `portunus_resolver::Resolver`.)

use crate::account::{ApiToken, PasswordHash, User, WebSession};
use crate::audit::{AuditQuery, AuditRecord};
use crate::capability::CapabilitySet;
use crate::client::{Client, Enrollment};
use crate::grant::Grant;
use crate::ids::{ClientId, ClientName, GrantId, RuleId, SessionId, Timestamp, TokenId, UserId};
use crate::quota::Quota;
use crate::rule::{Rule, RuleDef};
use crate::secret::SecretHash;
use crate::settings::RuntimeSettings;
use crate::stats::RuleTotals;
use crate::throttle::Throttle;

/// Wall-clock time. Tests inject a manual clock.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// Randomness for ids, tokens and codes. Adapters use the OS CSPRNG.
pub trait Entropy: Send + Sync {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// A slow, salted password hash (the adapter uses Argon2id). Tests use a fast fake.
///
/// `verify` takes about as long whether or not the password matches, so a caller can verify
/// against a dummy hash to hide whether an account exists.
pub trait PasswordHasher: Send + Sync {
    /// Hashes `password` with a fresh salt.
    fn hash(&self, password: &str) -> Result<PasswordHash, crate::Failure>;
    /// True when `password` matches `hash`; false for a hash it cannot parse.
    fn verify(&self, password: &str, hash: &PasswordHash) -> bool;
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store could not be read or written; the cause is kept.
    #[error("store unavailable")]
    Unavailable {
        /// The adapter's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record could not be decoded.
    #[error("store record corrupted: {detail}")]
    Corrupted {
        /// What was wrong.
        detail: String,
    },
    /// Another process holds the store.
    #[error("the store is held by another process")]
    InUse,
    /// The store file is damaged, truncated or not a Portunus store at all; it was left as it
    /// was found. (A file a crash left needing repair is not damaged: redb repairs it.)
    #[error("the store file is damaged or not a Portunus store: {detail}")]
    Damaged {
        /// What the check found.
        detail: String,
    },
    /// The store was written by a newer schema.
    #[error("store schema version {found} is newer than this binary's {supported}")]
    SchemaTooNew {
        /// Version in the file.
        found: u64,
        /// Newest version this binary understands.
        supported: u64,
    },
}

impl StoreError {
    /// The user-facing code.
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            StoreError::InUse => crate::ErrorCode::StoreInUse,
            StoreError::SchemaTooNew { .. } => crate::ErrorCode::SchemaVersionTooNew,
            StoreError::Damaged { .. } => crate::ErrorCode::StoreDamaged,
            StoreError::Unavailable { .. } | StoreError::Corrupted { .. } => crate::ErrorCode::StoreError,
        }
    }
}

impl From<StoreError> for crate::Failure {
    fn from(err: StoreError) -> Self {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        crate::Failure::new(err.code(), message)
    }
}

/// Reads of clients.
pub trait ClientStore {
    /// A client by id.
    fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError>;
    /// A client by its unique name.
    fn client_by_name(&self, name: &ClientName) -> Result<Option<Client>, StoreError>;
    /// Every client, ordered by name.
    fn list_clients(&self) -> Result<Vec<Client>, StoreError>;
    /// Every client's name, by id (for listings that show names beside ids).
    fn client_names(&self) -> Result<std::collections::BTreeMap<ClientId, String>, StoreError> {
        Ok(self.list_clients()?.into_iter().map(|c| (c.id, c.name.to_string())).collect())
    }
}

/// Reads of rules and their traffic totals.
pub trait RuleStore {
    /// A rule by id.
    fn get_rule(&self, id: RuleId) -> Result<Option<Rule>, StoreError>;
    /// Every rule, ordered by id.
    fn list_rules(&self) -> Result<Vec<Rule>, StoreError>;
    /// A client's rules, ordered by id.
    fn rules_for_client(&self, client: &ClientId) -> Result<Vec<Rule>, StoreError>;
    /// Persisted traffic totals of every rule.
    fn list_totals(&self) -> Result<Vec<(RuleId, RuleTotals)>, StoreError>;
    /// How many rules each client carries (clients without rules are absent).
    fn rule_counts(&self) -> Result<std::collections::BTreeMap<ClientId, usize>, StoreError> {
        let mut counts = std::collections::BTreeMap::new();
        for rule in self.list_rules()? {
            *counts.entry(rule.client).or_insert(0) += 1;
        }
        Ok(counts)
    }
}

/// Reads of enrollments.
pub trait EnrollmentStore {
    /// An enrollment by the hash of its code.
    fn get_enrollment(&self, code_hash: &SecretHash) -> Result<Option<Enrollment>, StoreError>;
}

/// Reads of users.
pub trait UserStore {
    /// A user by id.
    fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError>;
    /// Every user, ordered by id.
    fn list_users(&self) -> Result<Vec<User>, StoreError>;
}

/// Reads of grants.
pub trait GrantStore {
    /// A grant by id.
    fn get_grant(&self, id: &GrantId) -> Result<Option<Grant>, StoreError>;
    /// Every grant, ordered by id.
    fn list_grants(&self) -> Result<Vec<Grant>, StoreError>;
}

/// Reads of user credentials: API tokens and Web sessions.
pub trait CredentialStore {
    /// An API token by id.
    fn get_api_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError>;
    /// Every API token, ordered by id.
    fn list_api_tokens(&self) -> Result<Vec<ApiToken>, StoreError>;
    /// A Web session by id.
    fn get_session(&self, id: &SessionId) -> Result<Option<WebSession>, StoreError>;
    /// Every Web session, ordered by id.
    fn list_sessions(&self) -> Result<Vec<WebSession>, StoreError>;
}

/// Reads of the audit trail.
pub trait AuditStore {
    /// Records matching `query`, in sequence order, after `query.after`, at most
    /// `query.limit`.
    fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;
    /// How many records are kept and how much room they take.
    fn audit_stats(&self) -> Result<crate::audit::AuditStats, StoreError>;
    /// The prune of the oldest records written before `before`, at most `limit` of them,
    /// never the newest one (see [`crate::audit::plan_prune`]); `None` when there is nothing
    /// to prune.
    fn audit_prune_plan(
        &self,
        before: Timestamp,
        limit: u64,
    ) -> Result<Option<crate::audit::PrunePlan>, StoreError>;
}

/// Reads of traffic quotas.
pub trait QuotaStore {
    /// The quota of one (user, client) pair.
    fn get_quota(&self, user: &UserId, client: &ClientId) -> Result<Option<Quota>, StoreError>;
    /// Every quota, by user then client.
    fn list_quotas(&self) -> Result<Vec<Quota>, StoreError>;
}

/// Reads of owner envelopes (rate limits of one user's rules on one client).
pub trait OwnerCapsStore {
    /// The envelope of one (user, client) pair.
    fn get_owner_caps(
        &self,
        user: &UserId,
        client: &ClientId,
    ) -> Result<Option<crate::ratelimit::OwnerCaps>, StoreError>;
    /// Every envelope, by user then client.
    fn list_owner_caps(&self) -> Result<Vec<crate::ratelimit::OwnerCaps>, StoreError>;
}

/// Reads of the traffic history.
pub trait HistoryStore {
    /// The samples of `bucket` starting in `from..to`, oldest first.
    fn traffic_samples(
        &self,
        bucket: crate::history::Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<crate::history::TrafficSample>, StoreError>;
}

/// Reads of runtime settings and throttles.
pub trait StateStore {
    /// The settings record; the default when none was written yet.
    fn runtime_settings(&self) -> Result<RuntimeSettings, StoreError>;
    /// The throttle under `key`, if any.
    fn get_throttle(&self, key: &str) -> Result<Option<Throttle>, StoreError>;
}

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Insert or replace a client (and its name index entry).
    PutClient(Client),
    /// Delete a client and its name index entry; deleting a missing client is not an error.
    DeleteClient(ClientId),
    /// Insert or replace a rule.
    PutRule(Rule),
    /// Delete a rule and its totals; deleting a missing rule is not an error.
    DeleteRule(RuleId),
    /// Insert or replace an enrollment.
    PutEnrollment(Enrollment),
    /// Insert or replace a rule's totals.
    PutTotals(RuleId, RuleTotals),
    /// Insert or replace a user.
    PutUser(User),
    /// Delete a user (not its grants or credentials); missing is not an error.
    DeleteUser(UserId),
    /// Insert or replace a grant.
    PutGrant(Grant),
    /// Delete a grant; missing is not an error.
    DeleteGrant(GrantId),
    /// Insert or replace an API token.
    PutApiToken(ApiToken),
    /// Delete an API token; missing is not an error.
    DeleteApiToken(TokenId),
    /// Insert or replace a Web session.
    PutSession(WebSession),
    /// Delete a Web session; missing is not an error.
    DeleteSession(SessionId),
    /// Insert or replace the throttle under a key.
    PutThrottle(String, Throttle),
    /// Delete the throttle under a key; missing is not an error.
    DeleteThrottle(String),
    /// Replace the settings record.
    PutSettings(RuntimeSettings),
    /// Insert or replace the quota of its (user, client) pair.
    PutQuota(Quota),
    /// Delete the quota of a (user, client) pair; missing is not an error.
    DeleteQuota(UserId, ClientId),
    /// Insert or replace the owner envelope of its (user, client) pair.
    PutOwnerCaps(crate::ratelimit::OwnerCaps),
    /// Delete the owner envelope of a (user, client) pair; missing is not an error.
    DeleteOwnerCaps(UserId, ClientId),
    /// Insert or replace a traffic sample (keyed by bucket, start and key).
    PutTrafficSample(crate::history::TrafficSample),
    /// Delete the samples of a bucket that start before `before`.
    PruneTraffic {
        /// The bucket.
        bucket: crate::history::Bucket,
        /// The cut-off.
        before: Timestamp,
    },
    /// Append an audit record; the store assigns its `seq` (one more than the last).
    AppendAudit(AuditRecord),
    /// Delete the audit records numbered `through_seq` and below (a retention prune).
    PruneAudit {
        /// The last record to delete.
        through_seq: u64,
    },
}

/// Every read port at once: what a use case may look at.
pub trait Reads:
    ClientStore
    + RuleStore
    + EnrollmentStore
    + UserStore
    + GrantStore
    + CredentialStore
    + AuditStore
    + StateStore
    + QuotaStore
    + OwnerCapsStore
    + HistoryStore
{
}

impl<T> Reads for T where
    T: ClientStore
        + RuleStore
        + EnrollmentStore
        + UserStore
        + GrantStore
        + CredentialStore
        + AuditStore
        + StateStore
        + QuotaStore
        + OwnerCapsStore
        + HistoryStore
        + ?Sized
{
}

/// One write transaction in progress.
///
/// Reads see the committed state plus every write applied to this transaction so far, so a
/// use case that runs after another in the same transaction sees its effects (this is what
/// lets several mutations share one durable commit).
pub trait StoreTx: Reads + RuleIds {
    /// Applies `writes` to the transaction, in order.
    fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError>;
}

/// The durable rule id sequence.
pub trait RuleIds {
    /// Takes the next rule id. Ids are never reused; gaps are fine (an id taken by a
    /// transaction that does not commit is simply never handed out).
    fn next_rule_id(&self) -> Result<RuleId, StoreError>;
}

/// The whole durable state.
///
/// `transact` is atomic and durable: when it returns `Ok`, every write applied in it
/// survives a crash; when `work` fails, nothing of it is written; a reader never sees part
/// of a transaction. A `PutClient` that renames a client moves its name index entry in the
/// same transaction. Write transactions are serialised.
pub trait Store: Reads + RuleIds + Send + Sync {
    /// Runs `work` in one write transaction and commits it when `work` returns `Ok`.
    fn transact(
        &self,
        work: &mut dyn FnMut(&dyn StoreTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Applies `writes` in a transaction of their own.
    fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut writes = Some(writes);
        self.transact(&mut |tx| tx.apply(writes.take().unwrap_or_default()))
    }
}

/// A connected client's session, as the control adapter knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// What the client announced.
    pub capabilities: CapabilitySet,
    /// Its version string.
    pub version: String,
    /// When the stream opened.
    pub connected_at: Timestamp,
    /// The client process's random instance (the same on each of its streams; 0: unknown).
    pub instance: u64,
}

/// A message for one connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// Bind (or re-bind, if the definition changed) a rule.
    Upsert {
        /// Rule id.
        rule: RuleId,
        /// What to bind (boxed: commands wait in per-stream queues, which are sized by
        /// their largest variant).
        def: Box<RuleDef>,
    },
    /// Stop a rule and close its connections.
    Remove {
        /// Rule id.
        rule: RuleId,
    },
    /// A pair's quota changed (`TrafficQuotaUpdate`; boxed, as `def` is).
    Quota(Box<crate::quota::PairUpdate>),
    /// An owner's envelope on the client changed (`OwnerLimitsUpdate`; boxed, as `def` is).
    OwnerCaps(Box<crate::ratelimit::OwnerCapsUpdate>),
}

// A command waits in its stream's queue, whose blocks hold 32 slots of the largest variant
// each: one block per connected client. Every payload is boxed so that a slot stays at
// three words (at 128 bytes a block cost each client 4 KiB).
const _: () = assert!(std::mem::size_of::<ClientCommand>() <= 24);

/// Why the server ends a client's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// `revoke` was run for the client.
    TokenRevoked,
    /// A re-enrollment replaced the token.
    TokenRotated,
    /// The client was deleted.
    ClientDeleted,
}

impl DisconnectReason {
    /// Stable reason string for events.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::TokenRevoked => "token_revoked",
            DisconnectReason::TokenRotated => "token_rotated",
            DisconnectReason::ClientDeleted => "client_deleted",
        }
    }
}

/// The live control streams as the use cases see them: who is connected, with what.
///
/// Synchronous and read-only: sending and waiting belong to the control runtime.
pub trait Sessions: Send + Sync {
    /// The session of `client`, if it has a live stream.
    fn session(&self, client: &ClientId) -> Option<SessionInfo>;
}

/// No client is connected (offline tools, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSessions;

impl Sessions for NoSessions {
    fn session(&self, _client: &ClientId) -> Option<SessionInfo> {
        None
    }
}

/// Where a control-plane latency was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// An operator's push, from request to answer.
    Push,
    /// From sending a rule to a client until its activation outcome.
    Ack,
    /// One durable store transaction.
    Commit,
}

/// Receives control-plane latencies (the telemetry adapter turns them into histograms).
pub trait LatencyObserver: Send + Sync {
    /// One measurement of `stage`, in seconds.
    fn observe(&self, stage: Stage, seconds: f64);
}

/// Implements every read port for `$ty` by calling the same method on what `$view(self)`
/// returns (`Result<V, StoreError>`, where `V` implements the ports or dereferences to
/// something that does). One list of the ports' methods for every adapter that forwards reads,
/// so none forgets a method and silently falls back to a provided default.
#[macro_export]
macro_rules! delegate_read_ports {
    ($ty:ty, $view:expr) => {
        $crate::delegate_read_ports!(@methods $ty, $view,
            ClientStore {
                fn get_client(&self, id: &$crate::ids::ClientId) -> Option<$crate::client::Client>;
                fn client_by_name(&self, name: &$crate::ids::ClientName) -> Option<$crate::client::Client>;
                fn list_clients(&self) -> Vec<$crate::client::Client>;
                fn client_names(&self) -> std::collections::BTreeMap<$crate::ids::ClientId, String>;
            }
            RuleStore {
                fn get_rule(&self, id: $crate::ids::RuleId) -> Option<$crate::rule::Rule>;
                fn list_rules(&self) -> Vec<$crate::rule::Rule>;
                fn rules_for_client(&self, client: &$crate::ids::ClientId) -> Vec<$crate::rule::Rule>;
                fn list_totals(&self) -> Vec<($crate::ids::RuleId, $crate::stats::RuleTotals)>;
                fn rule_counts(&self) -> std::collections::BTreeMap<$crate::ids::ClientId, usize>;
            }
            EnrollmentStore {
                fn get_enrollment(&self, code_hash: &$crate::secret::SecretHash) -> Option<$crate::client::Enrollment>;
            }
            UserStore {
                fn get_user(&self, id: &$crate::ids::UserId) -> Option<$crate::account::User>;
                fn list_users(&self) -> Vec<$crate::account::User>;
            }
            GrantStore {
                fn get_grant(&self, id: &$crate::ids::GrantId) -> Option<$crate::grant::Grant>;
                fn list_grants(&self) -> Vec<$crate::grant::Grant>;
            }
            CredentialStore {
                fn get_api_token(&self, id: &$crate::ids::TokenId) -> Option<$crate::account::ApiToken>;
                fn list_api_tokens(&self) -> Vec<$crate::account::ApiToken>;
                fn get_session(&self, id: &$crate::ids::SessionId) -> Option<$crate::account::WebSession>;
                fn list_sessions(&self) -> Vec<$crate::account::WebSession>;
            }
            AuditStore {
                fn audit_page(&self, query: &$crate::audit::AuditQuery) -> Vec<$crate::audit::AuditRecord>;
                fn audit_stats(&self) -> $crate::audit::AuditStats;
                fn audit_prune_plan(&self, before: $crate::ids::Timestamp, limit: u64) -> Option<$crate::audit::PrunePlan>;
            }
            StateStore {
                fn runtime_settings(&self) -> $crate::settings::RuntimeSettings;
                fn get_throttle(&self, key: &str) -> Option<$crate::throttle::Throttle>;
            }
            QuotaStore {
                fn get_quota(&self, user: &$crate::ids::UserId, client: &$crate::ids::ClientId) -> Option<$crate::quota::Quota>;
                fn list_quotas(&self) -> Vec<$crate::quota::Quota>;
            }
            OwnerCapsStore {
                fn get_owner_caps(&self, user: &$crate::ids::UserId, client: &$crate::ids::ClientId) -> Option<$crate::ratelimit::OwnerCaps>;
                fn list_owner_caps(&self) -> Vec<$crate::ratelimit::OwnerCaps>;
            }
            HistoryStore {
                fn traffic_samples(&self, bucket: $crate::history::Bucket, from: $crate::ids::Timestamp, to: $crate::ids::Timestamp) -> Vec<$crate::history::TrafficSample>;
            }
        );
    };
    (@methods $ty:ty, $view:expr, $($port:ident { $(fn $name:ident(&self $(, $arg:ident: $argty:ty)*) -> $ret:ty;)* })*) => {
        $(impl $crate::ports::$port for $ty {
            $(fn $name(&self $(, $arg: $argty)*) -> Result<$ret, $crate::ports::StoreError> {
                #[allow(unused_imports)]
                use $crate::ports::{
                    AuditStore as _, ClientStore as _, CredentialStore as _, EnrollmentStore as _, GrantStore as _,
                    HistoryStore as _, OwnerCapsStore as _, QuotaStore as _, RuleStore as _, StateStore as _, UserStore as _,
                };
                #[allow(clippy::redundant_closure_call)]
                ($view)(self)?.$name($($arg),*)
            })*
        })*
    };
}
