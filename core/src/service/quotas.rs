//! Traffic quotas: a monthly byte budget per (user, client) pair that a superadmin sets and
//! the user reads, metered from the client's usage reports.
//!
//! Invariants: a quota exists only for a pair that a grant covers when it is set; every
//! operator call is audited in the same batch as its write; usage only ever moves forwards
//! within a period (the meter is [`QuotaState`], which decides rollovers, thresholds and
//! exhaustion); a user asking about a pair that is not theirs hears exactly what a missing
//! quota answers.

use super::Cx;
use super::Effect;
use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, Timestamp, UserId, quoted};
use crate::policy::{Action, Actor, authorize};
use crate::ports::{ClientCommand, ClientStore, GrantStore, QuotaStore, RuleStore, UserStore, Write};
use crate::quota::{
    Decisions, PairUpdate, Quota, QuotaPatch, QuotaSpec, QuotaState, QuotaStatus, QuotaUpdate,
};

/// Quotas: set, change, remove, read, and meter them.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaService;

/// A quota as the API and the CLI show it (times in RFC 3339, like every other record).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaView {
    /// The user whose traffic it caps.
    pub user: String,
    /// The client it applies on (its id).
    pub client: String,
    /// Bytes (both directions together) the pair may forward per period.
    pub monthly_bytes: u64,
    /// Bytes used in the current period (may pass the cap by what was in flight).
    pub current_period_bytes_used: u64,
    /// The current period's first instant.
    pub period_start: String,
    /// The current period's end (exclusive): when usage resets.
    pub period_end: String,
    /// True while the pair forwards nothing.
    pub exhausted: bool,
    /// When the pair ran out of budget, while it is exhausted.
    pub exhausted_at: Option<String>,
    /// The latest usage report from the client, if any.
    pub last_report_at: Option<String>,
    /// Unix seconds the monthly periods count from.
    pub billing_anchor: i64,
    /// When the quota was created.
    pub created_at: String,
}

impl QuotaView {
    /// The view of `quota` at `now` (a period that ended shows as the next one).
    pub fn of(quota: &Quota, now: Timestamp) -> QuotaView {
        let status: QuotaStatus = quota.state.status(now);
        QuotaView {
            user: quota.user.as_str().to_owned(),
            client: quota.client.as_str().to_owned(),
            monthly_bytes: status.monthly_bytes,
            current_period_bytes_used: status.current_period_bytes_used,
            period_start: status.period_start.to_rfc3339(),
            period_end: status.period_end.to_rfc3339(),
            exhausted: status.exhausted,
            exhausted_at: status.exhausted_at.map(Timestamp::to_rfc3339),
            last_report_at: status.last_report_at.map(Timestamp::to_rfc3339),
            billing_anchor: quota.state.anchor().into(),
            created_at: quota.created_at.to_rfc3339(),
        }
    }
}

/// A quota after a change, with what the change decided (the runtime tells the client and
/// raises the events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaChanged {
    /// The quota as stored now.
    pub quota: Quota,
    /// Rollover, thresholds, exhaustion or resumption the change caused.
    pub decisions: Decisions,
}

/// The answer for a pair with no quota (or one the caller may not see).
pub fn quota_not_found(user: &str, client: &str) -> Failure {
    Failure::new(
        ErrorCode::QuotaNotFound,
        format!("no quota for user {} on client {}", quoted(user), quoted(client)),
    )
}

/// The update that states `quota` to its client, with the pair's rules among `client_rules`
/// (the client's rules).
pub(crate) fn pair_update(quota: &Quota, client_rules: &[crate::rule::Rule]) -> PairUpdate {
    PairUpdate {
        update: QuotaUpdate::of(quota),
        rules: client_rules.iter().filter(|r| r.owner == quota.user).map(|r| r.id).collect(),
    }
}

/// Tells the pair's client about `quota` (dropped when it is not connected: the quota comes
/// with its next session's plan).
fn tell<S: RuleStore + ?Sized>(cx: &mut Cx<'_, S>, quota: &Quota) -> Result<(), Failure> {
    let update = pair_update(quota, &cx.store.rules_for_client(&quota.client)?);
    cx.effect(Effect::Send { client: quota.client.clone(), command: ClientCommand::Quota(Box::new(update)) });
    Ok(())
}

/// True when `decisions` change what the client must enforce.
fn client_must_hear(decisions: &Decisions) -> bool {
    decisions.became_exhausted || decisions.resumed || decisions.rolled_over.is_some()
}

impl QuotaService {
    /// Creates or replaces the quota of a pair (`PUT /v1/users/{user}/quotas/{client}`;
    /// superadmins only). The user must exist and a grant must give them the client.
    pub fn set_quota<S: UserStore + ClientStore + GrantStore + QuotaStore + RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: &str,
        client: &str,
        spec: &QuotaSpec,
    ) -> Result<QuotaChanged, Failure> {
        let now = cx.now;
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let terms = spec.validate()?;
            let (user_id, client) = super::granted_pair(cx.store, user, client)?;
            let (quota, decisions) = match cx.store.get_quota(&user_id, &client.id)? {
                Some(mut existing) => {
                    let decisions = existing.state.handle_replace(terms, now);
                    (existing, decisions)
                }
                None => (
                    Quota {
                        user: user_id,
                        client: client.id,
                        created_at: now,
                        state: QuotaState::new(terms, now),
                    },
                    Decisions::default(),
                ),
            };
            cx.stage([Write::PutQuota(quota.clone())]);
            tell(cx, &quota)?;
            Ok(QuotaChanged { quota, decisions })
        })();
        cx.audited(actor, "quota.set", Some(&format!("{user} {client}")), result)
    }

    /// Changes the cap or clears the period's usage (`PATCH`; superadmins only).
    pub fn patch_quota<S: ClientStore + QuotaStore + RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: &str,
        client: &str,
        patch: &QuotaPatch,
    ) -> Result<QuotaChanged, Failure> {
        let now = cx.now;
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let change = patch.validate()?;
            let mut quota = require_quota(cx.store, user, client)?;
            let decisions = quota.state.handle_change(change, now);
            cx.stage([Write::PutQuota(quota.clone())]);
            tell(cx, &quota)?;
            Ok(QuotaChanged { quota, decisions })
        })();
        cx.audited(actor, "quota.patch", Some(&format!("{user} {client}")), result)
    }

    /// Removes the quota of a pair (superadmins only); the pair is unmetered afterwards.
    pub fn delete_quota<S: ClientStore + QuotaStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: &str,
        client: &str,
    ) -> Result<Quota, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let quota = require_quota(cx.store, user, client)?;
            cx.stage([Write::DeleteQuota(quota.user.clone(), quota.client.clone())]);
            let removal =
                PairUpdate { update: QuotaUpdate::Remove { user: quota.user.clone() }, rules: Vec::new() };
            cx.effect(Effect::Send {
                client: quota.client.clone(),
                command: ClientCommand::Quota(Box::new(removal)),
            });
            Ok(quota)
        })();
        cx.audited(actor, "quota.delete", Some(&format!("{user} {client}")), result)
    }

    /// One pair's quota and usage (`GET …/status`): superadmins, or the user it is for.
    pub fn get_quota<S: ClientStore + QuotaStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: &str,
        client: &str,
    ) -> Result<QuotaView, Failure> {
        let now = cx.now;
        let store = cx.store;
        let result = (|| {
            authorize(actor, &Action::AccessAccount(&UserId::new(user)))?;
            Ok(QuotaView::of(&require_quota(store, user, client)?, now))
        })();
        cx.audited_lookup(
            actor,
            "quota.get",
            &format!("{user} {client}"),
            result,
            &[ErrorCode::NotOwner, ErrorCode::ClientNotFound],
            ErrorCode::QuotaNotFound,
            || quota_not_found(user, client),
        )
    }

    /// Quotas: every one (or one user's) for superadmins, a user's own for users.
    pub fn list_quotas<S: QuotaStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: Option<&str>,
    ) -> Result<Vec<QuotaView>, Failure> {
        let (store, now) = (cx.store, cx.now);
        let result = super::per_user(actor, user, || store.list_quotas(), |q| &q.user)
            .map(|quotas| quotas.iter().map(|q| QuotaView::of(q, now)).collect());
        cx.audited_read(actor, "quota.list", user, result)
    }

    /// Meters usage: `bytes` forwarded for `user` on `client` since the last report. Returns
    /// the changed quota, or `None` when the pair has none. Not audited (no one asked).
    pub fn record_usage<S: QuotaStore + RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        user: &UserId,
        client: &ClientId,
        bytes: u64,
    ) -> Result<Option<QuotaChanged>, Failure> {
        let Some(mut quota) = cx.store.get_quota(user, client)? else { return Ok(None) };
        let decisions = quota.state.handle_report(bytes, cx.now);
        cx.stage([Write::PutQuota(quota.clone())]);
        if client_must_hear(&decisions) {
            tell(cx, &quota)?;
        }
        Ok(Some(QuotaChanged { quota, decisions }))
    }

    /// Starts the new period of every quota whose period has ended by now; returns the ones
    /// that rolled over. The runtime calls it when the earliest [`QuotaService::next_rollover`]
    /// is due.
    pub fn roll_periods<S: QuotaStore + RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
    ) -> Result<Vec<QuotaChanged>, Failure> {
        let now = cx.now;
        let mut changed = Vec::new();
        for mut quota in cx.store.list_quotas()? {
            if quota.state.poll_timeout() > now {
                continue;
            }
            let decisions = quota.state.handle_timeout(now);
            changed.push(QuotaChanged { quota, decisions });
        }
        cx.stage(changed.iter().map(|c| Write::PutQuota(c.quota.clone())));
        for c in &changed {
            // A new period is a new budget: the client's local count starts over.
            tell(cx, &c.quota)?;
        }
        Ok(changed)
    }

    /// When the next period of any quota begins (`None`: there are no quotas).
    pub fn next_rollover<S: QuotaStore + ?Sized>(&self, store: &S) -> Result<Option<Timestamp>, Failure> {
        Ok(store.list_quotas()?.iter().map(|q| q.state.poll_timeout()).min())
    }
}

/// The quota of the pair named by `user` and a client id or name.
fn require_quota<S: ClientStore + QuotaStore + ?Sized>(
    store: &S,
    user: &str,
    client: &str,
) -> Result<Quota, Failure> {
    let client_id = super::pair_client_id(store, client, || quota_not_found(user, client))?;
    store.get_quota(&UserId::new(user), &client_id)?.ok_or_else(|| quota_not_found(user, client))
}
