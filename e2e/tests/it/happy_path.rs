//! The walk an operator takes on a fresh machine: serve, enroll, run the client, push a rule,
//! move bytes, read listings and counters, remove the rule.

use std::net::Shutdown;

use serde_json::Value;

use crate::harness::{
    Backend, Client, ClientOpts, Scenario, Server, ServerOpts, connect, mode_of, port_is_free, roundtrip,
    wait_until,
};

/// The whitespace-separated cells of the table row whose first cell is `first`.
fn table_row(table: &str, first: &str) -> Vec<String> {
    table
        .lines()
        .map(|line| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row starting with {first:?} in:\n{table}"))
}

#[test]
fn first_start_creates_store_certificate_and_secret_files_with_mode_0600() {
    let scn = Scenario::new("first_start_creates_files");
    let server = Server::start(&scn, ServerOpts::default());
    let dir = server.data_dir();
    for file in ["portunus.redb", "server.crt", "server.key", "operator.token", "server.addr"] {
        assert!(dir.join(file).is_file(), "first start did not create {file}");
    }
    assert_eq!(mode_of(&dir.join("server.key")), 0o600, "server.key mode");
    assert_eq!(mode_of(&dir.join("operator.token")), 0o600, "operator.token mode");
    let started = server.proc().wait_event("server.started", &[]);
    assert_eq!(started["control"].as_str(), Some(server.addrs().control.to_string().as_str()));
}

#[test]
fn enroll_run_push_forward_list_count_and_remove() {
    let scn = Scenario::new("happy_path");
    let server = Server::start(&scn, ServerOpts::default());
    let cert_sha256 = server.proc().wait_event("server.started", &[])["cert_sha256"]
        .as_str()
        .expect("server.started names the certificate hash")
        .to_owned();

    // enroll-client prints exactly one command line, with the real pin and a code.
    let enrolled = server.enroll_output("edge-01", &[]);
    assert_eq!(enrolled.code, 0, "enroll-client: {enrolled:?}");
    let prefix = format!(
        "portunus-client enroll 'portunus://127.0.0.1:{}/enroll?pin=sha256:{cert_sha256}&code=",
        server.addrs().control.port()
    );
    let line = enrolled.stdout.strip_suffix('\n').expect("one line, newline-terminated");
    assert!(!line.contains('\n'), "enroll-client printed more than one line: {:?}", enrolled.stdout);
    let code = line
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("enroll-client printed {line:?}, expected {prefix}<code>'"));
    assert!(
        code.len() >= 16 && code.bytes().all(|b| b.is_ascii_alphanumeric()),
        "the code is 16+ letters or digits: {code:?}"
    );
    assert_eq!(cert_sha256.len(), 64, "the pin is 64 hex digits");
    assert!(cert_sha256.bytes().all(|b| b.is_ascii_hexdigit()));

    // client enroll writes a 0600 bundle with exactly the five fields.
    let bundle = scn.path("edge-01.bundle.json");
    let uri = line.trim_start_matches("portunus-client enroll '").trim_end_matches('\'');
    Client::enroll_ok(&scn, uri, &bundle);
    assert_eq!(mode_of(&bundle), 0o600, "bundle mode");
    let fields: Value = serde_json::from_str(&std::fs::read_to_string(&bundle).expect("bundle readable"))
        .expect("bundle is JSON");
    let mut keys: Vec<&str> =
        fields.as_object().expect("bundle is an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["client_id", "client_name", "server_cert_sha256", "server_endpoint", "token"]);
    assert_eq!(fields["server_endpoint"].as_str(), Some(server.addrs().control.to_string().as_str()));
    assert_eq!(fields["server_cert_sha256"].as_str(), Some(cert_sha256.as_str()));
    assert_eq!(fields["client_name"].as_str(), Some("edge-01"));
    let client_id = fields["client_id"].as_str().expect("client_id is a string");
    assert!(client_id.starts_with("cl_"), "client id {client_id:?}");
    assert!(fields["token"].as_str().is_some_and(|t| t.len() > client_id.len() + 16));

    // The client connects; push-rule prints the id and exits 0 once the rule is active.
    let client = Client::start_connected(&scn, &bundle, &ClientOpts::default());
    let backend = Backend::echo();
    let port = crate::harness::free_port();
    let pushed = server.cli(&["push-rule", "edge-01", &port.to_string(), &backend.target()]);
    assert_eq!(pushed.code, 0, "push-rule: {pushed:?}");
    let rule_id: u64 = pushed.stdout.trim().parse().expect("push-rule prints the rule id");
    assert_eq!(pushed.stdout, format!("{rule_id}\n"), "push-rule prints only the id");
    client.proc().wait_event("rule.bound", &[("rule", &rule_id.to_string())]);

    // Bytes flow both ways.
    let mut stream = connect(port);
    let first = b"hello through portunus\n".to_vec();
    let second = vec![0x5au8; 100_000];
    roundtrip(&mut stream, &first);
    roundtrip(&mut stream, &second);
    stream.shutdown(Shutdown::Write).expect("half-close");
    drop(stream);
    let total = u64::try_from(first.len() + second.len()).expect("small");

    // Listings, as tables and as JSON.
    let clients_table = server.cli_ok(&["list-clients"]);
    assert!(clients_table.starts_with("NAME"), "list-clients has a header: {clients_table}");
    let row = table_row(&clients_table, "edge-01");
    assert_eq!(row[1], client_id);
    assert_eq!(&row[2..5], ["enrolled", "yes", "1"], "list-clients row: {row:?}");
    let listed = server.client("edge-01").expect("list-clients --format json has edge-01");
    assert_eq!(listed["id"].as_str(), Some(client_id));
    assert_eq!(listed["connected"], Value::Bool(true));
    assert_eq!(listed["status"].as_str(), Some("enrolled"));
    assert_eq!(listed["n_rules"].as_u64(), Some(1));
    assert_eq!(
        listed["capabilities"],
        serde_json::json!([
            "tcp",
            "udp",
            "port_range",
            "multi_target",
            "dns_target",
            "proxy_protocol",
            "sni",
            "rate_limit"
        ]),
        "the Hello's capability set"
    );
    assert_eq!(listed["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));

    let rules_table = server.cli_ok(&["list-rules"]);
    assert!(rules_table.starts_with("ID"), "list-rules has a header: {rules_table}");
    let row = table_row(&rules_table, &rule_id.to_string());
    let expected_row = ["edge-01", "tcp", &port.to_string(), &backend.target(), "active", "_operator"];
    assert_eq!(&row[1..], expected_row, "list-rules row");
    let rule = server.rule(rule_id).expect("list-rules --format json has the rule");
    assert_eq!(rule["state"].as_str(), Some("active"));
    assert_eq!(rule["owner"].as_str(), Some("_operator"));
    assert_eq!(rule["client_name"].as_str(), Some("edge-01"));
    assert_eq!(rule["client_id"].as_str(), Some(client_id));
    assert_eq!(rule["spec"]["target"].as_str(), Some(backend.target().as_str()));
    assert_eq!(rule["spec"]["listen_port"].as_u64(), Some(u64::from(port)));

    // Counters show the delivered bytes (reports arrive every second).
    let stats = server.wait_rule_bytes(rule_id, total, total);
    assert_eq!(stats["state"].as_str(), Some("active"));
    assert_eq!(stats["totals"]["connections_total"].as_u64(), Some(1));
    let stats_table = server.cli_ok(&["rule-stats", &rule_id.to_string()]);
    assert!(stats_table.starts_with(&format!("rule {rule_id} (active)\n")), "rule-stats: {stats_table}");
    let row = table_row(&stats_table, "total");
    assert_eq!(&row[1..3], [total.to_string(), total.to_string()], "rule-stats total row");

    // remove-rule frees the port on the client.
    server.cli_ok(&["remove-rule", &rule_id.to_string()]);
    assert!(server.rule(rule_id).is_none(), "a removed rule is no longer listed");
    wait_until(&format!("port {port} to be free after remove-rule"), || port_is_free(port).then_some(()));
    client.proc().wait_event("rule.unbound", &[("rule", &rule_id.to_string())]);

    scn.assert_logs_free_of_secrets();
}
