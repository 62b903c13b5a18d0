//! Client capabilities announced in the control Hello, and the gates that refuse a rule a
//! client cannot run.
//!
//! Invariant: the gate is decided here, from the announced set only; adapters never infer
//! capabilities from version strings.

use std::collections::BTreeSet;

use crate::error::{ErrorCode, Failure};
use crate::rule::RuleDef;

macro_rules! capabilities {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $code:ident; )+) => {
        /// One feature a client can run.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Capability {
            $( $(#[$doc])* $variant, )+
        }

        impl Capability {
            /// Every capability.
            pub const ALL: &'static [Capability] = &[ $( Capability::$variant, )+ ];

            /// Wire name in the Hello.
            pub const fn as_str(self) -> &'static str {
                match self { $( Capability::$variant => $name, )+ }
            }

            /// Parses a wire name; unknown names (from newer clients) are `None`.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $( $name => Some(Capability::$variant), )+ _ => None }
            }

            /// The code a rule gets when the client lacks this capability.
            pub const fn missing_code(self) -> ErrorCode {
                match self { $( Capability::$variant => ErrorCode::$code, )+ }
            }
        }
    };
}

capabilities! {
    /// TCP forwarding.
    Tcp => "tcp", UnsupportedProtocol;
    /// UDP forwarding.
    Udp => "udp", UnsupportedProtocol;
    /// Listen port ranges.
    PortRange => "port_range", PortRangeUnsupportedByClient;
    /// Several targets with failover and health checks.
    MultiTarget => "multi_target", MultiTargetUnsupportedByClient;
    /// DNS-name targets resolved on the client.
    DnsTarget => "dns_target", DnsTargetUnsupportedByClient;
    /// PROXY protocol headers towards targets.
    ProxyProtocol => "proxy_protocol", ProxyProtocolUnsupportedByClient;
    /// SNI routing: several TLS rules behind one listen port, chosen by server name.
    Sni => "sni", SniUnsupportedByClient;
    /// Rate limits per rule and per owner envelope.
    RateLimit => "rate_limit", RateLimitUnsupportedByClient;
}

/// The set a client announced.
pub type CapabilitySet = BTreeSet<Capability>;

/// Parses announced names, ignoring names this build does not know.
pub fn parse_set<'a>(names: impl IntoIterator<Item = &'a str>) -> CapabilitySet {
    names.into_iter().filter_map(Capability::parse).collect()
}

/// Refuses `def` when `announced` lacks a capability it needs; the first missing one decides.
pub fn gate(def: &RuleDef, announced: &CapabilitySet) -> Result<(), Failure> {
    match def.required_capabilities().into_iter().find(|cap| !announced.contains(cap)) {
        None => Ok(()),
        Some(cap) => Err(Failure::new(
            cap.missing_code(),
            format!("the client did not announce the {:?} capability this rule needs", cap.as_str()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{ListenSpec, Protocol, RuleLimits, RuleSpec};

    fn def(protocol: Protocol, targets: &[&str]) -> RuleDef {
        RuleSpec {
            name: None,
            protocol,
            listen_port: ListenSpec::Port(53),
            listen_addr: None,
            target: None,
            targets: targets.iter().map(|t| t.to_string()).collect(),
            prefer_ipv6: false,
            health_check_interval_secs: None,
            sni_pattern: None,
            sni_fallback: false,
            rate_limit: None,
        }
        .validate(RuleLimits::default())
        .unwrap()
    }

    #[test]
    fn udp_rule_on_tcp_only_client_is_unsupported_protocol() {
        let tcp_only = parse_set(["tcp"]);
        let err = gate(&def(Protocol::Udp, &["127.0.0.1:53"]), &tcp_only).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedProtocol);
        assert!(gate(&def(Protocol::Tcp, &["127.0.0.1:53"]), &tcp_only).is_ok());
    }

    #[test]
    fn several_targets_need_multi_target() {
        let caps = parse_set(["tcp", "some_future_thing"]);
        let err = gate(&def(Protocol::Tcp, &["127.0.0.1:53", "127.0.0.2:53"]), &caps).unwrap_err();
        assert_eq!(err.code, ErrorCode::MultiTargetUnsupportedByClient);
    }

    #[test]
    fn names_round_trip() {
        for cap in Capability::ALL {
            assert_eq!(Capability::parse(cap.as_str()), Some(*cap));
        }
    }
}
