//! Read buffers lent to connections while they have bytes to parse. An idle
//! keep-alive connection holds none: it waits for its socket to become
//! readable and then borrows one, so ten thousand idle connections cost
//! their sockets and tasks, not ten thousand buffers (docs/benchmarks.md).

use bytes::BytesMut;
use std::cell::RefCell;

/// Bytes made room for before each read; a request head shorter than this
/// arrives in one recv(2).
pub const READ_CHUNK: usize = 16 * 1024;
/// Spare buffers kept per worker thread.
const POOL_MAX: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer with room for at least one read.
pub fn take() -> BytesMut {
    POOL.try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
}

/// Returns an empty buffer to the pool. One whose allocation is shared
/// with body frames still in use (its spare room shrank) is dropped.
pub fn give_back(mut buf: BytesMut) {
    buf.clear();
    // Parsing advanced the buffer's start; when no body frame shares the
    // allocation, this takes the whole of it back without allocating.
    buf.reserve(READ_CHUNK);
    if buf.capacity() < READ_CHUNK {
        return;
    }
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    });
}

/// Makes room for a read in `buf`.
pub fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}
