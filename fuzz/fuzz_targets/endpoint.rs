//! The advertised-endpoint grammar: never panics; a parsed endpoint renders to itself.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(endpoint) = portunus_core::endpoint::Endpoint::parse(text) {
        let again = portunus_core::endpoint::Endpoint::parse(&endpoint.to_string()).expect("round trip");
        assert_eq!(again, endpoint);
    }
});
