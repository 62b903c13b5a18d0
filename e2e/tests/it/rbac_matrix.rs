//! The RBAC matrix: every route of the live server's OpenAPI document (the router's own
//! handler list) × {superadmin, alice, bob, anonymous} × {own, another's resource}, each
//! with the status it must answer. A route missing from the table fails the test, so a new
//! route cannot be forgotten.
//!
//! Destructive calls (deletes, revocations, renames) get fresh resources made for that one
//! call, so the fixtures the other cells use stay in place.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::harness::{Api, Auth, ClientOpts, Scenario, Server, free_port, server_with_edge};

const PASSWORD: &str = "matrix password 0123";

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Superadmin,
    Alice,
    Bob,
    Anonymous,
}

const WHO: [Who; 4] = [Who::Superadmin, Who::Alice, Who::Bob, Who::Anonymous];

impl Who {
    fn id(self) -> &'static str {
        match self {
            Who::Superadmin => "root",
            Who::Alice | Who::Anonymous => "alice",
            Who::Bob => "bob",
        }
    }
    /// Someone else: for users the other user, for the superadmin a user.
    fn other(self) -> &'static str {
        match self {
            Who::Superadmin | Who::Bob => "alice",
            Who::Alice | Who::Anonymous => "bob",
        }
    }
}

/// Statuses: [superadmin own, other, alice own, other, bob own, other, anonymous own, other].
type Row = (&'static str, &'static str, [u16; 8]);

/// The expected status of every route. Users may touch their own account, tokens, grants
/// (read), rules, and granted clients (read); everything else is the superadmin's. Another
/// user's rule or grant, and a client no grant of theirs names, is not found (404), exactly
/// as one that does not exist.
const TABLE: &[Row] = &[
    ("GET", "/v1/auth/onboarding", [200, 200, 200, 200, 200, 200, 200, 200]),
    ("POST", "/v1/auth/onboarding", [409, 409, 409, 409, 409, 409, 409, 409]),
    ("POST", "/v1/auth/login", [200, 200, 200, 200, 200, 200, 200, 200]),
    ("POST", "/v1/auth/logout", [204, 204, 204, 204, 204, 204, 401, 401]),
    ("GET", "/v1/auth/me", [200, 200, 200, 200, 200, 200, 401, 401]),
    ("PUT", "/v1/auth/password", [204, 401, 204, 401, 204, 401, 401, 401]),
    ("GET", "/v1/users", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("POST", "/v1/users", [201, 201, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/users/{user}", [200, 200, 200, 403, 200, 403, 401, 401]),
    ("DELETE", "/v1/users/{user}", [204, 204, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/users/{user}/tokens", [200, 200, 200, 403, 200, 403, 401, 401]),
    ("POST", "/v1/users/{user}/tokens", [201, 201, 201, 403, 201, 403, 401, 401]),
    ("DELETE", "/v1/users/{user}/tokens/{token}", [204, 204, 204, 403, 204, 403, 401, 401]),
    ("GET", "/v1/grants", [200, 200, 200, 403, 200, 403, 401, 401]),
    ("POST", "/v1/grants", [201, 201, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/grants/{grant}", [200, 200, 200, 404, 200, 404, 401, 401]),
    ("DELETE", "/v1/grants/{grant}", [204, 204, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/clients", [200, 200, 200, 200, 200, 200, 401, 401]),
    ("POST", "/v1/clients", [201, 201, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/clients/{client}", [200, 200, 200, 404, 200, 404, 401, 401]),
    ("PATCH", "/v1/clients/{client}", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("DELETE", "/v1/clients/{client}", [204, 204, 403, 403, 403, 403, 401, 401]),
    ("POST", "/v1/clients/{client}/revoke", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("POST", "/v1/clients/{client}/enrollment", [201, 201, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/rules", [200, 200, 200, 403, 200, 403, 401, 401]),
    ("POST", "/v1/rules", [201, 201, 201, 403, 201, 403, 401, 401]),
    ("GET", "/v1/rules/{id}", [200, 200, 200, 404, 200, 404, 401, 401]),
    ("PATCH", "/v1/rules/{id}", [200, 200, 200, 404, 200, 404, 401, 401]),
    ("DELETE", "/v1/rules/{id}", [204, 204, 204, 404, 204, 404, 401, 401]),
    ("GET", "/v1/rules/{id}/stats", [200, 200, 200, 404, 200, 404, 401, 401]),
    ("GET", "/v1/settings/advertised-endpoint", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("PUT", "/v1/settings/advertised-endpoint", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/audit", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("DELETE", "/v1/audit", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/metrics", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/admin/backup", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/rules/{id}/stats/stream", [200, 200, 200, 404, 200, 404, 401, 401]),
    // Quotas: superadmins set them (on alice or bob, whom a grant gives edge-01); a user reads
    // only their own, another's answers like a missing one.
    ("GET", "/v1/quotas", [200, 200, 200, 403, 200, 403, 401, 401]),
    ("PUT", "/v1/users/{user}/quotas/{client}", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("PATCH", "/v1/users/{user}/quotas/{client}", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("DELETE", "/v1/users/{user}/quotas/{client}", [204, 204, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/users/{user}/quotas/{client}/status", [200, 200, 200, 404, 200, 404, 401, 401]),
    // Owner envelopes: as quotas. Superadmins set them on alice or bob; a user reads only
    // their own, another's answers like a missing one.
    ("GET", "/v1/owner-caps", [200, 200, 200, 403, 200, 403, 401, 401]),
    ("PUT", "/v1/users/{user}/owner-caps/{client}", [200, 200, 403, 403, 403, 403, 401, 401]),
    ("GET", "/v1/users/{user}/owner-caps/{client}", [200, 200, 200, 404, 200, 404, 401, 401]),
    ("DELETE", "/v1/users/{user}/owner-caps/{client}", [204, 204, 403, 403, 403, 403, 401, 401]),
    // Traffic: everyone's for superadmins, a user's own otherwise; an ungranted client is
    // not found.
    ("GET", "/v1/traffic", [200, 200, 200, 403, 200, 403, 401, 401]),
    ("GET", "/v1/users/{user}/traffic", [200, 200, 200, 403, 200, 403, 401, 401]),
    ("GET", "/v1/clients/{client}/traffic", [200, 200, 200, 404, 200, 404, 401, 401]),
];

/// The fixtures: the server, its API, the operator token, and each user's token and ports.
struct World {
    server: Server,
    _client: crate::harness::Client,
    api: Api,
    operator: String,
    tokens: [(String, String); 3],
    n_fresh: std::cell::Cell<u32>,
}

impl World {
    fn op(&self) -> Auth<'_> {
        Auth::Bearer(&self.operator)
    }

    fn auth(&self, who: Who) -> Auth<'_> {
        match who {
            Who::Superadmin => Auth::Bearer(&self.tokens[0].1),
            Who::Alice => Auth::Bearer(&self.tokens[1].1),
            Who::Bob => Auth::Bearer(&self.tokens[2].1),
            Who::Anonymous => Auth::None,
        }
    }

    fn fresh(&self, stem: &str) -> String {
        self.n_fresh.set(self.n_fresh.get() + 1);
        format!("{stem}-{}", self.n_fresh.get())
    }

    fn ok(&self, method: &str, path: &str, body: Value, status: u16) -> Value {
        let resp = self.api.call(method, path, &self.op(), Some(&body));
        assert_eq!(resp.status, status, "fixture {method} {path}: {}", resp.text);
        resp.body
    }

    /// A one-port grant for `user`, returning its id.
    fn grant(&self, user: &str, port: u16) -> String {
        let body = json!({"user": user, "client": "edge-01", "ports": port, "protocols": ["tcp"]});
        self.ok("POST", "/v1/grants", body, 201)["id"].as_str().expect("grant id").to_owned()
    }

    /// A rule owned by `user` on a port granted for it, returning its id.
    fn rule(&self, user: Who) -> String {
        let port = free_port();
        if user != Who::Superadmin {
            self.grant(user.id(), port);
        }
        let body = json!({"client": "edge-01", "rule": {"listen_port": port, "target": "127.0.0.1:9"}});
        let resp = self.api.call("POST", "/v1/rules", &self.auth(user), Some(&body));
        assert_eq!(resp.status, 201, "fixture rule of {user:?}: {}", resp.text);
        resp.body["id"].as_u64().expect("rule id").to_string()
    }

    fn token_id(&self, user: &str) -> String {
        let resp = self.api.call("POST", &format!("/v1/users/{user}/tokens"), &self.op(), Some(&json!({})));
        assert_eq!(resp.status, 201, "{}", resp.text);
        resp.body["id"].as_str().expect("token id").to_owned()
    }

    /// A quota for `user` (whom the setup granted edge-01) on edge-01, created or replaced.
    fn quota(&self, user: &str) {
        self.ok("PUT", &format!("/v1/users/{user}/quotas/edge-01"), json!({"monthly_bytes": 1_000_000}), 200);
    }

    /// An owner envelope for `user` (whom the setup granted edge-01) on edge-01, created or
    /// replaced.
    fn owner_caps(&self, user: &str) {
        let caps = json!({"concurrent_connections": 100});
        self.ok("PUT", &format!("/v1/users/{user}/owner-caps/edge-01"), caps, 200);
    }

    /// A client that exists but carries nothing, optionally revoked.
    fn spare_client(&self, revoked: bool) -> String {
        let name = self.fresh("spare");
        self.ok("POST", "/v1/clients", json!({"name": name}), 201);
        if revoked {
            self.ok("POST", &format!("/v1/clients/{name}/revoke"), json!({}), 200);
        }
        name
    }
}

fn setup(scn: &std::sync::Arc<Scenario>) -> World {
    let (server, client) = server_with_edge(scn, &ClientOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    api.create_user(&op, "root", "superadmin", Some(PASSWORD));
    api.create_user(&op, "alice", "user", Some(PASSWORD));
    api.create_user(&op, "bob", "user", Some(PASSWORD));
    let tokens = ["root", "alice", "bob"].map(|u| (u.to_owned(), api.mint_token(&op, u)));
    let world = World { server, _client: client, api, operator, tokens, n_fresh: std::cell::Cell::new(0) };
    let enrolled = world.api.call("POST", "/v1/clients", &world.op(), Some(&json!({"name": "edge-02"})));
    assert_eq!(enrolled.status, 201, "{}", enrolled.text);
    // Quotas need a grant for their pair.
    world.grant("alice", free_port());
    world.grant("bob", free_port());
    world
}

/// The concrete request of one cell: path and body.
fn request(w: &World, method: &str, template: &str, who: Who, own: bool) -> (String, Option<Value>) {
    let owner = if own {
        who
    } else if who == Who::Alice || who == Who::Anonymous {
        Who::Bob
    } else {
        Who::Alice
    };
    let user = if own { who.id() } else { who.other() };
    let destructive = method == "DELETE" || template.ends_with("/revoke") || method == "PATCH";
    let superadmin = who == Who::Superadmin;
    let path = match template {
        "/v1/users/{user}" if method == "DELETE" && superadmin => {
            let fresh = w.fresh("tmp-user");
            w.ok("POST", "/v1/users", json!({"id": fresh}), 201);
            format!("/v1/users/{fresh}")
        }
        "/v1/users/{user}" | "/v1/users/{user}/tokens" => template.replace("{user}", user),
        "/v1/users/{user}/tokens/{token}" => {
            // Users may revoke their own tokens, so each call gets a fresh one.
            let token = w.token_id(user);
            format!("/v1/users/{user}/tokens/{token}")
        }
        "/v1/grants/{grant}" => {
            let grantee = if owner == Who::Superadmin { "alice" } else { owner.id() };
            format!("/v1/grants/{}", w.grant(grantee, free_port()))
        }
        "/v1/clients/{client}" | "/v1/clients/{client}/revoke" | "/v1/clients/{client}/enrollment" => {
            let client = if destructive && superadmin {
                w.spare_client(method == "DELETE")
            } else if own {
                "edge-01".to_owned()
            } else {
                "edge-02".to_owned()
            };
            template.replace("{client}", &client)
        }
        "/v1/users/{user}/quotas/{client}" | "/v1/users/{user}/quotas/{client}/status" => {
            // A superadmin has no grant of its own: it works on alice's and bob's quotas.
            let target = if superadmin { if own { "alice" } else { "bob" } } else { user };
            if method != "PUT" {
                w.quota(target);
            }
            template.replace("{user}", target).replace("{client}", "edge-01")
        }
        "/v1/users/{user}/owner-caps/{client}" => {
            let target = if superadmin { if own { "alice" } else { "bob" } } else { user };
            if method != "PUT" {
                w.owner_caps(target);
            }
            template.replace("{user}", target).replace("{client}", "edge-01")
        }
        "/v1/quotas" => format!("/v1/quotas?user={user}"),
        "/v1/owner-caps" => format!("/v1/owner-caps?user={user}"),
        "/v1/traffic" => format!("/v1/traffic?{}&user={user}", traffic_window()),
        "/v1/users/{user}/traffic" => format!("/v1/users/{user}/traffic?{}", traffic_window()),
        "/v1/clients/{client}/traffic" => {
            let client = if own { "edge-01" } else { "edge-02" };
            format!("/v1/clients/{client}/traffic?{}", traffic_window())
        }
        "/v1/rules/{id}" | "/v1/rules/{id}/stats" | "/v1/rules/{id}/stats/stream" => {
            let rule_owner = if owner == Who::Anonymous { Who::Alice } else { owner };
            template.replace("{id}", &w.rule(rule_owner))
        }
        "/v1/grants" => format!("/v1/grants?user={user}"),
        "/v1/rules" if method == "GET" => format!("/v1/rules?owner={user}"),
        // A cut-off older than every record: the prune is allowed and deletes nothing.
        "/v1/audit" if method == "DELETE" => "/v1/audit?before=2000-01-01T00:00:00Z".to_owned(),
        other => other.to_owned(),
    };
    let body = match (method, template) {
        ("POST", "/v1/auth/onboarding") => {
            Some(json!({"setup_token": "0".repeat(48), "user_id": "late", "password": PASSWORD}))
        }
        ("POST", "/v1/auth/login") => Some(json!({"user_id": user, "password": PASSWORD})),
        ("PUT", "/v1/auth/password") => {
            let current = if own { PASSWORD } else { "not the password at all" };
            Some(json!({"current_password": current, "new_password": PASSWORD}))
        }
        ("POST", "/v1/users") => Some(json!({"id": w.fresh("new-user")})),
        ("POST", "/v1/users/{user}/tokens") => Some(json!({"name": "matrix"})),
        ("POST", "/v1/grants") => {
            Some(json!({"user": "alice", "client": "edge-01", "ports": "40000-40009", "protocols": ["tcp"]}))
        }
        ("POST", "/v1/clients") => Some(json!({"name": w.fresh("enrolled")})),
        ("PATCH", "/v1/clients/{client}") => Some(json!({"name": w.fresh("renamed")})),
        ("POST", "/v1/clients/{client}/enrollment") => Some(json!({})),
        ("POST", "/v1/rules") => {
            // Own: a port granted to the caller (any port for the superadmin). Another's: a
            // port granted only to someone else.
            let port = free_port();
            let grantee = if own { who } else { owner };
            if grantee != Who::Superadmin && grantee != Who::Anonymous {
                w.grant(grantee.id(), port);
            }
            Some(json!({"client": "edge-01", "rule": {"listen_port": port, "target": "127.0.0.1:9"}}))
        }
        ("PUT", "/v1/settings/advertised-endpoint") => Some(json!({"endpoint": null})),
        ("PUT", "/v1/users/{user}/quotas/{client}") => Some(json!({"monthly_bytes": 1_000_000})),
        ("PATCH", "/v1/users/{user}/quotas/{client}") => Some(json!({"clear_period_usage": true})),
        ("PUT", "/v1/users/{user}/owner-caps/{client}") => {
            Some(json!({"bandwidth_in_bps": 1_000_000, "concurrent_connections": 50}))
        }
        ("PATCH", "/v1/rules/{id}") => Some(rule_caps_body()),
        ("POST", _) | ("PUT", _) | ("PATCH", _) => Some(json!({})),
        _ => None,
    };
    (path, body)
}

/// A `PATCH /v1/rules/{id}` body that caps something.
fn rule_caps_body() -> Value {
    json!({"rate_limit": {"new_connections_per_sec": 20, "concurrent_connections": 10}})
}

/// The last ten minutes, as a traffic query's window.
fn traffic_window() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    format!("from={}&to={}", now - 600, now)
}

/// A GET whose answer may be an endless event stream: the status line and headers are read,
/// and the body only when it is an error (which ends).
fn status_of_stream(w: &World, path: &str, auth: &Auth<'_>) -> crate::harness::Resp {
    use std::io::{BufRead, BufReader, Read, Write};
    let addr = w.api.addr();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    let bearer = match auth {
        Auth::Bearer(token) => format!("Authorization: Bearer {token}\r\n"),
        _ => String::new(),
    };
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{bearer}\r\n").expect("send");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    loop {
        line.clear();
        if reader.read_line(&mut line).expect("header") == 0 || line == "\r\n" {
            break;
        }
    }
    let mut text = String::new();
    if status >= 400 {
        let _ = reader.read_to_string(&mut text);
        // Chunked or not, the JSON error is the text between the first `{` and the last `}`.
        if let (Some(start), Some(end)) = (text.find('{'), text.rfind('}')) {
            text = text[start..=end].to_owned();
        }
    }
    crate::harness::Resp {
        status,
        headers: Vec::new(),
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

fn routes_of(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn every_route_answers_each_actor_as_the_rbac_table_says() {
    let scn = Scenario::new("rbac_matrix");
    let w = setup(&scn);
    let doc = w.api.call("GET", "/openapi.json", &Auth::None, None).body;
    let routes = routes_of(&doc);
    let table: BTreeSet<(String, String)> =
        TABLE.iter().map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned())).collect();
    let untested: Vec<_> = routes.difference(&table).collect();
    assert!(untested.is_empty(), "routes without a row in the RBAC table: {untested:?}");
    let stale: Vec<_> = table.difference(&routes).collect();
    assert!(stale.is_empty(), "rows for routes the router does not have: {stale:?}");

    let mut failures = Vec::new();
    for (method, template, expected) in TABLE {
        for (n, who) in WHO.iter().enumerate() {
            for (k, own) in [true, false].into_iter().enumerate() {
                let (path, body) = request(&w, method, template, *who, own);
                let resp = if template.ends_with("/stream") {
                    status_of_stream(&w, &path, &w.auth(*who))
                } else {
                    w.api.call(method, &path, &w.auth(*who), body.as_ref())
                };
                let want = expected[n * 2 + k];
                if resp.status != want {
                    failures.push(format!(
                        "{method} {path} as {who:?} ({}) → {} (want {want}): {}",
                        if own { "own" } else { "other's" },
                        resp.status,
                        resp.text
                    ));
                }
                if resp.status >= 400 {
                    assert!(
                        resp.body["error"]["code"].is_string(),
                        "{method} {path}: error without a code: {}",
                        resp.text
                    );
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells disagree with the table:\n{}",
        failures.len(),
        failures.join("\n")
    );
    w.server.assert_no_secret_leaked();
}

/// The error body with every occurrence of `id` replaced, for comparing answers that may
/// differ only in the id the caller sent.
fn without_id(text: &str, id: &str) -> String {
    text.replace(id, "{id}")
}

#[test]
fn another_tenants_rules_are_no_oracle_on_any_rule_route_in_conflicts_or_in_counts() {
    let scn = Scenario::new("rbac_no_oracle");
    let w = setup(&scn);
    let (alice, bob, root) = (w.auth(Who::Alice), w.auth(Who::Bob), w.auth(Who::Superadmin));
    let port = free_port();
    w.grant("alice", port);
    w.grant("bob", port);
    let push = |auth: &Auth<'_>, port: u16| {
        let body = json!({"client": "edge-01", "rule": {"listen_port": port, "target": "127.0.0.1:9"}});
        w.api.call("POST", "/v1/rules", auth, Some(&body))
    };
    let bobs = push(&bob, port);
    assert_eq!(bobs.status, 201, "{}", bobs.text);
    let bobs = bobs.body["id"].as_u64().expect("rule id").to_string();

    // (a) A clash with bob's rule tells alice that the port is taken, and nothing else.
    let clash = push(&alice, port);
    assert_eq!((clash.status, clash.code()), (409, "port_in_use"), "{}", clash.text);
    assert_eq!(
        clash.body,
        json!({"error": {"code": "port_in_use", "message": format!("port {port} already in use")}})
    );
    let own_clash = push(&bob, port);
    assert_eq!(own_clash.code(), "port_in_use", "{}", own_clash.text);
    assert!(
        own_clash.body["error"]["message"].as_str().is_some_and(|m| m.ends_with(&format!("rule {bobs}")))
    );
    assert!(own_clash.body["error"].get("rule_id").is_none(), "nothing was stored: {}", own_clash.text);

    // (b) Per-client counts are of the caller's own rules.
    let alices = w.rule(Who::Alice);
    let n_rules = |auth: &Auth<'_>| {
        let listed = w.api.call("GET", "/v1/clients", auth, None);
        let one = w.api.call("GET", "/v1/clients/edge-01", auth, None);
        let in_list = listed.body.as_array().expect("array").iter().find(|c| c["name"] == "edge-01").cloned();
        (in_list.expect("edge-01 listed")["n_rules"].as_u64(), one.body["n_rules"].as_u64())
    };
    assert_eq!(n_rules(&alice), (Some(1), Some(1)), "alice sees her one rule");
    assert_eq!(n_rules(&bob), (Some(1), Some(1)), "bob sees his one rule");
    assert_eq!(n_rules(&root), (Some(2), Some(2)), "the superadmin sees both");

    // (c) On every rule route, bob's rule answers alice exactly as a rule that does not exist.
    let missing = "987654321";
    let rule_routes: Vec<_> =
        TABLE.iter().filter(|(_, path, _)| path.starts_with("/v1/rules/{id}")).collect();
    assert_eq!(rule_routes.len(), 5, "get, change caps, delete, stats, stats stream");
    for (method, template, _) in rule_routes {
        let body = (*method == "PATCH").then(rule_caps_body);
        let foreign = w.api.call(method, &template.replace("{id}", &bobs), &alice, body.as_ref());
        let absent = w.api.call(method, &template.replace("{id}", missing), &alice, body.as_ref());
        assert_eq!(
            (foreign.status, foreign.code()),
            (404, "rule_not_found"),
            "{method} {template}: {}",
            foreign.text
        );
        assert_eq!(foreign.status, absent.status, "{method} {template}");
        assert_eq!(
            without_id(&foreign.text, &bobs),
            without_id(&absent.text, missing),
            "{method} {template}"
        );
        let mine = w.api.call("GET", &format!("/v1/rules/{alices}"), &alice, None);
        assert_eq!(mine.status, 200, "alice's own rule is reachable: {}", mine.text);
    }
    let kept = w.api.call("GET", &format!("/v1/rules/{bobs}"), &bob, None);
    assert_eq!(kept.status, 200, "alice's delete did not touch bob's rule: {}", kept.text);
    assert!(kept.body["spec"].get("rate_limit").is_none(), "nor did her change of caps: {}", kept.text);

    // (d) A client no grant of alice's names (edge-02 exists) answers her exactly like a
    // name that does not exist, on every route that takes a client: read, push, filter.
    let client_routes = |client: &str| {
        let body = json!({"client": client, "rule": {"listen_port": port, "target": "127.0.0.1:9"}});
        [
            w.api.call("GET", &format!("/v1/clients/{client}"), &alice, None),
            w.api.call("POST", "/v1/rules", &alice, Some(&body)),
            w.api.call("GET", &format!("/v1/rules?client={client}"), &alice, None),
        ]
    };
    for (hidden, absent) in client_routes("edge-02").iter().zip(client_routes("edge-99").iter()) {
        assert_eq!((hidden.status, hidden.code()), (404, "client_not_found"), "{}", hidden.text);
        assert_eq!(
            without_id(&hidden.text, "edge-02"),
            without_id(&absent.text, "edge-99"),
            "an ungranted client is told apart from a missing one"
        );
    }
    let seen = w.api.call("GET", "/v1/rules?client=edge-02", &root, None);
    assert_eq!(seen.status, 200, "the superadmin still filters by any client: {}", seen.text);
    w.server.assert_no_secret_leaked();
}
