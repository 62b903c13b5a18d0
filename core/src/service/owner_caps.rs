//! Owner envelopes: the rate limits of one user's rules on one client, taken together. A
//! superadmin sets them; the user reads their own.
//!
//! Invariants: an envelope exists only for a pair that a grant covers when it is set, and
//! always caps something (an empty one is `validation.empty_envelope`: delete it instead);
//! every operator call is audited in the same batch as its write; the client hears of each
//! change (dropped while it is offline: its next session's plan carries every envelope
//! before any rule); a user asking about a pair that is not theirs hears exactly what a
//! missing envelope answers.

use super::{Cx, Effect};
use crate::capability::Capability;
use crate::error::{ErrorCode, Failure};
use crate::ids::{UserId, quoted};
use crate::policy::{Action, Actor, authorize};
use crate::ports::{ClientCommand, ClientStore, GrantStore, OwnerCapsStore, RuleStore, UserStore, Write};
use crate::ratelimit::{OwnerCaps, OwnerCapsUpdate, OwnerEnvelope, RateLimits};

/// Owner envelopes: set, read, list, delete.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnerCapsService;

/// An envelope as the API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OwnerCapsView {
    /// The owner whose rules it caps.
    pub user: String,
    /// The client it applies on (its id).
    pub client: String,
    /// The caps, every burst written out.
    pub caps: RateLimits,
    /// When it was set first.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
}

impl OwnerCapsView {
    /// The view of a stored envelope.
    pub fn of(envelope: &OwnerCaps) -> OwnerCapsView {
        OwnerCapsView {
            user: envelope.user.as_str().to_owned(),
            client: envelope.client.as_str().to_owned(),
            caps: envelope.caps.to_limits(),
            created_at: envelope.created_at.to_rfc3339(),
            updated_at: envelope.updated_at.to_rfc3339(),
        }
    }
}

/// The answer for a pair with no envelope (or one the caller may not see).
pub fn owner_caps_not_found(user: &str, client: &str) -> Failure {
    Failure::new(
        ErrorCode::OwnerCapsNotFound,
        format!("no owner envelope for user {} on client {}", quoted(user), quoted(client)),
    )
}

/// Tells the pair's client about `envelope`, with the owner's rules there.
fn tell<S: RuleStore + ?Sized>(cx: &mut Cx<'_, S>, envelope: &OwnerCaps) -> Result<(), Failure> {
    let update = OwnerCapsUpdate::of(envelope, &cx.store.rules_for_client(&envelope.client)?);
    cx.effect(Effect::Send {
        client: envelope.client.clone(),
        command: ClientCommand::OwnerCaps(Box::new(update)),
    });
    Ok(())
}

impl OwnerCapsService {
    /// Creates or replaces the envelope of a pair (`PUT /v1/users/{user}/owner-caps/{client}`;
    /// superadmins only). The user must exist, a grant must give them the client, and a
    /// connected client must have announced rate-limit support. Replacing keeps the live
    /// buckets' levels on the client (a hot update).
    pub fn set_owner_caps<S: UserStore + ClientStore + GrantStore + OwnerCapsStore + RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: &str,
        client: &str,
        envelope: &OwnerEnvelope,
    ) -> Result<OwnerCapsView, Failure> {
        let now = cx.now;
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let caps = envelope.validate()?;
            let (user_id, client) = super::granted_pair(cx.store, user, client)?;
            if let Some(session) = cx.sessions.session(&client.id)
                && !session.capabilities.contains(&Capability::RateLimit)
            {
                return Err(Failure::new(
                    ErrorCode::RateLimitUnsupportedByClient,
                    format!("client {} did not announce rate-limit support; upgrade it first", client.name),
                ));
            }
            let created_at = cx.store.get_owner_caps(&user_id, &client.id)?.map_or(now, |old| old.created_at);
            let stored = OwnerCaps { user: user_id, client: client.id, caps, created_at, updated_at: now };
            cx.stage([Write::PutOwnerCaps(stored.clone())]);
            tell(cx, &stored)?;
            Ok(OwnerCapsView::of(&stored))
        })();
        cx.audited(actor, "owner_caps.set", Some(&format!("{user} {client}")), result)
    }

    /// Removes the envelope of a pair (superadmins only): the owner's rules keep only their
    /// own caps.
    pub fn delete_owner_caps<S: ClientStore + OwnerCapsStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: &str,
        client: &str,
    ) -> Result<OwnerCapsView, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let envelope = require(cx.store, user, client)?;
            cx.stage([Write::DeleteOwnerCaps(envelope.user.clone(), envelope.client.clone())]);
            let removal = OwnerCapsUpdate { user: envelope.user.clone(), caps: None, rules: Vec::new() };
            cx.effect(Effect::Send {
                client: envelope.client.clone(),
                command: ClientCommand::OwnerCaps(Box::new(removal)),
            });
            Ok(OwnerCapsView::of(&envelope))
        })();
        cx.audited(actor, "owner_caps.delete", Some(&format!("{user} {client}")), result)
    }

    /// One pair's envelope: superadmins, or the user it is for.
    pub fn get_owner_caps<S: ClientStore + OwnerCapsStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: &str,
        client: &str,
    ) -> Result<OwnerCapsView, Failure> {
        let store = cx.store;
        let result = (|| {
            authorize(actor, &Action::AccessAccount(&UserId::new(user)))?;
            Ok(OwnerCapsView::of(&require(store, user, client)?))
        })();
        cx.audited_lookup(
            actor,
            "owner_caps.get",
            &format!("{user} {client}"),
            result,
            &[ErrorCode::NotOwner, ErrorCode::ClientNotFound],
            ErrorCode::OwnerCapsNotFound,
            || owner_caps_not_found(user, client),
        )
    }

    /// Envelopes: every one (or one user's) for superadmins, a user's own for users.
    pub fn list_owner_caps<S: OwnerCapsStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: Option<&str>,
    ) -> Result<Vec<OwnerCapsView>, Failure> {
        let store = cx.store;
        let result = super::per_user(actor, user, || store.list_owner_caps(), |e| &e.user)
            .map(|envelopes| envelopes.iter().map(OwnerCapsView::of).collect());
        cx.audited_read(actor, "owner_caps.list", user, result)
    }
}

/// The envelope of the pair named by `user` and a client id or name.
fn require<S: ClientStore + OwnerCapsStore + ?Sized>(
    store: &S,
    user: &str,
    client: &str,
) -> Result<OwnerCaps, Failure> {
    let client_id = super::pair_client_id(store, client, || owner_caps_not_found(user, client))?;
    store.get_owner_caps(&UserId::new(user), &client_id)?.ok_or_else(|| owner_caps_not_found(user, client))
}
