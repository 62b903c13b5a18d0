//! Rules: the operator's input form ([`RuleSpec`]), its validated form ([`RuleDef`]) and
//! the persisted rule with its lifecycle state ([`Rule`]).
//!
//! Invariant: a `RuleDef` only exists after validation, so adapters can bind it without
//! re-checking ports, ranges or targets. The CLI, the JSON API and the standalone TOML all
//! go through [`RuleSpec::validate`].

mod grammar;
mod lifecycle;
mod validate;

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use grammar::{parse_listen, parse_target};
pub use lifecycle::{RuleEvent, RuleState, TransitionError};
pub use validate::{MAX_TARGETS, RuleLimits};

use crate::capability::Capability;
use crate::ids::{ClientId, RuleId, Timestamp, UserId};
use crate::sni::SniPattern;

/// Transport protocol of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP streams.
    #[default]
    Tcp,
    /// UDP datagrams.
    Udp,
}

impl Protocol {
    /// `"tcp"` or `"udp"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive, non-empty range of non-zero ports.
///
/// ```
/// use portunus_core::rule::PortRange;
///
/// let range = PortRange::new(8000, 8009).unwrap();
/// assert!(range.contains(8005) && !range.contains(8010));
/// assert!(range.overlaps(PortRange::single(8009).unwrap()));
/// assert_eq!(PortRange::new(9, 1), None, "inverted");
/// assert_eq!(PortRange::single(0), None, "port 0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// A range; `None` if a port is 0 or `end < start`.
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (start != 0 && start <= end).then_some(PortRange { start, end })
    }
    /// A single port; `None` for port 0.
    pub fn single(port: u16) -> Option<Self> {
        Self::new(port, port)
    }
    /// First port.
    pub const fn start(self) -> u16 {
        self.start
    }
    /// Last port (inclusive).
    pub const fn end(self) -> u16 {
        self.end
    }
    /// Number of ports, at least 1.
    pub const fn len(self) -> u32 {
        self.end as u32 - self.start as u32 + 1
    }
    /// Always false: a range holds at least one port. Present for clippy's `len` rule.
    pub const fn is_empty(self) -> bool {
        false
    }
    /// True for a one-port range.
    pub const fn is_single(self) -> bool {
        self.start == self.end
    }
    /// True when `port` is in the range.
    pub const fn contains(self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
    /// True when the two ranges share a port. Symmetric.
    pub const fn overlaps(self, other: PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
    /// True when every port of `inner` is in `self`.
    pub const fn covers(self, inner: PortRange) -> bool {
        self.start <= inner.start && inner.end <= self.end
    }
    /// The ports in order.
    pub fn iter(self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() { write!(f, "{}", self.start) } else { write!(f, "{}-{}", self.start, self.end) }
    }
}

/// A target host: an IP literal, or a DNS name resolved by the client per connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A lowercase DNS name without a trailing dot.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// PROXY protocol header version written to a target before the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// The human-readable text header.
    V1,
    /// The binary header.
    V2,
}

impl ProxyVersion {
    /// `"v1"` or `"v2"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        }
    }
}

/// One validated target of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// Where to connect.
    pub host: Host,
    /// A single port, or a range exactly as long as the rule's listen range.
    pub ports: PortRange,
    /// Lower is preferred; ties keep the order the targets were given in.
    pub priority: u16,
    /// PROXY protocol header to send first, TCP only.
    pub proxy: Option<ProxyVersion>,
}

impl Target {
    /// The target port for a connection that arrived on `listen_port` of `listen`.
    ///
    /// A single-port target takes every listen port; a range target maps by offset.
    /// `listen_port` must be inside `listen` (guaranteed by the listener that calls this).
    ///
    /// ```
    /// use portunus_core::rule::{PortRange, parse_target};
    ///
    /// let listen = PortRange::new(2000, 2009).unwrap();
    /// assert_eq!(parse_target("10.0.0.1:3000-3009")?.port_for(listen, 2004), 3004);
    /// assert_eq!(parse_target("10.0.0.1:80")?.port_for(listen, 2004), 80);
    /// # Ok::<(), portunus_core::Failure>(())
    /// ```
    pub fn port_for(&self, listen: PortRange, listen_port: u16) -> u16 {
        if self.ports.is_single() {
            self.ports.start()
        } else {
            // Saturating: a violated precondition maps to the range's end, never panics.
            let offset = listen_port.saturating_sub(listen.start());
            self.ports.start().saturating_add(offset).min(self.ports.end())
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.ports)?;
        if self.priority != 0 {
            write!(f, "@{}", self.priority)?;
        }
        if let Some(proxy) = self.proxy {
            write!(f, ",proxy={}", proxy.as_str())?;
        }
        Ok(())
    }
}

/// The listen port(s) as given: a number, or text `PORT` / `START-END`. Kept raw so that
/// validation, not deserialisation, reports a bad port with its stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum ListenSpec {
    /// `18080`
    Port(i64),
    /// `"18080"` or `"20000-20099"`
    Text(String),
}

/// A rule as an operator writes it: in the CLI, as a JSON body, or as a `[[rule]]` table.
///
/// Unknown fields are refused. Exactly one of `target` and `targets` is given; each target is
/// `host:port[-port][@priority][,proxy=v1|v2]` with IPv6 hosts in brackets.
///
/// ```
/// use portunus_core::rule::{Protocol, RuleLimits, RuleSpec};
///
/// let spec: RuleSpec = serde_json::from_str(
///     r#"{"listen_port": "20000-20001", "targets": ["10.0.0.2:80@2", "10.0.0.1:80@1"]}"#,
/// )?;
/// let def = spec.validate(RuleLimits::default())?;
/// assert_eq!((def.protocol, def.listen.len(), def.listen_addr), (Protocol::Tcp, 2, None));
/// // Index 1 has the lower priority value, so it is preferred.
/// let preferred: Vec<usize> = def.targets_by_preference().iter().map(|(idx, _)| *idx).collect();
/// assert_eq!(preferred, [1, 0]);
/// assert!(serde_json::from_str::<RuleSpec>(r#"{"listen_port": 1, "colour": "red"}"#).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Optional label shown in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// `PORT` or `START-END`.
    pub listen_port: ListenSpec,
    /// Address to bind; default is dual-stack `[::]` (or `0.0.0.0` without IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub listen_addr: Option<IpAddr>,
    /// The one target, `host:port[-port][@priority][,proxy=v1|v2]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Several targets (1..=8), in the same grammar.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Ask for AAAA records before A records when resolving DNS-name targets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prefer_ipv6: bool,
    /// Active TCP health probe interval (1..=3600 s); passive health is always on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_interval_secs: Option<u32>,
    /// TCP, one listen port: take only TLS connections whose ClientHello names this host
    /// (`api.example.com`) or a host one label below a suffix (`*.example.com`). SNI rules
    /// of a client on one port share its listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni_pattern: Option<String>,
    /// TCP, one listen port: the SNI port's fallback, which takes the TLS connections that
    /// name no host or one no pattern matches. At most one per port; excludes `sni_pattern`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sni_fallback: bool,
    /// Caps on bandwidth (bytes per second, each direction), new connections (or UDP flows)
    /// per second and open connections; an owner's envelope on the client binds first.
    /// Absent or empty: no caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::ratelimit::RateLimits>,
}

/// A rule's place on a shared SNI listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SniRoute {
    /// The connections whose server name this pattern covers.
    Pattern(SniPattern),
    /// The connections no pattern of the listener takes (no name, or no match).
    Fallback,
}

impl SniRoute {
    /// The pattern, or `None` for the fallback (the form [`crate::sni::SniRoutes`] takes).
    pub fn pattern(&self) -> Option<&SniPattern> {
        match self {
            SniRoute::Pattern(pattern) => Some(pattern),
            SniRoute::Fallback => None,
        }
    }
}

impl fmt::Display for SniRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SniRoute::Pattern(pattern) => write!(f, "{pattern}"),
            SniRoute::Fallback => f.write_str("fallback"),
        }
    }
}

/// A validated rule definition: what a client binds and forwards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleDef {
    /// Optional label.
    pub name: Option<String>,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The listen port(s).
    pub listen: PortRange,
    /// Bind address; `None` means dual-stack any.
    pub listen_addr: Option<IpAddr>,
    /// 1..=8 targets, unique by `host:port`.
    pub targets: Vec<Target>,
    /// AAAA before A for DNS-name targets.
    pub prefer_ipv6: bool,
    /// Active health probe interval in seconds.
    pub health_check_interval_secs: Option<u32>,
    /// Set for a rule that shares an SNI listener (TCP, one port): what it routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<SniRoute>,
    /// The rule's own caps (unlimited by default). Changing only these is a hot update on
    /// the client: listeners and connections stay.
    #[serde(default, skip_serializing_if = "crate::ratelimit::Caps::is_unlimited")]
    pub rate_limit: crate::ratelimit::Caps,
}

impl RuleDef {
    /// The capabilities a client must have announced to run this rule.
    pub fn required_capabilities(&self) -> Vec<Capability> {
        let mut caps = vec![match self.protocol {
            Protocol::Tcp => Capability::Tcp,
            Protocol::Udp => Capability::Udp,
        }];
        if !self.listen.is_single() {
            caps.push(Capability::PortRange);
        }
        if self.targets.len() > 1 || self.health_check_interval_secs.is_some() {
            caps.push(Capability::MultiTarget);
        }
        if self.targets.iter().any(|t| matches!(t.host, Host::Name(_))) {
            caps.push(Capability::DnsTarget);
        }
        if self.targets.iter().any(|t| t.proxy.is_some()) {
            caps.push(Capability::ProxyProtocol);
        }
        if self.sni.is_some() {
            caps.push(Capability::Sni);
        }
        if !self.rate_limit.is_unlimited() {
            caps.push(Capability::RateLimit);
        }
        caps
    }

    /// The input form that validates back to this definition.
    pub fn to_spec(&self) -> RuleSpec {
        let mut targets: Vec<String> = self.targets.iter().map(Target::to_string).collect();
        let target = (targets.len() == 1).then(|| targets.remove(0));
        RuleSpec {
            name: self.name.clone(),
            protocol: self.protocol,
            listen_port: if self.listen.is_single() {
                ListenSpec::Port(i64::from(self.listen.start()))
            } else {
                ListenSpec::Text(self.listen.to_string())
            },
            listen_addr: self.listen_addr,
            target,
            targets,
            prefer_ipv6: self.prefer_ipv6,
            health_check_interval_secs: self.health_check_interval_secs,
            sni_pattern: self.sni.as_ref().and_then(SniRoute::pattern).map(SniPattern::to_string),
            sni_fallback: self.sni == Some(SniRoute::Fallback),
            rate_limit: (!self.rate_limit.is_unlimited()).then(|| self.rate_limit.to_limits()),
        }
    }

    /// True when `other` differs from this definition in its caps alone: the client applies
    /// it in place (a hot update) instead of binding again.
    pub fn differs_only_in_caps(&self, other: &RuleDef) -> bool {
        self.rate_limit != other.rate_limit
            && RuleDef { rate_limit: other.rate_limit, ..self.clone() } == *other
    }

    /// Targets in preference order: by priority, then by the order given.
    pub fn targets_by_preference(&self) -> Vec<(usize, &Target)> {
        let mut ordered: Vec<(usize, &Target)> = self.targets.iter().enumerate().collect();
        ordered.sort_by_key(|(idx, t)| (t.priority, *idx));
        ordered
    }

    /// True when this rule and `other` would fight over a listen socket: same protocol,
    /// overlapping ports, and bind addresses that are equal or include a wildcard.
    pub fn reserves_same_ports_as(&self, other: &RuleDef) -> bool {
        let addr_clash = match (self.listen_addr, other.listen_addr) {
            (Some(a), Some(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
            _ => true,
        };
        self.protocol == other.protocol && self.listen.overlaps(other.listen) && addr_clash
    }

    /// True when both rules are SNI rules on exactly the same listen address and port, so
    /// they may share one listener (if their routes differ).
    pub fn shares_sni_listener_with(&self, other: &RuleDef) -> bool {
        self.sni.is_some()
            && other.sni.is_some()
            && self.protocol == other.protocol
            && self.listen == other.listen
            && self.listen_addr == other.listen_addr
    }

    /// Why this rule cannot listen beside `other` (a rule of the same client), or `None`
    /// when both can: their ports do not overlap, or they are SNI rules on the same address
    /// and port with different routes, which share one listener.
    ///
    /// ```
    /// use portunus_core::rule::{ListenClash, RuleDef, RuleLimits, RuleSpec, ListenSpec};
    ///
    /// let rule = |sni: Option<&str>, fallback: bool| -> RuleDef {
    ///     let spec = RuleSpec {
    ///         name: None, protocol: Default::default(), listen_port: ListenSpec::Port(443),
    ///         listen_addr: None, target: Some("127.0.0.1:8443".into()), targets: vec![],
    ///         prefer_ipv6: false, health_check_interval_secs: None,
    ///         sni_pattern: sni.map(Into::into), sni_fallback: fallback, rate_limit: None,
    ///     };
    ///     spec.validate(RuleLimits::default()).unwrap()
    /// };
    /// let (api, www, fallback) = (rule(Some("api.example.com"), false), rule(Some("www.example.com"), false), rule(None, true));
    /// assert_eq!(api.listen_clash(&www), None);
    /// assert_eq!(api.listen_clash(&fallback), None);
    /// assert_eq!(api.listen_clash(&api), Some(ListenClash::SamePattern));
    /// assert_eq!(fallback.listen_clash(&fallback), Some(ListenClash::SecondFallback));
    /// assert_eq!(rule(None, false).listen_clash(&api), Some(ListenClash::PlainAndSni));
    /// assert_eq!(rule(None, false).listen_clash(&rule(None, false)), Some(ListenClash::Ports));
    /// ```
    pub fn listen_clash(&self, other: &RuleDef) -> Option<ListenClash> {
        if !self.reserves_same_ports_as(other) {
            return None;
        }
        match (&self.sni, &other.sni) {
            (None, None) => Some(ListenClash::Ports),
            (Some(_), None) | (None, Some(_)) => Some(ListenClash::PlainAndSni),
            (Some(_), Some(_)) if !self.shares_sni_listener_with(other) => Some(ListenClash::Ports),
            (Some(SniRoute::Fallback), Some(SniRoute::Fallback)) => Some(ListenClash::SecondFallback),
            (Some(SniRoute::Pattern(a)), Some(SniRoute::Pattern(b))) if a == b => {
                Some(ListenClash::SamePattern)
            }
            (Some(_), Some(_)) => None,
        }
    }
}

/// Why two rules of one client cannot both listen; see [`RuleDef::listen_clash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenClash {
    /// Overlapping ports (`port_in_use`).
    Ports,
    /// A plain TCP rule and an SNI rule on one port (`conflict.legacy_to_sni_unsupported`).
    PlainAndSni,
    /// Two SNI rules of one listener with the same pattern (`conflict.sni_pattern_taken`).
    SamePattern,
    /// Two fallbacks on one listener (`conflict.sni_fallback_taken`).
    SecondFallback,
}

impl ListenClash {
    /// The stable code of the refusal.
    pub const fn code(self) -> crate::ErrorCode {
        match self {
            ListenClash::Ports => crate::ErrorCode::PortInUse,
            ListenClash::PlainAndSni => crate::ErrorCode::LegacyToSniUnsupported,
            ListenClash::SamePattern => crate::ErrorCode::SniPatternTaken,
            ListenClash::SecondFallback => crate::ErrorCode::SniFallbackTaken,
        }
    }
}

/// A rule as the server keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Store-sequence id.
    pub id: RuleId,
    /// The client that binds it.
    pub client: ClientId,
    /// The principal that created it.
    pub owner: UserId,
    /// What to bind and where to forward.
    pub def: RuleDef,
    /// Lifecycle state.
    pub state: RuleState,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last state change.
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests;
