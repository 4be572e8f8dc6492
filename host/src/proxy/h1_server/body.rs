//! The request body as the rest of the proxy sees it: an `http_body::Body`
//! that is `Send`, because a body travels to the worker that owns a shared
//! Lua state. The connection task reads the socket and decodes the body
//! ([`BodyFeed`], polled next to the request's work); the reader, wherever
//! it runs, takes the decoded frames from a small shared state.
//!
//! A body that arrived whole with its head (the common small POST) needs no
//! shared state: it is handed over as one buffer.

use super::decode::{Decoder, Malformed, Step};
use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Decoded bytes the connection reads ahead of the body's reader; beyond
/// it the socket is left alone until the reader catches up.
const READ_AHEAD: usize = 64 * 1024;

/// Why reading a request body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The client closed the connection before the body's end.
    Cut,
    /// The chunked coding is invalid.
    Malformed(&'static str),
    /// The socket failed.
    Io,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Cut => f.write_str("request body cut by the client's close"),
            BodyError::Malformed(m) => write!(f, "malformed request body: {m}"),
            BodyError::Io => f.write_str("read error on the client connection"),
        }
    }
}

impl std::error::Error for BodyError {}

/// A request body (the server-side equivalent of hyper's `Incoming`).
pub struct RequestBody {
    kind: Kind,
    /// Bytes already taken from `kind` by [`RequestBody::buffer`], handed
    /// to the reader first.
    front: Option<Bytes>,
}

enum Kind {
    /// The whole body (or none) was in the read buffer with the head.
    Full(Option<Bytes>),
    /// Streamed from the connection; `total` is its length when known.
    Stream {
        shared: Arc<Mutex<Shared>>,
        total: Option<u64>,
        delivered: u64,
        ended: bool,
    },
}

/// What the connection and the body's reader share.
#[derive(Default)]
struct Shared {
    frames: VecDeque<Bytes>,
    buffered: usize,
    /// The body ended (Ok) or failed (Err); frames may still be queued.
    end: Option<Result<(), BodyError>>,
    /// The reader found nothing to read: the connection reads on (and
    /// sends `100 Continue` first if the client expects it).
    wanted: bool,
    /// The reader saw the failure (a body cut by a close then means the
    /// request is abandoned, not answered).
    reader_saw_error: bool,
    reader_gone: bool,
    reader: Option<Waker>,
    conn: Option<Waker>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Nothing panics while holding the lock; a poisoned one still holds
    // consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RequestBody {
    pub fn empty() -> RequestBody {
        RequestBody {
            kind: Kind::Full(None),
            front: None,
        }
    }

    pub fn full(b: Bytes) -> RequestBody {
        RequestBody {
            kind: Kind::Full((!b.is_empty()).then_some(b)),
            front: None,
        }
    }

    /// A body the connection will stream in through the returned feed,
    /// starting with `first` (decoded bytes already read with the head).
    pub fn streamed(
        first: Option<Bytes>,
        decoder: Decoder,
        total: Option<u64>,
        expect_continue: bool,
    ) -> (RequestBody, BodyFeed) {
        let mut shared = Shared::default();
        if let Some(b) = first {
            shared.buffered = b.len();
            shared.frames.push_back(b);
        }
        let shared = Arc::new(Mutex::new(shared));
        let body = RequestBody {
            kind: Kind::Stream {
                shared: shared.clone(),
                total,
                delivered: 0,
                ended: false,
            },
            front: None,
        };
        let feed = BodyFeed {
            shared,
            decoder,
            continue_pending: expect_continue,
            continue_sent: 0,
            end: None,
            discarded: 0,
        };
        (body, feed)
    }

    /// The body when it arrived whole with the request head: what HAProxy's
    /// `req.body` finds in its buffer without `option http-buffer-request`.
    pub fn arrived(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Full(b) if self.front.is_none() => b.clone(),
            _ => None,
        }
    }

    /// Reads the body until its end or until `limit` bytes are in
    /// (`option http-buffer-request`) and returns them; they remain the
    /// first bytes the body's reader gets.
    pub async fn buffer(&mut self, limit: usize) -> Result<Bytes, BodyError> {
        use http_body_util::BodyExt;
        let mut acc = BytesMut::new();
        while acc.len() < limit {
            match self.frame().await {
                None => break,
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        acc.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => return Err(e),
            }
        }
        let b = acc.freeze();
        if !b.is_empty() {
            self.front = Some(b.clone());
        }
        Ok(b)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(b) = this.front.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match &mut this.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream {
                shared,
                delivered,
                ended,
                ..
            } => {
                if *ended {
                    return Poll::Ready(None);
                }
                let mut s = lock(shared);
                if let Some(b) = s.frames.pop_front() {
                    s.buffered -= b.len();
                    *delivered += b.len() as u64;
                    // Room again: let the connection read on.
                    if let Some(w) = s.conn.take() {
                        w.wake();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                match s.end {
                    Some(Ok(())) => {
                        *ended = true;
                        Poll::Ready(None)
                    }
                    Some(Err(e)) => {
                        *ended = true;
                        s.reader_saw_error = true;
                        Poll::Ready(Some(Err(e)))
                    }
                    None => {
                        s.wanted = true;
                        s.reader = Some(cx.waker().clone());
                        if let Some(w) = s.conn.take() {
                            w.wake();
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.front.is_some() {
            return false;
        }
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Stream { ended, .. } => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        let front = self.front.as_ref().map_or(0, |b| b.len() as u64);
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(front + b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(front),
            Kind::Stream {
                total: Some(t),
                delivered,
                ..
            } => SizeHint::with_exact(front + t.saturating_sub(*delivered)),
            Kind::Stream { .. } => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Kind::Stream { shared, .. } = &self.kind {
            let mut s = lock(shared);
            s.reader_gone = true;
            s.frames.clear();
            s.buffered = 0;
            if let Some(w) = s.conn.take() {
                w.wake();
            }
        }
    }
}

/// The connection's side of a streamed body: decodes what the socket
/// delivers into the shared state.
pub struct BodyFeed {
    shared: Arc<Mutex<Shared>>,
    decoder: Decoder,
    /// `Expect: 100-continue`: the interim response is due when the reader
    /// first asks for data.
    continue_pending: bool,
    continue_sent: usize,
    end: Option<Result<(), BodyError>>,
    /// Body bytes read and dropped since the reader went away.
    discarded: usize,
}

/// What the feed needs from the connection at one poll.
pub enum FeedNeed {
    /// Write these bytes (the `100 Continue`), then call `wrote`.
    Write(&'static [u8]),
    /// Read from the socket into the buffer, then call `decode`.
    Read,
    /// Nothing now; the reader's progress wakes the task.
    Wait,
    /// The body ended (Ok) or failed.
    Ended(Result<(), BodyError>),
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl BodyFeed {
    /// What to do next; registers the task's waker when it must wait.
    pub fn need(&mut self, cx: &mut Context<'_>) -> FeedNeed {
        if let Some(end) = self.end {
            return FeedNeed::Ended(end);
        }
        let mut s = lock(&self.shared);
        if self.continue_pending {
            if !s.wanted {
                s.conn = Some(cx.waker().clone());
                return FeedNeed::Wait;
            }
            return FeedNeed::Write(&CONTINUE[self.continue_sent..]);
        }
        if s.buffered >= READ_AHEAD && !s.reader_gone {
            s.conn = Some(cx.waker().clone());
            return FeedNeed::Wait;
        }
        // Nobody reads the body any more: a short rest is drained (the
        // connection can then be kept alive), a long one is left unread and
        // the connection closes after the response, so a client still
        // uploading meets a full socket and reads its answer instead of
        // having its upload consumed for nothing.
        if s.reader_gone && self.discarded >= READ_AHEAD {
            return FeedNeed::Wait;
        }
        FeedNeed::Read
    }

    /// `n` bytes of the interim response went out.
    pub fn wrote(&mut self, n: usize) {
        self.continue_sent += n;
        if self.continue_sent >= CONTINUE.len() {
            self.continue_pending = false;
        }
    }

    /// The response started: no `100 Continue` may be sent any more.
    pub fn response_started(&mut self) {
        self.continue_pending = false;
    }

    /// Decodes what `buf` holds into the shared state. Returns the end of
    /// the body when reached (bytes after it stay in `buf`: the next
    /// request). `eof`: the client closed its side.
    pub fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Option<Result<(), BodyError>> {
        if self.end.is_some() {
            return self.end;
        }
        let mut s = lock(&self.shared);
        let mut woke = false;
        let end = loop {
            match self.decoder.step(buf) {
                Ok(Step::Data(b)) => {
                    if s.reader_gone {
                        self.discarded += b.len();
                    } else {
                        s.buffered += b.len();
                        s.frames.push_back(b);
                    }
                    woke = true;
                }
                Ok(Step::Done) => break Some(Ok(())),
                Ok(Step::NeedMore) => break eof.then_some(Err(BodyError::Cut)),
                Err(Malformed(m)) => break Some(Err(BodyError::Malformed(m))),
            }
        };
        if let Some(e) = end {
            s.end = Some(e);
            woke = true;
        }
        if woke {
            if let Some(w) = s.reader.take() {
                w.wake();
            }
        }
        self.end = end;
        end
    }

    /// The socket failed while reading the body.
    pub fn fail(&mut self) {
        self.end = Some(Err(BodyError::Io));
        let mut s = lock(&self.shared);
        s.end = self.end;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// The body's reader consumed the failure (a service or server saw the
    /// request body fail).
    pub fn reader_saw_error(&self) -> bool {
        lock(&self.shared).reader_saw_error
    }

    pub fn is_complete(&self) -> bool {
        self.end == Some(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    fn next(body: &mut RequestBody) -> Poll<Option<Result<Bytes, BodyError>>> {
        Pin::new(body)
            .poll_frame(&mut cx())
            .map(|o| o.map(|r| r.map(|f| f.into_data().unwrap_or_default())))
    }

    #[test]
    fn streamed_frames_reach_the_reader_and_the_rest_stays_buffered() {
        // 5 bytes, 2 of them read with the head: 3 left to decode.
        let (mut body, mut feed) = RequestBody::streamed(
            Some(Bytes::from_static(b"ab")),
            Decoder::length(3),
            Some(5),
            false,
        );
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(matches!(next(&mut body), Poll::Ready(Some(Ok(b))) if b == "ab"));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(next(&mut body).is_pending());
        assert!(matches!(feed.need(&mut cx()), FeedNeed::Read));
        // The rest of the body and the start of the next request.
        let mut buf = BytesMut::from(&b"cdeGET /"[..]);
        assert_eq!(feed.decode(&mut buf, false), Some(Ok(())));
        assert_eq!(&buf[..], b"GET /");
        assert!(matches!(next(&mut body), Poll::Ready(Some(Ok(b))) if b == "cde"));
        assert!(matches!(next(&mut body), Poll::Ready(None)));
        assert!(feed.is_complete() && !feed.reader_saw_error());
    }

    #[test]
    fn a_cut_body_is_an_error_the_connection_learns_was_seen() {
        let (mut body, mut feed) = RequestBody::streamed(None, Decoder::chunked(), None, false);
        let mut buf = BytesMut::from(&b"5\r\nabc"[..]);
        assert_eq!(feed.decode(&mut buf, false), None);
        assert_eq!(feed.decode(&mut buf, true), Some(Err(BodyError::Cut)));
        assert!(!feed.reader_saw_error());
        assert!(matches!(next(&mut body), Poll::Ready(Some(Ok(b))) if b == "abc"));
        assert!(matches!(
            next(&mut body),
            Poll::Ready(Some(Err(BodyError::Cut)))
        ));
        assert!(feed.reader_saw_error());
    }

    #[test]
    fn a_buffered_body_is_read_again_from_its_start() {
        let (mut body, mut feed) = RequestBody::streamed(
            Some(Bytes::from_static(b"ab")),
            Decoder::length(3),
            Some(5),
            false,
        );
        let mut buf = BytesMut::from(&b"cde"[..]);
        assert_eq!(feed.decode(&mut buf, false), Some(Ok(())));
        let got = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(body.buffer(100));
        assert_eq!(got.unwrap(), "abcde");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(matches!(next(&mut body), Poll::Ready(Some(Ok(b))) if b == "abcde"));
        assert!(matches!(next(&mut body), Poll::Ready(None)));
        // A limit stops the wait with what has arrived.
        let mut full = RequestBody::full(Bytes::from_static(b"xyz"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(full.buffer(2)).unwrap(), "xyz");
        assert!(matches!(next(&mut full), Poll::Ready(Some(Ok(b))) if b == "xyz"));
    }

    #[test]
    fn continue_is_due_only_once_the_reader_asks() {
        let (mut body, mut feed) = RequestBody::streamed(None, Decoder::length(1), Some(1), true);
        assert!(matches!(feed.need(&mut cx()), FeedNeed::Wait));
        assert!(next(&mut body).is_pending());
        let FeedNeed::Write(bytes) = feed.need(&mut cx()) else {
            panic!("100 Continue due");
        };
        assert_eq!(bytes, b"HTTP/1.1 100 Continue\r\n\r\n");
        feed.wrote(bytes.len());
        assert!(matches!(feed.need(&mut cx()), FeedNeed::Read));
        // The body is Send: it may be read on another worker.
        fn send<T: Send>(_: &T) {}
        send(&body);
    }
}
