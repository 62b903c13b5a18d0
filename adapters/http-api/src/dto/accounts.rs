//! Bodies of the account routes: users, API tokens, grants, login, onboarding, passwords.

use portunus_core::account::{ApiToken, User};
use portunus_core::grant::Grant;
use portunus_core::policy::Role;
use portunus_core::rule::{ListenSpec, Protocol};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleDto {
    /// Everything, for every user.
    Superadmin,
    /// Own rules within own grants.
    #[default]
    User,
}

impl From<Role> for RoleDto {
    fn from(role: Role) -> Self {
        match role {
            Role::Superadmin => RoleDto::Superadmin,
            Role::User => RoleDto::User,
        }
    }
}

impl From<RoleDto> for Role {
    fn from(role: RoleDto) -> Self {
        match role {
            RoleDto::Superadmin => Role::Superadmin,
            RoleDto::User => Role::User,
        }
    }
}

/// An account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserDto {
    /// Id, also the login name.
    pub id: String,
    /// Role.
    pub role: RoleDto,
    /// Whether the account can log in with a password.
    pub has_password: bool,
    /// True while the account holds a temporary password.
    pub must_change_password: bool,
    /// Creation time (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<User> for UserDto {
    fn from(user: User) -> Self {
        UserDto {
            id: user.id.to_string(),
            role: user.role.into(),
            has_password: user.password.is_some(),
            must_change_password: user.must_change_password,
            created_at: user.created_at.to_rfc3339(),
        }
    }
}

/// `POST /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    /// 1 to 32 of `[a-z0-9._-]`, starting with a letter or digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,31}$")]
    pub id: String,
    /// Role (default `user`).
    #[serde(default)]
    pub role: RoleDto,
    /// Initial password (12 characters to 1024 bytes); without one the account uses API tokens.
    #[serde(default)]
    #[schema(min_length = 12, max_length = 1024)]
    pub password: Option<String>,
}

/// An API token's record (the token text is shown only when minted).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenDto {
    /// Token id (`tk_…`).
    pub id: String,
    /// Its user.
    pub user: String,
    /// Label.
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
    /// When it was minted (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<ApiToken> for TokenDto {
    fn from(t: ApiToken) -> Self {
        TokenDto {
            id: t.id.to_string(),
            user: t.user.to_string(),
            name: t.name,
            created_at: t.created_at.to_rfc3339(),
        }
    }
}

/// `POST /v1/users/{user}/tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    /// Optional label (1 to 64 bytes, no invisible characters).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
}

/// A freshly minted API token. `token` is shown here once and never again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MintedTokenDto {
    /// The record.
    #[serde(flatten)]
    pub record: TokenDto,
    /// The bearer token text.
    pub token: String,
}

/// A grant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantDto {
    /// Grant id (`gr_…`).
    pub id: String,
    /// The user it is for.
    pub user: String,
    /// `*` or a client id.
    pub client: String,
    /// Listen ports, `PORT` or `START-END`.
    #[schema(pattern = "^[0-9]{1,5}(-[0-9]{1,5})?$")]
    pub ports: String,
    /// Allowed protocols.
    pub protocols: Vec<Protocol>,
    /// Creation time (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<Grant> for GrantDto {
    fn from(g: Grant) -> Self {
        GrantDto {
            id: g.id.to_string(),
            user: g.user.to_string(),
            client: String::from(g.client),
            ports: g.ports.to_string(),
            protocols: g.protocols,
            created_at: g.created_at.to_rfc3339(),
        }
    }
}

/// `POST /v1/grants`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrantRequest {
    /// The user.
    pub user: String,
    /// `*` (every client) or a client id or name.
    pub client: String,
    /// `PORT` or `START-END`.
    #[schema(value_type = super::schema::ListenPortSchema)]
    pub ports: ListenSpec,
    /// Allowed protocols (at least one).
    #[schema(min_items = 1)]
    pub protocols: Vec<Protocol>,
}

/// `GET /v1/grants` filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GrantFilter {
    /// Only grants of this user (users may name only themselves).
    pub user: Option<String>,
}

/// `POST /v1/auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// User id.
    pub user_id: String,
    /// Password.
    pub password: String,
}

/// A successful login; the session itself is in the `portunus_session` cookie.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// The account.
    pub user: UserDto,
    /// Send it back in `X-CSRF-Token` on every cookie-authenticated write.
    pub csrf_token: String,
    /// When the session ends (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// `GET /v1/auth/onboarding`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OnboardingStatusDto {
    /// True until the first superadmin exists.
    pub required: bool,
    /// When the current setup token expires (RFC 3339), while onboarding is open.
    #[schema(format = DateTime)]
    pub setup_token_expires_at: Option<String>,
}

/// `POST /v1/auth/onboarding`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnboardingRequest {
    /// The token `serve` printed on stderr.
    pub setup_token: String,
    /// The first superadmin's id.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,31}$")]
    pub user_id: String,
    /// Its password (12 characters to 1024 bytes).
    #[schema(min_length = 12, max_length = 1024)]
    pub password: String,
}

/// `PUT /v1/auth/password`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    /// The current (possibly temporary) password.
    pub current_password: String,
    /// The new password (12 characters to 1024 bytes).
    #[schema(min_length = 12, max_length = 1024)]
    pub new_password: String,
}
