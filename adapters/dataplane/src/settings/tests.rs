//! Unit tests of the shared settings cell.

use super::*;

#[test]
fn zero_durations_mean_off_and_a_store_replaces_the_old_values() {
    let shared = SharedSettings::new(DataPlaneSettings::default());
    assert_eq!(shared.tcp().idle_timeout, Some(DataPlaneSettings::default().tcp_idle_timeout));
    let settings = DataPlaneSettings { tcp_idle_timeout: Duration::ZERO, ..DataPlaneSettings::default() };
    shared.store(settings);
    assert_eq!(shared.tcp().idle_timeout, None);
    assert_eq!(shared.all(), settings);
}
