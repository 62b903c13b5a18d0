//! `web [--check]`: builds the Web UI in `web/` with the machine's Node (`npm ci`, the
//! component tests, `npm run build`) into the committed asset directory of the HTTP adapter,
//! and writes the Rust manifest that embeds those files with `include_bytes!`.
//!
//! Invariants: the committed assets and manifest are exactly what a build of the committed
//! sources gives (`--check` rebuilds into `target/` and fails on any difference), and the
//! main script stays under [`MAIN_BUNDLE_BUDGET`] bytes gzipped. `cargo build` never runs Node.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::run_cmd;

/// The UI's sources (a Vite project with a committed `package-lock.json`).
const WEB_DIR: &str = "web";

/// The committed build output, embedded by the HTTP adapter.
pub const DIST_DIR: &str = "adapters/http-api/web-dist";

/// The generated manifest listing every embedded file.
pub const MANIFEST: &str = "adapters/http-api/src/ui_assets.rs";

/// Where `--check` builds.
const CHECK_DIR: &str = "target/web-check";

/// The most the main script may weigh, gzipped.
pub const MAIN_BUNDLE_BUDGET: u64 = 150 * 1024;

/// Installs the pinned toolchain, runs the component tests, builds, and writes (or, with
/// `check`, compares) the committed assets and manifest.
pub fn run(root: &Path, check: bool) -> Result<()> {
    let web = root.join(WEB_DIR);
    ensure_node_modules(&web)?;
    run_cmd(&web, "npm", &["test", "--silent"])?;
    let out = if check { root.join(CHECK_DIR).join("dist") } else { root.join(DIST_DIR) };
    let out_text = out.to_str().context("the output path is not UTF-8")?;
    run_cmd(&web, "npm", &["run", "build", "--silent", "--", "--outDir", out_text, "--emptyOutDir"])?;
    let files = list_files(&out)?;
    let manifest = manifest(&files);
    let main = main_script(&out)?;
    let gzipped = gzipped_len(&out.join(&main))?;
    println!("web: main bundle {main} is {gzipped} bytes gzipped (budget {MAIN_BUNDLE_BUDGET})");
    if gzipped > MAIN_BUNDLE_BUDGET {
        bail!("the main bundle {main} is {gzipped} bytes gzipped, over the budget of {MAIN_BUNDLE_BUDGET}");
    }
    if check {
        let committed = list_files(&root.join(DIST_DIR)).unwrap_or_default();
        let mut problems = Vec::new();
        for (name, bytes) in &files {
            match committed.get(name) {
                None => problems.push(format!("{name} is missing from {DIST_DIR}")),
                Some(old) if old != bytes => problems.push(format!("{DIST_DIR}/{name} differs")),
                Some(_) => {}
            }
        }
        problems.extend(
            committed.keys().filter(|k| !files.contains_key(*k)).map(|k| format!("{DIST_DIR}/{k} is stale")),
        );
        let current = std::fs::read_to_string(root.join(MANIFEST)).unwrap_or_default();
        if current != manifest {
            problems.push(format!("{MANIFEST} differs"));
        }
        if !problems.is_empty() {
            bail!(
                "the committed Web UI build is stale ({}): run `cargo xtask web` and commit the result",
                problems.join("; ")
            );
        }
        println!("web: {DIST_DIR} and {MANIFEST} are up to date");
    } else {
        std::fs::write(root.join(MANIFEST), manifest)?;
        println!("web: wrote {DIST_DIR} ({} files) and {MANIFEST}", files.len());
    }
    Ok(())
}

/// `npm ci` when `node_modules` is missing or older than the lockfile, so repeated runs
/// stay fast and a changed lock always reinstalls.
fn ensure_node_modules(web: &Path) -> Result<()> {
    let stamp = web.join("node_modules/.package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&stamp), modified(&web.join("package-lock.json"))) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    run_cmd(web, "npm", &["ci", "--no-audit", "--no-fund"])
}

/// Every file under `dir`, by its `/`-separated path relative to `dir`.
fn list_files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).with_context(|| format!("cannot read {}", next.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(dir)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .fold(String::new(), |mut acc, part| {
                    if !acc.is_empty() {
                        acc.push('/');
                    }
                    acc.push_str(&part);
                    acc
                });
            files.insert(relative, std::fs::read(&path)?);
        }
    }
    Ok(files)
}

/// The Rust manifest: one `(path, bytes)` row per file, sorted, so it only changes with the
/// build.
fn manifest(files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut text = String::from(
        "//! The embedded Web UI files, generated by `cargo xtask web` from `web/`: do not edit.\n\
         //!\n\
         //! Invariant: every row names a file of `web-dist/`, by its URL path.\n\n\
         /// Every file of the build: URL path and contents.\n\
         #[rustfmt::skip]\n\
         pub(crate) static ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for name in files.keys() {
        let _ = writeln!(text, "    (\"/{name}\", include_bytes!(\"../web-dist/{name}\")),");
    }
    text.push_str("];\n");
    text
}

/// The main script named by the built `index.html`.
fn main_script(out: &Path) -> Result<String> {
    let index = std::fs::read_to_string(out.join("index.html")).context("the build wrote no index.html")?;
    let start = index.find("src=\"/assets/").context("index.html loads no script from /assets/")?;
    let rest = &index[start + "src=\"/".len()..];
    let end = rest.find('"').context("unterminated script src in index.html")?;
    Ok(rest[..end].to_owned())
}

/// The size of `path` compressed by `gzip -9`, as a server would send it.
fn gzipped_len(path: &PathBuf) -> Result<u64> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut child = Command::new("gzip")
        .args(["-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = child.stdin.take().context("gzip has no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let output = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("the gzip writer panicked"))??;
    if !output.status.success() {
        bail!("gzip failed with {}", output.status);
    }
    Ok(output.stdout.len() as u64)
}
