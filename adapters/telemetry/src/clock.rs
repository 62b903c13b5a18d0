//! The real clock: the one place any Portunus binary reads wall-clock time. The control
//! runtime hands it to core's use cases; the event log stamps its lines with it.

use portunus_core::ids::Timestamp;
use portunus_core::ports::Clock;

/// Wall-clock time from the operating system.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Timestamp::from_millis(millis)
    }
}
