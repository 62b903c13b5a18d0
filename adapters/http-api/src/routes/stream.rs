//! `GET /v1/rules/{id}/stats/stream`: a rule's counters as server-sent events, one `stats`
//! event a second, read the same way as `GET /v1/rules/{id}/stats` (same auth, same
//! visibility: another user's rule answers 404 before any stream starts).
//!
//! Invariants: a stream is bounded. It ends after [`MAX_EVENTS`] events (an `EventSource`
//! reconnects on its own, and the reconnect authenticates again, so a revoked session or
//! token stops getting numbers within that bound), and with an `end` event once the rule is
//! removed or no longer visible to the caller. Each tick is one read of the in-memory model
//! off the async workers; nothing is buffered for a slow reader beyond the one event in
//! flight.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use futures::Stream;
use portunus_core::error::ErrorCode;
use portunus_core::ids::RuleId;
use portunus_core::policy::Actor;
use tokio::time::{Interval, MissedTickBehavior};

use super::blocking;
use super::rules::{NOT_FOUND, rule_id};
use crate::AppState;
use crate::dto::{RuleStatsDto, StatsQuery};
use crate::error::{ApiError, ApiPath, ApiQuery, ErrorBody, ErrorDetail};

/// Time between two `stats` events.
pub const STREAM_PERIOD: Duration = Duration::from_secs(1);

/// The most events one stream sends (about five minutes) before it closes; the client
/// reconnects and is authenticated again.
pub const MAX_EVENTS: u64 = 300;

/// What an `EventSource` waits before it reconnects after a stream closes.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// One server-sent event of the stream, as an event-stream parser presents it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StreamEvent {
    /// `stats`, or `end` for the last one.
    pub event: Option<String>,
    /// A RuleStatsDto as JSON (for `end`: the error body or the final stats).
    pub data: String,
    /// Sequence number of the event in this stream.
    pub id: Option<String>,
    /// Milliseconds an EventSource waits before reconnecting.
    pub retry: Option<u64>,
}

/// A rule's counters as server-sent events, one a second.
///
/// `stats` events carry the same JSON as `GET /v1/rules/{id}/stats` (`id`: a sequence
/// number); a last `end` event (data: the error body, `rule_not_found`, or the final stats
/// of a removed rule) says the rule is gone. The stream closes after 300 events; reconnect
/// to go on.
#[utoipa::path(get, path = "/v1/rules/{id}/stats/stream", tag = "rules",
    params(("id" = u64, Path, description = "rule id"), StatsQuery),
    responses(
        (status = 200, content_type = "text/event-stream", body = StreamEvent,
            description = "Server-sent events. `event: stats` carries a RuleStatsDto as JSON in `data`, once a second; \
                `event: end` (the rule was removed or is gone) is the last. The stream closes after 300 events; \
                an EventSource reconnects by itself."),
        (status = 404, description = NOT_FOUND, body = ErrorBody)))]
pub async fn rule_stats_stream(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = rule_id(&id)?;
    // The first reading is taken before answering, so a missing or foreign rule is a plain
    // 404 with a JSON body, not a stream that ends at once.
    let first = read(&state, &actor, id, &query).await?;
    let mut interval = tokio::time::interval(STREAM_PERIOD);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ticks = Ticks { state, actor, id, query, interval, sent: 0, pending: Some(Ok(first)), done: false };
    Ok(Sse::new(futures::stream::unfold(ticks, Ticks::next)))
}

/// One reading of the rule's counters, as the stats route answers it.
async fn read(
    state: &AppState,
    actor: &Actor,
    id: RuleId,
    query: &StatsQuery,
) -> Result<RuleStatsDto, ApiError> {
    let (state, actor, query) = (state.clone(), actor.clone(), query.clone());
    let view = blocking(move || state.runtime.rule_stats(&actor, id)).await?;
    Ok(RuleStatsDto::new(view, &query))
}

/// The state of one stream between events.
struct Ticks {
    state: AppState,
    actor: Actor,
    id: RuleId,
    query: StatsQuery,
    interval: Interval,
    /// Events sent so far.
    sent: u64,
    /// A reading taken but not sent yet (the first one, read before the answer).
    pending: Option<Result<RuleStatsDto, ApiError>>,
    /// The `end` event went out; the next poll closes the stream.
    done: bool,
}

impl Ticks {
    /// The next event, or `None` when the stream is over.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Ticks)> {
        if self.done || self.sent >= MAX_EVENTS {
            return None;
        }
        self.interval.tick().await;
        let reading = match self.pending.take() {
            Some(reading) => reading,
            None => read(&self.state, &self.actor, self.id, &self.query).await,
        };
        self.sent += 1;
        let event = match reading {
            Ok(stats) if stats.state == "removed" => {
                self.done = true;
                json_event("end", &stats)
            }
            Ok(stats) => json_event("stats", &stats),
            Err(err) if err.failure.code == ErrorCode::RuleNotFound => {
                // Gone, or no longer the caller's: the same body the stats route answers.
                self.done = true;
                let body = ErrorBody {
                    error: ErrorDetail {
                        code: err.failure.code.as_str().to_owned(),
                        message: err.failure.message,
                        rule_id: None,
                    },
                };
                json_event("end", &body)
            }
            // Anything else (the store, the process) may pass: close without `end`, and the
            // client reconnects after `retry`.
            Err(_) => return None,
        };
        let mut event = event.id(self.sent.to_string());
        if self.sent == 1 {
            event = event.retry(RECONNECT_AFTER);
        }
        Some((Ok(event), self))
    }
}

/// An event named `name` whose data is `value` as JSON (one line: compact JSON has no
/// newline). A value that does not serialise sends an empty data line rather than ending
/// the stream with an error.
fn json_event(name: &str, value: &impl serde::Serialize) -> Event {
    let data = serde_json::to_string(value).unwrap_or_default();
    Event::default().event(name).data(data)
}
