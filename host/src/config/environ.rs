//! `setenv`, `presetenv`, `unsetenv` and `resetenv`: the environment as the
//! configuration changes it, line by line.
//!
//! HAProxy applies these to its own environment while it parses, so a
//! change is visible to `${VAR}` and `defined()` on the lines below it and,
//! later, to `os.getenv` in Lua. luahost does the same in two steps: while
//! parsing, [`Overlay`] answers variable look-ups with the changes so far
//! (parsing never touches the process); at start-up the recorded
//! [`EnvOp`]s are applied to the process environment in order
//! ([`apply`]), before any thread or Lua state exists.

use super::lexer::Env;
use std::borrow::Cow;
use std::collections::HashMap;

/// One environment change, in configuration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvOp {
    /// `setenv NAME VALUE`, or a `presetenv` whose variable was unset.
    Set(String, String),
    /// `unsetenv NAME`.
    Unset(String),
    /// `resetenv [NAME...]`: every variable but the listed ones is removed.
    Reset(Vec<String>),
}

/// The environment seen by the parser: the base one plus the changes read
/// so far.
pub(crate) struct Overlay<'e> {
    base: &'e dyn Env,
    /// Variables changed since the start (or the last `resetenv`); `None`
    /// means removed.
    changed: HashMap<String, Option<String>>,
    /// A `resetenv` was read: variables not in `changed` are gone.
    cleared: bool,
    /// What to replay on the process at start-up.
    pub(crate) ops: Vec<EnvOp>,
}

impl<'e> Overlay<'e> {
    pub(crate) fn new(base: &'e dyn Env) -> Overlay<'e> {
        Overlay {
            base,
            changed: HashMap::new(),
            cleared: false,
            ops: Vec::new(),
        }
    }

    /// Handles an environment keyword; `None` when `words[0]` is not one.
    pub(crate) fn keyword(&mut self, words: &[&str]) -> Option<Result<(), String>> {
        let kw = *words.first()?;
        Some(match kw {
            "setenv" | "presetenv" => match words {
                [_, name, value] => {
                    if kw == "setenv" || self.var(name).is_none() {
                        self.set(name, value);
                    }
                    Ok(())
                }
                [_, _, _, extra, ..] => Err(format!(
                    "'{kw}' does not take the argument '{extra}' (quote the value if it contains spaces)"
                )),
                _ => Err(format!("'{kw}' expects a name and a value.")),
            },
            "unsetenv" => {
                if words.len() < 2 {
                    return Some(Err("'unsetenv' expects at least one variable name.".into()));
                }
                for name in &words[1..] {
                    self.changed.insert(name.to_string(), None);
                    self.ops.push(EnvOp::Unset(name.to_string()));
                }
                Ok(())
            }
            "resetenv" => {
                let keep: Vec<String> = words[1..].iter().map(|w| w.to_string()).collect();
                let kept: HashMap<String, Option<String>> = keep
                    .iter()
                    .map(|n| (n.clone(), self.var(n).map(Cow::into_owned)))
                    .collect();
                self.changed = kept;
                self.cleared = true;
                self.ops.push(EnvOp::Reset(keep));
                Ok(())
            }
            _ => return None,
        })
    }

    fn set(&mut self, name: &str, value: &str) {
        self.changed
            .insert(name.to_string(), Some(value.to_string()));
        self.ops
            .push(EnvOp::Set(name.to_string(), value.to_string()));
    }
}

impl Env for Overlay<'_> {
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.changed.get(name) {
            Some(v) => v.as_deref().map(Cow::Borrowed),
            None if self.cleared => None,
            None => self.base.var(name),
        }
    }
}

/// Applies `ops` to the process environment. Call it only while the process
/// has a single thread (environment writes race with reads elsewhere).
pub fn apply(ops: &[EnvOp]) {
    for op in ops {
        match op {
            EnvOp::Set(name, value) => std::env::set_var(name, value),
            EnvOp::Unset(name) => std::env::remove_var(name),
            EnvOp::Reset(keep) => {
                for (name, _) in std::env::vars_os() {
                    if !keep.iter().any(|k| std::ffi::OsStr::new(k) == name) {
                        std::env::remove_var(name);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lexer::tests::MapEnv;

    fn get(o: &Overlay<'_>, n: &str) -> Option<String> {
        o.var(n).map(Cow::into_owned)
    }

    #[test]
    fn changes_apply_in_order() {
        let base = MapEnv::new(&[("A", "1"), ("B", "2"), ("C", "3")]);
        let mut o = Overlay::new(&base);
        let kw = |o: &mut Overlay<'_>, l: &str| {
            let w: Vec<&str> = l.split(' ').collect();
            o.keyword(&w).unwrap_or(Err("not a keyword".into()))
        };
        assert_eq!(kw(&mut o, "setenv A x"), Ok(()));
        assert_eq!(get(&o, "A").as_deref(), Some("x"));
        assert_eq!(kw(&mut o, "presetenv B y"), Ok(()));
        assert_eq!(get(&o, "B").as_deref(), Some("2"));
        assert_eq!(kw(&mut o, "presetenv D z"), Ok(()));
        assert_eq!(get(&o, "D").as_deref(), Some("z"));
        assert_eq!(kw(&mut o, "unsetenv A B"), Ok(()));
        assert_eq!(get(&o, "A"), None);
        assert_eq!(get(&o, "C").as_deref(), Some("3"));
        assert_eq!(kw(&mut o, "resetenv C D"), Ok(()));
        assert_eq!(get(&o, "C").as_deref(), Some("3"));
        assert_eq!(get(&o, "D").as_deref(), Some("z"));
        assert_eq!(kw(&mut o, "resetenv"), Ok(()));
        assert_eq!(get(&o, "C"), None);
        assert!(kw(&mut o, "setenv A").is_err());
        assert!(kw(&mut o, "unsetenv").is_err());
        assert!(o.keyword(&["maxconn", "1"]).is_none());
        assert_eq!(o.ops.len(), 6);
    }
}
