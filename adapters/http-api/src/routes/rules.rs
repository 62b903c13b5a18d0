//! `/v1/rules`: push, list, get, change caps, remove, stats.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Json, Response};
use portunus_core::error::ErrorCode;
use portunus_core::ids::RuleId;
use portunus_core::policy::Actor;

use super::blocking;
use crate::AppState;
use crate::dto::{PushRuleRequest, RuleCapsRequest, RuleDto, RuleFilter, RuleStatsDto, StatsQuery};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::listing::{self, Listing};

/// Pushes a rule and waits for the client's outcome.
#[utoipa::path(post, path = "/v1/rules", tag = "rules", request_body = PushRuleRequest,
    responses((status = 201, description = "the client activated the rule", body = RuleDto),
        (status = 403, description = "RBAC: client_not_granted, port_outside_grant, protocol_not_granted", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "client not connected, or port in use (rule_id set when the client failed the bind; a clash the server sees stores nothing)", body = ErrorBody),
        (status = 422, description = "capability gate", body = ErrorBody),
        (status = 504, description = "no outcome in time; the rule stays pending (rule_id set)", body = ErrorBody)))]
pub async fn push_rule(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<PushRuleRequest>,
) -> Result<(StatusCode, Json<RuleDto>), ApiError> {
    let timeout = body
        .ack_timeout_ms
        .map_or(state.runtime.settings().control.default_ack_timeout, Duration::from_millis);
    let result = state.runtime.push_rule(&actor, &body.client, &body.rule, timeout).await;
    match result {
        Ok(view) => {
            tracing::info!(event = "rule.pushed", rule = %view.rule.id, client = %body.client, owner = %view.rule.owner);
            Ok((StatusCode::CREATED, Json(view.into())))
        }
        Err(push) => {
            tracing::warn!(event = "rule.push_failed", client = %body.client, code = %push.failure.code,
                rule = push.rule.as_ref().map(|r| r.id.get()));
            Err(push.into())
        }
    }
}

/// Lists rules (all for superadmins, their own for users), filtered.
#[utoipa::path(get, path = "/v1/rules", tag = "rules", params(RuleFilter),
    responses((status = 200, body = Vec<RuleDto>), (status = 404, description = "no such client", body = ErrorBody)))]
pub async fn list_rules(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(filter): ApiQuery<RuleFilter>,
) -> Result<Response, ApiError> {
    let filter = portunus_core::service::RuleFilter {
        client: filter.client,
        owner: filter.owner,
        state: filter.state.map(|s| s.as_str().to_owned()),
        protocol: filter.protocol,
    };
    let unfiltered = filter.client.is_none()
        && filter.owner.is_none()
        && filter.state.is_none()
        && filter.protocol.is_none();
    let shared = unfiltered && actor.sees_everything();
    listing::respond(&state, Listing::Rules, shared, move |runtime| {
        let views = runtime.list_rules(&actor, &filter)?;
        listing::encode(views.into_iter().map(RuleDto::from), RULE_JSON_BYTES)
    })
    .await
}

/// The 404 of the routes on one rule: another user's rule answers as a missing one.
pub(super) const NOT_FOUND: &str =
    "rule_not_found: no such rule, or it belongs to another user (the two answer alike)";

/// About what one rule takes in a listing (a starting size for the buffer).
const RULE_JSON_BYTES: usize = 320;

pub(super) fn rule_id(raw: &str) -> Result<RuleId, ApiError> {
    raw.parse::<u64>()
        .map(RuleId::new)
        .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, format!("{raw:?} is not a rule id")))
}

/// One rule.
#[utoipa::path(get, path = "/v1/rules/{id}", tag = "rules", params(("id" = u64, Path, description = "rule id")),
    responses((status = 200, body = RuleDto), (status = 404, description = NOT_FOUND, body = ErrorBody)))]
pub async fn get_rule(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RuleDto>, ApiError> {
    let id = rule_id(&id)?;
    let view = blocking(move || state.runtime.get_rule(&actor, id)).await?;
    Ok(Json(view.into()))
}

/// Replaces a rule's own caps (its owner, or a superadmin): bandwidth in bytes (not bits) per
/// second, new connections per second, open connections; `{"rate_limit": {}}` lifts them.
/// The connected client applies the change in place: the listener and live connections stay
/// and each bucket keeps its level. The rule's state does not change.
#[utoipa::path(patch, path = "/v1/rules/{id}", tag = "rules", request_body = RuleCapsRequest,
    params(("id" = u64, Path, description = "rule id")),
    responses((status = 200, description = "the new caps are stored and sent to the client", body = RuleDto),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 409, description = "the client is not connected, or revoked", body = ErrorBody),
        (status = 422, description = "capability gate: the client did not announce rate-limit support", body = ErrorBody)))]
pub async fn set_rule_caps(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RuleCapsRequest>,
) -> Result<Json<RuleDto>, ApiError> {
    let id = rule_id(&id)?;
    let view = blocking(move || state.runtime.set_rule_caps(&actor, id, &body.rate_limit)).await?;
    tracing::info!(event = "rule.caps_set", rule = %view.rule.id, capped = !view.rule.def.rate_limit.is_unlimited());
    Ok(Json(view.into()))
}

/// Removes a rule; the client stops it now, or when it reconnects.
#[utoipa::path(delete, path = "/v1/rules/{id}", tag = "rules", params(("id" = u64, Path, description = "rule id")),
    responses((status = 204, description = "removed"), (status = 404, description = NOT_FOUND, body = ErrorBody)))]
pub async fn remove_rule(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = rule_id(&id)?;
    let rule = blocking(move || state.runtime.remove_rule(&actor, id)).await?;
    tracing::info!(event = "rule.removed", rule = %rule.id);
    Ok(StatusCode::NO_CONTENT)
}

/// A rule's traffic counters.
#[utoipa::path(get, path = "/v1/rules/{id}/stats", tag = "rules",
    params(("id" = u64, Path, description = "rule id"), StatsQuery),
    responses((status = 200, body = RuleStatsDto), (status = 404, description = NOT_FOUND, body = ErrorBody)))]
pub async fn rule_stats(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Json<RuleStatsDto>, ApiError> {
    let id = rule_id(&id)?;
    let view = blocking(move || state.runtime.rule_stats(&actor, id)).await?;
    Ok(Json(RuleStatsDto::new(view, &query)))
}
