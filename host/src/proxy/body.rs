//! The response body type of the HTTP front end: either a complete buffer
//! (error pages, short answers) or a stream fed by a Lua applet.

use crate::lua::applet_http::BodyChunk;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

pub enum ProxyBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<BodyChunk>),
    /// A server's response body, streamed through.
    Upstream(crate::backend::UpstreamBody),
    /// Another body, compressed as it streams (`compression`).
    Compressed(Box<crate::proxy::compress::CompressedBody>),
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> ProxyBody {
        let b = b.into();
        ProxyBody::Full(if b.is_empty() { None } else { Some(b) })
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Compressed(b) => b.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Stream(_) => false,
            ProxyBody::Compressed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Stream(_) => SizeHint::default(),
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Compressed(b) => b.size_hint(),
        }
    }
}
