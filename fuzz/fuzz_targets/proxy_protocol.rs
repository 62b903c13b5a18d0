//! PROXY protocol decoder: never panics; whatever decodes re-encodes and decodes the same.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| portunus_core::proxy_protocol::fuzz_logic(data));
