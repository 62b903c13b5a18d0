//! `RuleSpec` → `RuleDef`: every check a rule passes before it is stored or bound.

use std::collections::HashSet;

use super::grammar::{parse_listen, parse_target};
use super::{ListenSpec, PortRange, Protocol, RuleDef, RuleSpec, SniRoute};
use crate::error::{ErrorCode, Failure};
use crate::sni::SniPattern;

/// Most targets a rule may name.
pub const MAX_TARGETS: usize = 8;

/// Limits that come from server (or standalone) settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleLimits {
    /// Widest listen range, in ports (`range_rule_max_ports`).
    pub max_range_ports: u32,
}

impl Default for RuleLimits {
    fn default() -> Self {
        RuleLimits { max_range_ports: 1024 }
    }
}

impl RuleSpec {
    /// Validates and normalises the spec. The first problem found is reported.
    ///
    /// ```
    /// use portunus_core::rule::{ListenSpec, RuleLimits, RuleSpec};
    /// use portunus_core::ErrorCode;
    ///
    /// let spec = |listen: &str, target: &str| RuleSpec {
    ///     name: None,
    ///     protocol: Default::default(),
    ///     listen_port: ListenSpec::Text(listen.into()),
    ///     listen_addr: None,
    ///     target: Some(target.into()),
    ///     targets: vec![],
    ///     prefer_ipv6: false,
    ///     health_check_interval_secs: None,
    ///     sni_pattern: None,
    ///     sni_fallback: false,
    ///     rate_limit: None,
    /// };
    /// let limits = RuleLimits { max_range_ports: 4 };
    /// let def = spec("8080", "127.0.0.1:80").validate(limits)?;
    /// assert_eq!(def.targets[0].to_string(), "127.0.0.1:80");
    /// // Each refusal carries its stable code (and so its exit and HTTP status).
    /// let code = |listen, target| spec(listen, target).validate(limits).unwrap_err().code;
    /// assert_eq!(code("8080-8089", "127.0.0.1:80"), ErrorCode::ExceedsCap);
    /// assert_eq!(code("8080-8081", "127.0.0.1:80-82"), ErrorCode::RangeMismatch);
    /// assert_eq!(code("8080", "127.0.0.1"), ErrorCode::InvalidTarget);
    /// # Ok::<(), portunus_core::Failure>(())
    /// ```
    pub fn validate(&self, limits: RuleLimits) -> Result<RuleDef, Failure> {
        let listen = match &self.listen_port {
            ListenSpec::Port(n) => u16::try_from(*n).ok().and_then(PortRange::single).ok_or_else(|| {
                Failure::new(ErrorCode::InvalidPort, format!("{n} is not a port (1-65535)"))
            })?,
            ListenSpec::Text(text) => parse_listen(text)?,
        };
        if listen.len() > limits.max_range_ports {
            return Err(Failure::new(
                ErrorCode::ExceedsCap,
                format!(
                    "listen range {listen} has {} ports; the cap (range_rule_max_ports) is {}",
                    listen.len(),
                    limits.max_range_ports
                ),
            ));
        }
        let texts: Vec<&str> = match (&self.target, self.targets.is_empty()) {
            (Some(_), false) => {
                return Err(Failure::new(
                    ErrorCode::InvalidRequest,
                    "give either `target` or `targets`, not both",
                ));
            }
            (Some(one), true) => vec![one.as_str()],
            (None, _) => self.targets.iter().map(String::as_str).collect(),
        };
        if texts.is_empty() || texts.len() > MAX_TARGETS {
            return Err(Failure::new(
                ErrorCode::TargetCount,
                format!("a rule needs 1 to {MAX_TARGETS} targets, got {}", texts.len()),
            ));
        }
        let mut targets = Vec::with_capacity(texts.len());
        let mut seen = HashSet::new();
        for text in texts {
            let target = parse_target(text)?;
            if !target.ports.is_single() && target.ports.len() != listen.len() {
                return Err(Failure::new(
                    ErrorCode::RangeMismatch,
                    format!(
                        "target range {} has {} ports but listen range {listen} has {}",
                        target.ports,
                        target.ports.len(),
                        listen.len()
                    ),
                ));
            }
            if !seen.insert((target.host.clone(), target.ports.start())) {
                return Err(Failure::new(
                    ErrorCode::DuplicateTarget,
                    format!("target {}:{} is listed twice", target.host, target.ports.start()),
                ));
            }
            if target.proxy.is_some() && self.protocol == Protocol::Udp {
                return Err(Failure::new(
                    ErrorCode::ProtocolMismatch,
                    "PROXY protocol headers are for TCP rules only",
                ));
            }
            targets.push(target);
        }
        if let Some(secs) = self.health_check_interval_secs
            && !(1..=3600).contains(&secs)
        {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                format!("health_check_interval_secs must be 1-3600, got {secs}"),
            ));
        }
        if let Some(name) = &self.name {
            crate::ids::check_label("rule name", name)?;
        }
        let sni = self.sni_route(listen)?;
        let rate_limit = match &self.rate_limit {
            Some(limits) => limits.validate()?,
            None => crate::ratelimit::Caps::default(),
        };
        Ok(RuleDef {
            name: self.name.clone(),
            protocol: self.protocol,
            listen,
            listen_addr: self.listen_addr,
            targets,
            prefer_ipv6: self.prefer_ipv6,
            health_check_interval_secs: self.health_check_interval_secs,
            sni,
            rate_limit,
        })
    }

    /// The rule's SNI route, if any: `sni_pattern` parsed, or the fallback. SNI routing
    /// reads a TLS ClientHello, so it takes TCP and one listen port.
    fn sni_route(&self, listen: PortRange) -> Result<Option<SniRoute>, Failure> {
        let route = match (&self.sni_pattern, self.sni_fallback) {
            (Some(_), true) => {
                return Err(Failure::new(
                    ErrorCode::InvalidRequest,
                    "give either `sni_pattern` or `sni_fallback`, not both",
                ));
            }
            (Some(text), false) => SniRoute::Pattern(SniPattern::parse(text)?),
            (None, true) => SniRoute::Fallback,
            (None, false) => return Ok(None),
        };
        if self.protocol == Protocol::Udp {
            return Err(Failure::new(ErrorCode::ProtocolMismatch, "SNI routing is for TCP rules only"));
        }
        if !listen.is_single() {
            return Err(Failure::new(
                ErrorCode::InvalidRequest,
                format!("an SNI rule listens on one port, not a range ({listen})"),
            ));
        }
        Ok(Some(route))
    }
}
