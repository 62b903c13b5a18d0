//! `portunus-http`: the operator HTTP API (`/v1/*`, axum), the OpenAPI 3.1 document generated
//! from the same handler list (utoipa), the metrics listener's routes, and a typed client
//! that the CLI uses.
//!
//! Invariants: one authentication layer guards every `/v1/*` route; every error body is
//! `{"error":{"code","message"}}` with the status from core's table; request bodies are
//! limited in size.
#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod dto;
pub mod error;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use portunus_core::service::ControlPlane;
use portunus_telemetry::metrics::ServerMetrics;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub plane: Arc<ControlPlane>,
    /// The metrics registry.
    pub metrics: Arc<ServerMetrics>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Portunus operator API", description = "Clients, rules and traffic of a Portunus server."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "clients", description = "Edge clients and enrollment"), (name = "rules", description = "Forwarding rules"),
        (name = "system", description = "Metrics"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(routes::clients::list_clients, routes::clients::enroll_client))
        .routes(routes!(routes::clients::get_client))
        .routes(routes!(routes::clients::revoke_client))
        .routes(routes!(routes::rules::push_rule, routes::rules::list_rules))
        .routes(routes!(routes::rules::get_rule, routes::rules::remove_rule))
        .routes(routes!(routes::rules::rule_stats))
        .routes(routes!(routes::system::api_metrics))
}

/// The OpenAPI document, built from the same handler list as the router.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc =
        OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi()).merge(v1_routes()).into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The operator API router: `/v1/*` behind the auth layer, plus `/openapi.json`.
pub fn api_router(state: AppState) -> Router {
    let (v1, _) = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(v1_routes()).split_for_parts();
    let v1 = v1.route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_actor));
    let doc = serde_json::to_value(openapi()).unwrap_or_default();
    Router::new()
        .merge(v1)
        .route("/openapi.json", get(move || std::future::ready(axum::Json(doc.clone()))))
        .fallback(error::not_found)
        .layer(axum::middleware::map_response(error::method_not_allowed))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The metrics listener's router: `/metrics`, `/healthz`, `/readyz`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(routes::system::metrics))
        .route("/healthz", get(routes::system::healthz))
        .route("/readyz", get(routes::system::readyz))
        .fallback(error::not_found)
        .with_state(state)
}
