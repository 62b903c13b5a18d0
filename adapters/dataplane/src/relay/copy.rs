//! The userspace path: `read` into one buffer per direction, `write` it all out, repeat.
//!
//! Invariant: the buffer is allocated once per direction and connection, and every byte read
//! into it is delivered (or the leg fails) before the next read.

use std::io;

use super::{Activity, Leg, is_would_block};
use crate::relay::RelayError;

/// Runs one leg to its end with `buf` (at least one byte long) as the only buffer.
pub(super) async fn pump(leg: Leg<'_>, activity: &Activity, mut buf: Vec<u8>) -> Result<(), RelayError> {
    loop {
        let n = read_some(leg, &mut buf).await?;
        if n == 0 {
            leg.half_close();
            return Ok(());
        }
        activity.touch();
        deliver(leg, &buf[..n], activity).await?;
    }
}

/// Reads what `leg.src` has (up to `buf.len()`); 0 means end of stream.
async fn read_some(leg: Leg<'_>, buf: &mut [u8]) -> Result<usize, RelayError> {
    loop {
        // Try first: tokio answers WouldBlock without a syscall when it knows the socket is
        // not readable, and a busy socket skips the readiness wait.
        match leg.src.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(err) if is_would_block(&err) || err.kind() == io::ErrorKind::Interrupted => {
                leg.src.readable().await.map_err(|err| leg.src_failed(err))?;
            }
            Err(err) => return Err(leg.src_failed(err)),
        }
    }
}

/// Writes all of `data` to `leg.dst`, counting each write as it lands.
pub(super) async fn deliver(leg: Leg<'_>, mut data: &[u8], activity: &Activity) -> Result<(), RelayError> {
    while !data.is_empty() {
        match leg.dst.try_write(data) {
            Ok(0) => return Err(leg.dst_failed(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                leg.delivered(n, activity);
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
