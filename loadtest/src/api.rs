//! The operator HTTP API calls the load test makes (`openapi/portunus.openapi.json`).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

/// How long the server waits for a client's activation ack on a push.
pub const ACK_TIMEOUT_MS: u64 = 5_000;
/// How long any one HTTP call may take, end to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Every rule forwards to the discard port on loopback (nothing is bound or forwarded).
pub const RULE_TARGET: &str = "127.0.0.1:9";

/// Why a call failed, with a short kind for the tallies (`409 port_in_use`, `transport`, …).
#[derive(Debug, Clone)]
pub enum CallError {
    /// The server answered 504 or did not answer in time.
    Timeout(String),
    /// Anything else.
    Failed(String),
}

/// The operator API with the operator token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

#[derive(Deserialize)]
struct EnrollResponse {
    enroll_uri: String,
}

#[derive(Deserialize)]
struct RuleId {
    id: u64,
}

/// The fields of a listed rule the load test reads.
#[derive(Debug, Deserialize)]
pub struct ListedRule {
    /// The client's id.
    pub client_id: String,
    /// `pending`, `active`, `failed` or `removed`.
    pub state: String,
}

/// The fields of a listed client the load test reads.
#[derive(Debug, Deserialize)]
pub struct ListedClient {
    /// Whether it has a live control stream.
    pub connected: bool,
}

impl Api {
    /// An API client for `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: String, token: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Api { http, base, token })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, CallError> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            if e.is_timeout() {
                CallError::Timeout("client timeout".into())
            } else {
                CallError::Failed("transport".into())
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let code = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.pointer("/error/code").and_then(|c| c.as_str()).map(str::to_owned))
            .unwrap_or_default();
        let kind = format!("{} {code}", status.as_u16());
        if status.as_u16() == 504 { Err(CallError::Timeout(kind)) } else { Err(CallError::Failed(kind)) }
    }

    async fn json<T: for<'de> Deserialize<'de>>(response: reqwest::Response) -> Result<T, CallError> {
        response.json::<T>().await.map_err(|_| CallError::Failed("malformed body".into()))
    }

    /// The same API with another bearer token (a wrong one, for the bad-token flood).
    pub fn with_token(&self, token: &str) -> Api {
        Api { http: self.http.clone(), base: self.base.clone(), token: token.to_owned() }
    }

    /// `GET path`: the body as text.
    pub async fn get_text(&self, path: &str) -> Result<String, CallError> {
        let response = self.send(self.http.get(format!("{}{path}", self.base))).await?;
        response.text().await.map_err(|_| CallError::Failed("body read".into()))
    }

    /// `POST /v1/clients`: the enrollment URI for a new client `name`.
    pub async fn enroll(&self, name: &str) -> Result<String, CallError> {
        let request = self.http.post(format!("{}/v1/clients", self.base)).json(&json!({ "name": name }));
        let response = self.send(request).await?;
        Ok(Self::json::<EnrollResponse>(response).await?.enroll_uri)
    }

    /// `POST /v1/rules`: a TCP rule on `client` listening on `127.0.0.1:port`; returns once the
    /// client acknowledged it (the rule id).
    pub async fn push_rule(&self, client: &str, port: u16) -> Result<u64, CallError> {
        let body = json!({
            "client": client,
            "rule": {
                "listen_port": port,
                "listen_addr": "127.0.0.1",
                "target": RULE_TARGET,
                "protocol": "tcp",
            },
            "ack_timeout_ms": ACK_TIMEOUT_MS,
        });
        let request = self.http.post(format!("{}/v1/rules", self.base)).json(&body);
        let response = self.send(request).await?;
        Ok(Self::json::<RuleId>(response).await?.id)
    }

    /// `GET path`, reading the whole body; returns its length.
    pub async fn get_raw(&self, path: &str) -> Result<usize, CallError> {
        let response = self.send(self.http.get(format!("{}{path}", self.base))).await?;
        let body = response.bytes().await.map_err(|_| CallError::Failed("body read".into()))?;
        Ok(body.len())
    }

    /// `GET /v1/clients`.
    pub async fn clients(&self) -> Result<Vec<ListedClient>, CallError> {
        let response = self.send(self.http.get(format!("{}/v1/clients", self.base))).await?;
        Self::json(response).await
    }

    /// `GET /v1/rules`.
    pub async fn rules(&self) -> Result<Vec<ListedRule>, CallError> {
        let response = self.send(self.http.get(format!("{}/v1/rules", self.base))).await?;
        Self::json(response).await
    }
}
