//! `loadtest`: builds `portunus-server` and `portunus-loadtest` in release mode and runs the
//! load test (one real server on loopback, N simulated clients in one process). A benchmark,
//! not a test: `ci` does not run it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Flags of `cargo xtask loadtest`, passed on to `portunus-loadtest` as given.
#[derive(Debug, Default)]
pub struct Options {
    /// `--clients N` and the other flags, in order.
    pub forward: Vec<String>,
}

impl Options {
    /// Parses and checks the flags after `loadtest` (the binary checks the ranges again).
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut forward = Vec::new();
        let mut clients = false;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--clients" | "--idle-secs" | "--pushes" => {
                    let value = it.next().with_context(|| format!("{flag} needs a number"))?;
                    let number: u64 =
                        value.parse().with_context(|| format!("{flag} {value:?} is not a number"))?;
                    if number == 0 {
                        bail!("{flag} must be at least 1");
                    }
                    clients |= flag == "--clients";
                    forward.extend([flag.clone(), value.clone()]);
                }
                "--out" => {
                    let value = it.next().context("--out needs a file")?;
                    forward.extend([flag.clone(), value.clone()]);
                }
                "--keep-data" => forward.push(flag.clone()),
                other => bail!(
                    "unknown loadtest flag {other:?} (--clients N, --idle-secs S, --pushes P, --out FILE, --keep-data)"
                ),
            }
        }
        if !clients {
            bail!("loadtest needs --clients N");
        }
        Ok(Options { forward })
    }
}

/// Builds both binaries (release) and runs the load test; fails when it reports a failure.
pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run_cmd(
        root,
        &cargo,
        &["build", "--release", "-p", "portunus-server", "-p", "portunus-loadtest"],
    )?;
    let release = root.join("target/release");
    let loadtest = release.join("portunus-loadtest");
    let work_dir = root.join("target/loadtest");
    std::fs::create_dir_all(&work_dir).with_context(|| format!("cannot create {}", work_dir.display()))?;
    println!("$ {} {}", loadtest.display(), opts.forward.join(" "));
    let status = Command::new(&loadtest)
        .arg("--server-bin")
        .arg(release.join("portunus-server"))
        .arg("--work-dir")
        .arg(&work_dir)
        .args(&opts.forward)
        .status()
        .with_context(|| format!("cannot run {}", loadtest.display()))?;
    if !status.success() {
        bail!("the load test failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options> {
        Options::parse(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_are_checked_and_forwarded() {
        let opts = parse(&["--clients", "50", "--idle-secs", "5", "--out", "x.json"]).expect("valid");
        assert_eq!(opts.forward, ["--clients", "50", "--idle-secs", "5", "--out", "x.json"]);
        assert!(parse(&["--idle-secs", "5"]).is_err(), "--clients is required");
        assert!(parse(&["--clients", "0"]).is_err());
        assert!(parse(&["--clients", "ten"]).is_err());
        assert!(parse(&["--clients", "5", "--bogus"]).is_err());
        assert!(parse(&["--clients"]).is_err());
    }
}
