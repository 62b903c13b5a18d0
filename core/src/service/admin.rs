//! Server-wide administration: the advertised-endpoint override, the audit trail and the
//! metrics exposition on the operator API.

use super::{ControlPlane, MetricsSnapshot};
use crate::audit::{AuditQuery, AuditRecord, cursor_after};
use crate::endpoint::{Endpoint, EndpointSource, san_covers};
use crate::error::{ErrorCode, Failure};
use crate::policy::{Action, Actor, authorize};
use crate::ports::Write;

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

impl ControlPlane {
    /// The advertised-endpoint settings (superadmins only).
    pub fn endpoint_settings(&self, actor: &Actor) -> Result<EndpointView, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            self.endpoint_view()
        })();
        self.audited_read(actor, "settings.advertised_endpoint.get", None, result)
    }

    fn endpoint_view(&self) -> Result<EndpointView, Failure> {
        let resolution = self.resolve_endpoint()?;
        Ok(EndpointView {
            override_: self.store.runtime_settings()?.advertised_endpoint,
            seed: self.settings.advertised_endpoint.as_ref().map(Endpoint::to_string),
            effective: resolution.effective.map(|e| e.to_string()),
            source: resolution.source,
            diagnostic: resolution.diagnostic,
        })
    }

    /// Sets (or, with `None`, clears) the operator override. A value that is not a bare
    /// `host:port` is `endpoint_invalid`; one whose host the certificate does not cover is
    /// `endpoint_not_in_cert_san` and is not stored.
    pub fn set_endpoint_override(&self, actor: &Actor, value: Option<&str>) -> Result<EndpointView, Failure> {
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
            {
                let _guard = self.write_lock();
                let mut settings = self.store.runtime_settings()?;
                settings.advertised_endpoint = parsed.map(|e| e.to_string());
                self.store.commit(vec![Write::PutSettings(settings)])?;
            }
            self.endpoint_view()
        })();
        self.audited(actor, "settings.advertised_endpoint.set", value, result)
    }

    /// A page of the audit trail (superadmins only).
    pub fn audit_page(&self, actor: &Actor, query: &AuditQuery) -> Result<AuditPage, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let records = self.store.audit_page(query)?;
            let next_cursor =
                if records.len() == query.limit { records.last().map(|r| cursor_after(r.seq)) } else { None };
            Ok(AuditPage { records, next_cursor })
        })();
        self.audited_read(actor, "audit.list", None, result)
    }

    /// The metrics on the operator API (superadmins only).
    pub fn metrics_for(&self, actor: &Actor) -> Result<MetricsSnapshot, Failure> {
        let result = authorize(actor, &Action::Administer).map_err(Failure::from);
        let result = result.and_then(|()| self.metrics_snapshot());
        self.audited_read(actor, "metrics.get", None, result)
    }
}
