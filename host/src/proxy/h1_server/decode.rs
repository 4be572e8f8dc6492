//! Request body framing as a client sends it: a known length, or the
//! chunked transfer coding decoded strictly (as HAProxy 3.0 does). No I/O:
//! the decoder takes bytes from the connection's read buffer.

use bytes::{Buf, Bytes, BytesMut};

/// A chunk-size line or a trailer line longer than this is refused.
const MAX_LINE_BYTES: usize = 4096;

/// Why a request body is invalid (the client gets a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// One step of [`Decoder::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes taken from the buffer.
    Data(Bytes),
    /// The buffer holds too little to go on: read more.
    NeedMore,
    /// The body is complete.
    Done,
}

/// Where a request body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// This many body bytes still to come.
    Length(u64),
    /// Expecting a chunk-size line.
    Size,
    /// In a chunk's data; this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
    Done,
}

impl Decoder {
    pub fn chunked() -> Decoder {
        Decoder::Size
    }

    pub fn length(n: u64) -> Decoder {
        if n == 0 {
            Decoder::Done
        } else {
            Decoder::Length(n)
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Advances over `buf`, returning the next data or what stops it.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        loop {
            match *self {
                Decoder::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Decoder::Done
                    } else {
                        Decoder::Length(left)
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Decoder::Size => match chunk_size(buf)? {
                    None => return Ok(Step::NeedMore),
                    Some((used, size)) => {
                        buf.advance(used);
                        *self = if size == 0 {
                            Decoder::Trailers
                        } else {
                            Decoder::Data(size)
                        };
                    }
                },
                Decoder::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Decoder::DataEnd
                    } else {
                        Decoder::Data(left)
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Decoder::DataEnd => {
                    if buf.len() < 2 {
                        // A lone byte that can't start CRLF is already wrong.
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(Malformed("chunk data longer than its size"));
                        }
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("chunk data longer than its size"));
                    }
                    buf.advance(2);
                    *self = Decoder::Size;
                }
                Decoder::Trailers => match line_end(buf)? {
                    None => return Ok(Step::NeedMore),
                    // Trailer fields are dropped, as the server side sends none.
                    Some(eol) => {
                        buf.advance(eol + 2);
                        if eol == 0 {
                            *self = Decoder::Done;
                        }
                    }
                },
                Decoder::Done => return Ok(Step::Done),
            }
        }
    }
}

/// Parses a chunk-size line at the start of `buf`: hex digits (at most 16,
/// no sign, no `0x`), optional blanks, optional `;extensions`, then CRLF.
/// `None` when the line is not complete yet.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, Malformed> {
    let mut size: u64 = 0;
    let mut digits = 0usize;
    let mut i = 0;
    while i < buf.len() {
        let d = match buf[i] {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            c @ b'A'..=b'F' => c - b'A' + 10,
            _ => break,
        };
        if size >> 60 != 0 {
            return Err(Malformed("chunk size overflows 64 bits"));
        }
        size = (size << 4) | u64::from(d);
        digits += 1;
        i += 1;
    }
    if i == buf.len() {
        return too_long(buf.len()).map(|()| None);
    }
    if digits == 0 {
        return Err(Malformed("invalid chunk size"));
    }
    // Blanks after the size (HAProxy accepts them), then an extension.
    while i < buf.len() && (buf[i] == b' ' || buf[i] == b'\t') {
        i += 1;
    }
    if i < buf.len() && buf[i] == b';' {
        while i < buf.len() && buf[i] != b'\r' && buf[i] != b'\n' {
            // Control characters other than HTAB have no place in an extension.
            if buf[i] < 0x20 && buf[i] != b'\t' || buf[i] == 0x7f {
                return Err(Malformed("invalid chunk extension"));
            }
            i += 1;
        }
    }
    match buf.get(i) {
        None => too_long(buf.len()).map(|()| None),
        Some(b'\r') => match buf.get(i + 1) {
            None => too_long(buf.len()).map(|()| None),
            Some(b'\n') => Ok(Some((i + 2, size))),
            Some(_) => Err(Malformed("bare CR in a chunk-size line")),
        },
        Some(_) => Err(Malformed("invalid chunk-size line")),
    }
}

/// The position of the CRLF ending the line at the start of `buf`; a bare
/// CR or LF is an error.
fn line_end(buf: &[u8]) -> Result<Option<usize>, Malformed> {
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(Malformed("bare CR in a trailer")),
                }
            }
            b'\n' => return Err(Malformed("bare LF in a trailer")),
            _ => {}
        }
        if i >= MAX_LINE_BYTES {
            return Err(Malformed("trailer line too long"));
        }
    }
    Ok(None)
}

fn too_long(len: usize) -> Result<(), Malformed> {
    if len > MAX_LINE_BYTES {
        Err(Malformed("chunk-size line too long"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed `step` bytes at a time.
    fn decode(mut d: Decoder, wire: &[u8], step: usize) -> Result<Vec<u8>, Malformed> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.step(&mut buf)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::Done => return Ok(out),
                Step::NeedMore => {
                    if fed == wire.len() {
                        return Err(Malformed("cut"));
                    }
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn valid_chunked_bodies_decode_whatever_the_read_sizes() {
        let wire = b"3\r\nabc\r\n1A ;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            let body = decode(Decoder::chunked(), wire, step).expect("valid");
            assert_eq!(body, b"abcabcdefghijklmnopqrstuvwxyz");
        }
        assert_eq!(decode(Decoder::length(3), b"xyz", 1).expect("len"), b"xyz");
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for wire in [
            &b"10000000000000001\r\nab\r\n0\r\n\r\n"[..],
            b"0x2\r\nab\r\n0\r\n\r\n",
            b"-2\r\nab\r\n0\r\n\r\n",
            b"+2\r\nab\r\n0\r\n\r\n",
            b"2;a\rb\r\nab\r\n0\r\n\r\n",
            b"2\r\nabc\r\n0\r\n\r\n",
            b"2\r\nab0\r\n\r\n",
            b"2\nab\n0\n\n",
            b"\r\nab\r\n0\r\n\r\n",
            b"2\r\nab\r\n0\r\nx: y\rz\r\n\r\n",
        ] {
            for step in [1, 64] {
                let r = decode(Decoder::chunked(), wire, step);
                assert!(
                    r.is_err() && r != Err(Malformed("cut")),
                    "{:?} step {step}: {r:?}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
    }
}
