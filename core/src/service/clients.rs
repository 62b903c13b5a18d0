//! Enrollment, re-enrollment, redeem, rename, revoke, delete and client listings.

use std::time::Duration;

use super::ControlPlane;
use crate::client::{Client, Enrollment};
use crate::endpoint;
use crate::enroll::EnrollUri;
use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, ClientName, Timestamp};
use crate::policy::{Action, Actor, authorize};
use crate::ports::{DisconnectReason, SessionInfo, Write};
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
    /// How many rules it carries.
    pub n_rules: usize,
}

impl ControlPlane {
    /// Issues an enrollment code for `name`, creating the client if the name is new. For an
    /// existing client the code re-enrolls it: redeeming rotates its token.
    pub fn enroll_client(
        &self,
        actor: &Actor,
        name: &str,
        ttl_secs: Option<u64>,
    ) -> Result<EnrollTicket, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let name = ClientName::parse(name)?;
            self.issue_enrollment(ClientRef::Name(name), ttl_secs)
        })();
        self.audited(actor, "client.enroll", Some(name), result)
    }

    /// Issues a re-enrollment code for an existing client, found by id or name.
    pub fn reenroll_client(
        &self,
        actor: &Actor,
        reference: &str,
        ttl_secs: Option<u64>,
    ) -> Result<EnrollTicket, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let client = self.find_client(reference)?;
            self.issue_enrollment(ClientRef::Existing(client.id), ttl_secs)
        })();
        self.audited(actor, "client.reenroll", Some(reference), result)
    }

    fn issue_enrollment(
        &self,
        client_ref: ClientRef,
        ttl_secs: Option<u64>,
    ) -> Result<EnrollTicket, Failure> {
        let ttl: Duration = self.settings.enrollment_ttl_for(ttl_secs)?;
        let resolution = self.resolve_endpoint()?;
        let endpoint = resolution.effective.ok_or_else(|| {
            Failure::new(
                ErrorCode::EndpointNotInCertSan,
                resolution.diagnostic.unwrap_or_else(|| "no advertised endpoint".into()),
            )
        })?;
        let now = self.clock.now();
        let code = Secret::from_entropy(&self.random_bytes::<20>());
        let _guard = self.write_lock();
        let mut writes = Vec::with_capacity(2);
        let existing = match &client_ref {
            ClientRef::Name(name) => self.store.client_by_name(name)?,
            ClientRef::Existing(id) => Some(
                self.store
                    .get_client(id)?
                    .ok_or_else(|| Failure::new(ErrorCode::ClientNotFound, format!("no client {id}")))?,
            ),
        };
        let client = match (existing, client_ref) {
            (Some(existing), _) => existing,
            (None, ClientRef::Name(name)) => {
                let client = Client {
                    id: ClientId::from_random(self.random_bytes()),
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
        self.store.commit(writes)?;
        let uri =
            EnrollUri { endpoint: endpoint.to_string(), pin_sha256: self.identity.cert_sha256.clone(), code };
        Ok(EnrollTicket { client, uri, expires_at })
    }

    /// The advertised endpoint as enrollment sees it now: the stored override, the seed,
    /// the listener's address or loopback, checked against the certificate.
    pub(super) fn resolve_endpoint(&self) -> Result<endpoint::Resolution, Failure> {
        let stored = self.store.runtime_settings()?.advertised_endpoint;
        // A stored override was validated before it was written; one that no longer parses
        // (a hand-edited store) fails closed like an uncovered one.
        let override_ = match stored.as_deref().map(endpoint::Endpoint::parse) {
            None => None,
            Some(Ok(e)) => Some(e),
            Some(Err(failure)) => {
                return Ok(endpoint::Resolution {
                    effective: None,
                    source: endpoint::EndpointSource::Override,
                    diagnostic: Some(failure.message),
                });
            }
        };
        Ok(endpoint::resolve(
            override_.as_ref(),
            self.settings.advertised_endpoint.as_ref(),
            self.identity.control_addr,
            &self.identity.sans,
        ))
    }

    /// Redeems an enrollment code: issues a new token (replacing and disconnecting any
    /// earlier one) and consumes the code. A failed redeem changes nothing, so it can be
    /// retried with the same code.
    pub fn redeem(&self, code: &Secret) -> Result<Redeemed, Failure> {
        let now = self.clock.now();
        let token_secret = Secret::from_entropy(&self.random_bytes::<32>());
        let (client, token, endpoint, had_token) = {
            let _guard = self.write_lock();
            let mut enrollment = self.store.get_enrollment(&code.hash())?.ok_or_else(|| {
                Failure::new(ErrorCode::EnrollmentNotFound, "no enrollment matches this code")
            })?;
            if enrollment.consumed_at.is_some() {
                return Err(Failure::new(
                    ErrorCode::EnrollmentConsumed,
                    "this enrollment code was already redeemed",
                ));
            }
            if now >= enrollment.expires_at {
                return Err(Failure::new(ErrorCode::EnrollmentExpired, "this enrollment code has expired"));
            }
            let mut client = self.store.get_client(&enrollment.client)?.ok_or_else(|| {
                Failure::new(ErrorCode::FailedPrecondition, "the client of this enrollment no longer exists")
            })?;
            let token = Secret::new(format!("{}.{}", client.id, token_secret.expose()));
            let had_token = client.token.is_some();
            client.token = Some(token.hash());
            client.revoked_at = None;
            enrollment.consumed_at = Some(now);
            let endpoint = enrollment.endpoint.clone();
            self.store.commit(vec![Write::PutClient(client.clone()), Write::PutEnrollment(enrollment)])?;
            (client, token, endpoint, had_token)
        };
        if had_token {
            self.link.disconnect(&client.id, DisconnectReason::TokenRotated);
        }
        Ok(Redeemed { client, token, endpoint })
    }

    /// Revokes a client's token and ends its live stream. Its rules stay stored and come
    /// back if it is re-enrolled.
    pub fn revoke(&self, actor: &Actor, reference: &str) -> Result<Client, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let client = {
                let _guard = self.write_lock();
                let mut client = self.find_client(reference)?;
                if client.revoked_at.is_none() {
                    client.revoked_at = Some(self.clock.now());
                    self.store.commit(vec![Write::PutClient(client.clone())])?;
                }
                client
            };
            self.link.disconnect(&client.id, DisconnectReason::TokenRevoked);
            Ok(client)
        })();
        self.audited(actor, "client.revoke", Some(reference), result)
    }

    /// Renames a client; its id, token, grants and rules stay as they are.
    pub fn rename_client(&self, actor: &Actor, reference: &str, new_name: &str) -> Result<Client, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let name = ClientName::parse(new_name)?;
            let _guard = self.write_lock();
            let mut client = self.find_client(reference)?;
            if client.name == name {
                return Ok(client);
            }
            if self.store.client_by_name(&name)?.is_some() {
                return Err(Failure::new(ErrorCode::ClientNameTaken, format!("client name {name} is taken")));
            }
            client.name = name;
            self.store.commit(vec![Write::PutClient(client.clone())])?;
            Ok(client)
        })();
        self.audited(actor, "client.rename", Some(reference), result)
    }

    /// Deletes a revoked client with its rules and the grants that name it. A client that is
    /// not revoked is refused with `conflict.client_not_revoked`.
    pub fn delete_client(&self, actor: &Actor, reference: &str) -> Result<Client, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let (client, rules) = {
                let _guard = self.write_lock();
                let client = self.find_client(reference)?;
                if client.revoked_at.is_none() {
                    return Err(Failure::new(
                        ErrorCode::ClientNotRevoked,
                        format!("revoke client {} before deleting it", client.name),
                    ));
                }
                let rules = self.store.rules_for_client(&client.id)?;
                let mut writes: Vec<Write> = rules.iter().map(|r| Write::DeleteRule(r.id)).collect();
                writes.extend(
                    self.store
                        .list_grants()?
                        .into_iter()
                        .filter(|g| g.client == crate::grant::GrantClient::Client(client.id.clone()))
                        .map(|g| Write::DeleteGrant(g.id)),
                );
                writes.push(Write::DeleteClient(client.id.clone()));
                self.store.commit(writes)?;
                (client, rules)
            };
            self.rules_deleted(&rules);
            self.link.disconnect(&client.id, DisconnectReason::ClientDeleted);
            Ok(client)
        })();
        self.audited(actor, "client.delete", Some(reference), result)
    }

    /// The clients `actor` may see, with their connection state: every client for
    /// superadmins, the clients a grant names for users.
    pub fn list_clients(&self, actor: &Actor) -> Result<Vec<ClientView>, Failure> {
        let result = (|| {
            authorize(actor, &Action::List)?;
            let rules = self.store.list_rules()?;
            let grants = self.store.list_grants()?;
            Ok(self
                .store
                .list_clients()?
                .into_iter()
                .filter(|client| {
                    authorize(actor, &Action::ReadClient { client: &client.id, grants: &grants }).is_ok()
                })
                .map(|client| ClientView {
                    session: self.link.session(&client.id),
                    n_rules: rules.iter().filter(|r| r.client == client.id).count(),
                    client,
                })
                .collect())
        })();
        self.audited_read(actor, "client.list", None, result)
    }

    /// One client with its connection state.
    pub fn get_client(&self, actor: &Actor, reference: &str) -> Result<ClientView, Failure> {
        let result = (|| {
            authorize(actor, &Action::List)?;
            let client = self.find_client(reference)?;
            let grants = self.store.list_grants()?;
            authorize(actor, &Action::ReadClient { client: &client.id, grants: &grants })?;
            Ok(ClientView {
                session: self.link.session(&client.id),
                n_rules: self.store.rules_for_client(&client.id)?.len(),
                client,
            })
        })();
        self.audited_read(actor, "client.get", Some(reference), result)
    }
}

/// Which client an enrollment is for.
enum ClientRef {
    /// By name, created when new.
    Name(ClientName),
    /// An existing client, by id.
    Existing(ClientId),
}
