//! The Prometheus exposition of the server, produced through OpenTelemetry and its Prometheus
//! exporter.
//!
//! Two halves share one text output:
//! - per-client and per-rule series come from **observable** instruments whose callbacks read the
//!   snapshot handed to [`ServerMetrics::render`], so a removed rule or client disappears from the
//!   very next scrape and the series count grows with rules and clients, never with connections
//!   or flows;
//! - control-plane latencies are **synchronous** histograms without labels, fed through
//!   [`LatencyObserver`].
//!
//! Invariant: names and labels here are the documented contract
//! (`portunus_clients_connected{client}`, `portunus_rule_*{client,owner,rule}`,
//! `portunus_rule_info{client,owner,protocol,rule,state}`, `portunus_build_info{git_revision,version}`,
//! `portunus_control_push_duration_seconds`, `portunus_control_ack_duration_seconds`,
//! `portunus_store_commit_duration_seconds`, `portunus_audit_rows`, `portunus_audit_bytes`,
//! `portunus_audit_rows_dropped_total`, and the SNI listener families of `sni`:
//! `portunus_sni_*_total{client,listen}`, `portunus_sni_routed_total{client,listen,match}`,
//! `portunus_tls_client_hello_peek_duration_seconds{client,listen}`; and the traffic quota
//! families of `quota`, `portunus_traffic_quota_*{client,user}`). The exporter is configured so that OpenTelemetry
//! adds nothing to them: no `otel_scope_*` labels, no `target_info` family, no `_total` or unit
//! suffix, and no `otel_metric_overflow` series (the SDK's per-instrument series limit is kept
//! above what the snapshot needs; see `SeriesPipeline`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_prometheus::{PrometheusExporter, ResourceSelector};
use opentelemetry_sdk::metrics::{Instrument, SdkMeterProvider, Stream};
use portunus_core::ports::{LatencyObserver, Stage};
use portunus_core::service::MetricsSnapshot;
use portunus_core::stats::Counters;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};

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
    (
        "portunus_rule_fd_exhausted_total",
        "Accepts, target connects or UDP flow sockets refused for want of file descriptors.",
        |c| c.fd_exhausted,
    ),
    (
        "portunus_rule_rate_limit_rejected_total",
        "Connections (or new UDP flows) refused by a connection cap of the rule or its owner.",
        |c| c.rate_limit_rejected,
    ),
    (
        "portunus_rule_rate_limit_throttled_total",
        "Times a TCP direction waited for a bandwidth cap of the rule or its owner.",
        |c| c.rate_limit_throttled,
    ),
    (
        "portunus_rule_rate_limit_dropped_total",
        "UDP datagrams dropped by a bandwidth cap of the rule or its owner.",
        |c| c.rate_limit_dropped,
    ),
];

/// Bucket upper bounds (seconds) of the latency histograms: 100 µs to 5 s.
const LATENCY_BOUNDS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Smallest per-instrument series limit of the snapshot half (the SDK's own default is 2000).
const MIN_SERIES_LIMIT: usize = 2048;

const CLIENT: Key = Key::from_static_str("client");
const OWNER: Key = Key::from_static_str("owner");
const RULE: Key = Key::from_static_str("rule");
const PROTOCOL: Key = Key::from_static_str("protocol");
const STATE: Key = Key::from_static_str("state");

/// The server's metrics: the OpenTelemetry pipelines and the registries they export into.
pub struct ServerMetrics {
    /// `version` label of `portunus_build_info`, kept to rebuild the snapshot half.
    version: String,
    /// What the observable callbacks report; filled by `render` only while it gathers.
    scrape: Arc<Mutex<Scrape>>,
    /// The snapshot half. Its lock also serialises scrapes.
    series: Mutex<SeriesPipeline>,
    /// The latency half.
    latency: LatencyPipeline,
}

impl ServerMetrics {
    /// Sets up both pipelines (and a constant build-info series).
    pub fn new(version: &str) -> Self {
        let scrape = Arc::new(Mutex::new(Scrape::default()));
        let series = SeriesPipeline::new(MIN_SERIES_LIMIT, version, &scrape);
        ServerMetrics {
            version: version.to_owned(),
            scrape,
            series: Mutex::new(series),
            latency: LatencyPipeline::new(),
        }
    }

    /// Renders the text exposition for `snapshot`, plus the latency histograms.
    pub fn render(&self, snapshot: &MetricsSnapshot) -> String {
        let mut series = lock(&self.series);
        let size = snapshot.clients.len().max(snapshot.rules.len());
        if !series.fits(size) {
            *series = SeriesPipeline::new(SeriesPipeline::limit_for(size), &self.version, &self.scrape);
        }
        *lock(&self.scrape) = Scrape::of(snapshot);
        let mut families = series.registry.gather();
        *lock(&self.scrape) = Scrape::default();
        series.previous = size;
        drop(series);
        families.extend(self.latency.registry.gather());
        families.extend(sni::families(&snapshot.sni_listeners));
        families.extend(quota::families(&snapshot.quotas));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        encode(&families)
    }
}

impl LatencyObserver for ServerMetrics {
    fn observe(&self, stage: Stage, seconds: f64) {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return;
        }
        let histogram = match stage {
            Stage::Push => &self.latency.push,
            Stage::Ack => &self.latency.ack,
            Stage::Commit => &self.latency.commit,
        };
        histogram.record(seconds, &[]);
    }
}

/// One scrape's worth of values, with each label set built once for all instruments.
#[derive(Default)]
struct Scrape {
    /// `client` label and 0/1.
    clients: Vec<(KeyValue, u64)>,
    rules: Vec<RuleSeries>,
    /// Audit trail: records, bytes, and unauthenticated requests' records dropped.
    audit: [u64; 3],
}

/// One rule's label sets and totals. Labels are in key order, the order the SDK stores them in,
/// so it keeps one map entry per label set instead of two.
struct RuleSeries {
    /// `client`, `owner`, `rule`.
    labels: [KeyValue; 3],
    /// `client`, `owner`, `protocol`, `rule`, `state`.
    info: [KeyValue; 5],
    counters: Counters,
}

impl Scrape {
    fn of(snapshot: &MetricsSnapshot) -> Scrape {
        let clients = snapshot
            .clients
            .iter()
            .map(|(name, connected)| (KeyValue::new(CLIENT, name.clone()), u64::from(*connected)))
            .collect();
        let rules = snapshot
            .rules
            .iter()
            .map(|row| {
                // Shared strings: every instrument clones these label sets into its own map.
                let client = shared(&row.client);
                let owner = shared(&row.owner);
                let rule = shared(&row.rule.to_string());
                RuleSeries {
                    labels: [
                        KeyValue::new(CLIENT, client.clone()),
                        KeyValue::new(OWNER, owner.clone()),
                        KeyValue::new(RULE, rule.clone()),
                    ],
                    info: [
                        KeyValue::new(CLIENT, client),
                        KeyValue::new(OWNER, owner),
                        KeyValue::new(PROTOCOL, row.protocol),
                        KeyValue::new(RULE, rule),
                        KeyValue::new(STATE, row.state),
                    ],
                    counters: row.counters,
                }
            })
            .collect();
        let audit = [snapshot.audit.rows, snapshot.audit.bytes, snapshot.audit_rows_dropped];
        Scrape { clients, rules, audit }
    }
}

/// The snapshot half: a meter provider whose observable instruments read the shared [`Scrape`],
/// exported into its own registry.
///
/// The SDK caps the label sets one instrument holds (2000 by default) and folds any excess into
/// an `otel_metric_overflow="true"` series, which would break the naming contract. An observable
/// gauge still holds the previous scrape's label sets while the next scrape's callbacks run, so
/// a scrape needs room for `previous + size` sets. The limit is fixed when instruments are
/// created, and the SDK allocates map room for it up front: so it starts small and the whole
/// half is rebuilt, with a doubled limit, when a snapshot would not fit. Nothing is lost: every
/// value in it comes from the snapshot.
struct SeriesPipeline {
    registry: Registry,
    /// Kept alive: dropping the provider shuts its reader down.
    _provider: SdkMeterProvider,
    /// Label sets each instrument may hold.
    limit: usize,
    /// Label sets per instrument at the previous scrape (at most).
    previous: usize,
}

impl SeriesPipeline {
    fn new(limit: usize, version: &str, scrape: &Arc<Mutex<Scrape>>) -> Self {
        let registry = Registry::new();
        let provider = SdkMeterProvider::builder()
            .with_reader(exporter_into(&registry))
            .with_view(move |_: &Instrument| Stream::builder().with_cardinality_limit(limit).build().ok())
            .build();
        register_series(&provider.meter("portunus"), version, scrape);
        SeriesPipeline { registry, _provider: provider, limit, previous: 0 }
    }

    /// Whether a snapshot with `size` label sets per instrument can be scraped without overflow.
    fn fits(&self, size: usize) -> bool {
        self.previous.saturating_add(size) <= self.limit
    }

    /// The limit for a fresh pipeline about to scrape `size` label sets per instrument.
    fn limit_for(size: usize) -> usize {
        size.saturating_mul(2).checked_next_power_of_two().unwrap_or(usize::MAX - 1).max(MIN_SERIES_LIMIT)
    }
}

/// Registers the snapshot instruments on `meter`.
fn register_series(meter: &Meter, version: &str, scrape: &Arc<Mutex<Scrape>>) {
    let cell = Arc::clone(scrape);
    meter
        .u64_observable_gauge("portunus_clients_connected")
        .with_description("1 while the client has a live control stream, else 0.")
        .with_callback(move |out| {
            for (label, connected) in &lock(&cell).clients {
                out.observe(*connected, std::slice::from_ref(label));
            }
        })
        .build();
    for &(name, help, field) in RULE_COUNTERS {
        let cell = Arc::clone(scrape);
        meter
            .u64_observable_counter(name)
            .with_description(help)
            .with_callback(move |out| {
                for rule in &lock(&cell).rules {
                    out.observe(field(&rule.counters), &rule.labels);
                }
            })
            .build();
    }
    let cell = Arc::clone(scrape);
    meter
        .u64_observable_gauge("portunus_rule_connections_active")
        .with_description("Open TCP connections or live UDP flows.")
        .with_callback(move |out| {
            for rule in &lock(&cell).rules {
                out.observe(rule.counters.connections_active, &rule.labels);
            }
        })
        .build();
    let cell = Arc::clone(scrape);
    meter
        .u64_observable_gauge("portunus_rule_info")
        .with_description("Always 1; labels carry the rule's protocol and lifecycle state.")
        .with_callback(move |out| {
            for rule in &lock(&cell).rules {
                out.observe(1, &rule.info);
            }
        })
        .build();
    for (index, name, help) in [
        (0, "portunus_audit_rows", "Records kept in the audit trail."),
        (1, "portunus_audit_bytes", "Bytes the audit trail's records take in the store."),
    ] {
        let cell = Arc::clone(scrape);
        meter
            .u64_observable_gauge(name)
            .with_description(help)
            .with_callback(move |out| out.observe(lock(&cell).audit[index], &[]))
            .build();
    }
    let cell = Arc::clone(scrape);
    meter
        .u64_observable_counter("portunus_audit_rows_dropped_total")
        .with_description(
            "Audit records of unauthenticated requests not written: their source was over its budget.",
        )
        .with_callback(move |out| out.observe(lock(&cell).audit[2], &[]))
        .build();
    let build =
        [KeyValue::new("git_revision", crate::GIT_REVISION), KeyValue::new("version", version.to_owned())];
    meter
        .u64_observable_gauge("portunus_build_info")
        .with_description("Always 1; labels carry the build.")
        .with_callback(move |out| out.observe(1, &build))
        .build();
}

/// The latency half: histograms that accumulate for the life of the process.
struct LatencyPipeline {
    registry: Registry,
    /// Kept alive: dropping the provider shuts its reader down.
    _provider: SdkMeterProvider,
    push: Histogram<f64>,
    ack: Histogram<f64>,
    commit: Histogram<f64>,
}

impl LatencyPipeline {
    fn new() -> Self {
        let registry = Registry::new();
        let provider = SdkMeterProvider::builder().with_reader(exporter_into(&registry)).build();
        let meter = provider.meter("portunus");
        let histogram = |name: &'static str, help: &'static str| {
            meter
                .f64_histogram(name)
                .with_description(help)
                .with_unit("s")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build()
        };
        let push = histogram(
            "portunus_control_push_duration_seconds",
            "Seconds from an operator's rule push request to its answer.",
        );
        let ack = histogram(
            "portunus_control_ack_duration_seconds",
            "Seconds from sending a rule to a client until its activation outcome arrives.",
        );
        let commit =
            histogram("portunus_store_commit_duration_seconds", "Seconds to commit one store transaction.");
        LatencyPipeline { registry, _provider: provider, push, ack, commit }
    }
}

/// A Prometheus exporter that writes into `registry` and renders instruments under their own
/// names and attributes only.
fn exporter_into(registry: &Registry) -> PrometheusExporter {
    opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_target_info()
        .scope_info_enabled(false)
        .without_counter_suffixes()
        .without_units()
        .with_resource_selector(ResourceSelector::None)
        .build()
        .expect("a fresh registry takes the exporter's collector")
}

fn encode(families: &[MetricFamily]) -> String {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for the non-empty families a registry gathers.
    let _ = TextEncoder::new().encode(families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// An `Arc`-backed label value: cloning it does not copy the text.
fn shared(text: &str) -> Value {
    Value::from(Arc::<str>::from(text))
}

/// Locks, ignoring poisoning: the guarded values are replaced wholesale, never left half-written.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

mod quota;
mod sni;

#[cfg(test)]
mod tests;
