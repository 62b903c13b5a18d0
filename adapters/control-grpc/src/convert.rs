//! Protobuf ↔ core conversions, in one place: the only module that builds or takes apart
//! protobuf messages (`cargo xtask tidy` checks it).
//!
//! Invariant: decoding never panics and never trusts the peer: a rule definition from the wire
//! goes through the same grammar and checks as an operator's input.

use portunus_core::ids::UserId;
use portunus_core::quota::{PairUpdate, QuotaUpdate};
use portunus_core::ratelimit::{OwnerCapsUpdate, OwnerEnvelope, RateLimits};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use portunus_core::agent::{Outcome, ServerMsg};
use portunus_core::capability::Capability;
use portunus_core::config::DataPlaneSettings;
use portunus_core::enroll::Bundle;
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ids::{ClientId, RuleId};
use portunus_core::ports::ClientCommand;
use portunus_core::rule::{
    Host, ListenSpec, Protocol, ProxyVersion, RuleDef, RuleEvent, RuleLimits, RuleSpec, SniRoute,
};
use portunus_core::service::Redeemed;
use portunus_core::sni::SniListenerReport;
use portunus_core::stats::{Counters, RuleReport, TargetCounters, TargetHealth};
use portunus_proto::v1 as pb;
use portunus_runtime::{EndReason, Outbound};

/// Core rule → wire.
pub fn rule_to_wire(id: RuleId, def: &RuleDef) -> pb::RuleDefinition {
    pb::RuleDefinition {
        rule_id: id.get(),
        protocol: match def.protocol {
            Protocol::Tcp => pb::Protocol::Tcp,
            Protocol::Udp => pb::Protocol::Udp,
        } as i32,
        listen_start: u32::from(def.listen.start()),
        listen_end: u32::from(def.listen.end()),
        listen_addr: def.listen_addr.map(|a| a.to_string()).unwrap_or_default(),
        targets: def
            .targets
            .iter()
            .map(|t| pb::TargetDefinition {
                host: match &t.host {
                    Host::Ip(ip) => ip.to_string(),
                    Host::Name(name) => name.clone(),
                },
                port_start: u32::from(t.ports.start()),
                port_end: u32::from(t.ports.end()),
                priority: u32::from(t.priority),
                proxy_protocol: match t.proxy {
                    None => pb::ProxyProtocol::None,
                    Some(ProxyVersion::V1) => pb::ProxyProtocol::V1,
                    Some(ProxyVersion::V2) => pb::ProxyProtocol::V2,
                } as i32,
            })
            .collect(),
        prefer_ipv6: def.prefer_ipv6,
        health_check_interval_secs: def.health_check_interval_secs.unwrap_or(0),
        name: def.name.clone().unwrap_or_default(),
        sni_pattern: def.sni.as_ref().and_then(SniRoute::pattern).map(|p| p.to_string()).unwrap_or_default(),
        sni_fallback: def.sni == Some(SniRoute::Fallback),
        rate_limit: (!def.rate_limit.is_unlimited()).then(|| limits_to_wire(&def.rate_limit.to_limits())),
    }
}

/// Rate limits → wire.
pub fn limits_to_wire(l: &RateLimits) -> pb::RateLimit {
    pb::RateLimit {
        bandwidth_in_bps: l.bandwidth_in_bps,
        bandwidth_in_burst_bytes: l.bandwidth_in_burst_bytes,
        bandwidth_out_bps: l.bandwidth_out_bps,
        bandwidth_out_burst_bytes: l.bandwidth_out_burst_bytes,
        new_connections_per_sec: l.new_connections_per_sec,
        new_connections_burst: l.new_connections_burst,
        concurrent_connections: l.concurrent_connections,
    }
}

/// Wire → rate limits (validated by whoever takes them).
pub fn limits_from_wire(w: &pb::RateLimit) -> RateLimits {
    RateLimits {
        bandwidth_in_bps: w.bandwidth_in_bps,
        bandwidth_in_burst_bytes: w.bandwidth_in_burst_bytes,
        bandwidth_out_bps: w.bandwidth_out_bps,
        bandwidth_out_burst_bytes: w.bandwidth_out_burst_bytes,
        new_connections_per_sec: w.new_connections_per_sec,
        new_connections_burst: w.new_connections_burst,
        concurrent_connections: w.concurrent_connections,
    }
}

/// Wire rule → core, validated like operator input (without the server's range cap, which
/// the server already applied).
pub fn rule_from_wire(wire: &pb::RuleDefinition) -> Result<(RuleId, RuleDef), Failure> {
    let bad = |why: String| Failure::new(ErrorCode::InvalidRequest, format!("rule {}: {why}", wire.rule_id));
    let protocol = match pb::Protocol::try_from(wire.protocol) {
        Ok(pb::Protocol::Tcp) => Protocol::Tcp,
        Ok(pb::Protocol::Udp) => Protocol::Udp,
        _ => return Err(bad(format!("unknown protocol {}", wire.protocol))),
    };
    let listen_addr = match wire.listen_addr.as_str() {
        "" => None,
        text => Some(text.parse::<IpAddr>().map_err(|_| bad(format!("bad listen_addr {text:?}")))?),
    };
    let targets = wire
        .targets
        .iter()
        .map(|t| {
            let host = if t.host.contains(':') { format!("[{}]", t.host) } else { t.host.clone() };
            let ports = if t.port_start == t.port_end {
                t.port_start.to_string()
            } else {
                format!("{}-{}", t.port_start, t.port_end)
            };
            let proxy = match pb::ProxyProtocol::try_from(t.proxy_protocol) {
                Ok(pb::ProxyProtocol::V1) => ",proxy=v1",
                Ok(pb::ProxyProtocol::V2) => ",proxy=v2",
                _ => "",
            };
            format!("{host}:{ports}@{}{proxy}", t.priority)
        })
        .collect();
    let listen = if wire.listen_start == wire.listen_end {
        ListenSpec::Port(i64::from(wire.listen_start))
    } else {
        ListenSpec::Text(format!("{}-{}", wire.listen_start, wire.listen_end))
    };
    let spec = RuleSpec {
        name: (!wire.name.is_empty()).then(|| wire.name.clone()),
        protocol,
        listen_port: listen,
        listen_addr,
        target: None,
        targets,
        prefer_ipv6: wire.prefer_ipv6,
        health_check_interval_secs: (wire.health_check_interval_secs != 0)
            .then_some(wire.health_check_interval_secs),
        sni_pattern: (!wire.sni_pattern.is_empty()).then(|| wire.sni_pattern.clone()),
        sni_fallback: wire.sni_fallback,
        rate_limit: wire.rate_limit.as_ref().map(limits_from_wire),
    };
    let def = spec.validate(RuleLimits { max_range_ports: 65_535 })?;
    Ok((RuleId::new(wire.rule_id), def))
}

/// Core settings → wire.
pub fn settings_to_wire(s: &DataPlaneSettings) -> pb::DataPlaneSettings {
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    pb::DataPlaneSettings {
        udp_flow_idle_secs: secs(s.udp_flow_idle),
        udp_max_flows_per_rule: s.udp_max_flows_per_rule,
        tcp_connect_timeout_ms: millis(s.tcp_connect_timeout),
        tcp_idle_timeout_secs: secs(s.tcp_idle_timeout),
        tcp_keepalive_secs: secs(s.tcp_keepalive),
        stats_interval_ms: millis(s.stats_interval),
    }
}

/// Wire settings → core; zero (a field an older server did not send) keeps the default.
pub fn settings_from_wire(w: &pb::DataPlaneSettings) -> DataPlaneSettings {
    let d = DataPlaneSettings::default();
    let or =
        |v: u32, dflt: Duration, unit: fn(u64) -> Duration| if v == 0 { dflt } else { unit(u64::from(v)) };
    DataPlaneSettings {
        udp_flow_idle: or(w.udp_flow_idle_secs, d.udp_flow_idle, Duration::from_secs),
        udp_max_flows_per_rule: if w.udp_max_flows_per_rule == 0 {
            d.udp_max_flows_per_rule
        } else {
            w.udp_max_flows_per_rule
        },
        tcp_connect_timeout: or(w.tcp_connect_timeout_ms, d.tcp_connect_timeout, Duration::from_millis),
        tcp_idle_timeout: or(w.tcp_idle_timeout_secs, d.tcp_idle_timeout, Duration::from_secs),
        tcp_keepalive: or(w.tcp_keepalive_secs, d.tcp_keepalive, Duration::from_secs),
        stats_interval: or(w.stats_interval_ms, d.stats_interval, Duration::from_millis),
    }
}

fn counters_to_wire(c: &Counters) -> pb::Counters {
    pb::Counters {
        bytes_in: c.bytes_in,
        bytes_out: c.bytes_out,
        connections_total: c.connections_total,
        connections_active: c.connections_active,
        datagrams_in: c.datagrams_in,
        datagrams_out: c.datagrams_out,
        flows_dropped_overflow: c.flows_dropped_overflow,
        dns_failures: c.dns_failures,
        connect_failures: c.connect_failures,
        target_failovers: c.target_failovers,
        fd_exhausted: c.fd_exhausted,
        rate_limit_rejected: c.rate_limit_rejected,
        rate_limit_throttled: c.rate_limit_throttled,
        rate_limit_dropped: c.rate_limit_dropped,
    }
}

fn counters_from_wire(c: Option<&pb::Counters>) -> Counters {
    let Some(c) = c else { return Counters::default() };
    Counters {
        bytes_in: c.bytes_in,
        bytes_out: c.bytes_out,
        connections_total: c.connections_total,
        connections_active: c.connections_active,
        datagrams_in: c.datagrams_in,
        datagrams_out: c.datagrams_out,
        flows_dropped_overflow: c.flows_dropped_overflow,
        dns_failures: c.dns_failures,
        connect_failures: c.connect_failures,
        target_failovers: c.target_failovers,
        fd_exhausted: c.fd_exhausted,
        rate_limit_rejected: c.rate_limit_rejected,
        rate_limit_throttled: c.rate_limit_throttled,
        rate_limit_dropped: c.rate_limit_dropped,
    }
}

/// Core report → wire.
pub fn report_to_wire(id: RuleId, r: &RuleReport) -> pb::RuleCounters {
    pb::RuleCounters {
        rule_id: id.get(),
        instance: r.instance,
        totals: Some(counters_to_wire(&r.totals)),
        per_port: r
            .per_port
            .iter()
            .map(|(port, c)| pb::PortCounters { port: u32::from(*port), counters: Some(counters_to_wire(c)) })
            .collect(),
        per_target: r
            .per_target
            .iter()
            .map(|t| pb::TargetCounters {
                index: t.index,
                healthy: t.health == TargetHealth::Healthy,
                counters: Some(counters_to_wire(&t.counters)),
            })
            .collect(),
    }
}

/// Core SNI listener counters → wire.
pub fn sni_report_to_wire(r: &SniListenerReport) -> pb::SniListenerCounters {
    pb::SniListenerCounters {
        listen_addr: r.listen_addr.map(|a| a.to_string()).unwrap_or_default(),
        port: u32::from(r.port),
        instance: r.instance,
        routed_exact: r.routed_exact,
        routed_wildcard: r.routed_wildcard,
        routed_fallback: r.routed_fallback,
        miss: r.miss,
        parse_failures: r.parse_failures,
        peek_timeouts: r.peek_timeouts,
        peeks_shed: r.peeks_shed,
        peek_buckets: r.peek_buckets.clone(),
        peek_sum_us: r.peek_sum_us,
    }
}

/// Wire SNI listener counters → core; `None` for a port outside 1..=65535 or an address
/// that does not parse. The histogram is brought to the shared bucket layout.
pub fn sni_report_from_wire(w: &pb::SniListenerCounters) -> Option<SniListenerReport> {
    let port = u16::try_from(w.port).ok().filter(|&p| p != 0)?;
    let listen_addr = match w.listen_addr.as_str() {
        "" => None,
        text => Some(text.parse::<IpAddr>().ok()?),
    };
    // A hostile report cannot make the server hold an unbounded histogram.
    let buckets = w.peek_buckets.iter().take(64).copied().collect();
    Some(
        SniListenerReport {
            listen_addr,
            port,
            instance: w.instance,
            routed_exact: w.routed_exact,
            routed_wildcard: w.routed_wildcard,
            routed_fallback: w.routed_fallback,
            miss: w.miss,
            parse_failures: w.parse_failures,
            peek_timeouts: w.peek_timeouts,
            peeks_shed: w.peeks_shed,
            peek_buckets: buckets,
            peek_sum_us: w.peek_sum_us,
        }
        .normalised(),
    )
}

/// Wire report → core. Ports outside 1..=65535 are dropped.
pub fn report_from_wire(w: &pb::RuleCounters) -> (RuleId, RuleReport) {
    let per_port: BTreeMap<u16, Counters> = w
        .per_port
        .iter()
        .filter_map(|p| {
            Some((u16::try_from(p.port).ok().filter(|&p| p != 0)?, counters_from_wire(p.counters.as_ref())))
        })
        .collect();
    let per_target = w
        .per_target
        .iter()
        .map(|t| TargetCounters {
            index: t.index,
            health: if t.healthy { TargetHealth::Healthy } else { TargetHealth::Failed },
            counters: counters_from_wire(t.counters.as_ref()),
        })
        .collect();
    (
        RuleId::new(w.rule_id),
        RuleReport {
            instance: w.instance,
            totals: counters_from_wire(w.totals.as_ref()),
            per_port,
            per_target,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn def(text_targets: &[&str], listen: &str, protocol: Protocol) -> RuleDef {
        RuleSpec {
            name: Some("web".into()),
            protocol,
            listen_port: ListenSpec::Text(listen.into()),
            listen_addr: Some("::1".parse().unwrap()),
            target: None,
            targets: text_targets.iter().map(|t| t.to_string()).collect(),
            prefer_ipv6: true,
            health_check_interval_secs: Some(5),
            sni_pattern: None,
            sni_fallback: false,
            rate_limit: None,
        }
        .validate(RuleLimits::default())
        .unwrap()
    }

    #[test]
    fn rules_round_trip_through_the_wire() {
        for d in [
            def(&["127.0.0.1:80"], "18080", Protocol::Tcp),
            def(
                &["[::1]:9000-9009@2,proxy=v2", "backend.example:9000@1,proxy=v1"],
                "1000-1009",
                Protocol::Tcp,
            ),
            def(&["10.0.0.1:53"], "5353", Protocol::Udp),
            RuleDef {
                sni: Some(SniRoute::Pattern(portunus_core::sni::SniPattern::parse("*.example.com").unwrap())),
                ..def(&["127.0.0.1:8443"], "443", Protocol::Tcp)
            },
            RuleDef { sni: Some(SniRoute::Fallback), ..def(&["127.0.0.1:8443"], "443", Protocol::Tcp) },
        ] {
            let wire = rule_to_wire(RuleId::new(42), &d);
            let bytes = wire.encode_to_vec();
            let decoded = pb::RuleDefinition::decode(bytes.as_slice()).unwrap();
            assert_eq!(rule_from_wire(&decoded).unwrap(), (RuleId::new(42), d));
        }
    }

    #[test]
    fn hostile_wire_rules_are_refused_not_panicked_on() {
        let mut wire = rule_to_wire(RuleId::new(1), &def(&["127.0.0.1:80"], "80", Protocol::Tcp));
        wire.listen_start = 0;
        wire.listen_end = 0;
        assert!(rule_from_wire(&wire).is_err());
        wire.listen_start = 70_000;
        wire.listen_end = 70_000;
        assert!(rule_from_wire(&wire).is_err());
        wire.listen_start = 80;
        wire.listen_end = 80;
        wire.protocol = 99;
        assert!(rule_from_wire(&wire).is_err());
        wire.protocol = pb::Protocol::Tcp as i32;
        wire.targets[0].host = "a:b:c".into();
        assert!(rule_from_wire(&wire).is_err());
    }

    /// Bytes of a `RuleDefinition` as the first protocol version encodes it. Decoding must
    /// keep working forever: the proto only grows.
    #[test]
    fn golden_rule_definition_bytes_still_decode() {
        const GOLDEN: &[u8] = &[
            0x08, 0x07, 0x10, 0x01, 0x18, 0xa0, 0x8d, 0x01, 0x20, 0xa0, 0x8d, 0x01, 0x32, 0x11, 0x0a, 0x09,
            0x31, 0x32, 0x37, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x31, 0x10, 0x90, 0x3f, 0x18, 0x90, 0x3f,
        ];
        let decoded = pb::RuleDefinition::decode(GOLDEN).unwrap();
        let (id, d) = rule_from_wire(&decoded).unwrap();
        assert_eq!(id, RuleId::new(7));
        assert_eq!(d.listen.to_string(), "18080");
        assert_eq!(d.targets[0].to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn sni_listener_counters_round_trip_and_hostile_ones_are_bounded() {
        let report = SniListenerReport {
            listen_addr: Some("::1".parse().unwrap()),
            port: 443,
            instance: 9,
            routed_exact: 1,
            routed_wildcard: 2,
            routed_fallback: 3,
            miss: 4,
            parse_failures: 5,
            peek_timeouts: 6,
            peeks_shed: 7,
            peek_sum_us: 8,
            ..SniListenerReport::default()
        };
        let wire = sni_report_to_wire(&report);
        let decoded = pb::SniListenerCounters::decode(wire.encode_to_vec().as_slice()).unwrap();
        assert_eq!(sni_report_from_wire(&decoded), Some(report));
        let mut hostile = wire.clone();
        hostile.peek_buckets = vec![1; 10_000];
        let bounded = sni_report_from_wire(&hostile).unwrap();
        assert_eq!(bounded.peek_buckets.len(), portunus_core::sni::PEEK_BUCKETS_SECONDS.len() + 1);
        assert_eq!(bounded.peek_count(), 64);
        hostile.port = 70_000;
        assert_eq!(sni_report_from_wire(&hostile), None);
    }

    #[test]
    fn settings_round_trip_and_zero_means_default() {
        let s = DataPlaneSettings { udp_flow_idle: Duration::from_secs(31), ..Default::default() };
        assert_eq!(settings_from_wire(&settings_to_wire(&s)), s);
        assert_eq!(settings_from_wire(&pb::DataPlaneSettings::default()), DataPlaneSettings::default());
    }
}

// ----- whole messages: the stream adapters build and take apart messages only here -------

/// What a client's message means to the server.
#[derive(Debug)]
pub enum ClientEvent {
    /// The first message: version and capability names.
    Hello {
        /// Version string.
        version: String,
        /// Capability names as announced.
        capabilities: Vec<String>,
        /// The client process's instance (0: not announced).
        instance: u64,
    },
    /// A rule's activation outcome.
    Outcome(RuleId, RuleEvent),
    /// Cumulative traffic of some rules, and the counters of the client's SNI listeners
    /// (all of them, when it has any).
    Stats(Vec<(RuleId, RuleReport)>, Vec<SniListenerReport>),
    /// Nothing the server acts on.
    Ignored,
}

/// Decodes a client message. An unknown outcome state is ignored; an unknown error code
/// becomes `internal`; messages are bounded (512 characters).
pub fn client_event(msg: pb::ClientMessage) -> ClientEvent {
    match msg.msg {
        Some(pb::client_message::Msg::Hello(hello)) => ClientEvent::Hello {
            version: hello.version,
            capabilities: hello.capabilities,
            instance: hello.instance,
        },
        Some(pb::client_message::Msg::RuleStatus(status)) => {
            let rule = RuleId::new(status.rule_id);
            match pb::rule_status::State::try_from(status.state) {
                Ok(pb::rule_status::State::Active) => ClientEvent::Outcome(rule, RuleEvent::Activated),
                Ok(pb::rule_status::State::Failed) => ClientEvent::Outcome(
                    rule,
                    RuleEvent::Failed {
                        code: ErrorCode::parse(&status.code).unwrap_or(ErrorCode::Internal),
                        message: status.message.chars().take(512).collect(),
                    },
                ),
                _ => ClientEvent::Ignored,
            }
        }
        Some(pb::client_message::Msg::Stats(report)) => ClientEvent::Stats(
            report.rules.iter().map(report_from_wire).collect(),
            // Bounded: a client has at most one listener per SNI port.
            report.sni_listeners.iter().take(1024).filter_map(sni_report_from_wire).collect(),
        ),
        None => ClientEvent::Ignored,
    }
}

/// The messages for one item a stream carries: a plan becomes Welcome and the full rule set;
/// an end becomes the status that closes the stream.
pub fn outbound_to_wire(
    item: Outbound,
    server_version: &str,
) -> Vec<Result<pb::ServerMessage, tonic::Status>> {
    let update = |update: pb::RuleUpdate| {
        Ok(pb::ServerMessage { msg: Some(pb::server_message::Msg::RuleUpdate(update)) })
    };
    match item {
        Outbound::Plan(plan) => {
            let welcome = pb::Welcome {
                client_id: plan.client.id.to_string(),
                client_name: plan.client.name.to_string(),
                settings: Some(settings_to_wire(&plan.settings)),
                server_version: server_version.to_owned(),
                protocol_version: portunus_core::PROTOCOL_VERSION,
                quotas: plan.quotas.iter().map(quota_to_wire).collect(),
                owner_limits: plan.owner_caps.iter().map(owner_caps_to_wire).collect(),
            };
            let replay = pb::RuleUpdate {
                full_sync: true,
                upsert: plan.rules.iter().map(|(id, def)| rule_to_wire(*id, def)).collect(),
                remove: vec![],
            };
            vec![
                Ok(pb::ServerMessage { msg: Some(pb::server_message::Msg::Welcome(welcome)) }),
                update(replay),
            ]
        }
        Outbound::Command(ClientCommand::Upsert { rule, def }) => {
            vec![update(pb::RuleUpdate {
                full_sync: false,
                upsert: vec![rule_to_wire(rule, &def)],
                remove: vec![],
            })]
        }
        Outbound::Command(ClientCommand::Remove { rule }) => {
            vec![update(pb::RuleUpdate { full_sync: false, upsert: vec![], remove: vec![rule.get()] })]
        }
        Outbound::Command(ClientCommand::Quota(pair)) => {
            vec![Ok(pb::ServerMessage {
                msg: Some(pb::server_message::Msg::QuotaUpdate(quota_to_wire(&pair))),
            })]
        }
        Outbound::Command(ClientCommand::OwnerCaps(update)) => {
            vec![Ok(pb::ServerMessage {
                msg: Some(pb::server_message::Msg::OwnerLimits(owner_caps_to_wire(&update))),
            })]
        }
        Outbound::End(EndReason::Disconnected(reason)) => {
            vec![Err(tonic::Status::unauthenticated(reason.as_str()))]
        }
        Outbound::End(EndReason::Replaced) => {
            vec![Err(tonic::Status::aborted("replaced by a newer stream of the same client"))]
        }
        Outbound::End(EndReason::ShuttingDown) => {
            vec![Err(tonic::Status::unavailable("server shutting down"))]
        }
    }
}

/// A pair's quota on the wire.
pub fn quota_to_wire(pair: &PairUpdate) -> pb::TrafficQuotaUpdate {
    let rules = pair.rules.iter().map(|r| r.get()).collect();
    match &pair.update {
        QuotaUpdate::Set { user, remaining_bytes, exhausted } => pb::TrafficQuotaUpdate {
            action: pb::traffic_quota_update::Action::Set as i32,
            user: user.to_string(),
            remaining_bytes: *remaining_bytes,
            exhausted: *exhausted,
            rules,
        },
        QuotaUpdate::Remove { user } => pb::TrafficQuotaUpdate {
            action: pb::traffic_quota_update::Action::Remove as i32,
            user: user.to_string(),
            remaining_bytes: 0,
            exhausted: false,
            rules,
        },
    }
}

/// A pair's quota from the wire; `None` for an action this client does not know (logged).
pub fn quota_from_wire(wire: &pb::TrafficQuotaUpdate) -> Option<PairUpdate> {
    let user = UserId::new(wire.user.chars().take(64).collect::<String>());
    // Bounded: a pair's rules on one client.
    let rules = wire.rules.iter().take(65_536).map(|r| RuleId::new(*r)).collect();
    let update = match pb::traffic_quota_update::Action::try_from(wire.action) {
        Ok(pb::traffic_quota_update::Action::Set) => {
            QuotaUpdate::Set { user, remaining_bytes: wire.remaining_bytes, exhausted: wire.exhausted }
        }
        Ok(pb::traffic_quota_update::Action::Remove) => QuotaUpdate::Remove { user },
        _ => {
            tracing::warn!(event = "control.bad_quota_update", action = wire.action, user = %wire.user);
            return None;
        }
    };
    Some(PairUpdate { update, rules })
}

/// An owner envelope on the wire.
pub fn owner_caps_to_wire(update: &OwnerCapsUpdate) -> pb::OwnerLimitsUpdate {
    pb::OwnerLimitsUpdate {
        user: update.user.to_string(),
        limits: update.caps.as_ref().map(|caps| limits_to_wire(&caps.to_limits())),
        rules: update.rules.iter().map(|r| r.get()).collect(),
    }
}

/// An owner envelope from the wire; `None` (logged as `control.bad_owner_limits`) when its
/// caps do not validate.
pub fn owner_caps_from_wire(wire: &pb::OwnerLimitsUpdate) -> Option<OwnerCapsUpdate> {
    let user = UserId::new(wire.user.chars().take(64).collect::<String>());
    // Bounded: an owner's rules on one client.
    let rules = wire.rules.iter().take(65_536).map(|r| RuleId::new(*r)).collect();
    let caps = match wire.limits.as_ref().map(|l| OwnerEnvelope(limits_from_wire(l)).validate()) {
        None => None,
        Some(Ok(caps)) => Some(caps),
        Some(Err(failure)) => {
            tracing::warn!(event = "control.bad_owner_limits", user = %wire.user, code = %failure.code,
                message = %failure.message);
            return None;
        }
    };
    Some(OwnerCapsUpdate { user, caps, rules })
}

/// The answer to a successful redeem.
pub fn redeem_response(redeemed: Redeemed) -> pb::RedeemResponse {
    pb::RedeemResponse {
        client_id: redeemed.client.id.to_string(),
        client_name: redeemed.client.name.to_string(),
        token: redeemed.token.expose().to_owned(),
        server_endpoint: redeemed.endpoint,
    }
}

/// A redeem request for `code`.
pub fn redeem_request(code: &str, version: &str) -> pb::RedeemRequest {
    pb::RedeemRequest { code: code.to_owned(), version: version.to_owned() }
}

/// The bundle a redeem answer makes, pinned to `pin`.
pub fn bundle_from_wire(resp: pb::RedeemResponse, pin: &str) -> Result<Bundle, Failure> {
    let client_id = ClientId::parse(&resp.client_id)
        .ok_or_else(|| Failure::new(ErrorCode::InvalidRequest, "server sent a malformed client id"))?;
    Ok(Bundle {
        server_endpoint: resp.server_endpoint,
        server_cert_sha256: pin.to_owned(),
        client_id,
        client_name: resp.client_name,
        token: resp.token,
    })
}

/// The first message of a client's stream.
pub fn hello(
    version: &str,
    git_revision: &str,
    capabilities: &[Capability],
    instance: u64,
) -> pb::ClientMessage {
    let hello = pb::Hello {
        version: version.to_owned(),
        protocol_version: portunus_core::PROTOCOL_VERSION,
        capabilities: capabilities.iter().map(|c| c.as_str().to_owned()).collect(),
        git_revision: git_revision.to_owned(),
        instance,
    };
    pb::ClientMessage { msg: Some(pb::client_message::Msg::Hello(hello)) }
}

/// A rule's activation outcome, as the client reports it.
pub fn outcome_message(id: RuleId, outcome: Outcome) -> pb::ClientMessage {
    let status = match outcome {
        Outcome::Active => pb::RuleStatus {
            rule_id: id.get(),
            state: pb::rule_status::State::Active as i32,
            code: String::new(),
            message: String::new(),
        },
        Outcome::Failed(f) => pb::RuleStatus {
            rule_id: id.get(),
            state: pb::rule_status::State::Failed as i32,
            code: f.code.as_str().to_owned(),
            message: f.message,
        },
    };
    pb::ClientMessage { msg: Some(pb::client_message::Msg::RuleStatus(status)) }
}

/// A traffic report of some rules, and of the client's SNI listeners.
pub fn stats_message(reports: &[(RuleId, RuleReport)], sni: &[SniListenerReport]) -> pb::ClientMessage {
    let report = pb::StatsReport {
        rules: reports.iter().map(|(id, r)| report_to_wire(*id, r)).collect(),
        sni_listeners: sni.iter().map(sni_report_to_wire).collect(),
    };
    pb::ClientMessage { msg: Some(pb::client_message::Msg::Stats(report)) }
}

/// What a server's message means to the client.
#[derive(Debug)]
pub enum ServerEvent {
    /// The stream is up: who we are and the data-plane settings.
    Welcome {
        /// Every quota of a user on this client (applied before the rules).
        quotas: Vec<PairUpdate>,
        /// Every owner envelope on this client (applied before the rules).
        owner_caps: Vec<OwnerCapsUpdate>,
        /// The client's name.
        client_name: String,
        /// The server's version.
        server_version: String,
        /// Settings for the data plane.
        settings: DataPlaneSettings,
    },
    /// Rule changes for the agent, in order.
    Rules(Vec<ServerMsg>),
    /// A pair's quota changed.
    Quota(PairUpdate),
    /// An owner's envelope changed.
    OwnerCaps(OwnerCapsUpdate),
    /// Nothing to act on.
    Ignored,
}

/// Decodes a server message. A rule the client cannot accept is left out (and logged as
/// `control.bad_rule`); the rest of the update still applies.
pub fn server_event(msg: pb::ServerMessage) -> ServerEvent {
    match msg.msg {
        Some(pb::server_message::Msg::Welcome(welcome)) => ServerEvent::Welcome {
            quotas: welcome.quotas.iter().take(65_536).filter_map(quota_from_wire).collect(),
            owner_caps: welcome.owner_limits.iter().take(65_536).filter_map(owner_caps_from_wire).collect(),
            settings: welcome.settings.as_ref().map(settings_from_wire).unwrap_or_default(),
            client_name: welcome.client_name,
            server_version: welcome.server_version,
        },
        Some(pb::server_message::Msg::RuleUpdate(update)) => {
            let mut decoded = Vec::with_capacity(update.upsert.len());
            for wire in &update.upsert {
                match rule_from_wire(wire) {
                    Ok(pair) => decoded.push(pair),
                    Err(failure) => {
                        tracing::error!(event = "control.bad_rule", rule = wire.rule_id, error = %failure)
                    }
                }
            }
            let mut msgs = Vec::with_capacity(decoded.len() + update.remove.len() + 1);
            if update.full_sync {
                msgs.push(ServerMsg::Sync(decoded));
            } else {
                msgs.extend(decoded.into_iter().map(|(id, def)| ServerMsg::Upsert(id, def)));
            }
            msgs.extend(update.remove.into_iter().map(|id| ServerMsg::Remove(RuleId::new(id))));
            ServerEvent::Rules(msgs)
        }
        Some(pb::server_message::Msg::QuotaUpdate(update)) => {
            quota_from_wire(&update).map_or(ServerEvent::Ignored, ServerEvent::Quota)
        }
        Some(pb::server_message::Msg::OwnerLimits(update)) => {
            owner_caps_from_wire(&update).map_or(ServerEvent::Ignored, ServerEvent::OwnerCaps)
        }
        None => ServerEvent::Ignored,
    }
}
