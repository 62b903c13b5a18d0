//! The data-plane settings as connections read them: lock-free on the connection path.
//!
//! Invariant: the three TCP durations are read with plain atomic loads when a connection is
//! accepted; a later `store` affects connections accepted afterwards, never running ones.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use portunus_core::config::DataPlaneSettings;

/// What one TCP connection runs with. `None` means "not limited by us".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpSettings {
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) keepalive: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct SharedSettings {
    connect_timeout_ns: AtomicU64,
    idle_timeout_ns: AtomicU64,
    keepalive_ns: AtomicU64,
    /// The whole set, for readers off the connection path.
    all: Mutex<DataPlaneSettings>,
}

impl SharedSettings {
    pub(crate) fn new(settings: DataPlaneSettings) -> Self {
        let shared = SharedSettings {
            connect_timeout_ns: AtomicU64::new(0),
            idle_timeout_ns: AtomicU64::new(0),
            keepalive_ns: AtomicU64::new(0),
            all: Mutex::new(settings),
        };
        shared.store(settings);
        shared
    }

    pub(crate) fn store(&self, settings: DataPlaneSettings) {
        self.connect_timeout_ns.store(nanos(settings.tcp_connect_timeout), Relaxed);
        self.idle_timeout_ns.store(nanos(settings.tcp_idle_timeout), Relaxed);
        self.keepalive_ns.store(nanos(settings.tcp_keepalive), Relaxed);
        *self.all.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
    }

    pub(crate) fn all(&self) -> DataPlaneSettings {
        *self.all.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The TCP settings for a connection accepted now. A zero duration means "off".
    pub(crate) fn tcp(&self) -> TcpSettings {
        TcpSettings {
            connect_timeout: duration(self.connect_timeout_ns.load(Relaxed)),
            idle_timeout: duration(self.idle_timeout_ns.load(Relaxed)),
            keepalive: duration(self.keepalive_ns.load(Relaxed)),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn duration(ns: u64) -> Option<Duration> {
    (ns != 0).then(|| Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests;
