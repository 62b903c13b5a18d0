//! Reading and writing the bundle file (mode 0600, replaced atomically), and where it lives
//! when no `--bundle PATH` (or `PORTUNUS_BUNDLE`) names it.
//!
//! Invariant: `enroll` writes to the first default path and a plain run reads the first
//! default path that exists, from the same list, so the two always meet.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use portunus_core::enroll::Bundle;
use portunus_core::error::{ErrorCode, Failure};

/// The bundle's default path for root.
pub const SYSTEM_PATH: &str = "/etc/portunus/bundle.json";

/// The bundle's path under a configuration directory (`$XDG_CONFIG_HOME` or `~/.config`).
const CONFIG_RELATIVE: &str = "portunus/bundle.json";

/// The default paths, most preferred first: as root only [`SYSTEM_PATH`]; otherwise
/// `$XDG_CONFIG_HOME/portunus/bundle.json`, then `$HOME/.config/portunus/bundle.json`, each
/// when its variable holds an absolute path (the XDG rule for a relative one: ignore it).
pub fn default_paths(is_root: bool, xdg_config_home: Option<&str>, home: Option<&str>) -> Vec<PathBuf> {
    if is_root {
        return vec![PathBuf::from(SYSTEM_PATH)];
    }
    let absolute = |v: Option<&str>| v.map(Path::new).filter(|p| p.is_absolute()).map(Path::to_path_buf);
    let mut paths = Vec::new();
    if let Some(config) = absolute(xdg_config_home) {
        paths.push(config.join(CONFIG_RELATIVE));
    }
    if let Some(home) = absolute(home) {
        paths.push(home.join(".config").join(CONFIG_RELATIVE));
    }
    paths
}

/// [`default_paths`] for this process: its effective uid and environment.
pub fn default_paths_here() -> Vec<PathBuf> {
    let var = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    default_paths(nix::unistd::geteuid().is_root(), var("XDG_CONFIG_HOME").as_deref(), var("HOME").as_deref())
}

/// Where `enroll` writes when no path is given: the first default path.
pub fn path_to_write(defaults: &[PathBuf]) -> Result<PathBuf, Failure> {
    defaults.first().cloned().ok_or_else(|| {
        Failure::new(
            ErrorCode::InvalidRequest,
            "no default bundle path: neither HOME nor XDG_CONFIG_HOME is set; pass --bundle PATH",
        )
    })
}

/// The bundle a plain run uses: the first default path that exists. None existing is
/// `invalid_bundle` (exit 2) naming every path tried.
pub fn path_to_read(defaults: &[PathBuf]) -> Result<PathBuf, Failure> {
    if let Some(found) = defaults.iter().find(|p| p.exists()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = defaults.iter().map(|p| p.display().to_string()).collect();
    let tried = if tried.is_empty() { "none (HOME is not set)".to_owned() } else { tried.join(", ") };
    Err(Failure::new(
        ErrorCode::InvalidBundle,
        format!(
            "no bundle found; tried {tried}. Run `portunus-client enroll URI` first, or pass --bundle PATH \
             (or set PORTUNUS_BUNDLE)"
        ),
    ))
}

/// Reads and validates a bundle; a missing or malformed file is `invalid_bundle` (exit 2).
pub fn read(path: &Path) -> Result<Bundle, Failure> {
    let text = fs::read_to_string(path).map_err(|e| {
        Failure::new(ErrorCode::InvalidBundle, format!("cannot read bundle {}: {e}", path.display()))
    })?;
    Bundle::parse(&text)
}

/// Creates the directory a default bundle goes to (and its parents) with mode 0700 when it
/// is missing; an existing directory keeps its mode.
pub fn create_parent(path: &Path) -> Result<(), Failure> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else { return Ok(()) };
    if parent.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(|e| Failure::new(ErrorCode::IoError, format!("cannot create {}: {e}", parent.display())))
}

/// Writes `bundle` to `path` with mode 0600 through a temporary file and a rename.
pub fn write(path: &Path, bundle: &Bundle) -> Result<(), Failure> {
    let io = |what: &str, e: std::io::Error| {
        Failure::new(ErrorCode::IoError, format!("cannot {what} {}: {e}", path.display()))
    };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("create", e))?;
    file.write_all(bundle.to_json().as_bytes()).and_then(|()| file.sync_all()).map_err(|e| io("write", e))?;
    fs::rename(&tmp, path).map_err(|e| io("rename", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uses_the_system_path_only() {
        assert_eq!(default_paths(true, Some("/x"), Some("/root")), vec![PathBuf::from(SYSTEM_PATH)]);
    }

    #[test]
    fn others_prefer_xdg_then_home() {
        assert_eq!(
            default_paths(false, Some("/cfg"), Some("/home/a")),
            vec![
                PathBuf::from("/cfg/portunus/bundle.json"),
                PathBuf::from("/home/a/.config/portunus/bundle.json")
            ]
        );
        assert_eq!(
            default_paths(false, None, Some("/home/a")),
            vec![PathBuf::from("/home/a/.config/portunus/bundle.json")]
        );
        assert_eq!(
            default_paths(false, Some("relative"), Some("/home/a")),
            vec![PathBuf::from("/home/a/.config/portunus/bundle.json")]
        );
        assert!(default_paths(false, None, None).is_empty());
    }

    #[test]
    fn a_missing_bundle_names_every_path_tried() {
        let paths = default_paths(false, Some("/nonexistent-a"), Some("/nonexistent-b"));
        let failure = path_to_read(&paths).expect_err("nothing exists there");
        assert_eq!(failure.code, ErrorCode::InvalidBundle);
        assert!(failure.message.contains("/nonexistent-a/portunus/bundle.json"), "{}", failure.message);
        assert!(
            failure.message.contains("/nonexistent-b/.config/portunus/bundle.json"),
            "{}",
            failure.message
        );
        assert!(path_to_write(&[]).is_err());
    }
}
