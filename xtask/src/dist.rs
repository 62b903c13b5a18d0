//! `dist`: release tarballs. Builds the three binaries in release mode, then packs one
//! `portunus-<bin>-<version>-<target>.tar.gz` per binary (the binary, its man pages and shell
//! completions, its systemd unit, README.md and the operator docs) and writes `SHA256SUMS`.
//!
//! Invariant: the same binaries and docs give byte-identical tarballs. Entries are sorted,
//! owned by 0:0, stamped with one fixed mtime and given fixed modes, and gzip stores no name
//! or time. Man pages and completions come from the binaries themselves (`man --out-dir`,
//! `completions SHELL`), so they always describe the command line being shipped.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The binaries shipped, each in its own tarball.
pub const BINARIES: [&str; 3] = ["portunus-server", "portunus-client", "portunus-standalone"];

/// Shells a completion script is shipped for, with the prefix and suffix around the binary's
/// name that make the file name each shell's loader expects (`BIN.bash`, `_BIN`, `BIN.fish`).
const SHELLS: [(&str, &str, &str); 3] = [("bash", "", ".bash"), ("zsh", "_", ""), ("fish", "", ".fish")];

/// Documents every tarball carries, by their path in the workspace (kept in the tarball).
const DOCS: [&str; 3] = ["README.md", "docs/operations.md", "docs/troubleshooting.md"];

/// What `cargo xtask dist` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the tarballs and `SHA256SUMS` go.
    pub out: PathBuf,
    /// Take the binaries from this directory instead of building them in release mode.
    pub bin_dir: Option<PathBuf>,
}

impl Options {
    /// Parses `[--out DIR] [--no-build --bin-dir DIR]`. Relative paths are taken from `cwd`;
    /// the default output is `<root>/target/dist`.
    pub fn parse(root: &Path, cwd: &Path, args: &[String]) -> Result<Options> {
        let mut out = root.join("target/dist");
        let mut bin_dir = None;
        let mut no_build = false;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--out" => out = cwd.join(args.next().context("--out needs a directory")?),
                "--bin-dir" => bin_dir = Some(cwd.join(args.next().context("--bin-dir needs a directory")?)),
                "--no-build" => no_build = true,
                other => bail!("dist: unknown argument {other:?} (see `cargo xtask help`)"),
            }
        }
        if no_build != bin_dir.is_some() {
            bail!("dist: --no-build and --bin-dir DIR go together (packing binaries built elsewhere)");
        }
        Ok(Options { out, bin_dir })
    }
}

/// Builds the release binaries (unless given a `--bin-dir`) and writes the tarballs.
pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let bin_dir = match &opts.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut args = vec!["build", "--release", "--locked"];
            for bin in BINARIES {
                args.extend(["-p", bin]);
            }
            crate::run_cmd(root, &cargo, &args)?;
            target_dir(root).join("release")
        }
    };
    let release = Release { version: env!("CARGO_PKG_VERSION").to_owned(), target: host_target()? };
    let tarballs = assemble(root, &bin_dir, &opts.out, &release, &BINARIES)?;
    for tarball in &tarballs {
        let bytes = fs::metadata(tarball).map(|m| m.len()).unwrap_or(0);
        println!("{}  {:.1} MiB", tarball.display(), bytes as f64 / (1024.0 * 1024.0));
    }
    println!("{}", opts.out.join("SHA256SUMS").display());
    Ok(())
}

/// The version and platform a set of tarballs is named after.
#[derive(Debug, Clone)]
pub struct Release {
    /// The workspace version (`Cargo.toml`).
    pub version: String,
    /// The target triple the binaries were built for.
    pub target: String,
}

impl Release {
    /// `portunus-server-0.1.0-x86_64-unknown-linux-gnu`: the tarball's stem and top directory.
    pub fn stem(&self, bin: &str) -> String {
        format!("{bin}-{}-{}", self.version, self.target)
    }
}

/// Packs `bins` from `bin_dir` into `out` (created if needed; earlier tarballs of the same
/// names are replaced) and writes `out/SHA256SUMS` over them. Returns the tarball paths.
pub fn assemble(
    root: &Path,
    bin_dir: &Path,
    out: &Path,
    release: &Release,
    bins: &[&str],
) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let staging = out.join(".staging");
    let mtime = source_date_epoch(root);
    let packed = bins
        .iter()
        .map(|bin| {
            let stem = release.stem(bin);
            remove_dir_if_present(&staging)?;
            stage(root, bin_dir, &staging.join(&stem), bin)?;
            let tarball = out.join(format!("{stem}.tar.gz"));
            pack(&staging, &stem, &tarball, mtime)?;
            Ok(tarball)
        })
        .collect::<Result<Vec<_>>>();
    // The staging tree goes whether or not packing worked; only tarballs stay in `out`.
    remove_dir_if_present(&staging)?;
    let tarballs = packed?;
    write_checksums(out, &tarballs)?;
    Ok(tarballs)
}

/// Lays out one tarball's tree under `dir`:
/// `BIN`, `man/*.1`, `completions/{BIN.bash,_BIN,BIN.fish}`, `systemd/BIN.service` (server
/// and client), `README.md`, `docs/{operations,troubleshooting}.md`.
fn stage(root: &Path, bin_dir: &Path, dir: &Path, bin: &str) -> Result<()> {
    let binary = bin_dir.join(bin);
    if !binary.is_file() {
        bail!("{} is missing: build it first (or drop --no-build)", binary.display());
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    copy(&binary, &dir.join(bin), 0o755)?;

    let man = dir.join("man");
    let status = Command::new(&binary)
        .arg("man")
        .arg("--out-dir")
        .arg(&man)
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !status.status.success() {
        bail!(
            "`{bin} man --out-dir DIR` failed ({}): this binary cannot write its man pages: {}",
            status.status,
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    if !man.join(format!("{bin}.1")).is_file() {
        bail!("`{bin} man --out-dir {}` wrote no {bin}.1", man.display());
    }
    normalize_modes(&man)?;

    let completions = dir.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, prefix, suffix) in SHELLS {
        let out = Command::new(&binary)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!(
                "`{bin} completions {shell}` failed ({}): this binary cannot print its completions: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        write(&completions.join(format!("{prefix}{bin}{suffix}")), &out.stdout)?;
    }

    let unit = root.join("dist/systemd").join(format!("{bin}.service"));
    if unit.is_file() {
        fs::create_dir_all(dir.join("systemd"))?;
        copy(&unit, &dir.join("systemd").join(format!("{bin}.service")), 0o644)?;
    }
    for doc in DOCS {
        let to = dir.join(doc);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        copy(&root.join(doc), &to, 0o644)?;
    }
    normalize_modes(dir)
}

/// `tar` over `staging/stem` into `tarball`, with every source of variation pinned.
fn pack(staging: &Path, stem: &str, tarball: &Path, mtime: u64) -> Result<()> {
    let _ = fs::remove_file(tarball);
    let status = Command::new("tar")
        .args(["--create", "--format=gnu", "--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
        .arg(format!("--mtime=@{mtime}"))
        .args(["--use-compress-program=gzip -n", "--file"])
        .arg(tarball)
        .arg("-C")
        .arg(staging)
        .arg(stem)
        .status()
        .context("cannot run tar (GNU tar is needed)")?;
    if !status.success() {
        bail!("tar failed with {status} while writing {}", tarball.display());
    }
    Ok(())
}

/// `SHA256SUMS` in the format `sha256sum --check` reads, over the tarballs' file names.
fn write_checksums(out: &Path, tarballs: &[PathBuf]) -> Result<()> {
    let mut command = Command::new("sha256sum");
    command.current_dir(out).arg("--");
    for tarball in tarballs {
        command.arg(tarball.file_name().context("a tarball path has a file name")?);
    }
    let res = command.output().context("cannot run sha256sum")?;
    if !res.status.success() {
        bail!("sha256sum failed ({}): {}", res.status, String::from_utf8_lossy(&res.stderr).trim());
    }
    write(&out.join("SHA256SUMS"), &res.stdout)
}

/// The mtime of every entry: `SOURCE_DATE_EPOCH` when set, else the time of the last commit,
/// else the epoch. Never the wall clock, so a rebuild of the same tree packs the same bytes.
fn source_date_epoch(root: &Path) -> u64 {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()) {
        return epoch;
    }
    Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// The host's target triple, from `rustc -vV` (dist builds natively, never cross).
fn host_target() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc).arg("-vV").output().with_context(|| format!("cannot run {rustc}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|t| t.trim().to_owned())
        .context("`rustc -vV` printed no host triple")
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(|d| root.join(d)).unwrap_or_else(|| root.join("target"))
}

/// Gives every directory under `dir` mode 0755 and every file 0644, except executables
/// (any x bit set), which get 0755: the tarball must not carry the builder's umask.
fn normalize_modes(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            normalize_modes(&path)?;
        } else {
            let mode = if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", to.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
