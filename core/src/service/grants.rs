//! Grants: handing edge capacity to users, listing it, and taking it back — which removes
//! the rules that no remaining grant covers, on the clients too.

use super::{AccountService, Cx, find_client};
use crate::error::{ErrorCode, Failure};
use crate::grant::{Grant, GrantClient, protocol_set};
use crate::ids::{GrantId, UserId, quoted};
use crate::policy::{Action, Actor, Role, authorize, check_push};
use crate::ports::{ClientStore, GrantStore, RuleStore, UserStore, Write};
use crate::rule::{Protocol, Rule, parse_listen};

/// `POST /v1/grants`.
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// The user it is for.
    pub user: String,
    /// `*`, or a client id or name (stored as the id, so renames keep the grant).
    pub client: String,
    /// `PORT` or `START-END`.
    pub ports: String,
    /// Allowed protocols (at least one).
    pub protocols: Vec<Protocol>,
}

fn grant_not_found(id: &str) -> Failure {
    Failure::new(ErrorCode::GrantNotFound, format!("no grant {}", quoted(id)))
}

impl AccountService {
    /// Grants: every grant (or one user's) for superadmins; a user's own only for users.
    pub fn list_grants<S: GrantStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: Option<&str>,
    ) -> Result<Vec<Grant>, Failure> {
        let store = cx.store;
        let result = super::per_user(actor, user, || store.list_grants(), |g| &g.user);
        cx.audited_read(actor, "grant.list", user, result)
    }

    /// One grant: superadmins, or the user it is for.
    pub fn get_grant<S: GrantStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        id: &str,
    ) -> Result<Grant, Failure> {
        let store = cx.store;
        let result = (|| {
            authorize(actor, &Action::List)?;
            let grant = require_grant(store, id)?;
            authorize(actor, &Action::AccessAccount(&grant.user))?;
            Ok(grant)
        })();
        // Another user's grant answers exactly like a missing one.
        cx.audited_lookup(
            actor,
            "grant.get",
            id,
            result,
            &[ErrorCode::NotOwner],
            ErrorCode::GrantNotFound,
            || grant_not_found(id),
        )
    }

    /// Creates a grant for an existing user (superadmins only).
    pub fn create_grant<S: UserStore + ClientStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        new: &NewGrant,
    ) -> Result<Grant, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let ports = parse_listen(&new.ports)?;
            let protocols = protocol_set(new.protocols.clone())?;
            let user = cx.store.get_user(&UserId::new(new.user.as_str()))?.ok_or_else(|| {
                Failure::new(ErrorCode::UserNotFound, format!("no user {}", quoted(&new.user)))
            })?;
            let client = match new.client.as_str() {
                "*" => GrantClient::Any,
                reference => GrantClient::Client(find_client(cx.store, reference)?.id),
            };
            let grant = Grant {
                id: GrantId::from_random(self.random_bytes()),
                user: user.id,
                client,
                ports,
                protocols,
                created_at: cx.now,
            };
            cx.stage([Write::PutGrant(grant.clone())]);
            Ok(grant)
        })();
        let target = match &result {
            Ok(grant) => format!("{} {}", new.user, grant.id),
            Err(_) => new.user.clone(),
        };
        cx.audited(actor, "grant.create", Some(&target), result)
    }

    /// Revokes a grant and removes the rules of its user that no remaining grant covers;
    /// returns the grant and the removed rules.
    pub fn delete_grant<S: GrantStore + UserStore + RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        id: &str,
    ) -> Result<(Grant, Vec<Rule>), Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let store = cx.store;
            let grant = require_grant(store, id)?;
            let remaining: Vec<Grant> =
                store.list_grants()?.into_iter().filter(|g| g.id != grant.id).collect();
            let owner_is_user = store.get_user(&grant.user)?.is_some_and(|u| u.role == Role::User);
            let orphaned: Vec<Rule> = if owner_is_user {
                store
                    .list_rules()?
                    .into_iter()
                    .filter(|r| r.owner == grant.user)
                    .filter(|r| {
                        check_push(&remaining, &r.owner, &r.client, r.def.listen, r.def.protocol).is_err()
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let mut writes: Vec<Write> = orphaned.iter().map(|r| Write::DeleteRule(r.id)).collect();
            writes.push(Write::DeleteGrant(grant.id.clone()));
            cx.stage(writes);
            cx.rules_deleted(&orphaned);
            Ok((grant, orphaned))
        })();
        cx.audited(actor, "grant.delete", Some(id), result)
    }
}

fn require_grant<S: GrantStore + ?Sized>(store: &S, id: &str) -> Result<Grant, Failure> {
    GrantId::parse(id)
        .map(|gid| store.get_grant(&gid))
        .transpose()?
        .flatten()
        .ok_or_else(|| grant_not_found(id))
}
