//! Route handlers, one module per resource. Each handler turns its request into a core call
//! and the result into a DTO; none decides anything itself.

pub mod admin;
pub mod auth;
pub mod clients;
pub mod grants;
pub mod owner_caps;
pub mod quotas;
pub mod rules;
pub mod stream;
pub mod system;
pub mod traffic;
pub mod users;

use portunus_core::error::{ErrorCode, Failure};

/// Runs a synchronous core call (store I/O) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| Err(Failure::new(ErrorCode::Internal, format!("request task failed: {join}"))))
}
