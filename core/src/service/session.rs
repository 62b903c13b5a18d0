//! The server side of a client's control stream: authentication, the replay plan on
//! (re)connect, rule outcomes and traffic reports.

use super::{ClientService, Cx};
use crate::client::Client;
use crate::config::DataPlaneSettings;
use crate::enroll::split_token;
use crate::error::ErrorCode;
use crate::ids::{ClientId, RuleId, quoted};
use crate::ports::{ClientStore, RuleStore, Sessions, Write};
use crate::rule::{RuleDef, RuleEvent, RuleState};
use crate::stats::{Counters, RuleReport, RuleTotals};

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
    /// Every quota of a user on this client, sent before the rules (a pair not listed has
    /// none).
    pub quotas: Vec<crate::quota::PairUpdate>,
    /// Every owner envelope on this client, sent before the rules (an owner not listed has
    /// none).
    pub owner_caps: Vec<crate::ratelimit::OwnerCapsUpdate>,
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
    /// Size of the audit trail.
    pub audit: crate::audit::AuditStats,
    /// Audit records of unauthenticated requests dropped by their source's budget (filled
    /// by the caller that holds the budget).
    pub audit_rows_dropped: u64,
    /// The SNI listeners of connected clients, as last reported (filled by the caller that
    /// keeps the reports).
    pub sni_listeners: Vec<SniListenerRow>,
    /// One row per traffic quota (event counts filled by the caller that counts them).
    pub quotas: Vec<QuotaMetricRow>,
}

/// One quota's row of the metrics export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaMetricRow {
    /// User label.
    pub user: String,
    /// Client name label.
    pub client: String,
    /// The client's id (not a label: the key the caller's event counts are kept under).
    pub client_id: ClientId,
    /// Bytes used in the current period.
    pub used: u64,
    /// The cap.
    pub limit: u64,
    /// Out of budget now.
    pub exhausted: bool,
    /// Events since the server started.
    pub events: QuotaEventCounts,
}

/// How often a pair's quota did something, since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaEventCounts {
    /// New periods begun.
    pub period_resets: u64,
    /// Times the pair ran out of budget.
    pub exhaustions: u64,
    /// Crossings of 80 % of the cap.
    pub crossed_80: u64,
    /// Crossings of 100 % of the cap.
    pub crossed_100: u64,
}

/// One SNI listener's row of the metrics export.
#[derive(Debug, Clone)]
pub struct SniListenerRow {
    /// Client name label.
    pub client: String,
    /// The listener's counters and peek histogram.
    pub report: crate::sni::SniListenerReport,
}

impl ClientService {
    /// Checks a client's bearer token in constant time.
    pub fn authenticate_client<S: ClientStore + ?Sized>(
        &self,
        store: &S,
        token: &str,
    ) -> Result<Client, AuthFailure> {
        let (id, _) = split_token(token).ok_or(AuthFailure::InvalidToken)?;
        let client = store.get_client(&id).ok().flatten().ok_or(AuthFailure::InvalidToken)?;
        let hash = client.token.as_ref().ok_or(AuthFailure::InvalidToken)?;
        if !hash.matches(token) {
            return Err(AuthFailure::InvalidToken);
        }
        if client.revoked_at.is_some() {
            return Err(AuthFailure::TokenRevoked);
        }
        Ok(client)
    }

    /// Records a connect and returns what to send: the client's token is checked again
    /// against the state this runs in (a revoke or a rotation since the handshake refuses the
    /// stream). The caller registers the stream in the same commit order, so the replay
    /// comes before any later push.
    ///
    /// One live session per client: while a stream of `instance` (the client process's
    /// random id) is connected, a stream of another instance with the same token is refused
    /// with `client_already_connected`, so two processes never bind the same rules; the same
    /// instance reconnecting replaces its old stream. Instance 0 (a client that predates
    /// instances) always replaces.
    pub fn session_opened<
        S: ClientStore + RuleStore + crate::ports::QuotaStore + crate::ports::OwnerCapsStore + ?Sized,
    >(
        &self,
        cx: &mut Cx<'_, S>,
        token: &str,
        version: &str,
        instance: u64,
    ) -> Result<SessionPlan, crate::Failure> {
        let mut record = self
            .authenticate_client(cx.store, token)
            .map_err(|refused| crate::Failure::new(refused.code(), refused.reason()))?;
        let client = &record.id.clone();
        if let Some(live) = cx.sessions.session(client)
            && live.instance != instance
            && live.instance != 0
            && instance != 0
        {
            return Err(crate::Failure::new(
                ErrorCode::ClientAlreadyConnected,
                format!(
                    "client {} is already connected (since {}, version {}): another process with \
                     the same bundle is refused until it disconnects",
                    record.name,
                    live.connected_at.to_rfc3339(),
                    quoted(&live.version)
                ),
            ));
        }
        record.last_seen_at = Some(cx.now);
        record.version = Some(version.chars().take(64).collect());
        let stored = cx.store.rules_for_client(client)?;
        let quotas = cx
            .store
            .list_quotas()?
            .iter()
            .filter(|q| &q.client == client)
            .map(|q| super::quotas::pair_update(q, &stored))
            .collect();
        let owner_caps = cx
            .store
            .list_owner_caps()?
            .iter()
            .filter(|e| &e.client == client)
            .map(|e| crate::ratelimit::OwnerCapsUpdate::of(e, &stored))
            .collect();
        let rules = stored.into_iter().filter(|r| r.state.is_replayed()).map(|r| (r.id, r.def)).collect();
        cx.stage([Write::PutClient(record.clone())]);
        Ok(SessionPlan { client: record, settings: self.settings().data_plane, rules, quotas, owner_caps })
    }

    /// Applies a client's report on a rule's activation. Reports for rules the client does
    /// not carry, or that the lifecycle refuses (e.g. Active after Failed), are ignored and
    /// return `None`.
    pub fn rule_outcome<S: RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        client: &ClientId,
        rule: RuleId,
        event: RuleEvent,
    ) -> Result<Option<RuleState>, crate::Failure> {
        let Some(mut stored) = cx.store.get_rule(rule)? else {
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
            stored.updated_at = cx.now;
            cx.stage([Write::PutRule(stored)]);
        }
        Ok(Some(next))
    }
}

/// The reports of a client's traffic report that are about rules it carries; the rest are
/// ignored (a rule removed while the report was in flight, or another client's).
pub fn owned_reports<S: RuleStore + ?Sized>(
    store: &S,
    client: &ClientId,
    reports: Vec<(RuleId, RuleReport)>,
) -> Result<Vec<(RuleId, RuleReport)>, crate::Failure> {
    let mut owned = Vec::with_capacity(reports.len());
    for (rule, mut report) in reports {
        let Some(stored) = store.get_rule(rule)?.filter(|r| &r.client == client) else { continue };
        // Only ports and targets the rule has: what a client names is kept for good, so it
        // must not grow the totals with keys of its own choosing.
        report.per_port.retain(|port, _| stored.def.listen.contains(*port));
        let n_targets = stored.def.targets.len();
        report.per_target.retain(|t| usize::try_from(t.index).is_ok_and(|i| i < n_targets));
        owned.push((rule, report));
    }
    Ok(owned)
}

/// The writes that persist changed traffic totals, leaving out rules deleted since.
pub fn flush_writes<S: RuleStore + ?Sized>(
    store: &S,
    changed: Vec<(RuleId, RuleTotals)>,
) -> Result<Vec<Write>, crate::Failure> {
    let mut writes = Vec::with_capacity(changed.len());
    for (id, totals) in changed {
        if store.get_rule(id)?.is_some() {
            writes.push(Write::PutTotals(id, totals));
        }
    }
    Ok(writes)
}

/// The data behind `/metrics`: every client that is not revoked with its connection state,
/// and every rule with its totals (looked up in the in-memory traffic book).
pub fn metrics_snapshot<
    S: ClientStore + RuleStore + crate::ports::AuditStore + crate::ports::QuotaStore + ?Sized,
>(
    store: &S,
    sessions: &dyn Sessions,
    totals: &dyn Fn(RuleId) -> Option<Counters>,
) -> Result<MetricsSnapshot, crate::Failure> {
    let clients = store.list_clients()?;
    let names: std::collections::BTreeMap<ClientId, (String, bool)> =
        clients.iter().map(|c| (c.id.clone(), (c.name.to_string(), c.revoked_at.is_some()))).collect();
    let rules = store.list_rules()?;
    Ok(MetricsSnapshot {
        clients: clients
            .iter()
            .filter(|c| c.revoked_at.is_none() && c.token.is_some())
            .map(|c| (c.name.to_string(), sessions.session(&c.id).is_some()))
            .collect(),
        rules: rules
            .into_iter()
            .map(|r| {
                let (client, revoked) = names.get(&r.client).cloned().unwrap_or_default();
                RuleMetricRow {
                    client,
                    owner: r.owner.to_string(),
                    rule: r.id,
                    protocol: r.def.protocol.as_str(),
                    state: if revoked && r.state.is_replayed() {
                        super::rules::SUSPENDED
                    } else {
                        r.state.name()
                    },
                    counters: totals(r.id).unwrap_or_default(),
                }
            })
            .collect(),
        audit: store.audit_stats()?,
        audit_rows_dropped: 0,
        sni_listeners: Vec::new(),
        quotas: store
            .list_quotas()?
            .into_iter()
            .map(|q| QuotaMetricRow {
                user: q.user.to_string(),
                client: names.get(&q.client).map_or_else(|| q.client.to_string(), |(name, _)| name.clone()),
                client_id: q.client.clone(),
                used: q.state.used_bytes(),
                limit: q.state.monthly_bytes().get(),
                exhausted: q.state.is_exhausted(),
                events: QuotaEventCounts::default(),
            })
            .collect(),
    })
}
