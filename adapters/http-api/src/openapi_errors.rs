//! The error responses of every operation, added to the OpenAPI document from one rule
//! instead of being repeated on each handler: what the auth layer, the extractors and the
//! body limit can answer, by the shape of the operation.
//!
//! It also gives every response the description OpenAPI requires.
//!
//! Invariant: the rule mirrors the router — protected operations can meet 401, 403 and 503
//! (`bootstrap_required`), operations with a body 400 and 413, with parameters 400, with path
//! parameters 404, and the throttled ones 429; a handler's own entries are never replaced.

use portunus_core::policy::is_public_route;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// Operations whose attempts are throttled per subject and address.
const THROTTLED: &[(&str, &str)] =
    &[("POST", "/v1/auth/login"), ("POST", "/v1/auth/onboarding"), ("PUT", "/v1/auth/password")];

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            )
            .build(),
    )
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses.responses.entry(status.to_owned()).or_insert_with(|| error_response(description));
}

/// Adds the standard error responses to every operation of `doc`.
pub fn add_standard_errors(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let methods = [
            ("GET", &mut item.get),
            ("POST", &mut item.post),
            ("PUT", &mut item.put),
            ("DELETE", &mut item.delete),
            ("PATCH", &mut item.patch),
        ];
        for (name, op) in methods {
            let Some(op) = op.as_mut() else { continue };
            // OpenAPI requires a description on every response; utoipa leaves it out when a
            // handler gives none.
            for (status, response) in op.responses.responses.iter_mut() {
                if let RefOr::T(response) = response
                    && response.description.is_empty()
                {
                    response.description =
                        if status.starts_with('2') { "success" } else { "error" }.to_owned();
                }
            }
            let params = op.parameters.as_deref().unwrap_or_default();
            let has_path_params =
                params.iter().any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Path));
            let has_params = !params.is_empty();
            let has_body = op.request_body.is_some();
            if has_body || has_params {
                add(op, "400", "invalid_request (malformed body or parameters) or a validation.* code");
            }
            if !is_public_route(name, path) {
                add(op, "401", "unauthenticated: missing, invalid or expired credentials");
                add(op, "403", "not_owner, password_change_required or csrf_failed");
                add(op, "503", "bootstrap_required: no superadmin exists yet");
            }
            if has_path_params {
                add(op, "404", "no such resource");
            }
            if has_body {
                add(op, "413", "payload_too_large: the body exceeds 64 KiB");
            }
            if THROTTLED.iter().any(|(m, p)| *m == name && p == path) {
                add(op, "429", "rate_limited: too many failed attempts for this subject or address");
            }
        }
    }
}
