//! A child process owned by a test: spawned with a clean environment and its stderr in a log
//! file, signalled by PID, and stopped when its handle drops.
//!
//! Invariant: a `Proc` never outlives its handle. Drop sends SIGTERM (and SIGCONT, in case
//! the test stopped it), waits a grace period, then SIGKILLs and reaps it. Nothing here ever
//! signals a process by name.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::log::{self, Event};
use super::{DEADLINE, POLL, wait_until};

/// How long a process may take to stop after SIGTERM when its handle drops.
const GRACE: Duration = Duration::from_secs(5);

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status (128 + signal number when killed by a signal).
    pub code: i32,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

/// A running (or finished) child process.
pub struct Proc {
    name: String,
    child: Mutex<Child>,
    status: Mutex<Option<ExitStatus>>,
    log: PathBuf,
    stdout: Option<PathBuf>,
}

/// Removes every `PORTUNUS_*` and `RUST_LOG` variable the test runner may carry, so each
/// test states the environment its processes see.
pub fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("PORTUNUS_") || key_text == "RUST_LOG" {
            command.env_remove(&key);
        }
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

impl Proc {
    /// Spawns `command` with stderr to `log` and stdout to `stdout` (discarded when `None`).
    pub fn spawn(name: &str, mut command: Command, log: &Path, stdout: Option<&Path>) -> Proc {
        let stderr = File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        command.stdin(Stdio::null()).stderr(stderr);
        match stdout {
            Some(path) => {
                let file =
                    File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
                command.stdout(file);
            }
            None => {
                command.stdout(Stdio::null());
            }
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Proc {
            name: name.to_owned(),
            child: Mutex::new(child),
            status: Mutex::new(None),
            log: log.to_path_buf(),
            stdout: stdout.map(Path::to_path_buf),
        }
    }

    /// Runs `command` to completion (the [`DEADLINE`] guard kills it if it hangs).
    pub fn run(name: &str, command: Command, log: &Path, stdout: &Path) -> Output {
        let proc = Proc::spawn(name, command, log, Some(stdout));
        let code = proc.wait_exit();
        Output { code, stdout: proc.stdout_text(), stderr: proc.log_text() }
    }

    /// Runs a long command (an external test tool) to completion, failing the test if it is
    /// still running after `deadline`.
    pub fn run_with_deadline(
        name: &str,
        command: Command,
        log: &Path,
        stdout: &Path,
        deadline: Duration,
    ) -> Output {
        let proc = Proc::spawn(name, command, log, Some(stdout));
        let started = Instant::now();
        let code = loop {
            if let Some(code) = proc.exit_status() {
                break code;
            }
            assert!(
                started.elapsed() < deadline,
                "{name} still runs after {deadline:?}; its log:\n{}",
                proc.log_text()
            );
            std::thread::sleep(POLL);
        };
        Output { code, stdout: proc.stdout_text(), stderr: proc.log_text() }
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        let id = self.child.lock().expect("child lock").id();
        Pid::from_raw(i32::try_from(id).expect("pids fit in i32"))
    }

    /// Sends `signal` to this process (and only this one).
    pub fn signal(&self, signal: Signal) {
        assert!(self.exit_status().is_none(), "{} already exited; cannot send {signal}", self.name);
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("kill({}, {signal}) failed: {e}", self.name));
    }

    /// The exit status once the process has ended; `None` while it runs.
    pub fn exit_status(&self) -> Option<i32> {
        let mut status = self.status.lock().expect("status lock");
        if status.is_none() {
            *status = self.child.lock().expect("child lock").try_wait().ok().flatten();
        }
        status.map(exit_code)
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&self) -> i32 {
        let name = format!("{} to exit (log: {})", self.name, self.log.display());
        wait_until(&name, || self.exit_status())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&self) -> i32 {
        self.signal(Signal::SIGTERM);
        self.wait_exit()
    }

    /// Everything written to stderr so far.
    pub fn log_text(&self) -> String {
        log::read_text(&self.log)
    }

    /// Everything written to stdout so far (empty when stdout was discarded).
    pub fn stdout_text(&self) -> String {
        self.stdout.as_deref().map(log::read_text).unwrap_or_default()
    }

    /// Every complete JSON log line so far.
    pub fn events(&self) -> Vec<Event> {
        log::read_events(&self.log)
    }

    /// The logged events named `name` with the given fields.
    pub fn events_matching(&self, name: &str, fields: &[(&str, &str)]) -> Vec<Event> {
        self.events().into_iter().filter(|e| log::matches(e, name, fields)).collect()
    }

    /// Waits until the log holds at least `n` events named `name` with the given fields and
    /// returns the `n`-th. Fails at once when the process exited without logging them.
    pub fn wait_event_n(&self, n: usize, name: &str, fields: &[(&str, &str)]) -> Event {
        let started = Instant::now();
        loop {
            let exited = self.exit_status().is_some();
            let found = self.events_matching(name, fields);
            if found.len() >= n {
                return found[n - 1].clone();
            }
            assert!(
                !exited,
                "{} exited ({:?}) without logging {n}x {name} {fields:?}; its log:\n{}",
                self.name,
                self.exit_status(),
                self.log_text()
            );
            assert!(
                started.elapsed() < DEADLINE,
                "timed out after {DEADLINE:?} waiting for {n}x {name} {fields:?} from {}; its log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the first event named `name` with the given fields.
    pub fn wait_event(&self, name: &str, fields: &[(&str, &str)]) -> Event {
        self.wait_event_n(1, name, fields)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit_status().is_some() {
            return;
        }
        let pid = self.pid();
        let _ = kill(pid, Signal::SIGTERM);
        // A stopped process only acts on SIGTERM once it runs again.
        let _ = kill(pid, Signal::SIGCONT);
        let started = Instant::now();
        while started.elapsed() < GRACE {
            if self.exit_status().is_some() {
                return;
            }
            std::thread::sleep(POLL);
        }
        eprintln!("{} (pid {pid}) did not stop on SIGTERM; killing it", self.name);
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}
