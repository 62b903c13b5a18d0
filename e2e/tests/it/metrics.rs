//! The metrics listener: health and readiness, and the contract's series with exactly the
//! contract's labels.

use crate::harness::{
    Backend, ClientOpts, Scenario, connect, free_port, http_get, roundtrip, server_with_edge,
};

/// The value of the sample whose name and labels are exactly `series`.
pub(crate) fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_endpoints_answer_and_export_the_contract_series_after_traffic() {
    let scn = Scenario::new("metrics");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let metrics = server.addrs().metrics;
    assert_eq!(http_get(metrics, "/healthz").0, 200, "/healthz");
    assert_eq!(http_get(metrics, "/readyz").0, 200, "/readyz");

    let backend = Backend::echo();
    let port = free_port();
    let rule_id = server.push_rule("edge-01", port, &backend.target());
    roundtrip(&mut connect(port), b"something to count");

    let bytes_in =
        format!("portunus_rule_bytes_in_total{{client=\"edge-01\",owner=\"_operator\",rule=\"{rule_id}\"}}");
    let body = crate::harness::wait_until("non-zero byte counters in /metrics", || {
        let (status, body) = http_get(metrics, "/metrics");
        assert_eq!(status, 200, "/metrics");
        sample(&body, &bytes_in).is_some_and(|v| v > 0.0).then_some(body)
    });
    assert_eq!(sample(&body, "portunus_clients_connected{client=\"edge-01\"}"), Some(1.0), "{body}");
    let labels = format!("{{client=\"edge-01\",owner=\"_operator\",rule=\"{rule_id}\"}}");
    assert!(
        sample(&body, &format!("portunus_rule_bytes_out_total{labels}")).is_some_and(|v| v > 0.0),
        "{body}"
    );
    assert_eq!(sample(&body, &format!("portunus_rule_connections_total{labels}")), Some(1.0), "{body}");
    assert!(sample(&body, &format!("portunus_rule_connections_active{labels}")).is_some(), "{body}");
    assert!(!body.contains("otel_scope"), "exporter-added scope labels:\n{body}");
    assert!(!body.contains("target_info"), "exporter-added target_info:\n{body}");
    // The control plane's own latencies: the push above was answered, acknowledged and
    // committed at least once each.
    for histogram in [
        "portunus_control_push_duration_seconds",
        "portunus_control_ack_duration_seconds",
        "portunus_store_commit_duration_seconds",
    ] {
        assert!(
            sample(&body, &format!("{histogram}_count")).is_some_and(|n| n >= 1.0),
            "{histogram} has no observation:\n{body}"
        );
        assert!(
            body.contains(&format!("{histogram}_bucket{{le=\"0.001\"}}")),
            "{histogram} buckets:\n{body}"
        );
    }
}
