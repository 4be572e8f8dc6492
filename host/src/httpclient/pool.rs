//! Idle keep-alive connections of one worker, by destination.
//!
//! A Lua state lives on one worker and its HTTP client calls run there, so
//! the pool is per worker (thread-local): no lock, no connection moving
//! between threads. A connection goes back to the pool after a complete
//! exchange the server agreed to keep alive, and is taken out by the next
//! request to the same destination (same address or host name, same TLS
//! name and verification). Idle connections are closed after
//! `httpclient.pool.idle-timeout`, or as soon as the server closes them, by a
//! small reaper task that runs while the pool holds any.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::connect::{Target, TlsParams};
use super::stream::Stream;

/// What a pooled connection is interchangeable for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Place {
    /// A destination given as an address (an IP URL, or `dst`).
    Target(Target),
    /// A host name and port, as resolved when the connection was opened.
    Name(String, u16),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub place: Place,
    pub tls: Option<TlsParams>,
}

/// Idle connections kept per destination; older ones are closed first.
const MAX_IDLE_PER_KEY: usize = 64;
/// How often the reaper looks for expired or closed connections.
const REAP_EVERY: Duration = Duration::from_millis(500);

struct Idle {
    stream: Stream,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    idle: RefCell<HashMap<Key, VecDeque<Idle>>>,
    reaper_running: Cell<bool>,
}

thread_local! {
    static POOL: Pool = Pool::default();
}

/// An idle connection for `key` that looks usable, most recent first.
pub fn take(key: &Key) -> Option<Stream> {
    POOL.with(|p| {
        let mut idle = p.idle.borrow_mut();
        let q = idle.get_mut(key)?;
        while let Some(mut c) = q.pop_back() {
            if c.stream.still_open() {
                return Some(c.stream);
            }
        }
        idle.remove(key);
        None
    })
}

/// Keeps `stream` for the next request to `key`.
pub fn put(key: Key, stream: Stream, idle_timeout: Duration) {
    if idle_timeout.is_zero() {
        return;
    }
    let start_reaper = POOL.with(|p| {
        let mut idle = p.idle.borrow_mut();
        let q = idle.entry(key).or_default();
        if q.len() >= MAX_IDLE_PER_KEY {
            q.pop_front();
        }
        q.push_back(Idle {
            stream,
            since: Instant::now(),
        });
        !p.reaper_running.replace(true)
    });
    if start_reaper {
        tokio::task::spawn_local(reap(idle_timeout));
    }
}

/// Number of idle connections of this worker (tests, stats).
#[allow(dead_code)]
pub fn idle_count() -> usize {
    POOL.with(|p| p.idle.borrow().values().map(VecDeque::len).sum())
}

/// Closes connections idle for longer than `idle_timeout` or closed by
/// their server; ends when the pool is empty.
async fn reap(idle_timeout: Duration) {
    loop {
        tokio::time::sleep(REAP_EVERY.min(idle_timeout)).await;
        let now = Instant::now();
        let empty = POOL.with(|p| {
            let mut idle = p.idle.borrow_mut();
            idle.retain(|_, q| {
                q.retain_mut(|c| {
                    now.duration_since(c.since) < idle_timeout && c.stream.still_open()
                });
                !q.is_empty()
            });
            let empty = idle.is_empty();
            if empty {
                p.reaper_running.set(false);
            }
            empty
        });
        if empty {
            return;
        }
    }
}
