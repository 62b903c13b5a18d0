//! `pytools`: the Python tools the end-to-end tests drive (schemathesis, openapi-python-client),
//! installed from PyPI into a venv under `target/`, at the versions `e2e/python/requirements.txt`
//! pins (transitive ones included).
//!
//! Invariant: the venv is rebuilt whenever the requirements file changes (a copy of it is kept
//! in the venv as a stamp), so a test never runs against tools other than the pinned ones.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::run_cmd;

/// The requirements file, relative to the workspace root.
pub const REQUIREMENTS: &str = "e2e/python/requirements.txt";
/// The venv, relative to the workspace root.
pub const VENV: &str = "target/pytools";

/// Makes sure the venv exists with exactly the pinned tools; returns its `bin` directory.
pub fn ensure(root: &Path) -> Result<PathBuf> {
    let venv = root.join(VENV);
    let bin = venv.join("bin");
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(root.join(REQUIREMENTS))
        .with_context(|| format!("cannot read {REQUIREMENTS}"))?;
    let installed = std::fs::read_to_string(&stamp).unwrap_or_default();
    if installed == wanted
        && bin.join("schemathesis").is_file()
        && bin.join("openapi-python-client").is_file()
    {
        println!("pytools: {VENV} is up to date");
        return Ok(bin);
    }
    run_cmd(root, "python3", &["-m", "venv", "--clear", VENV])?;
    let pip = bin.join("pip");
    let pip = pip.to_str().context("the venv path is not UTF-8")?;
    run_cmd(
        root,
        pip,
        &["install", "--quiet", "--disable-pip-version-check", "--no-input", "-r", REQUIREMENTS],
    )?;
    std::fs::write(&stamp, wanted)?;
    Ok(bin)
}
