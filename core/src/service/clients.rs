//! Enrollment, re-enrollment, redeem, rename, revoke, delete and client listings.

use std::time::Duration;

use std::sync::Arc;

use super::{Cx, Effect, ServerIdentity, client_not_found, find_client, random_bytes, resolve_endpoint};
use crate::client::{Client, Enrollment};
use crate::config::ServerSettings;
use crate::enroll::EnrollUri;
use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, ClientName, Timestamp};
use crate::policy::{Action, Actor, authorize};
use crate::ports::{
    ClientStore, DisconnectReason, EnrollmentStore, Entropy, GrantStore, RuleStore, SessionInfo, StateStore,
    Write,
};
use crate::secret::Secret;

/// A freshly issued enrollment.
#[derive(Debug, Clone)]
pub struct EnrollTicket {
    /// The client it enrolls (new, or existing for a re-enrollment).
    pub client: Client,
    /// The URI to hand to the edge host; holds the plaintext code.
    pub uri: EnrollUri,
    /// When the code stops working.
    pub expires_at: Timestamp,
}

/// The result of a successful redeem: everything a bundle needs.
#[derive(Debug, Clone)]
pub struct Redeemed {
    /// The client.
    pub client: Client,
    /// The new bearer token.
    pub token: Secret,
    /// The endpoint frozen in the enrollment.
    pub endpoint: String,
}

/// A client with its live connection state, for listings.
#[derive(Debug, Clone)]
pub struct ClientView {
    /// The stored record.
    pub client: Client,
    /// The live session, if connected.
    pub session: Option<SessionInfo>,
    /// How many of its rules the caller may see (every rule for a superadmin, their own for a
    /// user).
    pub n_rules: usize,
}

/// Clients: enrollment, redeem, revoke, rename, delete, listings, and the server side of
/// their control streams.
#[derive(Clone)]
pub struct ClientService {
    settings: ServerSettings,
    identity: ServerIdentity,
    entropy: Arc<dyn Entropy>,
}

impl ClientService {
    /// A client service for a server with `settings` and `identity`.
    pub fn new(settings: ServerSettings, identity: ServerIdentity, entropy: Arc<dyn Entropy>) -> Self {
        ClientService { settings, identity, entropy }
    }

    /// The settings the server runs with.
    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// Issues an enrollment code for `name`, creating the client if the name is new. For an
    /// existing client the code re-enrolls it: redeeming rotates its token.
    pub fn enroll_client<S: ClientStore + StateStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        name: &str,
        ttl_secs: Option<u64>,
    ) -> Result<EnrollTicket, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let name = ClientName::parse(name)?;
            self.issue_enrollment(cx, ClientRef::Name(name), ttl_secs)
        })();
        cx.audited(actor, "client.enroll", Some(name), result)
    }

    /// Issues a re-enrollment code for an existing client, found by id or name.
    pub fn reenroll_client<S: ClientStore + StateStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        reference: &str,
        ttl_secs: Option<u64>,
    ) -> Result<EnrollTicket, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let client = find_client(cx.store, reference)?;
            self.issue_enrollment(cx, ClientRef::Existing(client.id), ttl_secs)
        })();
        cx.audited(actor, "client.reenroll", Some(reference), result)
    }

    fn issue_enrollment<S: ClientStore + StateStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        client_ref: ClientRef,
        ttl_secs: Option<u64>,
    ) -> Result<EnrollTicket, Failure> {
        let ttl: Duration = self.settings.enrollment_ttl_for(ttl_secs)?;
        let resolution = resolve_endpoint(cx.store, &self.settings, &self.identity)?;
        let endpoint = resolution.effective.ok_or_else(|| {
            Failure::new(
                ErrorCode::EndpointNotInCertSan,
                resolution.diagnostic.unwrap_or_else(|| "no advertised endpoint".into()),
            )
        })?;
        let now = cx.now;
        let code = Secret::from_entropy(&random_bytes::<20>(&*self.entropy));
        let mut writes = Vec::with_capacity(2);
        let existing = match &client_ref {
            ClientRef::Name(name) => cx.store.client_by_name(name)?,
            ClientRef::Existing(id) => Some(
                cx.store
                    .get_client(id)?
                    .ok_or_else(|| Failure::new(ErrorCode::ClientNotFound, format!("no client {id}")))?,
            ),
        };
        let client = match (existing, client_ref) {
            (Some(existing), _) => existing,
            (None, ClientRef::Name(name)) => {
                let client = Client {
                    id: ClientId::from_random(random_bytes(&*self.entropy)),
                    name,
                    token: None,
                    revoked_at: None,
                    created_at: now,
                    last_seen_at: None,
                    version: None,
                };
                writes.push(Write::PutClient(client.clone()));
                client
            }
            (None, ClientRef::Existing(id)) => {
                return Err(Failure::new(ErrorCode::ClientNotFound, format!("no client {id}")));
            }
        };
        let expires_at = now.plus(ttl);
        writes.push(Write::PutEnrollment(Enrollment {
            code_hash: code.hash(),
            client: client.id.clone(),
            created_at: now,
            expires_at,
            endpoint: endpoint.to_string(),
            consumed_at: None,
        }));
        cx.stage(writes);
        let uri =
            EnrollUri { endpoint: endpoint.to_string(), pin_sha256: self.identity.cert_sha256.clone(), code };
        Ok(EnrollTicket { client, uri, expires_at })
    }

    /// Redeems an enrollment code: issues a new token (replacing and disconnecting any
    /// earlier one) and consumes the code. A failed redeem changes nothing, so it can be
    /// retried with the same code.
    pub fn redeem<S: ClientStore + EnrollmentStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        code: &Secret,
    ) -> Result<Redeemed, Failure> {
        let now = cx.now;
        let mut enrollment = cx
            .store
            .get_enrollment(&code.hash())?
            .ok_or_else(|| Failure::new(ErrorCode::EnrollmentNotFound, "no enrollment matches this code"))?;
        if enrollment.consumed_at.is_some() {
            return Err(Failure::new(
                ErrorCode::EnrollmentConsumed,
                "this enrollment code was already redeemed",
            ));
        }
        if now >= enrollment.expires_at {
            return Err(Failure::new(ErrorCode::EnrollmentExpired, "this enrollment code has expired"));
        }
        let mut client = cx.store.get_client(&enrollment.client)?.ok_or_else(|| {
            Failure::new(ErrorCode::FailedPrecondition, "the client of this enrollment no longer exists")
        })?;
        let token_secret = Secret::from_entropy(&random_bytes::<32>(&*self.entropy));
        let token = Secret::new(format!("{}.{}", client.id, token_secret.expose()));
        let had_token = client.token.is_some();
        client.token = Some(token.hash());
        client.revoked_at = None;
        enrollment.consumed_at = Some(now);
        let endpoint = enrollment.endpoint.clone();
        cx.stage([Write::PutClient(client.clone()), Write::PutEnrollment(enrollment)]);
        if had_token {
            cx.effect(Effect::Disconnect {
                client: client.id.clone(),
                reason: DisconnectReason::TokenRotated,
            });
        }
        let (who, target) = (client.id.to_string(), client.name.to_string());
        cx.record(&who, "client.redeem", Some(&target), None, Ok(Redeemed { client, token, endpoint }))
    }

    /// Revokes a client's token and ends its live stream. Its rules stay stored and come
    /// back if it is re-enrolled.
    pub fn revoke<S: ClientStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        reference: &str,
    ) -> Result<Client, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let mut client = find_client(cx.store, reference)?;
            if client.revoked_at.is_none() {
                client.revoked_at = Some(cx.now);
                cx.stage([Write::PutClient(client.clone())]);
            }
            cx.effect(Effect::Disconnect {
                client: client.id.clone(),
                reason: DisconnectReason::TokenRevoked,
            });
            Ok(client)
        })();
        cx.audited(actor, "client.revoke", Some(reference), result)
    }

    /// Renames a client; its id, token, grants and rules stay as they are.
    pub fn rename_client<S: ClientStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        reference: &str,
        new_name: &str,
    ) -> Result<Client, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let name = ClientName::parse(new_name)?;
            let mut client = find_client(cx.store, reference)?;
            if client.name == name {
                return Ok(client);
            }
            if cx.store.client_by_name(&name)?.is_some() {
                return Err(Failure::new(ErrorCode::ClientNameTaken, format!("client name {name} is taken")));
            }
            client.name = name;
            cx.stage([Write::PutClient(client.clone())]);
            Ok(client)
        })();
        cx.audited(actor, "client.rename", Some(reference), result)
    }

    /// Deletes a revoked client with its rules and the grants that name it. A client that is
    /// not revoked is refused with `conflict.client_not_revoked`.
    pub fn delete_client<
        S: ClientStore
            + RuleStore
            + GrantStore
            + crate::ports::QuotaStore
            + crate::ports::OwnerCapsStore
            + ?Sized,
    >(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        reference: &str,
    ) -> Result<Client, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let client = find_client(cx.store, reference)?;
            if client.revoked_at.is_none() {
                return Err(Failure::new(
                    ErrorCode::ClientNotRevoked,
                    format!("revoke client {} before deleting it", client.name),
                ));
            }
            let rules = cx.store.rules_for_client(&client.id)?;
            let mut writes: Vec<Write> = rules.iter().map(|r| Write::DeleteRule(r.id)).collect();
            writes.extend(
                cx.store
                    .list_grants()?
                    .into_iter()
                    .filter(|g| g.client == crate::grant::GrantClient::Client(client.id.clone()))
                    .map(|g| Write::DeleteGrant(g.id)),
            );
            // Quotas on the client go with it.
            let quotas = crate::ports::QuotaStore::list_quotas(cx.store)?;
            writes.extend(
                quotas
                    .into_iter()
                    .filter(|q| q.client == client.id)
                    .map(|q| Write::DeleteQuota(q.user, q.client)),
            );
            // So do the owner envelopes there.
            let envelopes = crate::ports::OwnerCapsStore::list_owner_caps(cx.store)?;
            writes.extend(
                envelopes
                    .into_iter()
                    .filter(|e| e.client == client.id)
                    .map(|e| Write::DeleteOwnerCaps(e.user, e.client)),
            );
            writes.push(Write::DeleteClient(client.id.clone()));
            cx.stage(writes);
            cx.rules_deleted(&rules);
            cx.effect(Effect::Disconnect {
                client: client.id.clone(),
                reason: DisconnectReason::ClientDeleted,
            });
            Ok(client)
        })();
        cx.audited(actor, "client.delete", Some(reference), result)
    }

    /// The clients `actor` may see, with their connection state: every client for
    /// superadmins, the clients a grant names for users. A user's `n_rules` counts only
    /// their own rules.
    pub fn list_clients<S: ClientStore + RuleStore + GrantStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
    ) -> Result<Vec<ClientView>, Failure> {
        let (store, sessions) = (cx.store, cx.sessions);
        let result = (|| {
            authorize(actor, &Action::List)?;
            let grants = store.list_grants()?;
            // The store's counts are of every owner's rules: only a superadmin sees them.
            let counts = if actor.is_superadmin() { Some(store.rule_counts()?) } else { None };
            let mut views = Vec::new();
            for client in store.list_clients()? {
                if authorize(actor, &Action::ReadClient { client: &client.id, grants: &grants }).is_err() {
                    continue;
                }
                let n_rules = match &counts {
                    Some(counts) => counts.get(&client.id).copied().unwrap_or(0),
                    None => n_rules_seen(store, actor, &client.id)?,
                };
                views.push(ClientView { session: sessions.session(&client.id), n_rules, client });
            }
            Ok(views)
        })();
        cx.audited_read(actor, "client.list", None, result)
    }

    /// One client with its connection state; `n_rules` as in [`ClientService::list_clients`].
    pub fn get_client<S: ClientStore + RuleStore + GrantStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        reference: &str,
    ) -> Result<ClientView, Failure> {
        let (store, sessions) = (cx.store, cx.sessions);
        let result = (|| {
            authorize(actor, &Action::List)?;
            let client = find_client(store, reference)?;
            let grants = store.list_grants()?;
            authorize(actor, &Action::ReadClient { client: &client.id, grants: &grants })?;
            Ok(ClientView {
                session: sessions.session(&client.id),
                n_rules: n_rules_seen(store, actor, &client.id)?,
                client,
            })
        })();
        // A client no grant of the caller names answers exactly like a missing one.
        cx.audited_lookup(
            actor,
            "client.get",
            reference,
            result,
            &[ErrorCode::NotOwner, ErrorCode::ClientNotGranted],
            ErrorCode::ClientNotFound,
            || client_not_found(reference),
        )
    }
}

/// How many of `client`'s rules `actor` may see: all of them for a superadmin, their own
/// for a user, so a count never tells a user about other tenants' rules.
fn n_rules_seen<S: RuleStore + ?Sized>(
    store: &S,
    actor: &Actor,
    client: &ClientId,
) -> Result<usize, Failure> {
    let rules = store.rules_for_client(client)?;
    Ok(rules
        .iter()
        .filter(|rule| authorize(actor, &Action::AccessRule { owner: &rule.owner }).is_ok())
        .count())
}

/// Which client an enrollment is for.
enum ClientRef {
    /// By name, created when new.
    Name(ClientName),
    /// An existing client, by id.
    Existing(ClientId),
}
