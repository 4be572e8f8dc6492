//! `global` keywords about the process itself (daemon, privileges, chroot,
//! stop timers, CPU pinning, names) and HAProxy tunings that have no
//! meaning in luahost's design (accepted, listed once at start-up).

use super::units::time_arg;
use super::{Location, Process};
use std::ffi::CString;
use std::path::PathBuf;

/// How a no-effect keyword's arguments are checked (as HAProxy 3.0 does).
#[derive(Clone, Copy)]
pub(super) enum Args {
    /// No argument.
    None,
    /// `on` or `off`.
    OnOff,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// Exactly one value (HAProxy reads these with atoi/size parsers).
    One,
}

/// HAProxy 3.0 tunings that luahost accepts without effect: they steer
/// HAProxy's poller, scheduler, memory pools, pipes or zero-copy paths,
/// none of which luahost has. Each is documented in docs/configuration.md.
/// The flag marks HAProxy's experimental directives, which need
/// `expose-experimental-directives` above them.
pub(super) const NO_EFFECT: &[(&str, Args, bool)] = &[
    ("busy-polling", Args::None, false),
    ("fd-hard-limit", Args::One, false),
    ("max-spread-checks", Args::One, false),
    ("maxpipes", Args::One, false),
    ("no-memory-trimming", Args::None, false),
    ("noepoll", Args::None, false),
    ("noevports", Args::None, false),
    ("nogetaddrinfo", Args::None, false),
    ("nokqueue", Args::None, false),
    ("nopoll", Args::None, false),
    ("noreuseport", Args::None, false),
    ("nosplice", Args::None, false),
    ("numa-cpu-mapping", Args::None, false),
    ("prealloc-fd", Args::None, false),
    (
        "profiling.tasks",
        Args::Choice(&["on", "auto", "off"]),
        false,
    ),
    ("set-dumpable", Args::None, false),
    ("strict-limits", Args::None, false),
    ("tune.applet.zero-copy-forwarding", Args::OnOff, false),
    ("tune.buffers.limit", Args::One, false),
    ("tune.buffers.reserve", Args::One, false),
    ("tune.disable-fast-forward", Args::None, true),
    ("tune.disable-zero-copy-forwarding", Args::None, false),
    ("tune.events.max-events-at-once", Args::One, false),
    ("tune.fd.edge-triggered", Args::OnOff, true),
    ("tune.h1.zero-copy-fwd-recv", Args::OnOff, false),
    ("tune.h1.zero-copy-fwd-send", Args::OnOff, false),
    ("tune.idle-pool.shared", Args::OnOff, false),
    ("tune.idletimer", Args::One, false),
    ("tune.maxaccept", Args::One, false),
    ("tune.maxpollevents", Args::One, false),
    ("tune.memory.hot-size", Args::One, false),
    ("tune.pattern.cache-size", Args::One, false),
    ("tune.pipesize", Args::One, false),
    ("tune.pool-high-fd-ratio", Args::One, false),
    ("tune.pool-low-fd-ratio", Args::One, false),
    ("tune.pt.zero-copy-forwarding", Args::OnOff, false),
    ("tune.recv_enough", Args::One, false),
    ("tune.ring.queues", Args::One, false),
    ("tune.runqueue-depth", Args::One, false),
    ("tune.sched.low-latency", Args::OnOff, false),
];

/// The process keywords this module reads.
pub(super) const PROCESS: &[&str] = &[
    "daemon",
    "expose-experimental-directives",
    "master-worker",
    "user",
    "group",
    "uid",
    "gid",
    "chroot",
    "crt-base",
    "ca-base",
    "hard-stop-after",
    "grace",
    "node",
    "description",
    "cpu-map",
    "setenv",
    "presetenv",
    "unsetenv",
    "resetenv",
];

/// Whether `kw` is a `global` keyword of this module (or an environment
/// one), so that a proxy section can say where it belongs.
pub(crate) fn is_keyword(kw: &str) -> bool {
    PROCESS.contains(&kw) || NO_EFFECT.iter().any(|(k, _, _)| *k == kw)
}

/// The names of the no-effect keywords, for docs and tests.
#[cfg(test)]
pub(crate) fn no_effect_keywords() -> impl Iterator<Item = &'static str> {
    NO_EFFECT.iter().map(|(k, _, _)| *k)
}

/// Handles a process keyword; `None` when `words[0]` is not one. A
/// `Some(Ok(Some(text)))` is accepted with a warning, as HAProxy does for a
/// `uid`/`gid` that is not a number.
pub(crate) fn keyword(
    p: &mut Process,
    words: &[&str],
    loc: &Location,
) -> Option<Result<Option<String>, String>> {
    let kw = *words.first()?;
    let arg = words.get(1).copied();
    let one = |what: &str| -> Result<&str, String> {
        match (arg, words.get(2)) {
            (Some(a), None) if !a.is_empty() => Ok(a),
            (Some(_), Some(extra)) => Err(format!("'{kw}' does not take the argument '{extra}'")),
            _ => Err(format!("'{kw}' expects {what} as an argument.")),
        }
    };
    let result = match kw {
        "daemon" => no_args(words).map(|()| p.daemon = true),
        "expose-experimental-directives" => no_args(words).map(|()| p.experimental = true),
        "master-worker" => match words.get(1) {
            Some(&"no-exit-on-failure") => Err(
                "'master-worker no-exit-on-failure' is not supported by luahost: the master \
                 exits when its worker dies, so that a service manager restarts it"
                    .to_string(),
            ),
            _ => no_args(words).map(|()| p.master_worker = true),
        },
        "user" => one("a user name").and_then(|name| {
            user_id(name)
                .map(|uid| p.uid = Some(uid))
                .ok_or_else(|| format!("cannot find user id for '{name}'"))
        }),
        "group" => one("a group name").and_then(|name| {
            group_id(name)
                .map(|gid| p.gid = Some(gid))
                .ok_or_else(|| format!("cannot find group id for '{name}'"))
        }),
        "uid" | "gid" => {
            let v = match one("an integer") {
                Ok(v) => v,
                Err(e) => return Some(Err(e)),
            };
            // As HAProxy: a C integer cast to uid_t/gid_t (so -1 is
            // 4294967295); anything else is only a warning and no change.
            let Ok(id) = v.parse::<i32>() else {
                return Some(Ok(Some(format!(
                    "{kw}: string '{v}' is not a number; the line is ignored (use '{}' for a name)",
                    if kw == "uid" { "user" } else { "group" }
                ))));
            };
            if kw == "uid" {
                p.uid = Some(id as u32);
            } else {
                p.gid = Some(id as u32);
            }
            Ok(())
        }
        "chroot" => one("a directory").map(|d| p.chroot = Some(PathBuf::from(d))),
        "crt-base" => one("a directory path").map(|d| p.crt_base = Some(d.to_string())),
        "ca-base" => one("a directory path").map(|d| p.ca_base = Some(d.to_string())),
        // HAProxy ignores words after the time for these two.
        "hard-stop-after" => time_arg(kw, arg).map(|t| p.hard_stop_after = Some(t)),
        "grace" => time_arg(kw, arg).map(|t| p.grace = Some(t)),
        "node" => one("a node name").and_then(|n| {
            let ok = n
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
            if ok {
                p.node = Some(n.to_string());
                Ok(())
            } else {
                Err(format!(
                    "'node' requires a valid node name: digits, letters, dot, hyphen or underscore; got '{n}'"
                ))
            }
        }),
        "description" => match words.get(1..) {
            Some(rest) if !rest.is_empty() => {
                p.description = Some(rest.join(" "));
                Ok(())
            }
            _ => Err("'description' expects a string argument.".to_string()),
        },
        "cpu-map" => cpu_map(words).map(|mut maps| p.cpu_map.append(&mut maps)),
        _ => {
            let &(_, args, experimental) = NO_EFFECT.iter().find(|(k, _, _)| *k == kw)?;
            no_effect(kw, args, words).and_then(|()| {
                if experimental && !p.experimental {
                    return Err(format!(
                        "'{kw}' directive is experimental, must be allowed via a global 'expose-experimental-directives'"
                    ));
                }
                if !p.no_effect.iter().any(|(k, _)| k == kw) {
                    p.no_effect.push((kw.to_string(), loc.clone()));
                }
                Ok(())
            })
        }
    };
    Some(result.map(|()| None))
}

fn no_args(words: &[&str]) -> Result<(), String> {
    match words.get(1) {
        None => Ok(()),
        Some(extra) => Err(format!(
            "'{}' cannot handle unexpected argument '{extra}'.",
            words[0]
        )),
    }
}

fn at_most(words: &[&str], n: usize) -> Result<(), String> {
    super::global::at_most(words, n)
}

fn no_effect(kw: &str, args: Args, words: &[&str]) -> Result<(), String> {
    let arg = words.get(1).copied().unwrap_or_default();
    match args {
        Args::None => no_args(words),
        Args::OnOff | Args::Choice(_) => {
            let choices: &[&str] = match args {
                Args::Choice(c) => c,
                _ => &["on", "off"],
            };
            if !choices.contains(&arg) {
                let list = choices
                    .iter()
                    .map(|c| format!("'{c}'"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                return Err(format!("'{kw}' expects either {list} but got '{arg}'."));
            }
            at_most(words, 2)
        }
        Args::One => {
            if arg.is_empty() {
                return Err(format!("'{kw}' expects an argument."));
            }
            at_most(words, 2)
        }
    }
}

pub(crate) fn user_id(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: getpwnam reads a NUL-terminated string and returns a pointer
    // to static storage (or null), read at once on this thread; parsing
    // runs before any other thread exists.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    // SAFETY: a non-null result points to a valid passwd record.
    (!pw.is_null()).then(|| unsafe { (*pw).pw_uid })
}

pub(crate) fn group_id(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: as in `user_id`, for the group database.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    // SAFETY: a non-null result points to a valid group record.
    (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
}

/// The most threads and CPUs `cpu-map` names, as HAProxy's 3.0 limits.
const MAX_THREADS: u32 = 64;
const MAX_CPUS: u32 = 64;

/// One `cpu-map` binding: worker thread number (1-based, in thread group
/// 1) to the CPUs it may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMap {
    pub thread: u32,
    pub cpus: Vec<u32>,
}

/// Reads `cpu-map [auto:]GROUP[/THREADS] CPUSET...`. GROUP and THREADS are
/// a number, a range `a-b`, `all`, `odd` or `even`; a CPU set is a list of
/// numbers and ranges separated by commas or blanks. With `auto:` the
/// threads are bound one to one to the CPUs in order; otherwise every
/// thread gets the whole set. luahost has one thread group: bindings for
/// other groups are accepted and ignored, as threads there do not exist.
fn cpu_map(words: &[&str]) -> Result<Vec<CpuMap>, String> {
    let usage = "cpu-map expects a thread group number ('all', 'odd', 'even', a number from 1 to 64 or a range), followed by a list of CPU ranges with numbers from 0 to 63.";
    let (Some(spec), Some(_)) = (words.get(1), words.get(2)) else {
        return Err(usage.to_string());
    };
    let (auto, spec) = match spec.strip_prefix("auto:") {
        Some(s) => (true, s),
        None => (false, *spec),
    };
    let (group, threads) = match spec.split_once('/') {
        Some((g, t)) => (g, Some(t)),
        None => (spec, None),
    };
    let groups = id_set(group, 1, MAX_THREADS)?;
    // A lone group number stands for all the threads of the group.
    let by_group = threads.is_none();
    let threads = match threads {
        Some(t) => id_set(t, 1, MAX_THREADS)?,
        None => (1..=MAX_THREADS).collect(),
    };
    let mut cpus = Vec::new();
    for w in &words[2..] {
        for part in w.split(',').filter(|p| !p.is_empty()) {
            for c in id_set(part, 0, MAX_CPUS - 1)? {
                if !cpus.contains(&c) {
                    cpus.push(c);
                }
            }
        }
    }
    cpus.sort_unstable();
    let auto_set = if by_group { &groups } else { &threads };
    if auto && auto_set.len() != cpus.len() {
        return Err(
            "cpu-map : TGROUP/THREAD range and CPU sets must have the same size to be automatically bound"
                .to_string(),
        );
    }
    let Some(group_index) = groups.iter().position(|&g| g == 1) else {
        return Ok(Vec::new());
    };
    Ok(threads
        .iter()
        .enumerate()
        .map(|(i, &thread)| CpuMap {
            thread,
            cpus: match (auto, by_group) {
                (false, _) => cpus.clone(),
                (true, false) => vec![cpus[i]],
                (true, true) => vec![cpus[group_index]],
            },
        })
        .collect())
}

/// A number, range `a-b`, `all`, `odd` or `even` within `min..=max`.
fn id_set(s: &str, min: u32, max: u32) -> Result<Vec<u32>, String> {
    let bad = || {
        format!(
            "cpu-map : '{s}' is not a valid number/range. It supports numbers from {min} to {max}."
        )
    };
    let all = min..=max;
    Ok(match s {
        "all" => all.collect(),
        "odd" => all.filter(|n| n % 2 == 1).collect(),
        "even" => all.filter(|n| n % 2 == 0).collect(),
        _ => {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let a: u32 = a.parse().map_err(|_| bad())?;
            let b: u32 = if b.is_empty() {
                max
            } else {
                b.parse().map_err(|_| bad())?
            };
            if a < min || b > max || a > b {
                return Err(bad());
            }
            (a..=b).collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(line: &str) -> Result<Vec<(u32, Vec<u32>)>, String> {
        let w: Vec<&str> = line.split(' ').collect();
        cpu_map(&w).map(|v| v.into_iter().map(|m| (m.thread, m.cpus)).collect())
    }

    #[test]
    fn cpu_map_syntax() {
        assert_eq!(
            map("cpu-map auto:1/1-2 0-1"),
            Ok(vec![(1, vec![0]), (2, vec![1])])
        );
        assert_eq!(map("cpu-map 1/1 0"), Ok(vec![(1, vec![0])]));
        assert_eq!(
            map("cpu-map 1/all 0,1"),
            Ok((1..=64).map(|t| (t, vec![0, 1])).collect())
        );
        assert_eq!(map("cpu-map 1/2 3 1"), Ok(vec![(2, vec![1, 3])]));
        assert_eq!(map("cpu-map 2/1 0"), Ok(vec![]));
        assert_eq!(map("cpu-map 1 0").map(|v| v.len()), Ok(64));
        assert_eq!(map("cpu-map 1/1- 0-").map(|v| v[0].1.len()), Ok(64));
        assert!(map("cpu-map 1/x 0").is_err());
        assert!(map("cpu-map auto:1/all 0-1").is_err());
        assert!(map("cpu-map").is_err());
        assert!(map("cpu-map 1/1 64").is_err());
    }
}
