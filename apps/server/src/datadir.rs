//! The data directory: its filesystem check, the permissions of its secrets, `server.toml`,
//! `operator.token`, and `server.addr` (the addresses `serve` actually bound, for operator
//! commands).
//!
//! Invariant: the directory is created 0700 and secrets are created 0600 before a byte is
//! written; a secret found readable by group or others is tightened before it is used;
//! `server.addr` is replaced atomically so a reader never sees half of it.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use portunus_core::config::SettingsLayer;
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::fsclass::{FsVerdict, classify};
use portunus_core::secret::Secret;
use serde::{Deserialize, Serialize};

/// The store file.
pub const STORE_FILE: &str = "portunus.redb";
const TOKEN_FILE: &str = "operator.token";
const ADDR_FILE: &str = "server.addr";
const SETTINGS_FILE: &str = "server.toml";

fn io_failure(what: &str, path: &Path, err: std::io::Error) -> Failure {
    Failure::new(ErrorCode::IoError, format!("cannot {what} {}: {err}", path.display()))
}

/// A data dir (with any parents) that this run of `serve` created. Until [`CreatedDir::keep`]
/// is called, dropping it removes the topmost directory this run created, with everything in
/// it, so a start that fails leaves no half-made data dir. A directory that existed before
/// is never removed, nor anything in it.
#[derive(Debug)]
#[must_use = "dropping the guard removes the directory it created"]
pub struct CreatedDir {
    top: Option<PathBuf>,
}

impl CreatedDir {
    /// The start got far enough (it serves, or another process owns the dir): keep it.
    pub fn keep(&mut self) {
        self.top = None;
    }
}

impl Drop for CreatedDir {
    fn drop(&mut self) {
        let Some(top) = self.top.take() else { return };
        match fs::remove_dir_all(&top) {
            Ok(()) => tracing::info!(event = "startup.data_dir_removed", path = %top.display(),
                "the start failed; the data dir it had created is removed"),
            Err(err) => {
                tracing::warn!(event = "startup.data_dir_removed", path = %top.display(), error = %err,
                "the start failed; the data dir it had created could not be removed")
            }
        }
    }
}

/// Creates the directory (0700) and any missing parents one level at a time, each with
/// `create_new` semantics, so a level another process made meanwhile is not counted as ours.
/// Returns the topmost level this call created, if any.
fn create_levels(dir: &Path) -> Result<Option<PathBuf>, Failure> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(|p| fs::symlink_metadata(p).is_err())
        .collect();
    let mut top = None;
    for level in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(0o700).create(level) {
            Ok(()) => {
                top.get_or_insert_with(|| level.to_path_buf());
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && level.is_dir() => {}
            Err(err) => {
                // Undo the levels made so far before reporting.
                drop(CreatedDir { top });
                return Err(io_failure("create", level, err));
            }
        }
    }
    Ok(top)
}

/// Creates the directory (0700) if needed and refuses network and memory filesystems. A
/// directory created here stays, unless the filesystem is refused.
pub fn prepare(dir: &Path) -> Result<(), Failure> {
    prepare_tracked(dir).map(|mut created| created.keep())
}

/// [`prepare`], returning a guard that removes what this call created unless the caller keeps
/// it (for `serve`, which keeps it once it is serving).
pub fn prepare_tracked(dir: &Path) -> Result<CreatedDir, Failure> {
    let created = CreatedDir { top: create_levels(dir)? };
    let magic = portunus_store_redb::filesystem_magic(dir).map_err(|e| io_failure("inspect", dir, e))?;
    match classify(magic) {
        FsVerdict::Supported => Ok(created),
        FsVerdict::Unsupported(kind) => {
            tracing::error!(event = "startup.unsupported_filesystem", data_dir = %dir.display(), filesystem = kind);
            Err(Failure::new(
                ErrorCode::UnsupportedFilesystem,
                format!(
                    "{} is on {kind}; move the data dir to a local, persistent filesystem",
                    dir.display()
                ),
            ))
        }
    }
}

/// The files of the data dir that hold secrets: the store (hashes, the audit trail), the TLS
/// private key and the operator token. (`server.toml` joins them when it sets a token.)
const SECRET_FILES: [&str; 3] = [STORE_FILE, portunus_control::tls::KEY_FILE, TOKEN_FILE];

/// Takes group and other permissions off every secret-bearing file of `dir` that has any,
/// logging `startup.permissions_tightened` for each. `settings` says whether `server.toml`
/// sets the operator token, which makes it a secret too. A file that cannot be tightened
/// (owned by another user) stops the start: the server does not run on an exposed secret.
pub fn tighten_secrets(dir: &Path, settings: &SettingsLayer) -> Result<(), Failure> {
    let toml = settings.operator_token.is_some().then_some(SETTINGS_FILE);
    for name in SECRET_FILES.into_iter().chain(toml) {
        let path = dir.join(name);
        let meta = match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(io_failure("inspect", &path, err)),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            continue;
        }
        let tightened = mode & !0o077;
        fs::set_permissions(&path, fs::Permissions::from_mode(tightened))
            .map_err(|e| io_failure("restrict the permissions of", &path, e))?;
        tracing::warn!(
            event = "startup.permissions_tightened",
            path = %path.display(),
            from = %format!("{mode:04o}"),
            to = %format!("{tightened:04o}"),
            "a secret-bearing file was readable by group or others"
        );
    }
    Ok(())
}

/// Names of the temporary store copies made in the data dir: `GET /v1/admin/backup`'s and
/// `restore`'s. Each is removed by the command that made it; a crash can leave one behind.
pub const BACKUP_COPY_PREFIX: &str = ".backup-";
/// See [`BACKUP_COPY_PREFIX`].
pub const RESTORE_COPY_PREFIX: &str = ".restore-";
/// See [`BACKUP_COPY_PREFIX`].
pub const COPY_SUFFIX: &str = ".redb.tmp";

/// Removes temporary store copies a crash left in `dir` (best effort: they only take space).
pub fn remove_stale_copies(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_copy = [BACKUP_COPY_PREFIX, RESTORE_COPY_PREFIX].iter().any(|p| name.starts_with(p))
            && name.ends_with(COPY_SUFFIX);
        if is_copy && fs::remove_file(entry.path()).is_ok() {
            tracing::info!(event = "startup.stale_copy_removed", path = %entry.path().display());
        }
    }
}

/// `server.toml`, or an empty layer when absent.
pub fn settings_file(dir: &Path) -> Result<SettingsLayer, Failure> {
    let path = dir.join(SETTINGS_FILE);
    match fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => SettingsLayer::from_toml(&text),
            Err(err) => Err(Failure::new(
                ErrorCode::InvalidConfig,
                format!(
                    "{}: not UTF-8 text (invalid byte at offset {})",
                    path.display(),
                    err.utf8_error().valid_up_to()
                ),
            )),
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(SettingsLayer::default()),
        Err(err) => Err(io_failure("read", &path, err)),
    }
}

/// The operator token: configured, else `operator.token`, generated (0600) at first start.
pub fn operator_token(dir: &Path, configured: Option<&str>) -> Result<Secret, Failure> {
    if let Some(token) = configured {
        return Ok(Secret::new(token));
    }
    let path = dir.join(TOKEN_FILE);
    match fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(Secret::new(text.trim())),
        Ok(_) => return Err(Failure::new(ErrorCode::InvalidConfig, format!("{} is empty", path.display()))),
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(io_failure("read", &path, err)),
        Err(_) => {}
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = Secret::from_entropy(&bytes);
    portunus_control::tls::write_new_file(&path, format!("{}\n", token.expose()).as_bytes(), 0o600)?;
    Ok(token)
}

/// The token an operator command uses: `PORTUNUS_OPERATOR_TOKEN`, else `operator.token`.
pub fn cli_token(dir: &Path) -> Result<String, Failure> {
    if let Ok(token) = std::env::var("PORTUNUS_OPERATOR_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let path = dir.join(TOKEN_FILE);
    fs::read_to_string(&path).map(|t| t.trim().to_owned()).map_err(|e| {
        Failure::new(
            ErrorCode::Unauthenticated,
            format!(
                "no operator token: set PORTUNUS_OPERATOR_TOKEN or make {} readable ({e})",
                path.display()
            ),
        )
    })
}

/// What `server.addr` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoundAddrs {
    /// Control listener.
    pub control: SocketAddr,
    /// Operator API listener.
    pub operator_http: SocketAddr,
    /// Metrics listener.
    pub metrics: SocketAddr,
    /// The serving process.
    pub pid: u32,
}

/// Writes `server.addr` atomically.
pub fn write_addrs(dir: &Path, addrs: &BoundAddrs) -> Result<(), Failure> {
    let path = dir.join(ADDR_FILE);
    let tmp = dir.join(format!("{ADDR_FILE}.tmp"));
    let _ = fs::remove_file(&tmp);
    let text = serde_json::to_string_pretty(addrs).unwrap_or_default();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| io_failure("create", &tmp, e))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| io_failure("write", &tmp, e))?;
    file.sync_all().map_err(|e| io_failure("sync", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| io_failure("rename", &path, e))
}

/// Removes `server.addr` at clean shutdown.
pub fn remove_addrs(dir: &Path) {
    let _ = fs::remove_file(dir.join(ADDR_FILE));
}

/// The operator API base URL from `server.addr` (a wildcard bind is reached on loopback).
pub fn api_url(dir: &Path) -> Result<String, Failure> {
    let path = dir.join(ADDR_FILE);
    let text = fs::read_to_string(&path).map_err(|e| {
        Failure::new(
            ErrorCode::ServerUnreachable,
            format!("no running server found ({}: {e}); start `serve` or pass --server URL", path.display()),
        )
    })?;
    let addrs: BoundAddrs = serde_json::from_str(&text).map_err(|e| {
        Failure::new(ErrorCode::ServerUnreachable, format!("{} is malformed: {e}", path.display()))
    })?;
    let mut http = addrs.operator_http;
    if http.ip().is_unspecified() {
        http.set_ip(if http.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(format!("http://{http}"))
}
