//! Drives parsing: walks the lines of every file, tracks the current section
//! and the defaults in force, dispatches keywords, and runs the checks of
//! `checks` when sections close and when everything is read.

use super::checks::{self, Names};
use super::cond::{Blocks, Directive};
use super::environ::Overlay;
use super::global;
use super::lexer::{self, Env, LineInfo, Words};
use super::proxy::{self, builtin_defaults, check_name, inherit, SectionKind};
use super::{
    process, Config, ConfigError, ConfigNotice, ConfigWarning, Global, Location, Proxy, ProxyKind,
    SharedTimeouts,
};
use std::collections::HashMap;
use std::sync::Arc;

/// HAProxy sections that luahost does not implement; their lines are skipped.
const OTHER_SECTIONS: &[&str] = &[
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "crt-store",
    "traces",
    "log-forward",
    "acme",
];

/// The section the current line belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Before the first section of a file.
    None,
    Global,
    Defaults,
    /// A proxy, by index in `Parser::proxies`.
    Proxy(usize),
    /// A section luahost skips (already reported).
    Skipped,
}

struct Parser<'e> {
    /// The environment with the `setenv` & co. read so far.
    env: Overlay<'e>,
    global: Global,
    proxies: Vec<Proxy>,
    /// The defaults in force: the last `defaults` section read.
    defaults: Proxy,
    /// The name of the `defaults` section being read, if it has one.
    defaults_name: Option<String>,
    /// Named defaults sections, for `from NAME`.
    named_defaults: HashMap<String, Proxy>,
    /// The timeout records proxies share.
    shared_timeouts: SharedTimeouts,
    section: Section,
    /// The current proxy has a `bind` line, valid or not (an invalid one is
    /// already reported; "no bind" would only repeat it).
    bind_written: bool,
    /// Proxy names, to find clashes and backend references.
    names: Names,
    /// Indexes of the proxies with frontend capability.
    frontends: Vec<usize>,
    /// Every file name seen, in order, to sort messages by position.
    files: Vec<Arc<str>>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
    notices: Vec<ConfigNotice>,
    /// An `.alert` line stopped the parsing, as in HAProxy.
    aborted: bool,
}

/// The lines of `text` without their `\n`; a final `\n` ends the last
/// line rather than starting an empty one. (`memchr` finds the line ends
/// several bytes at a time: a large configuration is mostly line ends to
/// find.)
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text.strip_suffix(b"\n").unwrap_or(text));
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r) {
            Some(end) => {
                rest = r.get(end + 1..);
                r.get(..end)
            }
            None => rest.take(),
        }
    })
}

/// An upper bound of the proxy sections in `text`: lines starting with
/// "frontend", "backend" or "listen".
fn count_sections(text: &[u8]) -> usize {
    lines(text)
        .filter(|l| {
            let l = l.trim_ascii_start();
            l.starts_with(b"backend") || l.starts_with(b"frontend") || l.starts_with(b"listen")
        })
        .count()
}

/// Parses `sources` (file name, contents) in order as one configuration.
pub(crate) fn parse<'a>(
    sources: impl IntoIterator<Item = (Arc<str>, &'a [u8])>,
    env: &dyn Env,
) -> Result<Config, Vec<ConfigError>> {
    let sources: Vec<(Arc<str>, &[u8])> = sources.into_iter().collect();
    // Sized once: with hundreds of thousands of sections, growing the list
    // by doubling would copy it again and again (and touch twice the
    // memory at the last step).
    let sections = sources.iter().map(|(_, t)| count_sections(t)).sum();
    let mut p = Parser {
        env: Overlay::new(env),
        global: Global::default(),
        proxies: Vec::with_capacity(sections),
        defaults: builtin_defaults(&Location {
            file: Arc::from(""),
            line: 0,
        }),
        defaults_name: None,
        named_defaults: HashMap::new(),
        shared_timeouts: SharedTimeouts::default(),
        section: Section::None,
        bind_written: false,
        names: Names::default(),
        frontends: Vec::new(),
        files: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
        notices: Vec::new(),
        aborted: false,
    };
    for (name, text) in sources {
        if p.aborted {
            break;
        }
        p.file(name, text);
    }
    p.finish()
}

/// Empties a vector of borrowed words and returns its allocation with a new
/// lifetime, so each line reuses one vector instead of allocating its own.
/// (Collecting a `Map` over `vec::IntoIter` into a vector of a same-sized type
/// reuses the buffer in place.)
fn recycle<'b>(mut v: Vec<&str>) -> Vec<&'b str> {
    v.clear();
    v.into_iter().map(|_| "").collect()
}

impl Parser<'_> {
    /// Records a warning about the line at `loc`, if there is one.
    fn warn(&mut self, loc: &Location, message: Option<String>) {
        if let Some(message) = message {
            self.warnings.push(ConfigWarning {
                location: Some(loc.clone()),
                message,
            });
        }
    }

    fn error(&mut self, loc: &Location, message: String) {
        self.errors.push(ConfigError {
            location: Some(loc.clone()),
            message,
        });
    }

    /// The current section's name, for `${.SECTION}`.
    fn section_label(&self) -> &str {
        match self.section {
            Section::None | Section::Skipped => "",
            Section::Global => "global",
            Section::Defaults => self.defaults_name.as_deref().unwrap_or("defaults"),
            Section::Proxy(i) => self.proxies.get(i).map(|p| p.name.as_str()).unwrap_or(""),
        }
    }

    fn file(&mut self, name: Arc<str>, text: &[u8]) {
        self.files.push(name.clone());
        // Like HAProxy, every file starts outside any section, while the
        // defaults in force carry over from the previous file.
        self.section = Section::None;
        let mut words = Words::default();
        let mut scratch: Vec<&str> = Vec::new();
        // `.if` blocks do not span files.
        let mut blocks = Blocks::default();
        let mut last_line = 0;
        for (index, raw) in lines(text).enumerate() {
            let line = index + 1;
            last_line = line;
            let info = LineInfo {
                file: &name,
                line,
                section: self.section_label(),
            };
            let split = lexer::split(raw, &self.env, &info, &mut words);
            if let Err(message) = split {
                self.error(&super::location(&name, line), message);
                continue;
            }
            if words.is_empty() {
                continue;
            }
            let mut refs = recycle(std::mem::take(&mut scratch));
            refs.extend(words.iter());
            let loc = super::location(&name, line);
            match blocks.line(&refs, &self.env) {
                Ok(Directive::Line { masked: false }) => self.line(&refs, &loc),
                Ok(Directive::Line { masked: true }) | Ok(Directive::Handled) => {}
                Err(message) => {
                    // A broken block structure makes the rest meaningless.
                    self.error(&loc, message);
                    self.aborted = true;
                }
            }
            scratch = recycle(refs);
            if self.aborted {
                return;
            }
        }
        if blocks.open() {
            let loc = super::location(&name, last_line.max(1));
            self.error(&loc, "non-terminated '.if' block.".to_string());
            self.aborted = true;
        }
        self.close_section();
    }

    /// Handles `.alert`, `.warning`, `.notice`, `.diag` and unknown
    /// directives (a line starting with a dot).
    fn directive(&mut self, words: &[&str], loc: &Location) -> Result<(), String> {
        let kw = words.first().copied().unwrap_or_default();
        let level = match kw {
            ".alert" => "ALERT",
            ".warning" => "WARNING",
            ".notice" => "NOTICE",
            ".diag" => "DIAG",
            _ => return Err(format!("unknown directive '{kw}'.")),
        };
        if let Some(extra) = words.get(2) {
            return Err(format!(
                "Unexpected argument '{extra}' for '{kw}'. Use quotes if the message should contain spaces."
            ));
        }
        let message = words.get(1).copied().unwrap_or_default().to_string();
        match level {
            "ALERT" => {
                self.aborted = true;
                Err(format!("'{message}'."))
            }
            // HAProxy prints diagnostics only in its diagnostic mode (-dD),
            // which luahost does not have.
            "DIAG" => Ok(()),
            _ => {
                self.notices.push(ConfigNotice {
                    level,
                    location: loc.clone(),
                    message,
                });
                Ok(())
            }
        }
    }

    /// Handles one non-empty line.
    fn line(&mut self, words: &[&str], loc: &Location) {
        let Some(&kw) = words.first() else {
            return;
        };
        let result = match kw {
            "global" | "defaults" | "frontend" | "backend" | "listen" => {
                self.start_section(words, loc)
            }
            _ if OTHER_SECTIONS.contains(&kw) => {
                self.close_section();
                self.section = Section::Skipped;
                Err(format!(
                    "'{kw}' sections are not supported yet by luahost; the lines of this section are ignored"
                ))
            }
            _ if kw.starts_with('.') => self.directive(words, loc),
            _ => match self.section {
                Section::None => Err(format!(
                    "unknown keyword '{kw}' out of section; a configuration file starts with a section keyword: global, defaults, frontend, backend or listen"
                )),
                Section::Skipped => Ok(()),
                Section::Global => self.global_keyword(words, loc),
                Section::Defaults => {
                    proxy::keyword(&mut self.defaults, SectionKind::Defaults, words, loc)
                        .map(|w| self.warn(loc, w))
                }
                Section::Proxy(i) => match self.proxies.get_mut(i) {
                    Some(p) => {
                        self.bind_written |= kw == "bind";
                        let sect = SectionKind::from(p.kind);
                        proxy::keyword(p, sect, words, loc).map(|w| self.warn(loc, w))
                    }
                    None => Ok(()),
                },
            },
        };
        if let Err(message) = result {
            self.error(loc, message);
        }
    }

    /// Handles a `global` line: environment and process keywords first,
    /// then the others.
    fn global_keyword(&mut self, words: &[&str], loc: &Location) -> Result<(), String> {
        if let Some(result) = self.env.keyword(words) {
            self.global.process.env = self.env.ops.clone();
            return result;
        }
        if let Some(result) = process::keyword(&mut self.global.process, words, loc) {
            if let Some(message) = result? {
                self.warnings.push(ConfigWarning {
                    location: Some(loc.clone()),
                    message,
                });
            }
            return Ok(());
        }
        let kw = words.first().copied().unwrap_or_default();
        let lua_loaded = !self.global.lua_loads.is_empty();
        global::keyword(&mut self.global, words, loc)?;
        if kw == "tune.lua.bool-sample-conversion" && lua_loaded {
            self.warnings.push(ConfigWarning {
                location: Some(loc.clone()),
                message: "ignored as some Lua was loaded already. \"tune.lua.bool-sample-conversion\" must be set before any \"lua-load\" or \"lua-load-per-thread\" directive for it to be considered.".to_string(),
            });
        }
        Ok(())
    }

    /// Leaves the current section; a named defaults section becomes available
    /// to `from NAME` once it is complete.
    fn close_section(&mut self) {
        match self.section {
            Section::Defaults => {
                if let Some(name) = self.defaults_name.take() {
                    self.named_defaults.insert(name, self.defaults.clone());
                }
            }
            Section::Proxy(i) => {
                if let Some(p) = self.proxies.get(i) {
                    let (errors, warnings) = (&mut self.errors, &mut self.warnings);
                    checks::check_proxy(p, self.bind_written, errors, warnings);
                }
                self.bind_written = false;
            }
            _ => {}
        }
        self.section = Section::None;
    }

    /// Handles a section header line.
    fn start_section(&mut self, words: &[&str], loc: &Location) -> Result<(), String> {
        self.close_section();
        let kw = words.first().copied().unwrap_or_default();
        if kw == "global" {
            self.section = Section::Global;
            return global::at_most(words, 1);
        }
        // NAME [from DEFAULTS]; defaults may omit NAME.
        let (name, from, extra) = match words.get(1..).unwrap_or_default() {
            [] => (None, None, None),
            ["from", d, rest @ ..] if kw == "defaults" => (None, Some(*d), rest.first()),
            [n, "from", d, rest @ ..] => (Some(*n), Some(*d), rest.first()),
            [n, rest @ ..] => (Some(*n), None, rest.first()),
        };
        // The section is entered even when its header is wrong, so that the
        // lines below are still checked rather than reported as out of section.
        let mut problem = None;
        let template = match from {
            Some(d) => match self.named_defaults.get(d) {
                Some(t) => t,
                None => {
                    problem = Some(format!(
                        "'from {d}': no defaults section named '{d}' is declared above"
                    ));
                    &self.defaults
                }
            },
            None => &self.defaults,
        };
        if kw == "defaults" {
            // A new defaults section replaces the previous one entirely.
            self.defaults = if from.is_some() {
                template.clone()
            } else {
                builtin_defaults(loc)
            };
            self.defaults.location = loc.clone();
            self.defaults_name = name.map(str::to_string);
            self.section = Section::Defaults;
            if let Some(n) = name {
                check_name("defaults section", n)?;
            }
        } else {
            let kind = match kw {
                "frontend" => ProxyKind::Frontend,
                "backend" => ProxyKind::Backend,
                _ => ProxyKind::Listen,
            };
            let proxy = inherit(
                template,
                name.unwrap_or_default(),
                kind,
                loc,
                &mut self.shared_timeouts,
            );
            let index = self.proxies.len();
            self.proxies.push(proxy);
            self.section = Section::Proxy(index);
            if kind.has_frontend() {
                self.frontends.push(index);
            }
            let Some(n) = name else {
                return Err(format!("'{kw}' expects a name"));
            };
            // Registered even when invalid, so that references to it do not
            // add a second error. Clashes are found once all files are read.
            self.names.register(n, index);
            check_name(kw, n)?;
        }
        if let Some(problem) = problem {
            return Err(problem);
        }
        if let Some(extra) = extra {
            return Err(format!(
                "'{kw}' takes a name and an optional 'from DEFAULTS'; unexpected '{extra}' (listening addresses go on 'bind' lines)"
            ));
        }
        Ok(())
    }

    /// The checks that need the whole configuration, then the result.
    fn finish(mut self) -> Result<Config, Vec<ConfigError>> {
        let mut errors = std::mem::take(&mut self.errors);
        let mut warnings = std::mem::take(&mut self.warnings);
        // After an `.alert` (or a broken block), HAProxy reports nothing more.
        if !self.aborted {
            checks::check_references(&self.proxies, &self.frontends, &mut self.names, &mut errors);
        }
        if errors.is_empty() {
            sort_by_position(&mut warnings, &self.files, |w| w.location.as_ref());
            return Ok(Config {
                global: self.global,
                proxies: self.proxies,
                warnings,
                notices: self.notices,
            });
        }
        sort_by_position(&mut errors, &self.files, |e| e.location.as_ref());
        Err(errors)
    }
}

/// Orders messages by file (in parsing order) then line, keeping the order of
/// messages about the same line; messages without a location come first.
fn sort_by_position<T>(items: &mut [T], files: &[Arc<str>], loc: impl Fn(&T) -> Option<&Location>) {
    items.sort_by_key(|item| match loc(item) {
        None => (0, 0),
        Some(l) => {
            // Pointer equality tells apart a file given twice.
            let file = files
                .iter()
                .position(|f| Arc::ptr_eq(f, &l.file))
                .or_else(|| files.iter().position(|f| *f == l.file))
                .unwrap_or(files.len());
            (file + 1, l.line)
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lines` cuts a file as splitting at every `\n` after dropping one
    /// final `\n` does, empty lines and a missing final `\n` included.
    #[test]
    fn lines_cut_like_split() {
        for text in [
            "",
            "\n",
            "\n\n",
            "a",
            "a\n",
            "a\n\n",
            "a\nb",
            "\na\r\n\nb\n",
            "x\n\n\ny\n",
        ] {
            let t = text.as_bytes();
            let expected: Vec<&[u8]> = t
                .strip_suffix(b"\n")
                .unwrap_or(t)
                .split(|&b| b == b'\n')
                .collect();
            assert_eq!(lines(t).collect::<Vec<_>>(), expected, "{text:?}");
        }
    }

    #[test]
    fn sections_are_counted() {
        let text = b"global\nfrontend f\n  bind :1\n backend b\nlisten l\n#backend c\n";
        assert_eq!(count_sections(text), 3);
    }
}
