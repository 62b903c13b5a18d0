//! The process-level harness: scenarios (a directory per test under the cargo target tmp
//! dir), handles on the real `portunus-server` and `portunus-client` processes, their JSON
//! logs, and small TCP/HTTP tools on loopback.
//!
//! Invariants: every process a test starts is owned by a [`Proc`] and is stopped by PID when
//! that handle drops (SIGTERM, then SIGKILL after a grace period); every wait polls with
//! [`DEADLINE`] as a failure guard only, never as a measurement.

mod api;
mod client;
mod log;
mod net;
mod process;
mod scenario;
mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use api::{Api, Auth, Resp};
pub use client::{Client, ClientOpts};
pub use net::{
    Backend, connect, digest, free_port, hold_port, http_get, http_request, port_is_free, roundtrip,
    time_wait_sockets_on,
};
pub use process::{Output, Proc};
pub use scenario::Scenario;
pub use server::{Server, ServerOpts, run_server_cli, uri_of_command};

/// The start of the one plain stderr line `serve` prints: the onboarding setup token. It is
/// the documented place that secret appears, so the secret checks skip exactly these lines.
pub const SETUP_TOKEN_PREFIX: &str = "Portunus onboarding setup token: ";

/// How long any wait may take before the test fails. A guard against hangs, not a timing
/// assertion: every wait returns as soon as its condition holds.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often waits re-check their condition.
const POLL: Duration = Duration::from_millis(50);

/// Polls `probe` until it returns `Some`, failing the test after [`DEADLINE`].
pub fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// Polls `probe` like [`wait_until`], but returns `None` after [`DEADLINE`] so the caller
/// can fail with more context.
pub fn wait_until_or<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if started.elapsed() >= DEADLINE {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// The path of a workspace binary next to the test binary (`target/debug/<name>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    // Integration tests run from target/debug/deps/; the binaries sit one level up.
    let mut dir = exe.parent().expect("the test binary lives in a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --bins` first (cargo test does not build other packages' binaries)",
        path.display()
    );
    path
}

/// The file mode bits (permissions) of `path`.
pub fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
    meta.permissions().mode() & 0o777
}

/// A server with `edge-01` enrolled into `<scenario>/edge-01.bundle.json` and its client
/// connected.
pub fn server_with_edge(scenario: &std::sync::Arc<Scenario>, client_opts: &ClientOpts) -> (Server, Client) {
    let server = Server::start(scenario, ServerOpts::default());
    let bundle = scenario.path("edge-01.bundle.json");
    Client::enroll_ok(scenario, &server.enroll("edge-01"), &bundle);
    let client = Client::start_connected(scenario, &bundle, client_opts);
    (server, client)
}
