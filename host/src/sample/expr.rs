//! Sample expressions: a fetch followed by converters, as written in the
//! configuration (`req.hdr(host),lower,map_str(hosts.map,default)`).
//!
//! Parsing resolves every keyword, checks and compiles its arguments (maps
//! are loaded, regexes compiled) and checks that each converter accepts
//! the type the previous step produces, so that evaluation only runs code.

use super::map::{self, MapFile};
use super::{cast, conv, fetch, Sample, SampleCtx, SampleType};
use crate::lua::vars::{self, VarValue};
use bytes::Bytes;
use std::sync::Arc;

/// A compiled keyword argument.
#[derive(Clone, Debug)]
pub enum Arg {
    /// An optional argument left out (or a variable left empty).
    None,
    /// Text (or bytes).
    Str(Bytes),
    /// An integer.
    Int(i64),
    /// A variable name such as `txn.foo`.
    Var(String),
    /// A loaded map file.
    Map(Arc<MapFile>),
    /// A compiled regex.
    Regex(Arc<regex::bytes::Regex>),
}

impl Arg {
    /// The string, or "" for anything else.
    pub fn str(&self) -> &[u8] {
        match self {
            Arg::Str(s) => s,
            _ => b"",
        }
    }

    /// The integer, or None.
    pub fn int(&self) -> Option<i64> {
        match self {
            Arg::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The value of an integer-or-variable argument.
    pub fn int_or_var(&self, ctx: &SampleCtx) -> Option<i64> {
        match self {
            Arg::Int(i) => Some(*i),
            Arg::Var(v) => match var_value(ctx, v)? {
                Sample::Sint(i) => Some(i),
                Sample::Bool(b) => Some(b as i64),
                other => cast(other, SampleType::Sint)?.to_int(),
            },
            _ => None,
        }
    }
}

/// What a keyword argument must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// Any text.
    Str,
    /// A decimal integer.
    Int,
    /// A variable name (`scope.name`); may be left empty.
    Var,
    /// An integer or a variable name.
    IntOrVar,
    /// A map file name (loaded at parse time).
    Map,
}

/// Reads a variable as a sample.
pub fn var_value(ctx: &SampleCtx, name: &str) -> Option<Sample> {
    Some(match ctx.txn.vars.get(name)? {
        VarValue::Int(i) => Sample::Sint(i),
        VarValue::Bool(b) => Sample::Bool(b),
        VarValue::Str(s) => Sample::Str(Bytes::from(s)),
    })
}

fn check_var(name: &str) -> Result<(), String> {
    if vars::parse_name(name).is_some() {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid variable name (expected proc.NAME, sess.NAME, txn.NAME, req.NAME or res.NAME)"
        ))
    }
}

/// Compiles textual arguments for keyword `what` (e.g. "fetch method
/// 'req.hdr'") against `kinds`, of which the first `min` are mandatory.
pub(crate) fn prepare_args(
    what: &str,
    raw: &[String],
    kinds: &[ArgKind],
    min: usize,
) -> Result<Vec<Arg>, String> {
    if raw.len() < min {
        return Err(format!(
            "{what} expects at least {min} argument{}, got {}",
            if min == 1 { "" } else { "s" },
            raw.len()
        ));
    }
    if raw.len() > kinds.len() {
        return Err(match kinds.len() {
            0 => format!("{what} takes no argument"),
            n => format!(
                "{what} expects at most {n} argument{}, got {}",
                if n == 1 { "" } else { "s" },
                raw.len()
            ),
        });
    }
    let mut out = Vec::with_capacity(kinds.len());
    for (i, kind) in kinds.iter().enumerate() {
        let Some(text) = raw.get(i) else {
            out.push(Arg::None);
            continue;
        };
        let bad = |m: &str| format!("invalid argument {} of {what}: {m}", i + 1);
        let arg = match kind {
            ArgKind::Str => Arg::Str(Bytes::copy_from_slice(text.as_bytes())),
            ArgKind::Int => Arg::Int(
                text.trim()
                    .parse::<i64>()
                    .map_err(|_| bad(&format!("'{text}' is not an integer")))?,
            ),
            ArgKind::Var if text.is_empty() => Arg::None,
            ArgKind::Var => {
                check_var(text).map_err(|e| bad(&e))?;
                // Naming a proc variable creates it, as in HAProxy.
                vars::declare(text);
                Arg::Var(text.clone())
            }
            ArgKind::IntOrVar => match text.trim().parse::<i64>() {
                Ok(v) => Arg::Int(v),
                Err(_) if vars::parse_name(text).is_some() => {
                    vars::declare(text);
                    Arg::Var(text.clone())
                }
                Err(_) => {
                    return Err(bad(&format!(
                        "'{text}' is neither an integer nor a variable name"
                    )))
                }
            },
            ArgKind::Map => {
                if text.is_empty() {
                    return Err(bad("expects a map file name"));
                }
                Arg::Map(map::load(std::path::Path::new(text)).map_err(|e| bad(&e))?)
            }
        };
        out.push(arg);
    }
    Ok(out)
}

/// The fetch part of an expression.
#[derive(Debug)]
enum FetchCall {
    Native {
        kw: &'static fetch::FetchKw,
        args: Vec<Arg>,
    },
    Lua {
        name: String,
        args: Vec<String>,
    },
}

/// One converter of an expression.
#[derive(Debug)]
enum ConvCall {
    Native {
        kw: &'static conv::ConvKw,
        args: Vec<Arg>,
        out: SampleType,
    },
    Lua {
        name: String,
        args: Vec<String>,
    },
}

/// A compiled sample expression.
#[derive(Debug)]
pub struct SampleExpr {
    text: String,
    fetch: FetchCall,
    convs: Vec<ConvCall>,
}

/// A cursor over expression text.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

fn is_kw_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'+')
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn name(&mut self) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(is_kw_char) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("")
    }

    /// Reads `(a,b,...)` if present, with HAProxy's second-level quoting:
    /// single and double quotes group, a backslash (outside single quotes)
    /// escapes `\`, space and quotes and reads \r \n \t. Returns None when
    /// there are no parentheses.
    fn args(&mut self, what: &str) -> Result<Option<Vec<String>>, String> {
        if self.peek() != Some(b'(') {
            return Ok(None);
        }
        self.pos += 1;
        let mut args = Vec::new();
        let mut cur = Vec::new();
        let (mut squote, mut dquote) = (false, false);
        // "f()" has no argument at all; "f(,)" has two empty ones.
        if self.peek() == Some(b')') {
            self.pos += 1;
            return Ok(Some(args));
        }
        loop {
            let Some(c) = self.peek() else {
                return Err(if squote || dquote {
                    format!("unterminated quote in the arguments of {what}")
                } else {
                    format!("missing ')' after the arguments of {what}")
                });
            };
            self.pos += 1;
            match c {
                b'"' if !squote => dquote = !dquote,
                b'\'' if !dquote => squote = !squote,
                b'\\' if !squote => match self.peek() {
                    Some(n @ (b'\\' | b' ' | b'"' | b'\'')) => {
                        cur.push(n);
                        self.pos += 1;
                    }
                    Some(b'r') => {
                        cur.push(b'\r');
                        self.pos += 1;
                    }
                    Some(b'n') => {
                        cur.push(b'\n');
                        self.pos += 1;
                    }
                    Some(b't') => {
                        cur.push(b'\t');
                        self.pos += 1;
                    }
                    _ => cur.push(b'\\'),
                },
                b',' if !squote && !dquote => {
                    args.push(String::from_utf8_lossy(&cur).into_owned());
                    cur.clear();
                }
                b')' if !squote && !dquote => {
                    args.push(String::from_utf8_lossy(&cur).into_owned());
                    return Ok(Some(args));
                }
                c => cur.push(c),
            }
        }
    }
}

/// Fills in the single empty argument of `kw()` when the keyword needs
/// one (so `str()` is the empty string, as in HAProxy).
fn args_or_empty(args: Option<Vec<String>>, min: usize) -> Vec<String> {
    match args {
        Some(a) if a.is_empty() && min > 0 => vec![String::new()],
        Some(a) => a,
        None => Vec::new(),
    }
}

impl SampleExpr {
    /// Parses a whole expression.
    pub fn parse(text: &str) -> Result<SampleExpr, String> {
        let t = text.trim();
        let (e, used) = Self::parse_prefix(t)?;
        if used != t.len() {
            let rest = t[used..].trim_start();
            return Err(format!(
                "unexpected '{}' after '{}' in sample expression '{t}'",
                rest.chars().next().unwrap_or(' '),
                &t[..used]
            ));
        }
        Ok(e)
    }

    /// Parses the longest expression at the start of `text` (log-format
    /// `%[expr]` stops at the ']'), returning it and the bytes it used.
    pub fn parse_prefix(text: &str) -> Result<(SampleExpr, usize), String> {
        let mut c = Cursor {
            s: text.as_bytes(),
            pos: 0,
        };
        let name = c.name().to_string();
        if name.is_empty() {
            return Err(match c.peek() {
                Some(ch) => format!("missing fetch method before '{}'", ch as char),
                None => "missing fetch method".to_string(),
            });
        }
        let raw = c.args(&format!("fetch method '{name}'"))?;
        let mut out_type;
        let fetch = if let Some(lua_name) = name.strip_prefix("lua.") {
            out_type = SampleType::Any;
            FetchCall::Lua {
                name: lua_name.to_string(),
                args: raw.unwrap_or_default(),
            }
        } else {
            let Some(kw) = fetch::find(&name) else {
                return Err(format!("unknown fetch method '{name}'"));
            };
            let args = fetch::prepare(kw, &args_or_empty(raw, kw.min))?;
            out_type = kw.out;
            FetchCall::Native { kw, args }
        };
        let mut convs = Vec::new();
        while c.peek() == Some(b',') {
            c.pos += 1;
            let cname = c.name().to_string();
            if cname.is_empty() {
                return Err(format!(
                    "missing converter name after ',' in '{}'",
                    &text[..c.pos]
                ));
            }
            let raw = c.args(&format!("converter '{cname}'"))?;
            if let Some(lua_name) = cname.strip_prefix("lua.") {
                out_type = SampleType::Any;
                convs.push(ConvCall::Lua {
                    name: lua_name.to_string(),
                    args: raw.unwrap_or_default(),
                });
                continue;
            }
            let Some(kw) = conv::find(&cname) else {
                return Err(format!("unknown converter '{cname}'"));
            };
            if !out_type.can_cast(kw.input) {
                return Err(format!(
                    "converter '{cname}' cannot be applied to a {} sample (it expects {})",
                    out_type.name(),
                    kw.input.name()
                ));
            }
            let args = conv::prepare(kw, &cname, &args_or_empty(raw, kw.min))?;
            out_type = conv::out_type(kw, &cname);
            convs.push(ConvCall::Native {
                kw,
                args,
                out: out_type,
            });
        }
        Ok((
            SampleExpr {
                text: text[..c.pos].to_string(),
                fetch,
                convs,
            },
            c.pos,
        ))
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The fetch keyword (e.g. "req.hdr", "lua.myfetch").
    pub fn fetch_name(&self) -> String {
        match &self.fetch {
            FetchCall::Native { kw, .. } => kw.name.to_string(),
            FetchCall::Lua { name, .. } => format!("lua.{name}"),
        }
    }

    /// Whether converters follow the fetch.
    pub fn has_converters(&self) -> bool {
        !self.convs.is_empty()
    }

    /// The type the expression produces (Any when only known at run time).
    pub fn out_type(&self) -> SampleType {
        let mut t = match &self.fetch {
            FetchCall::Native { kw, .. } => kw.out,
            FetchCall::Lua { .. } => SampleType::Any,
        };
        for c in &self.convs {
            t = match c {
                ConvCall::Native { out, .. } => *out,
                ConvCall::Lua { .. } => SampleType::Any,
            };
        }
        t
    }

    /// The Lua fetches and converters the expression calls (without the
    /// `lua.` prefix), so that their registration can be checked.
    pub fn lua_names(&self) -> (Vec<String>, Vec<String>) {
        let fetches = match &self.fetch {
            FetchCall::Lua { name, .. } => vec![name.clone()],
            FetchCall::Native { .. } => Vec::new(),
        };
        let convs = self
            .convs
            .iter()
            .filter_map(|c| match c {
                ConvCall::Lua { name, .. } => Some(name.clone()),
                ConvCall::Native { .. } => None,
            })
            .collect();
        (fetches, convs)
    }

    fn run_fetch(&self, ctx: &SampleCtx) -> Option<Sample> {
        match &self.fetch {
            FetchCall::Native { kw, args } => (kw.f)(args, ctx),
            FetchCall::Lua { name, args } => ctx.lua.fetch(name, ctx.txn, args),
        }
    }

    fn run_convs(&self, mut s: Sample, ctx: &SampleCtx) -> Option<Sample> {
        for c in &self.convs {
            s = match c {
                ConvCall::Native { kw, args, .. } => (kw.f)(cast(s, kw.input)?, args, ctx)?,
                ConvCall::Lua { name, args } => ctx.lua.convert(name, ctx.txn, s, args)?,
            };
        }
        Some(s)
    }

    /// Evaluates the expression; None when the fetch or a converter fails.
    pub fn eval(&self, ctx: &SampleCtx) -> Option<Sample> {
        let s = self.run_fetch(ctx)?;
        self.run_convs(s, ctx)
    }

    /// Evaluates for an ACL: fetches that have several values (every
    /// occurrence of a header, every cookie of a name) give all of them,
    /// each passed through the converters.
    pub fn eval_all(&self, ctx: &SampleCtx) -> Vec<Sample> {
        let values = match &self.fetch {
            FetchCall::Native { kw, args } => match kw.multi.and_then(|m| m(args, ctx)) {
                Some(v) => v,
                None => (kw.f)(args, ctx).into_iter().collect(),
            },
            FetchCall::Lua { name, args } => {
                ctx.lua.fetch(name, ctx.txn, args).into_iter().collect()
            }
        };
        values
            .into_iter()
            .filter_map(|v| self.run_convs(v, ctx))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::testutil::{ctx, http_txn, s, tcp_txn};

    fn eval(text: &str) -> Option<Sample> {
        let t = http_txn(
            "GET",
            "/p?x=1",
            &[("host", "Example.COM"), ("x-a", "a, b"), ("x-a", "c")],
        );
        SampleExpr::parse(text).unwrap().eval(&ctx(&t))
    }

    #[test]
    fn chains() {
        assert_eq!(eval("req.hdr(host),lower"), Some(s("example.com")));
        assert_eq!(eval("req.hdr(host),lower,upper"), Some(s("EXAMPLE.COM")));
        assert_eq!(eval("str(abc),length"), Some(Sample::Sint(3)));
        assert_eq!(
            eval("str(abc),crc32,add(1)"),
            Some(Sample::Sint(891_568_579))
        );
        assert_eq!(eval("req.hdr(nothere),lower"), None);
        assert_eq!(eval(" str(x) "), Some(s("x")));
        assert_eq!(eval("str()"), Some(s("")));
        assert_eq!(eval("lua.echo(a,b)"), Some(s("a|b")));
        assert_eq!(eval("str(x),lua.wrap(-)"), Some(s("-x-")));
        assert_eq!(eval("lua.nothing"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(eval("str('a,b)c')"), Some(s("a,b)c")));
        assert_eq!(eval("str(\"a'b\")"), Some(s("a'b")));
        assert_eq!(eval("str(a\\ b)"), Some(s("a b")));
        assert_eq!(eval("str('a\\ b')"), Some(s("a\\ b")));
        assert_eq!(eval("str(a),concat(\\r\\n)"), Some(s("a\r\n")));
        assert_eq!(eval("str(a),concat(\\x)"), Some(s("a\\x")));
        assert_eq!(eval("str(a),concat(,,)"), Some(s("a")));
        let e = SampleExpr::parse("str(a),regsub(\"(a)\",\"\\1\\1\",g)").unwrap();
        let t = tcp_txn();
        assert_eq!(e.eval(&ctx(&t)), Some(s("aa")));
    }

    #[test]
    fn parse_errors() {
        let err = |t: &str| SampleExpr::parse(t).unwrap_err();
        assert_eq!(err("nope"), "unknown fetch method 'nope'");
        assert_eq!(err("str(a),nope"), "unknown converter 'nope'");
        assert!(err("").contains("missing fetch method"));
        assert!(err("str(a").contains("missing ')'"));
        assert!(err("str('a)").contains("unterminated quote"));
        assert!(err("str(a),").contains("missing converter name"));
        assert!(err("str(a) x").contains("unexpected 'x'"));
        assert!(err("int(x)").contains("'x' is not an integer"));
        assert!(err("int").contains("expects at least 1 argument"));
        assert!(err("src(1)").contains("takes no argument"));
        assert!(err("req.hdr(a,1,2)").contains("at most 2 arguments"));
        assert!(err("always_true,ipmask(24)").contains("cannot be applied to a boolean"));
        assert!(err("str(a),map(/nonexistent/file.map)").contains("failed to open"));
        assert!(err("var(nope)").contains("not a valid variable name"));
        assert!(err("str(a),add(x y)").contains("neither an integer nor a variable"));
        assert!(err("hdr_beg(host)").contains("unknown fetch method"));
    }

    #[test]
    fn prefix_for_log_format() {
        let (e, n) = SampleExpr::parse_prefix("req.hdr(x]),lower]rest").unwrap();
        assert_eq!(n, "req.hdr(x]),lower".len());
        assert_eq!(e.text(), "req.hdr(x]),lower");
    }

    #[test]
    fn metadata() {
        let e = SampleExpr::parse("lua.f(1),lower,lua.c,lua.d(x)").unwrap();
        assert_eq!(
            e.lua_names(),
            (
                vec!["f".to_string()],
                vec!["c".to_string(), "d".to_string()]
            )
        );
        assert_eq!(e.out_type(), SampleType::Any);
        assert_eq!(e.fetch_name(), "lua.f");
        let e = SampleExpr::parse("src,ipmask(24)").unwrap();
        assert_eq!(e.out_type(), SampleType::Ip);
        assert!(e.has_converters());
        assert_eq!(
            SampleExpr::parse("path").unwrap().out_type(),
            SampleType::Str
        );
    }

    #[test]
    fn all_values_for_acls() {
        let t = http_txn("GET", "/", &[("x-a", "a, b"), ("x-a", "C")]);
        let e = SampleExpr::parse("req.hdr(x-a),lower").unwrap();
        assert_eq!(e.eval_all(&ctx(&t)), vec![s("a"), s("b"), s("c")]);
        let e = SampleExpr::parse("req.hdr(x-a,1)").unwrap();
        assert_eq!(e.eval_all(&ctx(&t)), vec![s("a")]);
        let e = SampleExpr::parse("req.fhdr(x-a)").unwrap();
        assert_eq!(e.eval_all(&ctx(&t)), vec![s("a, b"), s("C")]);
        let e = SampleExpr::parse("path").unwrap();
        assert_eq!(e.eval_all(&ctx(&t)), vec![s("/")]);
    }

    #[test]
    fn thread_safe() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SampleExpr>();
    }
}
