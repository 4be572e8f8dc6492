//! The responses the proxy generates itself, shaped like HAProxy's default
//! error pages so that clients (and the differential tests) see the same
//! status, headers and body.

use crate::proxy::body::ProxyBody;
use hyper::{header, Response, StatusCode};

/// Reason phrase and explanation for each generated status.
fn text(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("Bad request", "Your browser sent an invalid request."),
        403 => ("Forbidden", "Request forbidden by administrative rules."),
        408 => (
            "Request Time-out",
            "Your browser didn't send a complete request in time.",
        ),
        431 => (
            "Request Header Fields Too Large",
            "Request Header Fields Too Large.",
        ),
        500 => (
            "Internal Server Error",
            "An internal server error occurred.",
        ),
        502 => (
            "Bad Gateway",
            "The server returned an invalid or incomplete response.",
        ),
        503 => (
            "Service Unavailable",
            "No server is available to handle this request.",
        ),
        504 => ("Gateway Time-out", "The server didn't respond in time."),
        _ => ("Error", "An error occurred."),
    }
}

fn page(status: u16) -> String {
    let (reason, explanation) = text(status);
    format!("<html><body><h1>{status} {reason}</h1>\n{explanation}\n</body></html>\n")
}

/// The same page as raw HTTP/1.1 bytes, for a connection hyper no longer
/// serves; the connection is closed after it.
pub fn raw(status: u16) -> Vec<u8> {
    let body = page(status);
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\ncache-control: no-cache\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n{body}",
        text(status).0,
        body.len()
    )
    .into_bytes()
}

/// An error response with HAProxy's default page.
pub fn response(status: u16) -> Response<ProxyBody> {
    let body = page(status);
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html"),
    );
    r
}
