//! The Linux fast path: socket → pipe → socket with `splice(2)`, driven by tokio readiness.
//!
//! Each leg alternates two phases. Fill: with the pipe empty, splice as much as the pipe
//! holds from the source socket. Drain: splice the pipe into the destination in batches of
//! at most [`BATCH`] bytes, counting each, until the pipe is empty again. Because a fill
//! only ever starts on an empty pipe, `EAGAIN` from a fill can only mean "the socket has
//! nothing to read" and `EAGAIN` from a drain only "the socket's send buffer is full"; so
//! the readiness tokio clears on `WouldBlock` is always the right one, and no wake-up is lost.
//!
//! Invariant: the pipe belongs to this leg and is closed with it; bytes stranded in it by a
//! failed connection are discarded with the pipe, never delivered and never counted.

use std::io;
use std::mem::MaybeUninit;

use socket2::SockRef;
use tokio::io::Interest;

use super::{Activity, BATCH, Leg, PIPE_REQUEST_BYTES, PathNotes, SpliceFault, copy};
use crate::relay::{RelayError, Side};
use crate::sys::{self, Pipe};

/// Runs one leg to its end on the fast path, falling back to the userspace copy when the
/// kernel refuses `splice` before any byte went through it.
pub(super) async fn pump(leg: Leg<'_>, activity: &Activity, notes: &PathNotes) -> Result<(), RelayError> {
    let simulate_size_refusal = notes.fault == Some(SpliceFault::PipeSizeRefused);
    let pipe = match Pipe::open(PIPE_REQUEST_BYTES, simulate_size_refusal) {
        Ok((pipe, refusal)) => {
            if let Some(refusal) = refusal {
                notes.pipe_size_refused(refusal);
            }
            pipe
        }
        Err(err) => {
            // Out of descriptors or pipe quota: this connection still works without a pipe.
            notes.pipe_unavailable(&err);
            return copy::pump(leg, activity, vec![0; BATCH]).await;
        }
    };
    let simulate_refusal = notes.fault == Some(SpliceFault::Unsupported);
    let simulate_drain_refusal = notes.fault == Some(SpliceFault::UnsupportedOnDrain);
    let mut first = true;
    // On the first drain no byte has left the pipe yet, so a refusal there means a kernel
    // that cannot splice into sockets rather than a failure of this connection.
    let mut first_drain = true;
    loop {
        let filled = leg
            .src
            .async_io(Interest::READABLE, || {
                if first && simulate_refusal {
                    return Err(sys::simulated_refusal());
                }
                pipe.fill_from(leg.src, pipe.capacity())
            })
            .await;
        let n = match filled {
            Ok(n) => n,
            Err(err) if first && sys::is_splice_refusal(&err) => {
                notes.splice_refused(&err);
                return copy::pump(leg, activity, vec![0; BATCH]).await;
            }
            Err(err) => return Err(leg.src_failed(err)),
        };
        if first {
            first = false;
            notes.splice_selected();
        }
        if n == 0 {
            if at_end_of_stream(leg)? {
                leg.half_close();
                return Ok(());
            }
            continue;
        }
        activity.touch();
        let may_refuse = std::mem::replace(&mut first_drain, false);
        let simulate = may_refuse && simulate_drain_refusal;
        if let Some(refusal) = drain(leg, &pipe, n, activity, may_refuse, simulate).await? {
            // The kernel filled the pipe but will not empty it into this socket: deliver
            // what is in it by hand, then carry on in userspace.
            notes.splice_refused(&refusal.err);
            let mut buf = vec![0; BATCH];
            rescue(leg, &pipe, refusal.left, &mut buf, activity).await?;
            return copy::pump(leg, activity, buf).await;
        }
    }
}

/// The kernel refused to splice out of the pipe before any byte left it.
struct DrainRefused {
    err: io::Error,
    left: usize,
}

/// Empties `in_pipe` bytes from the pipe into `leg.dst`. With `may_refuse` (no splice out
/// of this pipe has succeeded yet), a refusal of the first splice is returned as `Some`
/// with every byte still in the pipe; `simulate` fakes that refusal (test hook).
async fn drain(
    leg: Leg<'_>,
    pipe: &Pipe,
    mut in_pipe: usize,
    activity: &Activity,
    mut may_refuse: bool,
    simulate: bool,
) -> Result<Option<DrainRefused>, RelayError> {
    while in_pipe > 0 {
        let res = leg
            .dst
            .async_io(Interest::WRITABLE, || {
                if simulate && may_refuse {
                    return Err(sys::simulated_refusal());
                }
                pipe.drain_into(leg.dst, in_pipe.min(BATCH))
            })
            .await;
        match res {
            // A pipe with bytes in it never yields 0; treat it as a broken destination
            // rather than spin.
            Ok(0) => return Err(leg.dst_failed(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                in_pipe -= n;
                leg.delivered(n, activity);
                may_refuse = false;
            }
            Err(err) if may_refuse && sys::is_splice_refusal(&err) => {
                return Ok(Some(DrainRefused { err, left: in_pipe }));
            }
            Err(err) => return Err(leg.dst_failed(err)),
        }
    }
    Ok(None)
}

/// Reads the `left` bytes still in the pipe and delivers them with plain writes.
async fn rescue(
    leg: Leg<'_>,
    pipe: &Pipe,
    mut left: usize,
    buf: &mut [u8],
    activity: &Activity,
) -> Result<(), RelayError> {
    while left > 0 {
        let want = left.min(buf.len());
        let got =
            pipe.read_into(&mut buf[..want]).map_err(|source| RelayError { side: Side::Local, source })?;
        if got == 0 {
            return Err(RelayError { side: Side::Local, source: io::ErrorKind::UnexpectedEof.into() });
        }
        copy::deliver(leg, &buf[..got], activity).await?;
        left -= got;
    }
    Ok(())
}

/// Confirms that a fill of 0 bytes is a real end of stream. `splice` can also return 0 when
/// only urgent (out-of-band) data is queued; a one-byte peek tells the two apart.
fn at_end_of_stream(leg: Leg<'_>) -> Result<bool, RelayError> {
    let mut probe = [MaybeUninit::<u8>::uninit(); 1];
    match leg.src.try_io(Interest::READABLE, || SockRef::from(leg.src).peek(&mut probe)) {
        Ok(0) => Ok(true),
        Ok(_) => Ok(false),
        // Readiness is now cleared; the next fill waits for the socket to become readable.
        Err(err) if super::is_would_block(&err) => Ok(false),
        Err(err) => Err(leg.src_failed(err)),
    }
}
