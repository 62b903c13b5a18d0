//! `bench`: the loopback harness (`../shared/bench/forwarder_bench.py`) against
//! `portunus-standalone`, the direct path and the peers from Debian (socat, haproxy, nginx
//! stream), and `bench --gate`: the regression gate on instruction counts.
//!
//! The harness figures drift with the host, so only ratios within one run mean anything; the
//! gate uses callgrind instruction counts, which do not drift, against `benches/baseline.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages the harness drives.
const PACKAGES: &[&str] =
    &["iperf3", "wrk", "nginx-light", "libnginx-mod-stream", "haproxy", "socat", "sockperf"];
/// A command each package provides, to tell whether it is installed.
const COMMANDS: &[&str] = &["iperf3", "wrk", "nginx", "haproxy", "socat", "sockperf"];
/// Allowed growth of a workload's instruction count over the baseline.
const GATE_THRESHOLD: f64 = 1.25;
const BASELINE: &str = "benches/baseline.json";

/// Options of `cargo xtask bench`.
#[derive(Debug, Default)]
pub struct Options {
    /// One round instead of three, shorter tests.
    pub quick: bool,
    /// Run the regression gate instead of the harness.
    pub gate: bool,
    /// With `gate`: write the measured counts as the new baseline.
    pub update_baseline: bool,
    /// Add the UDP test.
    pub udp: bool,
}

impl Options {
    /// Parses the flags after `bench`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut opts = Options::default();
        for arg in args {
            match arg.as_str() {
                "--quick" => opts.quick = true,
                "--gate" => opts.gate = true,
                "--update-baseline" => opts.update_baseline = true,
                "--udp" => opts.udp = true,
                other => bail!("unknown bench flag {other:?} (--quick, --gate, --update-baseline, --udp)"),
            }
        }
        Ok(opts)
    }
}

/// Runs the harness or the gate.
pub fn run(root: &Path, opts: &Options) -> Result<()> {
    if opts.gate { gate(root, opts.update_baseline) } else { harness(root, opts) }
}

fn harness(root: &Path, opts: &Options) -> Result<()> {
    let bench_dir = root.join("../shared/bench");
    let script = bench_dir.join("forwarder_bench.py");
    if !script.exists() {
        bail!("{} not found: the harness lives in ../shared/bench beside the project", script.display());
    }
    ensure_tools()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run_cmd(root, &cargo, &["build", "--release", "-p", "portunus-standalone"])?;
    let standalone = root.join("target/release/portunus-standalone");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let out = root.join(format!("target/bench/{stamp}"));
    let rounds = if opts.quick { "1" } else { "3" };
    let duration = if opts.quick { "5" } else { "10" };
    let config = bench_dir.join("peers.json");
    let mut runs: Vec<(&str, Vec<&str>)> = vec![
        ("throughput", vec!["--only", "haproxy,socat,nginx-stream,portunus", "--tests", "tcp1,tcp8,crr"]),
        (
            "latency",
            vec![
                "--only",
                "haproxy,socat,nginx-stream,portunus",
                "--tests",
                "lat,sockperf",
                "--pin-lat",
                "0",
            ],
        ),
    ];
    if opts.udp {
        runs.push((
            "udp",
            vec!["--only", "socat,nginx-stream,portunus-udp", "--tests", "udp", "--udp-rate", "300M"],
        ));
    }
    for (name, extra) in runs {
        let dir = out.join(name);
        let dir_arg = dir.to_str().context("non-UTF-8 path")?.to_owned();
        let config_arg = config.to_str().context("non-UTF-8 path")?.to_owned();
        let mut args = vec![script.to_str().context("non-UTF-8 path")?, "--config", &config_arg];
        args.extend(["--rounds", rounds, "--duration", duration, "--out", &dir_arg]);
        args.extend(extra);
        println!("$ python3 {}", args.join(" "));
        let status = Command::new("python3")
            .args(&args)
            .env("PORTUNUS_STANDALONE", &standalone)
            .current_dir(root)
            .status()
            .context("cannot run python3")?;
        if !status.success() {
            bail!("the {name} harness run failed with {status}");
        }
    }
    println!("\nresults: {}/*/summary.md", out.display());
    Ok(())
}

/// Installs the harness's Debian packages when a command is missing. Services are kept from
/// starting; the harness runs them in the foreground.
fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = COMMANDS.iter().copied().filter(|cmd| which(cmd).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("bench: installing {} (missing: {})", PACKAGES.join(" "), missing.join(" "));
    let sudo = if nix::unistd::geteuid().is_root() { vec![] } else { vec!["sudo"] };
    let sh = |script: &str| -> Result<()> {
        let mut cmd = Command::new(if sudo.is_empty() { "sh" } else { "sudo" });
        if !sudo.is_empty() {
            cmd.arg("sh");
        }
        let status = cmd.arg("-c").arg(script).env("DEBIAN_FRONTEND", "noninteractive").status()?;
        if status.success() { Ok(()) } else { bail!("`{script}` failed with {status}") }
    };
    sh("printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d")?;
    sh("apt-get update -qq")?;
    sh(&format!("apt-get install -y -qq --no-install-recommends {}", PACKAGES.join(" ")))
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(cmd)).find(|p| p.is_file())
}

/// Builds the gate workloads and returns the binary's path.
fn gate_binary(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["bench", "-p", "portunus-client", "--bench", "gate", "--no-run", "--message-format=json"])
        .current_dir(root)
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("building the gate workloads failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "gate"
            && let Some(exe) = msg["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo did not report the gate executable")
}

/// Instructions executed by `exe workload` under callgrind.
fn instructions(root: &Path, exe: &Path, workload: &str) -> Result<u64> {
    let out_file = root.join(format!("target/bench/gate/{workload}.callgrind"));
    std::fs::create_dir_all(out_file.parent().context("gate dir")?)?;
    let status = Command::new("valgrind")
        .args(["--tool=callgrind", "--quiet"])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .arg(workload)
        .current_dir(root)
        .status()
        .context("cannot run valgrind (apt-get install valgrind)")?;
    if !status.success() {
        bail!("{workload} failed under callgrind with {status}");
    }
    let text = std::fs::read_to_string(&out_file)?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary: ").or_else(|| l.strip_prefix("totals: ")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no instruction total in {}", out_file.display()))
}

fn gate(root: &Path, update: bool) -> Result<()> {
    let exe = gate_binary(root)?;
    let listing = Command::new(&exe).output().context("cannot list gate workloads")?;
    let workloads: Vec<String> =
        String::from_utf8_lossy(&listing.stdout).lines().map(str::to_owned).collect();
    let baseline: BTreeMap<String, u64> = std::fs::read_to_string(root.join(BASELINE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut measured = BTreeMap::new();
    let mut failures = Vec::new();
    println!("{:<24} {:>16} {:>16} {:>8}", "workload", "instructions", "baseline", "ratio");
    for workload in &workloads {
        let count = instructions(root, &exe, workload)?;
        let base = baseline.get(workload).copied();
        let ratio = base.map(|b| count as f64 / b as f64);
        println!(
            "{workload:<24} {count:>16} {:>16} {:>8}",
            base.map_or("-".into(), |b| b.to_string()),
            ratio.map_or("-".into(), |r| format!("{r:.3}")),
        );
        if ratio.is_some_and(|r| r > GATE_THRESHOLD) {
            failures.push(format!(
                "{workload}: {:.1} % more instructions than the baseline",
                (ratio.unwrap_or(1.0) - 1.0) * 100.0
            ));
        }
        measured.insert(workload.clone(), count);
    }
    if update {
        std::fs::write(root.join(BASELINE), serde_json::to_string_pretty(&measured)? + "\n")?;
        println!("gate: wrote {BASELINE}");
        return Ok(());
    }
    if baseline.is_empty() {
        bail!("{BASELINE} is missing: run `cargo xtask bench --gate --update-baseline` and commit it");
    }
    if !failures.is_empty() {
        bail!("regression gate failed (threshold {GATE_THRESHOLD}x):\n  {}", failures.join("\n  "));
    }
    println!("gate: ok (threshold {GATE_THRESHOLD}x)");
    Ok(())
}
