//! Use cases of the control plane, generic over the ports. The HTTP handlers, the gRPC
//! session handler and the CLI (through the HTTP API) all call these functions.
//!
//! Invariants: every mutation is committed durably before the caller gets an answer; checks
//! and the writes they guard happen under one lock, so two concurrent pushes cannot both
//! take the same port; no lock is held across an `.await`.

mod clients;
mod rules;
mod session;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

pub use clients::{ClientView, EnrollTicket, Redeemed};
pub use rules::{PushFailure, RuleStatsView, RuleView};
pub use session::{AuthFailure, MetricsSnapshot, RuleMetricRow, SessionPlan};

use crate::config::ServerSettings;
use crate::endpoint::San;
use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, ClientName, RuleId};
use crate::policy::Actor;
use crate::ports::{ClientLink, Clock, Entropy, Store};
use crate::secret::SecretHash;
use crate::stats::StatsBook;

/// Everything the control plane's use cases need, built once at server start.
pub struct ControlPlane {
    store: Arc<dyn Store>,
    link: Arc<dyn ClientLink>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    settings: ServerSettings,
    identity: ServerIdentity,
    operator_token: SecretHash,
    /// Serialises check-then-write sequences.
    writes: Mutex<()>,
    stats: Mutex<StatsState>,
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
        store: Arc<dyn Store>,
        link: Arc<dyn ClientLink>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        settings: ServerSettings,
        identity: ServerIdentity,
        operator_token: SecretHash,
    ) -> Result<Self, Failure> {
        let book = store.list_totals()?.into_iter().collect();
        Ok(ControlPlane {
            store,
            link,
            clock,
            entropy,
            settings,
            identity,
            operator_token,
            writes: Mutex::new(()),
            stats: Mutex::new(StatsState { book, dirty: BTreeSet::new() }),
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

    /// Turns an operator API bearer token into an actor. The server host's operator token
    /// is the built-in `_operator` principal with superadmin rights.
    pub fn authenticate_operator(&self, bearer: &str) -> Result<Actor, Failure> {
        if !bearer.is_empty() && self.operator_token.matches(bearer) {
            Ok(Actor::operator())
        } else {
            Err(Failure::new(ErrorCode::Unauthenticated, "missing or invalid bearer token"))
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
