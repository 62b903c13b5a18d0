//! What a generator or a stateful fuzzer needs to walk the API: an example on every request
//! body, and OpenAPI links from the operations that create or list a resource to the
//! operations that need its id (create a user, then mint its token, then revoke that token).
//!
//! Invariant: every example is a body the server reads (a test deserialises each into its
//! DTO), and every link names an operation of the document with parameters it has. Links
//! never lead from a listing to a destructive operation on accounts, clients or grants, so a
//! fuzzer that follows them cannot delete the principal it runs as; only rules, which belong
//! to no credential, are removed from a listing.

use serde_json::{Value, json};
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, RefOr};

/// The example password of the request bodies (long enough for the server's rule).
pub const EXAMPLE_PASSWORD: &str = "correct-horse-battery-staple";

/// The setup token of the onboarding example: a placeholder (the real one is random and
/// printed once by `serve`), which the end-to-end hooks swap for the real one.
pub const EXAMPLE_SETUP_TOKEN: &str = "st_2f9c1d0e8b7a6f5e4d3c2b1a";

/// A request-body example of one operation.
pub(crate) struct BodyExample {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Route template.
    pub path: &'static str,
    /// The body.
    pub value: Value,
}

/// The request-body examples, one per operation that takes a body.
pub(crate) fn body_examples() -> Vec<BodyExample> {
    let ex = |method, path, value| BodyExample { method, path, value };
    vec![
        ex(
            "POST",
            "/v1/auth/onboarding",
            json!({"setup_token": EXAMPLE_SETUP_TOKEN, "user_id": "admin", "password": EXAMPLE_PASSWORD}),
        ),
        ex("POST", "/v1/auth/login", json!({"user_id": "alice", "password": EXAMPLE_PASSWORD})),
        ex(
            "PUT",
            "/v1/auth/password",
            json!({"current_password": EXAMPLE_PASSWORD, "new_password": "a-longer-passphrase-for-2027"}),
        ),
        ex("POST", "/v1/users", json!({"id": "bob", "role": "user", "password": "another-long-passphrase"})),
        ex("POST", "/v1/users/{user}/tokens", json!({"name": "ci"})),
        ex(
            "POST",
            "/v1/grants",
            json!({"user": "alice", "client": "edge-01", "ports": "20000-20099", "protocols": ["tcp", "udp"]}),
        ),
        ex("POST", "/v1/clients", json!({"name": "edge-02", "expires_in_secs": 600})),
        ex("PATCH", "/v1/clients/{client}", json!({"name": "edge-03"})),
        ex("POST", "/v1/clients/{client}/enrollment", json!({"expires_in_secs": 600})),
        ex(
            "POST",
            "/v1/rules",
            json!({
                "client": "edge-01",
                "rule": {"name": "web", "protocol": "tcp", "listen_port": 24180, "target": "127.0.0.1:8080"},
                "ack_timeout_ms": 5000
            }),
        ),
        ex("PUT", "/v1/settings/advertised-endpoint", json!({"endpoint": null})),
        ex("PUT", "/v1/users/{user}/quotas/{client}", json!({"monthly_bytes": 1_000_000_000_000_u64})),
        ex("PATCH", "/v1/users/{user}/quotas/{client}", json!({"clear_period_usage": true})),
        ex(
            "PATCH",
            "/v1/rules/{id}",
            json!({"rate_limit": {"bandwidth_in_bps": 10_000_000, "bandwidth_out_bps": 10_000_000, "concurrent_connections": 100}}),
        ),
        ex(
            "PUT",
            "/v1/users/{user}/owner-caps/{client}",
            json!({"bandwidth_in_bps": 50_000_000, "new_connections_per_sec": 200, "concurrent_connections": 500}),
        ),
    ]
}

/// A link from one response of an operation to another operation.
pub(crate) struct FlowLink {
    /// Source operation: method, upper case.
    pub method: &'static str,
    /// Source operation: route template.
    pub path: &'static str,
    /// The source response's status.
    pub status: &'static str,
    /// The link's name.
    pub name: &'static str,
    /// The target operation's `operationId`.
    pub operation_id: &'static str,
    /// Target parameters: name → runtime expression.
    pub parameters: &'static [(&'static str, &'static str)],
    /// Target request body (runtime expressions inside are evaluated), merged into a
    /// generated one by tools that support it.
    pub request_body: Option<Value>,
}

/// The links of the document.
pub(crate) fn links() -> Vec<FlowLink> {
    let link = |method, path, status, name, operation_id, parameters| FlowLink {
        method,
        path,
        status,
        name,
        operation_id,
        parameters,
        request_body: None,
    };
    const USER_ID: &[(&str, &str)] = &[("user", "$response.body#/id")];
    const FIRST_USER: &[(&str, &str)] = &[("user", "$response.body#/0/id")];
    const GRANT_ID: &[(&str, &str)] = &[("grant", "$response.body#/id")];
    const ENROLLED_CLIENT: &[(&str, &str)] = &[("client", "$response.body#/client/id")];
    const CLIENT_ID: &[(&str, &str)] = &[("client", "$response.body#/id")];
    const FIRST_CLIENT: &[(&str, &str)] = &[("client", "$response.body#/0/id")];
    const RULE_ID: &[(&str, &str)] = &[("id", "$response.body#/id")];
    const FIRST_RULE: &[(&str, &str)] = &[("id", "$response.body#/0/id")];
    const GRANT_PAIR: &[(&str, &str)] =
        &[("user", "$response.body#/user"), ("client", "$response.body#/client")];
    const QUOTA_PAIR: &[(&str, &str)] = GRANT_PAIR;
    const FIRST_QUOTA_PAIR: &[(&str, &str)] =
        &[("user", "$response.body#/0/user"), ("client", "$response.body#/0/client")];
    const ENVELOPE_PAIR: &[(&str, &str)] = GRANT_PAIR;
    const FIRST_ENVELOPE_PAIR: &[(&str, &str)] = FIRST_QUOTA_PAIR;
    vec![
        link("POST", "/v1/users", "201", "GetUser", "get_user", USER_ID),
        link("POST", "/v1/users", "201", "ListTokens", "list_tokens", USER_ID),
        link("POST", "/v1/users", "201", "CreateToken", "create_token", USER_ID),
        link("POST", "/v1/users", "201", "DeleteUser", "delete_user", USER_ID),
        FlowLink {
            request_body: Some(json!({
                "user": "$response.body#/id", "client": "*", "ports": "20000-20099", "protocols": ["tcp"]
            })),
            ..link("POST", "/v1/users", "201", "GrantUser", "create_grant", &[])
        },
        link("GET", "/v1/users", "200", "GetFirstUser", "get_user", FIRST_USER),
        link("GET", "/v1/users", "200", "ListFirstUserTokens", "list_tokens", FIRST_USER),
        link("GET", "/v1/auth/me", "200", "ListMyTokens", "list_tokens", USER_ID),
        link(
            "POST",
            "/v1/users/{user}/tokens",
            "201",
            "RevokeToken",
            "revoke_token",
            &[("user", "$response.body#/user"), ("token", "$response.body#/id")],
        ),
        link("POST", "/v1/grants", "201", "GetGrant", "get_grant", GRANT_ID),
        link("POST", "/v1/grants", "201", "DeleteGrant", "delete_grant", GRANT_ID),
        link("GET", "/v1/grants", "200", "GetFirstGrant", "get_grant", &[("grant", "$response.body#/0/id")]),
        link("POST", "/v1/clients", "201", "GetClient", "get_client", ENROLLED_CLIENT),
        link("POST", "/v1/clients", "201", "RenameClient", "rename_client", ENROLLED_CLIENT),
        link("POST", "/v1/clients", "201", "ReenrollClient", "reenroll_client", ENROLLED_CLIENT),
        link("POST", "/v1/clients", "201", "RevokeClient", "revoke_client", ENROLLED_CLIENT),
        link("PATCH", "/v1/clients/{client}", "200", "GetClient", "get_client", CLIENT_ID),
        link("POST", "/v1/clients/{client}/revoke", "200", "DeleteClient", "delete_client", CLIENT_ID),
        link("GET", "/v1/clients", "200", "GetFirstClient", "get_client", FIRST_CLIENT),
        FlowLink {
            request_body: Some(json!({"client": "$response.body#/0/id"})),
            ..link("GET", "/v1/clients", "200", "PushToFirstClient", "push_rule", &[])
        },
        link("POST", "/v1/rules", "201", "GetRule", "get_rule", RULE_ID),
        link("POST", "/v1/rules", "201", "RuleStats", "rule_stats", RULE_ID),
        link("POST", "/v1/rules", "201", "RemoveRule", "remove_rule", RULE_ID),
        link("GET", "/v1/rules", "200", "GetFirstRule", "get_rule", FIRST_RULE),
        link("GET", "/v1/rules", "200", "FirstRuleStats", "rule_stats", FIRST_RULE),
        link("GET", "/v1/rules", "200", "RemoveFirstRule", "remove_rule", FIRST_RULE),
        FlowLink {
            request_body: Some(json!({"rate_limit": {"concurrent_connections": 100}})),
            ..link("POST", "/v1/rules", "201", "SetRuleCaps", "set_rule_caps", RULE_ID)
        },
        FlowLink {
            request_body: Some(json!({"rate_limit": {}})),
            ..link("GET", "/v1/rules", "200", "LiftFirstRuleCaps", "set_rule_caps", FIRST_RULE)
        },
        // A grant naming a client is what a quota needs; from the quota, its other operations.
        FlowLink {
            request_body: Some(json!({"monthly_bytes": 1_000_000_000_000_u64})),
            ..link("POST", "/v1/grants", "201", "SetQuota", "set_quota", GRANT_PAIR)
        },
        link("PUT", "/v1/users/{user}/quotas/{client}", "200", "QuotaStatus", "quota_status", QUOTA_PAIR),
        FlowLink {
            request_body: Some(json!({"clear_period_usage": true})),
            ..link("PUT", "/v1/users/{user}/quotas/{client}", "200", "PatchQuota", "patch_quota", QUOTA_PAIR)
        },
        link("PUT", "/v1/users/{user}/quotas/{client}", "200", "DeleteQuota", "delete_quota", QUOTA_PAIR),
        link("GET", "/v1/quotas", "200", "FirstQuotaStatus", "quota_status", FIRST_QUOTA_PAIR),
        link("GET", "/v1/quotas", "200", "DeleteFirstQuota", "delete_quota", FIRST_QUOTA_PAIR),
        // The same for owner envelopes.
        FlowLink {
            request_body: Some(json!({"concurrent_connections": 200})),
            ..link("POST", "/v1/grants", "201", "SetOwnerCaps", "set_owner_caps", GRANT_PAIR)
        },
        link(
            "PUT",
            "/v1/users/{user}/owner-caps/{client}",
            "200",
            "GetOwnerCaps",
            "get_owner_caps",
            ENVELOPE_PAIR,
        ),
        link(
            "PUT",
            "/v1/users/{user}/owner-caps/{client}",
            "200",
            "DeleteOwnerCaps",
            "delete_owner_caps",
            ENVELOPE_PAIR,
        ),
        link("GET", "/v1/owner-caps", "200", "FirstOwnerCaps", "get_owner_caps", FIRST_ENVELOPE_PAIR),
        link(
            "GET",
            "/v1/owner-caps",
            "200",
            "DeleteFirstOwnerCaps",
            "delete_owner_caps",
            FIRST_ENVELOPE_PAIR,
        ),
    ]
}

/// The operation `method path` of `doc`, if it has one.
fn operation_mut<'a>(doc: &'a mut OpenApi, method: &str, path: &str) -> Option<&'a mut Operation> {
    let item = doc.paths.paths.get_mut(path)?;
    match method {
        "GET" => item.get.as_mut(),
        "POST" => item.post.as_mut(),
        "PUT" => item.put.as_mut(),
        "PATCH" => item.patch.as_mut(),
        "DELETE" => item.delete.as_mut(),
        _ => None,
    }
}

/// Adds the request examples and the links to `doc`. An entry naming an operation or a
/// response the document lacks is skipped (a unit test keeps the tables and the router in
/// step).
pub fn add_flows(doc: &mut OpenApi) {
    for example in body_examples() {
        let Some(op) = operation_mut(doc, example.method, example.path) else { continue };
        let Some(RefOr::T(body)) = op.request_body.as_mut() else { continue };
        if let Some(RefOr::T(content)) = body.content.get_mut("application/json") {
            content.example = Some(example.value);
        }
    }
    for flow in links() {
        let Some(op) = operation_mut(doc, flow.method, flow.path) else { continue };
        let Some(RefOr::T(response)) = op.responses.responses.get_mut(flow.status) else { continue };
        let mut builder = LinkBuilder::new().operation_id(flow.operation_id);
        for (name, expression) in flow.parameters {
            builder = builder.parameter(*name, *expression);
        }
        if let Some(body) = flow.request_body {
            builder = builder.request_body(Some(body));
        }
        response.links.insert(flow.name.to_owned(), RefOr::T(builder.build()));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::de::DeserializeOwned;

    use super::*;
    use crate::dto::*;

    fn doc() -> Value {
        serde_json::to_value(crate::openapi()).expect("the document serialises")
    }

    /// `(METHOD, path) → operation` of the document.
    fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
        let mut ops = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                ops.insert((method.to_ascii_uppercase(), path.clone()), op.clone());
            }
        }
        ops
    }

    fn reads<T: DeserializeOwned>(value: &Value) -> bool {
        serde_json::from_value::<T>(value.clone()).is_ok()
    }

    #[test]
    fn every_request_body_has_an_example_the_server_reads() {
        let doc = doc();
        let examples = body_examples();
        for ((method, path), op) in operations(&doc) {
            let Some(body) = op.get("requestBody") else { continue };
            let example = &body["content"]["application/json"]["example"];
            assert!(
                !example.is_null() || path.ends_with("advertised-endpoint"),
                "{method} {path} has no example"
            );
            let ours = examples.iter().find(|e| e.method == method && e.path == path).expect("in the table");
            let read = match (method.as_str(), path.as_str()) {
                ("POST", "/v1/auth/onboarding") => reads::<OnboardingRequest>(&ours.value),
                ("POST", "/v1/auth/login") => reads::<LoginRequest>(&ours.value),
                ("PUT", "/v1/auth/password") => reads::<PasswordChangeRequest>(&ours.value),
                ("POST", "/v1/users") => reads::<NewUserRequest>(&ours.value),
                ("POST", "/v1/users/{user}/tokens") => reads::<NewTokenRequest>(&ours.value),
                ("POST", "/v1/grants") => reads::<NewGrantRequest>(&ours.value),
                ("POST", "/v1/clients") => reads::<EnrollRequest>(&ours.value),
                ("PATCH", "/v1/clients/{client}") => reads::<RenameClientRequest>(&ours.value),
                ("POST", "/v1/clients/{client}/enrollment") => reads::<ReenrollRequest>(&ours.value),
                ("POST", "/v1/rules") => {
                    reads::<PushRuleRequest>(&ours.value)
                        && serde_json::from_value::<PushRuleRequest>(ours.value.clone()).is_ok_and(|r| {
                            r.rule.validate(portunus_core::rule::RuleLimits::default()).is_ok()
                        })
                }
                ("PUT", "/v1/settings/advertised-endpoint") => reads::<EndpointUpdate>(&ours.value),
                ("PUT", "/v1/users/{user}/quotas/{client}") => {
                    serde_json::from_value::<portunus_core::quota::QuotaSpec>(ours.value.clone())
                        .is_ok_and(|spec| spec.validate().is_ok())
                }
                ("PATCH", "/v1/users/{user}/quotas/{client}") => {
                    serde_json::from_value::<portunus_core::quota::QuotaPatch>(ours.value.clone())
                        .is_ok_and(|patch| patch.validate().is_ok())
                }
                ("PATCH", "/v1/rules/{id}") => serde_json::from_value::<RuleCapsRequest>(ours.value.clone())
                    .is_ok_and(|body| !body.rate_limit.is_empty() && body.rate_limit.validate().is_ok()),
                ("PUT", "/v1/users/{user}/owner-caps/{client}") => {
                    serde_json::from_value::<portunus_core::ratelimit::OwnerEnvelope>(ours.value.clone())
                        .is_ok_and(|envelope| envelope.validate().is_ok())
                }
                other => panic!("{other:?}: add its body type to this test"),
            };
            assert!(read, "the server does not read the example of {method} {path}");
        }
    }

    #[test]
    fn every_link_targets_an_operation_with_the_parameters_it_sets() {
        let doc = doc();
        let ops = operations(&doc);
        let by_id: BTreeMap<String, &Value> =
            ops.values().filter_map(|op| Some((op["operationId"].as_str()?.to_owned(), op))).collect();
        let mut n_links = 0;
        for ((method, path), op) in &ops {
            for (status, response) in op["responses"].as_object().expect("responses") {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    n_links += 1;
                    let target = link["operationId"].as_str().expect("operationId");
                    let target_op =
                        by_id.get(target).unwrap_or_else(|| panic!("{method} {path} {status} {name}"));
                    let params: BTreeSet<&str> = target_op["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["name"].as_str())
                        .collect();
                    for param in link["parameters"].as_object().into_iter().flatten().map(|(k, _)| k) {
                        assert!(params.contains(param.as_str()), "{name}: {target} has no parameter {param}");
                    }
                    if link.get("requestBody").is_some() {
                        assert!(target_op.get("requestBody").is_some(), "{name}: {target} takes no body");
                    }
                }
            }
        }
        assert_eq!(n_links, links().len(), "every link of the table landed on a response");
    }

    #[test]
    fn every_operation_with_a_path_parameter_documents_its_404() {
        let doc = doc();
        for ((method, path), op) in operations(&doc) {
            if path.contains('{') {
                assert!(op["responses"].get("404").is_some(), "{method} {path}");
            }
        }
    }
}
