//! The userspace path: `read` into a buffer, `write` it all out, repeat.
//!
//! A direction borrows a [`BATCH`]-byte buffer from a shared pool only once its source is
//! readable, keeps it while reads keep finding bytes, and gives it back as soon as a read finds
//! none; so an idle connection holds no buffer, and a bulk transfer borrows once per wake-up,
//! not once per read.
//!
//! A read that returns fewer bytes than the buffer holds has, as a rule, emptied the socket's
//! receive queue, so the leg goes back to waiting for readiness at once instead of paying one
//! more `read` to meet `EAGAIN`: on a ping-pong exchange that is one system call in three.
//! Correctness does not rest on that rule: readiness is cleared as of *before* the read (see
//! [`read_once`]), and every segment the kernel queues after that moment (including segments
//! it held back while the read had the socket locked, queued as the read returns) raises a
//! new edge, so no byte waits for a wake-up that never comes. The one exception is a read
//! that stops at TCP's urgent mark with bytes behind it: those wait for the next arrival or
//! end of stream (the splice path meets `EAGAIN` at the mark the same way).
//!
//! Invariant: every byte read into a buffer is delivered (or the leg fails) before the next
//! read, so a buffer given back holds nothing that still has to go anywhere.

use std::io::{self, Read as _};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::pool::{Lease, Limits, Pool};
use super::{Activity, BATCH, Leg, is_would_block};
use crate::relay::RelayError;

/// Buffers of the userspace path. Their number is bounded by the directions moving bytes at
/// once (one each); idle ones are kept for reuse up to 2 MiB, and 128 KiB once no direction
/// has bytes in flight.
pub(super) static BUFFERS: Pool<Box<[u8]>> = Pool::new(Limits { max: usize::MAX, keep: 32, keep_quiet: 2 });

/// A buffer of [`BATCH`] bytes for one direction's bytes in flight.
pub(super) fn lend_buffer() -> Lease<Box<[u8]>> {
    BUFFERS.lend_always(|| vec![0; BATCH].into_boxed_slice())
}

/// What one wake-up of a leg ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Every byte the source had was delivered; wait for more.
    Drained,
    /// The source reached end of stream (already forwarded as a half-close).
    Ended,
    /// A read of at least the caller's bulk size was delivered: the source is moving a bulk
    /// transfer and may hold more.
    Bulk,
}

/// Runs one leg to its end on the userspace path.
pub(super) async fn pump(leg: Leg<'_>, activity: &Activity) -> Result<(), RelayError> {
    while step(leg, activity, None).await? != Flow::Ended {}
    Ok(())
}

/// Waits until `leg.src` is readable, then reads and delivers with a borrowed buffer until
/// the socket is drained (the buffer goes back) or at end of stream. With `bulk_at`, a read
/// of at least that many bytes ends the step as [`Flow::Bulk`] once delivered.
pub(super) async fn step(
    leg: Leg<'_>,
    activity: &Activity,
    bulk_at: Option<usize>,
) -> Result<Flow, RelayError> {
    leg.src.readable().await.map_err(|err| leg.src_failed(err))?;
    let mut buf = lend_buffer();
    loop {
        // tokio answers WouldBlock without a system call once it knows the socket drained.
        match read_once(leg.src, &mut buf) {
            Ok(Got::Ended) => {
                leg.half_close();
                buf.give_back();
                return Ok(Flow::Ended);
            }
            Ok(Got::Some { n, drained }) => {
                activity.touch();
                deliver(leg, &buf[..n], activity).await?;
                if bulk_at.is_some_and(|at| n >= at) {
                    buf.give_back();
                    return Ok(Flow::Bulk);
                }
                if drained {
                    buf.give_back();
                    return Ok(Flow::Drained);
                }
            }
            Err(err) if is_would_block(&err) => {
                buf.give_back();
                return Ok(Flow::Drained);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(leg.src_failed(err)),
        }
    }
}

/// What one read found.
enum Got {
    /// `n` bytes; `drained` when they were fewer than asked for, so the socket's receive
    /// queue is empty and tokio already knows it.
    Some { n: usize, drained: bool },
    /// End of stream.
    Ended,
}

/// Reads once from `src`. A short read is reported to tokio as the `WouldBlock` it implies,
/// inside the same `try_io`, so tokio clears the readiness it saw *before* the read: a
/// wake-up for bytes that arrived after the read has a newer tick and survives, where
/// clearing after the fact could erase it and stall the leg.
fn read_once(src: &TcpStream, buf: &mut [u8]) -> io::Result<Got> {
    let mut short = None;
    let asked = buf.len();
    let res = src.try_io(Interest::READABLE, || {
        let n = (&*SockRef::from(src)).read(buf)?;
        if n > 0 && n < asked {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (short, res) {
        (Some(n), _) => Ok(Got::Some { n, drained: true }),
        (None, Ok(0)) => Ok(Got::Ended),
        (None, Ok(n)) => Ok(Got::Some { n, drained: false }),
        (None, Err(err)) => Err(err),
    }
}

/// Writes all of `data` to `leg.dst`, counting each write as it lands. With a bandwidth cap,
/// each part is granted by the caps before it is written: the leg waits for a refill (which
/// counts as activity, so a throttled connection is never idle), and is never refused.
pub(super) async fn deliver(leg: Leg<'_>, data: &[u8], activity: &Activity) -> Result<(), RelayError> {
    let Some(throttle) = leg.throttle else {
        return write_all(leg, data, activity).await;
    };
    let mut rest = data;
    while !rest.is_empty() {
        let granted = throttle.grant(leg.dir.capped(), rest.len()).await;
        activity.touch();
        let (now, later) = rest.split_at(granted.clamp(1, rest.len()));
        write_all(leg, now, activity).await?;
        rest = later;
    }
    Ok(())
}

/// Writes all of `data` to `leg.dst`, counting each write as it lands.
async fn write_all(leg: Leg<'_>, mut data: &[u8], activity: &Activity) -> Result<(), RelayError> {
    while !data.is_empty() {
        match leg.dst.try_write(data) {
            Ok(0) => return Err(leg.dst_failed(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                leg.delivered(n, activity)?;
                data = &data[n..];
            }
            Err(err) if is_would_block(&err) || err.kind() == io::ErrorKind::Interrupted => {
                leg.dst.writable().await.map_err(|err| leg.dst_failed(err))?;
            }
            Err(err) => return Err(leg.dst_failed(err)),
        }
    }
    Ok(())
}
