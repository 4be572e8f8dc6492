//! Process-wide counters for `core.get_info()` and the logs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static CURR_CONNS: AtomicUsize = AtomicUsize::new(0);
static CUM_CONNS: AtomicUsize = AtomicUsize::new(0);
static CUM_REQ: AtomicUsize = AtomicUsize::new(0);
static MAXCONN: AtomicUsize = AtomicUsize::new(0);

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Records the process start (call early in main).
pub fn init(maxconn: usize) {
    let _ = start();
    MAXCONN.store(maxconn, Ordering::Relaxed);
}

/// Counts an accepted connection until the guard is dropped.
pub struct ConnGuard(());

impl ConnGuard {
    pub fn new() -> ConnGuard {
        CURR_CONNS.fetch_add(1, Ordering::Relaxed);
        CUM_CONNS.fetch_add(1, Ordering::Relaxed);
        ConnGuard(())
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        CURR_CONNS.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn count_request() {
    CUM_REQ.fetch_add(1, Ordering::Relaxed);
}

pub struct Snapshot {
    pub uptime: Duration,
    pub curr_conns: usize,
    pub cum_conns: usize,
    pub cum_req: usize,
    pub maxconn: usize,
}

pub fn snapshot() -> Snapshot {
    Snapshot {
        uptime: start().elapsed(),
        curr_conns: CURR_CONNS.load(Ordering::Relaxed),
        cum_conns: CUM_CONNS.load(Ordering::Relaxed),
        cum_req: CUM_REQ.load(Ordering::Relaxed),
        maxconn: MAXCONN.load(Ordering::Relaxed),
    }
}
