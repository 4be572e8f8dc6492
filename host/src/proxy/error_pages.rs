//! The responses the proxy generates itself, shaped like HAProxy's default
//! error pages so that clients (and the differential tests) see the same
//! status, headers and body.

use crate::config::errorfile::RawReply;
use crate::config::ErrorFileDef;
use crate::proxy::body::ProxyBody;
use hyper::{header, Response, StatusCode};
use std::sync::Arc;

/// Marks a response carrying luahost's default page for a status, so that
/// an `errorfile` for that status can take its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultPage(pub u16);

/// A proxy's `errorfile` replies, by status.
#[derive(Default)]
pub struct ErrorFiles(Vec<(u16, Arc<RawReply>)>);

/// What a proxy's errorfile makes of a default page.
pub enum Substitute {
    /// No errorfile for that status.
    Keep(Response<ProxyBody>),
    /// The errorfile's response.
    Reply(Response<ProxyBody>),
    /// An empty errorfile: close the connection without an answer.
    Close,
}

impl ErrorFiles {
    /// No `errorfile` line.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn from_config(defs: &[ErrorFileDef]) -> ErrorFiles {
        ErrorFiles(defs.iter().map(|d| (d.status, d.reply.clone())).collect())
    }

    pub fn get(&self, status: u16) -> Option<&RawReply> {
        self.0.iter().find(|(s, _)| *s == status).map(|(_, r)| &**r)
    }
}

/// Replaces a default page by the first of `files` (the backend's, then
/// the frontend's, as HAProxy looks them up) that has its status.
pub fn substitute(resp: Response<ProxyBody>, files: &[&ErrorFiles]) -> Substitute {
    let Some(&DefaultPage(status)) = resp.extensions().get::<DefaultPage>() else {
        return Substitute::Keep(resp);
    };
    match files.iter().find_map(|f| f.get(status)) {
        None => Substitute::Keep(resp),
        Some(raw) => match from_file(raw) {
            Some(mut r) => {
                // A page that had to close the connection (408) still does.
                if let Some(c) = resp.headers().get(header::CONNECTION) {
                    r.headers_mut().insert(header::CONNECTION, c.clone());
                }
                Substitute::Reply(r)
            }
            None => Substitute::Close,
        },
    }
}

/// The response of an errorfile (none: the file is empty).
fn from_file(raw: &RawReply) -> Option<Response<ProxyBody>> {
    let head = raw.head.as_ref()?;
    let mut r = Response::new(ProxyBody::full(bytes::Bytes::from(raw.body.clone())));
    *r.status_mut() =
        StatusCode::from_u16(head.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(head.reason.as_bytes()) {
        r.extensions_mut().insert(reason);
    }
    let h = r.headers_mut();
    // Without a length the body runs to the connection's end: HAProxy
    // sends such a file with `connection: close` and closes after it.
    if !head.headers.iter().any(|(n, _)| n == "content-length") {
        h.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    for (name, value) in &head.headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_bytes(value),
        ) {
            h.append(n, v);
        }
    }
    Some(r)
}

/// Reason phrase and explanation for each generated status.
fn text(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("Bad request", "Your browser sent an invalid request."),
        401 => ("Unauthorized", "You need a valid user and password to access this content."),
        403 => ("Forbidden", "Request forbidden by administrative rules."),
        404 => ("Not Found", "The resource could not be found."),
        405 => (
            "Method Not Allowed",
            "A request was made of a resource using a request method not supported by that resource.",
        ),
        407 => ("Unauthorized", "You need a valid user and password to access this content."),
        408 => ("Request Time-out", "Your browser didn't send a complete request in time."),
        410 => ("Gone", "The resource is no longer available and will not be available again."),
        413 => ("Payload Too Large", "The request entity exceeds the maximum allowed."),
        414 => ("URI Too Long", "The URI provided was too long for the server to process."),
        421 => ("Misdirected Request", "Request sent to a non-authoritative server."),
        422 => ("Unprocessable Content", "The server cannot process the contained instructions."),
        425 => ("Too Early", "Your browser sent early data."),
        429 => ("Too Many Requests", "You have sent too many requests in a given amount of time."),
        431 => ("Request Header Fields Too Large", "Request Header Fields Too Large."),
        500 => ("Internal Server Error", "An internal server error occurred."),
        501 => (
            "Not Implemented",
            "The server does not support the functionality required to fulfill the request.",
        ),
        502 => ("Bad Gateway", "The server returned an invalid or incomplete response."),
        503 => ("Service Unavailable", "No server is available to handle this request."),
        504 => ("Gateway Time-out", "The server didn't respond in time."),
        _ => ("Error", "An error occurred."),
    }
}

fn page(status: u16) -> String {
    let (reason, explanation) = text(status);
    format!("<html><body><h1>{status} {reason}</h1>\n{explanation}\n</body></html>\n")
}

/// The reason phrase and page body HAProxy generates for `status` (the HTTP
/// client hands them to Lua as a response).
pub fn reason_and_page(status: u16) -> (&'static str, String) {
    (text(status).0, page(status))
}

/// The same page as raw HTTP/1.1 bytes, for a request the connection
/// refuses (proxy/h1_server); the connection is closed after it.
pub fn raw(status: u16) -> Vec<u8> {
    let body = page(status);
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\ncache-control: no-cache\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n{body}",
        text(status).0,
        body.len()
    )
    .into_bytes()
}

/// An error response with HAProxy's default page (headers in its order).
pub fn response(status: u16) -> Response<ProxyBody> {
    let body = page(status);
    let len = body.len();
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    // HAProxy's own spelling of the reason ("400 Bad request").
    r.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            text(status).0.as_bytes(),
        ));
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html"),
    );
    r.extensions_mut().insert(DefaultPage(status));
    r
}
