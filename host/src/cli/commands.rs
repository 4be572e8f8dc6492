//! The command table: words, help text and level of every command, the
//! `help` listing and the answer to an unknown command, as HAProxy words
//! them (usage lines copied from HAProxy 3.0 for the commands luahost has).

use crate::config::CliLevel;

/// What a built-in command does (dispatched in `session`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Help,
    Prompt,
    Quit,
    ShowCliLevel,
    LowerToOperator,
    LowerToUser,
    ShowInfo,
    ShowStat,
    ShowServersState,
    ShowBackend,
    ShowSess,
    AddServer,
    DelServer,
    EnableServer,
    DisableServer,
    EnableHealth,
    DisableHealth,
    SetServer,
    GetWeight,
    SetWeight,
    SetMaxconnServer,
    DisableFrontend,
    EnableFrontend,
    ShutdownFrontend,
    ShutdownSessionsServer,
}

/// A command: its leading words and what runs it.
#[derive(Debug, Clone)]
pub struct Command {
    pub words: Vec<String>,
    /// The `help` line; None for help/prompt/quit, always listed last.
    pub usage: Option<String>,
    /// The lowest level allowed to run it.
    pub level: CliLevel,
    pub kind: CommandKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandKind {
    Builtin(Builtin),
    /// A `core.register_cli` command (any level may run it, as in HAProxy).
    Lua,
}

const BUILTINS: &[(&[&str], Option<&str>, CliLevel, Builtin)] = {
    use Builtin::*;
    use CliLevel::*;
    &[
        (&["help"], None, User, Help),
        (&["prompt"], None, User, Prompt),
        (&["quit"], None, User, Quit),
        (&["show", "cli", "level"], Some("show cli level                          : display the level of the current CLI session"), User, ShowCliLevel),
        (&["operator"], Some("operator                                : lower the level of the current CLI session to operator"), User, LowerToOperator),
        (&["user"], Some("user                                    : lower the level of the current CLI session to user"), User, LowerToUser),
        (&["show", "info"], Some("show info [desc|json|typed|float]*      : report information about the running process"), User, ShowInfo),
        (&["show", "stat"], Some("show stat [desc|json|no-maint|typed|up]*: report counters for each proxy and server"), User, ShowStat),
        (&["show", "servers", "state"], Some("show servers state [<backend>]          : dump volatile server information (all or for a single backend)"), User, ShowServersState),
        (&["show", "backend"], Some("show backend                            : list backends in the current running config"), User, ShowBackend),
        (&["show", "sess"], Some("show sess [<id>|all|susp|older <age>]   : report the list of current sessions or dump this exact session"), Operator, ShowSess),
        (&["add", "server"], Some("add server <bk>/<srv>                   : create a new server"), Admin, AddServer),
        (&["del", "server"], Some("del server <bk>/<srv>                   : remove a dynamically added server"), Admin, DelServer),
        (&["disable", "health"], Some("disable health                          : disable health checks"), Admin, DisableHealth),
        (&["disable", "server"], Some("disable server (DEPRECATED)             : disable a server for maintenance (use 'set server' instead)"), Admin, DisableServer),
        (&["enable", "health"], Some("enable health                           : enable health checks"), Admin, EnableHealth),
        (&["enable", "server"], Some("enable server  (DEPRECATED)             : enable a disabled server (use 'set server' instead)"), Admin, EnableServer),
        (&["set", "maxconn", "server"], Some("set maxconn server <bk>/<srv>           : change a server's maxconn setting"), Admin, SetMaxconnServer),
        (&["set", "server"], Some("set server <bk>/<srv> [opts]            : change a server's state, weight, address or ssl"), Admin, SetServer),
        (&["disable", "frontend"], Some("disable frontend <frontend>             : temporarily disable specific frontend"), Admin, DisableFrontend),
        (&["enable", "frontend"], Some("enable frontend <frontend>              : re-enable specific frontend"), Admin, EnableFrontend),
        (&["shutdown", "frontend"], Some("shutdown frontend <frontend>            : stop a specific frontend"), Admin, ShutdownFrontend),
        (&["shutdown", "sessions", "server"], Some("shutdown sessions server <bk>/<srv>     : kill sessions on a server"), Admin, ShutdownSessionsServer),
        (&["get", "weight"], Some("get weight <bk>/<srv>                   : report a server's current weight"), User, GetWeight),
        (&["set", "weight"], Some("set weight <bk>/<srv>  (DEPRECATED)     : change a server's weight (use 'set server' instead)"), Admin, SetWeight),
    ]
};

/// The always-listed tail of `help` and of an unknown command's answer.
const TAIL: &str = "  help [<command>]                        : list matching or all commands\n  prompt [timed]                          : toggle interactive mode with prompt\n  quit                                    : disconnect\n";

/// HAProxy's limit on a command's leading words.
pub const MAX_WORDS: usize = 5;
const MAX_MATCHES: usize = 5;

/// The built-in commands followed by the Lua ones.
pub fn table(lua: &[(Vec<String>, String)]) -> Vec<Command> {
    let mut v: Vec<Command> = BUILTINS
        .iter()
        .map(|(w, usage, level, b)| Command {
            words: w.iter().map(|s| s.to_string()).collect(),
            usage: usage.map(str::to_string),
            level: *level,
            kind: CommandKind::Builtin(*b),
        })
        .collect();
    for (words, usage) in lua {
        v.push(Command {
            words: words.clone(),
            usage: Some(usage.clone()),
            level: CliLevel::User,
            kind: CommandKind::Lua,
        });
    }
    v
}

/// The command whose words all lead `args`, the longest such one (as
/// HAProxy's `cli_find_kw`, first match of the longest).
pub fn find<'a>(table: &'a [Command], args: &[String]) -> Option<&'a Command> {
    table
        .iter()
        .filter(|c| !c.words.is_empty() && c.words.len() <= args.len())
        .filter(|c| c.words.iter().zip(args).all(|(w, a)| w == a))
        .max_by_key(|c| c.words.len())
}

/// `help [words]` (`is_help`) or the answer to unknown command `args`.
pub fn usage_message(table: &[Command], args: &[String], is_help: bool) -> String {
    let args: &[String] = if is_help {
        &args[1.min(args.len())..]
    } else {
        args
    };
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    // The number of leading words some command matches exactly.
    let mut length = 0;
    for c in table {
        for (idx, w) in c.words.iter().enumerate().take(MAX_WORDS) {
            if arg(idx).is_empty() || w != arg(idx) {
                break;
            }
            length = length.max(idx + 1);
        }
    }
    let mut out = String::new();
    if is_help {
        out.push_str("The following commands are valid at this level:\n");
    } else {
        out.push_str(&format!("Unknown command: '{}'", arg(0)));
        if length == 0 && arg(0).is_empty() {
            out.push_str(". Please enter one of the following commands only:\n");
        } else {
            out.push_str(", but maybe one of the following ones is a better match:\n");
        }
    }
    let prefix_matches = |c: &Command| {
        let mut idx = 0;
        while idx < length {
            match c.words.get(idx) {
                None => break,
                Some(w) if arg(idx).is_empty() || w != arg(idx) => break,
                Some(_) => idx += 1,
            }
        }
        idx == length
    };
    let mut entries: Vec<&Command> = Vec::new();
    // Fuzzy matches on the words after the exact ones.
    if !arg(length).is_empty() {
        let mut matches: Vec<(usize, &Command)> = Vec::new();
        for c in table
            .iter()
            .filter(|c| c.usage.is_some() && prefix_matches(c))
        {
            let mut word_sig = Fingerprint::new();
            let mut totlen = 0;
            for a in args
                .iter()
                .skip(length)
                .take(MAX_WORDS.saturating_sub(length))
            {
                if a.is_empty() {
                    break;
                }
                word_sig.add(a);
                totlen += a.len();
            }
            let mut list_sig = Fingerprint::new();
            for w in c
                .words
                .iter()
                .skip(length)
                .take(MAX_WORDS.saturating_sub(length))
            {
                list_sig.add(w);
                totlen += w.len();
            }
            let dist = word_sig.distance(&list_sig);
            let worst = if matches.len() < MAX_MATCHES {
                usize::MAX
            } else {
                matches[MAX_MATCHES - 1].0
            };
            if dist < 5 * totlen / 2 && dist < worst {
                if matches.len() == MAX_MATCHES {
                    matches.pop();
                }
                // Insert after equal distances (HAProxy's stable insertion).
                let pos = matches
                    .iter()
                    .position(|(d, _)| *d > dist)
                    .unwrap_or(matches.len());
                matches.insert(pos, (dist, c));
            }
        }
        if let Some(&(best, _)) = matches.first() {
            for (d, c) in &matches {
                if *d > 5 * best / 2 {
                    break;
                }
                entries.push(c);
            }
        }
    }
    if entries.is_empty() {
        entries = table
            .iter()
            .filter(|c| c.usage.is_some() && prefix_matches(c))
            .collect();
    }
    entries.sort_by(|a, b| a.usage.cmp(&b.usage));
    for c in entries {
        out.push_str("  ");
        out.push_str(c.usage.as_deref().unwrap_or_default());
        out.push('\n');
    }
    out.push_str(TAIL);
    out
}

/// HAProxy's word fingerprint (tools.c): which letters occur and how often
/// each letter follows another; the distance between two is the sum of the
/// differences.
struct Fingerprint(Box<[u8; 1024]>);

impl Fingerprint {
    fn new() -> Fingerprint {
        Fingerprint(Box::new([0u8; 1024]))
    }

    fn add(&mut self, word: &str) {
        let mut from = 28;
        for b in word.bytes() {
            let to = match b.to_ascii_lowercase() {
                c @ b'a'..=b'z' => (c - b'a' + 1) as usize,
                b'0'..=b'9' => 27,
                _ => 28,
            };
            self.0[to] = 1;
            self.0[32 * from + to] = self.0[32 * from + to].wrapping_add(1);
            from = to;
        }
        self.0[32 * from + 28] = self.0[32 * from + 28].wrapping_add(1);
    }

    fn distance(&self, other: &Fingerprint) -> usize {
        self.0
            .iter()
            .zip(other.0.iter())
            .map(|(a, b)| (*a as i32 - *b as i32).unsigned_abs() as usize)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn longest_command_wins() {
        let t = table(&[]);
        let c = find(&t, &w("set maxconn server be/s1 3"));
        assert_eq!(
            c.map(|c| &c.kind),
            Some(&CommandKind::Builtin(Builtin::SetMaxconnServer))
        );
        assert!(find(&t, &w("show")).is_none());
    }

    #[test]
    fn help_lists_matching_commands_sorted() {
        let t = table(&[(w("hello world"), "say hello".to_string())]);
        let h = usage_message(&t, &w("help"), true);
        assert!(h.starts_with("The following commands are valid at this level:\n  add server"));
        assert!(h.contains("\n  say hello\n"));
        assert!(h.ends_with(TAIL));
        let h = usage_message(&t, &w("help show servers"), true);
        assert_eq!(
            h,
            format!("The following commands are valid at this level:\n  show servers state [<backend>]          : dump volatile server information (all or for a single backend)\n{TAIL}")
        );
    }

    #[test]
    fn unknown_command_proposes_close_ones() {
        let t = table(&[]);
        let m = usage_message(&t, &w("show backends"), false);
        assert!(m.starts_with("Unknown command: 'show', but maybe one of the following ones is a better match:\n  show backend "), "{m}");
    }
}
