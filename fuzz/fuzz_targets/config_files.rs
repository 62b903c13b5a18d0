//! `server.toml` and the standalone rules file: never panic on any text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(layer) = portunus_core::config::SettingsLayer::from_toml(text) {
        let _ = portunus_core::config::ServerSettings::resolve(layer);
    }
    let _ = portunus_core::standalone::StandaloneConfig::parse(text);
});
