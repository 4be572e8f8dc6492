//! One CLI session: read commands, run them, write the answers with
//! HAProxy's framing (see `protocol`), until `quit`, the end of a line
//! outside prompt mode, the client's close, or `stats timeout`.

use super::commands::{self, Builtin, Command, CommandKind};
use super::protocol;
use super::Shared;
use crate::config::CliLevel;
use crate::lua::applet_tcp::AppletStream;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What running a command produced.
pub enum Answer {
    /// Text to send (already framed as HAProxy frames it, see `say`/`err`).
    Text(String),
    /// `quit`: close without a prompt.
    Quit,
    /// A `core.register_cli` command: runs on the session's socket.
    Lua(Vec<String>),
}

/// A message answer (errors and notices): exactly one trailing newline.
pub fn say(text: &str) -> Answer {
    Answer::Text(protocol::message(text))
}

/// The per-session state commands may change.
pub struct Session {
    pub level: CliLevel,
    pub prompt: bool,
    /// `prompt timed`: the prompt shows the uptime.
    pub timed: bool,
}

/// Serves one client until the session ends.
pub async fn serve(
    shared: Arc<Shared>,
    stream: AppletStream,
    level: CliLevel,
    peer: std::net::SocketAddr,
) {
    let mut stream = stream;
    let mut buf = BytesMut::new();
    let mut eof = false;
    let mut sess = Session {
        level,
        prompt: false,
        timed: false,
    };
    let timeout = shared.timeout;
    let limit = crate::proxy::bufsize();
    // Answers not sent yet: the answers to the commands that arrived
    // together go out in one write, sent when the session must wait for
    // more input (or ends), not one write per command.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        // The next complete command.
        let (cmd, term) = loop {
            if let Some(found) = protocol::next_command(&mut buf) {
                break found;
            }
            if !pending.is_empty() {
                // Let the tasks the commands woke run first (an event
                // subscriber's callback, on this same worker), then answer.
                tokio::task::yield_now().await;
                if !flush(&mut stream, &mut pending).await {
                    return;
                }
            }
            if buf.len() >= limit {
                let msg = protocol::message("The command is too big for the buffer size. Please change tune.bufsize in the configuration to use a bigger command.");
                let _ = stream.write_all(msg.as_bytes()).await;
                return;
            }
            if eof {
                // An unterminated command at the end is not run (HAProxy).
                return;
            }
            // Room for a whole command: read_buf reads only into the spare
            // capacity, and a nearly full buffer would take one command in
            // several reads.
            buf.reserve(READ_ROOM);
            match tokio::time::timeout(timeout, stream.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => eof = true,
                Ok(Ok(_)) => {}
                Err(_) => return,
            }
        };
        let words = protocol::words(&cmd);
        let answer = if words.is_empty() {
            Answer::Text(String::new())
        } else {
            run(&shared, &mut sess, &words)
        };
        let text = match answer {
            Answer::Text(t) => t,
            Answer::Quit => {
                let _ = flush(&mut stream, &mut pending).await;
                let _ = stream.shutdown().await;
                return;
            }
            Answer::Lua(path) => {
                // The Lua command writes on the socket itself: what the
                // earlier commands answered goes first.
                if !flush(&mut stream, &mut pending).await {
                    return;
                }
                match super::lua_cli::run(path, words, stream, buf, peer).await {
                    Some((s, rest, client_done)) => {
                        stream = s;
                        buf = rest;
                        eof = eof || client_done;
                    }
                    None => return,
                }
                String::new()
            }
        };
        pending.extend_from_slice(text.as_bytes());
        let uptime = sess
            .timed
            .then(|| crate::stats::snapshot().uptime.as_secs());
        pending.extend_from_slice(protocol::after_answer(sess.prompt, uptime).as_bytes());
        if pending.len() >= FLUSH_AT && !flush(&mut stream, &mut pending).await {
            return;
        }
        if protocol::ends_session(sess.prompt, term) {
            let _ = flush(&mut stream, &mut pending).await;
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// The spare room kept in the input buffer before each read.
const READ_ROOM: usize = 4096;

/// Pending answers past this size are sent without waiting for the input
/// to run dry (a long series of `show stat`).
const FLUSH_AT: usize = 64 * 1024;

/// Sends the pending answers; false when the client is gone.
async fn flush(stream: &mut AppletStream, pending: &mut Vec<u8>) -> bool {
    if pending.is_empty() {
        return true;
    }
    let ok = stream.write_all(pending).await.is_ok();
    pending.clear();
    ok
}

/// Finds and runs the command of `words`.
fn run(shared: &Shared, sess: &mut Session, words: &[String]) -> Answer {
    let table = &shared.table;
    let Some(cmd) = commands::find(table, words) else {
        return say(&commands::usage_message(table, words, false));
    };
    if sess.level < cmd.level {
        return say("Permission denied");
    }
    match &cmd.kind {
        CommandKind::Lua => Answer::Lua(cmd.words.clone()),
        CommandKind::Builtin(b) => builtin(shared, sess, cmd, *b, words),
    }
}

fn builtin(
    shared: &Shared,
    sess: &mut Session,
    cmd: &Command,
    b: Builtin,
    words: &[String],
) -> Answer {
    match b {
        Builtin::Help => say(&commands::usage_message(&shared.table, words, true)),
        Builtin::Prompt => {
            // As HAProxy: `prompt timed` turns prompt mode on and toggles
            // the uptime; `prompt` toggles prompt mode.
            if words.get(1).map(String::as_str) == Some("timed") {
                sess.prompt = true;
                sess.timed = !sess.timed;
            } else {
                sess.prompt = !sess.prompt;
            }
            Answer::Text(String::new())
        }
        Builtin::Quit => Answer::Quit,
        Builtin::ShowCliLevel => say(sess.level.name()),
        Builtin::LowerToOperator | Builtin::LowerToUser => {
            let to = if b == Builtin::LowerToOperator {
                CliLevel::Operator
            } else {
                CliLevel::User
            };
            // Only lowering: asking for more than the session has is refused.
            if sess.level < to {
                return say("Permission denied");
            }
            sess.level = to;
            Answer::Text(String::new())
        }
        Builtin::ShowInfo => Answer::Text(super::info::show_info(shared.nbthread)),
        Builtin::ShowSess => Answer::Text(show_sess()),
        _ => super::servers::run(shared, cmd, b, words),
    }
}

/// `show sess`: the open client connections, one line each, in a short
/// form of HAProxy's (docs/runtime-api.md).
fn show_sess() -> String {
    let mut out = String::new();
    for (id, src, fe, age) in crate::stats::sessions() {
        let proto = if src.is_ipv4() { "tcpv4" } else { "tcpv6" };
        out.push_str(&format!(
            "0x{id:x}: proto={proto} src={src} fe={fe} be=<NONE> srv=<none> age={}\n",
            human_time(age.as_secs())
        ));
    }
    out
}

/// HAProxy's `human_time`: the two largest units, e.g. `42s`, `1m30s`,
/// `2h5m`, `3d4h`.
fn human_time(s: u64) -> String {
    let (d, h, m, sec) = (s / 86400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}
