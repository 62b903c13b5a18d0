//! `portunus-client`: `enroll URI --bundle FILE`, and the long-running client as a [`Proc`].
//!
//! Invariant: every bundle a successful enroll writes has its token remembered as a scenario
//! secret before the test goes on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

use super::process::clean_env;
use super::{Output, Proc, Scenario, bin};

/// How the client is started.
#[derive(Debug, Clone, Default)]
pub struct ClientOpts {
    /// Extra flags (e.g. `--drain-timeout 1`).
    pub args: Vec<String>,
    /// Extra environment (e.g. `PORTUNUS_DISABLE_SPLICE=1`).
    pub env: Vec<(String, String)>,
    /// A soft `RLIMIT_NOFILE` to start the client with (through `sh -c 'ulimit …; exec …'`,
    /// so the client keeps the shell's PID).
    pub soft_nofile: Option<u64>,
}

impl ClientOpts {
    /// Adds flags.
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

/// A running `portunus-client --bundle FILE`.
pub struct Client {
    proc: Proc,
    bundle: PathBuf,
}

/// Remembers the secret part of a bundle's token.
pub fn remember_bundle_token(scenario: &Scenario, bundle: &Path) {
    let Ok(text) = std::fs::read_to_string(bundle) else { return };
    let Ok(value) = serde_json::from_str::<Value>(&text) else { return };
    if let Some(token) = value["token"].as_str() {
        // `<client id>.<secret>`: the id is public and logged, the secret never is.
        let secret = token.split_once('.').map_or(token, |(_, s)| s);
        scenario.remember_secret("client token", secret);
    }
}

impl Client {
    /// Runs `portunus-client enroll URI --bundle BUNDLE`.
    pub fn enroll(scenario: &Arc<Scenario>, uri: &str, bundle: &Path) -> Output {
        let mut command = Command::new(bin("portunus-client"));
        clean_env(&mut command);
        command.arg("enroll").arg(uri).arg("--bundle").arg(bundle);
        let (log, stdout) = scenario.next_files("client-enroll");
        let out = Proc::run("portunus-client enroll", command, &log, &stdout);
        if out.code == 0 {
            remember_bundle_token(scenario, bundle);
        }
        out
    }

    /// Enrolls and expects success.
    pub fn enroll_ok(scenario: &Arc<Scenario>, uri: &str, bundle: &Path) {
        let out = Client::enroll(scenario, uri, bundle);
        assert_eq!(out.code, 0, "portunus-client enroll failed: {out:?}");
    }

    /// Starts `portunus-client --bundle BUNDLE` without waiting for anything.
    pub fn start(scenario: &Arc<Scenario>, bundle: &Path, opts: &ClientOpts) -> Client {
        let mut command = match opts.soft_nofile {
            Some(limit) => {
                let mut shell = Command::new("/bin/sh");
                shell.arg("-c").arg(format!("ulimit -S -n {limit} && exec \"$0\" \"$@\""));
                shell.arg(bin("portunus-client"));
                shell
            }
            None => Command::new(bin("portunus-client")),
        };
        clean_env(&mut command);
        command.arg("--bundle").arg(bundle).args(&opts.args);
        command.envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (log, stdout) = scenario.next_files("client");
        let proc = Proc::spawn("portunus-client", command, &log, Some(&stdout));
        Client { proc, bundle: bundle.to_path_buf() }
    }

    /// Starts the client and waits until its control stream is up.
    pub fn start_connected(scenario: &Arc<Scenario>, bundle: &Path, opts: &ClientOpts) -> Client {
        let client = Client::start(scenario, bundle, opts);
        client.proc.wait_event("control.connected", &[]);
        client
    }

    /// The client process.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// The bundle it runs with.
    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    /// The `rule.bound` events for rule `id`.
    pub fn n_bound(&self, id: u64) -> usize {
        self.proc.events_matching("rule.bound", &[("rule", &id.to_string())]).len()
    }
}
