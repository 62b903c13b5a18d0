//! End-to-end tests of the real `portunus-server` and `portunus-client` binaries. The tests
//! and their harness live in `tests/it` (one integration-test binary); this library is empty
//! on purpose, so nothing else in the workspace depends on test code.
#![forbid(unsafe_code)]
