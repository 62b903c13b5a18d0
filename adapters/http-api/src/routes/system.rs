//! The metrics listener (`/metrics`, `/healthz`, `/readyz`) and `/v1/metrics` on the API.

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use portunus_core::policy::Actor;

use super::blocking;
use crate::AppState;
use crate::error::ApiError;

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn render(state: AppState) -> Result<String, ApiError> {
    let plane = state.runtime.clone();
    let snapshot = blocking(move || plane.metrics_snapshot()).await?;
    Ok(state.metrics.render(&snapshot))
}

/// `/metrics` on the metrics listener (no authentication: bind it to loopback).
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], render(state).await?))
}

/// The same exposition on the operator API, for superadmins.
#[utoipa::path(get, path = "/v1/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn api_metrics(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<impl IntoResponse, ApiError> {
    let plane = state.runtime.clone();
    let snapshot = blocking(move || plane.metrics_for(&actor)).await?;
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], state.metrics.render(&snapshot)))
}

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the store answers reads.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let plane = state.runtime.clone();
    match blocking(move || plane.metrics_snapshot().map(|_| ())).await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
    }
}
