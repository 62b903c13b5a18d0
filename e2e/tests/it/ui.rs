//! The Web UI on the real server: how it is served (curl: security headers, caching, the SPA
//! fallback, the API never shadowed, encoded traversal), the rule stats stream its detail
//! page reads (server-sent events, read here over a raw socket), and the console driven in
//! headless Chromium by `web/tests/e2e/run.mjs` (playwright-core and axe-core from `web/node_modules`,
//! installed by `cargo xtask web`, which `cargo xtask ci` runs first). Without Node's modules
//! or `/usr/bin/chromium` the browser test fails, never skips.
//!
//! The browser script owns only the browser: every other process (server, client, backend)
//! is this test's, started when the script asks for it on its stdout and answered on its
//! stdin, so the harness stops them all by PID. That includes `reset-password`, for which the
//! test stops the server and starts it again on the same store and addresses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    Auth, Backend, Client, ClientOpts, DEADLINE, Scenario, Server, ServerOpts, connect, free_port, roundtrip,
    server_with_edge, uri_of_command, wait_until,
};

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `curl -i` of `path` on `addr`, sent as written (`--path-as-is`): status, lowercased
/// header lines and body.
fn curl(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--path-as-is", "--max-time", "20"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl runs (it is in .ci/run's package list)");
    assert!(out.status.success(), "curl {path} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
}

#[test]
fn console_is_served_with_strict_headers_and_never_shadows_the_api() {
    let scn = Scenario::new("ui-serving");
    let server = Server::start(&scn, ServerOpts::default());
    let addr = server.addrs().operator_http;

    let (status, headers, body) = curl(addr, "/");
    assert_eq!(status, 200);
    assert!(body.contains("<div id=\"app\">"), "the console's page: {body}");
    let csp = header(&headers, "content-security-policy");
    for directive in
        ["script-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "default-src 'self'"]
    {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "CSP {csp:?}");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(&headers, "referrer-policy"), "no-referrer");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert!(!body.contains("<script>") && !body.contains("<script type=\"module\">"), "no inline script");

    // The hashed script the page loads is cached for good.
    let script = body
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("index.html loads a script");
    assert!(script.starts_with("/assets/"), "{script}");
    let (status, headers, _) = curl(addr, script);
    assert_eq!(status, 200);
    assert!(header(&headers, "cache-control").contains("immutable"));
    assert!(header(&headers, "content-type").starts_with("text/javascript"));

    // Client-side routes reload; API paths keep the API's answers.
    let (status, _, deep) = curl(addr, "/rules/7?x=1");
    assert_eq!((status, deep.as_str()), (200, body.as_str()));
    let (status, headers, nope) = curl(addr, "/v1/nope");
    assert_eq!(status, 404);
    assert!(header(&headers, "content-type").starts_with("application/json"));
    assert!(nope.contains("\"route_not_found\""), "{nope}");
    assert_eq!(curl(addr, "/v1/auth/onboarding").0, 200);
    let (status, _, doc) = curl(addr, "/openapi.json");
    assert!(status == 200 && doc.contains("\"openapi\""));
    let (status, _, docs) = curl(addr, "/docs/");
    assert!(status == 200 && docs != body, "the docs page is Swagger UI");

    // Encoded traversal reads nothing from disk.
    for path in ["/..%2f..%2fCargo.toml", "/%2e%2e/%2e%2e/Cargo.toml", "/assets/..%2f..%2f..%2fCargo.toml"] {
        let (status, _, text) = curl(addr, path);
        assert!(!text.contains("[package]") && !text.contains("[workspace]"), "{path} leaked a file");
        assert!(status == 404 || text == body, "{path}: {status}");
    }
}

/// One server-sent event: its `event`, `id` and `data` fields.
#[derive(Debug)]
struct SseEvent {
    name: String,
    id: String,
    data: String,
}

/// A `text/event-stream` response read as it arrives, over HTTP/1.1 with a chunked body.
struct SseStream {
    reader: BufReader<TcpStream>,
    /// Decoded body text not yet parsed into events.
    pending: String,
    /// The status line and header lines (names lowercased).
    headers: Vec<(String, String)>,
    status: u16,
}

impl SseStream {
    /// `GET path` with `token`, past the response head.
    fn open(addr: SocketAddr, path: &str, token: &str) -> SseStream {
        let mut stream = TcpStream::connect(addr).expect("connect to the operator listener");
        stream.set_read_timeout(Some(DEADLINE)).expect("read timeout");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).expect("send the request");
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("a status line");
        let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        SseStream { reader, pending: String::new(), headers, status }
    }

    /// The next event, or `None` once the server ended the body.
    fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let field = |name: &str| {
                    block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_owned())
                };
                // A block with only a `retry:` or a comment is not an event.
                let Some(data) = field("data:") else { continue };
                return Some(SseEvent {
                    name: field("event:").unwrap_or_else(|| "message".to_owned()),
                    id: field("id:").unwrap_or_default(),
                    data,
                });
            }
            let mut size_line = String::new();
            self.reader.read_line(&mut size_line).expect("a chunk size (the stream went quiet)");
            let size = usize::from_str_radix(size_line.trim(), 16).expect("a hex chunk size");
            if size == 0 {
                return None;
            }
            let mut chunk = vec![0u8; size + 2];
            self.reader.read_exact(&mut chunk).expect("a whole chunk");
            chunk.truncate(size);
            self.pending.push_str(&String::from_utf8(chunk).expect("UTF-8 events"));
        }
    }
}

#[test]
fn rule_stats_stream_pushes_counters_each_second_and_hides_other_owners_rules() {
    let scn = Scenario::new("ui-stats-stream");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    let addr = server.addrs().operator_http;
    let backend = Backend::echo();
    let port = free_port();
    let rule = server.push_rule("edge-01", port, &backend.target());
    let mut conn = connect(port);
    roundtrip(&mut conn, &[3u8; 2_048]);
    wait_until("the bytes to be reported", || {
        let stats = api.call("GET", &format!("/v1/rules/{rule}/stats"), &op, None).body;
        (stats["totals"]["bytes_in"].as_u64() == Some(2_048)).then_some(())
    });

    // The stream answers at once with the counters, then keeps numbering its events.
    let mut stream =
        SseStream::open(addr, &format!("/v1/rules/{rule}/stats/stream?per_target=true"), &operator);
    assert_eq!(stream.status, 200);
    let header = |name: &str| stream.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    let first = stream.next_event().expect("a first event");
    assert_eq!((first.name.as_str(), first.id.as_str()), ("stats", "1"), "{first:?}");
    let stats: Value = serde_json::from_str(&first.data).expect("JSON data");
    assert_eq!(stats["rule_id"].as_u64(), Some(rule));
    assert_eq!(stats["totals"]["bytes_in"].as_u64(), Some(2_048), "{stats}");
    assert_eq!(stats["per_target"][0]["target"], backend.target(), "{stats}");
    let second = stream.next_event().expect("a second event");
    assert_eq!((second.name.as_str(), second.id.as_str()), ("stats", "2"), "{second:?}");

    // Another user hears what a missing rule answers, as JSON, before any stream starts.
    api.create_user(&op, "root", "superadmin", Some("a-long-enough-passphrase-2027"));
    api.create_user(&op, "bob", "user", None);
    let bob = api.mint_token(&op, "bob");
    let theirs = api.call("GET", &format!("/v1/rules/{rule}/stats/stream"), &Auth::Bearer(&bob), None);
    assert_eq!((theirs.status, theirs.code()), (404, "rule_not_found"), "{}", theirs.text);
    let missing = api.call("GET", "/v1/rules/987654/stats/stream", &op, None);
    assert_eq!((missing.status, missing.code()), (404, "rule_not_found"), "{}", missing.text);
    let anonymous = api.call("GET", &format!("/v1/rules/{rule}/stats/stream"), &Auth::None, None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);

    // A caller holds at most 8 streams: the ninth is refused before it starts, and a closed
    // one gives its slot back.
    let mut more: Vec<SseStream> =
        (0..7).map(|_| SseStream::open(addr, &format!("/v1/rules/{rule}/stats/stream"), &operator)).collect();
    for extra in &mut more {
        assert_eq!(extra.status, 200);
        extra.next_event().expect("each stream answers");
    }
    let ninth = api.call("GET", &format!("/v1/rules/{rule}/stats/stream"), &op, None);
    assert_eq!((ninth.status, ninth.code()), (429, "rate_limited"), "{}", ninth.text);
    let bobs = SseStream::open(addr, &format!("/v1/rules/{rule}/stats/stream"), &bob);
    assert_eq!(bobs.status, 404, "bob's own bound is untouched; the rule is just not his");
    drop(more.pop());
    wait_until("the closed stream's slot to come back", || {
        let again = SseStream::open(addr, &format!("/v1/rules/{rule}/stats/stream"), &operator);
        (again.status == 200).then_some(())
    });

    // Removing the rule ends the stream with an `end` event, and the body closes.
    assert_eq!(api.call("DELETE", &format!("/v1/rules/{rule}"), &op, None).status, 204);
    let end = std::iter::from_fn(|| stream.next_event())
        .find(|e| e.name != "stats")
        .expect("an end event before the body closes");
    assert_eq!(end.name, "end", "{end:?}");
    let last: Value = serde_json::from_str(&end.data).expect("JSON data");
    assert!(last["state"] == "removed" || last["error"]["code"] == "rule_not_found", "{last}");
    assert!(stream.next_event().is_none(), "nothing follows the end event");
}

/// The browser script, killed by PID if the test ends before it does.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// How long the whole browser walk-through may take: a hang guard, not a measurement.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

/// For `CROWD <port>` (a rule capped at one open connection): holds a first connection that
/// is served, and tells whether a second one was closed at accept without being served.
fn second_connection_refused(port: u16) -> bool {
    let mut first = connect(port);
    roundtrip(&mut first, b"the first connection");
    let mut second = connect(port);
    second.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    let _ = second.write_all(b"a second one");
    let mut buf = [0u8; 16];
    let refused = matches!(second.read(&mut buf), Ok(0) | Err(_));
    roundtrip(&mut first, b"the first is still served");
    refused
}

#[test]
fn console_walkthrough_in_headless_chromium() {
    let web = root().join("web");
    assert!(
        web.join("node_modules/playwright-core").is_dir() && web.join("node_modules/axe-core").is_dir(),
        "web/node_modules is missing: run `cargo xtask web` (cargo xtask ci does) to install the pinned Node tools"
    );
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium is missing: `apt-get install chromium` (.ci/run installs it)"
    );
    let scn = Scenario::new("ui-browser");
    let mut server = Server::start(&scn, ServerOpts::default());
    let setup_token = server.setup_token().expect("a fresh server prints a setup token");
    let backend = Backend::echo();
    let shots = root().join("target/ui-screenshots");
    // Last run's pictures must not stand in for this run's.
    let _ = std::fs::remove_dir_all(&shots);
    let stderr = std::fs::File::create(scn.path("browser.log")).expect("browser log");
    let child = Command::new("node")
        .arg(web.join("tests/e2e/run.mjs"))
        .current_dir(&web)
        .env("PORTUNUS_UI_URL", format!("http://{}", server.addrs().operator_http))
        .env("PORTUNUS_SETUP_TOKEN", &setup_token)
        .env("PORTUNUS_SCREENSHOTS", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("node runs (Debian's nodejs)");
    let mut script = Script(child);
    let mut to_script = script.0.stdin.take().expect("piped stdin");
    let from_script = script.0.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from_script).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut clients = Vec::new();
    let mut summary = String::new();
    let mut transcript = Vec::new();
    loop {
        let line = match lines.recv_timeout(SCRIPT_DEADLINE) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the browser script hung; log in {:?}", scn.path("browser.log"))
            }
        };
        transcript.push(line.clone());
        if let Some(command) = line.strip_prefix("ENROLL ") {
            let bundle = scn.path("edge-ui.json");
            Client::enroll_ok(&scn, &uri_of_command(command), &bundle);
            clients.push(Client::start_connected(&scn, &bundle, &ClientOpts::default()));
            writeln!(to_script, "OK {} {}", backend.target(), free_port()).expect("answer the script");
        } else if let Some(port) = line.strip_prefix("TRAFFIC ") {
            let mut stream = connect(port.trim().parse().expect("a port"));
            roundtrip(&mut stream, &[0x5a; 64 * 1024]);
            drop(stream);
            writeln!(to_script, "OK").expect("answer the script");
        } else if line == "PORT" {
            writeln!(to_script, "OK {}", free_port()).expect("answer the script");
        } else if let Some(port) = line.strip_prefix("CROWD ") {
            let refused = second_connection_refused(port.trim().parse().expect("a port"));
            let answer = if refused { "OK" } else { "NO: the second connection was served past the cap" };
            writeln!(to_script, "{answer}").expect("answer the script");
        } else if let Some(user) = line.strip_prefix("RESET ") {
            // `reset-password` opens the store itself, so the server stops for it; the
            // browser's sessions live in the store and survive the restart.
            assert_eq!(server.stop(), 0, "server exit status on SIGTERM");
            let reset = server.cli(&["reset-password", user.trim(), "--temporary"]);
            assert_eq!(reset.code, 0, "reset-password: {reset:?}");
            let temporary = reset
                .stdout
                .trim()
                .strip_prefix("temporary_password=")
                .expect("temporary_password=…")
                .to_owned();
            scn.remember_secret("temporary password", &temporary);
            server.start_again();
            writeln!(to_script, "OK {temporary}").expect("answer the script");
        } else if line.starts_with("ui: ") {
            summary = line;
        }
    }
    let status = script.0.wait().expect("the script exits");
    let log = std::fs::read_to_string(scn.path("browser.log")).unwrap_or_default();
    assert!(status.success(), "the browser walk-through failed ({summary}):\n{log}\n{transcript:#?}");
    assert!(summary.ends_with(" 0 failed") && !summary.starts_with("ui: 0 "), "{summary}");

    // What the browser did is what the server holds: the client it revoked is revoked.
    let api = server.api();
    let token = server.operator_token();
    let listed = api.call("GET", "/v1/clients", &Auth::Bearer(&token), None);
    let edge = listed.body.as_array().and_then(|c| c.iter().find(|c| c["name"] == "edge-ui")).cloned();
    assert_eq!(edge.expect("the enrolled client is listed")["status"], "revoked");
    // The quota the browser set, re-capped and credited was written as such.
    let audit = api.call("GET", "/v1/audit?limit=500&outcome=success", &Auth::Bearer(&token), None).body;
    let actions: Vec<&str> =
        audit["records"].as_array().expect("records").iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "quota.set").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "quota.patch").count(), 2, "{actions:?}");
    // So were the caps it edited and the envelope it set, replaced and removed; the reset
    // password was changed by its owner.
    assert_eq!(actions.iter().filter(|a| **a == "rule.set_caps").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "owner_caps.set").count(), 2, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "owner_caps.delete").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "auth.password_change").count(), 2, "{actions:?}");
    let rules = api.call("GET", "/v1/rules", &Auth::Bearer(&token), None).body;
    let capped = rules.as_array().and_then(|r| r.iter().find(|r| r["spec"]["name"] == "capped")).cloned();
    let caps = &capped.expect("the capped rule is listed")["spec"]["rate_limit"];
    assert_eq!(
        (caps["concurrent_connections"].as_u64(), caps["new_connections_per_sec"].as_u64()),
        (Some(2), Some(50)),
        "{caps}"
    );
    assert_eq!(caps["bandwidth_in_bps"].as_u64(), Some(1024 * 1024), "bytes, not bits: {caps}");
    server.assert_no_secret_leaked();
    for page in [
        "01-onboarding",
        "07-rule-detail",
        "07b-rule-caps",
        "07d-rule-caps-edited",
        "12a2-rate-limits",
        "12b1-rate-limits-user",
        "09-dashboard",
        "12b-quotas-user",
        "12d-quotas",
        "12e-dashboard-quota-warning",
        "12g-dashboard-history",
        "16-dashboard-360-dark",
        "18a-forced-password-change",
        "21-client-revoked",
    ] {
        assert!(shots.join(format!("{page}.png")).is_file(), "screenshot {page} missing");
    }
}
