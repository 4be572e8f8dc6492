//! Conditional blocks: `.if`/`.elif`/`.else`/`.endif`, their expressions, and
//! the block state of one file.
//!
//! The grammar and the predicates follow HAProxy 3.0 (src/cfgcond.c): the
//! words after `.if` are joined with single spaces (quotes and `${VAR}` were
//! already handled by the line splitter) and read as
//!
//! ```text
//! expr := and ( "||" expr )?
//! and  := term ( "&&" and )?
//! term := "!"* ( INTEGER | "(" expr ")" | PREDICATE "(" args ")" )
//! ```
//!
//! An integer is read like C's `strtol(s, 0)` (so `0x10` and `010` work) and
//! is true when non-zero. Evaluation is left to right and stops as soon as
//! the result is known.

use super::lexer::Env;

/// The HAProxy version luahost answers to in `version_atleast()` and
/// `version_before()`: it implements the HAProxy 3.0 Lua API and
/// configuration language (docs/configuration.md, "Conditional blocks").
pub(crate) const HAPROXY_VERSION: &str = "3.0.0";

/// The features `feature()` reports, HAProxy style (`+NAME` present,
/// `-NAME` absent). Only what luahost really has is marked `+`.
pub(crate) const BUILD_FEATURES: &[(&str, bool)] = &[
    ("CPU_AFFINITY", true),
    ("EPOLL", true),
    ("GETADDRINFO", true),
    ("LUA", true),
    ("THREAD", true),
    ("LINUX_SPLICE", false),
    ("OPENSSL", false),
    ("PCRE", false),
    ("PCRE2", false),
    ("PROMEX", false),
    ("QUIC", false),
    ("SLZ", false),
    ("SSL", false),
    ("ZLIB", false),
];

/// What `enabled()` answers true for: the event poller in use (luahost's
/// event loop uses epoll on Linux) and name resolution through getaddrinfo
/// (the system resolver, always). HAProxy's other options (POLL, KQUEUE,
/// EVPORTS, SPLICE, REUSEPORT, FAST-FORWARD, SERVER-SSL-VERIFY-NONE), which
/// a default HAProxy 3.0 on Linux mostly reports enabled, are false here
/// because luahost does not do them; unknown names are false.
const ENABLED: &[&str] = &["EPOLL", "GETADDRINFO"];

/// Deepest nesting of `.if` blocks, as in HAProxy.
const MAX_NESTED: usize = 100;
/// Recursion bound of the expression parser, as in HAProxy.
const MAX_DEPTH: usize = 1024;

/// A problem in a condition: the message and the 0-based byte position of
/// the first bad character in the condition text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CondError {
    pub message: String,
    pub pos: usize,
}

/// A predicate and how many string arguments it takes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pred {
    Defined,
    Feature,
    Streq,
    Strneq,
    Strstr,
    VersionAtleast,
    VersionBefore,
    OpensslVersionAtleast,
    OpensslVersionBefore,
    SsllibNameStartswith,
    Enabled,
}

const PREDICATES: &[(&str, Pred, usize)] = &[
    ("defined", Pred::Defined, 1),
    ("feature", Pred::Feature, 1),
    ("streq", Pred::Streq, 2),
    ("strneq", Pred::Strneq, 2),
    ("strstr", Pred::Strstr, 2),
    ("version_atleast", Pred::VersionAtleast, 1),
    ("version_before", Pred::VersionBefore, 1),
    ("openssl_version_atleast", Pred::OpensslVersionAtleast, 1),
    ("openssl_version_before", Pred::OpensslVersionBefore, 1),
    ("ssllib_name_startswith", Pred::SsllibNameStartswith, 1),
    ("enabled", Pred::Enabled, 1),
];

/// A parsed term.
#[derive(Debug)]
enum Term {
    Const(bool),
    Paren(Box<Expr>),
    Pred(Pred, Vec<String>),
}

#[derive(Debug)]
struct NegTerm {
    neg: bool,
    term: Term,
}

/// `and ( "||" expr )?` flattened: OR of ANDs of terms.
#[derive(Debug)]
struct Expr(Vec<Vec<NegTerm>>);

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn peek(&self) -> u8 {
        self.s.get(self.i).copied().unwrap_or(0)
    }
    fn at(&self, k: usize) -> u8 {
        self.s.get(self.i + k).copied().unwrap_or(0)
    }
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), b' ' | b'\t') {
            self.i += 1;
        }
    }
    fn rest(&self) -> String {
        String::from_utf8_lossy(self.s.get(self.i..).unwrap_or_default()).into_owned()
    }
    fn err(&self, message: String) -> CondError {
        CondError {
            message,
            pos: self.i,
        }
    }
}

/// Evaluates the condition `text` (the words after `.if`, joined by spaces).
/// An empty condition is false.
pub(crate) fn eval(text: &str, env: &dyn Env) -> Result<bool, CondError> {
    if text.is_empty() {
        return Ok(false);
    }
    let mut r = Reader {
        s: text.as_bytes(),
        i: 0,
    };
    let Some(expr) = parse_expr(&mut r, MAX_DEPTH)? else {
        return Err(CondError {
            message: format!("unparsable conditional expression '{text}'"),
            pos: r.i,
        });
    };
    r.skip_blanks();
    if r.i < r.s.len() {
        return Err(r.err(format!(
            "unexpected character '{}' at the end of conditional expression '{text}'",
            char::from(r.peek())
        )));
    }
    eval_expr(&expr, env).map_err(|message| CondError { message, pos: 0 })
}

/// Each parser mirrors HAProxy's: `Ok(None)` means "nothing parsable here"
/// (which the caller turns into its own message), and `r.i` only moves past
/// what was read successfully.
fn parse_expr(r: &mut Reader<'_>, depth: usize) -> Result<Option<Expr>, CondError> {
    if r.i >= r.s.len() {
        return Ok(None);
    }
    if depth == 0 {
        return Err(r.err(format!("unparsable conditional expression '{}'", r.rest())));
    }
    let mut inner = Reader { s: r.s, i: r.i };
    let Some(left) = parse_and(&mut inner, depth - 1)? else {
        return Err(inner.err(format!(
            "unparsable conditional expression '{}'",
            inner.rest()
        )));
    };
    inner.skip_blanks();
    r.i = inner.i;
    if !(inner.peek() == b'|' && inner.at(1) == b'|') {
        return Ok(Some(Expr(vec![left])));
    }
    inner.i += 2;
    inner.skip_blanks();
    let Some(Expr(right)) = parse_expr(&mut inner, depth - 1)? else {
        return Ok(None);
    };
    r.i = inner.i;
    let mut all = vec![left];
    all.extend(right);
    Ok(Some(Expr(all)))
}

fn parse_and(r: &mut Reader<'_>, depth: usize) -> Result<Option<Vec<NegTerm>>, CondError> {
    if r.i >= r.s.len() {
        return Ok(None);
    }
    if depth == 0 {
        return Err(r.err(format!(
            "unparsable conditional sub-expression '{}'",
            r.rest()
        )));
    }
    let mut inner = Reader { s: r.s, i: r.i };
    let Some(left) = parse_term(&mut inner, depth - 1)? else {
        return Err(inner.err(format!(
            "unparsable conditional sub-expression '{}'",
            inner.rest()
        )));
    };
    inner.skip_blanks();
    r.i = inner.i;
    if !(inner.peek() == b'&' && inner.at(1) == b'&') {
        return Ok(Some(vec![left]));
    }
    inner.i += 2;
    inner.skip_blanks();
    let Some(right) = parse_and(&mut inner, depth - 1)? else {
        return Ok(None);
    };
    r.i = inner.i;
    let mut all = vec![left];
    all.extend(right);
    Ok(Some(all))
}

fn parse_term(r: &mut Reader<'_>, depth: usize) -> Result<Option<NegTerm>, CondError> {
    let start = r.i;
    let mut inner = Reader { s: r.s, i: r.i };
    inner.skip_blanks();
    if inner.i >= inner.s.len() {
        return Ok(None);
    }
    let unparsable = || CondError {
        message: format!(
            "unparsable conditional expression '{}'",
            String::from_utf8_lossy(&r.s[start..])
        ),
        pos: start,
    };
    if depth == 0 {
        return Err(unparsable());
    }
    let mut neg = false;
    while inner.peek() == b'!' {
        neg = !neg;
        inner.i += 1;
        inner.skip_blanks();
    }
    if let Some((value, end)) = strtol(&inner.s[inner.i..]) {
        r.i = inner.i + end;
        return Ok(Some(NegTerm {
            neg,
            term: Term::Const(value != 0),
        }));
    }
    if inner.peek() == b'(' {
        inner.i += 1;
        inner.skip_blanks();
        let Some(e) = parse_expr(&mut inner, depth - 1)? else {
            return Err(unparsable());
        };
        inner.skip_blanks();
        if inner.peek() != b')' {
            return Err(CondError {
                message: format!(
                    "expected ')' after conditional expression '{}'",
                    String::from_utf8_lossy(&r.s[start..])
                ),
                pos: start,
            });
        }
        inner.i += 1;
        inner.skip_blanks();
        r.i = inner.i;
        return Ok(Some(NegTerm {
            neg,
            term: Term::Paren(Box::new(e)),
        }));
    }
    let rest = &inner.s[inner.i..];
    let word_len = rest
        .iter()
        .position(|&c| c == b' ' || c == b'(')
        .unwrap_or(rest.len());
    let Some(&(name, pred, nargs)) = PREDICATES
        .iter()
        .find(|(n, _, _)| n.as_bytes() == &rest[..word_len])
    else {
        return Err(unparsable());
    };
    inner.i += name.len();
    let args = parse_args(&mut inner, name, nargs)?;
    r.i = inner.i;
    Ok(Some(NegTerm {
        neg,
        term: Term::Pred(pred, args),
    }))
}

/// C's `strtol(s, &end, 0)`: leading blanks, a sign, then a decimal, `0x`
/// hexadecimal or `0` octal number. Returns the value (saturated) and the
/// number of bytes read, or `None` when no digit was read.
fn strtol(s: &[u8]) -> Option<(i64, usize)> {
    let mut i = 0;
    while matches!(
        s.get(i),
        Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
    ) {
        i += 1;
    }
    let negative = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut radix = 10;
    if s.get(i) == Some(&b'0') {
        if matches!(s.get(i + 1), Some(b'x' | b'X'))
            && s.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit())
        {
            radix = 16;
            i += 2;
        } else {
            radix = 8;
        }
    }
    let digits_start = i;
    let mut value: i64 = 0;
    while let Some(d) = s.get(i).and_then(|&c| char::from(c).to_digit(radix)) {
        value = value
            .saturating_mul(i64::from(radix))
            .saturating_add(i64::from(d));
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    Some((if negative { -value } else { value }, i))
}

/// Reads a predicate's `(arg, arg)` like HAProxy's `make_arg_list`: commas
/// separate arguments, quotes group, backslash escapes `\\ \  \" \' \r \n \t`.
fn parse_args(r: &mut Reader<'_>, name: &str, nargs: usize) -> Result<Vec<String>, CondError> {
    let fail = |r: &Reader<'_>, msg: String, argn: usize| CondError {
        message: format!(
            "{msg} in argument {argn} of predicate '{name}' used in conditional expression"
        ),
        pos: r.i,
    };
    let mut args = Vec::with_capacity(nargs);
    // Without '(' the predicate gets one empty argument (HAProxy's
    // "an empty input string contains an empty argument").
    let empty = r.peek() != b'(';
    if !empty {
        r.i += 1;
    }
    while args.len() < nargs {
        let mut out = Vec::new();
        let (mut squote, mut dquote) = (false, false);
        while !empty && r.i < r.s.len() {
            let c = r.peek();
            if c == b'"' && !squote {
                dquote = !dquote;
                r.i += 1;
            } else if c == b'\'' && !dquote {
                squote = !squote;
                r.i += 1;
            } else if c == b'\\' && !squote && r.i + 1 < r.s.len() {
                let n = r.at(1);
                match n {
                    b'\\' | b' ' | b'"' | b'\'' => {
                        out.push(n);
                        r.i += 2;
                    }
                    b'r' => {
                        out.push(b'\r');
                        r.i += 2;
                    }
                    b'n' => {
                        out.push(b'\n');
                        r.i += 2;
                    }
                    b't' => {
                        out.push(b'\t');
                        r.i += 2;
                    }
                    _ => {
                        out.push(b'\\');
                        r.i += 1;
                    }
                }
            } else if !squote && !dquote && (c == b',' || c == b')') {
                break;
            } else {
                out.push(c);
                r.i += 1;
            }
        }
        args.push(String::from_utf8_lossy(&out).into_owned());
        if empty || r.i >= r.s.len() || r.peek() == b')' || args.len() >= nargs {
            break;
        }
        r.i += 1; // the comma
    }
    if args.len() < nargs {
        return Err(fail(
            r,
            format!(
                "missing arguments (got {}/{nargs}), type 'string' expected",
                args.len()
            ),
            args.len(),
        ));
    }
    if !empty {
        if r.peek() == b')' {
            r.i += 1;
        } else {
            let rest = r.rest();
            let msg = if rest.is_empty() {
                "expected ')'".to_string()
            } else {
                format!("expected ')' before '{rest}'")
            };
            let argn = if args.len() > 1 {
                args.len() - 1
            } else {
                args.len()
            };
            return Err(fail(r, msg, argn));
        }
    }
    Ok(args)
}

fn eval_expr(e: &Expr, env: &dyn Env) -> Result<bool, String> {
    for and in &e.0 {
        let mut all = true;
        for t in and {
            if !eval_term(t, env)? {
                all = false;
                break;
            }
        }
        if all {
            return Ok(true);
        }
    }
    Ok(false)
}

fn eval_term(t: &NegTerm, env: &dyn Env) -> Result<bool, String> {
    let arg = |i: usize| match &t.term {
        Term::Pred(_, a) => a.get(i).map(String::as_str).unwrap_or(""),
        _ => "",
    };
    let v = match &t.term {
        Term::Const(b) => *b,
        Term::Paren(e) => eval_expr(e, env)?,
        Term::Pred(p, _) => match p {
            Pred::Defined => env.var(arg(0)).is_some(),
            Pred::Feature => BUILD_FEATURES
                .iter()
                .any(|(name, on)| *on && *name == arg(0)),
            Pred::Streq => arg(0) == arg(1),
            Pred::Strneq => arg(0) != arg(1),
            Pred::Strstr => arg(0).contains(arg(1)),
            Pred::VersionAtleast => compare_version(arg(0)) <= 0,
            Pred::VersionBefore => compare_version(arg(0)) > 0,
            // luahost has no TLS library: the OpenSSL version predicates fail
            // the way HAProxy's do when no OpenSSL is available.
            Pred::OpensslVersionAtleast | Pred::OpensslVersionBefore => {
                return Err(String::new());
            }
            Pred::SsllibNameStartswith => false,
            Pred::Enabled => ENABLED.contains(&arg(0)),
        },
    };
    Ok(v != t.neg)
}

/// HAProxy's `split_version`: `a[.b[.c[.d]]][-(dev|rc|pre)N][-commit]` into
/// seven numbers; `None` when it does not parse.
fn split_version(v: &str) -> Option<[u64; 7]> {
    let mut out = [0, 0, 0, 0, 3, 0, 0];
    if v.is_empty() {
        return None;
    }
    let s = v.as_bytes();
    // strtol(p, 10) without sign handling beyond what versions use.
    let num = |i: &mut usize| -> u64 {
        let (val, used) = strtol_dec(&s[*i..]).unwrap_or_default();
        *i += used;
        val
    };
    let mut i = 0;
    let mut tag = false;
    for slot in 0..4 {
        out[slot] = num(&mut i);
        match s.get(i) {
            None => return Some(out),
            Some(b'-') => {
                i += 1;
                tag = true;
                break;
            }
            Some(b'.') if slot < 3 => i += 1,
            _ => return None,
        }
    }
    if !tag {
        return None;
    }
    let mut p = i;
    if !s.get(p).is_some_and(u8::is_ascii_digit) {
        let kind = if s[p..].starts_with(b"dev") {
            Some((1, 3))
        } else if s[p..].starts_with(b"rc") {
            Some((2, 2))
        } else if s[p..].starts_with(b"pre") {
            Some((2, 3))
        } else {
            None
        };
        if let Some((k, len)) = kind {
            out[4] = k;
            p += len;
            out[5] = num(&mut p);
            match s.get(p) {
                None => return Some(out),
                Some(b'-') => p += 1,
                _ => return None,
            }
        }
    }
    let rest = &v[p..];
    let commit = match rest.rfind('-') {
        Some(k) => {
            let c = &rest[k + 1..];
            if c.is_empty() {
                return None;
            }
            c
        }
        None => rest,
    };
    out[6] = commit.parse().unwrap_or(0);
    Some(out)
}

fn strtol_dec(s: &[u8]) -> Option<(u64, usize)> {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let v = std::str::from_utf8(&s[..n])
        .ok()?
        .parse()
        .unwrap_or(u64::MAX);
    Some((v, n))
}

/// HAProxy's `compare_current_version`: -1 when `v` is older than the
/// version luahost answers to, 0 when equal, 1 when newer, -3 when `v` does
/// not parse (which `version_atleast` counts as true, as HAProxy does).
fn compare_version(v: &str) -> i32 {
    let Some(ours) = split_version(HAPROXY_VERSION) else {
        return -2;
    };
    let Some(theirs) = split_version(v) else {
        return -3;
    };
    for (a, b) in theirs.iter().zip(ours.iter()) {
        if a < b {
            return -1;
        }
        if a > b {
            return 1;
        }
    }
    0
}

/// The state of one `.if` level, as HAProxy names them: TAKE means the
/// lines are used, DROP that they are not (a later branch may be taken),
/// SKIP that another branch was already taken or the enclosing block is
/// dropped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    IfTake,
    IfDrop,
    IfSkip,
    ElifTake,
    ElifDrop,
    ElifSkip,
    ElseTake,
    ElseDrop,
}

impl Level {
    fn masks(self) -> bool {
        !matches!(self, Level::IfTake | Level::ElifTake | Level::ElseTake)
    }
    /// A branch of this block was (or is being) taken, or the block is
    /// inside a dropped one: later branches are skipped.
    fn done(self) -> bool {
        matches!(
            self,
            Level::IfTake | Level::IfSkip | Level::ElifTake | Level::ElifSkip
        )
    }
}

/// The `.if` blocks open in the current file.
#[derive(Default)]
pub(crate) struct Blocks {
    levels: Vec<Level>,
}

/// What a line means to the block state.
pub(crate) enum Directive {
    /// Not a block directive: the line is used unless `masked`.
    Line { masked: bool },
    /// A block directive that was handled.
    Handled,
}

impl Blocks {
    /// Whether lines are currently dropped.
    pub(crate) fn masked(&self) -> bool {
        self.levels.last().is_some_and(|l| l.masks())
    }

    /// Whether a block is still open (at the end of a file: an error).
    pub(crate) fn open(&self) -> bool {
        !self.levels.is_empty()
    }

    /// Handles `.if`/`.elif`/`.else`/`.endif`; `words[0]` is the keyword.
    pub(crate) fn line(&mut self, words: &[&str], env: &dyn Env) -> Result<Directive, String> {
        let kw = words.first().copied().unwrap_or_default();
        match kw {
            ".if" => {
                if self.levels.len() + 1 >= MAX_NESTED {
                    return Err(format!("too many nested '.if', max is {MAX_NESTED}."));
                }
                if self.masked() {
                    self.levels.push(Level::IfSkip);
                    return Ok(Directive::Handled);
                }
                let take = condition(".if", words, env)?;
                self.levels
                    .push(if take { Level::IfTake } else { Level::IfDrop });
                Ok(Directive::Handled)
            }
            ".elif" => {
                let Some(&cur) = self.levels.last() else {
                    return Err("lone '.elif' with no matching '.if'.".to_string());
                };
                if matches!(cur, Level::ElseTake | Level::ElseDrop) {
                    return Err("'.elif' after '.else' is not permitted.".to_string());
                }
                let next = if cur.done() {
                    Level::ElifSkip
                } else if condition(".elif", words, env)? {
                    Level::ElifTake
                } else {
                    Level::ElifDrop
                };
                self.set(next);
                Ok(Directive::Handled)
            }
            ".else" | ".endif" => {
                if let Some(extra) = words.get(1) {
                    return Err(format!("Unexpected argument '{extra}' for '{kw}'."));
                }
                let Some(&cur) = self.levels.last() else {
                    return Err(format!("lone '{kw}' with no matching '.if'."));
                };
                if kw == ".endif" {
                    self.levels.pop();
                    return Ok(Directive::Handled);
                }
                if matches!(cur, Level::ElseTake | Level::ElseDrop) {
                    return Err("'.else' after '.else' is not permitted.".to_string());
                }
                self.set(if cur.done() {
                    Level::ElseDrop
                } else {
                    Level::ElseTake
                });
                Ok(Directive::Handled)
            }
            _ => Ok(Directive::Line {
                masked: self.masked(),
            }),
        }
    }

    fn set(&mut self, level: Level) {
        if let Some(l) = self.levels.last_mut() {
            *l = level;
        }
    }
}

/// Evaluates the condition of an `.if`/`.elif` line; the error shows the
/// condition with a caret under the first bad character, like HAProxy.
fn condition(kw: &str, words: &[&str], env: &dyn Env) -> Result<bool, String> {
    let text = words.get(1..).unwrap_or_default().join(" ");
    eval(&text, env).map_err(|e| {
        let pos = e.pos.min(text.len());
        let before = String::from_utf8_lossy(&text.as_bytes()[..pos]);
        let caret = " ".repeat(kw.len() + 1 + before.chars().count());
        format!(
            "{} in '{kw}' at position {}:\n  {kw} {text}\n  {caret}^",
            e.message,
            pos + 1
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lexer::tests::MapEnv;

    fn env() -> MapEnv {
        MapEnv::new(&[("HOME", "/root"), ("EMPTY", "")])
    }

    fn t(text: &str) -> bool {
        match eval(text, &env()) {
            Ok(v) => v,
            Err(e) => panic!("{text:?}: {e:?}"),
        }
    }

    fn err(text: &str) -> CondError {
        match eval(text, &env()) {
            Ok(v) => panic!("{text:?} evaluated to {v}"),
            Err(e) => e,
        }
    }

    #[test]
    fn integers() {
        assert!(!t(""));
        assert!(t("1"));
        assert!(!t("0"));
        assert!(t("-1"));
        assert!(t("0x10"));
        assert!(!t("0x0"));
        assert!(!t("00"));
        assert!(t("!0"));
        assert!(!t("!!0"));
        assert!(t("! ! 1"));
    }

    #[test]
    fn operators_and_parentheses() {
        assert!(t("1 && 1"));
        assert!(!t("1 && 0"));
        assert!(t("0 || 1"));
        assert!(t("0 && 0 || 1"));
        assert!(!t("0 && (0 || 1)"));
        assert!(t("!(0 || 0)"));
        assert!(t("( 1 )"));
        assert!(t("1&&1||0"));
    }

    #[test]
    fn predicates() {
        assert!(t("defined(HOME)"));
        assert!(t("defined(EMPTY)"));
        assert!(!t("defined(NOPE)"));
        assert!(t("feature(LUA)"));
        assert!(t("feature(THREAD)"));
        assert!(!t("feature(UA)"));
        assert!(!t("feature(OPENSSL)"));
        assert!(!t("feature(NOPE)"));
        assert!(t("streq(a,a)"));
        assert!(!t("streq(a,b)"));
        assert!(t("strneq(a,b)"));
        assert!(t("strstr(abc,b)"));
        assert!(!t("strstr(abc,d)"));
        assert!(t("streq('a,b',\"a,b\")"));
        assert!(t("streq(a\\ b,'a b')"));
        assert!(t("enabled(EPOLL)"));
        assert!(!t("enabled(POLL)"));
        assert!(!t("enabled(REUSEPORT)"));
        assert!(t("enabled(GETADDRINFO)"));
        assert!(!t("ssllib_name_startswith(Open)"));
    }

    #[test]
    fn versions() {
        assert!(t("version_atleast(2.6)"));
        assert!(t("version_atleast(3.0)"));
        assert!(t("version_atleast(3.0.0)"));
        assert!(!t("version_atleast(3.0.1)"));
        assert!(!t("version_atleast(3.1)"));
        assert!(t("version_before(3.1)"));
        assert!(t("version_before(3.0.1)"));
        assert!(!t("version_before(3.0)"));
        assert!(!t("version_before(2.8)"));
        // A release is newer than its development versions.
        assert!(t("version_atleast(3.0-dev5)"));
        assert!(t("version_atleast(3.0.0-rc1)"));
        // HAProxy counts an unparsable version as "at least".
        assert!(t("version_atleast(foo)"));
        assert!(!t("version_before(foo)"));
        assert_eq!(split_version("3.0.11-1+deb13u4").map(|v| v[2]), Some(11));
    }

    #[test]
    fn errors_point_at_the_bad_character() {
        let e = err("defined (HOME)");
        assert!(e.message.starts_with("unexpected character '('"), "{e:?}");
        assert_eq!(e.pos, 8);
        let e = err("nope(1)");
        assert!(e.message.contains("unparsable conditional expression"));
        assert!(err("1 1").message.contains("unexpected character '1'"));
        assert!(err("(1").message.contains("expected ')'"));
        assert!(err("streq(a)")
            .message
            .contains("missing arguments (got 1/2)"));
        assert!(err("streq(a,b").message.contains("expected ')'"));
        let e = err("1 &&");
        assert_eq!(
            (e.message.as_str(), e.pos),
            ("unparsable conditional expression '&&'", 2)
        );
        assert!(err("openssl_version_atleast(1.1)").message.is_empty());
    }

    fn run(lines: &[&str]) -> Vec<(String, bool)> {
        let mut b = Blocks::default();
        let mut out = Vec::new();
        for l in lines {
            let words: Vec<&str> = l.split(' ').collect();
            match b.line(&words, &env()) {
                Ok(Directive::Line { masked }) => out.push((l.to_string(), !masked)),
                Ok(Directive::Handled) => {}
                Err(e) => out.push((format!("ERR {e}"), false)),
            }
        }
        assert!(!b.open());
        out.into_iter().filter(|(_, used)| *used).collect()
    }

    #[test]
    fn blocks_choose_one_branch() {
        let used = run(&[
            ".if 0", "a", ".elif 1", "b", ".elif 1", "c", ".else", "d", ".endif", "e",
        ]);
        assert_eq!(used, [("b".into(), true), ("e".into(), true)]);
        let used = run(&[".if 0", "a", ".elif 0", "b", ".else", "c", ".endif"]);
        assert_eq!(used, [("c".into(), true)]);
        // A nested block inside a dropped one is skipped whole, even its
        // unparsable condition.
        let used = run(&[
            ".if 0", ".if (((", "a", ".else", "b", ".endif", ".else", "c", ".endif",
        ]);
        assert_eq!(used, [("c".into(), true)]);
    }

    #[test]
    fn block_errors() {
        let mut b = Blocks::default();
        let e = |b: &mut Blocks, l: &str| match b.line(&l.split(' ').collect::<Vec<_>>(), &env()) {
            Err(e) => e,
            Ok(_) => panic!("{l} accepted"),
        };
        assert_eq!(e(&mut b, ".endif"), "lone '.endif' with no matching '.if'.");
        assert_eq!(e(&mut b, ".else"), "lone '.else' with no matching '.if'.");
        assert_eq!(e(&mut b, ".elif 1"), "lone '.elif' with no matching '.if'.");
        assert!(b.line(&[".if", "1"], &env()).is_ok());
        assert!(b.line(&[".else"], &env()).is_ok());
        assert_eq!(
            e(&mut b, ".else"),
            "'.else' after '.else' is not permitted."
        );
        assert_eq!(
            e(&mut b, ".elif 1"),
            "'.elif' after '.else' is not permitted."
        );
        assert_eq!(
            e(&mut b, ".endif x"),
            "Unexpected argument 'x' for '.endif'."
        );
    }
}
