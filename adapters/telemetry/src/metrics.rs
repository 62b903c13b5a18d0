//! The Prometheus exposition of the server: rendered on each scrape from the control plane's
//! snapshot, so a removed rule or client disappears from the output at once and series count
//! grows with rules and clients, never with connections or flows.
//!
//! Invariant: names and labels here are the documented contract
//! (`portunus_clients_connected{client}`, `portunus_rule_*{client,owner,rule}`).

use std::sync::Mutex;

use portunus_core::service::MetricsSnapshot;
use portunus_core::stats::Counters;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Reads one counter out of a rule's counters.
type Field = fn(&Counters) -> u64;

/// Counter families per rule: (name, help, field).
const RULE_COUNTERS: &[(&str, &str, Field)] = &[
    ("portunus_rule_bytes_in_total", "Bytes from peers delivered to targets.", |c| c.bytes_in),
    ("portunus_rule_bytes_out_total", "Bytes from targets delivered to peers.", |c| c.bytes_out),
    ("portunus_rule_connections_total", "TCP connections accepted or UDP flows opened.", |c| {
        c.connections_total
    }),
    ("portunus_rule_connect_failures_total", "Connections that reached no target.", |c| c.connect_failures),
    ("portunus_rule_datagrams_in_total", "UDP datagrams from peers forwarded to targets.", |c| {
        c.datagrams_in
    }),
    ("portunus_rule_datagrams_out_total", "UDP datagrams from targets forwarded to peers.", |c| {
        c.datagrams_out
    }),
    (
        "portunus_rule_flows_dropped_overflow_total",
        "New UDP flows dropped because the rule's flow cap was reached.",
        |c| c.flows_dropped_overflow,
    ),
    ("portunus_rule_dns_failures_total", "Connections or flows dropped by a failed DNS resolution.", |c| {
        c.dns_failures
    }),
    ("portunus_rule_target_failovers_total", "Connections sent to a lower-preference target.", |c| {
        c.target_failovers
    }),
];

const RULE_LABELS: &[&str] = &["client", "owner", "rule"];

/// The server's metrics registry.
pub struct ServerMetrics {
    registry: Registry,
    clients_connected: IntGaugeVec,
    rule_connections_active: IntGaugeVec,
    rule_info: IntGaugeVec,
    rule_counters: Vec<(IntCounterVec, Field)>,
    /// Serialises scrapes: each one resets and refills the families.
    render_lock: Mutex<()>,
}

impl ServerMetrics {
    /// Builds the registry with every family (and a constant build-info series).
    pub fn new(version: &str) -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry.register(Box::new(vec.clone())).expect("unique metric name");
            vec
        };
        let clients_connected = gauge(
            "portunus_clients_connected",
            "1 while the client has a live control stream, else 0.",
            &["client"],
        );
        let rule_connections_active =
            gauge("portunus_rule_connections_active", "Open TCP connections or live UDP flows.", RULE_LABELS);
        let rule_info = gauge(
            "portunus_rule_info",
            "Always 1; labels carry the rule's protocol and lifecycle state.",
            &["client", "owner", "rule", "protocol", "state"],
        );
        let build_info =
            gauge("portunus_build_info", "Always 1; labels carry the build.", &["version", "git_revision"]);
        build_info.with_label_values(&[version, crate::GIT_REVISION]).set(1);
        let rule_counters = RULE_COUNTERS
            .iter()
            .map(|(name, help, field)| {
                let vec = IntCounterVec::new(Opts::new(*name, *help), RULE_LABELS)
                    .expect("static metric definition");
                registry.register(Box::new(vec.clone())).expect("unique metric name");
                (vec, *field)
            })
            .collect();
        ServerMetrics {
            registry,
            clients_connected,
            rule_connections_active,
            rule_info,
            rule_counters,
            render_lock: Mutex::new(()),
        }
    }

    /// Renders the text exposition for `snapshot`.
    pub fn render(&self, snapshot: &MetricsSnapshot) -> String {
        let _guard = self.render_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.clients_connected.reset();
        self.rule_connections_active.reset();
        self.rule_info.reset();
        for (vec, _) in &self.rule_counters {
            vec.reset();
        }
        for (client, connected) in &snapshot.clients {
            self.clients_connected.with_label_values(&[client.as_str()]).set(i64::from(*connected));
        }
        for row in &snapshot.rules {
            let rule = row.rule.to_string();
            let labels = [row.client.as_str(), row.owner.as_str(), rule.as_str()];
            for (vec, field) in &self.rule_counters {
                vec.with_label_values(&labels).inc_by(field(&row.counters));
            }
            self.rule_connections_active
                .with_label_values(&labels)
                .set(i64::try_from(row.counters.connections_active).unwrap_or(i64::MAX));
            self.rule_info
                .with_label_values(&[labels[0], labels[1], labels[2], row.protocol, row.state])
                .set(1);
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use portunus_core::ids::RuleId;
    use portunus_core::service::RuleMetricRow;

    use super::*;

    #[test]
    fn exposition_uses_the_documented_names_and_labels() {
        let metrics = ServerMetrics::new("0.1.0");
        let snapshot = MetricsSnapshot {
            clients: vec![("edge-01".into(), true), ("edge-02".into(), false)],
            rules: vec![RuleMetricRow {
                client: "edge-01".into(),
                owner: "alice".into(),
                rule: RuleId::new(42),
                protocol: "tcp",
                state: "active",
                counters: Counters {
                    bytes_in: 10,
                    dns_failures: 2,
                    connections_active: 1,
                    ..Default::default()
                },
            }],
        };
        let text = metrics.render(&snapshot);
        for line in [
            "portunus_clients_connected{client=\"edge-01\"} 1",
            "portunus_clients_connected{client=\"edge-02\"} 0",
            "portunus_rule_bytes_in_total{client=\"edge-01\",owner=\"alice\",rule=\"42\"} 10",
            "portunus_rule_dns_failures_total{client=\"edge-01\",owner=\"alice\",rule=\"42\"} 2",
            "portunus_rule_connections_active{client=\"edge-01\",owner=\"alice\",rule=\"42\"} 1",
            "portunus_rule_flows_dropped_overflow_total{client=\"edge-01\",owner=\"alice\",rule=\"42\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("otel_scope") && !text.contains("target_info"));
        // A rule that is gone disappears from the next scrape.
        let text = metrics.render(&MetricsSnapshot { clients: vec![], rules: vec![] });
        assert!(!text.contains("rule=\"42\""), "{text}");
    }
}
