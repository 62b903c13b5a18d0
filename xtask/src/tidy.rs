//! `tidy`: repository invariants that a review comment would otherwise have to repeat.
//!
//! - `portunus-core` depends on no runtime, storage, network or protocol crate, and its code
//!   opens no sockets or files and never reads the clock;
//! - every source module starts with a `//!` comment;
//! - `unsafe` appears only under `adapters/dataplane/src/sys/`;
//! - the error-code table in `docs/troubleshooting.md` is exactly `ErrorCode::ALL`, with the
//!   same exit and HTTP statuses.

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

fn check_unsafe(root: &Path, problems: &mut Vec<String>) {
    for dir in ["core", "adapters", "apps", "proto", "xtask", "e2e", "benches"] {
        for file in rust_files(&root.join(dir)) {
            let rel_path = rel(root, &file);
            if rel_path.starts_with("adapters/dataplane/src/sys/") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                let code = strip_strings(line.split("//").next().unwrap_or_default());
                let uses_unsafe =
                    code.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|t| t == "unsafe");
                if uses_unsafe {
                    problems
                        .push(format!("{rel_path}:{}: `unsafe` outside adapters/dataplane/src/sys", n + 1));
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
    fn the_code_table_parser_reads_rows() {
        let doc = "x\n<!-- codes:begin -->\n| code | exit | HTTP | meaning |\n|---|---|---|---|\n| `port_in_use` | 5 | 409 | held |\n<!-- codes:end -->\n";
        let codes = super::documented_codes(doc).unwrap();
        assert_eq!(codes.get("port_in_use"), Some(&(5, 409)));
        assert_eq!(codes.len(), 1);
    }
}
