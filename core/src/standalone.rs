//! The standalone configuration: one TOML file with `[[rule]]` tables (the same `RuleSpec` the
//! CLI and the API take) and optional `[settings]`, for running the data plane without a
//! control plane.
//!
//! Invariant: every refusal names the rule (by name and position) and the field at fault.

use serde::Deserialize;

use crate::config::{DataPlaneSettings, ServerSettings, SettingsLayer};
use crate::error::{ErrorCode, Failure};
use crate::ids::RuleId;
use crate::rule::{ListenClash, RuleDef, RuleLimits, RuleSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    settings: SettingsTable,
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsTable {
    udp_flow_idle_secs: Option<u64>,
    udp_max_flows_per_rule: Option<u64>,
    range_rule_max_ports: Option<u64>,
    tcp_connect_timeout_secs: Option<u64>,
    tcp_idle_timeout_secs: Option<u64>,
    tcp_keepalive_secs: Option<u64>,
}

/// A validated standalone configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandaloneConfig {
    /// Data-plane settings.
    pub settings: DataPlaneSettings,
    /// Rules with their names; ids are their 1-based positions in the file.
    pub rules: Vec<(RuleId, String, RuleDef)>,
}

/// The field a validation code is about, for messages.
fn field_of(failure: &Failure) -> &'static str {
    match failure.code {
        // A rate or burst names its own key in the message.
        ErrorCode::ZeroCap | ErrorCode::BurstWithoutRate | ErrorCode::BurstOutOfRange => "rate_limit",
        ErrorCode::OutOfRange if !failure.message.starts_with("health_check") => "rate_limit",
        ErrorCode::InvalidPort | ErrorCode::InvertedRange | ErrorCode::ExceedsCap => "listen_port",
        ErrorCode::InvalidTarget | ErrorCode::RangeMismatch | ErrorCode::DuplicateTarget => "target",
        ErrorCode::TargetCount | ErrorCode::InvalidRequest => "target/targets",
        ErrorCode::ProtocolMismatch => "protocol",
        ErrorCode::OutOfRange => "health_check_interval_secs",
        ErrorCode::InvalidName => "name",
        ErrorCode::InvalidSniPattern => "sni_pattern",
        _ => "rule",
    }
}

impl StandaloneConfig {
    /// Parses and validates the file's text.
    ///
    /// ```
    /// use portunus_core::standalone::StandaloneConfig;
    /// use portunus_core::ErrorCode;
    ///
    /// let config = StandaloneConfig::parse(
    ///     r#"
    ///     [settings]
    ///     tcp_idle_timeout_secs = 600
    ///
    ///     [[rule]]
    ///     name = "web"
    ///     listen_port = 8080
    ///     target = "127.0.0.1:80"
    ///
    ///     [[rule]]
    ///     name = "dns"
    ///     protocol = "udp"
    ///     listen_port = "5300-5301"
    ///     targets = ["10.0.0.53:53", "10.0.0.54:53@1"]
    ///     "#,
    /// )?;
    /// assert_eq!(config.settings.tcp_idle_timeout.as_secs(), 600);
    /// let (id, name, def) = &config.rules[1];
    /// assert_eq!((id.get(), name.as_str(), def.listen.len()), (2, "dns", 2));
    ///
    /// let refused = StandaloneConfig::parse("[[rule]]\nname = \"a\"\nlisten_port = 0\ntarget = \"127.0.0.1:80\"\n");
    /// let failure = refused.unwrap_err();
    /// assert_eq!(failure.code, ErrorCode::InvalidPort);
    /// assert!(failure.message.contains("#1"), "the rule is named: {failure}");
    /// # Ok::<(), portunus_core::Failure>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, Failure> {
        let file: File = toml::from_str(text).map_err(|err| {
            let location = err
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            Failure::new(ErrorCode::InvalidConfig, format!("{}{location}", err.message().trim()))
        })?;
        let layer = SettingsLayer {
            udp_flow_idle_secs: file.settings.udp_flow_idle_secs,
            udp_max_flows_per_rule: file.settings.udp_max_flows_per_rule,
            range_rule_max_ports: file.settings.range_rule_max_ports,
            tcp_connect_timeout_secs: file.settings.tcp_connect_timeout_secs,
            tcp_idle_timeout_secs: file.settings.tcp_idle_timeout_secs,
            tcp_keepalive_secs: file.settings.tcp_keepalive_secs,
            ..Default::default()
        };
        let resolved = ServerSettings::resolve(layer)
            .map_err(|f| Failure::new(f.code, format!("[settings]: {}", f.message)))?;
        let limits = RuleLimits { max_range_ports: resolved.range_rule_max_ports };
        if file.rule.is_empty() {
            return Err(Failure::new(ErrorCode::InvalidConfig, "no [[rule]] tables: nothing to forward"));
        }
        let mut rules: Vec<(RuleId, String, RuleDef)> = Vec::with_capacity(file.rule.len());
        for (idx, spec) in file.rule.iter().enumerate() {
            let position = idx + 1;
            let name = spec.name.clone().ok_or_else(|| {
                Failure::new(ErrorCode::InvalidName, format!("rule #{position}: field `name` is required"))
            })?;
            let def = spec.validate(limits).map_err(|f| {
                Failure::new(f.code, format!("rule {name:?} (#{position}): {}: {}", field_of(&f), f.message))
            })?;
            if let Some((_, other, _)) = rules.iter().find(|(_, n, _)| *n == name) {
                return Err(Failure::new(
                    ErrorCode::InvalidName,
                    format!("rule {name:?} (#{position}): name: {other:?} is used by an earlier rule"),
                ));
            }
            // SNI rules of one address and port share its listener; anything else overlapping
            // is refused with the code a server push would get.
            let clash = rules.iter().find_map(|(_, n, d)| def.listen_clash(d).map(|c| (n, c)));
            if let Some((other, clash)) = clash {
                let why = match clash {
                    ListenClash::Ports => "overlaps",
                    ListenClash::PlainAndSni => "mixes plain TCP and SNI routing with",
                    ListenClash::SamePattern => "routes the same SNI pattern as",
                    ListenClash::SecondFallback => "is a second SNI fallback beside",
                };
                return Err(Failure::new(
                    clash.code(),
                    format!(
                        "rule {name:?} (#{position}): listen_port: {} {} {why} rule {other:?}",
                        def.protocol, def.listen
                    ),
                ));
            }
            rules.push((RuleId::new(position as u64), name, def));
        }
        Ok(StandaloneConfig { settings: resolved.data_plane, rules })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(text: &str, code: ErrorCode, needles: &[&str]) {
        let err = StandaloneConfig::parse(text).unwrap_err();
        assert_eq!(err.code, code, "{err}");
        for needle in needles {
            assert!(err.message.contains(needle), "{needle:?} not in {:?}", err.message);
        }
    }

    #[test]
    fn a_bench_style_file_parses() {
        let cfg = StandaloneConfig::parse(
            "[[rule]]\nname = \"bench-tcp\"\nprotocol = \"tcp\"\nlisten_port = 5201\ntarget = \"127.0.0.1:5202\"\n\n\
             [[rule]]\nname = \"range\"\nlisten_port = \"6000-6009\"\ntarget = \"127.0.0.1:7000-7009\"\n\n\
             [settings]\ntcp_idle_timeout_secs = 60\n",
        )
        .unwrap();
        assert_eq!(cfg.rules.len(), 2);
        assert_eq!(cfg.rules[1].0, RuleId::new(2));
        assert_eq!(cfg.settings.tcp_idle_timeout.as_secs(), 60);
    }

    #[test]
    fn a_rule_rate_limit_table_takes_the_apis_fields_and_names_the_field_at_fault() {
        let rule = |limits: &str| {
            format!(
                "[[rule]]\nname = \"capped\"\nlisten_port = 5201\ntarget = \"127.0.0.1:5202\"\n\n\
                 [rule.rate_limit]\n{limits}\n"
            )
        };
        let cfg = StandaloneConfig::parse(&rule(
            "bandwidth_in_bps = 10000000\nbandwidth_out_bps = 5000000\nnew_connections_per_sec = 100\n\
             concurrent_connections = 50",
        ))
        .unwrap();
        let caps = cfg.rules[0].2.rate_limit;
        assert_eq!(caps.bandwidth(crate::ratelimit::Direction::In).map(|r| r.per_sec()), Some(10_000_000));
        assert_eq!(caps.concurrent_connections(), Some(50));
        check_err(
            &rule("bandwidth_in_bps = 0"),
            ErrorCode::ZeroCap,
            &["\"capped\"", "rate_limit", "bandwidth_in_bps"],
        );
        check_err(
            &rule("new_connections_burst = 5"),
            ErrorCode::BurstWithoutRate,
            &["rate_limit", "new_connections_burst"],
        );
        check_err(
            &rule("new_connections_per_sec = 2000000"),
            ErrorCode::OutOfRange,
            &["rate_limit", "new_connections_per_sec"],
        );
        let unknown = StandaloneConfig::parse(&rule("bandwidth_bps = 1")).unwrap_err();
        assert!(unknown.message.contains("bandwidth_bps"), "{unknown}");
    }

    #[test]
    fn sni_rules_share_a_port_and_clash_with_their_codes() {
        let sni = |name: &str, route: &str| {
            format!("[[rule]]\nname = \"{name}\"\nlisten_port = 8443\ntarget = \"127.0.0.1:9443\"\n{route}\n")
        };
        let ok = [
            sni("api", "sni_pattern = \"API.example.com\""),
            sni("any", "sni_pattern = \"*.example.com\""),
            sni("rest", "sni_fallback = true"),
        ]
        .concat();
        let cfg = StandaloneConfig::parse(&ok).unwrap();
        assert_eq!(cfg.rules.len(), 3);
        assert_eq!(cfg.rules[0].2.to_spec().sni_pattern.as_deref(), Some("api.example.com"));
        let plain = "[[rule]]\nname = \"plain\"\nlisten_port = 8443\ntarget = \"127.0.0.1:9443\"\n";
        check_err(
            &[ok.as_str(), plain].concat(),
            ErrorCode::LegacyToSniUnsupported,
            &["\"plain\"", "\"api\""],
        );
        check_err(
            &[ok.clone(), sni("dup", "sni_pattern = \"api.example.com\"")].concat(),
            ErrorCode::SniPatternTaken,
            &["dup"],
        );
        check_err(
            &[ok.clone(), sni("again", "sni_fallback = true")].concat(),
            ErrorCode::SniFallbackTaken,
            &["again"],
        );
        check_err(
            &sni("bad", "sni_pattern = \"*\""),
            ErrorCode::InvalidSniPattern,
            &["\"bad\"", "sni_pattern"],
        );
    }

    #[test]
    fn refusals_name_the_rule_and_the_field() {
        let two =
            "[[rule]]\nname = \"a\"\nlisten_port = 1\ntarget = \"127.0.0.1:2\"\n[[rule]]\nname = \"b\"\n";
        check_err(
            &format!("{two}listen_port = 0\ntarget = \"127.0.0.1:2\"\n"),
            ErrorCode::InvalidPort,
            &["\"b\"", "#2", "listen_port"],
        );
        check_err(
            &format!("{two}listen_port = 5\ntarget = \"127.0.0.1\"\n"),
            ErrorCode::InvalidTarget,
            &["\"b\"", "target"],
        );
        check_err(
            &format!("{two}listen_port = 5\ntarget = \"x:1\"\nbogus = 1\n"),
            ErrorCode::InvalidConfig,
            &["bogus", "line"],
        );
        check_err(
            &format!("{two}listen_port = 1\ntarget = \"127.0.0.1:3\"\n"),
            ErrorCode::PortInUse,
            &["\"b\"", "\"a\""],
        );
        check_err(
            "[[rule]]\nlisten_port = 1\ntarget = \"127.0.0.1:2\"\n",
            ErrorCode::InvalidName,
            &["#1", "name"],
        );
        check_err("[settings]\nudp_flow_idle_secs = 5\n", ErrorCode::OutOfRange, &["udp_flow_idle_secs"]);
        check_err("", ErrorCode::InvalidConfig, &["no [[rule]]"]);
    }
}
