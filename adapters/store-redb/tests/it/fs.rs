//! `filesystem_magic` feeds `fsclass::classify` the numbers it expects.

use std::path::Path;

use portunus_core::fsclass::{FsVerdict, classify};
use portunus_store_redb::filesystem_magic;

#[test]
fn dev_shm_is_classified_as_tmpfs() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return; // Nothing to probe on a machine without it.
    }
    assert_eq!(classify(filesystem_magic(shm).unwrap()), FsVerdict::Unsupported("tmpfs"));
}

#[test]
fn the_crate_dir_is_on_a_supported_filesystem() {
    let magic = filesystem_magic(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(classify(magic), FsVerdict::Supported, "magic {magic:#x}");
}

#[test]
fn a_missing_dir_is_an_io_error() {
    let err = filesystem_magic(Path::new("/nonexistent/portunus-data")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}
