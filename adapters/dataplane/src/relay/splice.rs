//! The Linux fast path: socket → pipe → socket with `splice(2)`, driven by tokio readiness.
//!
//! A leg starts on the userspace path (`copy::step`, which notices a drained socket without
//! an extra call) and splices only once one read brought at least [`SPLICE_AFTER`] bytes: a
//! request, a response header or a keystroke costs the same two calls either way, but a
//! splice leg pays a third (the fill that meets `EAGAIN`, which tokio needs before it waits
//! again) and the pipe's bookkeeping (pinned sockperf p50 2.47× → 2.33× direct, see
//! `docs/PERFORMANCE.md`). From its first bulk read on, a leg splices for the rest of its life.
//!
//! A splicing leg borrows a pipe from a shared, bounded pool only once its source is readable, and
//! then alternates two phases. Fill: with the pipe empty, splice as much as the pipe holds
//! from the source socket. Drain: splice everything in the pipe into the destination, each
//! call moving what the socket's send buffer takes (up to the whole pipe), until the pipe is
//! empty again. When a fill finds nothing to read, the (empty) pipe goes back to the pool and
//! the leg waits for readiness holding nothing: an idle connection costs its two sockets,
//! a busy one keeps its pipe for as long as bytes keep coming. Each call's delivered bytes
//! are counted in steps of at most [`BATCH`]: asking for the whole pipe saves about 10 % of
//! the CPU a 64 KiB cap per call cost, while the counters still advance at least once per
//! 64 KiB. Because a fill only ever starts on an empty pipe, `EAGAIN` from a fill can only
//! mean "the socket has nothing to read" and `EAGAIN` from a drain only "the socket's send
//! buffer is full"; so the readiness tokio clears on `WouldBlock` is always the right one,
//! and no wake-up is lost. With no pipe to be had (the pool at its bound, or no descriptor
//! left) the bytes of that wake-up go through a userspace buffer instead.
//!
//! Invariant: a pipe belongs to one leg while lent; it goes back to the pool only when it is
//! provably empty (a fill found nothing to read, or end of stream), and otherwise is closed
//! with the leg, so bytes stranded in it by a failed connection are discarded with the
//! pipe, never delivered and never counted.

use std::io;

use tokio::io::Interest;

use super::copy::{self, Flow};
use super::pool::{Lease, Limits, Pool};
use super::{Activity, Leg, PIPE_REQUEST_BYTES, PathNotes, SpliceFault, is_would_block};
use crate::relay::{RelayError, Side};
use crate::sys::{self, Pipe};

/// Most pipes open at once, lent or idle (two descriptors each); see
/// `docs/operations.md` for the descriptor budget this is part of.
pub const PIPES_MAX: usize = 256;

/// Idle pipes kept for reuse while other legs have bytes in flight.
pub const PIPES_KEPT: usize = 64;

/// Idle pipes kept once no leg has bytes in flight.
pub const PIPES_KEPT_QUIET: usize = 8;

/// A read of at least this many bytes shows a bulk transfer and moves its leg to `splice`.
/// One loopback TCP segment can carry 64 KiB, so a bulk sender's first read is far above
/// it, and messages of request/response protocols mostly below.
pub const SPLICE_AFTER: usize = 16 * 1024;

/// Pipes of the fast path, shared by every connection of the process.
pub(super) static PIPES: Pool<Pipe> =
    Pool::new(Limits { max: PIPES_MAX, keep: PIPES_KEPT, keep_quiet: PIPES_KEPT_QUIET });

/// Runs one leg to its end on the fast path, falling back to the userspace copy when the
/// kernel refuses `splice` before any byte went through it.
pub(super) async fn pump(leg: Leg<'_>, activity: &Activity, notes: &PathNotes) -> Result<(), RelayError> {
    let simulate_size_refusal = notes.fault == Some(SpliceFault::PipeSizeRefused);
    let simulate_refusal = notes.fault == Some(SpliceFault::Unsupported);
    let simulate_drain_refusal = notes.fault == Some(SpliceFault::UnsupportedOnDrain);
    let mut first = true;
    // On the first drain no byte has left the pipe yet, so a refusal there means a kernel
    // that cannot splice into sockets rather than a failure of this connection.
    let mut first_drain = true;
    // Set by the first read that shows a bulk transfer; until then the leg copies.
    let mut bulk = false;
    loop {
        if bulk {
            leg.src.readable().await.map_err(|err| leg.src_failed(err))?;
        } else {
            match copy::step(leg, activity, Some(SPLICE_AFTER)).await? {
                Flow::Drained => continue,
                Flow::Ended => return Ok(()),
                // The source may hold more: splice it now, without waiting for readiness.
                Flow::Bulk => bulk = true,
            }
        }
        let Some(pipe) = lend_pipe(notes, simulate_size_refusal) else {
            // No pipe to be had: the bytes of this wake-up go through a buffer.
            match copy::step(leg, activity, None).await? {
                Flow::Drained | Flow::Bulk => continue,
                Flow::Ended => return Ok(()),
            }
        };
        loop {
            let filled = leg.src.try_io(Interest::READABLE, || {
                if first && simulate_refusal {
                    return Err(sys::simulated_refusal());
                }
                pipe.fill_from(leg.src, pipe.capacity())
            });
            let n = match filled {
                Ok(n) => n,
                Err(err) if is_would_block(&err) => {
                    // Fills only start on an empty pipe: this one holds nothing.
                    pipe.give_back();
                    break;
                }
                Err(err) if first && sys::is_splice_refusal(&err) => {
                    notes.splice_refused(&err);
                    pipe.give_back();
                    return copy::pump(leg, activity).await;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(leg.src_failed(err)),
            };
            if first {
                first = false;
                notes.splice_selected();
            }
            if n == 0 {
                // A TCP splice returns 0 only at end of stream: with urgent data at the head
                // of the queue it returns EAGAIN instead, so no confirming peek is needed.
                leg.half_close();
                pipe.give_back();
                return Ok(());
            }
            activity.touch();
            let may_refuse = std::mem::replace(&mut first_drain, false);
            let simulate = may_refuse && simulate_drain_refusal;
            if let Some(refusal) = drain(leg, &pipe, n, activity, may_refuse, simulate).await? {
                // The kernel filled the pipe but will not empty it into this socket: deliver
                // what is in it by hand, then carry on in userspace.
                notes.splice_refused(&refusal.err);
                let mut buf = copy::lend_buffer();
                rescue(leg, &pipe, refusal.left, &mut buf, activity).await?;
                buf.give_back();
                return copy::pump(leg, activity).await;
            }
        }
    }
}

/// A pipe for one wake-up of a leg, or `None` when the pool is at its bound or the kernel
/// gave no pipe (out of descriptors or pipe quota, noted as an event).
fn lend_pipe(notes: &PathNotes, simulate_size_refusal: bool) -> Option<Lease<Pipe>> {
    let open = || {
        let (pipe, refusal) = Pipe::open(PIPE_REQUEST_BYTES, simulate_size_refusal)?;
        if let Some(refusal) = refusal {
            notes.pipe_size_refused(refusal);
        }
        Ok::<_, io::Error>(pipe)
    };
    // The test hook needs a pipe of its own making, not one from the pool.
    let lent = if simulate_size_refusal { PIPES.lend_new(open) } else { PIPES.lend(open) };
    lent.unwrap_or_else(|err| {
        notes.pipe_unavailable(&err);
        None
    })
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
                leg.delivered(n, activity)?;
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
