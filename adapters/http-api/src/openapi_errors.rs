//! The error responses of every operation, added to the OpenAPI document from core's code
//! table instead of being written by hand on each handler: the codes the auth layer, the
//! extractors and the store can answer by the shape of the operation, plus the codes each
//! operation's use case can answer ([`OPERATION_CODES`]). Each code's status comes from
//! `ErrorCode::http_status`, so the document and the server cannot disagree on it.
//!
//! It also gives every response the description OpenAPI requires.
//!
//! Invariant: the rule mirrors the router — protected operations can meet 401, 403 and 503
//! (`bootstrap_required`), operations with a body 400 and 413, with parameters 400, every
//! operation 500; a handler's own description is kept and the codes are appended to it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use portunus_core::error::ErrorCode::{self, *};
use portunus_core::policy::is_public_route;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// What the authentication layer answers on a protected operation.
const AUTH_CODES: &[ErrorCode] =
    &[Unauthenticated, TokenRevoked, NotOwner, PasswordChangeRequired, CsrfFailed, BootstrapRequired];
/// What reading a JSON body can answer before the handler runs.
const BODY_CODES: &[ErrorCode] = &[InvalidRequest, PayloadTooLarge];
/// What reading path or query parameters can answer.
const PARAM_CODES: &[ErrorCode] = &[InvalidRequest];
/// What any operation can answer when the store or the process fails.
const ANY_CODES: &[ErrorCode] = &[Internal, StoreError];

/// Validation codes of a rule (`RuleSpec::validate`).
const RULE_VALIDATION: &[ErrorCode] = &[
    InvalidPort,
    InvertedRange,
    RangeMismatch,
    ExceedsCap,
    InvalidTarget,
    DuplicateTarget,
    TargetCount,
    ProtocolMismatch,
    InvalidName,
    OutOfRange,
    ZeroCap,
    BurstWithoutRate,
    BurstOutOfRange,
];

/// Validation codes of rate limits (`RateLimits::validate`): a rule's caps or an envelope.
const RATE_LIMIT_VALIDATION: &[ErrorCode] = &[ZeroCap, OutOfRange, BurstWithoutRate, BurstOutOfRange];

/// What a traffic query answers: its window and bucket checks, and the user or client it names.
const TRAFFIC_CODES: &[ErrorCode] = &[
    InvalidTimeRange,
    InvalidBucket,
    BucketOutOfRetention,
    TrafficWindowTooLarge,
    UserNotFound,
    ClientNotFound,
];

/// The codes each operation's use case can answer, beyond the shared ones above.
pub(crate) const OPERATION_CODES: &[(&str, &str, &[&[ErrorCode]])] = &[
    (
        "POST",
        "/v1/auth/onboarding",
        &[&[InvalidName, WeakPassword, Unauthenticated, OnboardingClosed, UserExists, RateLimited]],
    ),
    ("POST", "/v1/auth/login", &[&[Unauthenticated, RateLimited]]),
    ("PUT", "/v1/auth/password", &[&[WeakPassword, Unauthenticated, RateLimited]]),
    ("POST", "/v1/users", &[&[InvalidName, WeakPassword, UserExists]]),
    ("GET", "/v1/users/{user}", &[&[UserNotFound]]),
    ("DELETE", "/v1/users/{user}", &[&[UserNotFound, LastSuperadmin]]),
    ("GET", "/v1/users/{user}/tokens", &[&[UserNotFound]]),
    ("POST", "/v1/users/{user}/tokens", &[&[UserNotFound, InvalidName]]),
    ("DELETE", "/v1/users/{user}/tokens/{token}", &[&[UserNotFound, TokenNotFound]]),
    ("GET", "/v1/grants", &[&[UserNotFound]]),
    ("GET", "/v1/quotas", &[&[]]),
    (
        "PUT",
        "/v1/users/{user}/quotas/{client}",
        &[&[QuotaBytesInvalid, QuotaAnchorInvalid, UserNotFound, ClientNotFound, ClientNotGranted]],
    ),
    ("PATCH", "/v1/users/{user}/quotas/{client}", &[&[EmptyQuotaPatch, QuotaBytesInvalid, QuotaNotFound]]),
    ("DELETE", "/v1/users/{user}/quotas/{client}", &[&[QuotaNotFound]]),
    ("GET", "/v1/users/{user}/quotas/{client}/status", &[&[QuotaNotFound]]),
    ("GET", "/v1/owner-caps", &[&[]]),
    (
        "PUT",
        "/v1/users/{user}/owner-caps/{client}",
        &[
            RATE_LIMIT_VALIDATION,
            &[EmptyEnvelope, UserNotFound, ClientNotFound, ClientNotGranted, RateLimitUnsupportedByClient],
        ],
    ),
    ("GET", "/v1/users/{user}/owner-caps/{client}", &[&[OwnerCapsNotFound]]),
    ("DELETE", "/v1/users/{user}/owner-caps/{client}", &[&[OwnerCapsNotFound]]),
    ("GET", "/v1/traffic", &[TRAFFIC_CODES]),
    ("GET", "/v1/users/{user}/traffic", &[TRAFFIC_CODES]),
    ("GET", "/v1/clients/{client}/traffic", &[TRAFFIC_CODES]),
    ("POST", "/v1/grants", &[&[InvalidPort, InvertedRange, OutOfRange, UserNotFound, ClientNotFound]]),
    ("GET", "/v1/grants/{grant}", &[&[GrantNotFound]]),
    ("DELETE", "/v1/grants/{grant}", &[&[GrantNotFound]]),
    ("POST", "/v1/clients", &[&[InvalidName, OutOfRange, EndpointInvalid, EndpointNotInCertSan]]),
    ("GET", "/v1/clients/{client}", &[&[ClientNotFound]]),
    ("PATCH", "/v1/clients/{client}", &[&[ClientNotFound, InvalidName, ClientNameTaken]]),
    ("DELETE", "/v1/clients/{client}", &[&[ClientNotFound, ClientNotRevoked]]),
    ("POST", "/v1/clients/{client}/revoke", &[&[ClientNotFound]]),
    (
        "POST",
        "/v1/clients/{client}/enrollment",
        &[&[ClientNotFound, OutOfRange, EndpointInvalid, EndpointNotInCertSan]],
    ),
    (
        "POST",
        "/v1/rules",
        &[
            RULE_VALIDATION,
            &[ClientNotFound, ClientNotGranted, PortOutsideGrant, ProtocolNotGranted],
            &[ClientNotConnected, ClientRevoked, PortInUse, AckTimeout],
            &[
                UnsupportedProtocol,
                MultiTargetUnsupportedByClient,
                PortRangeUnsupportedByClient,
                DnsTargetUnsupportedByClient,
                ProxyProtocolUnsupportedByClient,
                RateLimitUnsupportedByClient,
            ],
        ],
    ),
    ("GET", "/v1/rules", &[&[ClientNotFound]]),
    ("GET", "/v1/rules/{id}", &[&[RuleNotFound]]),
    (
        "PATCH",
        "/v1/rules/{id}",
        &[
            RATE_LIMIT_VALIDATION,
            &[RuleNotFound, ClientNotFound, ClientNotConnected, ClientRevoked, RateLimitUnsupportedByClient],
        ],
    ),
    ("DELETE", "/v1/rules/{id}", &[&[RuleNotFound]]),
    ("GET", "/v1/rules/{id}/stats", &[&[RuleNotFound]]),
    ("GET", "/v1/rules/{id}/stats/stream", &[&[RuleNotFound]]),
    ("PUT", "/v1/settings/advertised-endpoint", &[&[EndpointInvalid, EndpointNotInCertSan]]),
    ("GET", "/v1/audit", &[&[InvalidCursor, OutOfRange, InvalidTimeRange]]),
    ("GET", "/v1/admin/backup", &[&[IoError]]),
];

fn error_response(description: String) -> RefOr<utoipa::openapi::Response> {
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

/// One line naming `codes`, e.g. "Codes: `user_not_found`, `grant_not_found`."
fn code_line(codes: &[ErrorCode]) -> String {
    let mut line = String::from("Codes:");
    for (idx, code) in codes.iter().enumerate() {
        let sep = if idx == 0 { " " } else { ", " };
        let _ = write!(line, "{sep}`{}`", code.as_str());
    }
    line.push('.');
    line
}

/// Documents `codes` on `op`, one response per status; a handler's own response for a status
/// keeps its description, with the code line appended.
fn document(op: &mut Operation, codes: &[ErrorCode]) {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in codes {
        let entry = by_status.entry(code.http_status()).or_default();
        if !entry.contains(code) {
            entry.push(*code);
        }
    }
    for (status, codes) in by_status {
        let line = code_line(&codes);
        match op.responses.responses.get_mut(&status.to_string()) {
            Some(RefOr::T(response)) => {
                if response.description.is_empty() || response.description == "error" {
                    response.description = line;
                } else if !response.description.contains("Codes:") {
                    let own = response.description.trim_end();
                    let stop = if own.ends_with(['.', '!', '?']) { "" } else { "." };
                    response.description = format!("{own}{stop} {line}");
                }
                if response.content.is_empty() {
                    *response = match error_response(response.description.clone()) {
                        RefOr::T(r) => r,
                        RefOr::Ref(_) => continue,
                    };
                }
            }
            Some(RefOr::Ref(_)) => {}
            None => {
                op.responses.responses.insert(status.to_string(), error_response(line));
            }
        }
    }
}

/// The codes `method path` can answer: the shared ones by its shape, and its own.
fn codes_of(method: &str, path: &str, op: &Operation) -> Vec<ErrorCode> {
    let params = op.parameters.as_deref().unwrap_or_default();
    let mut codes: Vec<ErrorCode> = ANY_CODES.to_vec();
    if !params.is_empty() {
        codes.extend_from_slice(PARAM_CODES);
    }
    if op.request_body.is_some() {
        codes.extend_from_slice(BODY_CODES);
    }
    if !is_public_route(method, path) {
        codes.extend_from_slice(AUTH_CODES);
    }
    for (m, p, groups) in OPERATION_CODES {
        if *m == method && *p == path {
            groups.iter().for_each(|group| codes.extend_from_slice(group));
        }
    }
    codes
}

/// Adds the error responses to every operation of `doc`.
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
            let codes = codes_of(name, path, op);
            document(op, &codes);
        }
    }
}
