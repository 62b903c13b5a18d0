//! Bounded pools of what a direction needs only while it has bytes in flight: pipes on the
//! fast path, buffers on the userspace path. An idle connection holds neither, so it costs
//! its two sockets and its task, whatever it moved before.
//!
//! Invariants: at most `limits.max` items exist at once, lent or idle (beyond that
//! [`Pool::lend`] answers `None` and the caller moves the chunk another way); the pool keeps
//! at most `limits.keep` idle items, and never more than the larger of `limits.keep_quiet`
//! and the number lent out at that moment, so once no direction has bytes in flight it is
//! back to `keep_quiet` items at most and a burst's pipes or buffers are released as soon as
//! the burst ends. An item is reused only when its lease is given back
//! ([`Lease::give_back`]); a lease dropped otherwise closes its item.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};

/// How many items a pool lets exist and keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most items in existence, lent or idle.
    pub(crate) max: usize,
    /// Most idle items kept.
    pub(crate) keep: usize,
    /// Idle items kept once nothing is lent.
    pub(crate) keep_quiet: usize,
}

/// A bounded pool; see the module docs.
#[derive(Debug)]
pub(crate) struct Pool<T: 'static> {
    inner: Mutex<Inner<T>>,
    limits: Limits,
}

#[derive(Debug)]
struct Inner<T> {
    idle: Vec<T>,
    lent: usize,
}

impl<T: 'static> Pool<T> {
    /// An empty pool.
    pub(crate) const fn new(limits: Limits) -> Self {
        Pool { inner: Mutex::new(Inner { idle: Vec::new(), lent: 0 }), limits }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lends an idle item, or one made by `make` (outside the lock) while fewer than
    /// `limits.max` exist. `Ok(None)`: the pool is at its bound. `make`'s error is returned
    /// as it is, and nothing stays reserved for it.
    pub(crate) fn lend<E>(&'static self, make: impl FnOnce() -> Result<T, E>) -> Result<Option<Lease<T>>, E> {
        {
            let mut inner = self.lock();
            if let Some(item) = inner.idle.pop() {
                inner.lent += 1;
                return Ok(Some(Lease { item, slot: Slot { pool: self } }));
            }
            if inner.lent + inner.idle.len() >= self.limits.max {
                return Ok(None);
            }
            // Reserved now, so that racing lenders cannot overshoot the bound.
            inner.lent += 1;
        }
        self.made(make)
    }

    /// Lends a newly made item even when idle ones wait (a test hook needs a fresh pipe),
    /// within the same bound as [`Pool::lend`].
    pub(crate) fn lend_new<E>(
        &'static self,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<Option<Lease<T>>, E> {
        {
            let mut inner = self.lock();
            if inner.lent + inner.idle.len() >= self.limits.max {
                return Ok(None);
            }
            inner.lent += 1;
        }
        self.made(make)
    }

    /// Lends an idle item or a new one from `make`, whatever the bound: for items whose
    /// number the callers already bound (one buffer per direction at most).
    pub(crate) fn lend_always(&'static self, make: impl FnOnce() -> T) -> Lease<T> {
        let idle = {
            let mut inner = self.lock();
            inner.lent += 1;
            inner.idle.pop()
        };
        let item = idle.unwrap_or_else(make);
        Lease { item, slot: Slot { pool: self } }
    }

    fn made<E>(&'static self, make: impl FnOnce() -> Result<T, E>) -> Result<Option<Lease<T>>, E> {
        match make() {
            Ok(item) => Ok(Some(Lease { item, slot: Slot { pool: self } })),
            Err(err) => {
                let mut inner = self.lock();
                inner.lent = inner.lent.saturating_sub(1);
                Err(err)
            }
        }
    }

    /// Idle items now.
    pub(crate) fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    /// Items lent out now.
    pub(crate) fn lent(&self) -> usize {
        self.lock().lent
    }

    /// Ends a lease; keeps `item` for reuse when the limits allow, and lets go of idle items
    /// beyond them. What is let go is returned, to be dropped after the lock is released
    /// (closing a pipe is a system call).
    fn end(&self, item: Option<T>) -> (Option<T>, Vec<T>) {
        let mut inner = self.lock();
        inner.lent = inner.lent.saturating_sub(1);
        let room = self.limits.keep.min(self.limits.keep_quiet.max(inner.lent));
        let surplus = if inner.idle.len() > room { inner.idle.split_off(room) } else { Vec::new() };
        match item {
            Some(item) if inner.idle.len() < room => {
                inner.idle.push(item);
                (None, surplus)
            }
            other => (other, surplus),
        }
    }
}

/// One item lent by a [`Pool`]; dropping the lease closes the item, [`Lease::give_back`]
/// returns it for reuse.
#[derive(Debug)]
pub(crate) struct Lease<T: 'static> {
    item: T,
    slot: Slot<T>,
}

impl<T: 'static> Lease<T> {
    /// Returns the item to the pool. The caller vouches that it may be reused as it is (an
    /// empty pipe; any buffer).
    pub(crate) fn give_back(self) {
        let Lease { item, slot } = self;
        slot.end_with(item);
    }
}

impl<T: 'static> Deref for Lease<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.item
    }
}

impl<T: 'static> DerefMut for Lease<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.item
    }
}

/// A lease's place in its pool's count: released when dropped, so a lease lost on an error
/// path (its item closed with it) never leaks a slot.
#[derive(Debug)]
struct Slot<T: 'static> {
    pool: &'static Pool<T>,
}

impl<T: 'static> Slot<T> {
    /// Releases the slot and offers `item` to the pool.
    fn end_with(self, item: T) {
        let pool = self.pool;
        // The release happens here, not in `drop`.
        std::mem::forget(self);
        drop(pool.end(Some(item)));
    }
}

impl<T: 'static> Drop for Slot<T> {
    fn drop(&mut self) {
        drop(self.pool.end(None));
    }
}

#[cfg(test)]
mod tests;
