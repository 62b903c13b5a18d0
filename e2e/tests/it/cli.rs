//! The command line as operators use it: the client's default bundle path, `--help` naming
//! every environment variable, `--server` refused by the commands that work on the data dir,
//! one error line per failure, `--password-stdin` with nothing on stdin, the subcommands that
//! cover the rest of the API (`whoami`, `token-*`, `rename-client`, `settings`, `audit`),
//! `--format json` on every listing, UDP columns in `rule-stats`, and shell completions and
//! man pages for all three binaries.

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    Auth, Backend, ClientOpts, Output, Proc, Scenario, Server, ServerOpts, bin, free_port, mode_of,
    run_server_cli, server_with_edge, wait_until,
};

/// The uid/gid the default-path tests run the client as when the tests run as root: root's
/// default is `/etc/portunus/bundle.json`, which a test must not touch.
const NOBODY: u32 = 65_534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A command for `name` with an empty environment plus `env` (so HOME and XDG_CONFIG_HOME
/// are exactly what the test says).
fn command(name: &str, args: &[&str], env: &[(&str, &Path)]) -> Command {
    let mut command = Command::new(bin(name));
    command.env_clear().args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Runs `name ARGS…` to completion with only `env` in its environment.
fn run(scn: &Scenario, name: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let (log, stdout) = scn.next_files(&format!("{name}-{}", args.first().copied().unwrap_or("none")));
    Proc::run(&format!("{name} {}", args.join(" ")), command(name, args, env), &log, &stdout)
}

/// Where a test run as root keeps what the client, run as [`NOBODY`], must reach: a copy of
/// the client binary and the home directories. It lies in the system temp dir, because the
/// checkout (and the scenario dirs in it) may be private to root; removed when dropped.
struct NobodyArea {
    root: PathBuf,
}

impl NobodyArea {
    /// A fresh area for `scn` (empty and unused when the tests do not run as root).
    fn new(scn: &Scenario) -> NobodyArea {
        let name = scn.path("").file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let root = std::env::temp_dir().join(format!("portunus-e2e-{name}-{}", std::process::id()));
        if is_root() {
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).expect("create the area");
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod the area");
            std::fs::copy(bin("portunus-client"), root.join("portunus-client")).expect("copy the client");
        }
        NobodyArea { root }
    }

    /// A home directory the client may write to (owned by [`NOBODY`] when run as root).
    fn home(&self, scn: &Scenario, name: &str) -> PathBuf {
        if !is_root() {
            let dir = scn.path(name);
            std::fs::create_dir_all(&dir).expect("create home");
            return dir;
        }
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).expect("create home");
        std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).expect("chown home");
        dir
    }

    /// `portunus-client ARGS…` as a non-root user, with `env` only.
    fn client(&self, args: &[&str], env: &[(&str, &Path)]) -> Command {
        if !is_root() {
            return command("portunus-client", args, env);
        }
        let mut command = Command::new(self.root.join("portunus-client"));
        command.env_clear().args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        command.uid(NOBODY).gid(NOBODY);
        command
    }
}

impl Drop for NobodyArea {
    fn drop(&mut self) {
        if is_root() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Remembers the secret part of a bundle's token, so the log checks look for it.
fn remember_bundle_token(scn: &Scenario, bundle: &Path) {
    let text = std::fs::read_to_string(bundle).expect("the bundle");
    let value: Value = serde_json::from_str(&text).expect("the bundle is JSON");
    let token = value["token"].as_str().expect("a token");
    scn.remember_secret("client token", token.split_once('.').map_or(token, |(_, s)| s));
}

fn json_of(what: &str, out: &Output) -> Value {
    assert_eq!(out.code, 0, "{what} failed: {out:?}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{what} printed bad JSON ({e}): {}", out.stdout))
}

#[test]
fn enroll_without_bundle_writes_the_default_path_and_a_plain_run_finds_it() {
    let scn = Scenario::new("cli_default_bundle");
    let server = Server::start(&scn, ServerOpts::default());
    let uri = server.enroll("edge-01");
    let area = NobodyArea::new(&scn);
    let home = area.home(&scn, "home");

    let (log, stdout) = scn.next_files("client-enroll");
    let enroll = Proc::run(
        "portunus-client enroll",
        area.client(&["enroll", &uri], &[("HOME", &home)]),
        &log,
        &stdout,
    );
    assert_eq!(enroll.code, 0, "{enroll:?}");
    let dir = home.join(".config/portunus");
    let bundle = dir.join("bundle.json");
    assert!(enroll.stderr.contains(&format!("bundle written to {}", bundle.display())), "{enroll:?}");
    remember_bundle_token(&scn, &bundle);
    assert_eq!(mode_of(&dir), 0o700, "the bundle's directory is private");
    assert_eq!(mode_of(&bundle), 0o600, "the bundle is private");

    // No flag at all: the client finds the bundle and connects.
    let (log, stdout) = scn.next_files("client");
    let client = Proc::spawn("portunus-client", area.client(&[], &[("HOME", &home)]), &log, Some(&stdout));
    client.wait_event("control.connected", &[]);
    wait_until("edge-01 connected", || {
        server.client("edge-01").filter(|c| c["connected"].as_bool() == Some(true))
    });
    assert_eq!(client.terminate(), 0);

    // XDG_CONFIG_HOME comes first; a home without a bundle falls through to the next path.
    let xdg = area.home(&scn, "xdg");
    let (log, stdout) = scn.next_files("client");
    let client = Proc::spawn(
        "portunus-client",
        area.client(&[], &[("HOME", &home), ("XDG_CONFIG_HOME", &xdg)]),
        &log,
        Some(&stdout),
    );
    client.wait_event("control.connected", &[]);
    assert_eq!(client.terminate(), 0);

    // Nothing anywhere: invalid_bundle, exit 2, naming every path tried.
    let empty = area.home(&scn, "empty-home");
    let (log, stdout) = scn.next_files("client-missing");
    let missing = Proc::run(
        "portunus-client",
        area.client(&[], &[("HOME", &empty), ("XDG_CONFIG_HOME", &xdg)]),
        &log,
        &stdout,
    );
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("invalid_bundle"), "{missing:?}");
    for tried in [xdg.join("portunus/bundle.json"), empty.join(".config/portunus/bundle.json")] {
        assert!(
            missing.stderr.contains(&tried.display().to_string()),
            "names {}: {missing:?}",
            tried.display()
        );
    }
    scn.assert_logs_free_of_secrets();
}

/// Every `PORTUNUS_*` name in a binary's sources.
fn portunus_variables_in(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        for (at, _) in text.match_indices("PORTUNUS_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.len() > "PORTUNUS_".len() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

#[test]
fn help_names_every_environment_variable_and_lists_enumerated_values() {
    let scn = Scenario::new("cli_help_env");
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps");
    let cases: [(&str, &str, &[&str]); 3] = [
        ("portunus-server", "server", &["RUST_LOG", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES"]),
        ("portunus-client", "client", &["RUST_LOG", "HOME", "XDG_CONFIG_HOME"]),
        ("portunus-standalone", "standalone", &["RUST_LOG"]),
    ];
    for (name, app, others) in cases {
        let help = run(&scn, name, &["--help"], &[]);
        assert_eq!(help.code, 0, "{help:?}");
        let mut expected = portunus_variables_in(&apps.join(app).join("src"));
        assert!(expected.iter().any(|v| v == "PORTUNUS_LOG"), "the scan finds names: {expected:?}");
        expected.extend(others.iter().map(|s| (*s).to_owned()));
        for variable in &expected {
            assert!(help.stdout.contains(variable.as_str()), "`{name} --help` does not mention {variable}");
        }
        assert!(help.stdout.contains("json") && help.stdout.contains("text"), "log formats: {}", help.stdout);
        assert!(help.stdout.contains("completions"), "{name} --help lists `completions`");
        assert!(!help.stdout.contains("\n  man "), "{name}: `man` is hidden: {}", help.stdout);
    }
    for (args, values) in [
        (&["list-rules", "--help"][..], &["pending", "active", "failed", "tcp", "udp", "table", "json"][..]),
        (&["push-rule", "--help"], &["tcp", "udp"]),
        (&["audit", "--help"], &["success", "denied", "failed"]),
        (&["settings", "get", "--help"], &["advertised-endpoint"]),
        (&["completions", "--help"], &["bash", "zsh", "fish"]),
    ] {
        let help = run(&scn, "portunus-server", args, &[]);
        assert_eq!(help.code, 0, "{help:?}");
        assert!(help.stdout.to_lowercase().contains("possible values"), "{args:?}: {}", help.stdout);
        for value in values {
            assert!(help.stdout.contains(value), "{args:?} lists {value}: {}", help.stdout);
        }
    }
    let serve = run(&scn, "portunus-server", &["serve", "--help"], &[]);
    assert!(serve.stdout.contains("PORTUNUS_CONTROL_LISTEN"), "{}", serve.stdout);
    let refused = run(&scn, "portunus-server", &["list-rules", "--state", "gone"], &[]);
    assert_eq!(refused.code, 2, "{refused:?}");
}

#[test]
fn offline_commands_refuse_server_but_ignore_the_variable() {
    let scn = Scenario::new("cli_offline_server");
    let dir = scn.path("srv");
    let dir_text = dir.to_string_lossy().into_owned();
    let url = "http://127.0.0.1:9";
    let offline: [&[&str]; 4] =
        [&["serve"], &["reset-password", "alice"], &["bootstrap-superadmin"], &["restore", "--in", "x"]];
    for args in offline {
        for before in [true, false] {
            let mut full = vec!["--data-dir", dir_text.as_str()];
            if before {
                full.extend(["--server", url]);
            }
            full.extend_from_slice(args);
            if !before {
                full.extend(["--server", url]);
            }
            let out = run_server_cli(&scn, &full, &[]);
            assert_eq!(out.code, 2, "{full:?}: {out:?}");
            assert_eq!(
                out.stderr.matches("--server is for commands that call a running server").count(),
                1,
                "{full:?}: {out:?}"
            );
        }
    }
    assert!(!dir.join("portunus.redb").exists(), "a refused command touched nothing");
    // PORTUNUS_SERVER, set for the operator commands, does not stop an offline one.
    let out =
        run_server_cli(&scn, &["--data-dir", &dir_text, "bootstrap-superadmin"], &[("PORTUNUS_SERVER", url)]);
    assert_eq!(out.code, 0, "{out:?}");
    let token = out.stdout.trim().strip_prefix("api_token=").expect("api_token=…");
    scn.remember_secret("API token", token.split_once('.').map_or(token, |(_, s)| s));
}

#[test]
fn a_failure_prints_its_message_once_and_empty_password_stdin_is_refused() {
    let scn = Scenario::new("cli_error_once");
    let server = Server::start(&scn, ServerOpts::default());
    let missing = server.cli(&["user-get", "nobody"]);
    assert_eq!(missing.code, 8, "{missing:?}");
    assert_eq!(missing.stderr.matches("user_not_found").count(), 1, "{missing:?}");
    assert!(missing.stdout.is_empty(), "{missing:?}");

    let gone = server.cli(&["remove-rule", "4242"]);
    assert_eq!(gone.code, 8, "{gone:?}");
    assert_eq!(gone.stderr.lines().filter(|l| !l.trim().is_empty()).count(), 1, "one line: {gone:?}");

    let port = free_port().to_string();
    let unreachable = run_server_cli(
        &scn,
        &["--server", &format!("http://127.0.0.1:{port}"), "list-clients"],
        &[("PORTUNUS_OPERATOR_TOKEN", "any-operator-token-0123456789abcdef")],
    );
    assert_eq!(unreachable.code, 4, "{unreachable:?}");
    assert_eq!(unreachable.stderr.matches("cannot reach the server API").count(), 1, "{unreachable:?}");

    let bad_backup = scn.path("not-a-store");
    std::fs::write(&bad_backup, b"not a redb file").expect("write");
    let restore_dir = scn.path("restore-here").to_string_lossy().into_owned();
    let refused = run_server_cli(
        &scn,
        &["--data-dir", &restore_dir, "restore", "--in", &bad_backup.to_string_lossy()],
        &[],
    );
    assert_eq!(refused.code, 65, "{refused:?}");
    let exit_line = refused.stderr.lines().last().expect("an exit line").to_owned();
    let message = exit_line.split_once(": ").expect("code: message").1;
    assert_eq!(refused.stderr.matches(message).count(), 1, "the message once: {refused:?}");

    // Nothing on stdin (the harness gives every command an empty stdin).
    let empty = server.cli(&["user-add", "bob", "--password-stdin"]);
    assert_eq!(empty.code, 2, "{empty:?}");
    assert_eq!(empty.stderr.matches("no password on stdin").count(), 1, "{empty:?}");
    assert_eq!(server.cli(&["user-get", "bob"]).code, 8, "no user was created");
    scn.assert_logs_free_of_secrets();
}

#[test]
fn reset_password_temporary_must_be_changed_at_the_next_login() {
    const PASSWORD: &str = "correct horse battery staple";
    let scn = Scenario::new("cli_reset_temporary");
    let mut server = Server::start(&scn, ServerOpts::default());
    let api = server.api();
    assert_eq!(api.onboard(&server.setup_token().expect("setup token"), "admin", PASSWORD).status, 201);
    let operator = server.operator_token();
    api.create_user(&Auth::Bearer(&operator), "carol", "user", Some("carol's first password"));
    assert_eq!(server.stop(), 0);

    let reset = server.cli(&["reset-password", "carol", "--temporary"]);
    assert_eq!(reset.code, 0, "{reset:?}");
    let temporary = reset.stdout.trim().strip_prefix("temporary_password=").expect("one line").to_owned();
    scn.remember_secret("temporary password", &temporary);
    server.start_again();

    let (login, session) = api.login("carol", &temporary);
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.body["user"]["must_change_password"].as_bool(), Some(true), "{}", login.text);
    let session = session.expect("a session");
    let limited = api.call("GET", "/v1/rules", &Auth::Session(&session), None);
    assert_eq!((limited.status, limited.code()), (403, "password_change_required"), "{}", limited.text);
    server.assert_no_secret_leaked();
}

#[test]
fn every_api_area_has_a_subcommand_and_every_listing_prints_json() {
    let scn = Scenario::new("cli_api_coverage");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let rule = server.push_rule("edge-01", free_port(), &backend.target());

    let me = json_of("whoami", &server.cli(&["whoami", "--format", "json"]));
    assert_eq!(me["id"], "_operator", "{me}");
    assert!(server.cli_ok(&["whoami"]).contains("_operator"));

    assert_eq!(server.cli_ok(&["user-add", "alice"]).trim(), "alice");
    let minted = server.cli(&["token-mint", "alice", "--name", "ci"]);
    assert_eq!(minted.code, 0, "{minted:?}");
    let token = minted.stdout.trim().strip_prefix("api_token=").expect("api_token=…").to_owned();
    scn.remember_secret("API token", token.split_once('.').map_or(token.as_str(), |(_, s)| s));
    let tokens = json_of("token-list", &server.cli(&["token-list", "alice", "--format", "json"]));
    let tokens = tokens.as_array().expect("an array");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["name"], "ci");
    let token_id = tokens[0]["id"].as_str().expect("id").to_owned();
    assert!(minted.stderr.contains(&token_id), "the id is on stderr: {minted:?}");
    assert!(server.cli_ok(&["token-list", "alice"]).contains(&token_id));
    assert!(!server.cli_ok(&["token-list", "alice"]).contains(&token), "the token text is never listed");

    let grant = server.cli_ok(&["grant-add", "alice", "edge-01", "20000-20010", "--protocol", "udp"]);
    let grant = grant.trim();
    let listed = json_of("grant-list", &server.cli(&["grant-list", "--format", "json"]));
    let row = listed.as_array().and_then(|g| g.iter().find(|g| g["id"] == grant)).expect("the grant").clone();
    assert_eq!(row["client_name"], "edge-01", "{row}");
    assert_eq!(row["protocols"], serde_json::json!(["udp"]), "{row}");
    assert!(server.cli_ok(&["grant-list"]).contains("edge-01"), "the table shows the client's name");

    let id = server.client("edge-01").expect("edge-01")["id"].as_str().expect("id").to_owned();
    let renamed = server.cli(&["rename-client", "edge-01", "edge-renamed"]);
    assert_eq!(renamed.code, 0, "{renamed:?}");
    let client = server.client("edge-renamed").expect("renamed client");
    assert_eq!(client["id"], id.as_str(), "same client");
    assert!(server.cli_ok(&["grant-list", "--user", "alice"]).contains("edge-renamed"));

    let settings = json_of("settings get", &server.cli(&["settings", "get", "--format", "json"]));
    assert!(settings["advertised-endpoint"]["source"].is_string(), "{settings}");
    let endpoint = format!("127.0.0.1:{}", server.addrs().control.port());
    let set = server.cli(&["settings", "set", "advertised-endpoint", &endpoint]);
    assert_eq!(set.code, 0, "{set:?}");
    let settings =
        json_of("settings get", &server.cli(&["settings", "get", "advertised-endpoint", "--format", "json"]));
    assert_eq!(settings["advertised-endpoint"]["override"], endpoint.as_str(), "{settings}");
    assert_eq!(settings["advertised-endpoint"]["source"], "override", "{settings}");
    let bad = server.cli(&["settings", "set", "advertised-endpoint", "http://x/"]);
    assert_eq!((bad.code, bad.stderr.matches("endpoint_invalid").count()), (2, 1), "{bad:?}");
    assert_eq!(server.cli(&["settings", "unset", "advertised-endpoint"]).code, 0);
    let settings = json_of("settings get", &server.cli(&["settings", "get", "--format", "json"]));
    assert!(settings["advertised-endpoint"]["override"].is_null(), "{settings}");

    assert_eq!(server.cli(&["token-revoke", "alice", &token_id]).code, 0);
    let tokens = json_of("token-list", &server.cli(&["token-list", "alice", "--format", "json"]));
    assert_eq!(tokens.as_array().map(Vec::len), Some(0), "{tokens}");

    let page = json_of("audit", &server.cli(&["audit", "--limit", "2", "--format", "json"]));
    assert_eq!(page["records"].as_array().map(Vec::len), Some(2), "{page}");
    assert!(page["next_cursor"].is_string(), "{page}");
    let limited = server.cli(&["audit", "--limit", "2"]);
    assert!(limited.stderr.contains("--cursor"), "more records follow: {limited:?}");
    let all = json_of("audit --all", &server.cli(&["audit", "--all", "--limit", "3", "--format", "json"]));
    let records = all["records"].as_array().expect("records").clone();
    assert!(records.len() > 2 && all["next_cursor"].is_null(), "{all}");
    assert!(records.iter().any(|r| r["action"] == "user.create"), "{all}");
    let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first, no repeats: {seqs:?}");
    let failed = json_of(
        "audit --outcome",
        &server.cli(&["audit", "--all", "--outcome", "failed", "--format", "json"]),
    );
    let failed = failed["records"].as_array().expect("records").clone();
    assert!(!failed.is_empty(), "the bad endpoint failed");
    assert!(failed.iter().all(|r| r["outcome"] == "failed"), "{failed:?}");
    assert!(server.cli_ok(&["audit"]).starts_with("SEQ"), "a table by default");

    let rule_text = rule.to_string();
    let listings: [&[&str]; 10] = [
        &["list-clients"],
        &["list-rules"],
        &["rule-stats", &rule_text, "--per-port", "--per-target"],
        &["user-list"],
        &["user-get", "alice"],
        &["grant-list"],
        &["token-list", "alice"],
        &["audit"],
        &["whoami"],
        &["settings", "get"],
    ];
    for args in listings {
        let mut full = args.to_vec();
        full.extend(["--format", "json"]);
        json_of(&args.join(" "), &server.cli(&full));
        let table = server.cli(args);
        assert_eq!(table.code, 0, "{args:?}: {table:?}");
        assert!(serde_json::from_str::<Value>(&table.stdout).is_err(), "{args:?}: a table by default");
    }
    server.assert_no_secret_leaked();
}

#[test]
fn rule_stats_shows_datagram_columns_for_a_udp_rule() {
    let scn = Scenario::new("cli_udp_stats");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let target = UdpSocket::bind("127.0.0.1:0").expect("target binds");
    target.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let port = free_port();
    let pushed = server.cli(&[
        "push-rule",
        "edge-01",
        &port.to_string(),
        &target.local_addr().expect("addr").to_string(),
        "--protocol",
        "udp",
    ]);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    let rule: u64 = pushed.stdout.trim().parse().expect("rule id");

    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer binds");
    peer.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let mut buf = [0u8; 64];
    // One datagram each way; UDP may drop, so send again until the echo comes back.
    wait_until("a datagram through the UDP rule and back", || {
        peer.send_to(b"ping", ("127.0.0.1", port)).ok()?;
        let (n, from) = target.recv_from(&mut buf).ok()?;
        target.send_to(&buf[..n], from).ok()?;
        peer.recv_from(&mut buf).ok().map(|_| ())
    });
    wait_until("datagrams counted both ways", || {
        let stats = server.rule_stats(rule);
        let totals = &stats["totals"];
        (totals["datagrams_in"].as_u64() >= Some(1) && totals["datagrams_out"].as_u64() >= Some(1))
            .then_some(())
    });
    let table = server.cli_ok(&["rule-stats", &rule.to_string()]);
    let mut lines = table.lines();
    assert_eq!(lines.next(), Some(format!("rule {rule} (active)").as_str()), "{table}");
    let headers: Vec<&str> = lines.next().expect("headers").split_whitespace().collect();
    assert_eq!(&headers[..3], ["SCOPE", "DATAGRAMS_IN", "DATAGRAMS_OUT"], "{table}");
    assert!(headers.contains(&"FLOWS"), "{table}");
    let total: Vec<&str> = lines.next().expect("total row").split_whitespace().collect();
    assert_eq!(total[0], "total", "{table}");
    assert!(total[1].parse::<u64>().expect("a count") >= 1, "datagrams in: {table}");
    assert!(total[2].parse::<u64>().expect("a count") >= 1, "datagrams out: {table}");
    let tcp = Backend::echo();
    let tcp_rule = server.push_rule("edge-01", free_port(), &tcp.target());
    let tcp_table = server.cli_ok(&["rule-stats", &tcp_rule.to_string()]);
    assert!(tcp_table.contains("CONNS") && !tcp_table.contains("DATAGRAMS"), "{tcp_table}");
}

#[test]
fn completions_and_man_pages_for_every_binary() {
    let scn = Scenario::new("cli_completions_man");
    let cases: [(&str, &[&str]); 3] = [
        ("portunus-server", &["serve", "audit", "settings", "settings-get", "completions"]),
        ("portunus-client", &["enroll", "completions"]),
        ("portunus-standalone", &["completions"]),
    ];
    for (name, subcommands) in cases {
        for shell in ["bash", "zsh", "fish"] {
            let out = run(&scn, name, &["completions", shell], &[]);
            assert_eq!(out.code, 0, "{name} completions {shell}: {out:?}");
            assert!(out.stdout.len() > 200 && out.stdout.contains(name), "{name} {shell}: {}", out.stdout);
        }
        let refused = run(&scn, name, &["completions", "tcsh"], &[]);
        assert_eq!(refused.code, 2, "{refused:?}");
        let dir = scn.path(&format!("man-{name}"));
        let out = run(&scn, name, &["man", "--out-dir", &dir.to_string_lossy()], &[]);
        assert_eq!(out.code, 0, "{name} man: {out:?}");
        let page = std::fs::read_to_string(dir.join(format!("{name}.1"))).expect("the main page");
        assert!(page.starts_with(".ie") || page.contains(".TH"), "roff: {page}");
        for sub in subcommands {
            let path = dir.join(format!("{name}-{sub}.1"));
            assert!(path.is_file(), "{} is missing", path.display());
        }
        assert!(!dir.join(format!("{name}-man.1")).exists(), "the hidden `man` has no page");
    }
    // `portunus-client` with no arguments still runs the client: here it finds no bundle.
    let area = NobodyArea::new(&scn);
    let empty = area.home(&scn, "empty-home");
    let (log, stdout) = scn.next_files("client-plain");
    let plain = Proc::run("portunus-client", area.client(&[], &[("HOME", &empty)]), &log, &stdout);
    assert_eq!(plain.code, 2, "{plain:?}");
    assert!(plain.stderr.contains("invalid_bundle"), "{plain:?}");
    let standalone = run(&scn, "portunus-standalone", &[], &[]);
    assert_eq!(standalone.code, 2, "--config is still required to run: {standalone:?}");
}
