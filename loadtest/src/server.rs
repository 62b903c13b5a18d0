//! The `portunus-server serve` child: start on loopback, wait for readiness, stop by PID.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;

/// How long a start may take until `/readyz` answers 200.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a SIGTERM may take before the child is killed (the server itself waits at most
/// 10 s for its tasks, then flushes totals).
const STOP_DEADLINE: Duration = Duration::from_secs(20);

/// `<data-dir>/server.addr`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Addrs {
    /// Control listener (gRPC over TLS).
    pub control: SocketAddr,
    /// Operator API.
    pub operator_http: SocketAddr,
    /// `/metrics`, `/readyz`.
    pub metrics: SocketAddr,
    /// The serving process.
    pub pid: u32,
}

/// A running server. Dropping it stops the child (SIGTERM, then SIGKILL).
pub struct Server {
    child: Option<Child>,
    /// Where it listens.
    pub addrs: Addrs,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The binary it runs.
    pub bin: PathBuf,
}

fn loopback(addr: SocketAddr) -> Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address; the load test only talks to loopback");
    }
    Ok(addr)
}

impl Server {
    /// Starts `bin --data-dir DIR serve` on loopback with the control listener on `control`
    /// (port 0 for any) and the two HTTP listeners on free ports; stderr is appended to
    /// `<dir>/server.log`. Returns once `/readyz` answers 200.
    pub async fn start(bin: &Path, data_dir: &Path, control: SocketAddr) -> Result<Server> {
        let control = loopback(control)?;
        if !data_dir.exists() {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .context("cannot open server.log")?;
        let started = Instant::now();
        let mut command = Command::new(bin);
        // The server's own log filter, e.g. `info,portunus_runtime=debug` for the push path's
        // spans; otherwise the default, so a stray PORTUNUS_LOG cannot slow the run down.
        match std::env::var("PORTUNUS_LOADTEST_SERVER_LOG") {
            Ok(filter) => command.env("PORTUNUS_LOG", filter),
            Err(_) => command.env_remove("PORTUNUS_LOG"),
        };
        let child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--control-listen", &control.to_string()])
            .args(["--operator-http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .env_remove("PORTUNUS_OPERATOR_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut server = Server {
            child: Some(child),
            addrs: Addrs { control, operator_http: control, metrics: control, pid: 0 },
            data_dir: data_dir.to_owned(),
            bin: bin.to_owned(),
        };
        let pid = server.pid();
        let addr_file = data_dir.join("server.addr");
        let deadline = started + START_DEADLINE;
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
        loop {
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                server.child = None;
                bail!("portunus-server exited during start ({status}); see {}", log_path(data_dir).display());
            }
            if Instant::now() > deadline {
                bail!("portunus-server not ready within {START_DEADLINE:?}");
            }
            let addrs = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|text| serde_json::from_str::<Addrs>(&text).ok())
                .filter(|a| a.pid == pid);
            if let Some(addrs) = addrs {
                let url = format!("http://{}/readyz", loopback(addrs.metrics)?);
                if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                    loopback(addrs.operator_http)?;
                    loopback(addrs.control)?;
                    server.addrs = addrs;
                    return Ok(server);
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The operator API base URL.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addrs.operator_http)
    }

    /// The operator token the server generated.
    pub fn operator_token(&self) -> Result<String> {
        let path = self.data_dir.join("operator.token");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_owned())
    }

    /// Sends SIGTERM to the child and waits for it to exit; kills it after the deadline.
    /// Returns how long the clean stop took, or an error when it had to be killed.
    pub async fn stop(&mut self) -> Result<Duration> {
        let Some(mut child) = self.child.take() else { bail!("portunus-server is not running") };
        let started = Instant::now();
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        if matches!(child.try_wait(), Ok(Some(_))) {
            bail!("portunus-server had already exited");
        }
        kill(pid, Signal::SIGTERM).context("cannot signal portunus-server")?;
        while started.elapsed() < STOP_DEADLINE {
            if let Ok(Some(status)) = child.try_wait() {
                if !status.success() {
                    bail!("portunus-server exited with {status} after SIGTERM");
                }
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("portunus-server did not stop within {STOP_DEADLINE:?} of SIGTERM; killed it")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The server's log file in `data_dir`.
pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server.log")
}

/// The warn and error events in the server's JSON log: count by `level event`, and the first
/// such line of each kind (shortened).
pub fn log_problems(data_dir: &Path) -> BTreeMap<String, (u64, String)> {
    let mut found: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(log_path(data_dir)) else { return found };
    for line in text.lines() {
        let kind = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) => {
                let level = value.get("level").and_then(|v| v.as_str()).unwrap_or("?");
                if level != "warn" && level != "error" {
                    continue;
                }
                format!("{level} {}", value.get("event").and_then(|v| v.as_str()).unwrap_or("?"))
            }
            Err(_) if line.trim().is_empty() || line.starts_with("Portunus onboarding setup token") => {
                continue;
            }
            Err(_) => "unparsed line".to_owned(),
        };
        let entry = found.entry(kind).or_insert_with(|| (0, line.chars().take(300).collect()));
        entry.0 += 1;
    }
    found
}
