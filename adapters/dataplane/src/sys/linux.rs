//! Linux pipes and `splice(2)`: the fast path's only system calls.
//!
//! Invariant: a [`Pipe`] is owned by one direction of one connection at a time; the relay's
//! pool decides when one is reused (see `relay::pool`). Both ends are `O_NONBLOCK | O_CLOEXEC`,
//! and every splice passes `SPLICE_F_NONBLOCK`, so a call never sleeps on the pipe.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::unistd::{pipe2, read};

/// A kernel refusal to grow a pipe, reported once per rule as an event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PipeSizeRefusal {
    /// Why `F_SETPIPE_SZ` failed (usually `EPERM`: above `fs.pipe-max-size`).
    pub(crate) errno: Errno,
    /// The capacity the pipe kept.
    pub(crate) actual_bytes: usize,
}

/// One pipe used as the in-kernel buffer of one direction.
#[derive(Debug)]
pub(crate) struct Pipe {
    read_end: OwnedFd,
    write_end: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// Opens a pipe and asks for `requested` bytes of capacity. A refusal keeps the kernel
    /// default and is returned beside the pipe; `simulate_refusal` pretends the kernel said
    /// `EPERM` (a test hook) without asking.
    pub(crate) fn open(
        requested: usize,
        simulate_refusal: bool,
    ) -> io::Result<(Pipe, Option<PipeSizeRefusal>)> {
        let (read_end, write_end) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let requested_c = i32::try_from(requested).unwrap_or(i32::MAX);
        let grown = if simulate_refusal {
            Err(Errno::EPERM)
        } else {
            fcntl(&write_end, FcntlArg::F_SETPIPE_SZ(requested_c))
        };
        let (capacity, refusal) = match grown {
            // F_SETPIPE_SZ returns the size actually set (rounded up to pages).
            Ok(size) => (usize::try_from(size).unwrap_or(requested), None),
            Err(errno) => {
                let actual = fcntl(&write_end, FcntlArg::F_GETPIPE_SZ)?;
                let actual = usize::try_from(actual).unwrap_or(0);
                (actual, Some(PipeSizeRefusal { errno, actual_bytes: actual }))
            }
        };
        // A pipe always holds at least one page; never let a zero capacity stall the pump.
        let capacity = capacity.max(4096);
        Ok((Pipe { read_end, write_end, capacity }, refusal))
    }

    /// Bytes the pipe can hold when empty.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves up to `len` bytes from socket `src` into the pipe. `Ok(0)` means the socket
    /// reports end of stream.
    /// `WouldBlock` means the socket has nothing to read, provided the pipe was empty.
    pub(crate) fn fill_from(&self, src: impl AsFd, len: usize) -> io::Result<usize> {
        splice(src, None, &self.write_end, None, len, flags()).map_err(io::Error::from)
    }

    /// Moves up to `len` bytes from the pipe into socket `dst`. With bytes in the pipe,
    /// `WouldBlock` means the socket's send buffer is full.
    pub(crate) fn drain_into(&self, dst: impl AsFd, len: usize) -> io::Result<usize> {
        splice(&self.read_end, None, dst, None, len, flags()).map_err(io::Error::from)
    }

    /// Reads bytes out of the pipe into `buf`; used only to rescue bytes already in the
    /// pipe when the kernel refuses to splice them out.
    pub(crate) fn read_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        read(&self.read_end, buf).map_err(io::Error::from)
    }
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}
