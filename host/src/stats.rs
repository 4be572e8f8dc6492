//! Process-wide counters for `core.get_info()` and the logs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

/// Counts an accepted connection, and lists it for the CLI's `show sess`,
/// until the guard is dropped.
pub struct ConnGuard(u64, Arc<FrontendCounters>);

impl ConnGuard {
    /// Counts a connection accepted by `frontend` in the process's and in
    /// the frontend's counters (held by its registry entry).
    pub fn new(src: SocketAddr, frontend: &Arc<str>, fe: Arc<FrontendCounters>) -> ConnGuard {
        CURR_CONNS.fetch_add(1, Ordering::Relaxed);
        let id = CUM_CONNS.fetch_add(1, Ordering::Relaxed) as u64;
        let info = SessInfo {
            src,
            frontend: frontend.clone(),
            since: Instant::now(),
        };
        if let Ok(mut shard) = shard(id).lock() {
            shard.insert(id, info);
        }
        let cur = fe.cur.fetch_add(1, Ordering::Relaxed) + 1;
        fe.total.fetch_add(1, Ordering::Relaxed);
        fe.max.fetch_max(cur, Ordering::Relaxed);
        ConnGuard(id, fe)
    }
}

/// A frontend's connection counters (`scur`, `smax`, `stot` of `show stat`).
#[derive(Default)]
pub struct FrontendCounters {
    pub cur: AtomicUsize,
    pub max: AtomicUsize,
    pub total: AtomicUsize,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        CURR_CONNS.fetch_sub(1, Ordering::Relaxed);
        self.1.cur.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut shard) = shard(self.0).lock() {
            shard.remove(&self.0);
        }
    }
}

/// An open client connection, as `show sess` lists it.
pub struct SessInfo {
    pub src: SocketAddr,
    pub frontend: Arc<str>,
    pub since: Instant,
}

/// Open connections, sharded so that workers accepting and closing at the
/// same time rarely meet on a lock (only `show sess` reads them all).
const SHARDS: usize = 16;

fn shard(id: u64) -> &'static Mutex<HashMap<u64, SessInfo>> {
    static ALL: OnceLock<Vec<Mutex<HashMap<u64, SessInfo>>>> = OnceLock::new();
    let all = ALL.get_or_init(|| (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect());
    &all[id as usize % SHARDS]
}

/// The open connections (id, source, frontend, age), oldest first.
pub fn sessions() -> Vec<(u64, SocketAddr, Arc<str>, Duration)> {
    let mut v = Vec::new();
    for i in 0..SHARDS as u64 {
        if let Ok(shard) = shard(i).lock() {
            for (id, s) in shard.iter() {
                v.push((*id, s.src, s.frontend.clone(), s.since.elapsed()));
            }
        }
    }
    v.sort_by_key(|s| s.0);
    v
}

pub fn count_request() {
    CUM_REQ.fetch_add(1, Ordering::Relaxed);
}

/// `node` and `description` from `global`, for `core.get_info()`.
static IDENTITY: std::sync::RwLock<(Option<String>, Option<String>)> =
    std::sync::RwLock::new((None, None));

/// Sets the `node` (HAProxy's default: the host name) and `description`.
pub fn set_identity(node: Option<String>, description: Option<String>) {
    if let Ok(mut id) = IDENTITY.write() {
        *id = (node, description);
    }
}

/// The node name: `node` if set, else the host name (as HAProxy).
pub fn node() -> String {
    if let Some(n) = IDENTITY.read().ok().and_then(|id| id.0.clone()) {
        return n;
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// The `description`, if set.
pub fn description() -> Option<String> {
    IDENTITY.read().ok().and_then(|id| id.1.clone())
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
