//! Reading the products' logs: one flat JSON object per line on stderr, with `ts`, `level`,
//! `event` and the event's fields at top level.
//!
//! Invariant: only complete lines (ending in a newline) are parsed, so a line the process is
//! still writing is never misread; lines that are not JSON (a final `code: message`) are
//! skipped here and stay visible in the raw text.

use std::path::Path;

use serde_json::Value;

/// One parsed log line.
pub type Event = Value;

/// A field as text: strings as they are, other values in their JSON form.
pub fn field_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The whole file, or an empty string while it does not exist yet.
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every complete JSON line of the file.
pub fn read_events(path: &Path) -> Vec<Event> {
    let text = read_text(path);
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|value| value.is_object())
        .collect()
}

/// Whether `event` is named `name` and carries every `(field, text)` pair.
pub fn matches(event: &Event, name: &str, fields: &[(&str, &str)]) -> bool {
    event.get("event").and_then(Value::as_str) == Some(name)
        && fields.iter().all(|(key, want)| event.get(*key).is_some_and(|got| field_text(got) == *want))
}
