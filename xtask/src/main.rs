//! `cargo xtask`: the project's automation, in Rust. `ci` is what `.ci/run` calls.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

mod bench;
mod demo;
mod dist;
mod fuzz;
mod loadtest;
mod openapi;
mod pytools;
mod tidy;
mod web;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask <command>

  ci                 fmt check, clippy -D warnings, build, web --check, every test, tidy,
                     openapi --check
  tidy               repository invariants (also run as a test)
  openapi [--check]  regenerate openapi/portunus.openapi.json, or fail if it is stale
  web [--check]      build the Web UI (npm ci, component tests, vite) into adapters/http-api/web-dist,
                     or fail if the committed build is stale or the main bundle is over budget
  pytools            install the pinned Python test tools (schemathesis, openapi-python-client)
                     into target/pytools
  demo [--keep]      a server, a client and one forwarded port on loopback, real bytes shown
  dist [--out DIR] [--no-build --bin-dir DIR]
                     release tarballs (binary, man pages, completions, systemd unit, docs) and
                     SHA256SUMS in DIR (default target/dist); --no-build packs DIR's binaries
  fuzz [TARGET] [--secs N]
                     short runs of every fuzz target (installs cargo-fuzz if missing)
  bench [--quick] [--udp]
                     the loopback harness (../shared/bench) against haproxy, socat, nginx stream
  bench --gate [--update-baseline]
                     regression gate: callgrind instruction counts vs benches/baseline.json
  loadtest --clients N [--idle-secs S] [--pushes P] [--out FILE] [--keep-data]
                     control-plane load test: a release server and N simulated clients on loopback
";

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    match args.first().map(String::as_str) {
        Some("ci") => ci(&root),
        Some("tidy") => {
            tidy::run(&root)?;
            println!("tidy: ok");
            Ok(())
        }
        Some("openapi") => openapi::run(&root, args.iter().any(|a| a == "--check")),
        Some("web") => web::run(&root, args.iter().any(|a| a == "--check")),
        Some("pytools") => pytools::ensure(&root).map(|_| ()),
        Some("demo") => demo::run(&root, args.iter().any(|a| a == "--keep")),
        Some("dist") => {
            let cwd = std::env::current_dir().context("no current directory")?;
            dist::run(&root, &dist::Options::parse(&root, &cwd, &args[1..])?)
        }
        Some("fuzz") => fuzz::run(&root, &args[1..]),
        Some("bench") => bench::run(&root, &bench::Options::parse(&args[1..])?),
        Some("loadtest") => loadtest::run(&root, &loadtest::Options::parse(&args[1..])?),
        _ => {
            print!("{HELP}");
            Ok(())
        }
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root").to_path_buf()
}

/// Runs a command in `root`, failing on a non-zero exit.
pub fn run_cmd(root: &Path, program: &str, args: &[&str]) -> Result<()> {
    println!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("{program} {} failed with {status}", args.join(" "));
    }
    Ok(())
}

/// [`run_cmd`] with extra environment variables for the child.
pub fn run_cmd_env(
    root: &Path,
    program: &str,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<()> {
    println!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("{program} {} failed with {status}", args.join(" "));
    }
    Ok(())
}

fn ci(root: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_cmd(root, &cargo, &["fmt", "--all", "--", "--check"])?;
    run_cmd(root, &cargo, &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"])?;
    // End-to-end tests drive the debug binaries and the pinned Python tools, so both are
    // ready before the tests run; the tests fail (never skip) without them.
    run_cmd(root, &cargo, &["build", "--workspace", "--bins", "--locked"])?;
    // The Web UI's check also installs the pinned Node tools the browser tests use.
    web::run(root, true)?;
    let pytools = pytools::ensure(root)?;
    let test_env = [("PORTUNUS_PYTOOLS", pytools.as_os_str())];
    run_cmd_env(root, &cargo, &["test", "--workspace", "--locked", "--", "--test-threads", "2"], &test_env)?;
    tidy::run(root)?;
    println!("tidy: ok");
    openapi::run(root, true)?;
    println!("ci: ok");
    Ok(())
}
