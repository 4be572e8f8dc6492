//! Splits one configuration line into words the way HAProxy does: blanks
//! separate words, `#` starts a comment, quotes group, backslashes escape and
//! `${NAME}` inside double quotes expands environment variables.
//!
//! The splitter writes every line into the same [`Words`] buffer so that a
//! large configuration costs no allocation per line.

use std::borrow::Cow;

/// Where environment variables come from; tests substitute a fixed map.
pub(crate) trait Env {
    /// The value of variable `name`, if it is set.
    fn var(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// The process environment.
pub(crate) struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        // A value that is not UTF-8 is still used; the odd bytes become U+FFFD.
        std::env::var_os(name).map(|v| Cow::Owned(v.to_string_lossy().into_owned()))
    }
}

/// What the pseudo-variables `${.FILE}`, `${.LINE}` and `${.SECTION}` expand to.
pub(crate) struct LineInfo<'a> {
    /// The configuration file name.
    pub file: &'a str,
    /// The 1-based line number.
    pub line: usize,
    /// The current section's name, or its keyword when it has none.
    pub section: &'a str,
}

/// The words of one line, stored back to back in one reusable string.
#[derive(Debug, Default)]
pub(crate) struct Words {
    text: String,
    spans: Vec<(usize, usize)>,
}

impl Words {
    /// Whether the line held no word (blank or comment only).
    pub(crate) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The words in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        // `split` checked every span against character boundaries, so `get`
        // never fails; the fallback only keeps this free of panics.
        self.spans
            .iter()
            .map(|&(a, b)| self.text.get(a..b).unwrap_or(""))
    }
}

/// The bytes and word boundaries being built for a line.
struct Builder {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
    /// Start of the current word in `bytes`.
    start: usize,
    /// A word is open: it has content or a quote opened it (so `""` is an
    /// empty word rather than nothing).
    open: bool,
    /// The open word received a `${NAME[*]}` expansion: if that leaves it
    /// empty it is dropped, as an empty list expands to no word.
    expanded: bool,
}

impl Builder {
    fn push(&mut self, byte: u8) {
        self.bytes.push(byte);
        self.open = true;
    }

    fn end_word(&mut self) {
        let empty = self.bytes.len() == self.start;
        if self.open && !(empty && self.expanded) {
            self.spans.push((self.start, self.bytes.len()));
        }
        self.start = self.bytes.len();
        self.open = false;
        self.expanded = false;
    }
}

/// The blanks that separate words (C `isspace` minus the line ends).
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\x0b' | b'\x0c')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `line` (without its `\n`) into `out`, replacing what it held.
/// On error `out` is left empty and the message says what is wrong.
pub(crate) fn split(
    line: &[u8],
    env: &dyn Env,
    info: &LineInfo<'_>,
    out: &mut Words,
) -> Result<(), String> {
    // Reuse the previous line's allocations.
    let mut bytes = std::mem::take(&mut out.text).into_bytes();
    bytes.clear();
    let mut spans = std::mem::take(&mut out.spans);
    spans.clear();
    let mut b = Builder {
        bytes,
        spans,
        start: 0,
        open: false,
        expanded: false,
    };
    let result = scan(line, env, info, &mut b);
    let Builder { bytes, spans, .. } = b;
    out.spans = spans;
    if let Err(e) = result {
        out.spans.clear();
        return Err(e);
    }
    match String::from_utf8(bytes) {
        Ok(text) => {
            // A `\xNN` escape can cut a multi-byte character in two words.
            if out
                .spans
                .iter()
                .all(|&(a, z)| text.is_char_boundary(a) && text.is_char_boundary(z))
            {
                out.text = text;
                Ok(())
            } else {
                out.spans.clear();
                Err("a word is not valid UTF-8 text".to_string())
            }
        }
        Err(_) => {
            out.spans.clear();
            Err("the line is not valid UTF-8 text".to_string())
        }
    }
}

/// The bytes that need a decision outside single quotes; everything else is
/// copied as is, a whole run at a time.
const SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let specials = b" \t\x0b\x0c\r\0#'\"\\$";
    let mut i = 0;
    while i < specials.len() {
        table[specials[i] as usize] = true;
        i += 1;
    }
    table
};

/// The splitting loop proper, writing into `b`.
fn scan(line: &[u8], env: &dyn Env, info: &LineInfo<'_>, b: &mut Builder) -> Result<(), String> {
    let mut squote = false;
    let mut dquote = false;
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if !squote && !SPECIAL[usize::from(c)] {
            let run = line[i..]
                .iter()
                .position(|&c| SPECIAL[usize::from(c)])
                .unwrap_or(line.len() - i);
            b.bytes.extend_from_slice(&line[i..i + run]);
            b.open = true;
            i += run;
            continue;
        }
        if squote {
            // Single quotes are literal: no escapes, no expansion.
            if c == b'\'' {
                squote = false;
            } else if c == b'\r' {
                break;
            } else if c == 0 {
                return Err("the line contains a NUL character".to_string());
            } else {
                b.push(c);
            }
            i += 1;
            continue;
        }
        match c {
            // HAProxy ends a line at a carriage return, which also makes
            // CRLF files read like LF ones.
            b'\r' => break,
            0 => return Err("the line contains a NUL character".to_string()),
            b'#' if !dquote => break,
            b'\'' if !dquote => {
                squote = true;
                b.open = true;
                i += 1;
            }
            b'"' => {
                dquote = !dquote;
                b.open = true;
                i += 1;
            }
            c if is_blank(c) && !dquote => {
                b.end_word();
                while i < line.len() && is_blank(line[i]) {
                    i += 1;
                }
            }
            b'\\' => i = escape(line, i, dquote, b)?,
            b'$' if dquote => i = expand(line, i, env, info, b)?,
            _ => {
                b.push(c);
                i += 1;
            }
        }
    }
    if squote || dquote {
        let q = if squote { "single" } else { "double" };
        return Err(format!("unmatched {q} quote"));
    }
    b.end_word();
    Ok(())
}

/// Handles the backslash at `line[i]`; returns the index to continue from.
fn escape(line: &[u8], i: usize, dquote: bool, b: &mut Builder) -> Result<usize, String> {
    let next = line.get(i + 1).copied();
    let (byte, used) = match next {
        Some(c @ (b' ' | b'\\' | b'#' | b'\'' | b'"')) => (c, 2),
        Some(b't') => (b'\t', 2),
        Some(b'n') => (b'\n', 2),
        Some(b'r') => (b'\r', 2),
        // `\$` only means something where `$` would expand.
        Some(b'$') if dquote => (b'$', 2),
        Some(b'x') => {
            let hi = line.get(i + 2).copied().and_then(hex_value);
            let lo = line.get(i + 3).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => ((hi << 4) | lo, 4),
                _ => return Err("invalid '\\x' escape; it expects two hex digits".to_string()),
            }
        }
        // Anything else is not an escape and keeps its backslash, so regex
        // classes such as `\d` or back-references such as `\1` survive.
        _ => (b'\\', 1),
    };
    b.push(byte);
    Ok(i + used)
}

/// Expands the `$` at `line[i]` inside double quotes; returns the index to
/// continue from.
fn expand(
    line: &[u8],
    i: usize,
    env: &dyn Env,
    info: &LineInfo<'_>,
    b: &mut Builder,
) -> Result<usize, String> {
    let mut j = i + 1;
    let brace = line.get(j) == Some(&b'{');
    if brace {
        j += 1;
    }
    let name_start = j;
    match line.get(j) {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b'.' => {}
        _ => return Err(
            "invalid environment variable name after '$' (write '\\$' for a literal dollar sign)"
                .to_string(),
        ),
    }
    if line[j] == b'.' {
        j += 1;
    }
    while j < line.len() && (line[j].is_ascii_alphanumeric() || line[j] == b'_') {
        j += 1;
    }
    // The name is ASCII by construction.
    let name = String::from_utf8_lossy(&line[name_start..j]);
    let mut value: Option<Cow<'_, [u8]>> = match name.as_ref() {
        ".FILE" => Some(Cow::Borrowed(info.file.as_bytes())),
        ".LINE" => Some(Cow::Owned(info.line.to_string().into_bytes())),
        ".SECTION" => Some(Cow::Borrowed(info.section.as_bytes())),
        n if n.starts_with('.') => {
            return Err(format!(
                "unknown pseudo-variable '{n}' (known: .FILE, .LINE, .SECTION)"
            ))
        }
        n => env.var(n).map(|v| match v {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        }),
    };
    let mut split_words = false;
    if brace && line.get(j) == Some(&b'[') {
        if line.get(j + 1) == Some(&b'*') && line.get(j + 2) == Some(&b']') {
            split_words = true;
            j += 3;
        } else {
            return Err(format!(
                "invalid word expansion in '${{{name}[...'; only '[*]' is supported"
            ));
        }
    }
    if brace {
        if line.get(j) == Some(&b'-') {
            let default_start = j + 1;
            let Some(len) = line[default_start..].iter().position(|&c| c == b'}') else {
                return Err(format!("unmatched brace in '${{{name}'"));
            };
            if value.is_none() {
                // Taken as written: no escapes or expansion inside a default.
                value = Some(Cow::Borrowed(&line[default_start..default_start + len]));
            }
            j = default_start + len;
        }
        if line.get(j) != Some(&b'}') {
            return Err(format!("unmatched brace in '${{{name}'"));
        }
        j += 1;
    }
    // An undefined variable expands to nothing.
    let value = value.unwrap_or_default();
    if split_words {
        b.expanded = true;
        let mut first = true;
        for piece in value.split(|c| c.is_ascii_whitespace()) {
            if piece.is_empty() {
                continue;
            }
            if !first {
                b.end_word();
                // The rest of the word is still inside the double quotes.
                b.open = true;
                b.expanded = true;
            }
            first = false;
            b.bytes.extend_from_slice(piece);
        }
    } else {
        b.bytes.extend_from_slice(&value);
        b.open = true;
    }
    Ok(j)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A fixed environment for tests.
    pub(crate) struct MapEnv(pub HashMap<String, String>);

    impl MapEnv {
        pub(crate) fn new(pairs: &[(&str, &str)]) -> MapEnv {
            MapEnv(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        }
    }

    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<Cow<'_, str>> {
            self.0.get(name).map(|v| Cow::Borrowed(v.as_str()))
        }
    }

    fn env() -> MapEnv {
        MapEnv::new(&[
            ("HOME", "/home/me"),
            ("EMPTY", ""),
            ("LIST", "a b  c"),
            ("SPACED", " x "),
            ("PORT", "8080"),
        ])
    }

    fn split_with(line: &[u8], env: &dyn Env) -> Result<Vec<String>, String> {
        let mut w = Words::default();
        let info = LineInfo {
            file: "t.cfg",
            line: 7,
            section: "web",
        };
        split(line, env, &info, &mut w)?;
        Ok(w.iter().map(str::to_string).collect())
    }

    fn words(line: &str) -> Vec<String> {
        match split_with(line.as_bytes(), &env()) {
            Ok(w) => w,
            Err(e) => panic!("{line:?} failed: {e}"),
        }
    }

    fn fails(line: &str) -> String {
        match split_with(line.as_bytes(), &env()) {
            Ok(w) => panic!("{line:?} split into {w:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn blanks_and_comments() {
        assert!(words("").is_empty());
        assert!(words("   \t ").is_empty());
        assert!(words("# only a comment").is_empty());
        assert!(words("   # indented comment").is_empty());
        assert_eq!(
            words("  bind  :80\t\tname x  "),
            ["bind", ":80", "name", "x"]
        );
        assert_eq!(words("maxconn 10 # ten"), ["maxconn", "10"]);
        assert_eq!(words("maxconn 10# ten"), ["maxconn", "10"]);
        assert_eq!(words("a\x0bb\x0cc"), ["a", "b", "c"]);
    }

    #[test]
    fn line_ends() {
        assert_eq!(words("mode http\r"), ["mode", "http"]);
        assert_eq!(words("mode http\rjunk"), ["mode", "http"]);
    }

    #[test]
    fn double_quotes() {
        assert_eq!(words(r#"a "b c" d"#), ["a", "b c", "d"]);
        assert_eq!(words(r#"foo"bar baz""#), ["foobar baz"]);
        assert_eq!(words(r#""a"'b'c"#), ["abc"]);
        assert_eq!(words(r##"x "# not a comment""##), ["x", "# not a comment"]);
        assert_eq!(words(r#"x "it's""#), ["x", "it's"]);
        assert_eq!(words(r#"x "tab\there""#), ["x", "tab\there"]);
        assert_eq!(words(r#"x "q\"q""#), ["x", "q\"q"]);
    }

    #[test]
    fn empty_words_are_kept() {
        assert_eq!(words(r#"set-header X """#), ["set-header", "X", ""]);
        assert_eq!(words(r#"a '' b"#), ["a", "", "b"]);
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(words(r#"a 'b c' d"#), ["a", "b c", "d"]);
        assert_eq!(words(r"a '\t\x41\\'"), ["a", r"\t\x41\\"]);
        assert_eq!(words(r#"a '${HOME} "q" # x'"#), ["a", r#"${HOME} "q" # x"#]);
    }

    #[test]
    fn backslash_escapes() {
        assert_eq!(words(r"a\ b c"), ["a b", "c"]);
        assert_eq!(words(r"\#x y"), ["#x", "y"]);
        assert_eq!(words(r"a\\b"), [r"a\b"]);
        assert_eq!(words(r#"\"q\""#), [r#""q""#]);
        assert_eq!(words(r"\'q\'"), ["'q'"]);
        assert_eq!(words(r"a\tb\nc\rd"), ["a\tb\nc\rd"]);
        assert_eq!(words(r"\x41\x62\x2A"), ["Ab*"]);
        assert_eq!(words(r"\xc3\xa9"), ["é"]);
        // Not escapes: the backslash stays.
        assert_eq!(words(r"^/(\d+)\.html \1"), [r"^/(\d+)\.html", r"\1"]);
        assert_eq!(words(r"\$HOME"), [r"\$HOME"]);
        assert_eq!(words(r#""\$HOME""#), ["$HOME"]);
        assert_eq!(words(r"end\"), [r"end\"]);
    }

    #[test]
    fn escape_errors() {
        assert!(fails(r"\x4").contains("two hex digits"));
        assert!(fails(r"\xZZ").contains("two hex digits"));
        assert!(fails(r#""\xg1""#).contains("two hex digits"));
    }

    #[test]
    fn quote_errors() {
        assert_eq!(fails(r#"a "b"#), "unmatched double quote");
        assert_eq!(fails("a 'b"), "unmatched single quote");
        assert_eq!(fails("a 'b\r'"), "unmatched single quote");
    }

    #[test]
    fn env_expansion() {
        assert_eq!(
            words(r#"lua-load "${HOME}/x.lua""#),
            ["lua-load", "/home/me/x.lua"]
        );
        assert_eq!(words(r#""$HOME/x""#), ["/home/me/x"]);
        assert_eq!(words(r#"bind ":${PORT}""#), ["bind", ":8080"]);
        // Only inside double quotes.
        assert_eq!(words("${HOME}"), ["${HOME}"]);
        assert_eq!(words("'${HOME}'"), ["${HOME}"]);
        // Undefined and empty variables expand to nothing but keep the word.
        assert_eq!(words(r#"a "${NOPE}" b"#), ["a", "", "b"]);
        assert_eq!(words(r#"a "${EMPTY}x""#), ["a", "x"]);
        // Defaults apply to undefined variables only.
        assert_eq!(words(r#""${NOPE-fallback value}""#), ["fallback value"]);
        assert_eq!(words(r#""${HOME-fallback}""#), ["/home/me"]);
        assert_eq!(words(r#""${EMPTY-fallback}""#), [""]);
        assert_eq!(words(r#""${NOPE-}x""#), ["x"]);
        // The value is not re-scanned for quotes, comments or escapes.
        let e = MapEnv::new(&[("V", r#"a"b #c\t"#)]);
        assert_eq!(split_with(br#""${V}""#, &e).unwrap(), [r#"a"b #c\t"#]);
    }

    #[test]
    fn env_word_splitting() {
        assert_eq!(words(r#"x "${LIST[*]}" y"#), ["x", "a", "b", "c", "y"]);
        assert_eq!(words(r#"x "p${LIST[*]}s""#), ["x", "pa", "b", "cs"]);
        assert_eq!(words(r#"x "${SPACED[*]}""#), ["x", "x"]);
        assert_eq!(words(r#"x "${EMPTY[*]}" y"#), ["x", "y"]);
        assert_eq!(words(r#"x "${NOPE[*]}""#), ["x"]);
        assert_eq!(words(r#"x "${NOPE[*]-d e}""#), ["x", "d", "e"]);
        // Without [*] a list stays one word.
        assert_eq!(words(r#"x "${LIST}""#), ["x", "a b  c"]);
    }

    #[test]
    fn pseudo_variables() {
        assert_eq!(
            words(r#""${.FILE}:${.LINE}" "$.SECTION""#),
            ["t.cfg:7", "web"]
        );
        assert!(fails(r#""${.NOPE}""#).contains("unknown pseudo-variable '.NOPE'"));
    }

    #[test]
    fn env_errors() {
        assert!(fails(r#""${HOME""#).contains("unmatched brace"));
        assert!(fails(r#""${HOME-x""#).contains("unmatched brace"));
        assert!(fails(r#""${}""#).contains("invalid environment variable name"));
        assert!(fails(r#""$5""#).contains("invalid environment variable name"));
        assert!(fails(r#""cost: $""#).contains("invalid environment variable name"));
        assert!(fails(r#""${LIST[0]}""#).contains("only '[*]'"));
        // `[*]` needs braces; without them the bracket is plain text.
        assert_eq!(words(r#""$LIST[*]""#), ["a b  c[*]"]);
    }

    #[test]
    fn utf8_and_nul() {
        assert_eq!(
            words("description héllo wörld"),
            ["description", "héllo", "wörld"]
        );
        assert!(split_with(b"a \xff b", &env())
            .unwrap_err()
            .contains("UTF-8"));
        // The stray byte is in the comment, which is never decoded.
        assert_eq!(split_with(b"a # \xff", &env()).unwrap(), ["a"]);
        assert!(split_with(br"\xc3 \xa9", &env())
            .unwrap_err()
            .contains("UTF-8"));
        assert!(split_with(br"\xff", &env()).unwrap_err().contains("UTF-8"));
        assert!(split_with(b"a\0b", &env()).unwrap_err().contains("NUL"));
        assert!(split_with(b"'a\0b'", &env()).unwrap_err().contains("NUL"));
    }

    #[test]
    fn buffer_reuse_between_lines() {
        let mut w = Words::default();
        let info = LineInfo {
            file: "f",
            line: 1,
            section: "",
        };
        split(b"first line here", &env(), &info, &mut w).unwrap();
        assert_eq!(w.iter().count(), 3);
        split(b"x", &env(), &info, &mut w).unwrap();
        assert_eq!(w.iter().collect::<Vec<_>>(), ["x"]);
        assert!(split(b"\"bad", &env(), &info, &mut w).is_err());
        assert!(w.is_empty());
        split(b"again ok", &env(), &info, &mut w).unwrap();
        assert_eq!(w.iter().collect::<Vec<_>>(), ["again", "ok"]);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator: no extra crate needed.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"ab $\\{}[]*-.#'\"\tx0\r\xc3\xa9\xff\0";
        let mut line = Vec::new();
        for _ in 0..20_000 {
            line.clear();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 24) as usize;
            for k in 0..len {
                let r = state.rotate_left(k as u32 * 5);
                line.push(alphabet[(r % alphabet.len() as u64) as usize]);
            }
            let _ = split_with(&line, &env());
        }
    }
}
