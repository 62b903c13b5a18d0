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
pub mod listing;
mod openapi_errors;
mod openapi_flows;
pub mod routes;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use portunus_runtime::Runtime;
use portunus_telemetry::metrics::ServerMetrics;

use crate::error::ErrorBody;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The control runtime: every use case goes through it.
    pub runtime: Runtime,
    /// The metrics registry.
    pub metrics: Arc<ServerMetrics>,
    /// Full listings kept between changes.
    pub listings: Arc<listing::ListingCache>,
    /// Where `GET /v1/admin/backup` gets its copies; `None` answers `internal`.
    pub backup: Option<Arc<dyn routes::admin::StoreBackup>>,
    /// The origins cookie-authenticated writes may come from (normalised).
    pub origins: Arc<Vec<String>>,
    /// The open rule stats streams.
    pub streams: Arc<routes::stream::StreamSlots>,
}

impl AppState {
    /// The handlers' state over `runtime`.
    pub fn new(runtime: Runtime, metrics: Arc<ServerMetrics>) -> AppState {
        let origins = Arc::new(runtime.settings().allowed_origins(runtime.settings().operator_http_listen));
        AppState {
            runtime,
            metrics,
            listings: Arc::default(),
            backup: None,
            origins,
            streams: Arc::default(),
        }
    }

    /// The same state, for an operator listener bound at `listening` (whose port may have
    /// been chosen by the OS): the default origins are that address's.
    pub fn listening_at(mut self, listening: std::net::SocketAddr) -> AppState {
        self.origins = Arc::new(self.runtime.settings().allowed_origins(listening));
        self
    }

    /// The same state, with backups made by `backup`.
    pub fn with_backup(mut self, backup: Arc<dyn routes::admin::StoreBackup>) -> AppState {
        self.backup = Some(backup);
        self
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Portunus operator API", description = "Users, grants, clients, rules, settings and the audit trail of a Portunus server. \
        Authenticate with `Authorization: Bearer <token>` (the operator token or a user's API token), or with the \
        `portunus_session` cookie from `POST /v1/auth/login`; cookie-authenticated writes also need a same-origin \
        `Origin` and `X-CSRF-Token`. Every error is `{\"error\":{\"code\",\"message\"}}`."),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    components(schemas(ErrorBody, crate::dto::RuleStateFilter, crate::dto::OutcomeDto, portunus_core::rule::Protocol)),
    tags((name = "auth", description = "Onboarding, login, sessions, passwords"),
        (name = "users", description = "Accounts and API tokens"),
        (name = "grants", description = "Edge capacity handed to users"),
        (name = "quotas", description = "Monthly traffic quotas per user and client"),
        (name = "rate-limits", description = "Owner envelopes: rate limits on all of one user's rules on one client \
            (bandwidth in bytes per second); a rule's own caps are its `rate_limit` (`PATCH /v1/rules/{id}`)"),
        (name = "clients", description = "Edge clients and enrollment"), (name = "rules", description = "Forwarding rules"),
        (name = "settings", description = "Runtime settings"), (name = "audit", description = "The audit trail"),
        (name = "admin", description = "Backups of the store"),
        (name = "system", description = "Metrics"))
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
        components.add_security_scheme(
            "csrf",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-CSRF-Token"))),
        );
    }
}

fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(routes::auth::onboarding_status, routes::auth::complete_onboarding))
        .routes(routes!(routes::auth::login))
        .routes(routes!(routes::auth::logout))
        .routes(routes!(routes::auth::whoami))
        .routes(routes!(routes::auth::change_password))
        .routes(routes!(routes::users::list_users, routes::users::create_user))
        .routes(routes!(routes::users::get_user, routes::users::delete_user))
        .routes(routes!(routes::users::list_tokens, routes::users::create_token))
        .routes(routes!(routes::users::revoke_token))
        .routes(routes!(routes::grants::list_grants, routes::grants::create_grant))
        .routes(routes!(routes::grants::get_grant, routes::grants::delete_grant))
        .routes(routes!(routes::quotas::list_quotas))
        .routes(routes!(routes::quotas::set_quota, routes::quotas::patch_quota, routes::quotas::delete_quota))
        .routes(routes!(routes::quotas::quota_status))
        .routes(routes!(routes::owner_caps::list_owner_caps))
        .routes(routes!(
            routes::owner_caps::set_owner_caps,
            routes::owner_caps::get_owner_caps,
            routes::owner_caps::delete_owner_caps
        ))
        .routes(routes!(routes::traffic::traffic))
        .routes(routes!(routes::traffic::user_traffic))
        .routes(routes!(routes::traffic::client_traffic))
        .routes(routes!(routes::clients::list_clients, routes::clients::enroll_client))
        .routes(routes!(
            routes::clients::get_client,
            routes::clients::rename_client,
            routes::clients::delete_client
        ))
        .routes(routes!(routes::clients::revoke_client))
        .routes(routes!(routes::clients::reenroll_client))
        .routes(routes!(routes::rules::push_rule, routes::rules::list_rules))
        .routes(routes!(routes::rules::get_rule, routes::rules::set_rule_caps, routes::rules::remove_rule))
        .routes(routes!(routes::rules::rule_stats))
        .routes(routes!(routes::stream::rule_stats_stream))
        .routes(routes!(routes::admin::get_advertised_endpoint, routes::admin::set_advertised_endpoint))
        .routes(routes!(routes::admin::list_audit, routes::admin::prune_audit))
        .routes(routes!(routes::admin::backup))
        .routes(routes!(routes::system::api_metrics))
}

/// The OpenAPI document, built from the same handler list as the router, with the error
/// responses every operation can give added from one rule (see [`openapi_errors`]).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc =
        OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi()).merge(v1_routes()).into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    dto::schema::refine_rate_limits(&mut doc);
    openapi_errors::add_standard_errors(&mut doc);
    openapi_flows::add_flows(&mut doc);
    doc
}

/// Where the interactive API page (Swagger UI) is served on the operator listener, without a
/// token, like the document it shows.
pub const DOCS_PATH: &str = "/docs";

/// Where the OpenAPI document is served on the operator listener, without a token.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The interactive API page: Swagger UI's assets, embedded in the binary at build time (the
/// crate's `vendored` feature; nothing is fetched at build or view time), showing the
/// document at [`OPENAPI_PATH`]. `GET /docs` redirects to `/docs/`.
fn docs_router() -> Router<AppState> {
    let config = utoipa_swagger_ui::Config::new([OPENAPI_PATH]);
    Router::from(utoipa_swagger_ui::SwaggerUi::new(DOCS_PATH).config(config))
}

/// The operator API router: `/v1/*` behind the auth layer, plus the public `/openapi.json`,
/// the API page under `/docs/` and the Web UI on every other `GET` path ([`ui`]). A known
/// path asked with a method it does not serve answers 405 `method_not_allowed` with `Allow`;
/// an unknown API path 404 `route_not_found`.
pub fn api_router(state: AppState) -> Router {
    let (v1, _) = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(v1_routes()).split_for_parts();
    let v1 = v1.route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_actor));
    let doc = serde_json::to_value(openapi()).unwrap_or_default();
    Router::new()
        .merge(v1)
        .route(OPENAPI_PATH, get(move || std::future::ready(axum::Json(doc.clone()))))
        .merge(docs_router())
        .fallback(ui::fallback)
        .layer(axum::middleware::map_response(error::method_not_allowed))
        .layer(DefaultBodyLimit::max(state.runtime.settings().control.max_body_bytes))
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
