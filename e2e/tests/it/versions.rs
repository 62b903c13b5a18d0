//! `--version` on both binaries: version, git revision and protocol version, the same on
//! both sides of the wire.

use std::process::Command;

use crate::harness::bin;

/// Checks `<name> <version> (git <revision>, protocol <n>)` and returns the revision.
fn check_version(name: &str) -> String {
    let out = Command::new(bin(name)).arg("--version").output().expect("run --version");
    assert!(out.status.success(), "{name} --version failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
    let expected_head = format!("{name} {} (git ", env!("CARGO_PKG_VERSION"));
    let expected_tail = format!(", protocol {})", portunus_core::PROTOCOL_VERSION);
    let revision = text
        .strip_prefix(&expected_head)
        .and_then(|rest| rest.strip_suffix(&expected_tail))
        .unwrap_or_else(|| panic!("{name} --version printed {text:?}"));
    let hex = revision.strip_suffix("-dirty").unwrap_or(revision);
    assert!(
        revision == "unknown" || (hex.len() >= 7 && hex.bytes().all(|b| b.is_ascii_hexdigit())),
        "{name}: {revision:?} is not a git revision"
    );
    revision.to_owned()
}

#[test]
fn both_binaries_print_version_git_revision_and_protocol_version() {
    let server = check_version("portunus-server");
    let client = check_version("portunus-client");
    assert_eq!(server, client, "both binaries come from the same build");
}
