//! The read side of an AppletTCP: the client socket and the bytes read from
//! it that Lua has not taken yet.
//!
//! Those bytes are held for Lua, so they count against `tune.lua.maxmem` as
//! they arrive (as a whole-body read of an AppletHTTP does, body_reader.rs):
//! HAProxy 3.0 collects a `receive()` in a Lua buffer, which fails with
//! `not enough memory` once it would pass the cap, and luahost fails the
//! same read the same way instead of handing back a short string.

use crate::lua::applet_tcp::AppletStream;
use crate::lua::memory::Charge;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;

/// What a read from the socket gave.
#[derive(Debug, PartialEq)]
pub(crate) enum Filled {
    /// More bytes are in the buffer.
    More,
    /// The client finished sending (or the socket failed): no more bytes.
    End,
    /// The buffered bytes would pass `tune.lua.maxmem`. They stay in the
    /// buffer (uncharged) for a smaller read to take.
    OverCap,
}

/// The socket and what was read from it but not yet returned to Lua.
pub(crate) struct Conn {
    pub(crate) stream: AppletStream,
    /// Read, not yet taken; the first `charge.bytes()` bytes are charged.
    buf: BytesMut,
    charge: Charge,
    pub(crate) eof: bool,
}

impl Conn {
    /// A connection whose first bytes (`pending`, e.g. what the content
    /// rules already read) are waiting in the buffer.
    pub(crate) fn new(stream: AppletStream, pending: BytesMut) -> Conn {
        let mut conn = Conn {
            stream,
            buf: pending,
            charge: Charge::default(),
            eof: false,
        };
        // Past the cap they stay uncharged; the next read tries again.
        conn.charge_buffered();
        conn
    }

    /// The bytes waiting, oldest first.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads more into the buffer.
    pub(crate) async fn fill(&mut self) -> Filled {
        if self.eof {
            return Filled::End;
        }
        // Bytes left uncharged by an earlier read are charged first.
        if !self.charge_buffered() {
            return Filled::OverCap;
        }
        self.buf.reserve(16 * 1024);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => {
                self.eof = true;
                Filled::End
            }
            Ok(_) if self.charge_buffered() => Filled::More,
            Ok(_) => Filled::OverCap,
        }
    }

    /// Reads what the socket has now without waiting (`try_receive`).
    pub(crate) fn fill_now(&mut self) -> Filled {
        if self.eof {
            return Filled::End;
        }
        let mut tmp = [0u8; 16 * 1024];
        match self.stream.try_read(&mut tmp) {
            Ok(0) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.eof = true,
        }
        match (self.eof, self.charge_buffered()) {
            (true, _) => Filled::End,
            (false, true) => Filled::More,
            (false, false) => Filled::OverCap,
        }
    }

    /// Takes (at most) the first `n` bytes, releasing their charge: Lua's
    /// allocator charges the string made of them.
    pub(crate) fn take(&mut self, n: usize) -> BytesMut {
        let n = n.min(self.buf.len());
        // The charged bytes are the first ones, so these are charged first.
        self.charge.release(n);
        self.buf.split_to(n)
    }

    /// The socket, the bytes not taken (no longer charged: they leave Lua)
    /// and whether the client finished sending.
    pub(crate) fn into_parts(self) -> (AppletStream, BytesMut, bool) {
        (self.stream, self.buf, self.eof)
    }

    /// Charges the buffered bytes not charged yet; false if that would
    /// pass the cap (nothing charged then).
    fn charge_buffered(&mut self) -> bool {
        let uncharged = self.buf.len().saturating_sub(self.charge.bytes());
        uncharged == 0 || self.charge.try_grow(uncharged)
    }
}
