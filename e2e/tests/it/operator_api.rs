//! The operator credential: one auth layer in front of every `/v1/*` route, the token from
//! `PORTUNUS_OPERATOR_TOKEN` or `operator.token` (or `server.toml`), and `--server URL`.

use crate::harness::{Scenario, Server, ServerOpts, http_request, run_server_cli};

const V1_ROUTES: [(&str, &str); 10] = [
    ("GET", "/v1/clients"),
    ("POST", "/v1/clients"),
    ("GET", "/v1/clients/edge-01"),
    ("POST", "/v1/clients/edge-01/revoke"),
    ("GET", "/v1/rules"),
    ("POST", "/v1/rules"),
    ("GET", "/v1/rules/1"),
    ("DELETE", "/v1/rules/1"),
    ("GET", "/v1/rules/1/stats"),
    ("GET", "/v1/metrics"),
];

#[test]
fn every_v1_route_refuses_a_missing_or_wrong_operator_token() {
    let scn = Scenario::new("v1_routes_need_token");
    let server = Server::start(&scn, ServerOpts::default());
    let api = server.addrs().operator_http;
    for (method, path) in V1_ROUTES {
        for bearer in [None, Some("wrong-operator-token-0123456789")] {
            let (status, body) = http_request(api, method, path, bearer);
            assert_eq!(status, 401, "{method} {path} with {bearer:?}: {body}");
            assert!(body.contains("\"unauthenticated\""), "{method} {path}: {body}");
        }
    }
    let token = std::fs::read_to_string(server.data_dir().join("operator.token")).expect("operator.token");
    let (status, body) = http_request(api, "GET", "/v1/clients", Some(token.trim()));
    assert_eq!(status, 200, "the right token is accepted: {body}");
    server.proc().wait_event("auth.failure", &[("kind", "operator_api"), ("reason", "missing_credentials")]);
    server.proc().wait_event("auth.failure", &[("kind", "operator_api"), ("reason", "invalid_token")]);
    scn.assert_logs_free_of_secrets();
}

#[test]
fn an_operator_token_set_in_server_toml_replaces_the_generated_file() {
    let scn = Scenario::new("operator_token_in_toml");
    let dir = scn.path("srv");
    std::fs::create_dir_all(&dir).expect("create data dir");
    let token = "configured-operator-token-0123456789";
    scn.remember_secret("configured operator token", token);
    std::fs::write(dir.join("server.toml"), format!("operator_token = \"{token}\"\n")).expect("server.toml");
    let server = Server::start_in(&scn, &dir, ServerOpts::default());
    assert!(!dir.join("operator.token").exists(), "no token file when server.toml sets one");

    let without = server.cli(&["list-clients"]);
    assert_eq!(without.code, 4, "no token anywhere: {without:?}");
    let with = server.cli_with_env(&["list-clients"], &[("PORTUNUS_OPERATOR_TOKEN", token)]);
    assert_eq!(with.code, 0, "{with:?}");

    // --server URL reaches the API without any data dir.
    let url = format!("http://{}", server.addrs().operator_http);
    let elsewhere = scn.path("no-such-dir").to_string_lossy().into_owned();
    let remote = run_server_cli(
        &scn,
        &["--data-dir", &elsewhere, "--server", &url, "list-clients", "--format", "json"],
        &[("PORTUNUS_OPERATOR_TOKEN", token)],
    );
    assert_eq!(remote.code, 0, "{remote:?}");
    assert_eq!(remote.stdout.trim(), "[]");
    scn.assert_logs_free_of_secrets();
}
