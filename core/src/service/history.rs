//! The traffic history as a use case: storing ended minutes, rolling hours up, pruning, and
//! answering traffic queries with the caller's view of them.
//!
//! Invariants: storing a minute adds to what is stored for it (so writing one minute twice,
//! across a restart, loses and doubles nothing); a rollup replaces its hour's samples; a user
//! sees only samples of rules they own.

use super::{Cx, find_client};
use crate::error::Failure;
use crate::history::{Bucket, TrafficAnswer, TrafficQuery, TrafficSample, rollup};
use crate::ids::{Timestamp, UserId};
use crate::policy::{Action, Actor, authorize};
use crate::ports::{ClientStore, HistoryStore, Write};

/// The traffic history.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryService;

/// Who a traffic query is about, beyond its window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficScope {
    /// Only this user's rules (users may name only themselves; without it, a user gets their
    /// own and a superadmin everyone's).
    pub user: Option<String>,
    /// Only this client (id or name).
    pub client: Option<String>,
}

impl HistoryService {
    /// Stores ended minutes, each added to what is already stored for it.
    pub fn record_minutes<S: HistoryStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        samples: Vec<TrafficSample>,
    ) -> Result<usize, Failure> {
        let mut writes = Vec::with_capacity(samples.len());
        for mut sample in samples {
            let next = Timestamp::from_millis(sample.start.as_millis().saturating_add(1));
            let stored = cx.store.traffic_samples(sample.bucket, sample.start, next)?;
            if let Some(stored) = stored.into_iter().find(|s| s.key == sample.key) {
                sample.bytes_in = sample.bytes_in.saturating_add(stored.bytes_in);
                sample.bytes_out = sample.bytes_out.saturating_add(stored.bytes_out);
            }
            writes.push(Write::PutTrafficSample(sample));
        }
        let n = writes.len();
        cx.stage(writes);
        Ok(n)
    }

    /// Rolls the hour starting at `hour` up into one-hour samples, and prunes both buckets
    /// past their retention; returns how many hour samples it wrote.
    pub fn roll_up<S: HistoryStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        hour: Timestamp,
    ) -> Result<usize, Failure> {
        let hour = Bucket::Hour.start_of(hour);
        let end = Timestamp::from_millis(hour.as_millis().saturating_add(3_600_000));
        let hours = rollup(hour, &cx.store.traffic_samples(Bucket::Minute, hour, end)?);
        let n = hours.len();
        let now = cx.now;
        cx.stage(hours.into_iter().map(Write::PutTrafficSample));
        cx.stage(Bucket::ALL.map(|bucket| Write::PruneTraffic { bucket, before: bucket.oldest_kept(now) }));
        Ok(n)
    }

    /// Samples and totals in `query`'s window, as `actor` may see them.
    pub fn traffic<
        S: HistoryStore + ClientStore + crate::ports::GrantStore + crate::ports::UserStore + ?Sized,
    >(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        mut query: TrafficQuery,
        scope: &TrafficScope,
    ) -> Result<TrafficAnswer, Failure> {
        let store = cx.store;
        let result = (|| {
            authorize(actor, &Action::List)?;
            query.user = match &scope.user {
                Some(name) => {
                    let user = UserId::new(name.as_str());
                    authorize(actor, &Action::AccessAccount(&user))?;
                    if store.get_user(&user)?.is_none() {
                        return Err(Failure::new(
                            crate::error::ErrorCode::UserNotFound,
                            format!("no user {}", crate::ids::quoted(name)),
                        ));
                    }
                    Some(user)
                }
                None if actor.sees_everything() => None,
                None => Some(actor.principal.clone()),
            };
            if let Some(reference) = &scope.client {
                // A client no grant of a user names answers them exactly like a missing one.
                let client = find_client(store, reference)?;
                let grants = store.list_grants()?;
                let visible = authorize(actor, &Action::ReadClient { client: &client.id, grants: &grants });
                if visible.is_err() {
                    return Err(super::client_not_found(reference));
                }
                query.client = Some(client.id);
            }
            let samples = store.traffic_samples(query.bucket, query.bucket.start_of(query.from), query.to)?;
            Ok(TrafficAnswer::of(query.bucket, samples.into_iter().filter(|s| query.selects(s)).collect()))
        })();
        cx.audited_read(actor, "traffic.get", scope.user.as_deref(), result)
    }
}
