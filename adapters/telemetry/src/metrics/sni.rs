//! The SNI listener families of `/metrics`: built by hand from the clients' reports, because
//! a client sends its peek histogram already bucketed and OpenTelemetry has no observable
//! histogram to carry one.
//!
//! Names and labels are the documented contract: every family has `client` and `listen`
//! (`443`, `127.0.0.1:443` or `[::1]:443`, as `list-rules` shows it); the route counter adds
//! `match` (`exact`, `wildcard`, `fallback`).

use portunus_core::service::SniListenerRow;
use portunus_core::sni::{PEEK_BUCKETS_SECONDS, SniListenerReport};
use prometheus::proto::{Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// Reads one counter out of a listener's report.
type Field = fn(&SniListenerReport) -> u64;

/// Counter families per listener without a further label: (name, help, field).
const LISTENER_COUNTERS: &[(&str, &str, Field)] = &[
    (
        "portunus_sni_miss_total",
        "TLS connections closed because no SNI route took their server name and the port has no fallback.",
        |r| r.miss,
    ),
    (
        "portunus_sni_parse_failures_total",
        "Connections closed because their first bytes were not an acceptable TLS ClientHello.",
        |r| r.parse_failures,
    ),
    (
        "portunus_sni_peek_timeouts_total",
        "Connections closed because no complete ClientHello arrived within the peek deadline (3 s).",
        |r| r.peek_timeouts,
    ),
    (
        "portunus_sni_peeks_shed_total",
        "Peeking connections closed to make room for newer ones under the listener's bound of concurrent peeks.",
        |r| r.peeks_shed,
    ),
];

/// The SNI families for `rows`, sorted into the caller's list later; none without rows, so
/// a server without SNI listeners shows none of these names.
pub(super) fn families(rows: &[SniListenerRow]) -> Vec<MetricFamily> {
    if rows.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(LISTENER_COUNTERS.len() + 2);
    let routed = rows
        .iter()
        .flat_map(|row| {
            [
                ("exact", row.report.routed_exact),
                ("wildcard", row.report.routed_wildcard),
                ("fallback", row.report.routed_fallback),
            ]
            .into_iter()
            .map(move |(kind, value)| {
                let mut labels = listener_labels(row);
                labels.push(label("match", kind));
                counter_metric(labels, value)
            })
        })
        .collect();
    out.push(family(
        "portunus_sni_routed_total",
        "TLS connections routed by their server name, by how the route matched.",
        MetricType::COUNTER,
        routed,
    ));
    for &(name, help, field) in LISTENER_COUNTERS {
        let metrics =
            rows.iter().map(|row| counter_metric(listener_labels(row), field(&row.report))).collect();
        out.push(family(name, help, MetricType::COUNTER, metrics));
    }
    let histograms = rows.iter().map(histogram_metric).collect();
    out.push(family(
        "portunus_tls_client_hello_peek_duration_seconds",
        "Seconds an SNI listener waited for a connection's complete ClientHello (every peek, whatever its end).",
        MetricType::HISTOGRAM,
        histograms,
    ));
    out
}

pub(super) fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

pub(super) fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

/// `client` and `listen`, in name order.
fn listener_labels(row: &SniListenerRow) -> Vec<LabelPair> {
    let listen = match row.report.listen_addr {
        None => row.report.port.to_string(),
        Some(addr) if addr.is_ipv6() => format!("[{addr}]:{}", row.report.port),
        Some(addr) => format!("{addr}:{}", row.report.port),
    };
    vec![label("client", &row.client), label("listen", &listen)]
}

pub(super) fn counter_metric(labels: Vec<LabelPair>, value: u64) -> Metric {
    let mut counter = Counter::default();
    counter.set_value(value as f64);
    let mut metric = Metric::default();
    metric.set_label(labels);
    metric.set_counter(counter);
    metric
}

fn histogram_metric(row: &SniListenerRow) -> Metric {
    let report = &row.report;
    let mut cumulative = 0u64;
    let buckets = PEEK_BUCKETS_SECONDS
        .iter()
        .zip(&report.peek_buckets)
        .map(|(bound, count)| {
            cumulative = cumulative.saturating_add(*count);
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(cumulative);
            bucket
        })
        .collect();
    let mut histogram = Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_count(report.peek_count());
    histogram.set_sample_sum(report.peek_sum_us as f64 / 1e6);
    let mut metric = Metric::default();
    metric.set_label(listener_labels(row));
    metric.set_histogram(histogram);
    metric
}
