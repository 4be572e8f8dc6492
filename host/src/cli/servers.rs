//! The commands that read or change backends and servers.

use super::commands::{Builtin, Command};
use super::session::{say, Answer, Session};
use super::Shared;

pub fn run(
    _shared: &Shared,
    _sess: &mut Session,
    _cmd: &Command,
    _b: Builtin,
    _words: &[String],
    _first: &str,
) -> Answer {
    say("Unknown command.")
}
