//! The userspace path: `read` into a buffer, `write` it all out, repeat.
//!
//! A direction borrows a [`BATCH`]-byte buffer from a shared pool only once its source is
//! readable, keeps it while reads keep finding bytes, and gives it back as soon as a read finds
//! none; so an idle connection holds no buffer, and a bulk transfer borrows once per wake-up,
//! not once per read.
//!
//! Invariant: every byte read into a buffer is delivered (or the leg fails) before the next
//! read, so a buffer given back holds nothing that still has to go anywhere.

use std::io;

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
}

/// Runs one leg to its end on the userspace path.
pub(super) async fn pump(leg: Leg<'_>, activity: &Activity) -> Result<(), RelayError> {
    while step(leg, activity).await? == Flow::Drained {}
    Ok(())
}

/// Waits until `leg.src` is readable, then reads and delivers with a borrowed buffer until a
/// read finds nothing (the buffer goes back) or end of stream.
pub(super) async fn step(leg: Leg<'_>, activity: &Activity) -> Result<Flow, RelayError> {
    leg.src.readable().await.map_err(|err| leg.src_failed(err))?;
    let mut buf = lend_buffer();
    loop {
        // tokio answers WouldBlock without a system call once it knows the socket drained.
        match leg.src.try_read(&mut buf) {
            Ok(0) => {
                leg.half_close();
                buf.give_back();
                return Ok(Flow::Ended);
            }
            Ok(n) => {
                activity.touch();
                deliver(leg, &buf[..n], activity).await?;
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
