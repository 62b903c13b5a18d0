//! `tidy`: repository invariants that a review comment would otherwise have to repeat.
//!
//! - `portunus-core` depends on no runtime, storage, network or protocol crate, and its code
//!   opens no sockets or files and never reads the clock;
//! - every source module starts with a `//!` comment;
//! - `unsafe` appears only under `adapters/dataplane/src/sys/` and in `apps/server/src/alloc.rs`
//!   (the server's one `mallopt` call);
//! - the error-code table in `docs/troubleshooting.md` is exactly `ErrorCode::ALL`, with the
//!   same exit and HTTP statuses;
//! - protobuf types stay in the gRPC adapter, and only its `convert` module builds or takes
//!   apart messages;
//! - wall-clock time is read only by the clock adapter (`adapters/telemetry/src/clock.rs`);
//! - no exit status is written as a literal outside the error-code table;
//! - every error status the OpenAPI document lists is the HTTP status of some error code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Crates `portunus-core` must never depend on.
const FORBIDDEN_CORE_DEPS: &[&str] = &[
    "tokio",
    "redb",
    "tonic",
    "axum",
    "hyper",
    "portunus-proto",
    "nix",
    "socket2",
    "rustls",
    "tokio-rustls",
    "hickory-resolver",
    "reqwest",
    "mio",
    "opentelemetry",
    "prometheus",
    "tracing",
];

/// Text that must not appear in `core/src`.
const FORBIDDEN_CORE_TEXT: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "std::fs",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "std::env::var",
];

/// Runs every check and reports all violations at once.
pub fn run(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    check_core_dependencies(root, &mut problems);
    check_core_text(root, &mut problems);
    check_module_docs(root, &mut problems);
    check_unsafe(root, &mut problems);
    check_error_codes(root, &mut problems);
    check_protobuf_confinement(root, &mut problems);
    check_clock_reads(root, &mut problems);
    check_exit_literals(root, &mut problems);
    check_openapi_statuses(root, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("tidy found {} problem(s):\n  {}", problems.len(), problems.join("\n  "))
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" && name != "fuzz" && name != "node_modules" {
                out.extend(rust_files(&path));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn check_core_dependencies(root: &Path, problems: &mut Vec<String>) {
    let manifest = std::fs::read_to_string(root.join("core/Cargo.toml")).unwrap_or_default();
    let mut section = String::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section != "[dependencies]" {
            continue;
        }
        let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
        if FORBIDDEN_CORE_DEPS.contains(&name) {
            problems.push(format!("core/Cargo.toml depends on `{name}`: core must stay I/O-free"));
        }
    }
}

fn check_core_text(root: &Path, problems: &mut Vec<String>) {
    for file in rust_files(&root.join("core/src")) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for needle in FORBIDDEN_CORE_TEXT {
                if code.contains(needle) {
                    problems.push(format!("{}:{}: `{needle}` in core", rel(root, &file), n + 1));
                }
            }
        }
    }
}

fn check_module_docs(root: &Path, problems: &mut Vec<String>) {
    for dir in ["core", "adapters", "apps", "proto", "xtask", "e2e", "benches"] {
        for file in rust_files(&root.join(dir)) {
            let rel_path = rel(root, &file);
            // Test modules (`tests.rs`, `tests/…`) document themselves by their test names.
            if rel_path.contains("/tests/") || file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
            if !first.starts_with("//!") {
                problems.push(format!("{rel_path}: module does not start with a `//!` comment"));
            }
        }
    }
}

/// The server's allocator setup, the one `unsafe` file outside the data plane's `sys`.
const UNSAFE_ALLOC_FILE: &str = "apps/server/src/alloc.rs";

fn check_unsafe(root: &Path, problems: &mut Vec<String>) {
    for dir in ["core", "adapters", "apps", "proto", "xtask", "e2e", "benches"] {
        for file in rust_files(&root.join(dir)) {
            let rel_path = rel(root, &file);
            if rel_path.starts_with("adapters/dataplane/src/sys/") || rel_path == UNSAFE_ALLOC_FILE {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                let code = strip_strings(line.split("//").next().unwrap_or_default());
                let uses_unsafe =
                    code.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|t| t == "unsafe");
                if uses_unsafe {
                    problems.push(format!(
                        "{rel_path}:{}: `unsafe` outside adapters/dataplane/src/sys and {UNSAFE_ALLOC_FILE}",
                        n + 1
                    ));
                }
            }
        }
    }
}

/// Parses the rows between `<!-- codes:begin -->` and `<!-- codes:end -->`:
/// `| \`code\` | exit | http | meaning |`.
fn documented_codes(doc: &str) -> Option<BTreeMap<String, (u8, u16)>> {
    let start = doc.find("<!-- codes:begin -->")?;
    let end = doc.find("<!-- codes:end -->")?;
    let mut codes = BTreeMap::new();
    for line in doc[start..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue;
        }
        let code = cells[1].trim_matches('`').to_owned();
        let exit = cells[2].parse().ok()?;
        let http = cells[3].parse().ok()?;
        codes.insert(code, (exit, http));
    }
    Some(codes)
}

fn check_error_codes(root: &Path, problems: &mut Vec<String>) {
    let doc = std::fs::read_to_string(root.join("docs/troubleshooting.md")).unwrap_or_default();
    let Some(documented) = documented_codes(&doc) else {
        problems.push("docs/troubleshooting.md has no parseable `<!-- codes:begin -->` table".into());
        return;
    };
    let actual: BTreeMap<String, (u8, u16)> = portunus_core::ErrorCode::ALL
        .iter()
        .map(|c| (c.as_str().to_owned(), (c.exit_status(), c.http_status())))
        .collect();
    for (code, statuses) in &actual {
        match documented.get(code) {
            None => problems.push(format!("docs/troubleshooting.md does not list error code `{code}`")),
            Some(doc) if doc != statuses => problems.push(format!(
                "docs/troubleshooting.md lists `{code}` with exit/HTTP {doc:?}, the code table says {statuses:?}"
            )),
            Some(_) => {}
        }
    }
    for code in documented.keys() {
        if !actual.contains_key(code) {
            problems.push(format!("docs/troubleshooting.md lists `{code}`, which is not an ErrorCode"));
        }
    }
}

/// Production sources (no tests) of the crates that ship.
fn shipped_sources(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in ["core/src", "adapters", "apps"] {
        for file in rust_files(&root.join(dir)) {
            let rel_path = rel(root, &file);
            let is_test = rel_path.contains("/tests/")
                || rel_path.contains("/examples/")
                || rel_path.contains("test_support")
                || file.file_name().is_some_and(|n| n == "tests.rs" || n == "test_server.rs");
            if !is_test {
                out.push((rel_path, std::fs::read_to_string(&file).unwrap_or_default()));
            }
        }
    }
    out
}

/// The code of each line (comments and string contents removed), numbered from 1.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, String)> + '_ {
    text.lines()
        .enumerate()
        .map(|(n, line)| (n + 1, strip_strings(line.split("//").next().unwrap_or_default())))
}

/// tonic's generated service and client modules: naming them is wiring, not message handling.
const PB_GLUE: &[&str] = &["control_server", "enrollment_server", "control_client", "enrollment_client"];

fn check_protobuf_confinement(root: &Path, problems: &mut Vec<String>) {
    for (path, text) in shipped_sources(root) {
        let in_grpc = path.starts_with("adapters/control-grpc/src/");
        for (n, code) in code_lines(&text) {
            if !in_grpc && code.contains("portunus_proto") {
                problems.push(format!("{path}:{n}: protobuf types outside adapters/control-grpc"));
            }
            if !in_grpc || path.ends_with("/convert.rs") {
                continue;
            }
            for item in pb_handling(&code) {
                problems.push(format!(
                    "{path}:{n}: `pb::{item}` built or taken apart outside convert.rs (move it into convert)"
                ));
            }
        }
    }
}

/// The `pb::` paths on a line of code that build a message (a struct literal) or reach into
/// a message's module (`pb::client_message::Msg`), rather than name a type or tonic's glue.
fn pb_handling(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("pb::") {
        let after = &rest[at + 4..];
        let path_len =
            after.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(after.len());
        let (item, tail) = after.split_at(path_len);
        let module = item.split("::").find(|seg| seg.starts_with(|c: char| c.is_ascii_lowercase()));
        let is_type = item
            .rsplit("::")
            .find(|seg| !seg.is_empty())
            .is_some_and(|seg| seg.starts_with(|c: char| c.is_ascii_uppercase()));
        let builds = is_type && tail.trim_start().starts_with('{');
        if builds || module.is_some_and(|m| !PB_GLUE.contains(&m)) {
            found.push(item.to_owned());
        }
        rest = tail;
    }
    found
}

/// True when the line passes a literal to `exit(` or `ExitCode::from(`.
fn exits_with_literal(code: &str) -> bool {
    ["exit(", "ExitCode::from("].iter().any(|needle| {
        code.match_indices(needle).any(|(at, _)| {
            code[at + needle.len()..].trim_start().starts_with(|c: char| c.is_ascii_digit() || c == '-')
        })
    })
}

fn check_clock_reads(root: &Path, problems: &mut Vec<String>) {
    for (path, text) in shipped_sources(root) {
        if path == "adapters/telemetry/src/clock.rs" {
            continue;
        }
        for (n, code) in code_lines(&text) {
            if code.contains("SystemTime::now") {
                problems.push(format!(
                    "{path}:{n}: wall-clock read outside the clock adapter (use the Clock port)"
                ));
            }
        }
    }
}

fn check_exit_literals(root: &Path, problems: &mut Vec<String>) {
    for (path, text) in shipped_sources(root) {
        for (n, code) in code_lines(&text) {
            if exits_with_literal(&code) {
                problems.push(format!(
                    "{path}:{n}: exit status literal; take it from the error-code table (`code.exit_status()`)"
                ));
            }
        }
    }
}

fn check_openapi_statuses(root: &Path, problems: &mut Vec<String>) {
    let Ok(text) = std::fs::read_to_string(root.join("openapi/portunus.openapi.json")) else {
        problems.push("openapi/portunus.openapi.json is missing".into());
        return;
    };
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
        problems.push("openapi/portunus.openapi.json is not JSON".into());
        return;
    };
    let table: std::collections::BTreeSet<u16> =
        portunus_core::ErrorCode::ALL.iter().map(|c| c.http_status()).collect();
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for (route, ops) in paths {
        for (method, op) in ops.as_object().cloned().unwrap_or_default() {
            for status in
                op["responses"].as_object().map(|r| r.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()
            {
                let Ok(code) = status.parse::<u16>() else { continue };
                if code >= 400 && !table.contains(&code) {
                    problems.push(format!(
                        "openapi: {method} {route} documents {code}, which no error code answers"
                    ));
                }
            }
        }
    }
}

/// `line` with the contents of string literals blanked, so text about `unsafe` is not code.
fn strip_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in line.chars() {
        match (in_string, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (true, _, _) => escaped = false,
            (false, _, '"') => in_string = true,
            (false, _, c) => out.push(c),
        }
    }
    out
}

fn rel(root: &Path, file: &Path) -> String {
    file.strip_prefix(root).unwrap_or(file).display().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn repository_is_tidy() {
        super::run(&crate::project_root()).unwrap();
    }

    #[test]
    fn protobuf_handling_is_told_apart_from_naming_types() {
        assert!(
            super::pb_handling("fn f(m: pb::ClientMessage) -> Result<pb::ServerMessage, Status>").is_empty()
        );
        assert!(super::pb_handling("use pb::control_server::{Control, ControlServer};").is_empty());
        assert_eq!(super::pb_handling("let h = pb::Hello { version };"), ["Hello"]);
        assert_eq!(
            super::pb_handling("Some(pb::client_message::Msg::Stats(r)) => {}"),
            ["client_message::Msg::Stats"]
        );
    }

    #[test]
    fn exit_literals_are_found() {
        assert!(super::exits_with_literal("std::process::exit(2);"));
        assert!(super::exits_with_literal("return ExitCode::from( 75);"));
        assert!(!super::exits_with_literal("std::process::exit(i32::from(code.exit_status()));"));
    }

    #[test]
    fn the_code_table_parser_reads_rows() {
        let doc = "x\n<!-- codes:begin -->\n| code | exit | HTTP | meaning |\n|---|---|---|---|\n| `port_in_use` | 5 | 409 | held |\n<!-- codes:end -->\n";
        let codes = super::documented_codes(doc).unwrap();
        assert_eq!(codes.get("port_in_use"), Some(&(5, 409)));
        assert_eq!(codes.len(), 1);
    }
}
