//! Configuration: `server.toml` is validated strictly, and a flag beats a `PORTUNUS_*`
//! variable, which beats the file.

use crate::harness::{Scenario, Server, ServerOpts, free_port};

#[test]
fn an_unknown_key_in_server_toml_is_refused_with_exit_2_naming_it() {
    let scn = Scenario::new("server_toml_unknown_key");
    let dir = scn.path("srv");
    std::fs::create_dir_all(&dir).expect("create data dir");
    std::fs::write(dir.join("server.toml"), "stats_interval_secs = 7\nfrobnicate_widgets = true\n")
        .expect("write server.toml");
    let serve = Server::spawn_serve(&scn, &dir, &ServerOpts::default());
    assert_eq!(serve.wait_exit(), 2, "serve with an unknown key: {}", serve.log_text());
    let event = serve.wait_event("startup.invalid_config", &[]);
    assert!(event.to_string().contains("frobnicate_widgets"), "the event names the key: {event}");
    assert!(serve.log_text().contains("invalid_config"), "{}", serve.log_text());
}

#[test]
fn a_valid_server_toml_is_accepted() {
    let scn = Scenario::new("server_toml_valid");
    let dir = scn.path("srv");
    std::fs::create_dir_all(&dir).expect("create data dir");
    std::fs::write(dir.join("server.toml"), "stats_interval_secs = 7\nenrollment_ttl_secs = 60\n")
        .expect("write server.toml");
    let server = Server::start_in(&scn, &dir, ServerOpts::default());
    server.cli_ok(&["list-clients"]);
}

#[test]
fn metrics_listen_comes_from_the_flag_then_the_environment_then_server_toml() {
    let scn = Scenario::new("metrics_listen_precedence");
    let dir = scn.path("srv");
    std::fs::create_dir_all(&dir).expect("create data dir");
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    std::fs::write(dir.join("server.toml"), format!("metrics_listen = \"127.0.0.1:{file_port}\"\n"))
        .expect("write server.toml");
    let env_value = format!("127.0.0.1:{env_port}");
    let cases = [
        ("flag over environment and file", Some(format!("127.0.0.1:{flag_port}")), true, flag_port),
        ("environment over file", None, true, env_port),
        ("file alone", None, false, file_port),
    ];
    for (what, flag, with_env, expected) in cases {
        let mut opts = ServerOpts { metrics_listen: flag, ..ServerOpts::default() };
        if with_env {
            opts = opts.env("PORTUNUS_METRICS_LISTEN", &env_value);
        }
        let mut server = Server::start_in(&scn, &dir, opts);
        assert_eq!(server.addrs().metrics.port(), expected, "{what}: server.addr names the wrong port");
        assert_eq!(server.stop(), 0);
    }
}

/// Starts `serve` on a data dir whose `server.toml` holds `contents`; it must exit 2 with an
/// `invalid_config` event whose text contains each of `names`. Returns the log.
fn refused_with_exit_2(name: &str, contents: &[u8], names: &[&str]) -> String {
    let scn = Scenario::new(name);
    let dir = scn.path("srv");
    std::fs::create_dir_all(&dir).expect("create data dir");
    std::fs::write(dir.join("server.toml"), contents).expect("write server.toml");
    let serve = Server::spawn_serve(&scn, &dir, &ServerOpts::default());
    assert_eq!(serve.wait_exit(), 2, "{name}: {}", serve.log_text());
    let event = serve.wait_event("startup.invalid_config", &[]).to_string();
    for needle in names {
        assert!(event.contains(needle), "{name}: the event names {needle}: {event}");
    }
    serve.log_text()
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    refused_with_exit_2(
        "toml_bad_addr",
        b"control_listen = \"not-an-addr\"\n",
        &["control_listen", "line 1"],
    );
    refused_with_exit_2(
        "toml_bad_type",
        b"stats_interval_secs = 7\nenrollment_ttl_secs = \"soon\"\n",
        &["enrollment_ttl_secs", "line 2"],
    );
    refused_with_exit_2("toml_not_utf8", b"stats_interval_secs = 7\n# caf\xe9\n", &["server.toml", "UTF-8"]);
    let short = "short-operator-token-31-chars-x";
    assert_eq!(short.len(), 31);
    let log = refused_with_exit_2(
        "toml_short_operator_token",
        format!("operator_token = \"{short}\"\n").as_bytes(),
        &["operator_token", "32"],
    );
    assert!(!log.contains(short), "the refused token is not echoed into the log");
}

#[test]
fn a_listen_address_not_on_this_host_is_the_documented_bind_failure() {
    let scn = Scenario::new("bind_not_local");
    let dir = scn.path("srv");
    // 192.0.2.0/24 is reserved for documentation: never an address of this host.
    let opts = ServerOpts { control_listen: "192.0.2.1:0".into(), ..ServerOpts::default() };
    let serve = Server::spawn_serve(&scn, &dir, &opts);
    assert_eq!(serve.wait_exit(), 5, "{}", serve.log_text());
    let event = serve.wait_event("startup.bind_failed", &[]).to_string();
    assert!(event.contains("192.0.2.1"), "{event}");
    assert!(serve.log_text().contains("not an address of this host"), "{}", serve.log_text());
}
