//! The metrics listener (`/metrics`, `/healthz`, `/readyz`) and `/v1/metrics` on the API.

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use portunus_core::policy::Actor;

use super::blocking;
use crate::AppState;
use crate::error::{ApiError, ErrorBody};

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn render(state: AppState) -> Result<String, ApiError> {
    let plane = state.plane.clone();
    let snapshot = blocking(move || plane.metrics_snapshot()).await?;
    Ok(state.metrics.render(&snapshot))
}

/// `/metrics` on the metrics listener (no authentication: bind it to loopback).
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], render(state).await?))
}

/// The same exposition on the operator API, for superadmins.
#[utoipa::path(get, path = "/v1/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn api_metrics(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<impl IntoResponse, ApiError> {
    if !actor.is_superadmin() {
        return Err(ApiError::new(portunus_core::ErrorCode::NotOwner, "metrics are for superadmins"));
    }
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], render(state).await?))
}

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the store answers reads.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let plane = state.plane.clone();
    match blocking(move || plane.metrics_snapshot().map(|_| ())).await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
    }
}
