//! TLS ClientHello/SNI reader: never panics; fed whole or in chunks it gives the same answer;
//! an accepted name is a valid lowercase host name; SNI patterns round-trip.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| portunus_core::sni::fuzz_logic(data));
