//! The traffic quota families of `/metrics`, one series per (user, client) pair with a quota:
//! `portunus_traffic_quota_bytes_used`, `portunus_traffic_quota_bytes_limit` and
//! `portunus_traffic_quota_exhausted` (0 or 1) as gauges; period resets, exhaustions and
//! threshold crossings (`percent` 80 or 100) as counters since the server started. None of
//! these names appear while no quota exists.

use portunus_core::service::QuotaMetricRow;
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::sni::{counter_metric, family, label};

type Field = fn(&QuotaMetricRow) -> u64;

const GAUGES: &[(&str, &str, Field)] = &[
    ("portunus_traffic_quota_bytes_used", "Bytes the pair forwarded in its current billing period.", |r| {
        r.used
    }),
    ("portunus_traffic_quota_bytes_limit", "The pair's cap in bytes per billing period.", |r| r.limit),
    (
        "portunus_traffic_quota_exhausted",
        "1 while the pair is out of budget (its rules refuse and cut traffic).",
        |r| u64::from(r.exhausted),
    ),
];

const COUNTERS: &[(&str, &str, Field)] = &[
    (
        "portunus_traffic_quota_period_resets_total",
        "New billing periods begun, since the server started.",
        |r| r.events.period_resets,
    ),
    (
        "portunus_traffic_quota_exhaustions_total",
        "Times the pair ran out of budget, since the server started.",
        |r| r.events.exhaustions,
    ),
];

fn pair_labels(row: &QuotaMetricRow) -> Vec<LabelPair> {
    vec![label("client", &row.client), label("user", &row.user)]
}

fn gauge_metric(labels: Vec<LabelPair>, value: u64) -> Metric {
    let mut gauge = Gauge::default();
    gauge.set_value(value as f64);
    let mut metric = Metric::default();
    metric.set_label(labels);
    metric.set_gauge(gauge);
    metric
}

/// The quota families for `rows`; none without rows.
pub(super) fn families(rows: &[QuotaMetricRow]) -> Vec<MetricFamily> {
    if rows.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for &(name, help, field) in GAUGES {
        let metrics = rows.iter().map(|row| gauge_metric(pair_labels(row), field(row))).collect();
        out.push(family(name, help, MetricType::GAUGE, metrics));
    }
    for &(name, help, field) in COUNTERS {
        let metrics = rows.iter().map(|row| counter_metric(pair_labels(row), field(row))).collect();
        out.push(family(name, help, MetricType::COUNTER, metrics));
    }
    let crossings = rows
        .iter()
        .flat_map(|row| {
            [("80", row.events.crossed_80), ("100", row.events.crossed_100)].into_iter().map(
                move |(percent, n)| {
                    // Labels in name order, as in every family.
                    let labels = vec![
                        label("client", &row.client),
                        label("percent", percent),
                        label("user", &row.user),
                    ];
                    counter_metric(labels, n)
                },
            )
        })
        .collect();
    out.push(family(
        "portunus_traffic_quota_threshold_crossings_total",
        "Times the pair's usage crossed 80 % or 100 % of its cap, since the server started.",
        MetricType::COUNTER,
        crossings,
    ));
    out
}
