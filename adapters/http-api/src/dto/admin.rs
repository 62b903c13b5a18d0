//! Bodies of the administration routes: the advertised-endpoint setting and the audit trail.

use portunus_core::audit::{AuditRecord, Outcome};
use portunus_core::endpoint::EndpointSource;
use portunus_core::service::{AuditPage, EndpointView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `GET/PUT /v1/settings/advertised-endpoint`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointSettingsDto {
    /// The operator override (`PUT`), if set.
    #[serde(rename = "override")]
    pub override_: Option<String>,
    /// The seed from `--advertised-endpoint`, `PORTUNUS_ADVERTISED_ENDPOINT` or `server.toml`.
    pub seed: Option<String>,
    /// What enrollment advertises now; `null` when resolution fails closed.
    pub effective: Option<String>,
    /// `override`, `seed`, `derived` or `loopback`: the tier that decided.
    #[schema(value_type = super::schema::EndpointSourceName)]
    pub source: String,
    /// Why `effective` is `null`.
    pub diagnostic: Option<String>,
}

impl From<EndpointView> for EndpointSettingsDto {
    fn from(v: EndpointView) -> Self {
        EndpointSettingsDto {
            override_: v.override_,
            seed: v.seed,
            effective: v.effective,
            source: match v.source {
                EndpointSource::Override => "override",
                EndpointSource::Seed => "seed",
                EndpointSource::Derived => "derived",
                EndpointSource::Loopback => "loopback",
            }
            .to_owned(),
            diagnostic: v.diagnostic,
        }
    }
}

/// `PUT /v1/settings/advertised-endpoint`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointUpdate {
    /// A bare `host:port` the certificate covers, or `null` to clear the override.
    pub endpoint: Option<String>,
}

/// An audit outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeDto {
    /// It did what it asked.
    Success,
    /// Refused (authentication, RBAC, CSRF, rate limit, bootstrap).
    Denied,
    /// Allowed but failed.
    Failed,
}

impl From<Outcome> for OutcomeDto {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => OutcomeDto::Success,
            Outcome::Denied => OutcomeDto::Denied,
            Outcome::Failed => OutcomeDto::Failed,
        }
    }
}

/// `GET /v1/audit` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only records at or after this time (RFC 3339, UTC, `Z`).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Only records before this time (RFC 3339, UTC, `Z`).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Only records with this outcome.
    pub outcome: Option<OutcomeDto>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditRecordDto {
    /// Position in the trail.
    pub seq: u64,
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    pub at: String,
    /// Who: a principal, the subject an anonymous attempt named, or `anonymous`.
    pub actor: String,
    /// What (`rule.push`, `auth.login`, …).
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// How it ended.
    pub outcome: OutcomeDto,
    /// The error code when it did not succeed.
    pub code: Option<String>,
    /// Remote address.
    pub remote: Option<String>,
}

impl From<AuditRecord> for AuditRecordDto {
    fn from(r: AuditRecord) -> Self {
        AuditRecordDto {
            seq: r.seq,
            at: r.at.to_rfc3339(),
            actor: r.actor,
            action: r.action,
            target: r.target,
            outcome: r.outcome.into(),
            code: r.code,
            remote: r.remote,
        }
    }
}

/// A page of the audit trail, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPageDto {
    /// The records.
    pub records: Vec<AuditRecordDto>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl From<AuditPage> for AuditPageDto {
    fn from(p: AuditPage) -> Self {
        AuditPageDto { records: p.records.into_iter().map(Into::into).collect(), next_cursor: p.next_cursor }
    }
}
