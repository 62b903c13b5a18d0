//! The filesystem type of the data directory, so the server can refuse the ones that break
//! redb's durability (network and memory filesystems; see `portunus_core::fsclass`).
//!
//! Invariant: this module reports the kernel's number and decides nothing; the verdict is
//! `portunus_core::fsclass::classify`'s.

use std::path::Path;

/// The `f_type` magic number that `statfs(2)` reports for the filesystem holding `dir`.
///
/// The number is normalised to its low 32 bits read as unsigned, which is how the kernel
/// headers (and `portunus_core::fsclass`) spell every magic, whatever integer type the
/// platform's `statfs` uses for the field.
pub fn filesystem_magic(dir: &Path) -> std::io::Result<i64> {
    let stat = nix::sys::statfs::statfs(dir).map_err(std::io::Error::from)?;
    // `f_type` is i64, u64, u32 or i32 depending on the libc; every magic fits in 32 bits, and a
    // 32-bit signed field holds values such as 0xff534d42 as negatives, so keep the low 32 bits.
    #[allow(clippy::unnecessary_cast)]
    let raw = stat.filesystem_type().0 as u64;
    Ok(i64::from(raw as u32))
}
