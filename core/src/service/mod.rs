//! The control plane's use cases: one service per aggregate, synchronous and sans-io.
//!
//! - [`ClientService`]: enrollment, redeem, revoke, rename, delete, listings, and the server
//!   side of a client's control stream (authentication, the replay plan, rule outcomes).
//! - [`RuleService`]: pushing (as the two steps [`RuleService::begin_push`] and
//!   [`RuleService::complete_push`]), removing, listing and reading rules and their traffic.
//! - [`AccountService`]: users, grants, API tokens, Web login and sessions, onboarding, and
//!   authentication of operator requests.
//! - [`AdminService`]: the advertised endpoint, the audit trail and the metrics snapshot.
//!
//! Each use case runs against a [`Cx`]: a view of the store (a write transaction for
//! mutations, the committed state for reads), the live sessions and `now`. It never writes:
//! it stages writes, always together with their audit record, and the effects on live
//! clients that must follow the commit. The caller (the control runtime, or an embedder)
//! commits [`Cx::finish`]'s batch in one transaction and only then answers and performs the
//! effects. Nothing here waits, spawns or reads the clock.
//!
//! Invariants: a mutation's writes and its audit record are one batch, so a committed
//! mutation always has exactly one audit record and an uncommitted one has none; denials are
//! audited too (in the same way); a check and the writes it guards see the same state,
//! because mutations run inside the write transaction that commits them.
//!
//! An embedder builds the services once, then runs each use case inside a transaction of its
//! store (here the in-memory [`crate::memory::MemoryStore`]) and performs the staged effects
//! after the commit:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use portunus_core::capability::Capability;
//! use portunus_core::config::{ServerSettings, SettingsLayer};
//! use portunus_core::endpoint::San;
//! use portunus_core::ids::{ClientId, Timestamp};
//! use portunus_core::memory::MemoryStore;
//! use portunus_core::policy::Actor;
//! use portunus_core::ports::{ClientCommand, Entropy, SessionInfo, Sessions, Store};
//! use portunus_core::rule::{ListenSpec, RuleSpec};
//! use portunus_core::service::{ClientService, Cx, RuleFilter, RuleService, ServerIdentity};
//!
//! /// Randomness for enrollment codes and tokens (a real embedder uses the OS generator).
//! struct Counter(std::sync::atomic::AtomicU8);
//! impl Entropy for Counter {
//!     fn fill(&self, buf: &mut [u8]) {
//!         buf.fill(self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
//!     }
//! }
//!
//! /// Every client counts as connected over TCP (a real embedder asks its control streams).
//! struct AllConnected;
//! impl Sessions for AllConnected {
//!     fn session(&self, _client: &ClientId) -> Option<SessionInfo> {
//!         Some(SessionInfo {
//!             capabilities: [Capability::Tcp].into_iter().collect(),
//!             version: "embedded".into(),
//!             connected_at: Timestamp::from_millis(0),
//!             instance: 1,
//!         })
//!     }
//! }
//!
//! let settings = ServerSettings::resolve(SettingsLayer::default())?;
//! let identity = ServerIdentity {
//!     cert_sha256: "ab".repeat(32),
//!     // Enrollment URIs advertise an address the certificate covers.
//!     sans: vec![San::Ip("127.0.0.1".parse().unwrap())],
//!     control_addr: "127.0.0.1:7443".parse().unwrap(),
//! };
//! let clients = ClientService::new(settings.clone(), identity, Arc::new(Counter(0.into())));
//! let rules = RuleService::new(&settings);
//! let (store, sessions, now) = (MemoryStore::default(), AllConnected, Timestamp::from_millis(1_000));
//! let operator = Actor::operator();
//!
//! // A mutation: decided and staged inside one transaction, which then commits.
//! store.transact(&mut |tx| {
//!     let mut cx = Cx::new(tx, &sessions, now);
//!     let ticket = clients.enroll_client(&mut cx, &operator, "edge-01", None);
//!     assert!(ticket.is_ok(), "{:?}", ticket.err()); // Its URI goes to the edge host.
//!     tx.apply(cx.finish().writes)
//! })?;
//!
//! // A push: step one stages the rule, its audit row and the command for the client.
//! let spec = RuleSpec {
//!     name: None,
//!     protocol: Default::default(),
//!     listen_port: ListenSpec::Port(8080),
//!     listen_addr: None,
//!     target: Some("127.0.0.1:80".into()),
//!     targets: vec![],
//!     prefer_ipv6: false,
//!     health_check_interval_secs: None,
//!     sni_pattern: None,
//!     sni_fallback: false,
//!     rate_limit: None,
//! };
//! let mut command = None;
//! store.transact(&mut |tx| {
//!     let mut cx = Cx::new(tx, &sessions, now);
//!     let begun = rules.begin_push(&mut cx, &operator, "edge-01", &spec, Duration::from_secs(5));
//!     command = begun.ok().map(|begun| begun.command);
//!     tx.apply(cx.finish().writes)
//! })?;
//! // After the commit: queue the command on the client's stream, wait for its outcome, and
//! // finish with `complete_push` (the `embed` example of this crate shows that half).
//! assert!(matches!(command, Some(ClientCommand::Upsert { .. })), "{command:?}");
//!
//! // A read runs against the committed state.
//! let mut cx = Cx::new(&store, &sessions, now);
//! let listed = rules.list_rules(&mut cx, &operator, &RuleFilter::default())?;
//! assert_eq!(listed.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod accounts;
mod admin;
mod authn;
mod clients;
mod grants;
mod history;
pub mod offline;
mod owner_caps;
mod quotas;
mod rules;
mod session;

use std::net::{IpAddr, SocketAddr};

pub use accounts::{AccountService, LoginOutcome, MintedToken, NewUser, Prepared};
pub use admin::{AdminService, AuditPage, AuditPruned, EndpointView, resolve_endpoint};
pub use authn::{Authenticated, Credentials};
pub use clients::{ClientService, ClientView, EnrollTicket, Redeemed};
pub use grants::NewGrant;
pub use history::{HistoryService, TrafficScope};
pub use owner_caps::{OwnerCapsService, OwnerCapsView, owner_caps_not_found};
pub use quotas::{QuotaChanged, QuotaService, QuotaView, quota_not_found};
pub use rules::{
    Begun, MAX_ACK_TIMEOUT, PushFailure, PushOutcome, RuleFilter, RuleService, RuleStatsView, RuleView,
};
pub use session::{
    AuthFailure, MetricsSnapshot, QuotaEventCounts, QuotaMetricRow, RuleMetricRow, SessionPlan,
    SniListenerRow, flush_writes, metrics_snapshot, owned_reports,
};

use crate::audit::{AuditRecord, is_denial};
use crate::endpoint::San;
use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, ClientName, RuleId, Timestamp, quoted};
use crate::policy::Actor;
use crate::ports::{ClientCommand, ClientStore, DisconnectReason, Entropy, Sessions, Write};

/// What clients pin and what enrollment URIs advertise.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// SHA-256 of the leaf certificate, lowercase hex.
    pub cert_sha256: String,
    /// The certificate's SANs.
    pub sans: Vec<San>,
    /// The address the control listener actually bound.
    pub control_addr: SocketAddr,
}

/// Something to do on the live control streams once a batch has committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Queue a command on a client's stream (dropped when it is not connected: it gets the
    /// full rule set when it reconnects).
    Send {
        /// The client.
        client: ClientId,
        /// What to send.
        command: ClientCommand,
    },
    /// End a client's stream.
    Disconnect {
        /// The client.
        client: ClientId,
        /// Why.
        reason: DisconnectReason,
    },
    /// Forget the in-memory traffic of rules that were deleted.
    ForgetRules(Vec<RuleId>),
}

/// The context of one use case: what it may read, who is connected, the time, and what it
/// has staged so far.
pub struct Cx<'a, S: ?Sized> {
    /// The store view: a write transaction for mutations, committed state for reads.
    pub store: &'a S,
    /// The live sessions.
    pub sessions: &'a dyn Sessions,
    /// The time of the call.
    pub now: Timestamp,
    writes: Vec<Write>,
    effects: Vec<Effect>,
}

/// What a use case staged: commit `writes` in one transaction, then perform `effects`.
#[derive(Debug, Default)]
pub struct Staged {
    /// The batch, audit record included.
    pub writes: Vec<Write>,
    /// Effects on live clients, in order.
    pub effects: Vec<Effect>,
}

impl Staged {
    /// True when nothing needs committing or doing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.effects.is_empty()
    }
}

impl<'a, S: ?Sized> Cx<'a, S> {
    /// A context at `now` over `store`.
    pub fn new(store: &'a S, sessions: &'a dyn Sessions, now: Timestamp) -> Self {
        Cx { store, sessions, now, writes: Vec::new(), effects: Vec::new() }
    }

    /// The staged batch and effects.
    pub fn finish(self) -> Staged {
        Staged { writes: self.writes, effects: self.effects }
    }

    /// Stages what another context staged (a read's audit record, committed by the writer).
    pub fn restage(&mut self, staged: Staged) {
        self.writes.extend(staged.writes);
        self.effects.extend(staged.effects);
    }

    pub(crate) fn stage(&mut self, writes: impl IntoIterator<Item = Write>) {
        self.writes.extend(writes);
    }

    pub(crate) fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// Deleted rules: forget their traffic and tell their clients to stop them.
    pub(crate) fn rules_deleted(&mut self, rules: &[crate::rule::Rule]) {
        if rules.is_empty() {
            return;
        }
        self.effects.push(Effect::ForgetRules(rules.iter().map(|r| r.id).collect()));
        for rule in rules {
            self.effects.push(Effect::Send {
                client: rule.client.clone(),
                command: ClientCommand::Remove { rule: rule.id },
            });
        }
    }

    /// Stages the audit record of a mutation (or of a refused call) and passes `result` on.
    pub(crate) fn audited<T>(
        &mut self,
        actor: &Actor,
        action: &str,
        target: Option<&str>,
        result: Result<T, Failure>,
    ) -> Result<T, Failure> {
        self.record(actor.principal.as_str(), action, target, actor.remote, result)
    }

    /// [`Cx::audited`] for an actor named by text (anonymous attempts).
    pub(crate) fn record<T>(
        &mut self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        remote: Option<IpAddr>,
        result: Result<T, Failure>,
    ) -> Result<T, Failure> {
        let code = result.as_ref().err().map(|f| f.code);
        self.writes.push(Write::AppendAudit(AuditRecord::new(actor, action, target, code, remote, self.now)));
        result
    }

    /// Audits a read only when it was denied; reads are not mutations.
    pub(crate) fn audited_read<T>(
        &mut self,
        actor: &Actor,
        action: &str,
        target: Option<&str>,
        result: Result<T, Failure>,
    ) -> Result<T, Failure> {
        match &result {
            Err(failure) if is_denial(failure.code) => self.audited(actor, action, target, result),
            _ => result,
        }
    }

    /// Audits a read of one item by id or name so that a user cannot tell an item they may
    /// not see from a missing one: a denial whose code is in `hidden` is answered with
    /// `missing()` (whose code is `missing_code`), and a user's miss is audited like their
    /// denial, so both take the same path (a commit included). The audit trail, the
    /// superadmins', keeps the denial's own code.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn audited_lookup<T>(
        &mut self,
        actor: &Actor,
        action: &str,
        target: &str,
        result: Result<T, Failure>,
        hidden: &[ErrorCode],
        missing_code: ErrorCode,
        missing: impl FnOnce() -> Failure,
    ) -> Result<T, Failure> {
        let missed = !actor.is_superadmin() && result.as_ref().is_err_and(|f| f.code == missing_code);
        let result = if missed {
            self.audited(actor, action, Some(target), result)
        } else {
            self.audited_read(actor, action, Some(target), result)
        };
        result.map_err(|f| if hidden.contains(&f.code) { missing() } else { f })
    }
}

/// Random bytes from the entropy port.
pub(crate) fn random_bytes<const N: usize>(entropy: &dyn Entropy) -> [u8; N] {
    let mut buf = [0u8; N];
    entropy.fill(&mut buf);
    buf
}

/// The records `actor` may see among those `list` returns (every one for superadmins, their
/// own for users), narrowed to `user`'s when given; a user naming another user is refused
/// (`not_owner`) before anything is read. `owner` names each record's user.
pub(crate) fn per_user<T>(
    actor: &Actor,
    user: Option<&str>,
    list: impl FnOnce() -> Result<Vec<T>, crate::ports::StoreError>,
    owner: impl Fn(&T) -> &crate::ids::UserId,
) -> Result<Vec<T>, Failure> {
    use crate::policy::{Action, authorize};
    authorize(actor, &Action::List)?;
    if let Some(user) = user {
        authorize(actor, &Action::AccessAccount(&crate::ids::UserId::new(user)))?;
    }
    Ok(list()?
        .into_iter()
        .filter(|item| authorize(actor, &Action::AccessAccount(owner(item))).is_ok())
        .filter(|item| user.is_none_or(|u| owner(item).as_str() == u))
        .collect())
}

/// The user and client of a (user, client) pair a superadmin sets a record on (a quota, an
/// owner envelope): the user must exist, the client too, and a grant must give them the
/// client.
pub(crate) fn granted_pair<S: crate::ports::UserStore + ClientStore + crate::ports::GrantStore + ?Sized>(
    store: &S,
    user: &str,
    client: &str,
) -> Result<(crate::ids::UserId, crate::client::Client), Failure> {
    let user_id = crate::ids::UserId::new(user);
    if store.get_user(&user_id)?.is_none() {
        return Err(Failure::new(ErrorCode::UserNotFound, format!("no user {}", crate::ids::quoted(user))));
    }
    let client = find_client(store, client)?;
    if !store.list_grants()?.iter().any(|g| g.user == user_id && g.client.includes(&client.id)) {
        return Err(Failure::new(
            ErrorCode::ClientNotGranted,
            format!(
                "no grant gives user {} the client {}: grant it first",
                crate::ids::quoted(user),
                client.name
            ),
        ));
    }
    Ok((user_id, client))
}

/// The client id a pair's record is read under: a client that does not exist answers
/// `missing()` (the record's own not-found), so a lookup tells nothing more than the record's
/// absence.
pub(crate) fn pair_client_id<S: ClientStore + ?Sized>(
    store: &S,
    client: &str,
    missing: impl FnOnce() -> Failure,
) -> Result<ClientId, Failure> {
    match find_client(store, client) {
        Ok(found) => Ok(found.id),
        Err(failure) if failure.code == ErrorCode::ClientNotFound => Err(missing()),
        Err(failure) => Err(failure),
    }
}

/// Finds a client by id (`cl_…`) or by name.
pub fn find_client<S: ClientStore + ?Sized>(
    store: &S,
    reference: &str,
) -> Result<crate::client::Client, Failure> {
    let found = match ClientId::parse(reference) {
        Some(id) => store.get_client(&id)?,
        None => match ClientName::parse(reference) {
            Ok(name) => store.client_by_name(&name)?,
            Err(_) => None,
        },
    };
    found.ok_or_else(|| client_not_found(reference))
}

/// The answer for a client reference that names no client (the caller may see).
pub(crate) fn client_not_found(reference: &str) -> Failure {
    Failure::new(ErrorCode::ClientNotFound, format!("no client {}", quoted(reference)))
}

#[cfg(test)]
mod tests;
