//! The UI's serving rules, asked of the whole operator router over an in-memory runtime:
//! hashed assets cache forever, client-side routes get `index.html`, the API is never
//! shadowed, and no path reaches the filesystem.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use axum::response::Response;
use portunus_core::config::ServerSettings;
use portunus_core::endpoint::San;
use portunus_core::secret::SecretHash;
use portunus_core::service::ServerIdentity;
use portunus_core::test_support::{CountingEntropy, FakeHasher, ManualClock, MemoryStore};
use portunus_runtime::{Ports, Runtime};
use portunus_telemetry::metrics::ServerMetrics;
use tower::ServiceExt;

use super::{CONTENT_SECURITY_POLICY, assets};
use crate::{AppState, api_router};

fn router() -> axum::Router {
    let settings = ServerSettings::resolve(Default::default()).expect("default settings");
    let identity = ServerIdentity {
        cert_sha256: "ab".repeat(32),
        sans: vec![San::Ip("127.0.0.1".parse().expect("ip"))],
        control_addr: "127.0.0.1:7443".parse().expect("addr"),
    };
    let ports = Ports {
        store: Arc::new(MemoryStore::default()),
        clock: Arc::new(ManualClock::at(1_000_000)),
        entropy: Arc::new(CountingEntropy::default()),
        hasher: Arc::new(FakeHasher),
        observer: None,
    };
    let runtime =
        Runtime::new(ports, settings, identity, SecretHash::of("operator-secret")).expect("runtime");
    api_router(AppState::new(runtime, Arc::new(ServerMetrics::new("test"))))
}

async fn call(method: &str, path: &str) -> (Response, Vec<u8>) {
    let request = Request::builder().method(method).uri(path).body(Body::empty()).expect("request");
    let response = router().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, 1 << 24).await.expect("body").to_vec();
    (Response::from_parts(parts, Body::empty()), bytes)
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn index_html() -> &'static [u8] {
    assets::ASSETS.iter().find(|(name, _)| *name == "/index.html").expect("the build has index.html").1
}

fn assert_ui_headers(response: &Response) {
    assert_eq!(header(response, "content-security-policy"), CONTENT_SECURITY_POLICY);
    assert_eq!(header(response, "x-content-type-options"), "nosniff");
    assert_eq!(header(response, "referrer-policy"), "no-referrer");
}

fn assert_api_not_found(response: &Response, body: &[u8]) {
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(header(response, "content-type").starts_with("application/json"));
    let value: serde_json::Value = serde_json::from_slice(body).expect("a JSON error body");
    assert_eq!(value["error"]["code"], "route_not_found");
}

#[tokio::test]
async fn root_and_client_side_routes_serve_index_html_uncached() {
    for path in ["/", "/rules/12", "/clients", "/login?next=%2Fusers"] {
        let (response, body) = call("GET", path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(body, index_html(), "{path}");
        assert_eq!(header(&response, "cache-control"), "no-cache", "{path}");
        assert!(header(&response, "content-type").starts_with("text/html"), "{path}");
        assert_ui_headers(&response);
    }
}

#[tokio::test]
async fn hashed_assets_are_immutable_with_their_media_type() {
    let scripts: Vec<_> = assets::ASSETS.iter().filter(|(name, _)| name.starts_with("/assets/")).collect();
    assert!(scripts.iter().any(|(name, _)| name.ends_with(".js")), "the build has a script");
    for (name, bytes) in scripts {
        let (response, body) = call("GET", name).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        assert_eq!(body, *bytes, "{name}");
        assert!(header(&response, "cache-control").contains("immutable"), "{name}");
        let expected = if name.ends_with(".js") { "text/javascript" } else { "text/css" };
        assert!(header(&response, "content-type").starts_with(expected), "{name}");
        assert_ui_headers(&response);
    }
}

#[tokio::test]
async fn a_missing_hashed_asset_is_a_404_not_the_page() {
    let (response, body) = call("GET", "/assets/index-doesnotexist.js").await;
    assert_api_not_found(&response, &body);
}

#[tokio::test]
async fn api_paths_are_never_shadowed() {
    for path in ["/v1/nope", "/v1", "/v1/rules/1/nope"] {
        let (response, body) = call("GET", path).await;
        assert_api_not_found(&response, &body);
    }
    let (response, body) = call("GET", "/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("the document is JSON");
    assert!(doc["paths"]["/v1/rules"].is_object());
    let (response, body) = call("GET", "/docs/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(body, index_html(), "the docs page is Swagger UI, not the console");
    let (response, _) = call("GET", "/v1/auth/onboarding").await;
    assert_eq!(response.status(), StatusCode::OK, "known API routes still answer");
}

#[tokio::test]
async fn writes_to_unknown_paths_get_the_api_404() {
    let (response, body) = call("POST", "/clients").await;
    assert_api_not_found(&response, &body);
}

#[tokio::test]
async fn encoded_traversal_never_reads_the_filesystem() {
    for path in ["/..%2f..%2fCargo.toml", "/%2e%2e/%2e%2e/Cargo.toml", "/assets/..%2f..%2fCargo.toml"] {
        let (response, body) = call("GET", path).await;
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("[package]") && !text.contains("[workspace]"), "{path} leaked a file");
        assert!(
            response.status() == StatusCode::NOT_FOUND || body == index_html(),
            "{path} answered {} with something else",
            response.status()
        );
    }
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let (response, body) = call("HEAD", "/clients").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body.is_empty());
    assert_ui_headers(&response);
}
