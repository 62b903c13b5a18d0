//! Server-wide administration: the advertised-endpoint override, the audit trail and the
//! metrics exposition on the operator API.

use super::session::metrics_snapshot;
use super::{Cx, MetricsSnapshot, ServerIdentity};
use crate::audit::{AuditQuery, AuditRecord, PRUNE_BATCH, cursor_after};
use crate::config::ServerSettings;
use crate::endpoint::{self, Endpoint, EndpointSource, san_covers};
use crate::error::{ErrorCode, Failure};
use crate::ids::{RuleId, Timestamp};
use crate::policy::{Action, Actor, authorize};
use crate::ports::{AuditStore, ClientStore, RuleStore, StateStore, Write};
use crate::settings::RuntimeSettings;
use crate::stats::Counters;

/// The advertised endpoint as configured and as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    /// The operator override, if set.
    pub override_: Option<String>,
    /// The seed from flags, environment or `server.toml`.
    pub seed: Option<String>,
    /// What enrollment advertises now; `None` when resolution failed closed.
    pub effective: Option<String>,
    /// The tier that decided.
    pub source: EndpointSource,
    /// Why `effective` is `None`.
    pub diagnostic: Option<String>,
}

/// One page of the audit trail.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// Records in sequence order.
    pub records: Vec<AuditRecord>,
    /// The cursor for the next page; `None` when this page was not full.
    pub next_cursor: Option<String>,
}

/// The advertised endpoint as enrollment sees it now: the stored override, the seed, the
/// listener's address or loopback, checked against the certificate.
pub fn resolve_endpoint<S: StateStore + ?Sized>(
    store: &S,
    settings: &ServerSettings,
    identity: &ServerIdentity,
) -> Result<endpoint::Resolution, Failure> {
    let stored = store.runtime_settings()?.advertised_endpoint;
    // A stored override was validated before it was written; one that no longer parses (a
    // hand-edited store) fails closed like an uncovered one.
    let override_ = match stored.as_deref().map(Endpoint::parse) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(failure)) => {
            return Ok(endpoint::Resolution {
                effective: None,
                source: EndpointSource::Override,
                diagnostic: Some(failure.message),
            });
        }
    };
    Ok(endpoint::resolve(
        override_.as_ref(),
        settings.advertised_endpoint.as_ref(),
        identity.control_addr,
        &identity.sans,
    ))
}

/// Server-wide administration: the advertised endpoint, the audit trail, metrics.
#[derive(Debug, Clone)]
pub struct AdminService {
    settings: ServerSettings,
    identity: ServerIdentity,
}

impl AdminService {
    /// An admin service for a server with `settings` and `identity`.
    pub fn new(settings: ServerSettings, identity: ServerIdentity) -> Self {
        AdminService { settings, identity }
    }

    /// May `actor` take a backup of the whole store (superadmins only)? Audited either way:
    /// a backup carries every secret hash the server keeps.
    pub fn authorize_backup<S: ?Sized>(&self, cx: &mut Cx<'_, S>, actor: &Actor) -> Result<(), Failure> {
        let result = authorize(actor, &Action::Administer).map_err(Failure::from);
        cx.audited(actor, "store.backup", None, result)
    }

    /// The advertised-endpoint settings (superadmins only).
    pub fn endpoint_settings<S: StateStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
    ) -> Result<EndpointView, Failure> {
        let result = authorize(actor, &Action::Administer)
            .map_err(Failure::from)
            .and_then(|()| self.endpoint_view(cx.store, None));
        cx.audited_read(actor, "settings.advertised_endpoint.get", None, result)
    }

    /// The view of the settings; `written` stands in for the stored override when this call
    /// has just staged a new one.
    fn endpoint_view<S: StateStore + ?Sized>(
        &self,
        store: &S,
        written: Option<&RuntimeSettings>,
    ) -> Result<EndpointView, Failure> {
        let stored = match written {
            Some(settings) => settings.clone(),
            None => store.runtime_settings()?,
        };
        let resolution = resolve_endpoint(&Fixed(&stored), &self.settings, &self.identity)?;
        Ok(EndpointView {
            override_: stored.advertised_endpoint,
            seed: self.settings.advertised_endpoint.as_ref().map(Endpoint::to_string),
            effective: resolution.effective.map(|e| e.to_string()),
            source: resolution.source,
            diagnostic: resolution.diagnostic,
        })
    }

    /// Sets (or, with `None`, clears) the operator override. A value that is not a bare
    /// `host:port` is `endpoint_invalid`; one whose host the certificate does not cover is
    /// `endpoint_not_in_cert_san` and is not stored.
    pub fn set_endpoint_override<S: StateStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        value: Option<&str>,
    ) -> Result<EndpointView, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let parsed = value.map(Endpoint::parse).transpose()?;
            if let Some(endpoint) = &parsed
                && !san_covers(&self.identity.sans, endpoint.host())
            {
                return Err(Failure::new(
                    ErrorCode::EndpointNotInCertSan,
                    format!(
                        "host {:?} is not covered by the server certificate SANs; nothing was saved",
                        endpoint.host()
                    ),
                ));
            }
            let mut settings = cx.store.runtime_settings()?;
            settings.advertised_endpoint = parsed.map(|e| e.to_string());
            let view = self.endpoint_view(cx.store, Some(&settings))?;
            cx.stage([Write::PutSettings(settings)]);
            Ok(view)
        })();
        cx.audited(actor, "settings.advertised_endpoint.set", value, result)
    }

    /// A page of the audit trail (superadmins only).
    pub fn audit_page<S: AuditStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        query: &AuditQuery,
    ) -> Result<AuditPage, Failure> {
        let store = cx.store;
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let records = store.audit_page(query)?;
            let next_cursor =
                if records.len() == query.limit { records.last().map(|r| cursor_after(r.seq)) } else { None };
            Ok(AuditPage { records, next_cursor })
        })();
        cx.audited_read(actor, "audit.list", None, result)
    }

    /// Deletes the audit records written before `before`, oldest first, at most
    /// [`PRUNE_BATCH`] per call (`more` says whether older ones remain); the newest record
    /// always stays. Superadmins only; audited as `audit.prune` (in the same commit). Used
    /// by `DELETE /v1/audit` and by the retention the server runs itself (as the operator).
    pub fn prune_audit<S: AuditStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        before: Timestamp,
    ) -> Result<AuditPruned, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let plan = cx.store.audit_prune_plan(before, PRUNE_BATCH)?;
            if let Some(plan) = plan {
                cx.stage([Write::PruneAudit { through_seq: plan.through_seq }]);
            }
            Ok(AuditPruned { rows: plan.map_or(0, |p| p.rows), more: plan.is_some_and(|p| p.more) })
        })();
        let target = format!("before {}", before.to_rfc3339());
        cx.audited(actor, "audit.prune", Some(&target), result)
    }

    /// The metrics on the operator API (superadmins only).
    pub fn metrics_for<S: ClientStore + RuleStore + AuditStore + crate::ports::QuotaStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        totals: &dyn Fn(RuleId) -> Option<Counters>,
    ) -> Result<MetricsSnapshot, Failure> {
        let result = authorize(actor, &Action::Administer).map_err(Failure::from);
        let result = result.and_then(|()| metrics_snapshot(cx.store, cx.sessions, totals));
        cx.audited_read(actor, "metrics.get", None, result)
    }
}

/// What one prune of the audit trail did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPruned {
    /// Records deleted.
    pub rows: u64,
    /// Records older than the cut-off remain (call again).
    pub more: bool,
}

/// A `StateStore` answering with one settings record (the one a call is about to write).
struct Fixed<'a>(&'a RuntimeSettings);

impl StateStore for Fixed<'_> {
    fn runtime_settings(&self) -> Result<RuntimeSettings, crate::ports::StoreError> {
        Ok(self.0.clone())
    }
    fn get_throttle(
        &self,
        _key: &str,
    ) -> Result<Option<crate::throttle::Throttle>, crate::ports::StoreError> {
        Ok(None)
    }
}
