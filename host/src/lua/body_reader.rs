//! The request body of a Lua HTTP service, read on the script's demand
//! (`applet:receive`, `applet:getline`).
//!
//! Nothing is read ahead: a frame is pulled from the connection only when
//! the buffer cannot answer the call, so the connection's flow control
//! keeps the client waiting while the script is busy, and the buffer holds
//! at most what the call asked for plus one frame. Every byte buffered is
//! charged to the process-wide Lua memory count ([`Charge`]), so
//! `tune.lua.maxmem` bounds a whole-body `receive()` while it is being
//! collected, not only once it has become a Lua string. The charge is
//! released when the bytes are handed to Lua (whose allocator then charges
//! the string) or dropped with the reader.

use crate::lua::memory::Charge;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;

/// The error of a read that would pass `tune.lua.maxmem`: Lua's own
/// message for a failed allocation, as HAProxy's `luaL_Buffer` would raise.
fn not_enough_memory() -> mlua::Error {
    mlua::Error::MemoryError("not enough memory".to_string())
}

/// A request body being read by a script.
pub struct BodyReader<B> {
    body: Option<B>,
    buf: BytesMut,
    /// A frame that arrived when its bytes could not be charged: kept (it is
    /// already in memory) for the next read, which charges it first.
    refused: Option<Bytes>,
    charge: Charge,
}

impl<B> BodyReader<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    pub fn new(body: Option<B>) -> BodyReader<B> {
        BodyReader {
            body,
            buf: BytesMut::new(),
            refused: None,
            charge: Charge::default(),
        }
    }

    /// Bytes buffered and charged.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Pulls the next data frame into the buffer; false at the end of the
    /// body (or when the client went away).
    async fn fill(&mut self) -> mlua::Result<bool> {
        let data = match self.refused.take() {
            Some(d) => d,
            None => loop {
                let Some(body) = self.body.as_mut() else {
                    return Ok(false);
                };
                match body.frame().await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(d) if !d.is_empty() => break d,
                        // Empty data, trailers: nothing for the script.
                        _ => continue,
                    },
                    Some(Err(_)) | None => {
                        self.body = None;
                        return Ok(false);
                    }
                }
            },
        };
        if !self.charge.try_grow(data.len()) {
            self.refused = Some(data);
            return Err(not_enough_memory());
        }
        self.buf.extend_from_slice(&data);
        Ok(true)
    }

    /// Hands the first `n` buffered bytes over to the caller, uncharged.
    fn take(&mut self, n: usize) -> BytesMut {
        let out = self.buf.split_to(n.min(self.buf.len()));
        self.charge.release(out.len());
        out
    }

    /// `receive(n)`: exactly `n` bytes, fewer only at the end of the body
    /// (HAProxy waits for the whole size, as a socket's `receive(n)` does).
    pub async fn receive(&mut self, n: usize) -> mlua::Result<BytesMut> {
        while self.buf.len() < n && self.fill().await? {}
        Ok(self.take(n))
    }

    /// `receive()`: the rest of the body.
    pub async fn receive_all(&mut self) -> mlua::Result<BytesMut> {
        // With a known length, one allocation of the right size: growing by
        // doubling would copy the body several times and leave the freed
        // smaller blocks in the allocator's hands, several times the body
        // in resident memory at its peak. Reserving touches no page; under
        // a cap, no more than the cap is reserved.
        let remaining = self.body.as_ref().and_then(|b| b.size_hint().exact());
        if let Some(remaining) = remaining {
            let limit = crate::lua::memory::limit();
            let mut want = usize::try_from(remaining).unwrap_or(usize::MAX);
            if limit != 0 {
                want = want.min(limit);
            }
            self.buf.reserve(want);
        }
        while self.fill().await? {}
        Ok(self.take(self.buf.len()))
    }

    /// `getline()`: up to and including the next `\n`; a line longer than
    /// `limit` (`tune.bufsize`) comes back in pieces of `limit` bytes, as in
    /// HAProxy; the rest (possibly empty) at the end of the body.
    pub async fn getline(&mut self, limit: usize) -> mlua::Result<BytesMut> {
        let limit = limit.max(1);
        let mut scanned = 0;
        loop {
            let window = self.buf.len().min(limit);
            if let Some(pos) = self.buf[scanned..window].iter().position(|&b| b == b'\n') {
                return Ok(self.take(scanned + pos + 1));
            }
            if self.buf.len() >= limit {
                return Ok(self.take(limit));
            }
            scanned = window;
            if !self.fill().await? {
                return Ok(self.take(self.buf.len()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Frame;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body made of the given frames, all ready at once.
    struct Frames(VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn reader(frames: &[&str]) -> BodyReader<Frames> {
        let frames = frames
            .iter()
            .map(|f| Bytes::copy_from_slice(f.as_bytes()))
            .collect();
        BodyReader::new(Some(Frames(frames)))
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn receive_n_waits_for_n_bytes_across_frames() {
        run(async {
            let mut r = reader(&["ab", "cd", "efg"]);
            assert_eq!(&r.receive(3).await.expect("read")[..], b"abc");
            assert_eq!(&r.receive(0).await.expect("read")[..], b"");
            assert_eq!(&r.receive(10).await.expect("read")[..], b"defg");
            assert_eq!(&r.receive(10).await.expect("read")[..], b"");
        });
    }

    #[test]
    fn buffer_holds_at_most_one_frame_beyond_the_request() {
        run(async {
            let mut r = reader(&["abcdef", "ghijkl"]);
            assert_eq!(&r.receive(2).await.expect("read")[..], b"ab");
            assert_eq!(r.buffered(), 4, "the second frame is not read ahead");
            assert_eq!(
                r.charge.bytes(),
                4,
                "exactly the buffered bytes are charged"
            );
            assert_eq!(&r.receive_all().await.expect("read")[..], b"cdefghijkl");
            assert_eq!(r.charge.bytes(), 0, "handed over: released");
        });
    }

    #[test]
    fn getline_splits_lines_and_long_lines() {
        run(async {
            let mut r = reader(&["one\ntw", "o\nthreefour", "five\nlast"]);
            assert_eq!(&r.getline(8).await.expect("read")[..], b"one\n");
            assert_eq!(&r.getline(8).await.expect("read")[..], b"two\n");
            assert_eq!(&r.getline(8).await.expect("read")[..], b"threefou");
            assert_eq!(&r.getline(8).await.expect("read")[..], b"rfive\n");
            assert_eq!(&r.getline(8).await.expect("read")[..], b"last");
            assert_eq!(&r.getline(8).await.expect("read")[..], b"");
        });
    }
}
