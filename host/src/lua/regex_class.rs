//! The Lua `Regex` class: `Regex.new(re, case_sensitive)` returns
//! `true, regex` or `false, reason`; `r:exec(s)` tells whether `s` matches;
//! `r:match(s)` also returns the whole match and the capture groups.
//!
//! Regexes use Rust's `regex` syntax (PCRE without look-around and
//! back-references); at most 20 groups are returned, as HAProxy does.

use crate::lua::class::{native, Class};
use mlua::{Lua, MultiValue, Table, Value};
use regex::bytes::{Regex, RegexBuilder};

/// The native side of a Regex object.
struct RegexObj(Regex);

/// HAProxy returns at most this many groups (the whole match included).
const MAX_GROUPS: usize = 20;

fn subject(v: &Value, func: &str) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(i) => Ok(i.to_string().into_bytes()),
        Value::Number(n) => Ok(format!("{n}").into_bytes()),
        other => Err(mlua::Error::runtime(format!(
            "bad argument #2 to '{func}' (string expected, got {})",
            other.type_name()
        ))),
    }
}

/// Creates the `Regex` global.
pub fn install(lua: &Lua, _core: &Table) -> mlua::Result<()> {
    let class = Class::new(lua, "Regex")?;
    class.method(
        "exec",
        lua.create_function(|_, (this, s): (Value, Value)| {
            let r = native::<RegexObj>(&this, "Regex", "exec")?;
            Ok(r.0.is_match(&subject(&s, "exec")?))
        })?,
    )?;
    class.method(
        "match",
        lua.create_function(|lua, (this, s): (Value, Value)| {
            let r = native::<RegexObj>(&this, "Regex", "match")?;
            let text = subject(&s, "match")?;
            let list = lua.create_table()?;
            let Some(caps) = r.0.captures(&text) else {
                return Ok((false, list));
            };
            // Groups are listed in order up to the first one that did not
            // take part in the match.
            for (i, g) in caps.iter().take(MAX_GROUPS).enumerate() {
                let Some(g) = g else { break };
                list.raw_set(i + 1, lua.create_string(g.as_bytes())?)?;
            }
            Ok((true, list))
        })?,
    )?;

    let global = lua.create_table()?;
    let c = class.clone();
    global.raw_set(
        "new",
        lua.create_function(move |lua, (re, cs): (Value, Value)| {
            let pattern = match &re {
                Value::String(s) => s.to_string_lossy(),
                Value::Integer(i) => i.to_string(),
                Value::Number(n) => format!("{n}"),
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "bad argument #1 to 'new' (string expected, got {})",
                        other.type_name()
                    )))
                }
            };
            let Value::Boolean(case_sensitive) = cs else {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #2 to 'new' (boolean expected, got {})",
                    cs.type_name()
                )));
            };
            let mut out = MultiValue::new();
            match RegexBuilder::new(&pattern)
                .case_insensitive(!case_sensitive)
                .build()
            {
                Ok(r) => {
                    out.push_back(Value::Boolean(true));
                    out.push_back(Value::Table(c.instantiate(lua, RegexObj(r))?));
                }
                Err(e) => {
                    out.push_back(Value::Boolean(false));
                    out.push_back(Value::String(lua.create_string(e.to_string())?));
                }
            }
            Ok(out)
        })?,
    )?;
    global.set_metatable(Some(class.meta.clone()))?;
    lua.globals().raw_set("Regex", global)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Lua {
        // SAFETY: the tests load no native module.
        let lua = unsafe { Lua::unsafe_new() };
        let core = lua.create_table().unwrap();
        install(&lua, &core).unwrap();
        lua
    }

    #[test]
    fn documented_example() {
        let lua = state();
        let r: (
            bool,
            bool,
            bool,
            bool,
            String,
            String,
            String,
            Option<String>,
        ) = lua
            .load(
                r#"
                local st, regex = Regex.new("needle (..) (...)", true)
                local st2, list = regex:match("Looking for a needle in the haystack")
                return st, regex:exec("Looking for a needle in the haystack"),
                       regex:exec("Lokking for a cat in the haystack"), st2,
                       list[1], list[2], list[3], list[4]
            "#,
            )
            .eval()
            .unwrap();
        assert_eq!(
            r,
            (
                true,
                true,
                false,
                true,
                "needle in the".to_string(),
                "in".to_string(),
                "the".to_string(),
                None
            )
        );
    }

    #[test]
    fn case_and_failures() {
        let lua = state();
        let r: (bool, bool, bool, usize, String) = lua
            .load(
                r#"
                local _, ci = Regex.new("^abc", false)
                local _, cs = Regex.new("^abc", true)
                local ok, t = cs:match("xabc")
                return ci:exec("ABCd"), cs:exec("ABCd"), ok, #t, tostring(cs):match("^Regex") or ""
            "#,
            )
            .eval()
            .unwrap();
        assert_eq!(r, (true, false, false, 0, "Regex".to_string()));
        // Groups stop at the first one that did not participate.
        let n: usize = lua
            .load(r#"local _, r = Regex.new("(a)(x)?(b)", true) local _, t = r:match("ab") return #t"#)
            .eval()
            .unwrap();
        assert_eq!(n, 2);
        let r: (bool, String) = lua.load(r#"return Regex.new("(", true)"#).eval().unwrap();
        assert!(!r.0);
        assert!(r.1.contains("unclosed group"), "{}", r.1);
        let err = |code: &str| lua.load(code).exec().unwrap_err().to_string();
        assert!(err(r#"Regex.new("a")"#)
            .contains("bad argument #2 to 'new' (boolean expected, got nil)"));
        assert!(err(r#"Regex.new({}, true)"#).contains("bad argument #1 to 'new'"));
        assert!(err(r#"local _, r = Regex.new("a", true) r:exec({})"#)
            .contains("bad argument #2 to 'exec'"));
        assert!(err(r#"Regex.exec({}, "a")"#).contains("bad argument #1 to 'exec' (Regex expected"));
        let ok: bool = lua
            .load(r#"local _, r = Regex.new("^1", true) return r:exec(12)"#)
            .eval()
            .unwrap();
        assert!(ok);
    }
}
