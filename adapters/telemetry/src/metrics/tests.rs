use std::collections::HashSet;
use std::time::Instant;

use portunus_core::ids::RuleId;
use portunus_core::service::RuleMetricRow;

use super::*;

fn row(rule: u64, client: &str, owner: &str, protocol: &'static str, counters: Counters) -> RuleMetricRow {
    RuleMetricRow {
        client: client.into(),
        owner: owner.into(),
        rule: RuleId::new(rule),
        protocol,
        state: if protocol == "tcp" { "active" } else { "failed" },
        counters,
    }
}

/// Two clients, a TCP rule with every counter set and a UDP rule with a large byte count.
fn fixture() -> MetricsSnapshot {
    MetricsSnapshot {
        clients: vec![("edge-01".into(), true), ("edge-02".into(), false)],
        rules: vec![
            row(
                1,
                "edge-01",
                "alice",
                "tcp",
                Counters {
                    bytes_in: 10,
                    bytes_out: 20,
                    connections_total: 3,
                    connections_active: 1,
                    datagrams_in: 4,
                    datagrams_out: 5,
                    flows_dropped_overflow: 6,
                    dns_failures: 7,
                    connect_failures: 8,
                    target_failovers: 9,
                    fd_exhausted: 11,
                    rate_limit_rejected: 12,
                    rate_limit_throttled: 13,
                    rate_limit_dropped: 14,
                },
            ),
            row(2, "edge-02", "bob", "udp", Counters { bytes_in: 1_234_567_890_123, ..Default::default() }),
        ],
        audit: portunus_core::audit::AuditStats { rows: 12, bytes: 3456 },
        audit_rows_dropped: 7,
        sni_listeners: Vec::new(),
        quotas: Vec::new(),
    }
}

/// `count` clients `edge-NNNNN` and one rule per client, ids from `first_rule`.
fn large(count: u64, first_rule: u64) -> MetricsSnapshot {
    MetricsSnapshot {
        clients: (0..count).map(|i| (format!("edge-{i:05}"), i % 3 != 0)).collect(),
        rules: (0..count)
            .map(|i| {
                let protocol = if i % 2 == 0 { "tcp" } else { "udp" };
                let counters = Counters {
                    bytes_in: i * 1000,
                    bytes_out: i * 2000,
                    connections_total: i,
                    connections_active: i % 7,
                    ..Default::default()
                };
                row(first_rule + i, &format!("edge-{i:05}"), &format!("user-{}", i % 50), protocol, counters)
            })
            .collect(),
        audit: portunus_core::audit::AuditStats::default(),
        audit_rows_dropped: 0,
        quotas: Vec::new(),
        sni_listeners: Vec::new(),
    }
}

/// The exposition the pre-OpenTelemetry registry produced for [`fixture`], byte for byte.
fn expected_fixture_text() -> String {
    let rule_family = |name: &str, help: &str, kind: &str, one: &str, two: &str| {
        format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n\
             {name}{{client=\"edge-01\",owner=\"alice\",rule=\"1\"}} {one}\n\
             {name}{{client=\"edge-02\",owner=\"bob\",rule=\"2\"}} {two}\n"
        )
    };
    let counter = |name: &str, help: &str, one: &str, two: &str| rule_family(name, help, "counter", one, two);
    [
        "# HELP portunus_audit_bytes Bytes the audit trail's records take in the store.\n\
         # TYPE portunus_audit_bytes gauge\n\
         portunus_audit_bytes 3456\n\
         # HELP portunus_audit_rows Records kept in the audit trail.\n\
         # TYPE portunus_audit_rows gauge\n\
         portunus_audit_rows 12\n\
         # HELP portunus_audit_rows_dropped_total Audit records of unauthenticated requests not written: their source was over its budget.\n\
         # TYPE portunus_audit_rows_dropped_total counter\n\
         portunus_audit_rows_dropped_total 7\n"
            .to_owned(),
        format!(
            "# HELP portunus_build_info Always 1; labels carry the build.\n\
             # TYPE portunus_build_info gauge\n\
             portunus_build_info{{git_revision=\"{}\",version=\"0.1.0\"}} 1\n",
            crate::GIT_REVISION
        ),
        "# HELP portunus_clients_connected 1 while the client has a live control stream, else 0.\n\
         # TYPE portunus_clients_connected gauge\n\
         portunus_clients_connected{client=\"edge-01\"} 1\n\
         portunus_clients_connected{client=\"edge-02\"} 0\n"
            .to_owned(),
        counter("portunus_rule_bytes_in_total", "Bytes from peers delivered to targets.", "10", "1234567890123"),
        counter("portunus_rule_bytes_out_total", "Bytes from targets delivered to peers.", "20", "0"),
        counter("portunus_rule_connect_failures_total", "Connections that reached no target.", "8", "0"),
        rule_family(
            "portunus_rule_connections_active",
            "Open TCP connections or live UDP flows.",
            "gauge",
            "1",
            "0",
        ),
        counter("portunus_rule_connections_total", "TCP connections accepted or UDP flows opened.", "3", "0"),
        counter("portunus_rule_datagrams_in_total", "UDP datagrams from peers forwarded to targets.", "4", "0"),
        counter("portunus_rule_datagrams_out_total", "UDP datagrams from targets forwarded to peers.", "5", "0"),
        counter(
            "portunus_rule_dns_failures_total",
            "Connections or flows dropped by a failed DNS resolution.",
            "7",
            "0",
        ),
        counter(
            "portunus_rule_fd_exhausted_total",
            "Accepts, target connects or UDP flow sockets refused for want of file descriptors.",
            "11",
            "0",
        ),
        counter(
            "portunus_rule_flows_dropped_overflow_total",
            "New UDP flows dropped because the rule's flow cap was reached.",
            "6",
            "0",
        ),
        "# HELP portunus_rule_info Always 1; labels carry the rule's protocol and lifecycle state.\n\
         # TYPE portunus_rule_info gauge\n\
         portunus_rule_info{client=\"edge-01\",owner=\"alice\",protocol=\"tcp\",rule=\"1\",state=\"active\"} 1\n\
         portunus_rule_info{client=\"edge-02\",owner=\"bob\",protocol=\"udp\",rule=\"2\",state=\"failed\"} 1\n"
            .to_owned(),
        counter(
            "portunus_rule_rate_limit_dropped_total",
            "UDP datagrams dropped by a bandwidth cap of the rule or its owner.",
            "14",
            "0",
        ),
        counter(
            "portunus_rule_rate_limit_rejected_total",
            "Connections (or new UDP flows) refused by a connection cap of the rule or its owner.",
            "12",
            "0",
        ),
        counter(
            "portunus_rule_rate_limit_throttled_total",
            "Times a TCP direction waited for a bandwidth cap of the rule or its owner.",
            "13",
            "0",
        ),
        counter("portunus_rule_target_failovers_total", "Connections sent to a lower-preference target.", "9", "0"),
    ]
    .concat()
}

/// Every line is a `# HELP`/`# TYPE` comment or a `name{labels} value` sample of a typed family.
fn assert_valid_exposition(text: &str) {
    let mut types: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (keyword, name, rest) = (words.next(), words.next(), words.next());
            let name = name.unwrap_or_else(|| panic!("comment without a name: {line:?}"));
            assert!(is_metric_name(name), "bad name in {line:?}");
            match keyword {
                Some("HELP") => {}
                Some("TYPE") => {
                    let kind = rest.unwrap_or_default();
                    assert!(["counter", "gauge", "histogram"].contains(&kind), "bad type in {line:?}");
                    types.push((name.to_owned(), kind.to_owned()));
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (name, labels, _value) = parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let family = types.last().unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
        let base = match family.1.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)),
            _ => Some(name),
        };
        assert_eq!(base, Some(family.0.as_str()), "sample outside its family: {line:?}");
        let keys: HashSet<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), labels.len(), "repeated label in {line:?}");
        assert_eq!(keys.contains("le"), name.ends_with("_bucket"), "le misplaced in {line:?}");
    }
    let names: HashSet<&str> = types.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), types.len(), "a family is declared twice");
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A parsed sample line: name, labels in order, value.
type Sample<'a> = (&'a str, Vec<(String, String)>, f64);

/// Parses `name{k="v",...} value` (label block optional, no timestamp).
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(['{', ' '])?;
    let (name, mut rest) = line.split_at(name_end);
    if !is_metric_name(name) {
        return None;
    }
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        rest = body;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let key = &rest[..eq];
            let first = key.chars().next()?;
            if !(first.is_ascii_alphabetic() || first == '_')
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return None;
            }
            let mut chars = rest[eq + 1..].strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let close = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return None,
                    },
                    (_, '\n') => return None,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &rest[eq + 1..][1 + close + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return None;
            }
        }
    }
    let value = match rest.strip_prefix(' ')? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse().ok()?,
    };
    Some((name, labels, value))
}

fn samples<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.strip_prefix(family).is_some_and(|r| r.starts_with(['{', ' ']))).collect()
}

#[test]
fn exposition_for_a_fixed_snapshot_is_the_documented_text_exactly() {
    let metrics = ServerMetrics::new("0.1.0");
    let text = metrics.render(&fixture());
    assert_eq!(text, expected_fixture_text());
    assert_valid_exposition(&text);
    // The same snapshot scraped again renders the same text.
    assert_eq!(metrics.render(&fixture()), text);
}

#[test]
fn nothing_from_opentelemetry_leaks_into_the_exposition() {
    let metrics = ServerMetrics::new("0.1.0");
    metrics.observe(Stage::Push, 0.01);
    metrics.observe(Stage::Ack, 0.01);
    metrics.observe(Stage::Commit, 0.01);
    let text = metrics.render(&fixture());
    for unwanted in [
        "otel_scope",
        "target_info",
        "otel_metric_overflow",
        "service_name",
        "_total_total",
        "_seconds_seconds",
    ] {
        assert!(!text.contains(unwanted), "{unwanted} in\n{text}");
    }
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap_or(l))
        .collect();
    assert_eq!(
        families,
        [
            "portunus_audit_bytes",
            "portunus_audit_rows",
            "portunus_audit_rows_dropped_total",
            "portunus_build_info",
            "portunus_clients_connected",
            "portunus_control_ack_duration_seconds",
            "portunus_control_push_duration_seconds",
            "portunus_rule_bytes_in_total",
            "portunus_rule_bytes_out_total",
            "portunus_rule_connect_failures_total",
            "portunus_rule_connections_active",
            "portunus_rule_connections_total",
            "portunus_rule_datagrams_in_total",
            "portunus_rule_datagrams_out_total",
            "portunus_rule_dns_failures_total",
            "portunus_rule_fd_exhausted_total",
            "portunus_rule_flows_dropped_overflow_total",
            "portunus_rule_info",
            "portunus_rule_rate_limit_dropped_total",
            "portunus_rule_rate_limit_rejected_total",
            "portunus_rule_rate_limit_throttled_total",
            "portunus_rule_target_failovers_total",
            "portunus_store_commit_duration_seconds",
        ]
    );
    assert_valid_exposition(&text);
}

#[test]
fn series_of_removed_rules_and_clients_vanish_from_the_next_scrape() {
    let metrics = ServerMetrics::new("0.1.0");
    let before = metrics.render(&fixture());
    assert!(before.contains("rule=\"1\"") && before.contains("client=\"edge-01\""));

    let mut later = fixture();
    later.clients.remove(0);
    later.rules.remove(0);
    later.rules[0].counters.bytes_in += 5;
    let text = metrics.render(&later);
    assert!(!text.contains("rule=\"1\""), "{text}");
    assert!(!text.contains("edge-01"), "{text}");
    assert_eq!(
        samples(&text, "portunus_rule_bytes_in_total"),
        ["portunus_rule_bytes_in_total{client=\"edge-02\",owner=\"bob\",rule=\"2\"} 1234567890128"]
    );
    assert_eq!(
        samples(&text, "portunus_clients_connected"),
        ["portunus_clients_connected{client=\"edge-02\"} 0"]
    );
    // Every rule family still has exactly the one remaining series.
    for (name, ..) in RULE_COUNTERS {
        assert_eq!(samples(&text, name).len(), 1, "{name} in\n{text}");
    }
    for name in ["portunus_rule_connections_active", "portunus_rule_info"] {
        assert_eq!(samples(&text, name).len(), 1, "{name} in\n{text}");
    }

    // With nothing left, only the build info and the audit trail's three figures remain; the
    // removed rule does not come back later.
    let empty = metrics.render(&MetricsSnapshot::default());
    assert_eq!(empty.lines().filter(|l| !l.starts_with('#')).count(), 4, "{empty}");
    assert_eq!(samples(&empty, "portunus_audit_rows"), ["portunus_audit_rows 0"]);
    assert!(samples(&empty, "portunus_build_info").len() == 1);
    let again = metrics.render(&later);
    assert_eq!(again, text);
}

#[test]
fn latency_histograms_render_buckets_sum_and_count() {
    let metrics = ServerMetrics::new("0.1.0");
    // No observation yet: OpenTelemetry exports no data point, so no family at all.
    assert!(!metrics.render(&fixture()).contains("duration_seconds"));

    // Binary fractions so that the sums print exactly.
    metrics.observe(Stage::Push, 0.000_244_140_625); // 2^-12, in le=0.00025
    metrics.observe(Stage::Push, 0.001_953_125); // 2^-9, in le=0.0025
    metrics.observe(Stage::Push, 8.0); // above the last bound: +Inf only
    metrics.observe(Stage::Ack, 0.5); // bounds are inclusive
    for ignored in [-1.0, f64::NAN, f64::INFINITY] {
        metrics.observe(Stage::Push, ignored);
    }
    let text = metrics.render(&fixture());
    let push = |le: &str, n: u64| format!("portunus_control_push_duration_seconds_bucket{{le=\"{le}\"}} {n}");
    let mut expected: Vec<String> = [
        ("0.0001", 0),
        ("0.00025", 1),
        ("0.0005", 1),
        ("0.001", 1),
        ("0.0025", 2),
        ("0.005", 2),
        ("0.01", 2),
        ("0.025", 2),
        ("0.05", 2),
        ("0.1", 2),
        ("0.25", 2),
        ("0.5", 2),
        ("1", 2),
        ("2.5", 2),
        ("5", 2),
        ("+Inf", 3),
    ]
    .iter()
    .map(|(le, n)| push(le, *n))
    .collect();
    expected.push("portunus_control_push_duration_seconds_sum 8.002197265625".into());
    expected.push("portunus_control_push_duration_seconds_count 3".into());
    let lines: Vec<&str> =
        text.lines().filter(|l| l.starts_with("portunus_control_push_duration_seconds")).collect();
    assert_eq!(lines, expected, "{text}");
    assert!(text.contains(
        "# HELP portunus_control_push_duration_seconds Seconds from an operator's rule push request to its answer.\n\
         # TYPE portunus_control_push_duration_seconds histogram\n"
    ));
    for line in [
        "portunus_control_ack_duration_seconds_bucket{le=\"0.25\"} 0",
        "portunus_control_ack_duration_seconds_bucket{le=\"0.5\"} 1",
        "portunus_control_ack_duration_seconds_bucket{le=\"+Inf\"} 1",
        "portunus_control_ack_duration_seconds_sum 0.5",
        "portunus_control_ack_duration_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("portunus_store_commit_duration_seconds"), "{text}");

    // Histograms are cumulative across scrapes and independent of the snapshot.
    metrics.observe(Stage::Commit, 0.0001);
    let text = metrics.render(&MetricsSnapshot::default());
    for line in [
        "portunus_store_commit_duration_seconds_bucket{le=\"0.0001\"} 1",
        "portunus_store_commit_duration_seconds_count 1",
        "portunus_control_push_duration_seconds_count 3",
        "portunus_control_ack_duration_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert_valid_exposition(&text);
}

#[test]
fn exposition_parses_as_prometheus_text_with_awkward_label_values() {
    let metrics = ServerMetrics::new("0.1.0-dev \"quoted\"");
    metrics.observe(Stage::Commit, 0.003);
    let mut snapshot = fixture();
    snapshot.clients.push(("we\"ird\\name\nx".into(), true));
    snapshot.rules[1].owner = String::new();
    let text = metrics.render(&snapshot);
    assert_valid_exposition(&text);
    let weird: Vec<_> = samples(&text, "portunus_clients_connected")
        .into_iter()
        .filter_map(parse_sample)
        .filter(|(_, labels, _)| labels[0].1 == "we\"ird\\name\nx")
        .collect();
    assert_eq!(weird.len(), 1, "{text}");
    assert!(
        text.contains("portunus_rule_bytes_in_total{client=\"edge-02\",owner=\"\",rule=\"2\"} 1234567890123")
    );
    assert!(text.contains("version=\"0.1.0-dev \\\"quoted\\\"\""), "{text}");
}

#[test]
fn the_parser_rejects_malformed_lines() {
    for bad in
        ["name", "name{", "name{a=\"b\"", "name{a=b} 1", "1name 1", "name{a=\"b\"} x", "name{a=\"b\",} 1 2"]
    {
        assert!(parse_sample(bad).is_none(), "{bad:?} accepted");
    }
    assert!(parse_sample("name{a=\"b\",c=\"\\\"\"} 1.5e3").is_some());
}

#[test]
fn snapshots_beyond_the_sdk_default_series_limit_keep_every_series() {
    let metrics = ServerMetrics::new("0.1.0");
    let first = metrics.render(&large(2_500, 1));
    assert_eq!(samples(&first, "portunus_rule_connections_total").len(), 2_500);
    assert_eq!(samples(&first, "portunus_rule_connections_active").len(), 2_500);
    assert_eq!(samples(&first, "portunus_clients_connected").len(), 2_500);
    // A complete turnover of rules: the old gauges are still held while the new ones arrive.
    let second = metrics.render(&large(2_500, 10_001));
    for text in [&first, &second] {
        assert!(!text.contains("otel_metric_overflow"));
    }
    for name in ["portunus_rule_info", "portunus_rule_connections_active", "portunus_rule_bytes_out_total"] {
        let lines = samples(&second, name);
        assert_eq!(lines.len(), 2_500, "{name}");
        assert!(lines.iter().all(|l| l.contains("rule=\"1") && !l.contains("rule=\"1\"")), "{name}");
    }
    assert!(!second.contains("rule=\"2500\""));
    assert!(second.contains("rule=\"12500\""));
    assert_valid_exposition(&second);
}

#[test]
fn the_series_limit_grows_with_the_snapshot_and_covers_a_full_turnover() {
    assert_eq!(SeriesPipeline::limit_for(0), MIN_SERIES_LIMIT);
    assert_eq!(SeriesPipeline::limit_for(1_024), MIN_SERIES_LIMIT);
    assert_eq!(SeriesPipeline::limit_for(1_025), 4_096);
    for size in [1, 1_000, 2_049, 10_000, 1 << 20] {
        let limit = SeriesPipeline::limit_for(size);
        assert!(limit >= 2 * size, "{size}: {limit}");
    }
}

#[test]
fn concurrent_scrapes_and_observations_are_consistent() {
    let metrics = Arc::new(ServerMetrics::new("0.1.0"));
    let expected = expected_fixture_text();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let metrics = Arc::clone(&metrics);
            let expected = expected.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    metrics.observe(Stage::Ack, 0.001);
                    let text = metrics.render(&fixture());
                    let series: String = text
                        .lines()
                        .filter(|l| !l.contains("_duration_seconds"))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    assert_eq!(series, expected);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker panicked");
    }
    let text = metrics.render(&MetricsSnapshot::default());
    assert!(text.lines().any(|l| l == "portunus_control_ack_duration_seconds_count 80"), "{text}");
}

/// Per-scrape cost with 1,000 clients and 1,000 rules:
/// `cargo test -p portunus-telemetry --release -- --ignored --nocapture scrape_cost`.
#[test]
#[ignore = "timing; run in release with --nocapture"]
fn scrape_cost_with_a_thousand_clients_and_rules() {
    let metrics = ServerMetrics::new("0.1.0");
    for _ in 0..100 {
        metrics.observe(Stage::Push, 0.002);
    }
    let snapshot = large(1_000, 1);
    let warm = metrics.render(&snapshot);
    let runs = 50;
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..runs {
        bytes += metrics.render(&snapshot).len();
    }
    let per_scrape = start.elapsed().as_secs_f64() * 1000.0 / f64::from(runs);
    assert_eq!(bytes, warm.len() * 50);
    eprintln!(
        "scrape of 1,000 clients + 1,000 rules: {per_scrape:.3} ms ({} lines, {} bytes)",
        warm.lines().count(),
        warm.len()
    );
}

#[test]
fn sni_listeners_render_route_counters_and_the_peek_histogram() {
    use portunus_core::service::SniListenerRow;
    use portunus_core::sni::{PEEK_BUCKETS_SECONDS, SniListenerReport, peek_bucket};

    let mut report = SniListenerReport {
        listen_addr: Some("::1".parse().unwrap()),
        port: 443,
        routed_exact: 5,
        routed_wildcard: 2,
        routed_fallback: 1,
        miss: 3,
        parse_failures: 4,
        peek_timeouts: 6,
        peeks_shed: 7,
        peek_sum_us: 2_500_000,
        ..SniListenerReport::default()
    };
    report.peek_buckets[peek_bucket(std::time::Duration::from_millis(2))] += 2;
    report.peek_buckets[PEEK_BUCKETS_SECONDS.len()] += 1;
    let snapshot = MetricsSnapshot {
        sni_listeners: vec![SniListenerRow { client: "edge-01".into(), report }],
        ..fixture()
    };
    let text = ServerMetrics::new("1.2.3").render(&snapshot);
    assert_valid_exposition(&text);
    for line in [
        r#"portunus_sni_routed_total{client="edge-01",listen="[::1]:443",match="exact"} 5"#,
        r#"portunus_sni_routed_total{client="edge-01",listen="[::1]:443",match="wildcard"} 2"#,
        r#"portunus_sni_routed_total{client="edge-01",listen="[::1]:443",match="fallback"} 1"#,
        r#"portunus_sni_miss_total{client="edge-01",listen="[::1]:443"} 3"#,
        r#"portunus_sni_parse_failures_total{client="edge-01",listen="[::1]:443"} 4"#,
        r#"portunus_sni_peek_timeouts_total{client="edge-01",listen="[::1]:443"} 6"#,
        r#"portunus_sni_peeks_shed_total{client="edge-01",listen="[::1]:443"} 7"#,
        r#"portunus_tls_client_hello_peek_duration_seconds_bucket{client="edge-01",listen="[::1]:443",le="0.001"} 0"#,
        r#"portunus_tls_client_hello_peek_duration_seconds_bucket{client="edge-01",listen="[::1]:443",le="0.0025"} 2"#,
        r#"portunus_tls_client_hello_peek_duration_seconds_bucket{client="edge-01",listen="[::1]:443",le="3"} 2"#,
        r#"portunus_tls_client_hello_peek_duration_seconds_bucket{client="edge-01",listen="[::1]:443",le="+Inf"} 3"#,
        r#"portunus_tls_client_hello_peek_duration_seconds_sum{client="edge-01",listen="[::1]:443"} 2.5"#,
        r#"portunus_tls_client_hello_peek_duration_seconds_count{client="edge-01",listen="[::1]:443"} 3"#,
        "# TYPE portunus_tls_client_hello_peek_duration_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // Without SNI listeners none of these names appear.
    let plain = ServerMetrics::new("1.2.3").render(&fixture());
    assert!(!plain.contains("portunus_sni_") && !plain.contains("client_hello"), "{plain}");
}

#[test]
fn quotas_render_their_gauges_and_counters_per_pair_and_vanish_without_quotas() {
    let metrics = ServerMetrics::new("1.2.3");
    let without = metrics.render(&fixture());
    assert!(!without.contains("portunus_traffic_quota"), "no quota, no family");
    let quota = portunus_core::service::QuotaMetricRow {
        user: "alice".into(),
        client: "edge-01".into(),
        client_id: portunus_core::ids::ClientId::from_random([1; 10]),
        used: 1_500,
        limit: 1_000,
        exhausted: true,
        events: portunus_core::service::QuotaEventCounts {
            period_resets: 2,
            exhaustions: 1,
            crossed_80: 3,
            crossed_100: 1,
        },
    };
    let text = metrics.render(&MetricsSnapshot { quotas: vec![quota], ..fixture() });
    for line in [
        r#"portunus_traffic_quota_bytes_used{client="edge-01",user="alice"} 1500"#,
        r#"portunus_traffic_quota_bytes_limit{client="edge-01",user="alice"} 1000"#,
        r#"portunus_traffic_quota_exhausted{client="edge-01",user="alice"} 1"#,
        r#"portunus_traffic_quota_period_resets_total{client="edge-01",user="alice"} 2"#,
        r#"portunus_traffic_quota_exhaustions_total{client="edge-01",user="alice"} 1"#,
        r#"portunus_traffic_quota_threshold_crossings_total{client="edge-01",percent="80",user="alice"} 3"#,
        r#"portunus_traffic_quota_threshold_crossings_total{client="edge-01",percent="100",user="alice"} 1"#,
        "# TYPE portunus_traffic_quota_exhausted gauge",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}
