//! The README walkthrough, run as written: every command of the fenced `sh` blocks between
//! `<!-- walkthrough:begin -->` and `<!-- walkthrough:end -->`, top to bottom, each of which
//! must succeed, and real bytes forwarded through the rules at the end.
//!
//! Substitution rule, the only differences from a reader's terminal:
//! - binaries: the debug binaries' directory comes first on `PATH`, so `portunus-server`,
//!   `portunus-client` are the ones just built; the command text is not touched for them;
//! - data dir and files: commands run in the scenario directory, so `./srv`, `site/` and the
//!   log files are this test's own;
//! - ports: each port in [`PORTS`] and [`CONTROL_PORT`] is replaced, wherever it stands as a
//!   whole number, by a port the kernel handed out, and [`GRANT_RANGE`] by a range of just
//!   the new rule port it held. `serve` binds its default ports, which its command line does not name, so every
//!   command also gets `PORTUNUS_CONTROL_LISTEN`, `PORTUNUS_OPERATOR_HTTP_LISTEN` and
//!   `PORTUNUS_METRICS_LISTEN` (the environment layer the README documents) set to
//!   127.0.0.1 and the substituted ports.
//!
//! A command ending in `&` starts a long-running program: it runs as `bash -c 'exec …'`, owned
//! by this test and stopped by PID when the test ends. Every other command runs with
//! `bash -o pipefail -c` and must exit 0.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{Output, Proc, Scenario, bin, free_port, run_server_cli, wait_until};

/// Every port the walkthrough's commands name, in order: the server's API and metrics
/// defaults, the web server it forwards to, and the two rules' listen ports.
const PORTS: [u16; 5] = [7080, 7081, 8080, 18080, 20080];

/// The server's default control port: bound by `serve` without being named, and substituted
/// (through `PORTUNUS_CONTROL_LISTEN`, and in the text should a command name it) all the same.
const CONTROL_PORT: u16 = 7443;

/// The grant the walkthrough gives alice; it holds alice's rule port (the last of [`PORTS`]).
const GRANT_RANGE: &str = "20000-20099";

/// What the walkthrough's web server answers.
const GREETING: &str = "hello through portunus";

/// How long one command may take (the readiness waits in the README retry for up to 20 s).
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// The commands of the walkthrough: continued lines (`\`, or a trailing `|`) are joined;
/// blank lines and whole-line comments are skipped.
fn walkthrough_commands(readme: &str) -> Vec<String> {
    let begin =
        readme.find("<!-- walkthrough:begin -->").expect("README.md marks the walkthrough's beginning");
    let end = readme.find("<!-- walkthrough:end -->").expect("README.md marks the walkthrough's end");
    assert!(begin < end, "the walkthrough markers are in order");
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme[begin..end].lines() {
        if !in_sh {
            in_sh = line.trim_end() == "```sh";
            continue;
        }
        if line.trim_end() == "```" {
            assert!(pending.is_empty(), "a command continues past the end of its block: {pending}");
            in_sh = false;
            continue;
        }
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        let code = strip_comment(line).trim_end();
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
        } else if code.ends_with('|') {
            pending.push_str(code);
            pending.push(' ');
        } else {
            pending.push_str(line.trim_end());
            commands.push(std::mem::take(&mut pending).trim().to_owned());
        }
    }
    assert!(!in_sh, "the walkthrough's last sh block is not closed");
    commands
}

/// `line` without a trailing shell comment (a `#` outside quotes that starts a word).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    let mut prev = ' ';
    for (idx, ch) in line.char_indices() {
        match (quote, ch) {
            (_, _) if escaped => escaped = false,
            (Some('"') | None, '\\') => escaped = true,
            (None, '\'' | '"') => quote = Some(ch),
            (Some(open), _) if ch == open => quote = None,
            (None, '#') if prev.is_whitespace() => return &line[..idx],
            _ => {}
        }
        prev = ch;
    }
    line
}

/// The command without its comment and trailing `&`, when it is a background command.
fn background(command: &str) -> Option<&str> {
    let code = strip_comment(command).trim_end();
    code.strip_suffix('&').filter(|head| !head.ends_with('&')).map(str::trim_end)
}

/// Replaces every whole-number occurrence of a port in `map` (and the grant range first).
fn substitute_ports(command: &str, map: &[(u16, u16)], grant: &str) -> String {
    let command = command.replace(GRANT_RANGE, grant);
    let mut res = String::with_capacity(command.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, res: &mut String| {
        let new = digits.parse::<u16>().ok().and_then(|n| map.iter().find(|(old, _)| *old == n));
        match new {
            Some((_, port)) => res.push_str(&port.to_string()),
            None => res.push_str(digits),
        }
        digits.clear();
    };
    for ch in command.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
        } else {
            flush(&mut digits, &mut res);
            res.push(ch);
        }
    }
    flush(&mut digits, &mut res);
    res
}

/// `bash` in the scenario dir with the debug binaries first on `PATH` and the server's
/// listen addresses in the environment.
fn bash(dir: &Path, env: &[(String, String)], args: &[&str]) -> Command {
    let bin_dir = bin("portunus-server").parent().expect("binaries live in a directory").to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin_dir];
    paths.extend(std::env::split_paths(&path));
    let mut command = Command::new("bash");
    // The walkthrough states its environment: nothing Portunus reads leaks in from the runner.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PORTUNUS_") || key == "RUST_LOG" {
            command.env_remove(&key);
        }
    }
    command
        .args(args)
        .current_dir(dir)
        .env("PATH", std::env::join_paths(paths).expect("PATH entries join"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
}

#[test]
fn readme_walkthrough_runs_as_written_and_forwards_bytes() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("README.md is readable");
    let commands = walkthrough_commands(&readme);
    let text = commands.join("\n");
    for port in PORTS {
        assert!(
            substitute_ports(&text, &[(port, 1)], GRANT_RANGE) != text,
            "the walkthrough no longer names port {port}: update PORTS in this test"
        );
    }
    assert!(text.contains(GRANT_RANGE), "the walkthrough no longer grants {GRANT_RANGE}: update GRANT_RANGE");

    let scn = Scenario::new("readme_walkthrough");
    let dir = scn.path("walkthrough");
    std::fs::create_dir_all(&dir).expect("create the walkthrough dir");
    let map: Vec<(u16, u16)> =
        std::iter::once(CONTROL_PORT).chain(PORTS).map(|old| (old, free_port())).collect();
    let new_port = |old: u16| map.iter().find(|(o, _)| *o == old).map(|(_, n)| *n).expect("a mapped port");
    let rule_ports = [new_port(18080), new_port(20080)];
    let grant = format!("{0}-{0}", new_port(20080));
    let env = vec![
        ("PORTUNUS_CONTROL_LISTEN".to_owned(), format!("127.0.0.1:{}", new_port(CONTROL_PORT))),
        ("PORTUNUS_OPERATOR_HTTP_LISTEN".to_owned(), format!("127.0.0.1:{}", new_port(7080))),
        ("PORTUNUS_METRICS_LISTEN".to_owned(), format!("127.0.0.1:{}", new_port(7081))),
    ];

    let mut running: Vec<Proc> = Vec::new();
    let mut outputs: Vec<(String, Output)> = Vec::new();
    for (idx, command) in commands.iter().enumerate() {
        let command = substitute_ports(command, &map, &grant);
        let (log, stdout) = scn.next_files(&format!("step{:02}", idx + 1));
        if let Some(program) = background(&command) {
            let proc = Proc::spawn(
                &command,
                bash(&dir, &env, &["-c", &format!("exec {program}")]),
                &log,
                Some(&stdout),
            );
            running.push(proc);
            continue;
        }
        let out = Proc::run_with_deadline(
            &command,
            bash(&dir, &env, &["-o", "pipefail", "-c", &command]),
            &log,
            &stdout,
            COMMAND_DEADLINE,
        );
        if out.code != 0 {
            let logs: String = ["srv.log", "edge.log", "web.log"]
                .iter()
                .map(|f| format!("--- {f}:\n{}\n", std::fs::read_to_string(dir.join(f)).unwrap_or_default()))
                .collect();
            panic!("walkthrough step {} failed: `{command}`\n{out:?}\n{logs}", idx + 1);
        }
        for proc in &running {
            assert!(
                proc.exit_status().is_none(),
                "a background program ended early; its log:\n{}",
                proc.log_text()
            );
        }
        outputs.push((command, out));
    }
    assert!(running.len() >= 3, "the walkthrough starts a web server, a server and a client");

    // Both rules forwarded the web server's answer to curl.
    for port in rule_ports {
        let through: Vec<&Output> = outputs
            .iter()
            .filter(|(c, _)| c.starts_with("curl ") && c.contains(&format!("127.0.0.1:{port}/")))
            .map(|(_, o)| o)
            .collect();
        assert!(!through.is_empty(), "the walkthrough curls nothing through port {port}");
        for out in through {
            assert_eq!(out.stdout.trim(), GREETING, "{out:?}");
        }
    }
    let onboarded = outputs
        .iter()
        .find(|(c, _)| c.contains("/v1/auth/onboarding"))
        .map(|(_, o)| o.stdout.clone())
        .expect("the walkthrough onboards a superadmin");
    assert!(onboarded.contains("\"role\":\"superadmin\""), "{onboarded}");

    // The server counted the bytes of alice's rule (the one the walkthrough keeps).
    let rule_id = outputs
        .iter()
        .rev()
        .find(|(c, _)| c.contains(" push-rule "))
        .map(|(_, o)| o.stdout.trim().to_owned())
        .expect("the walkthrough pushes a rule");
    let data_dir = dir.join("srv");
    let data_dir = data_dir.to_str().expect("UTF-8 path");
    wait_until("the kept rule to count bytes both ways", || {
        let out =
            run_server_cli(&scn, &["--data-dir", data_dir, "rule-stats", &rule_id, "--format", "json"], &[]);
        let stats: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let totals = &stats["totals"];
        (totals["bytes_in"].as_u64()? > 0 && totals["bytes_out"].as_u64()? > 0).then_some(())
    });
    drop(running);
}

#[test]
fn walkthrough_parsing_joins_continuations_and_spots_background_commands() {
    let readme = "intro\n```sh\nnot in the walkthrough\n```\n<!-- walkthrough:begin -->\ntext\n```sh\n\
        # a comment\nserve 2> log &   # background\nprintf '%s' \\\n    \"a # b\" |\n  cat\n\
        echo '#not a comment' # a comment\n```\n<!-- walkthrough:end -->\n";
    let commands = walkthrough_commands(readme);
    assert_eq!(
        commands,
        [
            "serve 2> log &   # background",
            "printf '%s'      \"a # b\" |   cat",
            "echo '#not a comment' # a comment"
        ]
    );
    assert_eq!(background(&commands[0]), Some("serve 2> log"));
    assert_eq!(background(&commands[1]), None);
    assert_eq!(background("a && b"), None);
    assert_eq!(strip_comment(&commands[2]), "echo '#not a comment' ");
    assert_eq!(
        substitute_ports("x 7080 17080 127.0.0.1:7080/ 20000-20099", &[(7080, 41000)], "5-5"),
        "x 41000 17080 127.0.0.1:41000/ 5-5"
    );
}
