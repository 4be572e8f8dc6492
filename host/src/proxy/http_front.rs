//! The HTTP/1.1 side of a frontend: keep-alive and pipelining (hyper answers
//! pipelined requests in order), header size limits (431 for oversized
//! headers, 400 for malformed requests, produced by hyper's parser), and
//! routing of each request to its Lua service.

use crate::lua::applet_http::{HttpAppletRequest, HttpReply, ResponseHead};
use crate::proxy::body::ProxyBody;
use crate::proxy::plan::FrontendPlan;
use crate::proxy::worker::Worker;
use crate::proxy::{error_pages, Shutdown};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

/// Serves one client connection until it closes or the process stops.
pub async fn serve(
    worker: Rc<Worker>,
    fe: Arc<FrontendPlan>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<Shutdown>,
) {
    let svc = {
        let (worker, fe) = (worker.clone(), fe.clone());
        // Boxed: poll_without_shutdown needs an Unpin service future.
        service_fn(move |req| Box::pin(handle(worker.clone(), fe.clone(), peer, req)))
    };
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        // Flush each response: with batched flushes, responses to pipelined
        // requests that precede a malformed one would be lost with the
        // connection.
        .pipeline_flush(false)
        .half_close(false)
        .auto_date_header(false)
        // hyper refuses buffers under 8 KiB; HAProxy's default is 16 KiB.
        .max_header_size(worker.plan.bufsize)
        .timer(TokioTimer::new());
    if let Some(t) = fe.http_request_timeout {
        builder.header_read_timeout(t);
    }
    let mut conn = builder.serve_connection(TokioIo::new(stream), svc);
    let stopping = |s: &Shutdown| *s != Shutdown::Running;
    // Serve without letting hyper close the socket: the error answer and the
    // lingering close below need it.
    let mut result = None;
    if !stopping(&shutdown.borrow()) {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => result = Some(r),
            _ = shutdown.wait_for(stopping) => {}
        }
    }
    let result = match result {
        Some(r) => r,
        None => {
            // Finish the request in flight, then close instead of keeping alive.
            std::pin::Pin::new(&mut conn).graceful_shutdown();
            std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await
        }
    };
    let mut stream = conn.into_parts().io.into_inner();
    // A request head hyper could not parse ends the connection with an error
    // and nothing written for that request (hyper 1.12 prepares a 400/431 but
    // does not flush it on this path): answer as HAProxy does.
    if let Err(e) = &result {
        if e.is_parse() || e.is_parse_too_large() {
            let status = if e.is_parse_too_large() { 431 } else { 400 };
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(&error_pages::raw(status)).await;
            if crate::log::access_log_enabled() {
                let t = crate::log::UtcTime::now();
                crate::log::access(&format!(
                    "{peer} [{}] {} <BADREQ> {status} \"{e}\"",
                    t.log_date(),
                    fe.name
                ));
            }
        }
    }
    lingering_close(stream).await;
}

/// Closes the way HAProxy and nginx close: stop writing, then read and
/// discard what the client still sends for a moment. Closing with unread
/// input makes the kernel send a reset, which can destroy a response the
/// client has not read yet (e.g. a 431 sent while it was still writing).
async fn lingering_close(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut sink = [0u8; 4096];
    let mut budget = 1usize << 20;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 && budget > n => budget -= n,
            _ => return,
        }
    }
}

async fn handle(
    worker: Rc<Worker>,
    fe: Arc<FrontendPlan>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    crate::stats::count_request();
    let start = Instant::now();
    let line = crate::log::access_log_enabled().then(|| format!("{} {}", req.method(), req.uri()));
    let resp = route(&worker, &fe, req).await;
    if let Some(line) = line {
        let t = crate::log::UtcTime::now();
        crate::log::access(&format!(
            "{peer} [{}] {} {} {} {}ms \"{line}\"",
            t.log_date(),
            fe.name,
            fe.service.as_ref().map_or("<NOSRV>", |s| &s.name),
            resp.status().as_u16(),
            start.elapsed().as_millis()
        ));
    }
    Ok(resp)
}

async fn route(worker: &Worker, fe: &FrontendPlan, req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(target) = &fe.service else {
        return error_pages::response(503);
    };
    let (parts, body) = req.into_parts();
    let content_length = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                bytes::Bytes::copy_from_slice(v.as_bytes()),
            )
        })
        .collect();
    let version = match parts.version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2.0",
        _ => "1.1",
    };
    let applet_req = HttpAppletRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        qs: parts.uri.query().unwrap_or("").to_string(),
        version: version.to_string(),
        headers,
        content_length,
        body: Some(body),
    };
    let (head_tx, head_rx) = oneshot::channel();
    let (body_tx, body_rx) = mpsc::channel(8);
    worker.start_http_service(
        target,
        applet_req,
        HttpReply {
            head: head_tx,
            body: body_tx,
        },
    );
    match head_rx.await {
        Ok(head) => build_response(head, body_rx),
        // The applet failed (or timed out) before starting its response.
        Err(_) => error_pages::response(500),
    }
}

fn build_response(
    head: ResponseHead,
    body_rx: mpsc::Receiver<crate::lua::applet_http::BodyChunk>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Stream(body_rx));
    *resp.status_mut() = StatusCode::from_u16(head.status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    for (name, value) in head.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(n), Ok(v)) => {
                h.append(n, v);
            }
            _ => crate::log::warning(&format!(
                "Lua applet: invalid response header '{name}' dropped"
            )),
        }
    }
    // A custom reason phrase is not sent: hyper writes the canonical one.
    resp
}
