//! The operator Web UI: the files `cargo xtask web` built from `web/`, embedded in the binary
//! (see `ui_assets.rs`) and served from memory on the operator listener.
//!
//! Invariants: the UI never shadows the API — a path under `/v1`, the OpenAPI document and the
//! docs page get the API's own answer (a JSON `route_not_found` when unknown); a request path
//! is only ever compared with the embedded table, so no path (encoded `..` included) reaches
//! the filesystem; every UI response carries [`CONTENT_SECURITY_POLICY`], `nosniff` and a
//! referrer policy.

#[path = "ui_assets.rs"]
mod assets;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::error::not_found;
use crate::{DOCS_PATH, OPENAPI_PATH};

/// The UI's content security policy: its own scripts, styles and API only; no inline
/// script, no `eval`, no plugins, and no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Cache policy of content-hashed files (everything under `/assets/`): their name changes
/// with their content, so a browser may keep them for a year without asking.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Cache policy of `index.html` and the unhashed files: revalidate every time, so a new
/// server version is picked up at the next load.
const REVALIDATE: &str = "no-cache";

/// The page every client-side route loads.
const INDEX: &str = "/index.html";

/// The embedded file at URL path `path`, if any.
fn asset(path: &str) -> Option<&'static [u8]> {
    assets::ASSETS.iter().find(|(name, _)| *name == path).map(|(_, bytes)| *bytes)
}

/// The media type of an embedded file, from its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// True for the paths the API owns, which the UI must never answer.
fn is_api_path(path: &str) -> bool {
    path == "/v1"
        || path.starts_with("/v1/")
        || path == OPENAPI_PATH
        || path == DOCS_PATH
        || path.starts_with(&format!("{DOCS_PATH}/"))
}

/// A UI response: `bytes` as `path`'s media type with `cache` and the security headers.
fn respond(
    status: StatusCode,
    path: &str,
    bytes: &'static [u8],
    cache: &'static str,
    head: bool,
) -> Response {
    let body = if head { Body::empty() } else { Body::from(bytes) };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    with_security_headers(headers);
    response
}

/// Adds the headers every UI response carries.
fn with_security_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert("content-security-policy", HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
}

/// The operator listener's fallback: an embedded file for its exact path, `index.html` for
/// any other `GET`/`HEAD` outside the API (client-side routes), and the API's JSON 404 for
/// everything else — API paths, other methods, and missing hashed assets (a stale page must
/// not receive HTML for a script).
pub async fn fallback(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let head = method == Method::HEAD;
    if (method != Method::GET && !head) || is_api_path(path) {
        return not_found().await.into_response();
    }
    if path != INDEX
        && let Some(bytes) = asset(path)
    {
        let cache = if path.starts_with("/assets/") { IMMUTABLE } else { REVALIDATE };
        return respond(StatusCode::OK, path, bytes, cache, head);
    }
    if path.starts_with("/assets/") {
        return not_found().await.into_response();
    }
    match asset(INDEX) {
        Some(index) => respond(StatusCode::OK, INDEX, index, REVALIDATE, head),
        None => not_found().await.into_response(),
    }
}

#[cfg(test)]
mod tests;
