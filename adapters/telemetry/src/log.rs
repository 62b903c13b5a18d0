//! The event log: a `tracing` layer writing one line per event to stderr, as a flat JSON
//! object (`ts`, `level`, `event`, then the event's fields at top level) or as text.
//!
//! Invariants: a line is written with one `write` call so concurrent events never interleave;
//! the level filter comes from `PORTUNUS_LOG`, else `RUST_LOG`, else `info`.

use std::fmt::Write as _;
use std::io::Write as _;

use portunus_core::ports::Clock;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Output format of the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `ts level event key=value … message` for humans.
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(format!("unknown log format {other:?} (json or text)")),
        }
    }
}

/// The filter for `directive` (`info` when absent or malformed).
fn filter_of(directive: Option<&str>) -> EnvFilter {
    let directive = directive.filter(|s| !s.is_empty()).unwrap_or("info");
    EnvFilter::try_new(directive).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the event log as the global subscriber, filtered by `directive` (the apps pass
/// `PORTUNUS_LOG`, else `RUST_LOG`; `info` when absent). Call once, first thing in `main`.
pub fn init(format: LogFormat, directive: Option<&str>) {
    let _ = tracing_subscriber::registry()
        .with(EventLayer { format }.with_filter(filter_of(directive)))
        .try_init();
}

/// The layer; public so tests can capture events with the same formatting.
pub struct EventLayer {
    /// Output format.
    pub format: LogFormat,
}

/// What a span remembers until it closes.
struct SpanTiming {
    opened: std::time::Instant,
    fields: FieldCollector,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for EventLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = format_event(event, self.format);
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    // Spans that pass the filter (the push path's are at debug level: `control.push`,
    // `store.commit`, `link.ack`) are written as one `span.closed` line each, with their
    // fields and duration, so a log pipeline can export them.
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = FieldCollector::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(SpanTiming { opened: std::time::Instant::now(), fields });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(timing) = span.extensions_mut().get_mut::<SpanTiming>() {
            values.record(&mut timing.fields);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(timing) = span.extensions_mut().remove::<SpanTiming>() else { return };
        let parent = span.parent().map(|p| p.name());
        let line = format_span(span.name(), parent, timing, self.format);
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// Formats a closed span as a `span.closed` line.
fn format_span(name: &str, parent: Option<&str>, timing: SpanTiming, format: LogFormat) -> String {
    let micros = u64::try_from(timing.opened.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut fields = timing.fields;
    fields.values.insert(0, ("duration_us".into(), Value::from(micros)));
    fields.values.insert(0, ("span".into(), Value::String(name.to_owned())));
    if let Some(parent) = parent {
        fields.values.insert(1, ("parent".into(), Value::String(parent.to_owned())));
    }
    fields.event = Some("span.closed".into());
    render(fields, "debug", format)
}

/// Formats one event as a full line (with the trailing newline).
pub fn format_event(event: &Event<'_>, format: LogFormat) -> String {
    let mut fields = FieldCollector::default();
    event.record(&mut fields);
    let meta = event.metadata();
    if fields.event.is_none() {
        fields.event = Some(meta.target().replace("::", "."));
    }
    render(fields, level_name(*meta.level()), format)
}

fn render(mut fields: FieldCollector, level: &str, format: LogFormat) -> String {
    let ts = crate::clock::SystemClock.now().to_rfc3339();
    let event_name = fields.event.take().unwrap_or_default();
    match format {
        LogFormat::Json => {
            let mut object = Map::with_capacity(fields.values.len() + 4);
            object.insert("ts".into(), Value::String(ts));
            object.insert("level".into(), Value::String(level.into()));
            object.insert("event".into(), Value::String(event_name));
            for (key, value) in fields.values {
                object.entry(key).or_insert(value);
            }
            if let Some(message) = fields.message {
                object.entry("msg").or_insert(Value::String(message));
            }
            let mut line = Value::Object(object).to_string();
            line.push('\n');
            line
        }
        LogFormat::Text => {
            let mut line = format!("{ts} {level:>5} {event_name}");
            for (key, value) in &fields.values {
                match value {
                    Value::String(s) => {
                        let _ = write!(line, " {key}={s:?}");
                    }
                    other => {
                        let _ = write!(line, " {key}={other}");
                    }
                }
            }
            if let Some(message) = fields.message {
                let _ = write!(line, " {message}");
            }
            line.push('\n');
            line
        }
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

#[derive(Default)]
struct FieldCollector {
    event: Option<String>,
    message: Option<String>,
    values: Vec<(String, Value)>,
}

impl FieldCollector {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "event" => {
                self.event = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                });
            }
            "message" => {
                self.message = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                });
            }
            name => self.values.push((name.to_owned(), value)),
        }
    }
}

impl Visit for FieldCollector {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Capture(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            self.0.lock().unwrap().push(format_event(event, LogFormat::Json));
        }
    }

    #[test]
    fn events_are_flat_json_with_ts_level_and_event() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let got = "ab".repeat(32);
            tracing::error!(event = "control.tls_pinned_mismatch", expected = "cd", got = %got, attempt = 3u64);
            tracing::info!(rule = 42u64, "plain message");
        });
        let lines = lines.lock().unwrap();
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["event"], "control.tls_pinned_mismatch");
        assert_eq!(first["level"], "error");
        assert_eq!(first["expected"], "cd");
        assert_eq!(first["attempt"], 3);
        assert!(first["ts"].as_str().unwrap().ends_with('Z'));
        assert!(lines[0].ends_with('\n') && !lines[0][..lines[0].len() - 1].contains('\n'));
        let second: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["msg"], "plain message");
        assert_eq!(second["rule"], 42);
        assert!(second["event"].as_str().unwrap().starts_with("portunus_telemetry"));
    }
}
