//! What running Portunus as a service relies on: the shipped systemd units pass
//! `systemd-analyze verify` (and say what docs/operations.md promises about users, paths and
//! restarts), and a `serve` that fails to start leaves no half-made data dir behind, so the
//! next (corrected) start begins afresh.
//!
//! `systemd-analyze` is required: the tests fail, never skip, without it (`.ci/run` installs
//! Debian's `systemd` package).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Scenario, Server, ServerOpts, bin, hold_port};

/// The shipped unit file of `name`.
fn unit_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd").join(format!("{name}.service"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The values of `key=` lines, in order (a unit may repeat a key).
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::trim).collect()
}

/// Writes `text` as `<dir>/<name>.service` with its `/usr/local/bin/<name>` replaced by the
/// debug binary (verify insists the program exists), and returns the path.
fn write_verifiable(dir: &Path, name: &str, text: &str) -> PathBuf {
    let shipped = format!("/usr/local/bin/{name}");
    assert!(text.contains(&format!("ExecStart={shipped}")), "{name}.service starts {shipped}");
    let local = bin(name);
    let text = text.replace(&shipped, local.to_str().expect("UTF-8 binary path"));
    std::fs::create_dir_all(dir).expect("create the unit dir");
    let path = dir.join(format!("{name}.service"));
    std::fs::write(&path, text).expect("write the unit");
    path
}

/// Runs `systemd-analyze verify`; returns its exit status and everything it printed. The
/// `man:` pages named in `Documentation=` are installed from the tarball, not here, so verify
/// does not look them up; [`documented_man_pages_are_the_ones_the_binaries_write`] checks them.
fn verify(unit: &Path) -> (i32, String) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): install Debian's `systemd` package (.ci/run does)")
        });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Fails unless `unit` verifies with no complaint at all: `verify` exits 0 even on unknown
/// keys, and only says so on stderr.
fn assert_verifies(unit: &Path) {
    let (code, text) = verify(unit);
    assert!(
        code == 0 && text.trim().is_empty(),
        "systemd-analyze verify {}: exit {code}\n{text}",
        unit.display()
    );
}

/// The exit statuses a binary's `--help` documents (the numbers after "Exit statuses:").
fn documented_exit_statuses(name: &str) -> Vec<String> {
    let out = Command::new(bin(name)).arg("--help").output().expect("--help runs");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let tail =
        help.split("Exit statuses:").nth(1).unwrap_or_else(|| panic!("{name} --help lists no exit statuses"));
    tail.split([';', ':', '\n'])
        .filter_map(|part| part.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn shipped_units_pass_systemd_analyze_verify() {
    let scn = Scenario::new("dist_units_verify");
    for name in ["portunus-server", "portunus-client"] {
        let unit = write_verifiable(&scn.path("units"), name, &unit_text(name));
        assert_verifies(&unit);
    }
}

#[test]
fn the_unit_check_catches_a_misspelt_key() {
    let scn = Scenario::new("dist_units_misspelt");
    let broken = unit_text("portunus-server").replace("ProtectHome=yes", "ProtectHomes=yes");
    let unit = write_verifiable(&scn.path("units"), "portunus-server", &broken);
    let (code, text) = verify(&unit);
    assert!(
        code != 0 || text.contains("ProtectHomes"),
        "verify let a misspelt key through: exit {code}\n{text}"
    );
}

#[test]
fn units_run_as_portunus_and_restart_only_on_fixable_failures() {
    let server = unit_text("portunus-server");
    let client = unit_text("portunus-client");
    for (name, unit) in [("server", &server), ("client", &client)] {
        for (key, want) in [
            ("User", "portunus"),
            ("Restart", "on-failure"),
            ("KillSignal", "SIGTERM"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("SystemCallArchitectures", "native"),
        ] {
            assert_eq!(values(unit, key), [want], "{name} unit: {key}=");
        }
        assert_eq!(values(unit, "RestrictAddressFamilies"), ["AF_INET AF_INET6 AF_UNIX"], "{name} unit");
        // Longer than the client's default drain (30 s) and the server's shutdown grace.
        let stop: Vec<u64> = values(unit, "TimeoutStopSec")
            .iter()
            .filter_map(|v| v.trim_end_matches('s').parse().ok())
            .collect();
        assert!(matches!(stop[..], [secs] if secs > 30), "{name} unit: TimeoutStopSec= {stop:?}");
    }

    assert_eq!(values(&server, "StateDirectory"), ["portunus"]);
    assert!(values(&server, "ExecStart")[0].contains("--data-dir /var/lib/portunus serve"), "{server}");
    assert_eq!(values(&server, "CapabilityBoundingSet"), [""]);
    assert_eq!(values(&server, "RestartPreventExitStatus"), ["2 65 75 78"]);
    assert_eq!(
        values(&client, "Environment"),
        [
            "PORTUNUS_BUNDLE=/etc/portunus/bundle.json",
            "PORTUNUS_STATE_DIR=/var/lib/portunus-client",
            "GLIBC_TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.top_pad=0"
        ]
    );
    assert_eq!(values(&client, "StateDirectory"), ["portunus-client"]);
    assert_eq!(values(&client, "ReadOnlyPaths"), ["/etc/portunus"]);
    assert_eq!(values(&client, "CapabilityBoundingSet"), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(values(&client, "AmbientCapabilities"), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(values(&client, "RestartPreventExitStatus"), ["2 4"]);

    // Every status a unit refuses to restart on is one its binary documents.
    for (name, unit) in [("portunus-server", &server), ("portunus-client", &client)] {
        let documented = documented_exit_statuses(name);
        for status in values(unit, "RestartPreventExitStatus")[0].split_whitespace() {
            assert!(
                documented.iter().any(|d| d == status),
                "{name} --help does not document exit {status}: {documented:?}"
            );
        }
    }
}

#[test]
fn a_failed_first_start_removes_the_data_dir_it_created() {
    let scn = Scenario::new("dist_failed_start_cleanup");
    let (held, port) = hold_port();
    let opts = ServerOpts { control_listen: format!("127.0.0.1:{port}"), ..ServerOpts::default() };

    // A fresh data dir under a fresh parent: both were made by this start, both go.
    let parent = scn.path("fresh");
    let data_dir = parent.join("srv");
    let serve = Server::spawn_serve(&scn, &data_dir, &opts);
    assert_eq!(serve.wait_exit(), 5, "the documented bind failure:\n{}", serve.log_text());
    serve.wait_event("startup.bind_failed", &[("key", "control_listen")]);
    let removed = serve.wait_event("startup.data_dir_removed", &[]).to_string();
    assert!(removed.contains(parent.to_str().expect("UTF-8 path")), "{removed}");
    assert!(!parent.exists(), "{} is left behind", parent.display());

    // A data dir that existed is not removed, nor is what it held.
    let existing = scn.path("existing");
    std::fs::create_dir_all(&existing).expect("create the data dir");
    std::fs::write(existing.join("server.toml"), "stats_interval_secs = 1\n").expect("write server.toml");
    let serve = Server::spawn_serve(&scn, &existing, &opts);
    assert_eq!(serve.wait_exit(), 5, "{}", serve.log_text());
    assert!(serve.events_matching("startup.data_dir_removed", &[]).is_empty(), "{}", serve.log_text());
    assert_eq!(
        std::fs::read_to_string(existing.join("server.toml")).expect("server.toml stays"),
        "stats_interval_secs = 1\n"
    );

    // Once the port is free, the same fresh path starts and its data dir stays.
    drop(held);
    let mut server = Server::start_in(
        &scn,
        &data_dir,
        ServerOpts { control_listen: format!("127.0.0.1:{port}"), ..ServerOpts::default() },
    );
    assert_eq!(server.stop(), 0);
    assert!(data_dir.join("portunus.redb").is_file(), "a start that served keeps its data dir");
}

#[test]
fn documented_man_pages_are_the_ones_the_binaries_write() {
    let scn = Scenario::new("dist_units_man_pages");
    for name in ["portunus-server", "portunus-client"] {
        let unit = unit_text(name);
        let pages: Vec<&str> = values(&unit, "Documentation")
            .into_iter()
            .filter_map(|doc| doc.strip_prefix("man:")?.strip_suffix("(1)"))
            .collect();
        assert!(!pages.is_empty(), "{name}.service names no man page");
        let dir = scn.path(&format!("man-{name}"));
        let out = Command::new(bin(name)).arg("man").arg("--out-dir").arg(&dir).output().expect("man runs");
        assert!(out.status.success(), "{name} man --out-dir: {out:?}");
        for page in pages {
            assert!(dir.join(format!("{page}.1")).is_file(), "{name} writes no {page}.1 for Documentation=");
        }
    }
}
