//! The operator API keeps the contract its OpenAPI document states, checked from outside on
//! the real server: every route that takes a body refuses a body of the wrong JSON type with
//! an error body (never a success, never a 5xx), a known path asked with a method it does not
//! serve answers 405 with an error body and `Allow`, and the interactive API page is served
//! without a token from assets inside the binary.
//!
//! The routes come from the live document at test time, so a new route is covered without
//! touching this file.

use serde_json::Value;

use crate::harness::{Auth, Scenario, Server, ServerOpts};

/// Bodies that are valid JSON but never an object, which every request body of the API is.
const WRONG_TYPES: &[&str] = &["[]", "null", "\"a string\"", "42", "[{}]", "true"];

/// `(METHOD, path template, operation)` of every operation in `doc`.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        for (method, op) in item.as_object().expect("a path item") {
            ops.push((method.to_ascii_uppercase(), path.clone(), op.clone()));
        }
    }
    ops
}

/// `template` with every `{param}` replaced by a value of the right shape.
fn concrete(template: &str) -> String {
    template
        .replace("{id}", "1")
        .replace("{user}", "alice")
        .replace("{token}", "tk_00")
        .replace("{grant}", "gr_00")
        .replace("{client}", "edge-01")
}

/// Checks an error answer: a JSON `{"error":{"code","message"}}` body.
fn assert_error_body(content_type: Option<&str>, body: &Value, what: &str) {
    let content_type = content_type.unwrap_or("");
    assert!(content_type.starts_with("application/json"), "{what}: content type {content_type:?}");
    let code = body["error"]["code"].as_str().unwrap_or("");
    assert!(!code.is_empty(), "{what}: no error code in {body}");
    assert!(body["error"]["message"].is_string(), "{what}: no error message in {body}");
}

#[test]
fn every_route_with_a_body_refuses_a_body_of_the_wrong_json_type_with_an_error_code() {
    let scn = Scenario::new("wrong_json_types");
    let server = Server::start(&scn, ServerOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    let doc = api.call("GET", "/openapi.json", &Auth::None, None).body;
    let mut n_routes = 0;
    for (method, path, operation) in operations(&doc) {
        if operation.get("requestBody").is_none() {
            continue;
        }
        n_routes += 1;
        let url = concrete(&path);
        for body in WRONG_TYPES {
            let what = format!("{method} {path} with {body}");
            let auth = if operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().all(|r| r.as_object().is_some_and(|o| o.is_empty())))
            {
                Auth::None
            } else {
                op
            };
            let resp = api.call(&method, &url, &auth, Some(&serde_json::from_str(body).expect("JSON")));
            assert!(matches!(resp.status, 400 | 422), "{what}: answered {} {}", resp.status, resp.text);
            assert_error_body(resp.header("content-type"), &resp.body, &what);
            assert_eq!(resp.code(), "invalid_request", "{what}");
            let documented = &operation["responses"][resp.status.to_string()];
            assert!(documented.is_object(), "{what}: {} is not in the document", resp.status);
        }
    }
    assert!(n_routes >= 10, "the document lists {n_routes} routes with a body");
    assert!(server.proc().events_matching("api.internal_error", &[]).is_empty(), "no request ended in a 5xx");
}

#[test]
fn a_known_path_asked_with_an_unserved_method_answers_405_with_an_error_body_and_allow() {
    let scn = Scenario::new("method_not_allowed");
    let server = Server::start(&scn, ServerOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let doc = api.call("GET", "/openapi.json", &Auth::None, None).body;
    let mut n_paths = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let served: Vec<String> =
            item.as_object().expect("path item").keys().map(|m| m.to_ascii_uppercase()).collect();
        let Some(unserved) =
            ["PATCH", "PUT", "DELETE", "POST", "GET"].into_iter().find(|m| !served.iter().any(|s| s == m))
        else {
            continue;
        };
        n_paths += 1;
        let what = format!("{unserved} {path}");
        let resp = api.call(unserved, &concrete(path), &Auth::Bearer(&operator), None);
        assert_eq!(resp.status, 405, "{what}: {}", resp.text);
        assert_error_body(resp.header("content-type"), &resp.body, &what);
        assert_eq!(resp.code(), "method_not_allowed", "{what}");
        let allow = resp.header("allow").unwrap_or_else(|| panic!("{what}: no Allow header"));
        for method in &served {
            assert!(allow.contains(method.as_str()), "{what}: Allow {allow:?} lacks {method}");
        }
    }
    assert!(n_paths >= 10, "only {n_paths} paths checked");
    let resp = api.call("GET", "/v1/no-such-route", &Auth::Bearer(&operator), None);
    assert_eq!((resp.status, resp.code()), (404, "route_not_found"));
}

#[test]
fn the_api_page_is_served_without_a_token_from_embedded_assets_and_shows_the_live_document() {
    let scn = Scenario::new("api_page");
    let server = Server::start(&scn, ServerOpts::default());
    let api = server.api();

    let bare = api.call("GET", "/docs", &Auth::None, None);
    assert!(matches!(bare.status, 301 | 302 | 303 | 307 | 308), "GET /docs: {} {}", bare.status, bare.text);
    assert_eq!(bare.header("location"), Some("/docs/"));

    let page = api.call("GET", "/docs/", &Auth::None, None);
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")), "{:?}", page.headers);
    assert!(page.text.contains("swagger-ui"), "the page loads Swagger UI:\n{}", page.text);
    assert!(page.text.contains("swagger-initializer.js"), "the page loads its initializer");
    assert!(!page.text.contains("https://"), "the page loads nothing from the internet:\n{}", page.text);

    let css = api.call("GET", "/docs/swagger-ui.css", &Auth::None, None);
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").is_some_and(|t| t.starts_with("text/css")), "{:?}", css.headers);
    let js = api.call("GET", "/docs/swagger-ui-bundle.js", &Auth::None, None);
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").is_some_and(|t| t.contains("javascript")), "{:?}", js.headers);

    let init = api.call("GET", "/docs/swagger-initializer.js", &Auth::None, None);
    assert_eq!(init.status, 200);
    assert!(init.text.contains("\"/openapi.json\""), "the page shows the served document:\n{}", init.text);
    let doc = api.call("GET", "/openapi.json", &Auth::None, None);
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["info"]["title"].as_str(), Some("Portunus operator API"));

    let missing = api.call("GET", "/docs/no-such-asset.js", &Auth::None, None);
    assert_eq!(missing.status, 404);
}
