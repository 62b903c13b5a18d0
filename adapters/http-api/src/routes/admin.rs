//! `/v1/settings`, `/v1/audit` (listing and pruning) and `/v1/admin/backup`.
//!
//! Invariant: a backup is made by the store adapter from one read transaction (see
//! [`StoreBackup`]), so it is one committed state; the handler only checks the caller, streams
//! the file and makes sure it does not outlive the request.

use std::path::PathBuf;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use portunus_core::audit::AuditQuery;
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ids::Timestamp;
use portunus_core::policy::Actor;
use tokio::io::AsyncReadExt;

use super::blocking;
use crate::AppState;
use crate::dto::{AuditPageDto, AuditParams, EndpointSettingsDto, EndpointUpdate, OutcomeDto};
use crate::error::{ApiError, ApiJson, ApiQuery, ErrorBody};

/// The advertised endpoint: override, seed, what enrollment uses now, and why not.
#[utoipa::path(get, path = "/v1/settings/advertised-endpoint", tag = "settings",
    responses((status = 200, body = EndpointSettingsDto)))]
pub async fn get_advertised_endpoint(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<EndpointSettingsDto>, ApiError> {
    let view = blocking(move || state.runtime.endpoint_settings(&actor)).await?;
    Ok(Json(view.into()))
}

/// Sets or clears the override. Refused, and not stored, when it is not a bare `host:port`
/// (`endpoint_invalid`) or the certificate does not cover its host (`endpoint_not_in_cert_san`).
#[utoipa::path(put, path = "/v1/settings/advertised-endpoint", tag = "settings", request_body = EndpointUpdate,
    responses((status = 200, body = EndpointSettingsDto),
        (status = 422, description = "endpoint_invalid or endpoint_not_in_cert_san", body = ErrorBody)))]
pub async fn set_advertised_endpoint(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<EndpointUpdate>,
) -> Result<Json<EndpointSettingsDto>, ApiError> {
    let view =
        blocking(move || state.runtime.set_endpoint_override(&actor, body.endpoint.as_deref())).await?;
    tracing::info!(event = "settings.advertised_endpoint_set", effective = ?view.effective);
    Ok(Json(view.into()))
}

fn time(text: Option<&str>, name: &str) -> Result<Option<Timestamp>, Failure> {
    text.map(|t| {
        Timestamp::parse_rfc3339(t).ok_or_else(|| {
            Failure::new(ErrorCode::InvalidRequest, format!("`{name}` is not an RFC 3339 UTC time"))
        })
    })
    .transpose()
}

/// The audit trail, oldest first, in pages.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = AuditPageDto),
        (status = 422, description = "`to` is before `from`", body = ErrorBody)))]
pub async fn list_audit(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditPageDto>, ApiError> {
    let page = blocking(move || {
        let outcome = params.outcome.map(|o| match o {
            OutcomeDto::Success => "success",
            OutcomeDto::Denied => "denied",
            OutcomeDto::Failed => "failed",
        });
        let query = AuditQuery::new(
            params.cursor.as_deref(),
            time(params.from.as_deref(), "from")?,
            time(params.to.as_deref(), "to")?,
            outcome,
            params.limit,
        )?;
        state.runtime.audit_page(&actor, &query)
    })
    .await?;
    Ok(Json(page.into()))
}

/// `DELETE /v1/audit` parameters.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditPruneParams {
    /// Delete the records written before this time (RFC 3339, UTC, `Z`).
    #[param(format = DateTime)]
    pub before: String,
}

/// What a prune deleted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditPrunedDto {
    /// Records deleted by this call (at most 10,000).
    #[schema(minimum = 0, maximum = 10000)]
    pub pruned: u64,
    /// Older records remain: call again.
    pub more: bool,
}

/// Deletes the oldest audit records written before `before`, at most 10,000 per call
/// (`more` says when to call again); the newest record always stays. The server also
/// prunes by itself what is older than `audit_retention_days` (default 90). Superadmins only.
#[utoipa::path(delete, path = "/v1/audit", tag = "audit", params(AuditPruneParams),
    responses((status = 200, body = AuditPrunedDto),
        (status = 400, description = "`before` is not an RFC 3339 UTC time", body = ErrorBody)))]
pub async fn prune_audit(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(params): ApiQuery<AuditPruneParams>,
) -> Result<Json<AuditPrunedDto>, ApiError> {
    let pruned = blocking(move || {
        let before = time(Some(&params.before), "before")?
            .ok_or_else(|| Failure::new(ErrorCode::InvalidRequest, "`before` is required"))?;
        state.runtime.prune_audit(&actor, before)
    })
    .await?;
    tracing::info!(event = "audit.pruned", rows = pruned.rows, reason = "request");
    Ok(Json(AuditPrunedDto { pruned: pruned.rows, more: pruned.more }))
}

/// Makes the copies `GET /v1/admin/backup` serves; the server wires its store in.
pub trait StoreBackup: Send + Sync + 'static {
    /// Writes a consistent copy of the whole store, as of one committed state, to a new private
    /// file (0600, in the data dir) and returns its path. The caller removes the file.
    fn write_copy(&self) -> Result<PathBuf, Failure>;
}

/// The body of `GET /v1/admin/backup` in the OpenAPI document: raw bytes, not JSON.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct StoreFile(pub Vec<u8>);

/// Bytes read from the copy per chunk of the response.
const BACKUP_CHUNK: usize = 64 * 1024;

/// A consistent copy of the whole store (a redb file) as of one committed state, made while
/// the server keeps serving: no request waits for it. Superadmins only. Restore it offline with
/// `portunus-server restore --in FILE`.
#[utoipa::path(get, path = "/v1/admin/backup", tag = "admin",
    responses((status = 200, description = "The store file (redb) as of one committed state",
        content_type = "application/octet-stream", body = StoreFile)))]
pub async fn backup(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Response, ApiError> {
    let (runtime, who) = (state.runtime.clone(), actor.clone());
    if let Err(failure) = blocking(move || runtime.authorize_backup(&who)).await {
        tracing::warn!(event = "backup.denied", user = %actor.principal, code = %failure.code);
        return Err(failure.into());
    }
    let source = state.backup.clone().ok_or_else(|| {
        Failure::new(ErrorCode::Internal, "this server was started without a store to back up")
    })?;
    let (file, n_bytes) = blocking(move || {
        let path = source.write_copy()?;
        let opened = std::fs::File::open(&path).and_then(|file| Ok((file.metadata()?.len(), file)));
        // Unlinked at once: the open handle keeps the bytes until the response is sent, and no
        // copy is left in the data dir whatever happens to the request.
        let _ = std::fs::remove_file(&path);
        let (n_bytes, file) = opened.map_err(|err| {
            Failure::new(ErrorCode::IoError, format!("cannot read the backup {}: {err}", path.display()))
        })?;
        Ok((file, n_bytes))
    })
    .await?;
    tracing::info!(event = "backup.served", user = %actor.principal, bytes = n_bytes);
    let chunks = futures::stream::unfold(Some(tokio::fs::File::from_std(file)), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; BACKUP_CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            // The status line is gone; cutting the body short is how the client learns.
            Err(err) => Some((Err(err), None)),
        }
    });
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_LENGTH, n_bytes.to_string()),
        (header::CONTENT_DISPOSITION, "attachment; filename=\"portunus-backup.redb\"".to_owned()),
        (header::CACHE_CONTROL, "no-store".to_owned()),
    ];
    Ok((headers, Body::from_stream(chunks)).into_response())
}
