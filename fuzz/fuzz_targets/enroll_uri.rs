//! Enrollment URIs and bundle files: never panic; a parsed URI renders back to itself.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(uri) = portunus_core::enroll::EnrollUri::parse(text) {
        let again = portunus_core::enroll::EnrollUri::parse(&uri.render()).expect("a rendered URI parses");
        assert_eq!(again, uri);
    }
    let _ = portunus_core::enroll::Bundle::parse(text);
});
