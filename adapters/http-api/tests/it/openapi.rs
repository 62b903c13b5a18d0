//! The OpenAPI document: complete (every reference resolves, every response is described,
//! every operation has its error responses) and consistent with the auth layer's public
//! routes.

use std::collections::BTreeSet;

use portunus_core::policy::{PUBLIC_ROUTES, is_public_route};
use serde_json::Value;

fn doc() -> Value {
    serde_json::to_value(portunus_http::openapi()).expect("the document serialises")
}

fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.insert(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            ops.push((method.to_ascii_uppercase(), path.clone(), op.clone()));
        }
    }
    ops
}

#[test]
fn every_reference_resolves() {
    let doc = doc();
    let mut found = BTreeSet::new();
    refs(&doc, &mut found);
    for reference in found {
        let name = reference.strip_prefix("#/components/schemas/").expect("schema references only");
        assert!(doc["components"]["schemas"].get(name).is_some(), "{reference} does not resolve");
    }
}

#[test]
fn every_operation_documents_success_errors_and_descriptions() {
    let doc = doc();
    assert_eq!(doc["openapi"].as_str(), Some("3.1.0"));
    for (method, path, op) in operations(&doc) {
        let responses = op["responses"].as_object().expect("responses");
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path} has no success response");
        for (status, response) in responses {
            assert!(
                response["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{method} {path} {status}"
            );
            if !status.starts_with('2') {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    schema.as_str(),
                    Some("#/components/schemas/ErrorBody"),
                    "{method} {path} {status}"
                );
            }
        }
        if is_public_route(&method, &path) {
            assert!(!responses.contains_key("503"), "{method} {path}: public routes are never gated");
        } else {
            for status in ["401", "403", "503"] {
                assert!(responses.contains_key(status), "{method} {path} {status}");
            }
        }
        if op.get("requestBody").is_some() {
            assert!(responses.contains_key("413") && responses.contains_key("400"), "{method} {path}");
        }
        for parameter in op["parameters"].as_array().into_iter().flatten() {
            let location = parameter["in"].as_str().expect("in");
            let name = parameter["name"].as_str().expect("name");
            assert_eq!(
                location == "path",
                path.contains(&format!("{{{name}}}")),
                "{method} {path} {name} in {location}"
            );
        }
    }
}

#[test]
fn the_public_routes_are_exactly_the_ones_without_security() {
    let doc = doc();
    let unsecured: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .filter(|(_, _, op)| {
            op["security"]
                .as_array()
                .is_some_and(|s| s.iter().all(|r| r.as_object().is_some_and(|o| o.is_empty())))
        })
        .map(|(m, p, _)| (m, p))
        .collect();
    let public: BTreeSet<(String, String)> =
        PUBLIC_ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(unsecured, public);
}
