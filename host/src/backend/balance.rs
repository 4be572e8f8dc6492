//! Load-balancing algorithms: which server gets the next request.
//!
//! Every algorithm works on a [`Farm`], a snapshot of the backend's servers
//! and tables, and only considers usable active servers (see
//! `Server::usable`); when there are none, the first usable backup server takes
//! the traffic (HAProxy's behaviour without `option allbackups`). A server at
//! its `maxconn` is skipped, except by source hashing, which waits for its
//! server rather than breaking the client's stickiness.
//!
//! Round-robin and source hashing share a precomputed table in which each
//! active server appears as many times as its weight (weights divided by
//! their GCD), its entries evenly spread: walking the table with one atomic
//! cursor gives a smooth weighted round-robin without a lock, and indexing it
//! with a hash of the client address gives a weight-proportional, stable
//! mapping.

use super::server::Server;
use crate::config::Balance;
use std::cmp::Ordering as CmpOrdering;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The outcome of a pick (`T`: an index into the farm, or the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick<T = usize> {
    /// A slot of this server was taken.
    Got(T),
    /// Usable servers exist but are full: wait for this server's queue
    /// (source hashing) or the backend's (`None`).
    Full(Option<T>),
    /// No usable server at all.
    None,
}

/// A snapshot of a backend's servers with the load-balancing tables built
/// for them. Readers load it without a lock (arc-swap); a change to the
/// server set or to a weight builds a new one off the request path and
/// swaps it in. Indexes in the tables are positions in `servers`.
pub struct Farm {
    /// Every server of the backend, in configuration order, dynamic servers
    /// after (deleted ones are no longer in the snapshot).
    pub servers: Box<[Arc<Server>]>,
    /// Active (non-backup) servers with a non-zero weight, in order
    /// (servers out of service included: that state changes without a
    /// rebuild, and the pick skips them).
    active: Box<[usize]>,
    /// Backup servers with a non-zero weight, in order.
    backups: Box<[usize]>,
    /// Round-robin / source map over `active` (see the module comment).
    table: Box<[usize]>,
    /// Positions by name, for backends with many servers (small ones are
    /// searched in order: no map to build or keep).
    by_name: Option<HashMap<Arc<str>, usize>>,
}

/// From this many servers on, a farm indexes its servers by name.
const NAME_INDEX_FROM: usize = 16;

impl Farm {
    pub(crate) fn build(algo: Balance, servers: Vec<Arc<Server>>) -> Farm {
        let weights: Vec<u32> = servers.iter().map(|s| s.weight()).collect();
        let active: Vec<usize> = (0..servers.len())
            .filter(|&i| !servers[i].backup && weights[i] > 0)
            .collect();
        let backups = (0..servers.len())
            .filter(|&i| servers[i].backup && weights[i] > 0)
            .collect();
        let table = match algo {
            Balance::RoundRobin | Balance::Source => {
                let weighted: Vec<(usize, u32)> = active.iter().map(|&i| (i, weights[i])).collect();
                spread(&weighted)
            }
            Balance::LeastConn | Balance::First => Vec::new(),
        };
        let by_name = (servers.len() >= NAME_INDEX_FROM).then(|| {
            servers
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect()
        });
        Farm {
            by_name,
            servers: servers.into_boxed_slice(),
            active: active.into_boxed_slice(),
            backups,
            table: table.into_boxed_slice(),
        }
    }

    /// The server named `name`.
    pub fn find(&self, name: &str) -> Option<&Arc<Server>> {
        match &self.by_name {
            Some(map) => self.servers.get(*map.get(name)?),
            None => self.servers.iter().find(|s| &*s.name == name),
        }
    }
}

/// A backend's algorithm and its moving part.
pub(crate) struct Lb {
    pub algo: Balance,
    /// Round-robin position; for leastconn, the rotating start that breaks
    /// ties between equally loaded servers.
    cursor: AtomicUsize,
}

impl Lb {
    pub fn new(algo: Balance) -> Lb {
        Lb {
            algo,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Chooses a server of `farm` for a request from `client` and takes a
    /// slot on it. `exclude` is a server `gid`.
    pub fn pick(&self, farm: &Farm, client: IpAddr, exclude: Option<usize>) -> Pick {
        let servers = &farm.servers[..];
        let eligible = |idx: usize| exclude != Some(servers[idx].gid) && servers[idx].usable();
        let found = match self.algo {
            Balance::RoundRobin => self.round_robin(farm, &eligible),
            Balance::LeastConn => self.least_conn(farm, &eligible),
            Balance::First => self.first(farm, &eligible),
            Balance::Source => self.source(farm, client, &eligible),
        };
        match found {
            Pick::None => self.backup(farm, &eligible),
            other => other,
        }
    }

    fn round_robin(&self, farm: &Farm, eligible: &dyn Fn(usize) -> bool) -> Pick {
        let len = farm.table.len();
        if len == 0 {
            return Pick::None;
        }
        // Each look consumes a cursor position, also for skipped servers:
        // skipping without consuming would hand a disabled server's turns to
        // the server after it and skew the weights.
        for _ in 0..len {
            let idx = farm.table[self.cursor.fetch_add(1, Ordering::Relaxed) % len];
            if eligible(idx) && farm.servers[idx].try_take() {
                return Pick::Got(idx);
            }
        }
        // Other threads move the cursor too, so the loop may not have seen
        // every server: decide between "full" and "none" on the server list.
        full_or_none(farm, eligible)
    }

    fn least_conn(&self, farm: &Farm, eligible: &dyn Fn(usize) -> bool) -> Pick {
        let n = farm.active.len();
        if n == 0 {
            return Pick::None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        // Another thread can fill the chosen server between the choice and
        // the take: choose again a few times before queueing.
        for _ in 0..4 {
            let mut best: Option<(usize, u64, u64)> = None; // (idx, load + 1, weight)
            let mut any = false;
            for j in 0..n {
                let idx = farm.active[(start + j) % n];
                if !eligible(idx) {
                    continue;
                }
                any = true;
                let s = &farm.servers[idx];
                if !s.has_room() {
                    continue;
                }
                let load = s.current() as u64 + 1;
                let w = u64::from(s.weight());
                // Compare load/weight without division.
                if best.is_none_or(|(_, bl, bw)| load * bw < bl * w) {
                    best = Some((idx, load, w));
                }
            }
            match best {
                None if any => return Pick::Full(None),
                None => return Pick::None,
                Some((idx, _, _)) if farm.servers[idx].try_take() => return Pick::Got(idx),
                Some(_) => {}
            }
        }
        Pick::Full(None)
    }

    fn first(&self, farm: &Farm, eligible: &dyn Fn(usize) -> bool) -> Pick {
        let mut any = false;
        for &idx in farm.active.iter() {
            if !eligible(idx) {
                continue;
            }
            any = true;
            if farm.servers[idx].try_take() {
                return Pick::Got(idx);
            }
        }
        if any {
            Pick::Full(None)
        } else {
            Pick::None
        }
    }

    fn source(&self, farm: &Farm, client: IpAddr, eligible: &dyn Fn(usize) -> bool) -> Pick {
        let len = farm.table.len();
        if len == 0 {
            return Pick::None;
        }
        // A server out of service hands its clients to the next entries of
        // the table; the other clients keep their server.
        let start = (hash_ip(client) % len as u64) as usize;
        for j in 0..len {
            let idx = farm.table[(start + j) % len];
            if eligible(idx) {
                return if farm.servers[idx].try_take() {
                    Pick::Got(idx)
                } else {
                    Pick::Full(Some(idx))
                };
            }
        }
        Pick::None
    }

    /// Only the first usable backup is used, as HAProxy does by default.
    fn backup(&self, farm: &Farm, eligible: &dyn Fn(usize) -> bool) -> Pick {
        match farm.backups.iter().copied().find(|&i| eligible(i)) {
            Some(idx) if farm.servers[idx].try_take() => Pick::Got(idx),
            Some(_) => Pick::Full(None),
            None => Pick::None,
        }
    }
}

fn full_or_none(farm: &Farm, eligible: &dyn Fn(usize) -> bool) -> Pick {
    if farm.active.iter().any(|&i| eligible(i)) {
        Pick::Full(None)
    } else {
        Pick::None
    }
}

/// Spreads servers over a table, each `weight / gcd` times, so that each
/// server's entries are evenly spaced: entry k of a server of weight w sits
/// at position (k + 1/2) / w of the cycle; ties go to the earlier server.
fn spread(servers: &[(usize, u32)]) -> Vec<usize> {
    let g = servers.iter().fold(0u32, |g, &(_, w)| gcd(g, w));
    if g == 0 {
        return Vec::new();
    }
    let mut entries: Vec<(usize, u64, u64)> = Vec::new(); // (server, 2k + 1, 2w)
    for (order, &(_, w)) in servers.iter().enumerate() {
        let w = u64::from(w / g);
        for k in 0..w {
            entries.push((order, 2 * k + 1, 2 * w));
        }
    }
    entries.sort_by(|a, b| match (a.1 * b.2).cmp(&(b.1 * a.2)) {
        CmpOrdering::Equal => a.0.cmp(&b.0),
        o => o,
    });
    entries
        .into_iter()
        .map(|(order, _, _)| servers[order].0)
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A fixed (run-to-run stable) hash of an address: IPv4-mapped IPv6 hashes
/// as its IPv4 address, then a 64-bit finalizer spreads the bits.
pub(crate) fn hash_ip(ip: IpAddr) -> u64 {
    let v: u128 = match ip.to_canonical() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let mut z = (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
    // splitmix64's finalizer.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_weighted_and_smooth() {
        let t = spread(&[(0, 5), (1, 1), (2, 1)]);
        assert_eq!(t.len(), 7);
        assert_eq!(t.iter().filter(|&&i| i == 0).count(), 5);
        // The weight-1 servers are not bunched at either end.
        assert_eq!(t, vec![0, 0, 0, 1, 2, 0, 0]);
        // Weights are reduced by their GCD.
        assert_eq!(spread(&[(3, 20), (4, 10)]), vec![3, 4, 3]);
        assert_eq!(spread(&[(0, 1), (1, 1)]), vec![0, 1]);
        assert!(spread(&[]).is_empty());
        assert_eq!(spread(&[(0, 300), (1, 100)]), vec![0, 0, 1, 0]);
        // Nearly equal weights alternate: no three entries in a row go to
        // the same server.
        let t = spread(&[(0, 256), (1, 255)]);
        assert_eq!(t.len(), 511);
        for w in t.windows(3) {
            assert!(w.contains(&0) && w.contains(&1), "{w:?}");
        }
    }

    #[test]
    fn hash_is_stable_and_spreads() {
        let a: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap_or(IpAddr::from([0u16; 8]));
        assert_eq!(hash_ip(a), hash_ip(mapped));
        let mut buckets = [0usize; 4];
        for i in 0..1000u32 {
            let ip = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            buckets[(hash_ip(ip) % 4) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| b > 180), "{buckets:?}");
    }
}
