//! Commands that run on the server host against the store directly, while `serve` is
//! stopped: password recovery and the automation bootstrap of a superadmin.
//!
//! Invariants: each command is one atomic, audited batch; the secret it mints is returned to
//! be printed exactly once and only its hash is stored.

use crate::account::{ApiToken, User, credential_text, temporary_password};
use crate::audit::AuditRecord;
use crate::error::{ErrorCode, Failure};
use crate::ids::{TokenId, UserId, quoted};
use crate::policy::Role;
use crate::ports::{Clock, Entropy, PasswordHasher, Store, Write};
use crate::secret::Secret;
use crate::settings::Onboarding;

/// The principal local commands are audited as.
pub const LOCAL_PRINCIPAL: &str = "_local";

/// The ports a local command uses.
pub struct Local<'a> {
    /// The store, opened by this process.
    pub store: &'a dyn Store,
    /// Wall-clock time.
    pub clock: &'a dyn Clock,
    /// Randomness.
    pub entropy: &'a dyn Entropy,
}

impl Local<'_> {
    fn random<const N: usize>(&self) -> [u8; N] {
        let mut buf = [0u8; N];
        self.entropy.fill(&mut buf);
        buf
    }

    fn commit_audited(&self, mut writes: Vec<Write>, action: &str, target: &str) -> Result<(), Failure> {
        let record = AuditRecord::new(LOCAL_PRINCIPAL, action, Some(target), None, None, self.clock.now());
        writes.push(Write::AppendAudit(record));
        self.store.commit(writes)?;
        Ok(())
    }
}

/// Gives `user_id` a new random temporary password and returns it. The account must change it
/// before doing anything else; its Web sessions end, and so do its API tokens unless
/// `keep_api_tokens`.
pub fn reset_password(
    local: &Local<'_>,
    hasher: &dyn PasswordHasher,
    user_id: &str,
    keep_api_tokens: bool,
) -> Result<Secret, Failure> {
    let id = UserId::new(user_id);
    let mut user = local
        .store
        .get_user(&id)?
        .ok_or_else(|| Failure::new(ErrorCode::UserNotFound, format!("no user {}", quoted(user_id))))?;
    let password = temporary_password(&local.random());
    user.password = Some(hasher.hash(password.expose())?);
    user.must_change_password = true;
    let mut writes: Vec<Write> = local
        .store
        .list_sessions()?
        .into_iter()
        .filter(|s| s.user == id)
        .map(|s| Write::DeleteSession(s.id))
        .collect();
    if !keep_api_tokens {
        writes.extend(
            local
                .store
                .list_api_tokens()?
                .into_iter()
                .filter(|t| t.user == id)
                .map(|t| Write::DeleteApiToken(t.id)),
        );
    }
    writes.push(Write::PutUser(user));
    local.commit_audited(writes, "user.password_reset", user_id)?;
    Ok(password)
}

/// Creates the built-in `_superadmin` (no password) with a new API token, returns the token,
/// and closes onboarding. Refused with `conflict.user_exists` when it already exists.
pub fn bootstrap_superadmin(local: &Local<'_>) -> Result<Secret, Failure> {
    let id = UserId::new(UserId::BOOTSTRAP_SUPERADMIN);
    if local.store.get_user(&id)?.is_some() {
        return Err(Failure::new(
            ErrorCode::UserExists,
            format!("{id} already exists; mint another token with POST /v1/users/{id}/tokens"),
        ));
    }
    let now = local.clock.now();
    let user = User {
        id: id.clone(),
        role: Role::Superadmin,
        password: None,
        must_change_password: false,
        created_at: now,
    };
    let token_id = TokenId::from_random(local.random());
    let secret = credential_text(token_id.as_str(), &local.random::<32>());
    let token = ApiToken {
        id: token_id,
        user: id.clone(),
        hash: secret.hash(),
        name: Some("bootstrap".into()),
        created_at: now,
    };
    let mut settings = local.store.runtime_settings()?;
    if !settings.onboarding.is_complete() {
        settings.onboarding =
            Onboarding { completed_at: Some(now), setup_token: None, setup_expires_at: None };
    }
    let writes = vec![Write::PutUser(user), Write::PutApiToken(token), Write::PutSettings(settings)];
    local.commit_audited(writes, "user.bootstrap_superadmin", id.as_str())?;
    Ok(secret)
}
