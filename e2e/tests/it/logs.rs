//! Log configuration: the level comes from `PORTUNUS_LOG`, else `RUST_LOG`, else info; the
//! format is JSON unless `--log-format text`.

use crate::harness::{Scenario, Server, ServerOpts};

/// Starts and stops a server with `opts`; returns the complete log of that run.
fn run_once(scn: &std::sync::Arc<Scenario>, opts: ServerOpts) -> String {
    let mut server = Server::start_in(scn, &scn.path("srv"), opts);
    assert_eq!(server.stop(), 0);
    server.past_runs().last().expect("the stopped run").log_text()
}

/// A case: what it shows, the environment, and whether info lines appear.
type LevelCase = (&'static str, &'static [(&'static str, &'static str)], bool);

#[test]
fn the_log_level_comes_from_portunus_log_then_rust_log_then_info() {
    let scn = Scenario::new("log_level_precedence");
    let cases: [LevelCase; 4] = [
        ("default", &[], true),
        ("PORTUNUS_LOG=warn", &[("PORTUNUS_LOG", "warn")], false),
        ("RUST_LOG=warn", &[("RUST_LOG", "warn")], false),
        ("PORTUNUS_LOG=info over RUST_LOG=warn", &[("PORTUNUS_LOG", "info"), ("RUST_LOG", "warn")], true),
    ];
    for (what, env, shows_info) in cases {
        let mut opts = ServerOpts::default();
        for (key, value) in env {
            opts = opts.env(key, value);
        }
        let log = run_once(&scn, opts);
        assert_eq!(log.contains("\"event\":\"server.started\""), shows_info, "{what}:\n{log}");
        assert_eq!(log.contains("\"level\":\"info\""), shows_info, "{what}:\n{log}");
    }
}

#[test]
fn json_lines_are_flat_objects_and_text_format_is_for_humans() {
    let scn = Scenario::new("log_formats");
    let json = run_once(&scn, ServerOpts::default());
    let mut n_lines = 0;
    // The one plain line: the onboarding setup token, printed for humans and `grep` while no
    // superadmin exists.
    let setup_lines = json.lines().filter(|l| l.starts_with(crate::harness::SETUP_TOKEN_PREFIX)).count();
    assert_eq!(setup_lines, 1, "a fresh server prints its setup token once:\n{json}");
    for line in json.lines().filter(|l| !l.starts_with(crate::harness::SETUP_TOKEN_PREFIX)) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["ts", "level", "event"] {
            assert!(value[key].is_string(), "{key} missing: {line}");
        }
        assert!(value.as_object().expect("object").values().all(|v| !v.is_object()), "nested: {line}");
        n_lines += 1;
    }
    assert!(n_lines >= 2, "expected at least server.started and server.stopped:\n{json}");

    let text = run_once(&scn, ServerOpts::default().args(&["--log-format", "text"]));
    assert!(text.contains("server.started"), "{text}");
    assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()), "{text}");
}
