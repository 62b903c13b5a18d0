//! `portunus-server`: `serve` as a long-running [`Proc`], and the operator CLI run against
//! its data dir.
//!
//! Invariant: a started server is ready when `<data-dir>/server.addr` names this very
//! process (its `pid` field), so a stale file from an earlier run is never mistaken for it.
//! A restart reuses the data dir and the addresses the first run bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

use super::process::clean_env;
use super::{Output, Proc, Scenario, bin, wait_until};

/// How `serve` is started.
#[derive(Debug, Clone)]
pub struct ServerOpts {
    /// `--control-listen`.
    pub control_listen: String,
    /// `--operator-http-listen`.
    pub operator_http_listen: String,
    /// `--metrics-listen`, or no flag at all.
    pub metrics_listen: Option<String>,
    /// Extra `serve` flags.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            control_listen: "127.0.0.1:0".into(),
            operator_http_listen: "127.0.0.1:0".into(),
            metrics_listen: Some("127.0.0.1:0".into()),
            args: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl ServerOpts {
    /// Adds `serve` flags.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// The addresses a server wrote to `server.addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAddrs {
    /// gRPC control listener.
    pub control: SocketAddr,
    /// Operator API.
    pub operator_http: SocketAddr,
    /// Metrics and health.
    pub metrics: SocketAddr,
}

/// A running `portunus-server serve`.
pub struct Server {
    scenario: Arc<Scenario>,
    data_dir: PathBuf,
    opts: ServerOpts,
    proc: Option<Proc>,
    past: Vec<Proc>,
    addrs: ServerAddrs,
}

fn serve_command(data_dir: &Path, opts: &ServerOpts) -> Command {
    let mut command = Command::new(bin("portunus-server"));
    clean_env(&mut command);
    command.arg("--data-dir").arg(data_dir).args(["serve", "--control-listen", &opts.control_listen]);
    command.args(["--operator-http-listen", &opts.operator_http_listen]);
    if let Some(metrics) = &opts.metrics_listen {
        command.args(["--metrics-listen", metrics]);
    }
    // Reports every second, unless the test asks for another interval.
    if !opts.args.iter().any(|a| a == "--stats-interval-secs") {
        command.args(["--stats-interval-secs", "1"]);
    }
    command.args(&opts.args);
    command.envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
}

/// Reads `server.addr` if it was written by `pid`.
fn read_addrs(data_dir: &Path, pid: i32) -> Option<ServerAddrs> {
    let text = std::fs::read_to_string(data_dir.join("server.addr")).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    if value.get("pid")?.as_i64()? != i64::from(pid) {
        return None;
    }
    let addr = |key: &str| value.get(key)?.as_str()?.parse::<SocketAddr>().ok();
    Some(ServerAddrs {
        control: addr("control")?,
        operator_http: addr("operator_http")?,
        metrics: addr("metrics")?,
    })
}

impl Server {
    /// Starts `serve` on the scenario's `srv` data dir and waits until it is ready.
    pub fn start(scenario: &Arc<Scenario>, opts: ServerOpts) -> Server {
        Server::start_in(scenario, &scenario.path("srv"), opts)
    }

    /// Starts `serve` on `data_dir` and waits until it is ready.
    pub fn start_in(scenario: &Arc<Scenario>, data_dir: &Path, opts: ServerOpts) -> Server {
        let proc = Server::spawn_serve(scenario, data_dir, &opts);
        let addrs = Server::wait_ready(&proc, data_dir);
        let server = Server {
            scenario: scenario.clone(),
            data_dir: data_dir.to_path_buf(),
            opts,
            proc: Some(proc),
            past: Vec::new(),
            addrs,
        };
        server.remember_operator_secrets();
        server.remember_setup_token();
        server
    }

    /// The onboarding setup token the running `serve` printed, if it printed one.
    pub fn setup_token(&self) -> Option<String> {
        let proc = self.proc.as_ref()?;
        // The line is written before server.addr, so it is there once the server is ready.
        proc.log_text()
            .lines()
            .filter_map(|l| l.strip_prefix(super::SETUP_TOKEN_PREFIX))
            .next_back()
            .map(|t| t.trim().to_owned())
    }

    fn remember_setup_token(&self) {
        if let Some(token) = self.setup_token() {
            self.scenario.remember_secret("onboarding setup token", &token);
        }
    }

    /// The operator token.
    pub fn operator_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("operator.token"))
            .expect("operator.token")
            .trim()
            .to_owned()
    }

    /// The operator API.
    pub fn api(&self) -> super::Api {
        super::Api::new(self.scenario.clone(), self.addrs.operator_http)
    }

    /// Every audit record, paged through `GET /v1/audit` with the operator token.
    pub fn audit_rows(&self) -> Vec<Value> {
        let api = self.api();
        let token = self.operator_token();
        let mut rows = Vec::new();
        let mut path = "/v1/audit?limit=500".to_owned();
        loop {
            let page = api.call("GET", &path, &super::Auth::Bearer(&token), None);
            assert_eq!(page.status, 200, "GET {path}: {}", page.text);
            rows.extend(page.body["records"].as_array().cloned().unwrap_or_default());
            match page.body["next_cursor"].as_str() {
                Some(cursor) => path = format!("/v1/audit?limit=500&cursor={cursor}"),
                None => return rows,
            }
        }
    }

    /// Fails when any log line of the scenario or any audit row holds a recorded secret.
    pub fn assert_no_secret_leaked(&self) {
        self.scenario.assert_logs_free_of_secrets();
        let rows = self.audit_rows();
        assert!(!rows.is_empty(), "the audit trail is empty");
        for row in &rows {
            self.scenario.assert_free_of_secrets(&format!("audit row {row}"), &row.to_string());
        }
    }

    /// Spawns `serve` without waiting for anything (for starts that must fail).
    pub fn spawn_serve(scenario: &Scenario, data_dir: &Path, opts: &ServerOpts) -> Proc {
        let (log, stdout) = scenario.next_files("server");
        Proc::spawn("portunus-server serve", serve_command(data_dir, opts), &log, Some(&stdout))
    }

    fn wait_ready(proc: &Proc, data_dir: &Path) -> ServerAddrs {
        let pid = proc.pid().as_raw();
        wait_until("server.addr of the new server", || {
            if let Some(code) = proc.exit_status() {
                panic!("portunus-server serve exited with {code} before it was ready:\n{}", proc.log_text());
            }
            read_addrs(data_dir, pid)
        })
    }

    fn remember_operator_secrets(&self) {
        if let Ok(token) = std::fs::read_to_string(self.data_dir.join("operator.token")) {
            self.scenario.remember_secret("operator token", token.trim());
        }
        if let Ok(key) = std::fs::read_to_string(self.data_dir.join("server.key")) {
            for line in key.lines().filter(|l| l.len() >= 32 && !l.starts_with("-----")) {
                self.scenario.remember_secret("server key", line);
            }
        }
    }

    /// The `serve` process. Panics while the server is stopped.
    pub fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("the server is running")
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The addresses the first run bound.
    pub fn addrs(&self) -> ServerAddrs {
        self.addrs
    }

    /// Sends SIGTERM, waits for the exit and returns its status; the handle keeps the data
    /// dir and addresses for [`Server::start_again`].
    pub fn stop(&mut self) -> i32 {
        let proc = self.proc.take().expect("the server is running");
        let code = proc.terminate();
        self.past.push(proc);
        code
    }

    /// The runs of `serve` that were stopped, oldest first.
    pub fn past_runs(&self) -> &[Proc] {
        &self.past
    }

    /// Moves a `serve` process that already exited (on a signal the test sent directly) to
    /// the past runs.
    pub fn forget_exited(&mut self) {
        let proc = self.proc.take().expect("the server was running");
        assert!(proc.exit_status().is_some(), "the server is still running");
        self.past.push(proc);
    }

    /// Kills `serve` with SIGKILL (no clean shutdown) and waits for it to be gone.
    pub fn kill(&mut self) {
        let proc = self.proc.take().expect("the server is running");
        proc.signal(nix::sys::signal::Signal::SIGKILL);
        proc.wait_exit();
        self.past.push(proc);
    }

    /// Starts `serve` again on the same data dir and the same three addresses.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "stop the server before starting it again");
        let mut opts = self.opts.clone();
        opts.control_listen = self.addrs.control.to_string();
        opts.operator_http_listen = self.addrs.operator_http.to_string();
        opts.metrics_listen = Some(self.addrs.metrics.to_string());
        let proc = Server::spawn_serve(&self.scenario, &self.data_dir, &opts);
        let addrs = Server::wait_ready(&proc, &self.data_dir);
        assert_eq!(addrs, self.addrs, "a restarted server binds the addresses of its first run");
        self.proc = Some(proc);
        self.remember_setup_token();
    }

    /// SIGTERM (expecting exit 0), then start again on the same data dir and addresses.
    pub fn restart(&mut self) {
        let code = self.stop();
        assert_eq!(code, 0, "server exit status on SIGTERM");
        self.start_again();
    }

    /// Runs `portunus-server --data-dir D ARGS…` (an operator command).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_env(args, &[])
    }

    /// Runs an operator command with extra environment.
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        let mut full = vec!["--data-dir", data_dir.as_str()];
        full.extend_from_slice(args);
        run_server_cli(&self.scenario, &full, env)
    }

    /// Runs an operator command that must succeed and returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_eq!(out.code, 0, "`portunus-server {}` failed: {out:?}", args.join(" "));
        out.stdout
    }

    /// `enroll-client NAME [extra…]`: the raw output (the code is remembered as a secret).
    pub fn enroll_output(&self, name: &str, extra: &[&str]) -> Output {
        let mut args = vec!["enroll-client", name];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        if let Some(code) = out.stdout.split("code=").nth(1) {
            self.scenario.remember_secret("enrollment code", code.trim().trim_end_matches('\''));
        }
        out
    }

    /// `enroll-client NAME`, which must succeed; returns the URI inside the printed command.
    pub fn enroll(&self, name: &str) -> String {
        let out = self.enroll_output(name, &[]);
        assert_eq!(out.code, 0, "enroll-client {name} failed: {out:?}");
        uri_of_command(&out.stdout)
    }

    /// `push-rule CLIENT PORT TARGET`, which must succeed; returns the rule id.
    pub fn push_rule(&self, client: &str, port: u16, target: &str) -> u64 {
        let stdout = self.cli_ok(&["push-rule", client, &port.to_string(), target]);
        stdout.trim().parse().unwrap_or_else(|_| panic!("push-rule printed {stdout:?}, not a rule id"))
    }

    /// `list-rules --format json`.
    pub fn rules(&self) -> Vec<Value> {
        json_array(&self.cli_ok(&["list-rules", "--format", "json"]))
    }

    /// One rule from `list-rules --format json`.
    pub fn rule(&self, id: u64) -> Option<Value> {
        self.rules().into_iter().find(|r| r["id"].as_u64() == Some(id))
    }

    /// The state of rule `id` (`pending`, `active`, `failed`), or `None` when it is gone.
    pub fn rule_state(&self, id: u64) -> Option<String> {
        self.rule(id).and_then(|r| r["state"].as_str().map(str::to_owned))
    }

    /// Polls `list-rules` until rule `id` is in `state`.
    pub fn wait_rule_state(&self, id: u64, state: &str) -> Value {
        wait_until(&format!("rule {id} to be {state}"), || {
            self.rule(id).filter(|r| r["state"].as_str() == Some(state))
        })
    }

    /// `list-clients --format json`.
    pub fn clients(&self) -> Vec<Value> {
        json_array(&self.cli_ok(&["list-clients", "--format", "json"]))
    }

    /// One client by name from `list-clients --format json`.
    pub fn client(&self, name: &str) -> Option<Value> {
        self.clients().into_iter().find(|c| c["name"].as_str() == Some(name))
    }

    /// `rule-stats ID --format json`.
    pub fn rule_stats(&self, id: u64) -> Value {
        let stdout = self.cli_ok(&["rule-stats", &id.to_string(), "--format", "json"]);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("rule-stats printed bad JSON ({e}): {stdout}"))
    }

    /// Polls `rule-stats` until its totals have `bytes_in` and `bytes_out` as given.
    pub fn wait_rule_bytes(&self, id: u64, bytes_in: u64, bytes_out: u64) -> Value {
        let mut last = Value::Null;
        let found = super::wait_until_or(|| {
            let stats = self.rule_stats(id);
            let totals = &stats["totals"];
            let done = totals["bytes_in"].as_u64() == Some(bytes_in)
                && totals["bytes_out"].as_u64() == Some(bytes_out);
            last = stats.clone();
            done.then_some(stats)
        });
        found.unwrap_or_else(|| {
            panic!("rule {id} never counted {bytes_in} in / {bytes_out} out; last: {last}")
        })
    }
}

/// Runs `portunus-server ARGS…` to completion with a clean environment plus `env`.
pub fn run_server_cli(scenario: &Scenario, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin("portunus-server"));
    clean_env(&mut command);
    command.args(args).envs(env.iter().copied());
    const SUBCOMMANDS: [&str; 18] = [
        "enroll-client",
        "push-rule",
        "list-clients",
        "list-rules",
        "rule-stats",
        "remove-rule",
        "revoke",
        "user-add",
        "user-list",
        "user-get",
        "user-remove",
        "grant-add",
        "grant-list",
        "grant-revoke",
        "reset-password",
        "bootstrap-superadmin",
        "backup",
        "restore",
    ];
    let verb = args.iter().copied().find(|a| SUBCOMMANDS.contains(a)).unwrap_or("other");
    let (log, stdout) = scenario.next_files(&format!("cli-{verb}"));
    Proc::run(&format!("portunus-server {}", args.join(" ")), command, &log, &stdout)
}

/// The URI inside `portunus-client enroll '<uri>'`.
pub fn uri_of_command(stdout: &str) -> String {
    let line = stdout.trim();
    let inner = line
        .strip_prefix("portunus-client enroll '")
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("unexpected enroll-client output: {stdout:?}"));
    inner.to_owned()
}

fn json_array(text: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items,
        other => panic!("expected a JSON array, got {other:?} from {text:?}"),
    }
}
