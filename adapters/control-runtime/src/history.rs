//! The traffic history's clock: minutes with traffic are written once they have ended (the
//! task looks every few seconds, so a minute is queryable within 15 s of its end), and each
//! hour is rolled up a minute after it ends, which also prunes what is past retention.

use std::time::Duration;

use portunus_core::error::Failure;
use portunus_core::history::{Bucket, TrafficAnswer, TrafficQuery};
use portunus_core::ids::Timestamp;
use portunus_core::policy::Actor;
use portunus_core::service::{HistoryService, TrafficScope};

use crate::Runtime;

/// How often the task looks for ended minutes and a due rollup.
const TICK: Duration = Duration::from_secs(5);
/// How long after an hour ends it is rolled up.
const ROLLUP_DELAY: Duration = Duration::from_secs(60);
const HOUR_MS: u64 = 3_600_000;

impl Runtime {
    /// Writes the minutes that have ended (every minute held, when `all`: at shutdown);
    /// returns how many samples were written.
    pub async fn flush_history(&self, all: bool) -> Result<usize, Failure> {
        let cut = if all { Timestamp::from_millis(u64::MAX) } else { self.now() };
        let samples = self.stats().minutes.take_ended(cut);
        if samples.is_empty() {
            return Ok(0);
        }
        self.mutate_async(move |_, cx| HistoryService.record_minutes(cx, samples)).await?
    }

    /// Rolls up the hour starting at `hour` and prunes past retention.
    pub async fn roll_up_hour(&self, hour: Timestamp) -> Result<usize, Failure> {
        self.mutate_async(move |_, cx| HistoryService.roll_up(cx, hour)).await?
    }

    /// Writes ended minutes every few seconds and rolls each hour up a minute after it ends
    /// (at start, the last hour that ended: rolling up is idempotent) until aborted.
    pub fn spawn_history(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TICK);
            let mut rolled: Option<Timestamp> = None;
            loop {
                ticks.tick().await;
                if let Err(err) = this.flush_history(false).await {
                    tracing::warn!(event = "store.error", error = %err, "could not write the traffic history");
                }
                let settled = this.now().as_millis().saturating_sub(ROLLUP_DELAY.as_millis() as u64);
                let due = Timestamp::from_millis(
                    Bucket::Hour
                        .start_of(Timestamp::from_millis(settled))
                        .as_millis()
                        .saturating_sub(HOUR_MS),
                );
                if rolled == Some(due) {
                    continue;
                }
                match this.roll_up_hour(due).await {
                    Ok(samples) => {
                        tracing::debug!(event = "traffic.rolled_up", hour = %due.to_rfc3339(), samples);
                        rolled = Some(due);
                    }
                    Err(err) => {
                        tracing::warn!(event = "store.error", error = %err, "could not roll the traffic history up")
                    }
                }
            }
        })
    }

    /// Traffic samples and totals as `actor` may see them (blocking).
    pub fn traffic(
        &self,
        actor: &Actor,
        query: TrafficQuery,
        scope: &TrafficScope,
    ) -> Result<TrafficAnswer, Failure> {
        self.read(|_, cx| HistoryService.traffic(cx, actor, query, scope))?
    }
}
