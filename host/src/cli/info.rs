//! `show info`: the process's fields, in HAProxy 3.0's order and names.
//! Fields luahost has no equivalent for (SSL, compression, pipes, peers,
//! pools) are 0, as HAProxy reports them when unused.

use std::fmt::Write;

pub fn show_info(nbthread: usize) -> String {
    let s = crate::stats::snapshot();
    let up = s.uptime.as_secs();
    let version = env!("CARGO_PKG_VERSION");
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .saturating_sub(up);
    let mem = crate::lua::memory::used();
    let maxmem = crate::lua::memory::limit();
    let fields: Vec<(&str, String)> = vec![
        ("Name", "luahost".into()),
        ("Version", version.into()),
        ("Release_date", String::new()),
        ("Nbthread", nbthread.to_string()),
        ("Nbproc", "1".into()),
        ("Process_num", "1".into()),
        ("Pid", std::process::id().to_string()),
        (
            "Uptime",
            format!(
                "{}d {}h{:02}m{:02}s",
                up / 86400,
                (up / 3600) % 24,
                (up / 60) % 60,
                up % 60
            ),
        ),
        ("Uptime_sec", up.to_string()),
        ("Memmax_MB", (maxmem >> 20).to_string()),
        ("PoolAlloc_MB", "0".into()),
        ("PoolUsed_MB", "0".into()),
        ("PoolFailed", "0".into()),
        ("Ulimit-n", ulimit_n().to_string()),
        ("Maxsock", ulimit_n().to_string()),
        ("Maxconn", s.maxconn.to_string()),
        ("Hard_maxconn", s.maxconn.to_string()),
        ("CurrConns", s.curr_conns.to_string()),
        ("CumConns", s.cum_conns.to_string()),
        ("CumReq", s.cum_req.to_string()),
        ("MaxSslConns", "0".into()),
        ("CurrSslConns", "0".into()),
        ("CumSslConns", "0".into()),
        ("Maxpipes", "0".into()),
        ("PipesUsed", "0".into()),
        ("PipesFree", "0".into()),
        ("ConnRate", "0".into()),
        ("ConnRateLimit", "0".into()),
        ("MaxConnRate", "0".into()),
        ("SessRate", "0".into()),
        ("SessRateLimit", "0".into()),
        ("MaxSessRate", "0".into()),
        ("SslRate", "0".into()),
        ("SslRateLimit", "0".into()),
        ("MaxSslRate", "0".into()),
        ("SslFrontendKeyRate", "0".into()),
        ("SslFrontendMaxKeyRate", "0".into()),
        ("SslFrontendSessionReuse_pct", "0".into()),
        ("SslBackendKeyRate", "0".into()),
        ("SslBackendMaxKeyRate", "0".into()),
        ("SslCacheLookups", "0".into()),
        ("SslCacheMisses", "0".into()),
        ("CompressBpsIn", "0".into()),
        ("CompressBpsOut", "0".into()),
        ("CompressBpsRateLim", "0".into()),
        ("Tasks", "0".into()),
        ("Run_queue", "0".into()),
        ("Idle_pct", "100".into()),
        ("node", crate::stats::node()),
        ("Stopping", "0".into()),
        ("Jobs", s.curr_conns.to_string()),
        ("Unstoppable Jobs", "0".into()),
        ("Listeners", "0".into()),
        ("ActivePeers", "0".into()),
        ("ConnectedPeers", "0".into()),
        ("DroppedLogs", "0".into()),
        ("BusyPolling", "0".into()),
        ("FailedResolutions", "0".into()),
        ("TotalBytesOut", "0".into()),
        ("TotalSplicedBytesOut", "0".into()),
        ("BytesOutRate", "0".into()),
        ("DebugCommandsIssued", "0".into()),
        ("CumRecvLogs", "0".into()),
        ("Build info", version.into()),
        ("Memmax_bytes", maxmem.to_string()),
        ("PoolAlloc_bytes", mem.to_string()),
        ("PoolUsed_bytes", mem.to_string()),
        ("Start_time_sec", start.to_string()),
        ("Tainted", "0".into()),
        ("TotalWarnings", "0".into()),
        ("MaxconnReached", "0".into()),
        ("BootTime_ms", "0".into()),
        ("Niced_tasks", "0".into()),
        ("CurrStreams", s.curr_conns.to_string()),
        ("CumStreams", s.cum_conns.to_string()),
        ("BlockedTrafficWarnings", "0".into()),
    ];
    let mut out = String::new();
    for (k, v) in fields {
        let _ = writeln!(out, "{k}: {v}");
    }
    out
}

fn ulimit_n() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        0
    }
}
