//! `portunus-standalone`: the data plane from one TOML file. `--check` validates (exit 2 with
//! the rule and field named), a taken port refuses to start (exit 5), forwarding takes the
//! splice fast path for bulk transfers unless `PORTUNUS_DISABLE_SPLICE=1`, and
//! `proxy.splice_selected` fires once per rule.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

fn standalone(scn: &std::sync::Arc<Scenario>, config: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let path = scn.path("portunus.toml");
    std::fs::write(&path, config).expect("write the config");
    let mut command = Command::new(bin("portunus-standalone"));
    command.arg("--config").arg(&path).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let (log, stdout) = scn.next_files("standalone");
    Proc::spawn("portunus-standalone", command, &log, Some(&stdout))
}

fn rule(name: &str, listen: u16, target: &str) -> String {
    format!("[[rule]]\nname = \"{name}\"\nlisten_port = {listen}\ntarget = \"{target}\"\n\n")
}

#[test]
fn check_accepts_a_valid_file_and_refuses_bad_ones_naming_rule_and_field() {
    let scn = Scenario::new("standalone_check");
    let ok = standalone(&scn, &rule("web", free_port(), "127.0.0.1:80"), &["--check"], &[]);
    assert_eq!(ok.wait_exit(), 0, "{}", ok.log_text());
    for (config, needles) in [
        (
            format!("{}{}", rule("web", 8080, "127.0.0.1:80"), rule("api", 0, "127.0.0.1:81")),
            vec!["\"api\"", "#2", "listen_port"],
        ),
        (rule("web", 8080, "127.0.0.1"), vec!["\"web\"", "target"]),
        (format!("{}bogus = 1\n", rule("web", 8080, "127.0.0.1:80")), vec!["bogus"]),
        (
            format!("{}{}", rule("a", 8080, "127.0.0.1:80"), rule("b", 8080, "127.0.0.1:81")),
            vec!["\"b\"", "\"a\""],
        ),
    ] {
        let bad = standalone(&scn, &config, &["--check"], &[]);
        assert_eq!(bad.wait_exit(), 2, "{config}: {}", bad.log_text());
        let text = bad.log_text();
        for needle in needles {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
    }
}

#[test]
fn a_taken_port_refuses_to_start_with_exit_5() {
    let scn = Scenario::new("standalone_port_in_use");
    let (_holder, port) = hold_port();
    let proc = standalone(&scn, &rule("web", port, "127.0.0.1:80"), &[], &[]);
    assert_eq!(proc.wait_exit(), 5, "{}", proc.log_text());
    assert!(proc.log_text().contains(&format!("port {port} already in use")), "{}", proc.log_text());
}

fn echo_through(port: u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"hello").expect("write");
    let mut back = [0u8; 5];
    stream.read_exact(&mut back).expect("read");
    assert_eq!(&back, b"hello");
}

/// Echoes 256 KiB through `port` (written from another thread while this one reads back): a
/// bulk transfer, which the fast path splices.
fn echo_bulk_through(port: u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut stream = stream.try_clone().expect("clone");
        let data = data.clone();
        std::thread::spawn(move || stream.write_all(&data).expect("write"))
    };
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).expect("read");
    writer.join().expect("writer");
    assert!(back == data, "the bulk echo differs");
}

#[test]
fn the_fast_path_is_selected_once_per_rule_unless_disabled() {
    let scn = Scenario::new("standalone_splice");
    let backend = Backend::echo();
    for (env, expect_splice) in [(vec![], true), (vec![("PORTUNUS_DISABLE_SPLICE", "1")], false)] {
        let (a, b) = (free_port(), free_port());
        let config = format!("{}{}", rule("a", a, &backend.target()), rule("b", b, &backend.target()));
        let proc = standalone(&scn, &config, &[], &env);
        proc.wait_event("standalone.started", &[]);
        for _ in 0..3 {
            echo_through(a);
            echo_through(b);
            echo_bulk_through(a);
            echo_bulk_through(b);
        }
        assert_eq!(proc.terminate(), 0);
        let selected = proc.events_matching("proxy.splice_selected", &[]);
        if expect_splice {
            assert_eq!(selected.len(), 2, "once per rule: {selected:?}");
        } else {
            assert!(selected.is_empty(), "PORTUNUS_DISABLE_SPLICE=1 forces the userspace path: {selected:?}");
        }
    }
}
