//! Full listings (`GET /v1/clients`, `GET /v1/rules` without filters, as a superadmin sees
//! them), rendered once per state generation and served from memory until it moves.
//!
//! Invariant: a body is kept under the generation read *before* its listing was taken, so a
//! change that lands while it renders only makes the next request render again; a caller
//! that got an answer to a write sees it in the next listing (the runtime moves its
//! generation before it answers).

use std::sync::Mutex;

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use portunus_core::error::{ErrorCode, Failure};
use portunus_runtime::Runtime;
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;
use crate::routes::blocking;

/// Which full listing.
#[derive(Debug, Clone, Copy)]
pub enum Listing {
    /// `GET /v1/clients`.
    Clients,
    /// `GET /v1/rules`.
    Rules,
}

/// The last rendered body of each full listing, with its generation.
#[derive(Debug, Default)]
pub struct ListingCache {
    clients: Mutex<Option<(u64, Bytes)>>,
    rules: Mutex<Option<(u64, Bytes)>>,
}

impl ListingCache {
    fn slot(&self, which: Listing) -> std::sync::MutexGuard<'_, Option<(u64, Bytes)>> {
        let slot = match which {
            Listing::Clients => &self.clients,
            Listing::Rules => &self.rules,
        };
        slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The body rendered at `generation`, if that is the one kept.
    pub fn get(&self, which: Listing, generation: u64) -> Option<Bytes> {
        self.slot(which).as_ref().filter(|(kept, _)| *kept == generation).map(|(_, body)| body.clone())
    }

    /// Keeps `body`, rendered from state at `generation` (replacing an older one).
    pub fn put(&self, which: Listing, generation: u64, body: Bytes) {
        let mut slot = self.slot(which);
        if slot.as_ref().is_none_or(|(kept, _)| *kept <= generation) {
            *slot = Some((generation, body));
        }
    }
}

/// A listing's 200: when `shared` (an unfiltered listing of an actor who
/// [sees everything](portunus_core::policy::Actor::sees_everything)), the body kept for the current generation, else
/// `render` run off the async workers (and kept, when shared).
pub async fn respond(
    state: &AppState,
    which: Listing,
    shared: bool,
    render: impl FnOnce(&Runtime) -> Result<Bytes, Failure> + Send + 'static,
) -> Result<Response, ApiError> {
    let generation = state.runtime.generation();
    if shared && let Some(body) = state.listings.get(which, generation) {
        return Ok(json(body));
    }
    let runtime = state.runtime.clone();
    let body = blocking(move || render(&runtime)).await?;
    if shared {
        state.listings.put(which, generation, body.clone());
    }
    Ok(json(body))
}

/// Encodes `items` as a JSON array into one buffer sized for them up front, each item as it
/// comes: a listing never holds all its DTOs at once (for 3,200 rules that was 1.4 MB more
/// to allocate, fault in and free on every render).
pub fn encode<T: Serialize>(
    items: impl ExactSizeIterator<Item = T>,
    bytes_per_item: usize,
) -> Result<Bytes, Failure> {
    use serde::Serializer as _;
    let mut out = Vec::with_capacity(2 + items.len().saturating_mul(bytes_per_item));
    (&mut serde_json::Serializer::new(&mut out))
        .collect_seq(items)
        .map_err(|err| Failure::new(ErrorCode::Internal, format!("cannot encode the listing: {err}")))?;
    Ok(Bytes::from(out))
}

/// A 200 with a JSON body.
pub fn json(body: Bytes) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_served_only_at_its_own_generation_and_never_replaced_by_an_older_one() {
        let cache = ListingCache::default();
        assert_eq!(cache.get(Listing::Rules, 0), None);
        cache.put(Listing::Rules, 7, Bytes::from_static(b"[7]"));
        assert_eq!(cache.get(Listing::Rules, 7), Some(Bytes::from_static(b"[7]")));
        assert_eq!(cache.get(Listing::Rules, 8), None, "a newer generation renders again");
        assert_eq!(cache.get(Listing::Clients, 7), None, "each listing has its own slot");
        // A slow render of older state finishing late does not displace the newer body.
        cache.put(Listing::Rules, 9, Bytes::from_static(b"[9]"));
        cache.put(Listing::Rules, 8, Bytes::from_static(b"[8]"));
        assert_eq!(cache.get(Listing::Rules, 9), Some(Bytes::from_static(b"[9]")));
        assert_eq!(cache.get(Listing::Rules, 8), None);
    }

    #[test]
    fn an_encoded_listing_is_a_json_array() {
        let body = encode(["a", "b"].into_iter(), 4).expect("encodes");
        assert_eq!(&body[..], br#"["a","b"]"#);
        assert_eq!(&encode(std::iter::empty::<u8>(), 4).expect("encodes")[..], b"[]");
    }
}
