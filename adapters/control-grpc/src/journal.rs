//! The client's journal of forwarded-but-unreported traffic: what a `kill -9` (or a crash)
//! would otherwise lose between two stats reports.
//!
//! Every few hundred milliseconds, when the counters changed, the rules' cumulative counters
//! (with the runtime instance that counted them) are written next to the bundle, atomically
//! (a temporary file renamed over the old one). A new process sends the journal as the very
//! first stats report of its first stream — before any report of its own instances — and
//! deletes it: the server takes those counters as the old instances' last word, so the bytes
//! they add are metered (quotas, history) as if the old process had reported them. What is
//! lost is bounded by one journal interval of traffic.
//!
//! Invariants: the journal is sent at most once (deleted as soon as it is queued), and only
//! ahead of every report of this process, so an instance's counters are never retired twice;
//! an unreadable journal is an event and is deleted, never a failure to start.

use std::path::{Path, PathBuf};

use portunus_core::ids::RuleId;
use portunus_core::stats::RuleReport;

/// How often the journal is brought up to date (when anything changed).
pub(crate) const JOURNAL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Most rules a journal is trusted to hold (a client runs far fewer).
const MAX_RULES: usize = 65_536;

/// The journal file of one client.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    /// What the file holds now (skip rewriting the same).
    written: Vec<(RuleId, RuleReport)>,
    /// A write failed and was reported: stay quiet until one succeeds.
    failing: bool,
}

impl Journal {
    /// The journal at `path` (not read yet).
    pub(crate) fn new(path: PathBuf) -> Journal {
        Journal { path, written: Vec::new(), failing: false }
    }

    /// The journal a previous process left, removed from disk. Empty when there is none.
    pub(crate) fn take(&mut self) -> Vec<(RuleId, RuleReport)> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(err) => {
                tracing::warn!(event = "client.counters_journal_unreadable", path = %self.path.display(), error = %err);
                return Vec::new();
            }
        };
        self.remove();
        match serde_json::from_slice::<Vec<(RuleId, RuleReport)>>(&text) {
            Ok(mut reports) => {
                reports.truncate(MAX_RULES);
                reports
            }
            Err(err) => {
                tracing::warn!(event = "client.counters_journal_unreadable", path = %self.path.display(), error = %err);
                Vec::new()
            }
        }
    }

    /// Records the counters now, when they changed since the last write.
    pub(crate) fn save(&mut self, reports: Vec<(RuleId, RuleReport)>) {
        if reports == self.written {
            return;
        }
        match write_atomically(&self.path, &reports) {
            Ok(()) => {
                self.failing = false;
                self.written = reports;
            }
            Err(err) if !self.failing => {
                self.failing = true;
                tracing::warn!(event = "client.counters_journal_failed", path = %self.path.display(), error = %err);
            }
            Err(_) => {}
        }
    }

    /// Deletes the file (everything in it has been reported).
    pub(crate) fn remove(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.written.clear();
    }
}

fn write_atomically(path: &Path, reports: &[(RuleId, RuleReport)]) -> std::io::Result<()> {
    let body = serde_json::to_vec(reports).map_err(std::io::Error::other)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, body)?;
    // No fsync: the journal guards against the process dying, not the host; the page cache
    // outlives a `kill -9`.
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use portunus_core::stats::Counters;

    use super::*;

    fn report(instance: u64, bytes: u64) -> RuleReport {
        RuleReport {
            instance,
            totals: Counters { bytes_in: bytes, ..Counters::default() },
            ..RuleReport::default()
        }
    }

    #[test]
    fn a_journal_survives_the_process_and_is_handed_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.json.unreported");
        let mut first = Journal::new(path.clone());
        first.save(vec![(RuleId::new(1), report(7, 100))]);
        first.save(vec![(RuleId::new(1), report(7, 250))]);
        drop(first); // As good as a kill -9: nothing runs at exit.

        let mut second = Journal::new(path.clone());
        assert_eq!(second.take(), vec![(RuleId::new(1), report(7, 250))]);
        assert!(!path.exists(), "taken means gone");
        assert!(second.take().is_empty(), "handed over once");
    }

    #[test]
    fn an_unreadable_journal_is_dropped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, b"{not json").unwrap();
        let mut journal = Journal::new(path.clone());
        assert!(journal.take().is_empty());
        assert!(!path.exists());
        // A journal in a directory that does not exist fails quietly, once.
        let mut nowhere = Journal::new(dir.path().join("missing/j"));
        nowhere.save(vec![(RuleId::new(1), report(1, 1))]);
        assert!(nowhere.failing);
    }
}
