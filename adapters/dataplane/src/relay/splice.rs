//! The Linux fast path: socket → pipe → socket with `splice(2)`, driven by tokio readiness.
//!
//! Each leg alternates two phases. Fill: with the pipe empty, splice as much as the pipe
//! holds from the source socket. Drain: splice everything in the pipe into the destination,
//! each call moving what the socket's send buffer takes (up to the whole pipe), until the pipe
//! is empty again. Each call's delivered bytes are counted in steps of at most [`BATCH`]:
//! asking for the whole pipe saves about 10 % of the CPU a 64 KiB cap per call cost, while the
//! counters still advance at least once per 64 KiB. Because a fill
//! only ever starts on an empty pipe, `EAGAIN` from a fill can only mean "the socket has
//! nothing to read" and `EAGAIN` from a drain only "the socket's send buffer is full"; so
//! the readiness tokio clears on `WouldBlock` is always the right one, and no wake-up is lost.
//!
//! Invariant: the pipe belongs to this leg; it is recycled only after a clean end of stream
//! (when it is provably empty), and otherwise closed with the leg, so bytes stranded in it by
//! a failed connection are discarded with the pipe, never delivered and never counted.

use std::io;

use tokio::io::Interest;

use super::{Activity, BATCH, Leg, PIPE_REQUEST_BYTES, PathNotes, SpliceFault, copy};
use crate::relay::{RelayError, Side};
use crate::sys::{self, Pipe};

/// Runs one leg to its end on the fast path, falling back to the userspace copy when the
/// kernel refuses `splice` before any byte went through it.
pub(super) async fn pump(leg: Leg<'_>, activity: &Activity, notes: &PathNotes) -> Result<(), RelayError> {
    let simulate_size_refusal = notes.fault == Some(SpliceFault::PipeSizeRefused);
    let opened = match sys::take_pooled() {
        Some(pipe) if !simulate_size_refusal => Ok((pipe, None)),
        _ => Pipe::open(PIPE_REQUEST_BYTES, simulate_size_refusal),
    };
    let pipe = match opened {
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
            // A TCP splice returns 0 only at end of stream: with urgent data at the head of
            // the queue it returns EAGAIN instead, so no confirming peek is needed.
            leg.half_close();
            // Fills only start on an empty pipe, so this one holds nothing.
            sys::recycle(pipe);
            return Ok(());
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
                pipe.drain_into(leg.dst, in_pipe)
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
