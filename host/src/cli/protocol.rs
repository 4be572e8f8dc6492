//! HAProxy's CLI wire protocol, without I/O: cutting the input into
//! commands, cutting a command into words, and what follows each answer.
//!
//! - A command ends at an unescaped `\n` or `;`; a trailing `\r` is dropped.
//!   A command without its terminator at the end of the input is never run
//!   (HAProxy drops it too).
//! - Words are separated by spaces and tabs; a backslash makes the next
//!   character literal (`\;`, `\ `, `\\`).
//! - Every answer ends with one empty line (`\n`), or with `\n> ` in prompt
//!   mode. Outside prompt mode, the session ends after the command that
//!   ended a line, so `echo "show stat" | socat ...` gets one answer; the
//!   commands of one line (`a; b`) all run.

use bytes::BytesMut;

/// What ended a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminator {
    Newline,
    Semicolon,
}

/// Takes the next complete command out of `buf`: its text (without the
/// terminator and a trailing `\r`, escapes kept) and what ended it. `None`
/// when no complete command is buffered yet.
pub fn next_command(buf: &mut BytesMut) -> Option<(Vec<u8>, Terminator)> {
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'\\' => i += 2,
            b'\n' | b';' => {
                let term = if buf[i] == b'\n' {
                    Terminator::Newline
                } else {
                    Terminator::Semicolon
                };
                let mut cmd = buf.split_to(i + 1).to_vec();
                cmd.pop();
                if cmd.last() == Some(&b'\r') {
                    cmd.pop();
                }
                return Some((cmd, term));
            }
            _ => i += 1,
        }
    }
    None
}

/// The words of a command, unescaped as HAProxy does: `\x` is `x`, `\\` is
/// a backslash.
pub fn words(cmd: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut in_word = false;
    let mut i = 0;
    while i < cmd.len() {
        let c = cmd[i];
        match c {
            b' ' | b'\t' => {
                if in_word {
                    out.push(String::from_utf8_lossy(&cur).into_owned());
                    cur.clear();
                    in_word = false;
                }
            }
            b'\\' => {
                in_word = true;
                if let Some(&next) = cmd.get(i + 1) {
                    cur.push(next);
                    i += 1;
                }
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
        i += 1;
    }
    if in_word {
        out.push(String::from_utf8_lossy(&cur).into_owned());
    }
    out
}

/// A message as HAProxy prints it: trailing newlines replaced by exactly one.
pub fn message(text: &str) -> String {
    let mut s = text.trim_end_matches('\n').to_string();
    s.push('\n');
    s
}

/// What follows an answer: `\n> ` in prompt mode (`\n[D:HH:MM:SS]> `
/// with `prompt timed`, the process's uptime), else `\n`.
pub fn after_answer(prompt: bool, timed: Option<u64>) -> String {
    match (prompt, timed) {
        (false, _) => "\n".to_string(),
        (true, None) => "\n> ".to_string(),
        (true, Some(up)) => format!(
            "\n[{}:{:02}:{:02}:{:02}]> ",
            up / 86400,
            (up / 3600) % 24,
            (up / 60) % 60,
            up % 60
        ),
    }
}

/// Whether the session ends after a command (not in prompt mode, and the
/// command ended its line).
pub fn ends_session(prompt: bool, term: Terminator) -> bool {
    !prompt && term == Terminator::Newline
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &str) -> Vec<(String, Terminator)> {
        let mut buf = BytesMut::from(input.as_bytes());
        let mut v = Vec::new();
        while let Some((c, t)) = next_command(&mut buf) {
            v.push((String::from_utf8(c).unwrap_or_default(), t));
        }
        v
    }

    #[test]
    fn commands_end_at_newline_or_semicolon() {
        let v = all("show info; show stat\r\nhelp");
        assert_eq!(
            v,
            vec![
                ("show info".to_string(), Terminator::Semicolon),
                (" show stat".to_string(), Terminator::Newline)
            ]
        );
    }

    #[test]
    fn escaped_semicolon_is_part_of_the_word() {
        let v = all("show\\;x backend\n");
        assert_eq!(v.len(), 1);
        assert_eq!(words(v[0].0.as_bytes()), vec!["show;x", "backend"]);
    }

    #[test]
    fn words_split_on_blanks() {
        assert_eq!(
            words(b"  set server\tbe/s1  state  drain "),
            vec!["set", "server", "be/s1", "state", "drain"]
        );
        assert_eq!(words(b"a\\ b c\\\\d"), vec!["a b", "c\\d"]);
        assert!(words(b"   ").is_empty());
    }

    #[test]
    fn messages_end_with_one_newline() {
        assert_eq!(message("No such server."), "No such server.\n");
        assert_eq!(message("x\n\n"), "x\n");
    }
}
