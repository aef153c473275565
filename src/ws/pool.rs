//! The per-thread pool of read and write buffers: an idle leg holds none,
//! a leg with bytes to move borrows one and gives it back once drained.

use std::cell::RefCell;

use bytes::{Buf, BytesMut};

/// Size of a buffer taken from the pool. A read asks for at least this
/// much room (more when a frame header announces a bigger payload), so a
/// 16 KiB message takes one or two reads.
pub(super) const CHUNK: usize = 16 * 1024;

/// Buffers kept per thread for reuse, and the largest one worth keeping.
const POOL_MAX: usize = 64;
const POOL_BUF_MAX: usize = 256 * 1024;

thread_local! {
    /// Drained buffers, reused by the next leg on this thread that has
    /// bytes to move. A session's buffers are in use only while it relays.
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer from the pool, or a new one.
pub(super) fn take() -> BytesMut {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(CHUNK))
}

/// Give back a buffer (emptied here). It is kept only if no message still
/// shares its memory (`try_reclaim` fails then) and the pool has room.
pub(super) fn give(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() == 0 || buf.capacity() > POOL_BUF_MAX || !buf.try_reclaim(CHUNK) {
        return;
    }
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    });
}

/// Drop the first `n` bytes of `buf`. Dropping all of them (the usual case:
/// one message per read, one whole write) clears it instead, so the buffer
/// keeps its start and its whole capacity: `advance` would move the start,
/// and giving the buffer back to the pool would then take `try_reclaim`'s
/// slow path to move it back.
pub(super) fn discard(buf: &mut BytesMut, n: usize) {
    if n == buf.len() {
        buf.clear();
    } else {
        buf.advance(n);
    }
}
