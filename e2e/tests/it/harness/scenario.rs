//! A scenario: one test's directory under `CARGO_TARGET_TMPDIR` (on the target's disk, never
//! tmpfs), its numbered log files, and the secrets it handled.
//!
//! Invariant: every process of a scenario writes its stderr under `logs/` and its stdout
//! under `out/`, so [`Scenario::assert_logs_free_of_secrets`] sees every log line (and
//! never the stdout of `enroll-client`, `reset-password`, `bootstrap-superadmin` or
//! `user-add --api-token`, the places a minted secret is printed).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One test's working area.
pub struct Scenario {
    dir: PathBuf,
    n_files: AtomicUsize,
    secrets: Mutex<Vec<(String, String)>>,
}

impl Scenario {
    /// A fresh, empty directory named after the test.
    pub fn new(name: &str) -> std::sync::Arc<Scenario> {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["logs", "out"] {
            std::fs::create_dir_all(dir.join(sub))
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
        std::sync::Arc::new(Scenario { dir, n_files: AtomicUsize::new(0), secrets: Mutex::new(Vec::new()) })
    }

    /// A path inside the scenario directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// A new stderr log path and its matching stdout path for a process called `stem`.
    pub fn next_files(&self, stem: &str) -> (PathBuf, PathBuf) {
        let n = self.n_files.fetch_add(1, Ordering::Relaxed) + 1;
        (
            self.dir.join("logs").join(format!("{n:03}-{stem}.log")),
            self.dir.join("out").join(format!("{n:03}-{stem}.stdout")),
        )
    }

    /// Records a secret (token, code, key) that must never appear in a log.
    pub fn remember_secret(&self, what: &str, value: &str) {
        assert!(value.len() >= 16, "{what} is too short to be a credible secret: {value:?}");
        self.secrets.lock().expect("secrets lock").push((what.to_owned(), value.to_owned()));
    }

    /// How many secrets were recorded.
    pub fn n_secrets(&self) -> usize {
        self.secrets.lock().expect("secrets lock").len()
    }

    /// Every log file written so far.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("logs"))
            .expect("logs dir exists")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        files.sort();
        files
    }

    /// Fails when any log file contains any recorded secret. The onboarding setup-token line
    /// (the documented place that token is printed) is the only line skipped.
    pub fn assert_logs_free_of_secrets(&self) {
        for file in self.log_files() {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> =
                text.lines().filter(|l| !l.starts_with(super::SETUP_TOKEN_PREFIX)).collect();
            self.assert_free_of_secrets(&file.display().to_string(), &lines.join("\n"));
        }
    }

    /// Fails when `text` (named `what` in the message) contains any recorded secret.
    pub fn assert_free_of_secrets(&self, what: &str, text: &str) {
        let secrets = self.secrets.lock().expect("secrets lock").clone();
        for (kind, secret) in &secrets {
            assert!(!text.contains(secret.as_str()), "{what} contains the {kind}");
        }
    }
}
