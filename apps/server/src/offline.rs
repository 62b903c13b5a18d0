//! Offline subcommands: they open the store directly (so they fail with `store_in_use`,
//! exit 75, while `serve` runs), call core, and print the one secret they mint on stdout;
//! `restore` replaces the store with a backup.
//!
//! Invariant: `restore` never leaves a half-written store at `portunus.redb`: the backup is
//! copied to a temporary file, migrated and synced there, and moved into place by one rename.
#![allow(clippy::print_stdout)]

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ports::StoreError;
use portunus_core::service::offline::{self, Local};
use portunus_password::Argon2Hasher;
use portunus_store_redb::{RedbStore, SCHEMA_VERSION};

use crate::{datadir, os, serve};

fn open(dir: &Path) -> Result<RedbStore, Failure> {
    datadir::prepare(dir)?;
    datadir::tighten_secrets(dir, &datadir::settings_file(dir).unwrap_or_default())?;
    serve::open_store(&dir.join(datadir::STORE_FILE))
}

/// `reset-password USER`: prints `temporary_password=…` once.
pub fn reset_password(dir: &Path, user: &str, keep_api_tokens: bool) -> Result<(), Failure> {
    let store = open(dir)?;
    let local = Local { store: &store, clock: &portunus_runtime::SystemClock, entropy: &os::OsEntropy };
    let password = offline::reset_password(&local, &Argon2Hasher, user, keep_api_tokens)?;
    store.close()?;
    tracing::info!(event = "user.password_reset", user, api_tokens_revoked = !keep_api_tokens);
    println!("temporary_password={}", password.expose());
    Ok(())
}

/// `bootstrap-superadmin`: prints `api_token=…` once.
pub fn bootstrap_superadmin(dir: &Path) -> Result<(), Failure> {
    let store = open(dir)?;
    let local = Local { store: &store, clock: &portunus_runtime::SystemClock, entropy: &os::OsEntropy };
    let token = offline::bootstrap_superadmin(&local)?;
    store.close()?;
    tracing::info!(event = "user.bootstrap_superadmin", user = "_superadmin");
    println!("api_token={}", token.expose());
    Ok(())
}

/// `restore --in PATH [--force]`: checks that the backup is a store this binary can read,
/// refuses a data dir that is not empty (without `--force`) or whose store a server holds,
/// then puts the backup in place, migrated to this binary's schema. Prints the store's path.
pub fn restore(dir: &Path, input: &Path, force: bool) -> Result<(), Failure> {
    let found = RedbStore::check(input).map_err(|err| refused(input, err))?;
    if !force && has_entries(dir)? {
        return Err(Failure::new(
            ErrorCode::InvalidRequest,
            format!(
                "{} is not empty; restore into an empty data dir, or pass --force to replace its store",
                dir.display()
            ),
        ));
    }
    datadir::prepare(dir)?;
    let store_path = dir.join(datadir::STORE_FILE);
    if store_path.exists() {
        // Only a lock held by a server stops a forced restore: a damaged store is what a
        // restore is for.
        if let Err(StoreError::InUse) = RedbStore::check(&store_path) {
            return Err(refused(&store_path, StoreError::InUse));
        }
    }
    let tmp =
        dir.join(format!("{}{}{}", datadir::RESTORE_COPY_PREFIX, std::process::id(), datadir::COPY_SUFFIX));
    let _ = fs::remove_file(&tmp);
    let staged = stage(input, &tmp);
    if staged.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    staged?;
    fs::rename(&tmp, &store_path).map_err(|e| io_failure("move the restored store to", &store_path, e))?;
    // The rename is durable once the directory is synced.
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_failure("sync", dir, e))?;
    tracing::info!(
        event = "store.restored",
        path = %store_path.display(),
        from = %input.display(),
        backup_schema_version = found,
        schema_version = SCHEMA_VERSION,
    );
    println!("{}", store_path.display());
    Ok(())
}

/// Copies the backup to `tmp` (0600) and opens it there, which migrates it forward, then
/// syncs it: what is renamed into place is a whole store at this binary's schema.
fn stage(input: &Path, tmp: &Path) -> Result<(), Failure> {
    let mut from = fs::File::open(input).map_err(|e| io_failure("read", input, e))?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| io_failure("create", tmp, e))?;
    std::io::copy(&mut from, &mut to).map_err(|e| io_failure("write", tmp, e))?;
    to.sync_all().map_err(|e| io_failure("sync", tmp, e))?;
    drop(to);
    RedbStore::open(tmp).and_then(RedbStore::close).map_err(|err| refused(input, err))?;
    fs::File::open(tmp).and_then(|f| f.sync_all()).map_err(|e| io_failure("sync", tmp, e))
}

/// Logs that `path` cannot be restored from or over, and turns the cause into the failure.
/// The message is not in the event: `main` prints it once, on the exit line.
fn refused(path: &Path, err: StoreError) -> Failure {
    let failure = Failure::from(err);
    tracing::error!(event = "restore.refused", path = %path.display(), code = %failure.code);
    failure
}

/// True when `dir` exists and holds anything.
fn has_entries(dir: &Path) -> Result<bool, Failure> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(io_failure("list", dir, err)),
    }
}

fn io_failure(what: &str, path: &Path, err: std::io::Error) -> Failure {
    Failure::new(ErrorCode::IoError, format!("cannot {what} {}: {err}", path.display()))
}
