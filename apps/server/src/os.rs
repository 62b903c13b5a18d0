//! The OS behind core's `Entropy` port, and the shutdown signal. (The clock is the
//! runtime's `SystemClock`.)

use portunus_core::ports::Entropy;

/// The OS CSPRNG (through `rand`'s thread-local generator, seeded from the OS).
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        rand::fill(buf);
    }
}

/// This host's name, for the certificate's SANs.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).filter(|h| !h.is_empty())
}

/// SIGTERM and SIGINT, caught from the moment this is made: made before the server publishes
/// its addresses, so a stop sent as soon as it is reachable is a clean stop, never the
/// default action (death by signal, exit 143).
pub struct ShutdownSignal {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Installs the handlers (a handler that cannot be installed is simply not waited on).
    pub fn install() -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        ShutdownSignal {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves on the first SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = next(&mut self.term) => {}
            () = next(&mut self.int) => {}
        }
    }
}
