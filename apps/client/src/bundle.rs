//! Reading and writing the bundle file (mode 0600, replaced atomically).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use portunus_core::enroll::Bundle;
use portunus_core::error::{ErrorCode, Failure};

/// Reads and validates a bundle; a missing or malformed file is `invalid_bundle` (exit 2).
pub fn read(path: &Path) -> Result<Bundle, Failure> {
    let text = fs::read_to_string(path).map_err(|e| {
        Failure::new(ErrorCode::InvalidBundle, format!("cannot read bundle {}: {e}", path.display()))
    })?;
    Bundle::parse(&text)
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
