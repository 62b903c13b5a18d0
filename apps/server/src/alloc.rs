//! The allocator's arena cap: the server's one `unsafe` call (tidy allows it in this file only).

/// Arenas the allocator may keep: see [`cap_arenas`].
const ALLOCATOR_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas before any thread starts, unless the operator set
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` themselves. glibc gives busy threads arenas of their
/// own, up to eight per core, and memory freed in one arena is not reused by another: with a
/// connection's buffers spread over a dozen arenas, each connected client cost 41.1 KiB of RSS
/// at 1,000 clients, against 39.3 KiB with two arenas (docs/PERFORMANCE.md). The control
/// plane's threads mostly wait, so two arenas cost it nothing measurable in throughput. Returns
/// whether the cap was set.
#[allow(unsafe_code)]
pub fn cap_arenas() -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || std::env::var_os("GLIBC_TUNABLES").is_some() {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only sets one of glibc's allocator parameters; it is called from
        // `main` before the async runtime or any other thread exists.
        unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, ALLOCATOR_ARENAS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
