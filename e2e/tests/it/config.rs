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
