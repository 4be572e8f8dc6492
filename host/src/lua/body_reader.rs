//! The request body of a Lua HTTP service, read on the script's demand
//! (`applet:receive`, `applet:getline`).
//!
//! Nothing is read ahead: a frame is pulled from the connection only when
//! the buffered frames cannot answer the call, so the connection's flow
//! control holds the client back while the script is busy, and the reader
//! holds at most what the call asked for plus one frame. Frames are kept as
//! they came (no copy, no buffer growing by doubling, whose copies and freed
//! blocks cost several times the body in resident memory); a read copies
//! its bytes into one block of the exact size, or hands out a slice of a
//! frame that holds them all.
//!
//! Every byte held is charged to the process-wide Lua memory count
//! ([`Charge`]), so `tune.lua.maxmem` bounds a whole-body `receive()` while
//! the body is being collected, not only once it has become a Lua string.
//! The data a read returns carries its charge until it is handed to Lua
//! ([`Taken::into_data`]), whose allocator charges the string made of it:
//! the bytes are counted once, by the reader or by Lua, so a body read on
//! in pieces after a refused whole-body read still fits under the cap.
//!
//! The strings a script read and dropped still count until Lua's collector
//! frees them. So when a frame cannot be charged, the reader asks for a
//! full collection (the `collect` argument of each read) and tries once
//! more, as Lua's allocator does before it fails an allocation: a script
//! that keeps nothing is never refused because of its own garbage.

use crate::lua::memory::{not_enough_memory, Charge};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use std::collections::VecDeque;

/// Bytes read from the body, still charged to the memory count.
pub struct Taken {
    pub data: Bytes,
    _charge: Charge,
}

impl Taken {
    /// The bytes, their charge released: for the copy Lua makes of them,
    /// which Lua's allocator charges.
    pub fn into_data(self) -> Bytes {
        self.data
    }
}

impl std::ops::Deref for Taken {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.data
    }
}

/// A request body being read by a script.
pub struct BodyReader<B> {
    body: Option<B>,
    frames: VecDeque<Bytes>,
    /// Bytes in `frames`, all charged.
    buffered: usize,
    /// A frame that arrived when its bytes could not be charged: kept (it is
    /// in memory already) for the next read, which charges it first.
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
            frames: VecDeque::new(),
            buffered: 0,
            refused: None,
            charge: Charge::default(),
        }
    }

    /// Pulls the next data frame in; false at the end of the body (or when
    /// the client went away). `collect` frees the Lua garbage when the frame
    /// cannot be charged.
    async fn fill(&mut self, collect: &dyn Fn()) -> mlua::Result<bool> {
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
            collect();
            if !self.charge.try_grow(data.len()) {
                self.refused = Some(data);
                return Err(not_enough_memory());
            }
        }
        self.buffered += data.len();
        self.frames.push_back(data);
        Ok(true)
    }

    /// Hands the first `n` buffered bytes (at most all) over, with their
    /// charge.
    fn take(&mut self, n: usize) -> Taken {
        let n = n.min(self.buffered);
        self.buffered -= n;
        let charge = self.charge.split(n);
        let data = match self.frames.front_mut() {
            Some(front) if front.len() >= n => {
                let data = front.split_to(n);
                if front.is_empty() {
                    self.frames.pop_front();
                }
                data
            }
            _ => {
                let mut out = BytesMut::with_capacity(n);
                while out.len() < n {
                    let Some(front) = self.frames.front_mut() else {
                        break;
                    };
                    let want = (n - out.len()).min(front.len());
                    out.extend_from_slice(&front.split_to(want));
                    if front.is_empty() {
                        self.frames.pop_front();
                    }
                }
                out.freeze()
            }
        };
        Taken {
            data,
            _charge: charge,
        }
    }

    /// `receive(n)`: exactly `n` bytes, fewer only at the end of the body
    /// (HAProxy waits for the whole size).
    pub async fn receive(&mut self, n: usize, collect: &dyn Fn()) -> mlua::Result<Taken> {
        while self.buffered < n && self.fill(collect).await? {}
        Ok(self.take(n))
    }

    /// `receive()`: the rest of the body.
    pub async fn receive_all(&mut self, collect: &dyn Fn()) -> mlua::Result<Taken> {
        while self.fill(collect).await? {}
        Ok(self.take(self.buffered))
    }

    /// `getline()`: up to and including the next `\n`; a line longer than
    /// `limit` (`tune.bufsize`) comes back in pieces of `limit` bytes, as in
    /// HAProxy; the rest (possibly empty) at the end of the body.
    pub async fn getline(&mut self, limit: usize, collect: &dyn Fn()) -> mlua::Result<Taken> {
        let limit = limit.max(1);
        loop {
            if let Some(end) = self.line_end(limit) {
                return Ok(self.take(end));
            }
            if self.buffered >= limit {
                return Ok(self.take(limit));
            }
            if !self.fill(collect).await? {
                return Ok(self.take(self.buffered));
            }
        }
    }

    /// The length of the first line (with its `\n`) if it ends within the
    /// first `limit` buffered bytes.
    fn line_end(&self, limit: usize) -> Option<usize> {
        let mut offset = 0;
        for frame in &self.frames {
            if offset >= limit {
                return None;
            }
            let window = &frame[..frame.len().min(limit - offset)];
            if let Some(pos) = window.iter().position(|&b| b == b'\n') {
                return Some(offset + pos + 1);
            }
            offset += frame.len();
        }
        None
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
            assert_eq!(&r.receive(3, &|| ()).await.expect("read")[..], b"abc");
            assert_eq!(&r.receive(0, &|| ()).await.expect("read")[..], b"");
            assert_eq!(&r.receive(10, &|| ()).await.expect("read")[..], b"defg");
            assert_eq!(&r.receive(10, &|| ()).await.expect("read")[..], b"");
        });
    }

    #[test]
    fn buffer_holds_at_most_one_frame_beyond_the_request() {
        run(async {
            let mut r = reader(&["abcdef", "ghijkl"]);
            assert_eq!(&r.receive(2, &|| ()).await.expect("read")[..], b"ab");
            assert_eq!(r.buffered, 4, "the second frame is not read ahead");
            assert_eq!(
                r.charge.bytes(),
                4,
                "exactly the buffered bytes are charged"
            );
            assert_eq!(
                &r.receive_all(&|| ()).await.expect("read")[..],
                b"cdefghijkl"
            );
            assert_eq!(r.charge.bytes(), 0, "handed over: released");
        });
    }

    #[test]
    fn getline_splits_lines_and_long_lines() {
        run(async {
            let mut r = reader(&["one\ntw", "o\nthreefour", "five\nlast"]);
            assert_eq!(&r.getline(8, &|| ()).await.expect("read")[..], b"one\n");
            assert_eq!(&r.getline(8, &|| ()).await.expect("read")[..], b"two\n");
            assert_eq!(&r.getline(8, &|| ()).await.expect("read")[..], b"threefou");
            assert_eq!(&r.getline(8, &|| ()).await.expect("read")[..], b"rfive\n");
            assert_eq!(&r.getline(8, &|| ()).await.expect("read")[..], b"last");
            assert_eq!(&r.getline(8, &|| ()).await.expect("read")[..], b"");
        });
    }
}
