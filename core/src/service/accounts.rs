//! Users, their API tokens, Web login and logout, password changes, and onboarding of the
//! first superadmin.
//!
//! Invariants: a slow password hash is never computed while the write lock is held (checks
//! are repeated under the lock instead); a login for a missing user verifies against a dummy
//! hash, so it costs what a wrong password costs; every throttled attempt is checked before a
//! credential is looked at and its failure recorded durably before the answer.

use std::net::IpAddr;

use super::ControlPlane;
use crate::account::{
    ApiToken, PasswordHash, SESSION_TTL, User, WebSession, check_password_strength, credential_text,
};
use crate::error::{ErrorCode, Failure};
use crate::ids::{SessionId, Timestamp, TokenId, UserId};
use crate::policy::{Action, Actor, Role, authorize};
use crate::ports::Write;
use crate::rule::Rule;
use crate::secret::Secret;
use crate::settings::{Onboarding, SETUP_TOKEN_TTL};
use crate::throttle;

/// `POST /v1/users`: a new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The id (login name).
    pub id: String,
    /// Its role.
    pub role: Role,
    /// An initial password; without one the account is API-token-only until a reset.
    pub password: Option<String>,
}

/// An API token just minted: the record and the text, shown once.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// The stored record.
    pub token: ApiToken,
    /// The token text.
    pub secret: Secret,
}

/// A successful login: the session, its cookie value and its CSRF token (both shown once).
#[derive(Debug, Clone)]
pub struct LoginOutcome {
    /// The user.
    pub user: User,
    /// The stored session.
    pub session: WebSession,
    /// The cookie value.
    pub cookie: Secret,
    /// The CSRF token the client sends back in `X-CSRF-Token`.
    pub csrf: Secret,
}

/// The one answer to every failed login, whether or not the account exists.
fn wrong_login() -> Failure {
    Failure::new(ErrorCode::Unauthenticated, "wrong user id or password")
}

fn user_not_found(id: &str) -> Failure {
    Failure::new(ErrorCode::UserNotFound, format!("no user {id:?}"))
}

/// Throttle keys of one attempt: per subject and per remote address. The subject is keyed by
/// its hash, so whatever a caller typed as a user id is never stored.
fn throttle_keys(attempt: &str, subject: &str, remote: Option<IpAddr>) -> Vec<String> {
    let mut keys = vec![throttle::key(attempt, "subject", &crate::secret::sha256_hex(subject.as_bytes()))];
    if let Some(ip) = remote {
        keys.push(throttle::key(attempt, "ip", &ip.to_string()));
    }
    keys
}

impl ControlPlane {
    fn dummy_hash(&self) -> PasswordHash {
        self.dummy_hash
            .get_or_init(|| {
                let random = Secret::from_entropy(&self.random_bytes::<16>());
                // A hasher that fails here fails every login the same way, so any value works.
                self.hasher.hash(random.expose()).unwrap_or_else(|_| PasswordHash::new(""))
            })
            .clone()
    }

    /// Refuses the attempt while any of `keys` is locked.
    fn check_throttles(&self, keys: &[String]) -> Result<(), Failure> {
        let now = self.clock.now();
        for key in keys {
            if let Some(t) = self.store.get_throttle(key)?
                && let Err(retry_after) = t.check(now)
            {
                return Err(throttle::rate_limited(retry_after));
            }
        }
        Ok(())
    }

    /// Counts a failed attempt against every key, durably.
    fn throttle_failure(&self, keys: &[String]) -> Result<(), Failure> {
        let now = self.clock.now();
        let _guard = self.write_lock();
        let mut writes = Vec::with_capacity(keys.len());
        for key in keys {
            let mut t = self.store.get_throttle(key)?.unwrap_or_default();
            t.on_failure(now);
            writes.push(Write::PutThrottle(key.clone(), t));
        }
        self.store.commit(writes)?;
        Ok(())
    }

    /// Clears the subject's throttle after a success (the address keeps its record, so a
    /// guesser cannot reset it by logging into an account of their own).
    fn throttle_success(&self, subject_key: &str) -> Result<(), Failure> {
        let _guard = self.write_lock();
        if self.store.get_throttle(subject_key)?.is_some() {
            self.store.commit(vec![Write::DeleteThrottle(subject_key.to_owned())])?;
        }
        Ok(())
    }

    fn require_user(&self, id: &UserId) -> Result<User, Failure> {
        self.store.get_user(id)?.ok_or_else(|| user_not_found(id.as_str()))
    }

    // ----- onboarding ---------------------------------------------------------------------

    /// Where onboarding stands (public: the Web UI asks before anyone logs in).
    pub fn onboarding_status(&self) -> Result<Onboarding, Failure> {
        Ok(self.store.runtime_settings()?.onboarding)
    }

    /// Called at every server start: while onboarding is incomplete, issues a new setup
    /// token (only its hash is stored; the previous one stops working) that expires after
    /// 30 minutes. `None` once onboarding is complete.
    pub fn start_onboarding(&self) -> Result<Option<(Secret, Timestamp)>, Failure> {
        let _guard = self.write_lock();
        let mut settings = self.store.runtime_settings()?;
        if settings.onboarding.is_complete() {
            return Ok(None);
        }
        let token = Secret::from_entropy(&self.random_bytes::<24>());
        let expires_at = self.clock.now().plus(SETUP_TOKEN_TTL);
        settings.onboarding.setup_token = Some(token.hash());
        settings.onboarding.setup_expires_at = Some(expires_at);
        self.store.commit(vec![Write::PutSettings(settings)])?;
        Ok(Some((token, expires_at)))
    }

    /// Creates the first superadmin with a password, using the setup token printed at start,
    /// and closes onboarding for good. Of concurrent attempts with the right token exactly
    /// one succeeds; the others get `conflict.onboarding_closed`.
    pub fn complete_onboarding(
        &self,
        setup_token: &str,
        user_id: &str,
        password: &str,
        remote: Option<IpAddr>,
    ) -> Result<User, Failure> {
        let keys = throttle_keys("onboarding", "setup_token", remote);
        let result = (|| {
            self.check_throttles(&keys)?;
            let now = self.clock.now();
            if let Err(failure) =
                self.store.runtime_settings()?.onboarding.check_setup_token(setup_token, now)
            {
                if failure.code == ErrorCode::Unauthenticated {
                    self.throttle_failure(&keys)?;
                }
                return Err(failure);
            }
            let id = UserId::parse(user_id)?;
            check_password_strength(password)?;
            let hash = self.hasher.hash(password)?;
            let _guard = self.write_lock();
            let mut settings = self.store.runtime_settings()?;
            settings.onboarding.check_setup_token(setup_token, self.clock.now())?;
            if self.store.get_user(&id)?.is_some() {
                return Err(Failure::new(ErrorCode::UserExists, format!("user {id} already exists")));
            }
            let user = User {
                id,
                role: Role::Superadmin,
                password: Some(hash),
                must_change_password: false,
                created_at: now,
            };
            settings.onboarding =
                Onboarding { completed_at: Some(now), setup_token: None, setup_expires_at: None };
            self.store.commit(vec![Write::PutUser(user.clone()), Write::PutSettings(settings)])?;
            Ok(user)
        })();
        let subject = user_id_for_audit(user_id);
        self.record(subject, "auth.onboarding", Some(subject), remote, result)
    }

    // ----- login, logout, password --------------------------------------------------------

    /// Checks a user id and password and opens a Web session. Every failure is the same
    /// `unauthenticated`, whether or not the user exists; a throttled subject or address
    /// gets `rate_limited` before anything is checked.
    pub fn login(
        &self,
        user_id: &str,
        password: &str,
        remote: Option<IpAddr>,
    ) -> Result<LoginOutcome, Failure> {
        let keys = throttle_keys("login", user_id, remote);
        let result = (|| {
            self.check_throttles(&keys)?;
            let user = match UserId::parse(user_id) {
                Ok(id) => self.store.get_user(&id)?,
                Err(_) => None,
            };
            let verified = match user.as_ref().and_then(|u| u.password.as_ref()) {
                Some(hash) => self.hasher.verify(password, hash),
                None => {
                    // Same work as a real check, so timing does not tell whether the account exists.
                    let _ = self.hasher.verify(password, &self.dummy_hash());
                    false
                }
            };
            let Some(user) = user.filter(|_| verified) else {
                self.throttle_failure(&keys)?;
                return Err(wrong_login());
            };
            self.throttle_success(&keys[0])?;
            let now = self.clock.now();
            let id = SessionId::from_random(self.random_bytes());
            let cookie = credential_text(id.as_str(), &self.random_bytes::<32>());
            let csrf = Secret::from_entropy(&self.random_bytes::<32>());
            let session = WebSession {
                id,
                user: user.id.clone(),
                hash: cookie.hash(),
                csrf: csrf.hash(),
                created_at: now,
                expires_at: now.plus(SESSION_TTL),
            };
            let _guard = self.write_lock();
            let mut writes: Vec<Write> = self
                .store
                .list_sessions()?
                .into_iter()
                .filter(|s| s.user == user.id && !s.is_valid_at(now))
                .map(|s| Write::DeleteSession(s.id))
                .collect();
            writes.push(Write::PutSession(session.clone()));
            self.store.commit(writes)?;
            Ok(LoginOutcome { user, session, cookie, csrf })
        })();
        self.record(user_id_for_audit(user_id), "auth.login", None, remote, result)
    }

    /// Ends the Web session `actor` authenticated with; a bearer caller has nothing to end.
    pub fn logout(&self, actor: &Actor, session: Option<&SessionId>) -> Result<(), Failure> {
        let result = (|| {
            authorize(actor, &Action::ManageSelf)?;
            if let Some(id) = session {
                let _guard = self.write_lock();
                self.store.commit(vec![Write::DeleteSession(id.clone())])?;
            }
            Ok(())
        })();
        self.audited(actor, "auth.logout", None, result)
    }

    /// The caller's own account (allowed with a temporary password). The operator token is
    /// no account: it is described as a superadmin without a stored record.
    pub fn whoami(&self, actor: &Actor) -> Result<User, Failure> {
        authorize(actor, &Action::ManageSelf)?;
        match self.store.get_user(&actor.principal)? {
            Some(user) => Ok(user),
            None => Ok(User {
                id: actor.principal.clone(),
                role: actor.role,
                password: None,
                must_change_password: false,
                created_at: Timestamp::from_millis(0),
            }),
        }
    }

    /// Changes the caller's own password, proving the current one (throttled per subject
    /// and address). Clears the temporary-password mark and ends the caller's other sessions.
    pub fn change_password(
        &self,
        actor: &Actor,
        current: &str,
        new: &str,
        session: Option<&SessionId>,
    ) -> Result<(), Failure> {
        let keys = throttle_keys("password", actor.principal.as_str(), actor.remote);
        let result = (|| {
            authorize(actor, &Action::ManageSelf)?;
            self.check_throttles(&keys)?;
            let user = self.store.get_user(&actor.principal)?.ok_or_else(|| {
                Failure::new(ErrorCode::InvalidRequest, "this principal has no account to set a password on")
            })?;
            let verified = match &user.password {
                Some(hash) => self.hasher.verify(current, hash),
                None => {
                    let _ = self.hasher.verify(current, &self.dummy_hash());
                    false
                }
            };
            if !verified {
                self.throttle_failure(&keys)?;
                return Err(Failure::new(ErrorCode::Unauthenticated, "the current password is wrong"));
            }
            check_password_strength(new)?;
            let hash = self.hasher.hash(new)?;
            self.throttle_success(&keys[0])?;
            let _guard = self.write_lock();
            let mut user = self.require_user(&actor.principal)?;
            user.password = Some(hash);
            user.must_change_password = false;
            let mut writes: Vec<Write> = self
                .store
                .list_sessions()?
                .into_iter()
                .filter(|s| s.user == user.id && Some(&s.id) != session)
                .map(|s| Write::DeleteSession(s.id))
                .collect();
            writes.push(Write::PutUser(user));
            self.store.commit(writes)?;
            Ok(())
        })();
        self.audited(actor, "auth.password_change", Some(actor.principal.as_str()), result)
    }

    // ----- users --------------------------------------------------------------------------

    /// Every user (superadmins only).
    pub fn list_users(&self, actor: &Actor) -> Result<Vec<User>, Failure> {
        let result = authorize(actor, &Action::Administer).map_err(Failure::from);
        let result = result.and_then(|()| Ok(self.store.list_users()?));
        self.audited_read(actor, "user.list", None, result)
    }

    /// One user: superadmins, or the user themself.
    pub fn get_user(&self, actor: &Actor, id: &str) -> Result<User, Failure> {
        let result = (|| {
            let user_id = UserId::new(id);
            authorize(actor, &Action::AccessAccount(&user_id))?;
            self.require_user(&user_id)
        })();
        self.audited_read(actor, "user.get", Some(id), result)
    }

    /// Creates an account. Creating a superadmin completes onboarding if it was open.
    pub fn create_user(&self, actor: &Actor, new: &NewUser) -> Result<User, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let id = UserId::parse(&new.id)?;
            let password = match &new.password {
                Some(password) => {
                    check_password_strength(password)?;
                    Some(self.hasher.hash(password)?)
                }
                None => None,
            };
            let now = self.clock.now();
            let user = User { id, role: new.role, password, must_change_password: false, created_at: now };
            let _guard = self.write_lock();
            if self.store.get_user(&user.id)?.is_some() {
                return Err(Failure::new(ErrorCode::UserExists, format!("user {} already exists", user.id)));
            }
            let mut writes = vec![Write::PutUser(user.clone())];
            if user.role == Role::Superadmin {
                writes.extend(self.onboarding_completed(now)?);
            }
            self.store.commit(writes)?;
            Ok(user)
        })();
        self.audited(actor, "user.create", Some(&new.id), result)
    }

    /// The write that closes onboarding at `now`, if it is still open.
    pub(super) fn onboarding_completed(&self, now: Timestamp) -> Result<Option<Write>, Failure> {
        let mut settings = self.store.runtime_settings()?;
        if settings.onboarding.is_complete() {
            return Ok(None);
        }
        settings.onboarding =
            Onboarding { completed_at: Some(now), setup_token: None, setup_expires_at: None };
        Ok(Some(Write::PutSettings(settings)))
    }

    /// Deletes an account with its grants, API tokens, sessions and rules (the clients stop
    /// the rules). The last superadmin cannot be deleted.
    pub fn delete_user(&self, actor: &Actor, id: &str) -> Result<User, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let user_id = UserId::new(id);
            let (user, rules) = {
                let _guard = self.write_lock();
                let user = self.require_user(&user_id)?;
                let users = self.store.list_users()?;
                if user.role == Role::Superadmin
                    && !users.iter().any(|u| u.role == Role::Superadmin && u.id != user.id)
                {
                    return Err(Failure::new(
                        ErrorCode::LastSuperadmin,
                        "the last superadmin cannot be removed",
                    ));
                }
                let rules: Vec<Rule> =
                    self.store.list_rules()?.into_iter().filter(|r| r.owner == user.id).collect();
                let mut writes: Vec<Write> = rules.iter().map(|r| Write::DeleteRule(r.id)).collect();
                writes.extend(self.account_credentials(&user.id, true)?);
                writes.extend(
                    self.store
                        .list_grants()?
                        .into_iter()
                        .filter(|g| g.user == user.id)
                        .map(|g| Write::DeleteGrant(g.id)),
                );
                writes.push(Write::DeleteUser(user.id.clone()));
                self.store.commit(writes)?;
                (user, rules)
            };
            self.rules_deleted(&rules);
            Ok(user)
        })();
        self.audited(actor, "user.delete", Some(id), result)
    }

    /// Deletes of `user`'s sessions, and of its API tokens when `tokens` is set.
    fn account_credentials(&self, user: &UserId, tokens: bool) -> Result<Vec<Write>, Failure> {
        let mut writes: Vec<Write> = self
            .store
            .list_sessions()?
            .into_iter()
            .filter(|s| &s.user == user)
            .map(|s| Write::DeleteSession(s.id))
            .collect();
        if tokens {
            writes.extend(
                self.store
                    .list_api_tokens()?
                    .into_iter()
                    .filter(|t| &t.user == user)
                    .map(|t| Write::DeleteApiToken(t.id)),
            );
        }
        Ok(writes)
    }

    // ----- API tokens ---------------------------------------------------------------------

    /// A user's API tokens (records only; the texts were shown once).
    pub fn list_tokens(&self, actor: &Actor, user: &str) -> Result<Vec<ApiToken>, Failure> {
        let result = (|| {
            let user_id = UserId::new(user);
            authorize(actor, &Action::AccessAccount(&user_id))?;
            self.require_user(&user_id)?;
            Ok(self.store.list_api_tokens()?.into_iter().filter(|t| t.user == user_id).collect())
        })();
        self.audited_read(actor, "token.list", Some(user), result)
    }

    /// Mints an API token for `user` (superadmins, or the user themself).
    pub fn create_token(
        &self,
        actor: &Actor,
        user: &str,
        name: Option<&str>,
    ) -> Result<MintedToken, Failure> {
        let result = (|| {
            let user_id = UserId::new(user);
            authorize(actor, &Action::AccessAccount(&user_id))?;
            if let Some(name) = name
                && (name.is_empty() || name.len() > 64 || name.chars().any(char::is_control))
            {
                return Err(Failure::new(
                    ErrorCode::InvalidName,
                    "a token name has 1 to 64 printable characters",
                ));
            }
            let _guard = self.write_lock();
            self.require_user(&user_id)?;
            let id = TokenId::from_random(self.random_bytes());
            let secret = credential_text(id.as_str(), &self.random_bytes::<32>());
            let token = ApiToken {
                id,
                user: user_id,
                hash: secret.hash(),
                name: name.map(str::to_owned),
                created_at: self.clock.now(),
            };
            self.store.commit(vec![Write::PutApiToken(token.clone())])?;
            Ok(MintedToken { token, secret })
        })();
        let target = match &result {
            Ok(minted) => format!("{user} {}", minted.token.id),
            Err(_) => user.to_owned(),
        };
        self.audited(actor, "token.create", Some(&target), result)
    }

    /// Revokes one of `user`'s API tokens.
    pub fn revoke_token(&self, actor: &Actor, user: &str, token: &str) -> Result<(), Failure> {
        let result = (|| {
            let user_id = UserId::new(user);
            authorize(actor, &Action::AccessAccount(&user_id))?;
            let _guard = self.write_lock();
            let found = TokenId::parse(token)
                .map(|id| self.store.get_api_token(&id))
                .transpose()?
                .flatten()
                .filter(|t| t.user == user_id)
                .ok_or_else(|| {
                    Failure::new(ErrorCode::TokenNotFound, format!("user {user} has no token {token:?}"))
                })?;
            self.store.commit(vec![Write::DeleteApiToken(found.id)])?;
            Ok(())
        })();
        let shown = TokenId::parse(token).map_or_else(|| "?".to_owned(), |id| id.to_string());
        self.audited(actor, "token.revoke", Some(&format!("{user} {shown}")), result)
    }
}

/// The actor field of an anonymous attempt's audit record: the subject it named when that
/// is a well-formed id, else `anonymous` (so a mistyped password in the id field is not kept).
fn user_id_for_audit(user_id: &str) -> &str {
    if UserId::parse(user_id).is_ok() { user_id } else { "anonymous" }
}
