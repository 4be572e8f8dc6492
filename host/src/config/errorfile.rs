//! `errorfile CODE FILE`: reading and checking the file, a complete raw
//! HTTP response, at load time as HAProxy does (same refusals, same words).

use std::path::Path;

/// The statuses `errorfile` may replace (HAProxy 3.0's list).
pub const STATUSES: &[u16] = &[
    200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 421, 422, 425, 429, 500, 501, 502, 503, 504,
];

/// A response read from an error file. An empty file means: close the
/// connection without an answer (HAProxy's convention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    /// The status line's code, reason and the header fields, in file order;
    /// `None` for an empty file.
    pub head: Option<ReplyHead>,
    /// The bytes after the head.
    pub body: Vec<u8>,
}

/// The head of a [`RawReply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyHead {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// `errorfile CODE FILE`: the status it applies to and the file's reply.
pub fn parse_line(words: &[&str]) -> Result<(u16, RawReply), String> {
    let (Some(code), Some(file)) = (words.get(1), words.get(2)) else {
        return Err("errorfile : expects <status_code> and <file> as arguments.".to_string());
    };
    if words.len() > 3 {
        return Err("errorfile : expects exactly two arguments.".to_string());
    }
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|s| STATUSES.contains(s))
        .ok_or_else(|| format!("errorfile : status code '{code}' not handled."))?;
    let bytes = std::fs::read(Path::new(file))
        .map_err(|_| format!("errorfile : error opening file '{file}'."))?;
    let reply = parse_reply(&bytes).map_err(|e| format!("errorfile : '{file}': {e}"))?;
    Ok((status, reply))
}

/// Parses a raw response as HAProxy's `http_str_to_htx` does.
pub fn parse_reply(bytes: &[u8]) -> Result<RawReply, String> {
    if bytes.is_empty() {
        return Ok(RawReply {
            head: None,
            body: Vec::new(),
        });
    }
    let mut fields = [httparse::EMPTY_HEADER; 101];
    let mut resp = httparse::Response::new(&mut fields);
    let head_len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err("unable to parse headers (error offset: -2)".to_string())
        }
        Err(_) => return Err("unable to parse headers (error offset: 0)".to_string()),
    };
    let status = resp.code.unwrap_or(0);
    if !(200..=599).contains(&status) {
        return Err(format!(
            "invalid http status code for an error message ({status})"
        ));
    }
    let headers: Vec<(String, Vec<u8>)> = resp
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let body = bytes[head_len..].to_vec();
    let value = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
    };
    if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return Err("chunk-encoded payload not supported".to_string());
    }
    if let Some(cl) = value("content-length") {
        match cl.parse::<usize>() {
            Ok(n) if n == body.len() => {}
            Ok(n) => {
                return Err(format!(
                    "payload size does not match the announced content-length ({} != {n})",
                    body.len()
                ))
            }
            Err(_) => return Err("unable to parse headers (error offset: 0)".to_string()),
        }
    }
    Ok(RawReply {
        head: Some(ReplyHead {
            status,
            reason: resp.reason.unwrap_or_default().to_string(),
            headers,
        }),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_checked_as_haproxy_checks_them() {
        let r = parse_reply(
            b"HTTP/1.1 503 Busy\r\nContent-Type: text/plain\r\ncontent-length: 4\r\n\r\nbusy",
        )
        .unwrap();
        let h = r.head.unwrap();
        assert_eq!((h.status, h.reason.as_str()), (503, "Busy"));
        assert_eq!(
            h.headers[0],
            ("content-type".into(), b"text/plain".to_vec())
        );
        assert_eq!(r.body, b"busy");
        // LF-only lines and no content-length are accepted.
        assert!(parse_reply(b"HTTP/1.1 503 X\n\nabc").is_ok());
        assert_eq!(parse_reply(b"").unwrap().head, None);
        let e = |b: &[u8]| parse_reply(b).unwrap_err();
        assert_eq!(
            e(b"HTTP/1.1 503 X\r\ncontent-length: 10\r\n\r\nabc"),
            "payload size does not match the announced content-length (3 != 10)"
        );
        assert_eq!(
            e(b"HTTP/1.1 503 X\r\ncontent-length: 3\r\n"),
            "unable to parse headers (error offset: -2)"
        );
        assert_eq!(
            e(b"HTTP/1.1 100 Continue\r\n\r\n"),
            "invalid http status code for an error message (100)"
        );
        assert!(e(b"garbage").starts_with("unable to parse headers"));
        assert_eq!(
            e(b"HTTP/1.1 503 X\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
            "chunk-encoded payload not supported"
        );
    }

    #[test]
    fn the_line_needs_a_handled_status_and_a_readable_file() {
        assert_eq!(
            parse_line(&["errorfile", "503"]).unwrap_err(),
            "errorfile : expects <status_code> and <file> as arguments."
        );
        assert_eq!(
            parse_line(&["errorfile", "503", "a", "b"]).unwrap_err(),
            "errorfile : expects exactly two arguments."
        );
        assert_eq!(
            parse_line(&["errorfile", "302", "/dev/null"]).unwrap_err(),
            "errorfile : status code '302' not handled."
        );
        assert_eq!(
            parse_line(&["errorfile", "503", "/nonexistent/x"]).unwrap_err(),
            "errorfile : error opening file '/nonexistent/x'."
        );
        // /dev/null reads as an empty file: close without an answer.
        assert_eq!(
            parse_line(&["errorfile", "503", "/dev/null"])
                .unwrap()
                .1
                .head,
            None
        );
    }
}
