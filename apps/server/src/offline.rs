//! Offline subcommands: they open the store directly (so they fail with `store_in_use`,
//! exit 75, while `serve` runs), call core, and print the one secret they mint on stdout.
#![allow(clippy::print_stdout)]

use std::path::Path;

use portunus_core::error::Failure;
use portunus_core::service::offline::{self, Local};
use portunus_password::Argon2Hasher;
use portunus_store_redb::RedbStore;

use crate::{datadir, os, serve};

fn open(dir: &Path) -> Result<RedbStore, Failure> {
    datadir::prepare(dir)?;
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
