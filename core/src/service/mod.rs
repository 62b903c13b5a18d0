//! Use cases of the control plane, generic over the ports. The HTTP handlers, the gRPC
//! session handler and the CLI (through the HTTP API) all call these functions.
//!
//! Invariants: every mutation is committed durably before the caller gets an answer; checks
//! and the writes they guard happen under one lock, so two concurrent pushes cannot both
//! take the same port; no lock is held across an `.await`.

mod accounts;
mod admin;
mod authn;
mod clients;
mod grants;
pub mod offline;
mod rules;
mod session;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

pub use accounts::{LoginOutcome, MintedToken, NewUser};
pub use admin::{AuditPage, EndpointView};
pub use authn::{Authenticated, Credentials};
pub use clients::{ClientView, EnrollTicket, Redeemed};
pub use grants::NewGrant;
pub use rules::{PushFailure, RuleFilter, RuleStatsView, RuleView};
pub use session::{AuthFailure, MetricsSnapshot, RuleMetricRow, SessionPlan};

use crate::account::PasswordHash;
use crate::audit::{AuditRecord, is_denial};
use crate::config::ServerSettings;
use crate::endpoint::San;
use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, ClientName, RuleId};
use crate::policy::Actor;
use crate::ports::{ClientCommand, ClientLink, Clock, Entropy, PasswordHasher, Store, Write};
use crate::rule::Rule;
use crate::secret::SecretHash;
use crate::stats::StatsBook;

/// The adapters behind core's ports, as the server wires them.
pub struct Ports {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Live client streams.
    pub link: Arc<dyn ClientLink>,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Randomness.
    pub entropy: Arc<dyn Entropy>,
    /// Password hashing.
    pub hasher: Arc<dyn PasswordHasher>,
}

/// Everything the control plane's use cases need, built once at server start.
pub struct ControlPlane {
    store: Arc<dyn Store>,
    link: Arc<dyn ClientLink>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    hasher: Arc<dyn PasswordHasher>,
    settings: ServerSettings,
    identity: ServerIdentity,
    operator_token: SecretHash,
    /// Serialises check-then-write sequences.
    writes: Mutex<()>,
    stats: Mutex<StatsState>,
    /// A hash of a random password, verified against when a login names no account, so a
    /// missing user costs the same time as a wrong password.
    dummy_hash: OnceLock<PasswordHash>,
}

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

#[derive(Default)]
struct StatsState {
    book: StatsBook,
    dirty: BTreeSet<RuleId>,
}

impl ControlPlane {
    /// Wires the ports together and loads persisted traffic totals.
    pub fn new(
        ports: Ports,
        settings: ServerSettings,
        identity: ServerIdentity,
        operator_token: SecretHash,
    ) -> Result<Self, Failure> {
        let book = ports.store.list_totals()?.into_iter().collect();
        Ok(ControlPlane {
            store: ports.store,
            link: ports.link,
            clock: ports.clock,
            entropy: ports.entropy,
            hasher: ports.hasher,
            settings,
            identity,
            operator_token,
            writes: Mutex::new(()),
            stats: Mutex::new(StatsState { book, dirty: BTreeSet::new() }),
            dummy_hash: OnceLock::new(),
        })
    }

    /// The settings the server runs with.
    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// The identity clients pin.
    pub fn identity(&self) -> &ServerIdentity {
        &self.identity
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the guard cannot leave half a batch behind (commits are
        // atomic), so a poisoned lock is safe to keep using.
        self.writes.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn stats_lock(&self) -> MutexGuard<'_, StatsState> {
        self.stats.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut buf = [0u8; N];
        self.entropy.fill(&mut buf);
        buf
    }

    /// Records the outcome of a mutation (or of any call that ended in a denial) in the
    /// audit trail, durably, before the caller answers. A success is not reported as one
    /// unless its record was committed.
    fn audited<T>(
        &self,
        actor: &Actor,
        action: &str,
        target: Option<&str>,
        result: Result<T, Failure>,
    ) -> Result<T, Failure> {
        self.record(actor.principal.as_str(), action, target, actor.remote, result)
    }

    /// [`ControlPlane::audited`] for an actor named by text (anonymous attempts).
    fn record<T>(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        remote: Option<std::net::IpAddr>,
        result: Result<T, Failure>,
    ) -> Result<T, Failure> {
        let code = result.as_ref().err().map(|f| f.code);
        let record = AuditRecord::new(actor, action, target, code, remote, self.clock.now());
        match self.store.commit(vec![Write::AppendAudit(record)]) {
            Ok(()) => result,
            Err(err) => result.and(Err(err.into())),
        }
    }

    /// Audits a read only when it was denied; reads are not mutations.
    fn audited_read<T>(
        &self,
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

    /// Forgets the traffic of rules that were just deleted and tells their clients to stop
    /// them. Clients that are not connected drop them when they reconnect.
    fn rules_deleted(&self, rules: &[Rule]) {
        let mut stats = self.stats_lock();
        for rule in rules {
            stats.book.remove(&rule.id);
            stats.dirty.remove(&rule.id);
        }
        drop(stats);
        for rule in rules {
            let _ = self.link.send(&rule.client, ClientCommand::Remove { rule: rule.id });
        }
    }

    /// Finds a client by id (`cl_…`) or by name.
    pub fn find_client(&self, reference: &str) -> Result<crate::client::Client, Failure> {
        let found = match ClientId::parse(reference) {
            Some(id) => self.store.get_client(&id)?,
            None => match ClientName::parse(reference) {
                Ok(name) => self.store.client_by_name(&name)?,
                Err(_) => None,
            },
        };
        found.ok_or_else(|| Failure::new(ErrorCode::ClientNotFound, format!("no client {reference:?}")))
    }
}

#[cfg(test)]
mod tests;
