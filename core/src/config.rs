//! Server settings: the layers (flag > `PORTUNUS_*` environment > `server.toml` > default),
//! their validation, and the data-plane subset that reaches every client in Welcome.
//!
//! Invariant: a value outside its range refuses to start with a message naming the key;
//! nothing is silently clamped.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{ErrorCode, Failure};

/// The 1-based line of byte `offset` in `text`, and the key that line assigns, if any.
fn locate(text: &str, offset: usize) -> (usize, Option<String>) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let key = text
        .get(start..)
        .and_then(|rest| rest.lines().next())
        .and_then(|line| line.split_once('='))
        .map(|(key, _)| key.trim().trim_matches('"').to_owned())
        .filter(|key| !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    (line, key)
}

/// Fewest characters an operator token may have: it is a bearer credential for everything.
pub const MIN_OPERATOR_TOKEN_CHARS: usize = 32;

/// A configured operator token, refused when too short to be a credential (the message does
/// not quote it).
fn operator_token(configured: Option<String>) -> Result<Option<String>, Failure> {
    match configured.filter(|t| !t.is_empty()) {
        Some(token) if token.chars().count() < MIN_OPERATOR_TOKEN_CHARS => Err(Failure::new(
            ErrorCode::InvalidConfig,
            format!(
                "operator_token: at least {MIN_OPERATOR_TOKEN_CHARS} characters are required, this one has {}",
                token.chars().count()
            ),
        )),
        other => Ok(other),
    }
}

/// One layer of settings; `None` means "not set here, ask the next layer".
///
/// The same shape is read from `server.toml` (unknown keys refused) and built from flags
/// and environment variables.
///
/// ```
/// use std::time::Duration;
/// use portunus_core::config::{ServerSettings, SettingsLayer};
/// use portunus_core::ErrorCode;
///
/// let file = SettingsLayer::from_toml("stats_interval_secs = 5\nrange_rule_max_ports = 64\n")?;
/// // A flag (or environment variable) wins over the file; the file over the default.
/// let flags = SettingsLayer { stats_interval_secs: Some(1), ..SettingsLayer::default() };
/// let settings = ServerSettings::resolve(flags.over(file))?;
/// assert_eq!(settings.data_plane.stats_interval, Duration::from_secs(1));
/// assert_eq!(settings.range_rule_max_ports, 64);
/// assert_eq!(settings.data_plane.tcp_idle_timeout, Duration::from_secs(7_200), "the default");
///
/// // Unknown keys and values out of range are refused, never ignored or clamped.
/// assert_eq!(SettingsLayer::from_toml("colour = 1").unwrap_err().code, ErrorCode::InvalidConfig);
/// let too_big = SettingsLayer::from_toml("stats_interval_secs = 3600")?;
/// assert_eq!(ServerSettings::resolve(too_big).unwrap_err().code, ErrorCode::OutOfRange);
/// # Ok::<(), portunus_core::Failure>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsLayer {
    /// gRPC control listener.
    pub control_listen: Option<SocketAddr>,
    /// Operator HTTP API listener.
    pub operator_http_listen: Option<SocketAddr>,
    /// Prometheus `/metrics`, `/healthz`, `/readyz` listener.
    pub metrics_listen: Option<SocketAddr>,
    /// `host:port` put in enrollment URIs and bundles.
    pub advertised_endpoint: Option<String>,
    /// Extra SANs for a certificate generated at first start.
    pub cert_sans: Option<Vec<String>>,
    /// A fixed operator token instead of the generated `operator.token` file.
    pub operator_token: Option<String>,
    /// Default enrollment code lifetime.
    pub enrollment_ttl_secs: Option<u64>,
    /// Idle time after which a UDP flow is reaped.
    pub udp_flow_idle_secs: Option<u64>,
    /// UDP flow cap per rule, across all its ports.
    pub udp_max_flows_per_rule: Option<u64>,
    /// Widest listen range a rule may have.
    pub range_rule_max_ports: Option<u64>,
    /// Target connect timeout.
    pub tcp_connect_timeout_secs: Option<u64>,
    /// A TCP connection with no bytes either way for this long is closed.
    pub tcp_idle_timeout_secs: Option<u64>,
    /// TCP keepalive idle time on both legs.
    pub tcp_keepalive_secs: Option<u64>,
    /// How often clients send StatsReport.
    pub stats_interval_secs: Option<u64>,
    /// Days the audit trail keeps a record (0: forever).
    pub audit_retention_days: Option<u64>,
    /// Origins (`scheme://host[:port]`) the Web UI is served from, for the `Origin` check of
    /// cookie-authenticated writes.
    pub public_origins: Option<Vec<String>>,
    /// Addresses of reverse proxies whose `X-Forwarded-Proto`/`-For` headers are trusted.
    pub trusted_proxies: Option<Vec<std::net::IpAddr>>,
}

impl SettingsLayer {
    /// Parses `server.toml` text. Unknown keys and wrongly typed values name the key.
    pub fn from_toml(text: &str) -> Result<Self, Failure> {
        toml::from_str(text).map_err(|err| {
            let at = err.span().map(|span| locate(text, span.start));
            let message = match at {
                // A value the key's type refuses: say which key, and where.
                Some((line, Some(key))) if !err.message().contains(&key) => {
                    format!("server.toml: {key}: {} (line {line})", err.message())
                }
                Some((line, _)) => format!("server.toml: {} (line {line})", err.message()),
                None => format!("server.toml: {}", err.message()),
            };
            Failure::new(ErrorCode::InvalidConfig, message)
        })
    }

    /// Fills every unset field of `self` from `lower`.
    pub fn over(self, lower: SettingsLayer) -> SettingsLayer {
        macro_rules! pick {
            ($($field:ident),+) => { SettingsLayer { $( $field: self.$field.or(lower.$field), )+ } };
        }
        pick!(
            control_listen,
            operator_http_listen,
            metrics_listen,
            advertised_endpoint,
            cert_sans,
            operator_token,
            enrollment_ttl_secs,
            udp_flow_idle_secs,
            udp_max_flows_per_rule,
            range_rule_max_ports,
            tcp_connect_timeout_secs,
            tcp_idle_timeout_secs,
            tcp_keepalive_secs,
            stats_interval_secs,
            audit_retention_days,
            public_origins,
            trusted_proxies
        )
    }
}

/// Settings every client's data plane runs with; sent in Welcome, or read from the
/// standalone TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPlaneSettings {
    /// UDP flow idle expiry.
    pub udp_flow_idle: Duration,
    /// UDP flows per rule.
    pub udp_max_flows_per_rule: u32,
    /// Target connect timeout.
    pub tcp_connect_timeout: Duration,
    /// Idle TCP connections are closed after this.
    pub tcp_idle_timeout: Duration,
    /// TCP keepalive idle time.
    pub tcp_keepalive: Duration,
    /// StatsReport period.
    pub stats_interval: Duration,
}

impl Default for DataPlaneSettings {
    fn default() -> Self {
        DataPlaneSettings {
            udp_flow_idle: Duration::from_secs(UDP_FLOW_IDLE.default),
            udp_max_flows_per_rule: UDP_MAX_FLOWS.default as u32,
            tcp_connect_timeout: Duration::from_secs(TCP_CONNECT_TIMEOUT.default),
            tcp_idle_timeout: Duration::from_secs(TCP_IDLE_TIMEOUT.default),
            tcp_keepalive: Duration::from_secs(TCP_KEEPALIVE.default),
            stats_interval: Duration::from_secs(STATS_INTERVAL.default),
        }
    }
}

/// A bounded numeric setting.
struct Bounded {
    key: &'static str,
    range: RangeInclusive<u64>,
    default: u64,
}

impl Bounded {
    fn get(&self, value: Option<u64>) -> Result<u64, Failure> {
        let v = value.unwrap_or(self.default);
        if self.range.contains(&v) {
            Ok(v)
        } else {
            Err(Failure::new(
                ErrorCode::OutOfRange,
                format!("{} = {v} is out of range ({}..={})", self.key, self.range.start(), self.range.end()),
            ))
        }
    }
}

const ENROLLMENT_TTL: Bounded = Bounded { key: "enrollment_ttl_secs", range: 1..=86_400, default: 600 };
const UDP_FLOW_IDLE: Bounded = Bounded { key: "udp_flow_idle_secs", range: 30..=300, default: 60 };
const UDP_MAX_FLOWS: Bounded = Bounded { key: "udp_max_flows_per_rule", range: 1..=65_535, default: 1024 };
const RANGE_MAX_PORTS: Bounded = Bounded { key: "range_rule_max_ports", range: 1..=65_535, default: 1024 };
const TCP_CONNECT_TIMEOUT: Bounded = Bounded { key: "tcp_connect_timeout_secs", range: 1..=300, default: 10 };
const TCP_IDLE_TIMEOUT: Bounded =
    Bounded { key: "tcp_idle_timeout_secs", range: 10..=604_800, default: 7_200 };
const TCP_KEEPALIVE: Bounded = Bounded { key: "tcp_keepalive_secs", range: 5..=7_200, default: 60 };
const STATS_INTERVAL: Bounded = Bounded { key: "stats_interval_secs", range: 1..=300, default: 2 };
const AUDIT_RETENTION_DAYS: Bounded = Bounded { key: "audit_retention_days", range: 0..=36_500, default: 90 };

/// Longest lifetime an enrollment code may be given.
pub const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(86_400);

/// Fully resolved, validated server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// gRPC control listener.
    pub control_listen: SocketAddr,
    /// Operator HTTP API listener.
    pub operator_http_listen: SocketAddr,
    /// Metrics listener.
    pub metrics_listen: SocketAddr,
    /// Seed for the advertised endpoint (validated by [`crate::endpoint::Endpoint::parse`]).
    pub advertised_endpoint: Option<crate::endpoint::Endpoint>,
    /// Extra certificate SANs for first start.
    pub cert_sans: Vec<String>,
    /// Fixed operator token, if configured.
    pub operator_token: Option<String>,
    /// Default enrollment lifetime.
    pub enrollment_ttl: Duration,
    /// Range cap.
    pub range_rule_max_ports: u32,
    /// What clients run with.
    pub data_plane: DataPlaneSettings,
    /// Timeouts, caps and keepalives of the control plane itself.
    pub control: ControlPolicy,
    /// How long the audit trail keeps records, and its budget for unauthenticated requests.
    pub audit: AuditPolicy,
    /// Where the operator API is reached from: public origins and trusted proxies.
    pub web: WebPolicy,
}

/// Retention of the audit trail and the per-source budget of unauthenticated requests' records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPolicy {
    /// Records older than this are pruned (hourly, and at start); `None` keeps them forever.
    pub retention: Option<Duration>,
    /// Records an unauthenticated source may leave at once.
    pub anonymous_burst: u32,
    /// Records an unauthenticated source may leave per minute after its burst.
    pub anonymous_per_minute: u32,
    /// Sources tracked one by one; beyond it, they share one budget.
    pub anonymous_sources: usize,
    /// How often retention runs.
    pub prune_every: Duration,
}

impl AuditPolicy {
    /// The cut-off of the retention at `now`: records written before it are pruned. `None`
    /// when retention is off.
    pub fn prune_before(&self, now: crate::ids::Timestamp) -> Option<crate::ids::Timestamp> {
        let retention = u64::try_from(self.retention?.as_millis()).unwrap_or(u64::MAX);
        Some(crate::ids::Timestamp::from_millis(now.as_millis().saturating_sub(retention)))
    }
}

impl Default for AuditPolicy {
    fn default() -> Self {
        AuditPolicy {
            retention: Some(Duration::from_secs(AUDIT_RETENTION_DAYS.default * DAY_SECS)),
            anonymous_burst: 20,
            anonymous_per_minute: 60,
            anonymous_sources: 4096,
            prune_every: Duration::from_secs(3600),
        }
    }
}

/// The operator API's view of where its requests come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebPolicy {
    /// Origins a cookie-authenticated write may come from, normalised `scheme://host:port`.
    /// Empty: the operator listener's own address (`http://<listen>`, and `localhost` for a
    /// loopback listener).
    pub public_origins: Vec<String>,
    /// Proxies whose `X-Forwarded-Proto` and `X-Forwarded-For` are believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

const DAY_SECS: u64 = 86_400;

/// Normalises an origin for comparison: `scheme://host:port`, lower-case, default port
/// spelled out, no path. `None` for anything that is not an http(s) origin.
pub fn normalize_origin(text: &str) -> Option<String> {
    let text = text.trim();
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.starts_with('[') || host.ends_with(']')) => {
            // Digits only: `u16::from_str` would also take `+7080`.
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (host, port.parse::<u16>().ok()?)
        }
        _ => (authority, default_port),
    };
    if host.is_empty() || (host.starts_with('[') != host.ends_with(']')) {
        return None;
    }
    Some(format!("{scheme}://{}:{port}", host.to_ascii_lowercase()))
}

/// The control plane's own timing and size policy, shared by the server and the client.
///
/// The transport's keepalive is TCP's (handled by the kernel, so an idle stream costs no
/// process wake-ups); HTTP/2 pings are not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPolicy {
    /// How long `push-rule` waits for the client's activation outcome when not told.
    pub default_ack_timeout: Duration,
    /// How long a new stream may take to send its Hello.
    pub hello_timeout: Duration,
    /// How long a TLS handshake (either side) may take.
    pub tls_handshake_timeout: Duration,
    /// How long a client's TCP connect to the server may take.
    pub connect_timeout: Duration,
    /// Idle time before the first TCP keepalive probe on a control connection.
    pub keepalive_idle: Duration,
    /// Time between TCP keepalive probes.
    pub keepalive_interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub keepalive_probes: u32,
    /// Reconnect backoff of a client: first window and cap (full windows are jittered).
    pub reconnect_backoff: (Duration, Duration),
    /// Backoff and attempts of a client's redeem.
    pub redeem_backoff: (Duration, Duration),
    /// Redeem attempts before giving up.
    pub redeem_attempts: u32,
    /// Largest control-stream message either side decodes.
    pub max_message_bytes: usize,
    /// Largest operator API request body.
    pub max_body_bytes: usize,
    /// How often changed traffic totals are persisted.
    pub stats_flush_interval: Duration,
    /// Shortest stats interval a client accepts from Welcome.
    pub min_stats_interval: Duration,
    /// How long shutdown waits for the operator API's requests to finish.
    pub shutdown_grace: Duration,
    /// How long shutdown waits for control connections to close after every stream was
    /// told to end, before it drops them.
    pub control_drain: Duration,
    /// Pending connections each listener queues (a fleet reconnecting at once).
    pub listen_backlog: u32,
    /// Longest a write-behind write (a client's outcome for a rule, answered before it is on
    /// disk) waits for a transaction to carry it: when none came along within it, the writer
    /// commits it on its own.
    pub deferred_sync: Duration,
    /// Threads the server runs blocking use cases on (operator API calls that wait for a
    /// commit, listings, password hashing); more calls at once queue. Each thread keeps its
    /// own allocator arena, so a pool sized for bursts costs memory for good.
    pub blocking_threads: usize,
}

impl Default for ControlPolicy {
    fn default() -> Self {
        ControlPolicy {
            default_ack_timeout: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(10),
            keepalive_probes: 3,
            reconnect_backoff: (Duration::from_millis(250), Duration::from_secs(30)),
            redeem_backoff: (Duration::from_millis(200), Duration::from_secs(3)),
            redeem_attempts: 5,
            max_message_bytes: 4 * 1024 * 1024,
            max_body_bytes: 64 * 1024,
            stats_flush_interval: Duration::from_secs(10),
            min_stats_interval: Duration::from_millis(100),
            shutdown_grace: Duration::from_secs(10),
            control_drain: Duration::from_millis(500),
            listen_backlog: 4096,
            deferred_sync: Duration::from_millis(200),
            blocking_threads: 8,
        }
    }
}

impl ServerSettings {
    /// Resolves a merged layer (see [`SettingsLayer::over`]) against the defaults.
    pub fn resolve(layer: SettingsLayer) -> Result<Self, Failure> {
        let advertised_endpoint =
            layer.advertised_endpoint.as_deref().map(crate::endpoint::Endpoint::parse).transpose()?;
        Ok(ServerSettings {
            control_listen: layer.control_listen.unwrap_or_else(|| "0.0.0.0:7443".parse().expect("literal")),
            operator_http_listen: layer
                .operator_http_listen
                .unwrap_or_else(|| "127.0.0.1:7080".parse().expect("literal")),
            metrics_listen: layer
                .metrics_listen
                .unwrap_or_else(|| "127.0.0.1:7081".parse().expect("literal")),
            advertised_endpoint,
            cert_sans: layer.cert_sans.unwrap_or_default(),
            operator_token: operator_token(layer.operator_token)?,
            enrollment_ttl: Duration::from_secs(ENROLLMENT_TTL.get(layer.enrollment_ttl_secs)?),
            range_rule_max_ports: RANGE_MAX_PORTS.get(layer.range_rule_max_ports)? as u32,
            data_plane: DataPlaneSettings {
                udp_flow_idle: Duration::from_secs(UDP_FLOW_IDLE.get(layer.udp_flow_idle_secs)?),
                udp_max_flows_per_rule: UDP_MAX_FLOWS.get(layer.udp_max_flows_per_rule)? as u32,
                tcp_connect_timeout: Duration::from_secs(
                    TCP_CONNECT_TIMEOUT.get(layer.tcp_connect_timeout_secs)?,
                ),
                tcp_idle_timeout: Duration::from_secs(TCP_IDLE_TIMEOUT.get(layer.tcp_idle_timeout_secs)?),
                tcp_keepalive: Duration::from_secs(TCP_KEEPALIVE.get(layer.tcp_keepalive_secs)?),
                stats_interval: Duration::from_secs(STATS_INTERVAL.get(layer.stats_interval_secs)?),
            },
            control: ControlPolicy::default(),
            audit: AuditPolicy {
                retention: match AUDIT_RETENTION_DAYS.get(layer.audit_retention_days)? {
                    0 => None,
                    days => Some(Duration::from_secs(days * DAY_SECS)),
                },
                ..AuditPolicy::default()
            },
            web: WebPolicy {
                public_origins: layer
                    .public_origins
                    .unwrap_or_default()
                    .iter()
                    .map(|text| {
                        normalize_origin(text).ok_or_else(|| {
                            Failure::new(
                                ErrorCode::InvalidConfig,
                                format!(
                                    "public_origins: {} is not an origin (scheme://host[:port], http or https)",
                                    crate::ids::quoted(text)
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
                trusted_proxies: layer.trusted_proxies.unwrap_or_default(),
            },
        })
    }

    /// The origins a cookie-authenticated write may come from: the configured ones, else the
    /// operator listener's own, as bound at `listening` (`http://<addr>:<port>`, plus
    /// `localhost` on loopback).
    pub fn allowed_origins(&self, listening: SocketAddr) -> Vec<String> {
        if !self.web.public_origins.is_empty() {
            return self.web.public_origins.clone();
        }
        let listen = listening;
        let port = listen.port();
        let mut origins = vec![match listen.ip() {
            std::net::IpAddr::V4(ip) => format!("http://{ip}:{port}"),
            std::net::IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
        }];
        if listen.ip().is_loopback() {
            origins.push(format!("http://localhost:{port}"));
        }
        origins
    }

    /// Validates an enrollment lifetime asked for on the command line or in the API.
    pub fn enrollment_ttl_for(&self, requested_secs: Option<u64>) -> Result<Duration, Failure> {
        match requested_secs {
            None => Ok(self.enrollment_ttl),
            Some(secs) => ENROLLMENT_TTL.get(Some(secs)).map(Duration::from_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let flags = SettingsLayer { udp_flow_idle_secs: Some(31), ..Default::default() };
        let env = SettingsLayer {
            udp_flow_idle_secs: Some(32),
            stats_interval_secs: Some(3),
            ..Default::default()
        };
        let file = SettingsLayer::from_toml(
            "udp_flow_idle_secs = 33\nstats_interval_secs = 4\ntcp_keepalive_secs = 9\n",
        )
        .unwrap();
        let s = ServerSettings::resolve(flags.over(env).over(file)).unwrap();
        assert_eq!(s.data_plane.udp_flow_idle, Duration::from_secs(31));
        assert_eq!(s.data_plane.stats_interval, Duration::from_secs(3));
        assert_eq!(s.data_plane.tcp_keepalive, Duration::from_secs(9));
        assert_eq!(s.data_plane.udp_max_flows_per_rule, 1024);
        assert_eq!(s.control_listen.to_string(), "0.0.0.0:7443");
    }

    #[test]
    fn a_value_of_the_wrong_form_names_its_key_and_line() {
        for (toml, key, line) in [
            ("control_listen = \"not-an-addr\"\n", "control_listen", 1),
            ("stats_interval_secs = 7\nenrollment_ttl_secs = \"soon\"\n", "enrollment_ttl_secs", 2),
            ("cert_sans = [1]\n", "cert_sans", 1),
        ] {
            let err = SettingsLayer::from_toml(toml).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidConfig);
            assert!(err.message.contains(key), "{toml:?}: {}", err.message);
            assert!(err.message.contains(&format!("line {line}")), "{toml:?}: {}", err.message);
        }
        let unknown = SettingsLayer::from_toml("frobnicate = 1\n").unwrap_err();
        assert!(unknown.message.contains("frobnicate"), "{}", unknown.message);
    }

    #[test]
    fn an_operator_token_shorter_than_32_characters_is_refused_without_being_quoted() {
        let with = |token: &str| SettingsLayer { operator_token: Some(token.into()), ..Default::default() };
        let short = "x".repeat(MIN_OPERATOR_TOKEN_CHARS - 1);
        let err = ServerSettings::resolve(with(&short)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidConfig);
        assert!(err.message.contains("operator_token") && !err.message.contains(&short), "{}", err.message);
        // Characters, not bytes: 31 two-byte characters are still too short.
        assert!(ServerSettings::resolve(with(&"é".repeat(31))).is_err());
        let ok = "y".repeat(MIN_OPERATOR_TOKEN_CHARS);
        assert_eq!(ServerSettings::resolve(with(&ok)).unwrap().operator_token.as_deref(), Some(ok.as_str()));
        // Empty means unset: the generated token file is used.
        assert_eq!(ServerSettings::resolve(with("")).unwrap().operator_token, None);
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        for (toml, key) in [
            ("udp_flow_idle_secs = 29", "udp_flow_idle_secs"),
            ("udp_flow_idle_secs = 301", "udp_flow_idle_secs"),
            ("udp_max_flows_per_rule = 0", "udp_max_flows_per_rule"),
            ("udp_max_flows_per_rule = 65536", "udp_max_flows_per_rule"),
            ("enrollment_ttl_secs = 86401", "enrollment_ttl_secs"),
        ] {
            let err = ServerSettings::resolve(SettingsLayer::from_toml(toml).unwrap()).unwrap_err();
            assert_eq!(err.code, ErrorCode::OutOfRange);
            assert!(err.message.contains(key), "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = SettingsLayer::from_toml("udp_flow_idle = 60").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidConfig);
        assert!(err.message.contains("udp_flow_idle"), "{err}");
    }

    #[test]
    fn audit_retention_defaults_to_ninety_days_and_zero_keeps_forever() {
        let resolve = |toml: &str| ServerSettings::resolve(SettingsLayer::from_toml(toml).unwrap());
        assert_eq!(resolve("").unwrap().audit.retention, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(
            resolve("audit_retention_days = 7").unwrap().audit.retention,
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(resolve("audit_retention_days = 0").unwrap().audit.retention, None);
        let now = crate::ids::Timestamp::from_millis(10 * 86_400_000);
        let week = resolve("audit_retention_days = 7").unwrap().audit;
        assert_eq!(week.prune_before(now), Some(crate::ids::Timestamp::from_millis(3 * 86_400_000)));
        let early = crate::ids::Timestamp::from_millis(1_000);
        assert_eq!(
            week.prune_before(early),
            Some(crate::ids::Timestamp::from_millis(0)),
            "never before the epoch"
        );
        assert_eq!(resolve("audit_retention_days = 0").unwrap().audit.prune_before(now), None);
        let err = resolve("audit_retention_days = 40000").unwrap_err();
        assert!(err.message.contains("audit_retention_days"), "{err}");
    }

    #[test]
    fn origins_are_normalised_and_default_to_the_listener() {
        assert_eq!(
            normalize_origin("HTTPS://Ops.Example.com").as_deref(),
            Some("https://ops.example.com:443")
        );
        assert_eq!(normalize_origin("http://127.0.0.1:7080/").as_deref(), Some("http://127.0.0.1:7080"));
        assert_eq!(normalize_origin("http://[::1]:8080").as_deref(), Some("http://[::1]:8080"));
        for bad in [
            "ftp://x",
            "https://",
            "example.com",
            "https://x/path",
            "https://u@x",
            "http://x:99999",
            "http://x:+80",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
        let defaults = ServerSettings::resolve(SettingsLayer::default()).unwrap();
        assert_eq!(
            defaults.allowed_origins(defaults.operator_http_listen),
            ["http://127.0.0.1:7080", "http://localhost:7080"]
        );
        assert_eq!(
            defaults.allowed_origins("[::1]:9000".parse().unwrap()),
            ["http://[::1]:9000", "http://localhost:9000"]
        );
        let layer = SettingsLayer::from_toml(
            "public_origins = [\"https://ops.example.com\"]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        )
        .unwrap();
        let configured = ServerSettings::resolve(layer).unwrap();
        assert_eq!(
            configured.allowed_origins(configured.operator_http_listen),
            ["https://ops.example.com:443"]
        );
        assert_eq!(configured.web.trusted_proxies, ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
        let bad = SettingsLayer::from_toml("public_origins = [\"ops.example.com\"]").unwrap();
        let err = ServerSettings::resolve(bad).unwrap_err();
        assert!(err.code == ErrorCode::InvalidConfig && err.message.contains("public_origins"), "{err}");
    }

    #[test]
    fn advertised_endpoint_is_validated() {
        let layer = SettingsLayer { advertised_endpoint: Some("https://x:1".into()), ..Default::default() };
        assert_eq!(ServerSettings::resolve(layer).unwrap_err().code, ErrorCode::EndpointInvalid);
    }
}
