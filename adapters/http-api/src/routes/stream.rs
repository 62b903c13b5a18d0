//! `GET /v1/rules/{id}/stats/stream`: a rule's counters as server-sent events, one `stats`
//! event a second, read the same way as `GET /v1/rules/{id}/stats` (same auth, same
//! visibility: another user's rule answers 404 before any stream starts).
//!
//! Invariants: a stream is bounded, and so is their number: each principal holds at most
//! [`MAX_STREAMS_PER_PRINCIPAL`] open streams and the server [`MAX_STREAMS`] (one more is
//! refused with `rate_limited`, 429, before it starts; a stream's slot is given back when it
//! ends or its reader goes away). It ends after [`MAX_EVENTS`] events (an `EventSource`
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

/// Most streams one principal (a user, a token's user, the operator) may hold open at once:
/// a dashboard and a few rule detail tabs, not a scraper.
pub const MAX_STREAMS_PER_PRINCIPAL: usize = 8;

/// Most streams the server holds open at once, for everyone together.
pub const MAX_STREAMS: usize = 256;

/// The open streams, per principal and in all.
#[derive(Debug, Default)]
pub struct StreamSlots {
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One open stream's place in [`StreamSlots`], given back on drop.
#[derive(Debug)]
pub struct StreamSlot {
    slots: std::sync::Arc<StreamSlots>,
    principal: String,
}

impl StreamSlots {
    /// A slot for `principal`, or the refusal when it (or the server) holds as many as it may.
    pub fn acquire(
        slots: &std::sync::Arc<StreamSlots>,
        principal: &str,
    ) -> Result<StreamSlot, portunus_core::Failure> {
        let mut open = slots.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(principal).copied().unwrap_or(0);
        if mine >= MAX_STREAMS_PER_PRINCIPAL || total >= MAX_STREAMS {
            let why = if mine >= MAX_STREAMS_PER_PRINCIPAL {
                format!(
                    "{principal} already holds {mine} open stats streams (at most {MAX_STREAMS_PER_PRINCIPAL})"
                )
            } else {
                format!("the server holds {total} open stats streams (at most {MAX_STREAMS})")
            };
            return Err(portunus_core::Failure::new(
                ErrorCode::RateLimited,
                format!("{why}; close one, or poll GET /v1/rules/{{id}}/stats"),
            ));
        }
        *open.entry(principal.to_owned()).or_default() += 1;
        Ok(StreamSlot { slots: std::sync::Arc::clone(slots), principal: principal.to_owned() })
    }

    /// Streams open now, in all.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.principal);
            }
        }
    }
}

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
/// to go on. A caller holds at most 8 streams at once (the server 256): one more is refused
/// with `rate_limited` (429).
#[utoipa::path(get, path = "/v1/rules/{id}/stats/stream", tag = "rules",
    params(("id" = u64, Path, description = "rule id"), StatsQuery),
    responses(
        (status = 200, content_type = "text/event-stream", body = StreamEvent,
            description = "Server-sent events. `event: stats` carries a RuleStatsDto as JSON in `data`, once a second; \
                `event: end` (the rule was removed or is gone) is the last. The stream closes after 300 events; \
                an EventSource reconnects by itself."),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 429, description = "rate_limited: the caller (or the server) holds as many open streams as it may", body = ErrorBody)))]
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
    let slot = StreamSlots::acquire(&state.streams, actor.principal.as_str())?;
    let mut interval = tokio::time::interval(STREAM_PERIOD);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ticks = Ticks {
        state,
        actor,
        id,
        query,
        interval,
        sent: 0,
        pending: Some(Ok(first)),
        done: false,
        _slot: slot,
    };
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
    /// Held while the stream lives (dropped with it, also when the reader goes away).
    _slot: StreamSlot,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn each_principal_holds_a_bounded_number_of_streams_and_a_closed_one_frees_its_slot() {
        let slots = Arc::new(StreamSlots::default());
        let alices: Vec<StreamSlot> =
            (0..MAX_STREAMS_PER_PRINCIPAL).map(|_| StreamSlots::acquire(&slots, "alice").unwrap()).collect();
        let refused = StreamSlots::acquire(&slots, "alice").unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert!(refused.message.contains("alice already holds 8"), "{}", refused.message);
        let bob = StreamSlots::acquire(&slots, "bob").expect("another principal has its own slots");
        assert_eq!(slots.open(), MAX_STREAMS_PER_PRINCIPAL + 1);
        drop(alices);
        drop(bob);
        assert_eq!(slots.open(), 0, "every slot came back");
        assert!(StreamSlots::acquire(&slots, "alice").is_ok());
    }

    #[test]
    fn the_server_wide_bound_holds_across_principals() {
        let slots = Arc::new(StreamSlots::default());
        let held: Vec<StreamSlot> = (0..MAX_STREAMS)
            .map(|i| {
                StreamSlots::acquire(&slots, &format!("user-{}", i / MAX_STREAMS_PER_PRINCIPAL)).unwrap()
            })
            .collect();
        let refused = StreamSlots::acquire(&slots, "newcomer").unwrap_err();
        assert!(refused.message.contains("the server holds 256"), "{}", refused.message);
        drop(held);
        assert!(StreamSlots::acquire(&slots, "newcomer").is_ok());
    }
}
