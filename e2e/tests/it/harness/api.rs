//! A small JSON client of the operator API over raw HTTP/1.1 on loopback: bearer tokens,
//! session cookies with the CSRF header, and helpers for the account flows (onboarding,
//! login, users with API tokens).
//!
//! Invariant: every credential this client learns (API tokens, cookies, CSRF tokens,
//! passwords it is given) is remembered as a scenario secret before it is used.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use serde_json::{Value, json};

use super::net::dechunk;
use super::{DEADLINE, Scenario};

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// No credential.
    None,
    /// `Authorization: Bearer …`.
    Bearer(&'a str),
    /// The session cookie; writes also send a same-origin `Origin` and `X-CSRF-Token`.
    Session(&'a Session),
}

/// A logged-in Web session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The cookie value.
    pub cookie: String,
    /// The CSRF token from the login response.
    pub csrf: String,
    /// The whole `Set-Cookie` header of the login.
    pub set_cookie: String,
}

/// A response.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// The raw body.
    pub text: String,
}

impl Resp {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The operator API of one server.
#[derive(Clone)]
pub struct Api {
    scenario: Arc<Scenario>,
    addr: SocketAddr,
}

/// The secret half of `<id>.<secret>` credentials (ids are logged, secrets never).
fn secret_part(credential: &str) -> &str {
    credential.split_once('.').map_or(credential, |(_, s)| s)
}

impl Api {
    /// The API at `addr`.
    pub fn new(scenario: Arc<Scenario>, addr: SocketAddr) -> Self {
        Api { scenario, addr }
    }

    /// The scenario the API belongs to.
    pub fn scenario(&self) -> &Arc<Scenario> {
        &self.scenario
    }

    /// The operator listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `METHOD path` with `auth` and an optional JSON body.
    pub fn call(&self, method: &str, path: &str, auth: &Auth<'_>, body: Option<&Value>) -> Resp {
        let mut headers: Vec<(String, String)> = Vec::new();
        match auth {
            Auth::None => {}
            Auth::Bearer(token) => headers.push(("Authorization".into(), format!("Bearer {token}"))),
            Auth::Session(session) => {
                headers.push(("Cookie".into(), format!("portunus_session={}", session.cookie)));
                if !matches!(method, "GET" | "HEAD") {
                    headers.push(("Origin".into(), format!("http://{}", self.addr)));
                    headers.push(("X-CSRF-Token".into(), session.csrf.clone()));
                }
            }
        }
        self.raw(method, path, &headers, body.map(Value::to_string).as_deref())
    }

    /// A request with exactly these extra headers and this body text.
    pub fn raw(&self, method: &str, path: &str, headers: &[(String, String)], body: Option<&str>) -> Resp {
        let mut stream =
            TcpStream::connect(self.addr).unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.addr));
        stream.set_read_timeout(Some(DEADLINE)).expect("set read timeout");
        // A `Host` among `headers` replaces the default one (the listener's address).
        let host = match headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("host")) {
            Some(_) => String::new(),
            None => format!("Host: {}\r\n", self.addr),
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\n{host}Connection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream.write_all(head.as_bytes()).expect("send head");
        stream.write_all(body.as_bytes()).expect("send body");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read response");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let text = if chunked { dechunk(body) } else { body.to_owned() };
        Resp { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
    }

    /// Completes onboarding with the setup token; returns the response.
    pub fn onboard(&self, setup_token: &str, user: &str, password: &str) -> Resp {
        self.scenario.remember_secret("password", password);
        let body = json!({"setup_token": setup_token, "user_id": user, "password": password});
        self.call("POST", "/v1/auth/onboarding", &Auth::None, Some(&body))
    }

    /// Logs in; returns the response and, on success, the session.
    pub fn login(&self, user: &str, password: &str) -> (Resp, Option<Session>) {
        let body = json!({"user_id": user, "password": password});
        let resp = self.call("POST", "/v1/auth/login", &Auth::None, Some(&body));
        if resp.status != 200 {
            return (resp, None);
        }
        let set_cookie = resp.header("set-cookie").expect("a login sets a cookie").to_owned();
        let cookie = set_cookie
            .split(';')
            .next()
            .and_then(|kv| kv.trim().strip_prefix("portunus_session="))
            .expect("the portunus_session cookie")
            .to_owned();
        let csrf = resp.body["csrf_token"].as_str().expect("csrf_token").to_owned();
        self.scenario.remember_secret("session cookie", secret_part(&cookie));
        self.scenario.remember_secret("CSRF token", &csrf);
        (resp, Some(Session { cookie, csrf, set_cookie }))
    }

    /// Logs in and fails the test unless it works.
    pub fn login_ok(&self, user: &str, password: &str) -> Session {
        let (resp, session) = self.login(user, password);
        session.unwrap_or_else(|| panic!("login as {user} failed: {} {}", resp.status, resp.text))
    }

    /// Creates a user (with a password when given) as `admin`; fails the test unless it works.
    pub fn create_user(&self, admin: &Auth<'_>, user: &str, role: &str, password: Option<&str>) {
        if let Some(password) = password {
            self.scenario.remember_secret("password", password);
        }
        let body = json!({"id": user, "role": role, "password": password});
        let resp = self.call("POST", "/v1/users", admin, Some(&body));
        assert_eq!(resp.status, 201, "create user {user}: {}", resp.text);
    }

    /// Mints an API token for `user` as `admin`; returns its text.
    pub fn mint_token(&self, admin: &Auth<'_>, user: &str) -> String {
        let resp =
            self.call("POST", &format!("/v1/users/{user}/tokens"), admin, Some(&json!({"name": "e2e"})));
        assert_eq!(resp.status, 201, "mint a token for {user}: {}", resp.text);
        let token = resp.body["token"].as_str().expect("token").to_owned();
        self.scenario.remember_secret("API token", secret_part(&token));
        token
    }

    /// A superadmin `root` (which opens the gate for user tokens) and plain `users`, created
    /// as `admin`; returns the users' API tokens, in order.
    pub fn users_with_tokens(&self, admin: &Auth<'_>, users: &[&str]) -> Vec<String> {
        self.create_user(admin, "root", "superadmin", Some("a-long-enough-passphrase-2027"));
        users
            .iter()
            .map(|user| {
                self.create_user(admin, user, "user", None);
                self.mint_token(admin, user)
            })
            .collect()
    }

    /// Grants `user` the TCP port `port` on edge-01, as `admin`.
    pub fn grant_port(&self, admin: &Auth<'_>, user: &str, port: u16) {
        let grant =
            json!({"user": user, "client": "edge-01", "ports": port.to_string(), "protocols": ["tcp"]});
        let granted = self.call("POST", "/v1/grants", admin, Some(&grant));
        assert_eq!(granted.status, 201, "{}", granted.text);
    }
}
