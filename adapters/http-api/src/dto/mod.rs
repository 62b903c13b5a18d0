//! Request and response bodies of the operator API. Serde and OpenAPI derives live here, on
//! the adapter's types; core types appear only where the API exposes them as they are
//! (`RuleSpec`).

mod accounts;
mod admin;
pub mod schema;

pub use accounts::*;
pub use admin::*;

use portunus_core::rule::{Protocol, RuleSpec, RuleState};
use portunus_core::service::{ClientView, EnrollTicket, RuleStatsView, RuleView};
use portunus_core::stats::{Counters, TargetHealth};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A client as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClientDto {
    /// Stable id (`cl_…`).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// `enrolling`, `enrolled` or `revoked`.
    #[schema(value_type = schema::ClientStatus)]
    pub status: String,
    /// Whether it has a live control stream.
    pub connected: bool,
    /// Version from its last Hello.
    pub version: Option<String>,
    /// Capabilities announced on the live stream.
    #[schema(value_type = Vec<schema::CapabilityName>)]
    pub capabilities: Vec<String>,
    /// Last stream open (RFC 3339).
    #[schema(format = DateTime)]
    pub last_seen_at: Option<String>,
    /// Creation time (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Rules it carries.
    pub n_rules: usize,
}

impl From<ClientView> for ClientDto {
    fn from(view: ClientView) -> Self {
        ClientDto {
            id: view.client.id.to_string(),
            name: view.client.name.to_string(),
            status: view.client.status().as_str().to_owned(),
            connected: view.session.is_some(),
            version: view.client.version.clone(),
            capabilities: view
                .session
                .map(|s| s.capabilities.iter().map(|c| c.as_str().to_owned()).collect())
                .unwrap_or_default(),
            last_seen_at: view.client.last_seen_at.map(|t| t.to_rfc3339()),
            created_at: view.client.created_at.to_rfc3339(),
            n_rules: view.n_rules,
        }
    }
}

/// `POST /v1/clients`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// Client name; an existing name is re-enrolled (its token rotates on redeem). 1 to 63 of
    /// `[a-z0-9._-]`, starting with a letter or a digit, not with `cl_`.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub name: String,
    /// Code lifetime in seconds, 1 to 86400 (default from settings).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub expires_in_secs: Option<u64>,
}

/// An issued enrollment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollResponse {
    /// The client.
    pub client: ClientDto,
    /// `portunus://HOST:PORT/enroll?pin=sha256:…&code=…` (contains the one-time code).
    pub enroll_uri: String,
    /// The command to run on the edge host.
    pub command: String,
    /// When the code expires (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

impl EnrollResponse {
    /// Builds the response; `client` comes from a fresh read so it shows the live state.
    pub fn new(ticket: &EnrollTicket, client: ClientDto) -> Self {
        let uri = ticket.uri.render();
        EnrollResponse {
            client,
            command: format!("portunus-client enroll '{uri}'"),
            enroll_uri: uri,
            expires_at: ticket.expires_at.to_rfc3339(),
        }
    }
}

/// `POST /v1/rules`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRuleRequest {
    /// Client id or name.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub client: String,
    /// The rule.
    #[schema(value_type = schema::RuleSpecSchema)]
    pub rule: RuleSpec,
    /// How long to wait for the client's outcome in milliseconds, 1 to 300000 (default from
    /// settings).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 300000)]
    pub ack_timeout_ms: Option<u64>,
}

/// A rule's failure.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuleFailureDto {
    /// Stable code.
    pub code: String,
    /// Human sentence.
    pub message: String,
}

/// A rule as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuleDto {
    /// Store-sequence id.
    #[schema(minimum = 1)]
    pub id: u64,
    /// Client id.
    pub client_id: String,
    /// Client name.
    pub client_name: String,
    /// Creating principal.
    pub owner: String,
    /// `pending`, `active`, `failed`, `removed`, or `suspended` (a pending or active rule
    /// of a revoked client: kept, and sent again when the client is re-enrolled).
    #[schema(value_type = schema::RuleStateName)]
    pub state: String,
    /// Set when failed.
    pub failure: Option<RuleFailureDto>,
    /// The rule in its canonical input form.
    #[schema(value_type = schema::RuleSpecSchema)]
    pub spec: RuleSpec,
    /// Creation time (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last state change (RFC 3339).
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<RuleView> for RuleDto {
    fn from(view: RuleView) -> Self {
        let state = view.shown_state();
        let rule = view.rule;
        RuleDto {
            id: rule.id.get(),
            client_id: rule.client.to_string(),
            client_name: view.client_name,
            owner: rule.owner.to_string(),
            state: state.to_owned(),
            failure: match &rule.state {
                RuleState::Failed { code, message } => {
                    Some(RuleFailureDto { code: code.as_str().to_owned(), message: message.clone() })
                }
                _ => None,
            },
            spec: rule.def.to_spec(),
            created_at: rule.created_at.to_rfc3339(),
            updated_at: rule.updated_at.to_rfc3339(),
        }
    }
}

/// `GET /v1/rules` filters; every filter given must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RuleFilter {
    /// Only rules of this client (id or name).
    pub client: Option<String>,
    /// Only rules of this owner (users may name only themselves).
    pub owner: Option<String>,
    /// Only rules in this state.
    pub state: Option<RuleStateFilter>,
    /// Only rules of this protocol.
    pub protocol: Option<Protocol>,
}

/// A rule state to filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleStateFilter {
    /// Stored and sent, no outcome yet.
    Pending,
    /// Bound on the client.
    Active,
    /// The client could not bind it.
    Failed,
    /// Pending or active, but its client is revoked.
    Suspended,
}

impl RuleStateFilter {
    /// The lifecycle state name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleStateFilter::Pending => "pending",
            RuleStateFilter::Active => "active",
            RuleStateFilter::Failed => "failed",
            RuleStateFilter::Suspended => "suspended",
        }
    }
}

/// `PATCH /v1/clients/{client}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameClientRequest {
    /// The new name: 1 to 63 of `[a-z0-9._-]`, starting with a letter or a digit, not with `cl_`.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub name: String,
}

/// `PATCH /v1/rules/{id}`: the rule's own caps, replaced as a whole.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleCapsRequest {
    /// The new caps (bandwidth in bytes, not bits, per second); fields left out are not
    /// capped, and an empty object `{}` lifts every cap of the rule.
    pub rate_limit: portunus_core::ratelimit::RateLimits,
}

/// `POST /v1/clients/{client}/enrollment`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReenrollRequest {
    /// Code lifetime in seconds, 1 to 86400 (default from settings).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub expires_in_secs: Option<u64>,
}

/// `GET /v1/rules/{id}/stats` options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Include per-port counters.
    #[serde(default)]
    pub per_port: bool,
    /// Include per-target counters and health.
    #[serde(default)]
    pub per_target: bool,
}

/// Traffic counters. Bytes count delivered bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CountersDto {
    /// Peer → target bytes delivered.
    pub bytes_in: u64,
    /// Target → peer bytes delivered.
    pub bytes_out: u64,
    /// Connections accepted (TCP) or flows opened (UDP).
    pub connections_total: u64,
    /// Open connections or live flows.
    pub connections_active: u64,
    /// UDP datagrams peer → target.
    pub datagrams_in: u64,
    /// UDP datagrams target → peer.
    pub datagrams_out: u64,
    /// New UDP flows dropped at the flow cap.
    pub flows_dropped_overflow: u64,
    /// Connections or flows dropped by failed DNS resolution.
    pub dns_failures: u64,
    /// Connections that reached no target.
    pub connect_failures: u64,
    /// Connections sent to a lower-preference target.
    pub target_failovers: u64,
    /// Accepts, target connects or UDP flow sockets refused because the client ran out of
    /// file descriptors; never counted against a target.
    #[serde(default)]
    pub fd_exhausted: u64,
    /// Connections (or new UDP flows) refused by a connection cap (rule or owner envelope).
    #[serde(default)]
    pub rate_limit_rejected: u64,
    /// Times a TCP direction waited for a bandwidth cap.
    #[serde(default)]
    pub rate_limit_throttled: u64,
    /// UDP datagrams dropped by a bandwidth cap.
    #[serde(default)]
    pub rate_limit_dropped: u64,
}

impl From<Counters> for CountersDto {
    fn from(c: Counters) -> Self {
        CountersDto {
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            connections_total: c.connections_total,
            connections_active: c.connections_active,
            datagrams_in: c.datagrams_in,
            datagrams_out: c.datagrams_out,
            flows_dropped_overflow: c.flows_dropped_overflow,
            dns_failures: c.dns_failures,
            connect_failures: c.connect_failures,
            target_failovers: c.target_failovers,
            fd_exhausted: c.fd_exhausted,
            rate_limit_rejected: c.rate_limit_rejected,
            rate_limit_throttled: c.rate_limit_throttled,
            rate_limit_dropped: c.rate_limit_dropped,
        }
    }
}

/// One listen port's counters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortStatsDto {
    /// Listen port.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// Its counters.
    pub counters: CountersDto,
}

/// One target's counters and health.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TargetStatsDto {
    /// Target as written in the rule.
    #[schema(value_type = schema::TargetSchema)]
    pub target: String,
    /// `healthy` or `failed`.
    #[schema(value_type = schema::TargetHealthName)]
    pub health: String,
    /// Its counters.
    pub counters: CountersDto,
}

/// A rule's traffic.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuleStatsDto {
    /// Rule id.
    #[schema(minimum = 1)]
    pub rule_id: u64,
    /// Lifecycle state.
    #[schema(value_type = schema::RuleStateName)]
    pub state: String,
    /// Whole-rule totals.
    pub totals: CountersDto,
    /// Per listen port, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_port: Option<Vec<PortStatsDto>>,
    /// Per target, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_target: Option<Vec<TargetStatsDto>>,
}

impl RuleStatsDto {
    /// Builds the body, including the optional parts asked for.
    pub fn new(view: RuleStatsView, query: &StatsQuery) -> Self {
        let targets = view.rule.rule.def.targets.clone();
        RuleStatsDto {
            rule_id: view.rule.rule.id.get(),
            state: view.rule.shown_state().to_owned(),
            totals: view.totals.into(),
            per_port: query.per_port.then(|| {
                let mut ports: Vec<PortStatsDto> = view
                    .rule
                    .rule
                    .def
                    .listen
                    .iter()
                    .map(|port| PortStatsDto {
                        port,
                        counters: view.per_port.get(&port).copied().unwrap_or_default().into(),
                    })
                    .collect();
                ports.sort_by_key(|p| p.port);
                ports
            }),
            per_target: query.per_target.then(|| {
                targets
                    .iter()
                    .enumerate()
                    .map(|(idx, target)| {
                        let live = view.per_target.iter().find(|t| t.index as usize == idx);
                        TargetStatsDto {
                            target: target.to_string(),
                            health: match live.map(|t| t.health) {
                                Some(TargetHealth::Failed) => "failed",
                                _ => "healthy",
                            }
                            .to_owned(),
                            counters: live.map(|t| t.counters).unwrap_or_default().into(),
                        }
                    })
                    .collect()
            }),
        }
    }
}
