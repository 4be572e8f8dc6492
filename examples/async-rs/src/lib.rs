//! `async_rs`: native functions that wait without blocking, written with
//! luahost-modules' `async_function` (docs/modules.md, "Waiting without
//! blocking").
//!
//! ```lua
//! local a = require "async_rs"
//! a.sleep(200)                                 --> 200 (after 200 ms)
//! a.request("127.0.0.1", 7000, "hello")        --> the server's reply line
//! a.request("127.0.0.1", 7000, "hello", 500)   --> nil, "timeout" after 500 ms
//! ```
//!
//! In a luahost action, service, task or callback only the calling
//! coroutine waits: the worker serves other requests meanwhile. Under the
//! stock `lua5.4` (and in a lua-load body) the same calls block until done
//! and return the same results. In a sample fetch or converter they raise
//! "cannot wait in a sample fetch or converter".
//!
//! `echo(s)` returns `s` from a future that is ready at once.
//!
//! Also, for the budget side of the toolkit:
//! * `live()`: futures of this module alive now (created, not yet dropped);
//! * `hold(n)`: an object holding an n-byte buffer charged to luahost's
//!   `tune.lua.maxmem` (fails with "not enough memory" past the cap);
//! * `spin(ms)`: busy work for up to `ms` milliseconds that stops early when
//!   the host says it should yield; returns the milliseconds spun and
//!   whether the host asked.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use luahost_modules::host::{should_yield, TrackedBuffer};
use luahost_modules::{module, Error};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Futures of this module that exist now.
static LIVE: AtomicI64 = AtomicI64::new(0);

/// Counts a future in [`LIVE`] from creation to drop (completed or
/// cancelled alike).
struct Alive;

impl Alive {
    fn new() -> Alive {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Alive
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Longest reply line `request` accepts.
const MAX_LINE: u64 = 64 * 1024;

/// Connects to host:port, sends `line` and a newline, returns the first line
/// of the answer (without its end of line).
async fn request(host: String, port: u16, line: String) -> luahost_modules::Result<String> {
    let fail = |what: &str, e: std::io::Error| Error::runtime(format!("{what} {host}:{port}: {e}"));
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail("cannot connect to", e))?;
    let mut out = line.into_bytes();
    out.push(b'\n');
    stream
        .write_all(&out)
        .await
        .map_err(|e| fail("cannot send to", e))?;
    let mut reader = BufReader::new(stream).take(MAX_LINE);
    let mut reply = String::new();
    reader
        .read_line(&mut reply)
        .await
        .map_err(|e| fail("cannot read from", e))?;
    while reply.ends_with('\n') || reply.ends_with('\r') {
        reply.pop();
    }
    Ok(reply)
}

/// The native value of a `hold(n)` object.
struct Held {
    buffer: TrackedBuffer,
}

module!(async_rs, |m| {
    m.async_function("sleep", |_, args| {
        let ms = args.check_integer(1)?.max(0);
        let alive = Alive::new();
        Ok(async move {
            let _alive = alive;
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
            Ok(ms)
        })
    })?;

    // echo(...): its arguments back, from a future that is ready at once
    // (the cost of the mechanism itself; benches/async_calls.rs).
    m.async_function("echo", |_, args| {
        let text = args.check_string(1)?.to_str()?.to_owned();
        Ok(async move { Ok(text) })
    })?;

    // request(host, port, line[, timeout_ms]): the reply line, or nil and
    // "timeout" when no reply came in time. The host never times a wait out
    // (HAProxy does not either), so a module bounds its own: on timeout the
    // inner future is dropped here, which closes its connection at once.
    m.async_function("request", |_, args| {
        let host = args.check_str(1)?.to_owned();
        let port = u16::try_from(args.check_integer(2)?)
            .map_err(|_| Error::arg(2, "port out of range"))?;
        let line = args.check_str(3)?.to_owned();
        let limit = match args.opt_integer(4, 0)? {
            ms if ms > 0 => Some(Duration::from_millis(ms as u64)),
            _ => None,
        };
        let alive = Alive::new();
        Ok(async move {
            let _alive = alive;
            let call = request(host, port, line);
            let reply = match limit {
                None => call.await?,
                Some(limit) => match tokio::time::timeout(limit, call).await {
                    Ok(reply) => reply?,
                    Err(_) => return Ok((None, Some("timeout"))),
                },
            };
            Ok((Some(reply), None))
        })
    })?;

    m.function("live", |_, _| Ok(LIVE.load(Ordering::SeqCst)))?;

    let held = m
        .class::<Held>("Held")?
        .method("size", |_, this, _| Ok(this.buffer.len() as i64))?
        .build();
    m.function("hold", move |lua, args| {
        let n = usize::try_from(args.check_integer(1)?)
            .map_err(|_| Error::arg(1, "size out of range"))?;
        let mut buffer = TrackedBuffer::with_capacity(lua, n)?;
        // Touch the memory in steps, as a builder would.
        let chunk = vec![b'x'; 64 * 1024];
        while buffer.len() < n {
            let step = (n - buffer.len()).min(chunk.len());
            buffer.extend_from_slice(&chunk[..step])?;
        }
        held.wrap(lua, Held { buffer })
    })?;

    m.function("spin", |lua, args| {
        let ms = args.check_integer(1)?.max(0) as u64;
        let start = Instant::now();
        let limit = Duration::from_millis(ms);
        let mut asked = false;
        let mut x: u64 = 1;
        while start.elapsed() < limit {
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            if should_yield(lua) {
                asked = true;
                break;
            }
        }
        std::hint::black_box(x);
        Ok((start.elapsed().as_millis() as i64, asked))
    })?;
    Ok(())
});
