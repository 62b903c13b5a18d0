//! Thin wrappers over the OS calls the data plane needs beyond tokio and socket2: pipes and
//! `splice(2)` (Linux), batched datagram I/O (`recvmmsg`/`sendmmsg` on Linux), the
//! descriptor limit, and errno names and classes for events and decisions.
//!
//! Invariant: this is the only module that talks to nix and libc; it holds no policy, and its
//! only state is the per-thread datagram batch (the pool of pipes is the relay's).
//! `unsafe` is allowed here and nowhere else, each block with a `// SAFETY:` comment; today
//! only [`batch`] needs it (the two batched datagram calls, the address they return, and
//! registering a datagram socket with the reactor for reads only) and `memory` (glibc's
//! `malloc_trim`).

#[allow(unsafe_code)]
pub(crate) mod batch;
#[cfg(target_os = "linux")]
mod linux;
#[allow(unsafe_code)]
mod memory;

#[cfg(target_os = "linux")]
pub(crate) use linux::{Pipe, PipeSizeRefusal};
pub(crate) use memory::release_free_memory;

use std::io;

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use portunus_core::udp::UpstreamError;

/// The kernel's default ceiling for `RLIMIT_NOFILE` (`fs.nr_open`); used when the hard limit
/// is "infinity", which Linux refuses as a soft value.
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// The symbolic name of an OS error (`"ECONNREFUSED"`), or `"-"` when the error carries no
/// errno (a timeout built by tokio, for example).
pub(crate) fn errno_name(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => format!("{:?}", Errno::from_raw(code)),
        None => "-".to_owned(),
    }
}

/// True for the errno values with which a kernel, seccomp filter or LSM refuses `splice`
/// outright (as opposed to a failure of this particular connection).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn is_splice_refusal(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOSYS | Errno::EINVAL | Errno::EPERM | Errno::EOPNOTSUPP)
    )
}

/// The error `splice` would give on a kernel without it; used by the fault-injection hook.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn simulated_refusal() -> io::Error {
    io::Error::from(Errno::ENOSYS)
}

/// True when `err` says the address family or address is missing on this host (IPv6
/// disabled or not compiled in).
pub(crate) fn is_family_unavailable(err: &io::Error) -> bool {
    matches!(err.raw_os_error().map(Errno::from_raw), Some(Errno::EAFNOSUPPORT | Errno::EADDRNOTAVAIL))
}

/// True when `err` says this process (`EMFILE`) or the whole host (`ENFILE`) has no file
/// descriptor left: a local shortage that says nothing about any peer or target.
pub(crate) fn is_descriptor_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error().map(Errno::from_raw), Some(Errno::EMFILE | Errno::ENFILE))
}

/// True when an `accept` error concerns only the connection being accepted (the listener is
/// fine and the next accept can go ahead at once).
pub(crate) fn is_per_connection_accept_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::ECONNABORTED | Errno::ECONNRESET | Errno::EINTR | Errno::EPROTO | Errno::EPERM)
    )
}

/// The class of an error met on a flow's connected upstream socket. On Linux an ICMP error
/// reflected to a connected UDP socket surfaces as the next `recv` or `send` failing with
/// `ECONNREFUSED` (port unreachable), `EHOSTUNREACH` (host) or `ENETUNREACH` (network).
pub(crate) fn upstream_error(err: &io::Error) -> UpstreamError {
    match err.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ECONNREFUSED) => UpstreamError::PortUnreachable,
        Some(Errno::EHOSTUNREACH) => UpstreamError::HostUnreachable,
        Some(Errno::ENETUNREACH) => UpstreamError::NetworkUnreachable,
        _ => UpstreamError::Other,
    }
}

/// Raises the soft descriptor limit to the hard one; see [`crate::raise_nofile_limit`].
pub(crate) fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Ok((soft, hard)),
        // An infinite (or above `fs.nr_open`) hard limit is refused as a soft value; the
        // kernel default ceiling is the best we can get without reading sysctls.
        Err(Errno::EPERM | Errno::EINVAL) if hard > NR_OPEN_DEFAULT && soft < NR_OPEN_DEFAULT => {
            setrlimit(Resource::RLIMIT_NOFILE, NR_OPEN_DEFAULT, hard)?;
            Ok((soft, NR_OPEN_DEFAULT))
        }
        Err(errno) => Err(errno.into()),
    }
}
