//! Tarball assembly on the debug binaries (`cargo build --bins` first): what a tarball holds,
//! that `SHA256SUMS` checks out, that packing twice gives the same bytes, and that a binary
//! without `man`/`completions` is refused with a message saying so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Options, Release, assemble};

fn release() -> Release {
    Release { version: "9.9.9".into(), target: "test-target".into() }
}

/// `target/debug`, failing (never skipping) when a shipped binary is missing.
fn debug_bins() -> PathBuf {
    let dir = crate::project_root().join("target/debug");
    for bin in super::BINARIES {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: run `cargo build --bins` first",
            dir.join(bin).display()
        );
    }
    dir
}

/// A fresh directory under `target/xtask-tests/`.
fn scratch(name: &str) -> PathBuf {
    let dir = crate::project_root().join("target/xtask-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn run(program: &str, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(program).args(args).current_dir(cwd).output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_tarball_holds_binary_man_pages_completions_unit_and_docs() {
    let out = scratch("dist_contents");
    let tarballs = assemble(&crate::project_root(), &debug_bins(), &out, &release(), &super::BINARIES)
        .expect("assembly succeeds");
    let names: Vec<String> =
        tarballs.iter().map(|t| t.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        [
            "portunus-server-9.9.9-test-target.tar.gz",
            "portunus-client-9.9.9-test-target.tar.gz",
            "portunus-standalone-9.9.9-test-target.tar.gz"
        ]
    );
    for bin in super::BINARIES {
        let stem = format!("{bin}-9.9.9-test-target");
        let listing = run(
            "tar",
            &["--list", "--verbose", "--numeric-owner", "--file", &format!("{stem}.tar.gz")],
            &out,
        );
        let has = |path: &str| listing.lines().any(|l| l.ends_with(&format!(" {stem}/{path}")));
        for path in [
            bin.to_owned(),
            format!("man/{bin}.1"),
            format!("completions/{bin}.bash"),
            format!("completions/_{bin}"),
            format!("completions/{bin}.fish"),
            "README.md".into(),
            "docs/operations.md".into(),
            "docs/troubleshooting.md".into(),
        ] {
            assert!(has(&path), "{stem}.tar.gz lacks {path}:\n{listing}");
        }
        let unit = format!("systemd/{bin}.service");
        assert_eq!(has(&unit), bin != "portunus-standalone", "{stem}.tar.gz and {unit}:\n{listing}");
        for line in listing.lines() {
            assert!(line.contains(" 0/0 "), "an entry not owned by 0:0: {line}");
            let executable = line.ends_with(&format!("/{bin}")) || line.starts_with('d');
            let mode = if executable { "rwxr-xr-x" } else { "rw-r--r--" };
            assert!(line[1..10] == *mode, "{line}: expected mode {mode}");
        }
        // Man pages for subcommands come along with the main page.
        assert!(
            listing.lines().filter(|l| l.contains(&format!("{stem}/man/{bin}-"))).count() >= 1,
            "{stem}.tar.gz has no subcommand man page:\n{listing}"
        );
    }
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).expect("SHA256SUMS was written");
    assert_eq!(sums.lines().count(), 3, "{sums}");
    run("sha256sum", &["--check", "--strict", "SHA256SUMS"], &out);
}

#[test]
fn packing_the_same_inputs_twice_gives_identical_tarballs() {
    let bins = debug_bins();
    let first = scratch("dist_repro_1");
    let second = scratch("dist_repro_2");
    let root = crate::project_root();
    let a = assemble(&root, &bins, &first, &release(), &["portunus-client"]).expect("first assembly");
    let b = assemble(&root, &bins, &second, &release(), &["portunus-client"]).expect("second assembly");
    let bytes = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    assert!(bytes(&a[0]) == bytes(&b[0]), "two packings of the same inputs differ");
    assert_eq!(
        std::fs::read_to_string(first.join("SHA256SUMS")).expect("first sums"),
        std::fs::read_to_string(second.join("SHA256SUMS")).expect("second sums")
    );
}

#[test]
fn a_binary_without_man_or_completions_is_refused_by_name() {
    let fake = scratch("dist_fake_bins");
    let bin = fake.join("portunus-client");
    // Like a binary from before the `man` subcommand: clap's usage error, exit 2.
    std::fs::write(&bin, "#!/bin/sh\necho \"error: unrecognized subcommand '$1'\" >&2\nexit 2\n")
        .expect("write the fake binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = scratch("dist_fake_out");
    let err = assemble(&crate::project_root(), &fake, &out, &release(), &["portunus-client"])
        .expect_err("a binary that cannot write man pages is refused");
    let text = format!("{err:#}");
    assert!(text.contains("portunus-client man --out-dir"), "{text}");
    assert!(text.contains("unrecognized subcommand"), "{text}");
    assert!(!out.join("portunus-client-9.9.9-test-target.tar.gz").exists(), "no tarball is left behind");
}

#[test]
fn no_build_needs_a_bin_dir_and_paths_are_taken_from_the_working_directory() {
    let root = Path::new("/ws");
    let cwd = Path::new("/ws/sub");
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let opts = Options::parse(root, cwd, &[]).expect("defaults");
    assert_eq!(opts.out, Path::new("/ws/target/dist"));
    assert!(opts.bin_dir.is_none());
    let opts =
        Options::parse(root, cwd, &args(&["--out", "o", "--no-build", "--bin-dir", "/b"])).expect("full");
    assert_eq!(opts.out, Path::new("/ws/sub/o"));
    assert_eq!(opts.bin_dir.as_deref(), Some(Path::new("/b")));
    assert!(Options::parse(root, cwd, &args(&["--no-build"])).is_err());
    assert!(Options::parse(root, cwd, &args(&["--bin-dir", "b"])).is_err());
    assert!(Options::parse(root, cwd, &args(&["--bogus"])).is_err());
}
