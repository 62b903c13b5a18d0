//! Handing freed heap memory back to the kernel.
//!
//! glibc keeps what a burst of connections freed in its arenas (a thread's arena returns
//! only the free space at its very top), so after thousands of connections close the RSS
//! can stay where the burst left it. `malloc_trim` releases every whole free page of every
//! arena; it walks the arenas, so the relay calls it only after a large burst ebbed, never per
//! connection.

/// Returns free heap pages to the kernel (glibc only; elsewhere nothing to do). Blocks for
/// as long as the walk over the arenas takes: about 1 ms per 10 MiB freed here.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes a plain integer and only rearranges the allocator's own
        // free lists under its locks; it invalidates no live allocation.
        let _ = unsafe { nix::libc::malloc_trim(0) };
    }
}
