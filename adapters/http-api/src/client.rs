//! A typed client of the operator API, used by the CLI (and tests). It speaks the same DTOs as
//! the handlers, so the two cannot drift.

use portunus_core::quota::{QuotaPatch, QuotaSpec};
use portunus_core::ratelimit::RateLimits;
use portunus_core::service::{OwnerCapsView, QuotaView};
use std::time::Duration;

use portunus_core::error::{ErrorCode, Failure};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::dto::{
    AuditPageDto, AuditParams, ClientDto, EndpointSettingsDto, EndpointUpdate, EnrollRequest, EnrollResponse,
    GrantDto, MintedTokenDto, NewGrantRequest, NewTokenRequest, NewUserRequest, OutcomeDto, PushRuleRequest,
    RenameClientRequest, RuleCapsRequest, RuleDto, RuleStatsDto, TokenDto, UserDto,
};
use crate::error::ErrorBody;

/// A failed call: the server's code and message, plus the rule id a push stored.
#[derive(Debug, Clone)]
pub struct CallError {
    /// Code and message.
    pub failure: Failure,
    /// Rule stored by a push that did not activate.
    pub rule_id: Option<u64>,
}

impl From<Failure> for CallError {
    fn from(failure: Failure) -> Self {
        CallError { failure, rule_id: None }
    }
}

/// The operator API at `base` (e.g. `http://127.0.0.1:7080`), with a bearer token.
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client with a request timeout long enough for any activation wait.
    pub fn new(base: &str, token: &str, timeout: Duration) -> Result<Self, Failure> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| Failure::new(ErrorCode::Internal, format!("HTTP client: {e}")))?;
        Ok(ApiClient { base: base.trim_end_matches('/').to_owned(), token: token.to_owned(), http })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Option<T>, CallError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(reading_failed)?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Failure::new(ErrorCode::Internal, format!("unexpected response body: {e}")).into()
            });
        }
        Err(error_of(status, &bytes))
    }

    fn unreachable(&self, err: reqwest::Error) -> Failure {
        Failure::new(
            ErrorCode::ServerUnreachable,
            format!("cannot reach the server API at {}: {err}", self.base),
        )
    }

    /// `GET /v1/admin/backup`: writes the copy of the store to `sink` as it arrives and
    /// returns its length. A body cut short is an error, never a shorter backup.
    pub async fn backup(&self, sink: &mut (dyn std::io::Write + Send)) -> Result<u64, CallError> {
        let url = format!("{}/v1/admin/backup", self.base);
        let mut response =
            self.http.get(&url).bearer_auth(&self.token).send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.map_err(reading_failed)?;
            return Err(error_of(status, &bytes));
        }
        let expected = response.content_length();
        let mut n_bytes = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(reading_failed)? {
            sink.write_all(&chunk)
                .map_err(|e| Failure::new(ErrorCode::IoError, format!("writing the backup: {e}")))?;
            n_bytes += chunk.len() as u64;
        }
        if expected.is_some_and(|expected| expected != n_bytes) {
            return Err(
                reading_failed(format!("the backup ended after {n_bytes} of {expected:?} bytes")).into()
            );
        }
        Ok(n_bytes)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call(reqwest::Method::GET, path, None::<&()>).await?.ok_or_else(empty_body)
    }

    /// `POST /v1/clients`.
    pub async fn enroll(
        &self,
        name: &str,
        expires_in_secs: Option<u64>,
    ) -> Result<EnrollResponse, CallError> {
        let body = EnrollRequest { name: name.to_owned(), expires_in_secs };
        self.call(reqwest::Method::POST, "/v1/clients", Some(&body)).await?.ok_or_else(empty_body)
    }

    /// `GET /v1/clients`.
    pub async fn list_clients(&self) -> Result<Vec<ClientDto>, CallError> {
        self.get("/v1/clients").await
    }

    /// `POST /v1/clients/{client}/revoke`.
    pub async fn revoke(&self, client: &str) -> Result<ClientDto, CallError> {
        let path = format!("/v1/clients/{}/revoke", encode(client));
        self.call(reqwest::Method::POST, &path, None::<&()>).await?.ok_or_else(empty_body)
    }

    /// `POST /v1/rules`.
    pub async fn push_rule(&self, request: &PushRuleRequest) -> Result<RuleDto, CallError> {
        self.call(reqwest::Method::POST, "/v1/rules", Some(request)).await?.ok_or_else(empty_body)
    }

    /// `GET /v1/rules[?client=…&owner=…&state=…&protocol=…]`; each filter is `(name, value)`.
    pub async fn list_rules(&self, filters: &[(&str, &str)]) -> Result<Vec<RuleDto>, CallError> {
        let query: Vec<String> = filters.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        if query.is_empty() {
            self.get("/v1/rules").await
        } else {
            self.get(&format!("/v1/rules?{}", query.join("&"))).await
        }
    }

    /// `GET /v1/users`.
    pub async fn list_users(&self) -> Result<Vec<UserDto>, CallError> {
        self.get("/v1/users").await
    }

    /// `GET /v1/users/{user}`.
    pub async fn get_user(&self, user: &str) -> Result<UserDto, CallError> {
        self.get(&format!("/v1/users/{}", encode(user))).await
    }

    /// `POST /v1/users`.
    pub async fn create_user(&self, request: &NewUserRequest) -> Result<UserDto, CallError> {
        self.call(reqwest::Method::POST, "/v1/users", Some(request)).await?.ok_or_else(empty_body)
    }

    /// `DELETE /v1/users/{user}`.
    pub async fn delete_user(&self, user: &str) -> Result<(), CallError> {
        let path = format!("/v1/users/{}", encode(user));
        self.call::<serde_json::Value>(reqwest::Method::DELETE, &path, None::<&()>).await?;
        Ok(())
    }

    /// `POST /v1/users/{user}/tokens`.
    pub async fn create_token(&self, user: &str, name: Option<&str>) -> Result<MintedTokenDto, CallError> {
        let path = format!("/v1/users/{}/tokens", encode(user));
        let body = NewTokenRequest { name: name.map(str::to_owned) };
        self.call(reqwest::Method::POST, &path, Some(&body)).await?.ok_or_else(empty_body)
    }

    /// `GET /v1/grants[?user=…]`.
    pub async fn list_grants(&self, user: Option<&str>) -> Result<Vec<GrantDto>, CallError> {
        match user {
            Some(u) => self.get(&format!("/v1/grants?user={}", encode(u))).await,
            None => self.get("/v1/grants").await,
        }
    }

    /// `POST /v1/grants`.
    pub async fn create_grant(&self, request: &NewGrantRequest) -> Result<GrantDto, CallError> {
        self.call(reqwest::Method::POST, "/v1/grants", Some(request)).await?.ok_or_else(empty_body)
    }

    /// `DELETE /v1/grants/{grant}`.
    pub async fn delete_grant(&self, grant: &str) -> Result<(), CallError> {
        let path = format!("/v1/grants/{}", encode(grant));
        self.call::<serde_json::Value>(reqwest::Method::DELETE, &path, None::<&()>).await?;
        Ok(())
    }

    /// `GET /v1/quotas[?user=…]`.
    pub async fn list_quotas(&self, user: Option<&str>) -> Result<Vec<QuotaView>, CallError> {
        match user {
            Some(u) => self.get(&format!("/v1/quotas?user={}", encode(u))).await,
            None => self.get("/v1/quotas").await,
        }
    }

    /// `PUT /v1/users/{user}/quotas/{client}`.
    pub async fn set_quota(
        &self,
        user: &str,
        client: &str,
        spec: &QuotaSpec,
    ) -> Result<QuotaView, CallError> {
        let path = format!("/v1/users/{}/quotas/{}", encode(user), encode(client));
        self.call(reqwest::Method::PUT, &path, Some(spec)).await?.ok_or_else(empty_body)
    }

    /// `PATCH /v1/users/{user}/quotas/{client}`.
    pub async fn patch_quota(
        &self,
        user: &str,
        client: &str,
        patch: &QuotaPatch,
    ) -> Result<QuotaView, CallError> {
        let path = format!("/v1/users/{}/quotas/{}", encode(user), encode(client));
        self.call(reqwest::Method::PATCH, &path, Some(patch)).await?.ok_or_else(empty_body)
    }

    /// `DELETE /v1/users/{user}/quotas/{client}`.
    pub async fn delete_quota(&self, user: &str, client: &str) -> Result<(), CallError> {
        let path = format!("/v1/users/{}/quotas/{}", encode(user), encode(client));
        self.call::<serde_json::Value>(reqwest::Method::DELETE, &path, None::<&()>).await?;
        Ok(())
    }

    /// `GET /v1/users/{user}/quotas/{client}/status`.
    pub async fn quota_status(&self, user: &str, client: &str) -> Result<QuotaView, CallError> {
        self.get(&format!("/v1/users/{}/quotas/{}/status", encode(user), encode(client))).await
    }

    /// `GET /v1/owner-caps[?user=…]`.
    pub async fn list_owner_caps(&self, user: Option<&str>) -> Result<Vec<OwnerCapsView>, CallError> {
        match user {
            Some(u) => self.get(&format!("/v1/owner-caps?user={}", encode(u))).await,
            None => self.get("/v1/owner-caps").await,
        }
    }

    /// `PUT /v1/users/{user}/owner-caps/{client}`.
    pub async fn set_owner_caps(
        &self,
        user: &str,
        client: &str,
        limits: &RateLimits,
    ) -> Result<OwnerCapsView, CallError> {
        let path = format!("/v1/users/{}/owner-caps/{}", encode(user), encode(client));
        self.call(reqwest::Method::PUT, &path, Some(limits)).await?.ok_or_else(empty_body)
    }

    /// `GET /v1/users/{user}/owner-caps/{client}`.
    pub async fn get_owner_caps(&self, user: &str, client: &str) -> Result<OwnerCapsView, CallError> {
        self.get(&format!("/v1/users/{}/owner-caps/{}", encode(user), encode(client))).await
    }

    /// `DELETE /v1/users/{user}/owner-caps/{client}`.
    pub async fn delete_owner_caps(&self, user: &str, client: &str) -> Result<(), CallError> {
        let path = format!("/v1/users/{}/owner-caps/{}", encode(user), encode(client));
        self.call::<serde_json::Value>(reqwest::Method::DELETE, &path, None::<&()>).await?;
        Ok(())
    }

    /// `PATCH /v1/rules/{id}`: replaces the rule's own caps (empty `limits` lift them).
    pub async fn set_rule_caps(&self, id: u64, limits: &RateLimits) -> Result<RuleDto, CallError> {
        let body = RuleCapsRequest { rate_limit: *limits };
        self.call(reqwest::Method::PATCH, &format!("/v1/rules/{id}"), Some(&body))
            .await?
            .ok_or_else(empty_body)
    }

    /// `PATCH /v1/clients/{client}`: renames a client (by name or id).
    pub async fn rename_client(&self, client: &str, name: &str) -> Result<ClientDto, CallError> {
        let path = format!("/v1/clients/{}", encode(client));
        let body = RenameClientRequest { name: name.to_owned() };
        self.call(reqwest::Method::PATCH, &path, Some(&body)).await?.ok_or_else(empty_body)
    }

    /// `GET /v1/rules/{id}`.
    pub async fn get_rule(&self, id: u64) -> Result<RuleDto, CallError> {
        self.get(&format!("/v1/rules/{id}")).await
    }

    /// `GET /v1/auth/me`: the caller's own account.
    pub async fn whoami(&self) -> Result<UserDto, CallError> {
        self.get("/v1/auth/me").await
    }

    /// `GET /v1/users/{user}/tokens`.
    pub async fn list_tokens(&self, user: &str) -> Result<Vec<TokenDto>, CallError> {
        self.get(&format!("/v1/users/{}/tokens", encode(user))).await
    }

    /// `DELETE /v1/users/{user}/tokens/{token}`.
    pub async fn revoke_token(&self, user: &str, token: &str) -> Result<(), CallError> {
        let path = format!("/v1/users/{}/tokens/{}", encode(user), encode(token));
        self.call::<serde_json::Value>(reqwest::Method::DELETE, &path, None::<&()>).await?;
        Ok(())
    }

    /// `GET /v1/audit[?from=…&to=…&outcome=…&cursor=…&limit=…]`: one page.
    pub async fn audit(&self, params: &AuditParams) -> Result<AuditPageDto, CallError> {
        let outcome = params.outcome.map(|o| match o {
            OutcomeDto::Success => "success",
            OutcomeDto::Denied => "denied",
            OutcomeDto::Failed => "failed",
        });
        let limit = params.limit.map(|n| n.to_string());
        let query: Vec<String> = [
            ("from", params.from.as_deref()),
            ("to", params.to.as_deref()),
            ("outcome", outcome),
            ("cursor", params.cursor.as_deref()),
            ("limit", limit.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v))))
        .collect();
        if query.is_empty() {
            self.get("/v1/audit").await
        } else {
            self.get(&format!("/v1/audit?{}", query.join("&"))).await
        }
    }

    /// `DELETE /v1/audit?before=…`: one batch of the prune.
    pub async fn prune_audit(&self, before: &str) -> Result<crate::routes::admin::AuditPrunedDto, CallError> {
        let path = format!("/v1/audit?before={}", encode(before));
        self.call(reqwest::Method::DELETE, &path, None::<&()>).await?.ok_or_else(empty_body)
    }

    /// `GET /v1/settings/advertised-endpoint`.
    pub async fn advertised_endpoint(&self) -> Result<EndpointSettingsDto, CallError> {
        self.get("/v1/settings/advertised-endpoint").await
    }

    /// `PUT /v1/settings/advertised-endpoint`: sets the override, or clears it with `None`.
    pub async fn set_advertised_endpoint(
        &self,
        endpoint: Option<&str>,
    ) -> Result<EndpointSettingsDto, CallError> {
        let body = EndpointUpdate { endpoint: endpoint.map(str::to_owned) };
        self.call(reqwest::Method::PUT, "/v1/settings/advertised-endpoint", Some(&body))
            .await?
            .ok_or_else(empty_body)
    }

    /// `DELETE /v1/rules/{id}`.
    pub async fn remove_rule(&self, id: u64) -> Result<(), CallError> {
        self.call::<serde_json::Value>(reqwest::Method::DELETE, &format!("/v1/rules/{id}"), None::<&()>)
            .await?;
        Ok(())
    }

    /// `GET /v1/rules/{id}/stats`.
    pub async fn rule_stats(
        &self,
        id: u64,
        per_port: bool,
        per_target: bool,
    ) -> Result<RuleStatsDto, CallError> {
        self.get(&format!("/v1/rules/{id}/stats?per_port={per_port}&per_target={per_target}")).await
    }
}

fn reading_failed(err: impl std::fmt::Display) -> Failure {
    Failure::new(ErrorCode::ServerUnreachable, format!("reading the response: {err}"))
}

/// The failure an unsuccessful answer carries in its error body.
fn error_of(status: reqwest::StatusCode, bytes: &[u8]) -> CallError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => CallError {
            failure: Failure::new(
                ErrorCode::parse(&body.error.code).unwrap_or(ErrorCode::Internal),
                body.error.message,
            ),
            rule_id: body.error.rule_id,
        },
        Err(_) => Failure::new(ErrorCode::Internal, format!("HTTP {status} without an error body")).into(),
    }
}

fn empty_body() -> CallError {
    Failure::new(ErrorCode::Internal, "the server sent an empty body").into()
}

/// Percent-encodes a path segment or query value (ids and names are ASCII; anything else is
/// escaped so it cannot change the route).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
