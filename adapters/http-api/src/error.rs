//! HTTP error bodies: every failure is `{"error":{"code":"…","message":"…"}}` with the status
//! from core's code table, and a rule id when a push stored a rule that did not activate.
//!
//! Invariant: the only place an HTTP status is chosen for a failure is
//! `ErrorCode::http_status`; handlers never pick statuses themselves.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{ALLOW, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::service::PushFailure;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable code and a human message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `port_in_use`.
    #[schema(value_type = crate::dto::schema::ErrorCodeSchema)]
    pub code: String,
    /// Human sentence; never contains a secret.
    pub message: String,
    /// The rule a push stored before it failed or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u64>,
}

/// A failure on its way out as a response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The failure.
    pub failure: Failure,
    /// Set for pushes that stored a rule.
    pub rule_id: Option<u64>,
}

impl ApiError {
    /// A failure with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { failure: Failure::new(code, message), rule_id: None }
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        ApiError { failure, rule_id: None }
    }
}

impl From<PushFailure> for ApiError {
    fn from(push: PushFailure) -> Self {
        ApiError { failure: push.failure, rule_id: push.rule.map(|r| r.id.get()) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.failure.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(event = "api.internal_error", code = %self.failure.code, message = %self.failure.message);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.failure.code.as_str().to_owned(),
                message: self.failure.message,
                rule_id: self.rule_id,
            },
        };
        (status, Json(body)).into_response()
    }
}

/// `Json<T>` whose rejections are our error bodies: a body that is not a JSON object (`[]`,
/// `null`, a string, a number), malformed JSON, unknown fields, wrong types and a missing
/// JSON content type → 400 `invalid_request`; an oversized body → 413 `payload_too_large`.
///
/// Every request body of the API is an object. The object check comes first because serde
/// also builds a struct from a JSON array (its fields in order), so `[]` would otherwise
/// pass for a body whose fields are all optional.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "expected a request with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ErrorCode::PayloadTooLarge
            } else {
                ErrorCode::InvalidRequest
            };
            ApiError::new(code, rejection.body_text())
        })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "the request body must be a JSON object"));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())),
        }
    }
}

/// True when `Content-Type` is `application/json` or another `+json` type, parameters allowed.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    kind == "application" && (subtype == "json" || subtype.ends_with("+json"))
}

/// `Query<T>` whose rejections are `invalid_request` error bodies.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())),
        }
    }
}

/// `Path<T>` whose rejections (bad percent-encoding, wrong type) are `invalid_request`
/// error bodies.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())),
        }
    }
}

/// Fallback for unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::RouteNotFound, "no such route")
}

/// Rewrites axum's bare 405 (a known path, a method it does not serve) into our error body,
/// keeping the `Allow` header that lists the methods it does serve.
pub async fn method_not_allowed(response: Response) -> Response {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED && response.headers().get(CONTENT_TYPE).is_none() {
        let allow = response.headers().get(ALLOW).cloned();
        let mut answer =
            ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route").into_response();
        if let Some(allow) = allow {
            answer.headers_mut().insert(ALLOW, allow);
        }
        return answer;
    }
    response
}
