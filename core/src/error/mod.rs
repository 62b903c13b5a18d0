//! The closed set of error codes a user can meet, with their exit and HTTP statuses.
//!
//! Invariant: a code string, once released, is never renamed or reused, and each code has
//! exactly one CLI exit status and one HTTP status. The table below is the only place
//! either mapping is written; `docs/troubleshooting.md` lists every code (a tidy check).

use std::fmt;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => $code:literal, exit $exit:literal, http $http:literal; )+) => {
        /// A stable, machine-readable failure code, with the one CLI exit status and the one
        /// HTTP status it maps to (`docs/troubleshooting.md` lists them all).
        ///
        /// ```
        /// use portunus_core::ErrorCode;
        ///
        /// let code = ErrorCode::PortInUse;
        /// assert_eq!((code.as_str(), code.exit_status(), code.http_status()), ("port_in_use", 5, 409));
        /// assert_eq!(ErrorCode::parse("rule_not_found"), Some(ErrorCode::RuleNotFound));
        /// assert_eq!(ErrorCode::RuleNotFound.exit_status(), 8);
        /// assert_eq!(ErrorCode::parse("no_such_code"), None);
        /// // Every code round-trips through its string.
        /// assert!(ErrorCode::ALL.iter().all(|c| ErrorCode::parse(c.as_str()) == Some(*c)));
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )+
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )+ ];

            /// The stable snake_case (or dotted) string, as it appears in JSON bodies and logs.
            pub const fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )+ }
            }

            /// The process exit status a CLI command ends with when it fails with this code.
            pub const fn exit_status(self) -> u8 {
                match self { $( ErrorCode::$variant => $exit, )+ }
            }

            /// The HTTP status the operator API answers with for this code.
            pub const fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $http, )+ }
            }

            /// Looks a code up by its string; `None` for strings this build does not know.
            pub fn parse(s: &str) -> Option<ErrorCode> {
                match s { $( $code => Some(ErrorCode::$variant), )+ _ => None }
            }
        }
    };
}

error_codes! {
    /// An invariant broke inside Portunus; the message says where.
    Internal => "internal", exit 1, http 500;
    /// The embedded store failed to read or commit.
    StoreError => "store_error", exit 1, http 500;
    /// A local file or socket operation failed.
    IoError => "io_error", exit 1, http 500;

    /// The request body or command line could not be understood.
    InvalidRequest => "invalid_request", exit 2, http 400;
    /// A target is not `host:port[-port][@priority][,proxy=v1|v2]`.
    InvalidTarget => "invalid_target", exit 2, http 400;
    /// A listen port is 0, above 65535 or not a number.
    InvalidPort => "validation.invalid_port", exit 2, http 400;
    /// A port range is inverted (`end < start`).
    InvertedRange => "validation.inverted_range", exit 2, http 400;
    /// The listen range and a target range differ in length.
    RangeMismatch => "range_mismatch", exit 2, http 400;
    /// A range is wider than the configured cap.
    ExceedsCap => "exceeds_cap", exit 2, http 400;
    /// Two targets of one rule name the same `host:port`.
    DuplicateTarget => "validation.duplicate_target", exit 2, http 400;
    /// A rule names no target, or more than the allowed number.
    TargetCount => "validation.target_count", exit 2, http 400;
    /// A field is not valid for this rule's protocol (e.g. PROXY protocol on UDP).
    ProtocolMismatch => "validation.protocol_mismatch", exit 2, http 400;
    /// A name (client, rule) does not follow the naming rules.
    InvalidName => "validation.invalid_name", exit 2, http 400;
    /// A numeric setting or field is outside its allowed range.
    OutOfRange => "validation.out_of_range", exit 2, http 400;
    /// A configuration file has an unknown key or a malformed value.
    InvalidConfig => "invalid_config", exit 2, http 400;
    /// An advertised endpoint is not a bare `host:port`.
    EndpointInvalid => "endpoint_invalid", exit 2, http 422;
    /// An advertised endpoint's host is not covered by the server certificate's SANs.
    EndpointNotInCertSan => "endpoint_not_in_cert_san", exit 2, http 422;
    /// An enrollment URI is malformed.
    EnrollUriInvalid => "enroll_uri_invalid", exit 2, http 400;
    /// A client bundle file is missing fields or malformed.
    InvalidBundle => "invalid_bundle", exit 2, http 400;
    /// The request body is larger than the API accepts.
    PayloadTooLarge => "payload_too_large", exit 2, http 413;
    /// The route exists but not with this HTTP method.
    MethodNotAllowed => "method_not_allowed", exit 2, http 405;
    /// The data directory is on NFS, tmpfs or ramfs.
    UnsupportedFilesystem => "unsupported_filesystem", exit 2, http 500;
    /// A password is shorter than the minimum (or longer than the maximum) length.
    WeakPassword => "validation.weak_password", exit 2, http 400;
    /// A paging cursor is not one this server handed out.
    InvalidCursor => "validation.invalid_cursor", exit 2, http 400;
    /// A time range ends before it starts.
    InvalidTimeRange => "validation.invalid_time_range", exit 2, http 422;
    /// An SNI pattern is neither a host name nor `*.` and a suffix of at least two labels.
    InvalidSniPattern => "validation.invalid_sni_pattern", exit 2, http 400;
    /// A rate limit is set to 0; omit it for no cap.
    ZeroCap => "validation.zero_cap", exit 2, http 400;
    /// A rate limit's burst is set without the rate it belongs to.
    BurstWithoutRate => "validation.burst_without_rate", exit 2, http 400;
    /// A rate limit's burst is outside the range its rate allows.
    BurstOutOfRange => "validation.burst_out_of_range", exit 2, http 400;
    /// An owner envelope sets no cap at all.
    EmptyEnvelope => "validation.empty_envelope", exit 2, http 400;
    /// A quota's `monthly_bytes` is 0 or above the maximum.
    QuotaBytesInvalid => "validation.quota_bytes_invalid", exit 2, http 400;
    /// A quota's `billing_anchor` is before 1970 or after the end of year 9999.
    QuotaAnchorInvalid => "validation.quota_anchor_invalid", exit 2, http 400;
    /// A quota patch changes nothing.
    EmptyQuotaPatch => "validation.empty_quota_patch", exit 2, http 400;
    /// A traffic query's bucket is neither `1m` nor `1h`.
    InvalidBucket => "validation.invalid_bucket", exit 2, http 400;
    /// A traffic query starts before the oldest sample its bucket keeps.
    BucketOutOfRetention => "quota_bucket_out_of_retention", exit 2, http 422;
    /// A traffic query spans more buckets than one answer holds.
    TrafficWindowTooLarge => "validation.traffic_window_too_large", exit 2, http 422;

    /// The client did not announce UDP support.
    UnsupportedProtocol => "unsupported_protocol", exit 3, http 422;
    /// The client did not announce support for several targets per rule.
    MultiTargetUnsupportedByClient => "multi_target_unsupported_by_client", exit 3, http 422;
    /// The client did not announce support for listen port ranges.
    PortRangeUnsupportedByClient => "port_range_unsupported_by_client", exit 3, http 422;
    /// The client did not announce support for DNS-name targets.
    DnsTargetUnsupportedByClient => "dns_target_unsupported_by_client", exit 3, http 422;
    /// The client did not announce support for PROXY protocol headers.
    ProxyProtocolUnsupportedByClient => "proxy_protocol_unsupported_by_client", exit 3, http 422;
    /// The client did not announce support for SNI routing.
    SniUnsupportedByClient => "sni_unsupported_by_client", exit 3, http 422;
    /// A rule with rate limits (or an owner envelope) for a client that did not announce
    /// rate-limit support.
    RateLimitUnsupportedByClient => "rate_limit_unsupported_by_client", exit 3, http 422;

    /// The client has no live control stream.
    ClientNotConnected => "client_not_connected", exit 4, http 409;
    /// Missing or invalid credentials.
    Unauthenticated => "unauthenticated", exit 4, http 401;
    /// The client's token was revoked.
    TokenRevoked => "token_revoked", exit 4, http 401;
    /// The server's certificate does not match the pinned fingerprint.
    TlsPinMismatch => "tls_pin_mismatch", exit 4, http 502;
    /// The server could not be reached.
    ServerUnreachable => "server_unreachable", exit 4, http 502;
    /// No enrollment exists for this code.
    EnrollmentNotFound => "enrollment_not_found", exit 4, http 401;
    /// The enrollment code expired before it was redeemed.
    EnrollmentExpired => "enrollment_expired", exit 4, http 401;
    /// The enrollment code was already redeemed.
    EnrollmentConsumed => "enrollment_consumed", exit 4, http 401;
    /// The enrollment can't be redeemed with the server's current configuration.
    FailedPrecondition => "failed_precondition", exit 4, http 409;
    /// Another process with the same client token is connected; this one waits its turn.
    ClientAlreadyConnected => "client_already_connected", exit 4, http 409;
    /// No superadmin exists yet; only the operator token and onboarding are accepted.
    BootstrapRequired => "bootstrap_required", exit 4, http 503;
    /// Too many failed attempts for this subject or address; retry after the lockout.
    RateLimited => "rate_limited", exit 4, http 429;

    /// The listen port is held by another rule or process.
    PortInUse => "port_in_use", exit 5, http 409;
    /// Another client already has this name.
    ClientNameTaken => "conflict.client_name_taken", exit 5, http 409;
    /// The client was revoked; re-enroll it before pushing rules.
    ClientRevoked => "conflict.client_revoked", exit 5, http 409;
    /// Only a revoked client may be deleted.
    ClientNotRevoked => "conflict.client_not_revoked", exit 5, http 409;
    /// A user with this id already exists.
    UserExists => "conflict.user_exists", exit 5, http 409;
    /// The last superadmin cannot be removed or demoted.
    LastSuperadmin => "conflict.last_superadmin", exit 5, http 409;
    /// Onboarding already created the first superadmin; it never reopens.
    OnboardingClosed => "conflict.onboarding_closed", exit 5, http 409;
    /// Another rule on the same listener already routes this SNI pattern.
    SniPatternTaken => "conflict.sni_pattern_taken", exit 5, http 409;
    /// The listener already has a fallback rule (one without an SNI pattern).
    SniFallbackTaken => "conflict.sni_fallback_taken", exit 5, http 409;
    /// A plain TCP rule and an SNI rule cannot share a client's listen port.
    LegacyToSniUnsupported => "conflict.legacy_to_sni_unsupported", exit 5, http 409;

    /// The caller does not own the resource.
    NotOwner => "not_owner", exit 6, http 403;
    /// No grant covers the requested client.
    ClientNotGranted => "client_not_granted", exit 6, http 403;
    /// No single grant covers the whole listen range.
    PortOutsideGrant => "port_outside_grant", exit 6, http 403;
    /// No grant covering the client and ports enables the protocol.
    ProtocolNotGranted => "protocol_not_granted", exit 6, http 403;
    /// The caller holds a temporary password and may only change it.
    PasswordChangeRequired => "password_change_required", exit 6, http 403;
    /// A cookie-authenticated write lacked a same-origin `Origin` or the CSRF header.
    CsrfFailed => "csrf_failed", exit 6, http 403;

    /// The client did not report an outcome within the activation timeout.
    AckTimeout => "ack_timeout", exit 7, http 504;

    /// No rule with this id.
    RuleNotFound => "rule_not_found", exit 8, http 404;
    /// No client with this id or name.
    ClientNotFound => "client_not_found", exit 8, http 404;
    /// No such route.
    RouteNotFound => "route_not_found", exit 8, http 404;
    /// No user with this id.
    UserNotFound => "user_not_found", exit 8, http 404;
    /// No grant with this id.
    GrantNotFound => "grant_not_found", exit 8, http 404;
    /// No API token with this id for this user.
    TokenNotFound => "token_not_found", exit 8, http 404;
    /// No quota for this user and client.
    QuotaNotFound => "quota_not_found", exit 8, http 404;
    /// No owner envelope for that (user, client) pair.
    OwnerCapsNotFound => "owner_caps_not_found", exit 8, http 404;

    /// Another process holds the store.
    StoreInUse => "store_in_use", exit 75, http 503;
    /// The store was written by a newer Portunus.
    SchemaVersionTooNew => "schema_version_too_new", exit 78, http 500;
    /// The store file is damaged, truncated or not a Portunus store; it was left untouched.
    StoreDamaged => "store_damaged", exit 65, http 500;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure that reaches a user: a stable code and a human sentence.
///
/// Operation-specific error enums convert into this at the edge (CLI, HTTP, gRPC).
///
/// ```
/// use portunus_core::{ErrorCode, Failure};
///
/// let failure = Failure::new(ErrorCode::ClientNotConnected, "client edge-01 is not connected");
/// assert_eq!(failure.to_string(), "client_not_connected: client edge-01 is not connected");
/// // A CLI exits with the code's status; the HTTP API answers with its status.
/// assert_eq!((failure.code.exit_status(), failure.code.http_status()), (4, 409));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Failure {
    /// The stable code.
    pub code: ErrorCode,
    /// A sentence for humans; never contains a secret.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }
}

#[cfg(test)]
mod tests;
