//! The server side of a client's control stream: authentication, the replay plan on
//! (re)connect, rule outcomes and traffic reports.

use super::ControlPlane;
use crate::client::Client;
use crate::config::DataPlaneSettings;
use crate::enroll::split_token;
use crate::error::ErrorCode;
use crate::ids::{ClientId, RuleId};
use crate::ports::Write;
use crate::rule::{RuleDef, RuleEvent, RuleState};
use crate::stats::{Counters, RuleReport};

/// Why a client's credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The token is not one the server issued (or it was rotated away).
    #[error("invalid token")]
    InvalidToken,
    /// The token was revoked.
    #[error("token revoked")]
    TokenRevoked,
}

impl AuthFailure {
    /// The `reason` field of `auth.failure` events.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::InvalidToken => "invalid_token",
            AuthFailure::TokenRevoked => "token_revoked",
        }
    }

    /// The user-facing code.
    pub fn code(self) -> ErrorCode {
        match self {
            AuthFailure::InvalidToken => ErrorCode::Unauthenticated,
            AuthFailure::TokenRevoked => ErrorCode::TokenRevoked,
        }
    }
}

/// What the server sends a client right after it connects: settings, then every rule it
/// should run (Pending and Active; never Failed ones).
#[derive(Debug, Clone)]
pub struct SessionPlan {
    /// The client record.
    pub client: Client,
    /// Data-plane settings for Welcome.
    pub settings: DataPlaneSettings,
    /// The full rule set; the client drops anything not in it.
    pub rules: Vec<(RuleId, RuleDef)>,
}

/// One rule's row of the metrics export.
#[derive(Debug, Clone)]
pub struct RuleMetricRow {
    /// Client name label.
    pub client: String,
    /// Owner label.
    pub owner: String,
    /// Rule id label.
    pub rule: RuleId,
    /// `"tcp"` or `"udp"`.
    pub protocol: &'static str,
    /// Lifecycle state name.
    pub state: &'static str,
    /// Totals.
    pub counters: Counters,
}

/// Everything the metrics endpoint exports.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// `(client name, connected)` for every client that is not revoked.
    pub clients: Vec<(String, bool)>,
    /// One row per rule.
    pub rules: Vec<RuleMetricRow>,
}

impl ControlPlane {
    /// Checks a client's bearer token in constant time.
    pub fn authenticate_client(&self, token: &str) -> Result<Client, AuthFailure> {
        let (id, _) = split_token(token).ok_or(AuthFailure::InvalidToken)?;
        let client = self.store.get_client(&id).ok().flatten().ok_or(AuthFailure::InvalidToken)?;
        let hash = client.token.as_ref().ok_or(AuthFailure::InvalidToken)?;
        if !hash.matches(token) {
            return Err(AuthFailure::InvalidToken);
        }
        if client.revoked_at.is_some() {
            return Err(AuthFailure::TokenRevoked);
        }
        Ok(client)
    }

    /// Records a connect and returns what to send. Called after authentication and before
    /// the session is registered with the link, so the replay comes before any push.
    pub fn session_opened(&self, client: &ClientId, version: &str) -> Result<SessionPlan, crate::Failure> {
        let _guard = self.write_lock();
        let mut record = self
            .store
            .get_client(client)?
            .ok_or_else(|| crate::Failure::new(ErrorCode::ClientNotFound, "client vanished"))?;
        record.last_seen_at = Some(self.clock.now());
        record.version = Some(version.chars().take(64).collect());
        self.store.commit(vec![Write::PutClient(record.clone())])?;
        let rules = self
            .store
            .rules_for_client(client)?
            .into_iter()
            .filter(|r| r.state.is_replayed())
            .map(|r| (r.id, r.def))
            .collect();
        Ok(SessionPlan { client: record, settings: self.settings.data_plane, rules })
    }

    /// Applies a client's report on a rule's activation. Reports for rules the client does
    /// not carry, or that the lifecycle refuses (e.g. Active after Failed), are ignored and
    /// return `None`.
    pub fn rule_outcome(
        &self,
        client: &ClientId,
        rule: RuleId,
        event: RuleEvent,
    ) -> Result<Option<RuleState>, crate::Failure> {
        let _guard = self.write_lock();
        let Some(mut stored) = self.store.get_rule(rule)? else {
            return Ok(None);
        };
        if &stored.client != client {
            return Ok(None);
        }
        let Ok(next) = stored.state.on(event) else {
            return Ok(None);
        };
        if next != stored.state {
            stored.state = next.clone();
            stored.updated_at = self.clock.now();
            self.store.commit(vec![Write::PutRule(stored)])?;
        }
        Ok(Some(next))
    }

    /// Folds a client's traffic report in. Rules it does not carry are ignored.
    pub fn record_stats(
        &self,
        client: &ClientId,
        reports: Vec<(RuleId, RuleReport)>,
    ) -> Result<(), crate::Failure> {
        let owned: std::collections::BTreeSet<RuleId> =
            self.store.rules_for_client(client)?.into_iter().map(|r| r.id).collect();
        let mut stats = self.stats_lock();
        for (rule, report) in reports {
            if owned.contains(&rule) {
                stats.book.entry(rule).or_default().record(report);
                stats.dirty.insert(rule);
            }
        }
        Ok(())
    }

    /// Marks a client's stream gone: its active gauges drop to zero.
    pub fn session_closed(&self, client: &ClientId) -> Result<(), crate::Failure> {
        let rules = self.store.rules_for_client(client)?;
        let mut stats = self.stats_lock();
        for rule in rules {
            if let Some(totals) = stats.book.get_mut(&rule.id) {
                totals.client_gone();
                stats.dirty.insert(rule.id);
            }
        }
        Ok(())
    }

    /// Persists totals that changed since the last flush. Call periodically and at shutdown.
    pub fn flush_stats(&self) -> Result<usize, crate::Failure> {
        let writes: Vec<Write> = {
            let mut stats = self.stats_lock();
            let dirty = std::mem::take(&mut stats.dirty);
            dirty
                .into_iter()
                .filter_map(|id| stats.book.get(&id).map(|t| Write::PutTotals(id, t.clone())))
                .collect()
        };
        let n = writes.len();
        if n > 0 {
            let _guard = self.write_lock();
            // A rule removed since the report must not get its totals back.
            let writes = writes
                .into_iter()
                .filter(|w| match w {
                    Write::PutTotals(id, _) => self.store.get_rule(*id).ok().flatten().is_some(),
                    _ => true,
                })
                .collect();
            self.store.commit(writes)?;
        }
        Ok(n)
    }

    /// The data behind `/metrics`.
    pub fn metrics_snapshot(&self) -> Result<MetricsSnapshot, crate::Failure> {
        let clients = self.store.list_clients()?;
        let names: std::collections::BTreeMap<ClientId, String> =
            clients.iter().map(|c| (c.id.clone(), c.name.to_string())).collect();
        let rules = self.store.list_rules()?;
        let stats = self.stats_lock();
        Ok(MetricsSnapshot {
            clients: clients
                .iter()
                .filter(|c| c.revoked_at.is_none() && c.token.is_some())
                .map(|c| (c.name.to_string(), self.link.session(&c.id).is_some()))
                .collect(),
            rules: rules
                .into_iter()
                .map(|r| RuleMetricRow {
                    client: names.get(&r.client).cloned().unwrap_or_default(),
                    owner: r.owner.to_string(),
                    rule: r.id,
                    protocol: r.def.protocol.as_str(),
                    state: r.state.name(),
                    counters: stats.book.get(&r.id).map(|t| t.totals()).unwrap_or_default(),
                })
                .collect(),
        })
    }
}
