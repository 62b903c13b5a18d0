//! Users, their API tokens, Web login and logout, password changes, and onboarding of the
//! first superadmin.
//!
//! Invariants: a slow password hash is never computed inside a write transaction (it is the
//! `prepare_*` half of a use case, and the `finish_*` half repeats the cheap checks); a login for a missing user verifies against a dummy
//! hash, so it costs what a wrong password costs; every throttled attempt is checked before a
//! credential is looked at and its failure recorded durably before the answer.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use super::{Cx, random_bytes};
use crate::account::{
    ApiToken, PasswordHash, SESSION_TTL, User, WebSession, check_password_strength, credential_text,
};
use crate::error::{ErrorCode, Failure};
use crate::ids::{SessionId, Timestamp, TokenId, UserId, quoted};
use crate::policy::{Action, Actor, Role, authorize};
use crate::ports::{
    CredentialStore, Entropy, GrantStore, PasswordHasher, RuleStore, StateStore, UserStore, Write,
};
use crate::rule::Rule;
use crate::secret::Secret;
use crate::secret::SecretHash;
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
    Failure::new(ErrorCode::UserNotFound, format!("no user {}", quoted(id)))
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

/// The slow half of a credential check (a password verified or hashed), done outside the
/// write transaction and handed to the matching `finish_*` step.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The checked account (`None`: the password did not match), or why the attempt stops.
    verdict: Result<Option<User>, Failure>,
    /// A new password's hash.
    hash: Option<PasswordHash>,
    /// The refusal counts as a failed attempt against the throttles.
    counts: bool,
}

impl Prepared {
    fn refused(failure: Failure) -> Self {
        Prepared { verdict: Err(failure), hash: None, counts: false }
    }
    fn checked(verdict: Result<Option<User>, Failure>, hash: Option<PasswordHash>) -> Self {
        Prepared { verdict, hash, counts: false }
    }
}

/// Accounts: users, grants, API tokens, Web login and sessions, onboarding, and the
/// authentication of operator requests.
pub struct AccountService {
    pub(super) entropy: Arc<dyn Entropy>,
    hasher: Arc<dyn PasswordHasher>,
    pub(super) operator_token: SecretHash,
    /// A hash of a random password, verified against when a login names no account, so a
    /// missing user costs the same time as a wrong password.
    dummy_hash: OnceLock<PasswordHash>,
    /// What unauthenticated requests may still leave in the audit trail, per source.
    pub(super) anonymous: std::sync::Mutex<crate::audit::AnonymousBudget>,
}

fn budget(policy: &crate::config::AuditPolicy) -> std::sync::Mutex<crate::audit::AnonymousBudget> {
    std::sync::Mutex::new(crate::audit::AnonymousBudget::new(
        policy.anonymous_burst,
        policy.anonymous_per_minute,
        policy.anonymous_sources,
    ))
}

impl AccountService {
    /// An account service; `operator_token` is the hash of the server's operator token.
    pub fn new(
        entropy: Arc<dyn Entropy>,
        hasher: Arc<dyn PasswordHasher>,
        operator_token: SecretHash,
    ) -> Self {
        let policy = crate::config::AuditPolicy::default();
        AccountService {
            entropy,
            hasher,
            operator_token,
            dummy_hash: OnceLock::new(),
            anonymous: budget(&policy),
        }
    }

    /// The same service with `policy`'s budget for unauthenticated requests' audit records.
    pub fn with_audit_policy(mut self, policy: &crate::config::AuditPolicy) -> Self {
        self.anonymous = budget(policy);
        self
    }

    /// Audit records of unauthenticated requests refused by the per-source budget so far.
    pub fn audit_rows_dropped(&self) -> u64 {
        self.anonymous.lock().unwrap_or_else(std::sync::PoisonError::into_inner).dropped()
    }

    pub(super) fn random_bytes<const N: usize>(&self) -> [u8; N] {
        random_bytes(&*self.entropy)
    }

    fn dummy_hash(&self) -> PasswordHash {
        self.dummy_hash
            .get_or_init(|| {
                let random = Secret::from_entropy(&self.random_bytes::<16>());
                // A hasher that fails here fails every login the same way, so any value works.
                self.hasher.hash(random.expose()).unwrap_or_else(|_| PasswordHash::new(""))
            })
            .clone()
    }

    /// Verifies `password` against `user`'s hash, or against the dummy hash when there is no
    /// account or no password, so both cost the same.
    fn verify(&self, user: Option<User>, password: &str) -> Option<User> {
        match user.as_ref().and_then(|u| u.password.as_ref()) {
            Some(hash) => self.hasher.verify(password, hash).then_some(user).flatten(),
            None => {
                let _ = self.hasher.verify(password, &self.dummy_hash());
                None
            }
        }
    }

    // ----- onboarding ---------------------------------------------------------------------

    /// Where onboarding stands (public: the Web UI asks before anyone logs in).
    pub fn onboarding_status<S: StateStore + ?Sized>(&self, store: &S) -> Result<Onboarding, Failure> {
        Ok(store.runtime_settings()?.onboarding)
    }

    /// Called at every server start: while onboarding is incomplete, issues a new setup
    /// token (only its hash is stored; the previous one stops working) that expires after
    /// 30 minutes. `None` once onboarding is complete.
    pub fn start_onboarding<S: StateStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
    ) -> Result<Option<(Secret, Timestamp)>, Failure> {
        let mut settings = cx.store.runtime_settings()?;
        if settings.onboarding.is_complete() {
            return Ok(None);
        }
        let token = Secret::from_entropy(&self.random_bytes::<24>());
        let expires_at = cx.now.plus(SETUP_TOKEN_TTL);
        settings.onboarding.setup_token = Some(token.hash());
        settings.onboarding.setup_expires_at = Some(expires_at);
        cx.stage([Write::PutSettings(settings)]);
        Ok(Some((token, expires_at)))
    }

    /// The slow half of onboarding: throttles, the setup token and the password's hash.
    pub fn prepare_onboarding<S: StateStore + ?Sized>(
        &self,
        store: &S,
        setup_token: &str,
        user_id: &str,
        password: &str,
        remote: Option<IpAddr>,
        now: Timestamp,
    ) -> Prepared {
        let keys = throttle_keys("onboarding", "setup_token", remote);
        let checked = (|| {
            check_throttles(store, &keys, now)?;
            match store.runtime_settings()?.onboarding.check_setup_token(setup_token, now) {
                Err(failure) if failure.code == ErrorCode::Unauthenticated => {
                    return Ok(Prepared { verdict: Err(failure), hash: None, counts: true });
                }
                other => other?,
            }
            UserId::parse(user_id)?;
            check_password_strength(password)?;
            Ok(Prepared::checked(Ok(None), Some(self.hasher.hash(password)?)))
        })();
        checked.unwrap_or_else(Prepared::refused)
    }

    /// Creates the first superadmin with a password, using the setup token printed at start,
    /// and closes onboarding for good. Of concurrent attempts with the right token exactly
    /// one succeeds; the others get `conflict.onboarding_closed`.
    pub fn finish_onboarding<S: StateStore + UserStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        setup_token: &str,
        user_id: &str,
        remote: Option<IpAddr>,
        prepared: Prepared,
    ) -> Result<User, Failure> {
        let keys = throttle_keys("onboarding", "setup_token", remote);
        let result = (|| {
            if prepared.counts {
                throttle_failure(cx, &keys)?;
            }
            prepared.verdict?;
            let hash = prepared
                .hash
                .ok_or_else(|| Failure::new(ErrorCode::Internal, "onboarding was not prepared"))?;
            let now = cx.now;
            let id = UserId::parse(user_id)?;
            let mut settings = cx.store.runtime_settings()?;
            settings.onboarding.check_setup_token(setup_token, now)?;
            if cx.store.get_user(&id)?.is_some() {
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
            cx.stage([Write::PutUser(user.clone()), Write::PutSettings(settings)]);
            Ok(user)
        })();
        let subject = user_id_for_audit(user_id);
        cx.record(subject, "auth.onboarding", Some(subject), remote, result)
    }

    // ----- login, logout, password --------------------------------------------------------

    /// The slow half of a login: throttles, then the password check.
    pub fn prepare_login<S: StateStore + UserStore + ?Sized>(
        &self,
        store: &S,
        user_id: &str,
        password: &str,
        remote: Option<IpAddr>,
        now: Timestamp,
    ) -> Prepared {
        let keys = throttle_keys("login", user_id, remote);
        let checked = (|| {
            check_throttles(store, &keys, now)?;
            let user = match UserId::parse(user_id) {
                Ok(id) => store.get_user(&id)?,
                Err(_) => None,
            };
            Ok(self.verify(user, password))
        })();
        Prepared::checked(checked, None)
    }

    /// Opens a Web session for a checked login. Every failure is the same
    /// `unauthenticated`, whether or not the user exists; a throttled subject or address
    /// gets `rate_limited` before anything is checked.
    pub fn finish_login<S: StateStore + CredentialStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        user_id: &str,
        remote: Option<IpAddr>,
        prepared: Prepared,
    ) -> Result<LoginOutcome, Failure> {
        let keys = throttle_keys("login", user_id, remote);
        let result = (|| {
            let Some(user) = prepared.verdict? else {
                throttle_failure(cx, &keys)?;
                return Err(wrong_login());
            };
            throttle_success(cx, &keys[0])?;
            let now = cx.now;
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
            let mut writes: Vec<Write> = cx
                .store
                .list_sessions()?
                .into_iter()
                .filter(|s| s.user == user.id && !s.is_valid_at(now))
                .map(|s| Write::DeleteSession(s.id))
                .collect();
            writes.push(Write::PutSession(session.clone()));
            cx.stage(writes);
            Ok(LoginOutcome { user, session, cookie, csrf })
        })();
        cx.record(user_id_for_audit(user_id), "auth.login", None, remote, result)
    }

    /// Ends the Web session `actor` authenticated with; a bearer caller has nothing to end.
    pub fn logout<S: ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        session: Option<&SessionId>,
    ) -> Result<(), Failure> {
        let result = authorize(actor, &Action::ManageSelf).map_err(Failure::from);
        if result.is_ok()
            && let Some(id) = session
        {
            cx.stage([Write::DeleteSession(id.clone())]);
        }
        cx.audited(actor, "auth.logout", None, result)
    }

    /// The caller's own account (allowed with a temporary password). The operator token is
    /// no account: it is described as a superadmin without a stored record.
    pub fn whoami<S: UserStore + ?Sized>(&self, store: &S, actor: &Actor) -> Result<User, Failure> {
        authorize(actor, &Action::ManageSelf)?;
        match store.get_user(&actor.principal)? {
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

    /// The slow half of a password change: throttles, the current password, the new hash.
    pub fn prepare_password_change<S: StateStore + UserStore + ?Sized>(
        &self,
        store: &S,
        actor: &Actor,
        current: &str,
        new: &str,
        now: Timestamp,
    ) -> Prepared {
        let keys = throttle_keys("password", actor.principal.as_str(), actor.remote);
        let checked = (|| {
            authorize(actor, &Action::ManageSelf)?;
            check_throttles(store, &keys, now)?;
            let user = store.get_user(&actor.principal)?.ok_or_else(|| {
                Failure::new(ErrorCode::InvalidRequest, "this principal has no account to set a password on")
            })?;
            let Some(user) = self.verify(Some(user), current) else { return Ok((None, None)) };
            check_password_strength(new)?;
            Ok((Some(user), Some(self.hasher.hash(new)?)))
        })();
        match checked {
            Ok((user, hash)) => Prepared::checked(Ok(user), hash),
            Err(failure) => Prepared::refused(failure),
        }
    }

    /// Changes the caller's own password, proving the current one (throttled per subject
    /// and address). Clears the temporary-password mark and ends the caller's other sessions.
    pub fn finish_password_change<S: StateStore + UserStore + CredentialStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        session: Option<&SessionId>,
        prepared: Prepared,
    ) -> Result<(), Failure> {
        let keys = throttle_keys("password", actor.principal.as_str(), actor.remote);
        let result = (|| {
            let (Some(_), Some(hash)) = (prepared.verdict?, prepared.hash) else {
                throttle_failure(cx, &keys)?;
                return Err(Failure::new(ErrorCode::Unauthenticated, "the current password is wrong"));
            };
            throttle_success(cx, &keys[0])?;
            let mut user = require_user(cx.store, &actor.principal)?;
            user.password = Some(hash);
            user.must_change_password = false;
            let mut writes: Vec<Write> = cx
                .store
                .list_sessions()?
                .into_iter()
                .filter(|s| s.user == user.id && Some(&s.id) != session)
                .map(|s| Write::DeleteSession(s.id))
                .collect();
            writes.push(Write::PutUser(user));
            cx.stage(writes);
            Ok(())
        })();
        cx.audited(actor, "auth.password_change", Some(actor.principal.as_str()), result)
    }

    // ----- users --------------------------------------------------------------------------

    /// Every user (superadmins only).
    pub fn list_users<S: UserStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
    ) -> Result<Vec<User>, Failure> {
        let result = authorize(actor, &Action::Administer).map_err(Failure::from);
        let result = result.and_then(|()| Ok(cx.store.list_users()?));
        cx.audited_read(actor, "user.list", None, result)
    }

    /// One user: superadmins, or the user themself.
    pub fn get_user<S: UserStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        id: &str,
    ) -> Result<User, Failure> {
        let store = cx.store;
        let result = (|| {
            let user_id = UserId::new(id);
            authorize(actor, &Action::AccessAccount(&user_id))?;
            require_user(store, &user_id)
        })();
        cx.audited_read(actor, "user.get", Some(id), result)
    }

    /// The slow half of creating an account: the initial password's hash, if any.
    pub fn prepare_new_user(&self, actor: &Actor, new: &NewUser) -> Prepared {
        let checked = (|| {
            authorize(actor, &Action::Administer)?;
            UserId::parse(&new.id)?;
            match &new.password {
                Some(password) => {
                    check_password_strength(password)?;
                    Ok(Some(self.hasher.hash(password)?))
                }
                None => Ok(None),
            }
        })();
        match checked {
            Ok(hash) => Prepared::checked(Ok(None), hash),
            Err(failure) => Prepared::refused(failure),
        }
    }

    /// Creates an account. Creating a superadmin completes onboarding if it was open.
    pub fn create_user<S: UserStore + StateStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        new: &NewUser,
        prepared: Prepared,
    ) -> Result<User, Failure> {
        let result = (|| {
            prepared.verdict?;
            let id = UserId::parse(&new.id)?;
            let user = User {
                id,
                role: new.role,
                password: prepared.hash,
                must_change_password: false,
                created_at: cx.now,
            };
            if cx.store.get_user(&user.id)?.is_some() {
                return Err(Failure::new(ErrorCode::UserExists, format!("user {} already exists", user.id)));
            }
            let mut writes = vec![Write::PutUser(user.clone())];
            if user.role == Role::Superadmin {
                writes.extend(onboarding_completed(cx.store, cx.now)?);
            }
            cx.stage(writes);
            Ok(user)
        })();
        cx.audited(actor, "user.create", Some(&new.id), result)
    }

    /// Deletes an account with its grants, API tokens, sessions and rules (the clients stop
    /// the rules). The last superadmin cannot be deleted.
    pub fn delete_user<
        S: UserStore
            + RuleStore
            + GrantStore
            + CredentialStore
            + crate::ports::QuotaStore
            + crate::ports::OwnerCapsStore
            + ?Sized,
    >(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        id: &str,
    ) -> Result<User, Failure> {
        let result = (|| {
            authorize(actor, &Action::Administer)?;
            let user_id = UserId::new(id);
            let store = cx.store;
            let user = require_user(store, &user_id)?;
            let users = store.list_users()?;
            if user.role == Role::Superadmin
                && !users.iter().any(|u| u.role == Role::Superadmin && u.id != user.id)
            {
                return Err(Failure::new(ErrorCode::LastSuperadmin, "the last superadmin cannot be removed"));
            }
            let rules: Vec<Rule> = store.list_rules()?.into_iter().filter(|r| r.owner == user.id).collect();
            let mut writes: Vec<Write> = rules.iter().map(|r| Write::DeleteRule(r.id)).collect();
            writes.extend(account_credentials(store, &user.id, true)?);
            writes.extend(
                store
                    .list_grants()?
                    .into_iter()
                    .filter(|g| g.user == user.id)
                    .map(|g| Write::DeleteGrant(g.id)),
            );
            // The user's quotas go with them.
            let quotas = crate::ports::QuotaStore::list_quotas(cx.store)?;
            writes.extend(
                quotas
                    .into_iter()
                    .filter(|q| q.user == user.id)
                    .map(|q| Write::DeleteQuota(q.user, q.client)),
            );
            // And their envelopes.
            let envelopes = crate::ports::OwnerCapsStore::list_owner_caps(cx.store)?;
            writes.extend(
                envelopes
                    .into_iter()
                    .filter(|e| e.user == user.id)
                    .map(|e| Write::DeleteOwnerCaps(e.user, e.client)),
            );
            writes.push(Write::DeleteUser(user.id.clone()));
            cx.stage(writes);
            cx.rules_deleted(&rules);
            Ok(user)
        })();
        cx.audited(actor, "user.delete", Some(id), result)
    }

    // ----- API tokens ---------------------------------------------------------------------

    /// A user's API tokens (records only; the texts were shown once).
    pub fn list_tokens<S: UserStore + CredentialStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: &str,
    ) -> Result<Vec<ApiToken>, Failure> {
        let store = cx.store;
        let result = (|| {
            let user_id = UserId::new(user);
            authorize(actor, &Action::AccessAccount(&user_id))?;
            require_user(store, &user_id)?;
            Ok(store.list_api_tokens()?.into_iter().filter(|t| t.user == user_id).collect())
        })();
        cx.audited_read(actor, "token.list", Some(user), result)
    }

    /// Mints an API token for `user` (superadmins, or the user themself).
    pub fn create_token<S: UserStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: &str,
        name: Option<&str>,
    ) -> Result<MintedToken, Failure> {
        let result = (|| {
            let user_id = UserId::new(user);
            authorize(actor, &Action::AccessAccount(&user_id))?;
            if let Some(name) = name {
                crate::ids::check_label("token name", name)?;
            }
            require_user(cx.store, &user_id)?;
            let id = TokenId::from_random(self.random_bytes());
            let secret = credential_text(id.as_str(), &self.random_bytes::<32>());
            let token = ApiToken {
                id,
                user: user_id,
                hash: secret.hash(),
                name: name.map(str::to_owned),
                created_at: cx.now,
            };
            cx.stage([Write::PutApiToken(token.clone())]);
            Ok(MintedToken { token, secret })
        })();
        let target = match &result {
            Ok(minted) => format!("{user} {}", minted.token.id),
            Err(_) => user.to_owned(),
        };
        cx.audited(actor, "token.create", Some(&target), result)
    }

    /// Revokes one of `user`'s API tokens.
    pub fn revoke_token<S: CredentialStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        user: &str,
        token: &str,
    ) -> Result<(), Failure> {
        let result = (|| {
            let user_id = UserId::new(user);
            authorize(actor, &Action::AccessAccount(&user_id))?;
            let found = TokenId::parse(token)
                .map(|id| cx.store.get_api_token(&id))
                .transpose()?
                .flatten()
                .filter(|t| t.user == user_id)
                .ok_or_else(|| {
                    Failure::new(
                        ErrorCode::TokenNotFound,
                        format!("user {user} has no token {}", quoted(token)),
                    )
                })?;
            cx.stage([Write::DeleteApiToken(found.id)]);
            Ok(())
        })();
        let shown = TokenId::parse(token).map_or_else(|| "?".to_owned(), |id| id.to_string());
        cx.audited(actor, "token.revoke", Some(&format!("{user} {shown}")), result)
    }
}

/// Refuses the attempt while any of `keys` is locked.
fn check_throttles<S: StateStore + ?Sized>(
    store: &S,
    keys: &[String],
    now: Timestamp,
) -> Result<(), Failure> {
    for key in keys {
        if let Some(t) = store.get_throttle(key)?
            && let Err(retry_after) = t.check(now)
        {
            return Err(throttle::rate_limited(retry_after));
        }
    }
    Ok(())
}

/// Counts a failed attempt against every key.
fn throttle_failure<S: StateStore + ?Sized>(cx: &mut Cx<'_, S>, keys: &[String]) -> Result<(), Failure> {
    let mut writes = Vec::with_capacity(keys.len());
    for key in keys {
        let mut t = cx.store.get_throttle(key)?.unwrap_or_default();
        t.on_failure(cx.now);
        writes.push(Write::PutThrottle(key.clone(), t));
    }
    cx.stage(writes);
    Ok(())
}

/// Clears the subject's throttle after a success (the address keeps its record, so a
/// guesser cannot reset it by logging into an account of their own).
fn throttle_success<S: StateStore + ?Sized>(cx: &mut Cx<'_, S>, subject_key: &str) -> Result<(), Failure> {
    if cx.store.get_throttle(subject_key)?.is_some() {
        cx.stage([Write::DeleteThrottle(subject_key.to_owned())]);
    }
    Ok(())
}

pub(super) fn require_user<S: UserStore + ?Sized>(store: &S, id: &UserId) -> Result<User, Failure> {
    store.get_user(id)?.ok_or_else(|| user_not_found(id.as_str()))
}

/// The write that closes onboarding at `now`, if it is still open.
fn onboarding_completed<S: StateStore + ?Sized>(store: &S, now: Timestamp) -> Result<Option<Write>, Failure> {
    let mut settings = store.runtime_settings()?;
    if settings.onboarding.is_complete() {
        return Ok(None);
    }
    settings.onboarding = Onboarding { completed_at: Some(now), setup_token: None, setup_expires_at: None };
    Ok(Some(Write::PutSettings(settings)))
}

/// Deletes of `user`'s sessions, and of its API tokens when `tokens` is set.
fn account_credentials<S: CredentialStore + ?Sized>(
    store: &S,
    user: &UserId,
    tokens: bool,
) -> Result<Vec<Write>, Failure> {
    let mut writes: Vec<Write> = store
        .list_sessions()?
        .into_iter()
        .filter(|s| &s.user == user)
        .map(|s| Write::DeleteSession(s.id))
        .collect();
    if tokens {
        writes.extend(
            store
                .list_api_tokens()?
                .into_iter()
                .filter(|t| &t.user == user)
                .map(|t| Write::DeleteApiToken(t.id)),
        );
    }
    Ok(writes)
}

/// The actor field of an anonymous attempt's audit record: the subject it named when that
/// is a well-formed id, else `anonymous` (so a mistyped password in the id field is not kept).
fn user_id_for_audit(user_id: &str) -> &str {
    if UserId::parse(user_id).is_ok() { user_id } else { "anonymous" }
}
