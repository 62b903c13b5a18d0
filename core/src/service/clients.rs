//! Enrollment, redeem, revoke and client listings.

use std::time::Duration;

use super::ControlPlane;
use crate::client::{Client, Enrollment};
use crate::endpoint;
use crate::enroll::EnrollUri;
use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, ClientName, Timestamp};
use crate::policy::Actor;
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
        require_superadmin(actor)?;
        let name = ClientName::parse(name)?;
        let ttl: Duration = self.settings.enrollment_ttl_for(ttl_secs)?;
        let resolution = endpoint::resolve(
            None,
            self.settings.advertised_endpoint.as_ref(),
            self.identity.control_addr,
            &self.identity.sans,
        );
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
        let client = match self.store.client_by_name(&name)? {
            Some(existing) => existing,
            None => {
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
        require_superadmin(actor)?;
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
    }

    /// Every client with its connection state.
    pub fn list_clients(&self, actor: &Actor) -> Result<Vec<ClientView>, Failure> {
        require_superadmin(actor)?;
        let rules = self.store.list_rules()?;
        Ok(self
            .store
            .list_clients()?
            .into_iter()
            .map(|client| ClientView {
                session: self.link.session(&client.id),
                n_rules: rules.iter().filter(|r| r.client == client.id).count(),
                client,
            })
            .collect())
    }

    /// One client with its connection state.
    pub fn get_client(&self, actor: &Actor, reference: &str) -> Result<ClientView, Failure> {
        require_superadmin(actor)?;
        let client = self.find_client(reference)?;
        Ok(ClientView {
            session: self.link.session(&client.id),
            n_rules: self.store.rules_for_client(&client.id)?.len(),
            client,
        })
    }
}

pub(super) fn require_superadmin(actor: &Actor) -> Result<(), Failure> {
    if actor.is_superadmin() {
        Ok(())
    } else {
        Err(Failure::new(ErrorCode::NotOwner, "this operation needs superadmin rights"))
    }
}
