//! Schema-only types: what the OpenAPI document says about fields whose Rust type is looser
//! than the values the server reads or writes (a `String` that is one of a few words, a core
//! type whose bounds live in its validation). None of them is ever built; DTO fields point at
//! them with `#[schema(value_type = …)]`.
//!
//! Invariant: each schema here admits every value the server writes, and every value it
//! accepts on input, so generated clients and fuzzers can trust it in both directions; the
//! tests at the end hold the mirrors to the core types they describe.

use std::borrow::Cow;

use serde::Serialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

/// Pattern of a user id: 1 to 32 of `[a-z0-9._-]`, starting with a letter or a digit.
pub const USER_ID_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,31}$";
/// Pattern of a client name (a name must also not start with `cl_`, which ids use).
pub const CLIENT_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,62}$";
/// Pattern of a listen port or range written as text: `PORT` or `START-END`.
pub const PORT_TEXT_PATTERN: &str = "^[0-9]{1,5}(-[0-9]{1,5})?$";
/// Pattern of a target in its canonical form: `host:port[-port][@priority][,proxy=v1|v2]`.
pub const TARGET_PATTERN: &str = "^[^,@]+:[0-9]{1,5}(-[0-9]{1,5})?(@[0-9]{1,5})?(,proxy=(v1|v2))?$";

/// A capability a client announces.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum CapabilityName {
    /// TCP forwarding.
    Tcp,
    /// UDP forwarding.
    Udp,
    /// Listen port ranges.
    PortRange,
    /// Several targets with failover and health checks.
    MultiTarget,
    /// DNS-name targets resolved on the client.
    DnsTarget,
    /// PROXY protocol headers towards targets.
    ProxyProtocol,
    /// SNI routing: several TLS rules behind one listen port.
    Sni,
    /// Rate limits: a rule's own caps and owner envelopes.
    RateLimit,
}

/// Where a client stands in its enrollment.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ClientStatus {
    /// An enrollment code is out and was not redeemed yet.
    Enrolling,
    /// Holds a valid token.
    Enrolled,
    /// Its token was revoked.
    Revoked,
}

/// A rule's lifecycle state.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum RuleStateName {
    /// Stored and sent, no outcome yet.
    Pending,
    /// Bound on the client.
    Active,
    /// The client could not bind it.
    Failed,
    /// Removed; kept only until the client confirms.
    Removed,
    /// Pending or active, but its client is revoked: kept, and sent again when the client is
    /// re-enrolled.
    Suspended,
}

/// A target's health as the client sees it.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum TargetHealthName {
    /// Taking connections.
    Healthy,
    /// Skipped until it answers again.
    Failed,
}

/// The tier that decided the advertised endpoint.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum EndpointSourceName {
    /// The operator's override.
    Override,
    /// `--advertised-endpoint`, the environment or `server.toml`.
    Seed,
    /// Derived from the certificate and the control listener.
    Derived,
    /// The loopback fallback.
    Loopback,
}

/// The listen port(s) as given: a number 1–65535, or text `PORT` / `START-END` (ports 1–65535,
/// start ≤ end; a range spans at most `range_rule_max_ports` ports). The server checks the
/// numbers (`validation.invalid_port`, `validation.inverted_range`, `exceeds_cap`).
#[derive(Serialize)]
pub struct ListenPortSchema;

impl PartialSchema for ListenPortSchema {
    fn schema() -> RefOr<Schema> {
        let number = ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .minimum(Some(1))
            .maximum(Some(65535))
            .description(Some("one port, e.g. `18080`"))
            .build();
        let text = ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .pattern(Some(PORT_TEXT_PATTERN))
            .description(Some("`\"18080\"` or `\"20000-20099\"`"))
            .build();
        let one_of = OneOfBuilder::new()
            .item(number)
            .item(text)
            .description(Some(
                "The listen port(s): a number 1-65535, or text `PORT` / `START-END` with ports 1-65535 and start <= end.",
            ))
            .build();
        RefOr::T(Schema::OneOf(one_of))
    }
}

impl ToSchema for ListenPortSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ListenSpec")
    }
}

/// A target: `host:port[-port][@priority][,proxy=v1|v2]`, IPv6 hosts in brackets.
#[derive(Serialize)]
pub struct TargetSchema;

impl PartialSchema for TargetSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .pattern(Some(TARGET_PATTERN))
            .min_length(Some(3))
            .description(Some(
                "`host:port[-port][@priority][,proxy=v1|v2]`: an IPv4 address, a bracketed IPv6 address or a DNS name; \
                 ports 1-65535; priority 0-65535 (lower is preferred); PROXY protocol version `v1` or `v2` (TCP only).",
            ))
            .build()
            .into()
    }
}

impl ToSchema for TargetSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Target")
    }
}

/// A stable error code: one of core's table, never renamed or reused.
pub struct ErrorCodeSchema;

impl PartialSchema for ErrorCodeSchema {
    fn schema() -> RefOr<Schema> {
        let codes: Vec<&str> = portunus_core::error::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(codes))
            .description(Some("A stable error code; `docs/troubleshooting.md` explains each one."))
            .build()
            .into()
    }
}

impl ToSchema for ErrorCodeSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

// The document's picture of core's `RuleSpec`: the same fields, with their bounds (a test
// below holds the field lists equal). Its doc comment is the schema's description.
/// A rule as an operator writes it. Unknown fields are refused. Exactly one of `target` and
/// `targets` is given.
#[derive(ToSchema, Serialize)]
#[schema(as = RuleSpec)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RuleSpecSchema {
    /// Optional label shown in listings (1 to 64 bytes, no invisible characters).
    #[schema(min_length = 1, max_length = 64)]
    name: Option<String>,
    /// `tcp` (default) or `udp`.
    #[schema(required = false)]
    protocol: portunus_core::rule::Protocol,
    /// `PORT` or `START-END`.
    listen_port: ListenPortSchema,
    /// Address to bind (an IPv4 or IPv6 address); default is dual-stack `[::]` (or `0.0.0.0`
    /// without IPv6).
    listen_addr: Option<String>,
    /// The one target.
    target: Option<TargetSchema>,
    /// Several targets (1 to 8, unique by `host:port`), in the same grammar.
    #[schema(required = false, min_items = 1, max_items = 8)]
    targets: Vec<TargetSchema>,
    /// Ask for AAAA records before A records when resolving DNS-name targets.
    #[schema(required = false)]
    prefer_ipv6: bool,
    /// Active TCP health probe interval in seconds (1 to 3600); passive health is always on.
    #[schema(minimum = 1, maximum = 3600)]
    health_check_interval_secs: Option<u32>,
    /// TCP, one listen port: take only TLS connections whose ClientHello names this host
    /// (`api.example.com`) or a host one label below a suffix (`*.example.com`); compared
    /// lowercased. SNI rules of a client on one port share its listener; a plain TCP rule
    /// never shares it (`conflict.legacy_to_sni_unsupported`).
    #[schema(min_length = 1, max_length = 255)]
    sni_pattern: Option<String>,
    /// TCP, one listen port: this rule is the SNI port's fallback, taking TLS connections
    /// that name no host or one no pattern matches (at most one per port). Excludes
    /// `sni_pattern`.
    #[schema(required = false)]
    sni_fallback: bool,
    /// Caps on the rule's traffic: bandwidth in bytes (not bits) per second in each direction,
    /// new connections (or UDP flows) per second, connections open at once. An owner envelope
    /// on the client binds first. Absent or empty: no caps. Shown with every burst written out.
    rate_limit: Option<portunus_core::ratelimit::RateLimits>,
}

/// Fits core's `RateLimits` schema to the document: its description speaks to API users
/// (core's doc comment is written for Rust readers), and each rate gets its maximum.
pub(crate) fn refine_rate_limits(doc: &mut utoipa::openapi::OpenApi) {
    use portunus_core::ratelimit::{
        MAX_BANDWIDTH_BPS, MAX_BURST_SECS, MAX_NEW_CONNECTIONS_PER_SEC, MIN_BANDWIDTH_BURST_BYTES,
        MIN_BURST_DIVISOR,
    };
    let Some(components) = doc.components.as_mut() else { return };
    let Some(RefOr::T(Schema::Object(limits))) = components.schemas.get_mut("RateLimits") else { return };
    limits.description = Some(format!(
        "Rate limits. Bandwidth caps count **bytes** (not bits) per second, `in` from the connecting peer \
         towards the target and `out` for the replies, over all connections; the connection caps count new TCP \
         connections (or new UDP flows) per second and connections (flows) open at once. Every field is optional \
         and unknown fields are refused; 0 is refused (`validation.zero_cap`): leave a field out for no cap. A \
         burst (bucket size) needs its rate (`validation.burst_without_rate`) and defaults to one second of it, a \
         bandwidth burst never below {MIN_BANDWIDTH_BURST_BYTES} bytes; an explicit burst must lie in \
         [max(ceil(rate / {MIN_BURST_DIVISOR}), floor), max({MAX_BURST_SECS} x rate, floor)], floor being \
         {MIN_BANDWIDTH_BURST_BYTES} for bandwidth and 1 for connections (`validation.burst_out_of_range`). \
         On a rule an empty object means no caps; an owner envelope sets at least one \
         (`validation.empty_envelope`)."
    ));
    let maxima = [
        ("bandwidth_in_bps", MAX_BANDWIDTH_BPS),
        ("bandwidth_out_bps", MAX_BANDWIDTH_BPS),
        ("bandwidth_in_burst_bytes", MAX_BANDWIDTH_BPS.saturating_mul(MAX_BURST_SECS)),
        ("bandwidth_out_burst_bytes", MAX_BANDWIDTH_BPS.saturating_mul(MAX_BURST_SECS)),
        ("new_connections_per_sec", u64::from(MAX_NEW_CONNECTIONS_PER_SEC)),
        ("new_connections_burst", u64::from(MAX_NEW_CONNECTIONS_PER_SEC).saturating_mul(MAX_BURST_SECS)),
    ];
    for (field, maximum) in maxima {
        if let Some(RefOr::T(Schema::Object(property))) = limits.properties.get_mut(field) {
            property.maximum = Some(utoipa::Number::UInt(usize::try_from(maximum).unwrap_or(usize::MAX)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use portunus_core::capability::Capability;
    use portunus_core::rule::{ListenSpec, RuleSpec};

    use super::*;

    fn properties<T: ToSchema>() -> BTreeSet<String> {
        let value = serde_json::to_value(T::schema()).expect("serialises");
        value["properties"].as_object().expect("properties").keys().cloned().collect()
    }

    #[test]
    fn the_rule_spec_mirror_has_exactly_the_fields_of_core_rule_spec() {
        let full = RuleSpec {
            name: Some("web".into()),
            protocol: Default::default(),
            listen_port: ListenSpec::Port(80),
            listen_addr: Some("127.0.0.1".parse().expect("ip")),
            target: Some("127.0.0.1:81".into()),
            targets: vec!["127.0.0.1:82".into()],
            prefer_ipv6: true,
            health_check_interval_secs: Some(5),
            sni_pattern: Some("api.example.com".into()),
            sni_fallback: true,
            rate_limit: Some(portunus_core::ratelimit::RateLimits {
                concurrent_connections: Some(10),
                ..Default::default()
            }),
        };
        let written = serde_json::to_value(&full).expect("serialises");
        let fields: BTreeSet<String> = written.as_object().expect("object").keys().cloned().collect();
        assert_eq!(properties::<RuleSpecSchema>(), fields);
    }

    #[test]
    fn the_rate_limits_schema_speaks_of_bytes_and_bounds_each_rate() {
        use portunus_core::ratelimit::{MAX_BANDWIDTH_BPS, MAX_NEW_CONNECTIONS_PER_SEC, RateLimits};
        let doc = serde_json::to_value(crate::openapi()).expect("serialises");
        let schema = &doc["components"]["schemas"]["RateLimits"];
        let description = schema["description"].as_str().expect("a description");
        assert!(description.contains("**bytes** (not bits) per second"), "{description}");
        assert!(!description.contains("```"), "no Rust example in the document: {description}");
        let properties = &schema["properties"];
        assert_eq!(properties["bandwidth_in_bps"]["maximum"], MAX_BANDWIDTH_BPS);
        assert_eq!(properties["bandwidth_out_bps"]["maximum"], MAX_BANDWIDTH_BPS);
        assert_eq!(properties["new_connections_per_sec"]["maximum"], MAX_NEW_CONNECTIONS_PER_SEC);
        let full = RateLimits {
            bandwidth_in_bps: Some(1),
            bandwidth_in_burst_bytes: Some(1),
            bandwidth_out_bps: Some(1),
            bandwidth_out_burst_bytes: Some(1),
            new_connections_per_sec: Some(1),
            new_connections_burst: Some(1),
            concurrent_connections: Some(1),
        };
        let written = serde_json::to_value(full).expect("serialises");
        let fields: BTreeSet<&String> = written.as_object().expect("object").keys().collect();
        let documented: BTreeSet<&String> = properties.as_object().expect("properties").keys().collect();
        assert_eq!(documented, fields);
        for (name, property) in properties.as_object().expect("properties") {
            assert_eq!(property["minimum"], 1, "{name}: 0 is refused");
        }
    }

    #[test]
    fn the_capability_enum_lists_every_capability() {
        let value = serde_json::to_value(CapabilityName::schema()).expect("serialises");
        let listed: BTreeSet<&str> =
            value["enum"].as_array().expect("enum").iter().filter_map(|v| v.as_str()).collect();
        let known: BTreeSet<&str> = Capability::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, known);
    }
}
