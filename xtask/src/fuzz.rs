//! `fuzz [TARGET] [--secs N]`: short runs of the cargo-fuzz targets in `fuzz/` (every parser
//! that sees untrusted bytes), seeded from `fuzz/seeds/`. Runs on the stable toolchain without
//! sanitizers (`-s none`); installs cargo-fuzz from crates.io when it is missing.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Every target, as named in fuzz/Cargo.toml.
const TARGETS: &[&str] =
    &["proxy_protocol", "enroll_uri", "rule_spec", "endpoint", "config_files", "client_hello"];

/// Runs `target` (or every target) for `secs` seconds each.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut secs = 10u64;
    let mut only = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--secs" => {
                secs =
                    iter.next().context("--secs needs a number")?.parse().context("--secs needs a number")?
            }
            name if TARGETS.contains(&name) => only = Some(name.to_owned()),
            other => bail!("unknown fuzz argument {other:?}; targets: {}", TARGETS.join(", ")),
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed =
        Command::new(&cargo).args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !installed {
        crate::run_cmd(root, &cargo, &["install", "cargo-fuzz", "--locked"])?;
    }
    let fuzz_dir = root.join("fuzz");
    for target in TARGETS.iter().filter(|t| only.as_deref().is_none_or(|o| o == **t)) {
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let seeds = fuzz_dir.join("seeds").join(target);
        if seeds.is_dir() {
            for seed in std::fs::read_dir(&seeds)?.flatten() {
                std::fs::copy(seed.path(), corpus.join(seed.file_name()))?;
            }
        }
        let max_time = format!("-max_total_time={secs}");
        let corpus_arg = corpus.to_str().context("non-UTF-8 path")?.to_owned();
        crate::run_cmd(
            &fuzz_dir,
            &cargo,
            &["fuzz", "run", "-s", "none", target, &corpus_arg, "--", &max_time, "-max_len=4096"],
        )?;
    }
    println!("fuzz: ok");
    Ok(())
}
