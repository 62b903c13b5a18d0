//! The runtime's quota calls: the operator's (set, change, remove, read) and the meter's
//! (usage from the clients' reports, the periods' ends).
//!
//! Invariant: every change a client must hear about — a new cap or a credit, exhaustion, a
//! new period, a removed quota — is announced as a `traffic_quota.*` event in commit order,
//! after the batch that made it committed.

use portunus_core::error::Failure;
use portunus_core::ids::{ClientId, UserId};
use portunus_core::policy::Actor;
use portunus_core::quota::{Quota, QuotaPatch, QuotaSpec};
use portunus_core::service::{QuotaChanged, QuotaMetricRow, QuotaService, QuotaView};

use crate::Runtime;

impl Runtime {
    /// Logs what a quota change decided (the events operators alert on) and counts it for
    /// `/metrics`.
    pub(crate) fn announce(&self, changed: &QuotaChanged) {
        announce(changed);
        let decided = &changed.decisions;
        let mut events = self.inner.quota_events.lock().unwrap_or_else(|p| p.into_inner());
        let counts = events.entry((changed.quota.user.clone(), changed.quota.client.clone())).or_default();
        counts.period_resets += u64::from(decided.rolled_over.is_some());
        counts.exhaustions += u64::from(decided.became_exhausted);
        for threshold in &decided.thresholds_crossed {
            match u8::from(*threshold) {
                100 => counts.crossed_100 += 1,
                _ => counts.crossed_80 += 1,
            }
        }
    }

    /// `rows` with the event counts of their pairs.
    pub(crate) fn with_quota_events(&self, mut rows: Vec<QuotaMetricRow>) -> Vec<QuotaMetricRow> {
        let events = self.inner.quota_events.lock().unwrap_or_else(|p| p.into_inner());
        for row in &mut rows {
            let key = (portunus_core::ids::UserId::new(row.user.as_str()), row.client_id.clone());
            row.events = events.get(&key).copied().unwrap_or_default();
        }
        rows
    }
}

/// Logs what a quota change decided.
fn announce(changed: &QuotaChanged) {
    let (quota, decided) = (&changed.quota, &changed.decisions);
    let (user, client) = (quota.user.as_str(), quota.client.as_str());
    if let Some(closed) = &decided.rolled_over {
        tracing::info!(event = "traffic_quota.period_reset", user, client,
            used_bytes = closed.used_bytes, period_end = %closed.period.end.to_rfc3339());
    }
    for threshold in &decided.thresholds_crossed {
        tracing::warn!(
            event = "traffic_quota.threshold_crossed",
            user,
            client,
            percent = u8::from(*threshold),
            used_bytes = quota.state.used_bytes(),
            monthly_bytes = quota.state.monthly_bytes().get()
        );
    }
    if decided.became_exhausted {
        tracing::warn!(
            event = "traffic_quota.exhausted",
            user,
            client,
            used_bytes = quota.state.used_bytes(),
            monthly_bytes = quota.state.monthly_bytes().get()
        );
    }
    if decided.resumed && !quota.state.is_exhausted() {
        tracing::info!(
            event = "traffic_quota.resumed",
            user,
            client,
            remaining_bytes = quota.state.remaining_bytes()
        );
    }
}

impl Runtime {
    /// Creates or replaces a pair's quota (blocking).
    pub fn set_quota(
        &self,
        actor: &Actor,
        user: &str,
        client: &str,
        spec: &QuotaSpec,
    ) -> Result<QuotaView, Failure> {
        let (actor, user, client, spec) = (actor.clone(), user.to_owned(), client.to_owned(), *spec);
        let changed =
            self.mutate(move |_, cx| QuotaService.set_quota(cx, &actor, &user, &client, &spec))??;
        self.announce(&changed);
        Ok(QuotaView::of(&changed.quota, self.now()))
    }

    /// Changes a pair's cap or clears its period's usage (blocking).
    pub fn patch_quota(
        &self,
        actor: &Actor,
        user: &str,
        client: &str,
        patch: &QuotaPatch,
    ) -> Result<QuotaView, Failure> {
        let (actor, user, client, patch) = (actor.clone(), user.to_owned(), client.to_owned(), *patch);
        let changed =
            self.mutate(move |_, cx| QuotaService.patch_quota(cx, &actor, &user, &client, &patch))??;
        self.announce(&changed);
        Ok(QuotaView::of(&changed.quota, self.now()))
    }

    /// Removes a pair's quota (blocking).
    pub fn delete_quota(&self, actor: &Actor, user: &str, client: &str) -> Result<Quota, Failure> {
        let (actor, user, client) = (actor.clone(), user.to_owned(), client.to_owned());
        let removed = self.mutate(move |_, cx| QuotaService.delete_quota(cx, &actor, &user, &client))??;
        tracing::info!(
            event = "traffic_quota.removed",
            user = removed.user.as_str(),
            client = removed.client.as_str()
        );
        Ok(removed)
    }

    /// One pair's quota and usage (blocking).
    pub fn get_quota(&self, actor: &Actor, user: &str, client: &str) -> Result<QuotaView, Failure> {
        self.read(|_, cx| QuotaService.get_quota(cx, actor, user, client))?
    }

    /// Quotas the actor may read, optionally one user's (blocking).
    pub fn list_quotas(&self, actor: &Actor, user: Option<&str>) -> Result<Vec<QuotaView>, Failure> {
        self.read(|_, cx| QuotaService.list_quotas(cx, actor, user))?
    }

    /// Meters `bytes` forwarded for `user` on `client` (a stats report's share of a pair);
    /// written behind, like the report's other effects.
    pub async fn meter_usage(&self, user: UserId, client: ClientId, bytes: u64) -> Result<(), Failure> {
        // Most pairs have no quota: the read model says so without a trip to the writer.
        let metered = portunus_core::ports::QuotaStore::get_quota(&*self.inner.model, &user, &client)?;
        if bytes == 0 || metered.is_none() {
            return Ok(());
        }
        let changed =
            self.write_behind(move |_, cx| QuotaService.record_usage(cx, &user, &client, bytes)).await??;
        if let Some(changed) = changed {
            self.announce(&changed);
        }
        Ok(())
    }

    /// Starts the new period of every quota whose period has ended; returns how many.
    pub async fn roll_quota_periods(&self) -> Result<usize, Failure> {
        // Nothing due (the usual case): no trip to the writer, no commit.
        let due = QuotaService.next_rollover(&*self.inner.model)?;
        if due.is_none_or(|at| at > self.now()) {
            return Ok(0);
        }
        let rolled = self.mutate_async(|_, cx| QuotaService.roll_periods(cx)).await??;
        rolled.iter().for_each(|changed| self.announce(changed));
        Ok(rolled.len())
    }

    /// Rolls quota periods over when they end (looking again at least every
    /// [`PERIOD_CHECK`], so a quota created meanwhile is not missed) until aborted.
    pub fn spawn_quota_periods(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let due = QuotaService.next_rollover(&*this.inner.model).ok().flatten();
                let wait = due.map_or(PERIOD_CHECK, |at| at.since(this.now()).min(PERIOD_CHECK));
                tokio::time::sleep(wait).await;
                if let Err(err) = this.roll_quota_periods().await {
                    tracing::warn!(event = "store.error", error = %err, "could not start new quota periods");
                }
            }
        })
    }
}

/// The longest the period task sleeps before looking at the quotas again.
const PERIOD_CHECK: std::time::Duration = std::time::Duration::from_secs(30);
