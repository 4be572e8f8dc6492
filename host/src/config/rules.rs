//! Reads the rules of `http-request`, `http-response`, `http-after-response`,
//! `tcp-request content` and `tcp-response content`: an action, its
//! arguments, then an optional `if` / `unless` condition.
//!
//! Each action consumes exactly the arguments it takes, as HAProxy's action
//! parsers do, so `set-header X-Mode if` sets the header to the word "if".

use super::acl::parse_condition;
use super::units::parse_u64;
use super::{
    AclDef, Action, Location, RedirectKind, ReplySpec, ReturnBody, Rule, VarRef, VarScope,
};

/// The rule sets, each with the actions it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleSet {
    HttpRequest,
    HttpResponse,
    HttpAfterResponse,
    TcpRequestConnection,
    TcpRequestContent,
    TcpResponseContent,
}

/// The action names, for applicability checks and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Lua,
    UseService,
    SetHeader,
    AddHeader,
    DelHeader,
    ReplaceHeader,
    SetPath,
    SetQuery,
    SetVar,
    UnsetVar,
    Capture,
    Deny,
    Return,
    Redirect,
    SetStatus,
    Allow,
    Accept,
    Reject,
}

impl Name {
    fn of(word: &str) -> Option<Name> {
        Some(match word {
            w if w.starts_with("lua.") => Name::Lua,
            w if w.starts_with("set-var(") => Name::SetVar,
            w if w.starts_with("unset-var(") => Name::UnsetVar,
            "use-service" => Name::UseService,
            "capture" => Name::Capture,
            "set-header" => Name::SetHeader,
            "add-header" => Name::AddHeader,
            "del-header" => Name::DelHeader,
            "replace-header" => Name::ReplaceHeader,
            "set-path" => Name::SetPath,
            "set-query" => Name::SetQuery,
            "deny" => Name::Deny,
            "return" => Name::Return,
            "redirect" => Name::Redirect,
            "set-status" => Name::SetStatus,
            "allow" => Name::Allow,
            "accept" => Name::Accept,
            "reject" => Name::Reject,
            _ => return None,
        })
    }

    /// How the action is shown in lists of known actions.
    fn display(self) -> &'static str {
        match self {
            Name::Lua => "lua.<name>",
            Name::UseService => "use-service lua.<name>",
            Name::SetHeader => "set-header",
            Name::AddHeader => "add-header",
            Name::DelHeader => "del-header",
            Name::ReplaceHeader => "replace-header",
            Name::SetPath => "set-path",
            Name::SetQuery => "set-query",
            Name::SetVar => "set-var(<scope>.<name>)",
            Name::UnsetVar => "unset-var(<scope>.<name>)",
            Name::Capture => "capture <sample> len <length>",
            Name::Deny => "deny",
            Name::Return => "return",
            Name::Redirect => "redirect",
            Name::SetStatus => "set-status",
            Name::Allow => "allow",
            Name::Accept => "accept",
            Name::Reject => "reject",
        }
    }
}

impl RuleSet {
    /// The keyword(s) introducing rules of this set.
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            RuleSet::HttpRequest => "http-request",
            RuleSet::HttpResponse => "http-response",
            RuleSet::HttpAfterResponse => "http-after-response",
            RuleSet::TcpRequestConnection => "tcp-request connection",
            RuleSet::TcpRequestContent => "tcp-request content",
            RuleSet::TcpResponseContent => "tcp-response content",
        }
    }

    /// The actions allowed in this set, in the order they are listed.
    fn actions(self) -> &'static [Name] {
        use Name::*;
        match self {
            RuleSet::HttpRequest => &[
                Lua,
                UseService,
                SetHeader,
                AddHeader,
                DelHeader,
                ReplaceHeader,
                SetPath,
                SetQuery,
                SetVar,
                UnsetVar,
                Capture,
                Deny,
                Return,
                Redirect,
                Allow,
            ],
            RuleSet::HttpResponse => &[
                Lua,
                SetHeader,
                AddHeader,
                DelHeader,
                ReplaceHeader,
                SetVar,
                UnsetVar,
                Deny,
                Return,
                Redirect,
                SetStatus,
                Allow,
            ],
            RuleSet::HttpAfterResponse => &[
                Lua,
                SetHeader,
                AddHeader,
                DelHeader,
                ReplaceHeader,
                SetVar,
                UnsetVar,
                SetStatus,
                Allow,
            ],
            RuleSet::TcpRequestConnection => &[Accept, Reject, SetVar, UnsetVar],
            RuleSet::TcpRequestContent => &[Lua, UseService, Accept, Reject, SetVar, UnsetVar],
            RuleSet::TcpResponseContent => &[Lua, Accept, Reject, SetVar, UnsetVar],
        }
    }

    fn known_list(self) -> String {
        let names: Vec<&str> = self.actions().iter().map(|n| n.display()).collect();
        names.join(", ")
    }
}

/// Whether `w` starts a condition.
fn is_cond(w: &str) -> bool {
    w == "if" || w == "unless"
}

/// Reads one rule. `words` starts at the action; named ACLs must be among
/// `acls`.
pub(crate) fn parse_rule(
    set: RuleSet,
    words: &[&str],
    acls: &[AclDef],
    loc: &Location,
) -> Result<Rule, String> {
    let kw = set.keyword();
    let Some(&action_word) = words.first() else {
        return Err(format!(
            "'{kw}' expects an action; expected one of: {}",
            set.known_list()
        ));
    };
    let Some(name) = Name::of(action_word) else {
        return Err(format!(
            "unknown action '{action_word}' in '{kw}' rules; expected one of: {}",
            set.known_list()
        ));
    };
    if !set.actions().contains(&name) {
        return Err(format!(
            "action '{action_word}' is not valid in '{kw}' rules; expected one of: {}",
            set.known_list()
        ));
    }
    let what = format!("{kw} {action_word}");
    let args = &words[1..];
    let (action, used) = parse_action(name, action_word, args, &what)?;
    // Every action parser reports `used <= args.len()`; `get` keeps a slip
    // from becoming a panic.
    let rest = args.get(used..).unwrap_or_default();
    let cond = match rest.first() {
        None => None,
        Some(w) if is_cond(w) => Some(parse_condition(rest, acls, loc)?),
        Some(w) => {
            let expected = "expected 'if', 'unless' or the end of the line";
            return Err(format!("'{what}': unexpected argument '{w}'; {expected}"));
        }
    };
    Ok(Rule {
        action,
        cond,
        words: words.iter().take(1 + used).map(|w| w.to_string()).collect(),
        location: loc.clone(),
    })
}

/// The first `N` arguments (the rest may only be a condition), or what
/// `what` expects.
fn fixed<'a, const N: usize>(
    args: &[&'a str],
    what: &str,
    expects: &str,
) -> Result<[&'a str; N], String> {
    match args.get(..N).and_then(|a| <[&str; N]>::try_from(a).ok()) {
        Some(a) => Ok(a),
        None => Err(format!("'{what}' expects {expects}")),
    }
}

/// Reads the arguments of action `name`; returns the action and how many
/// arguments it used.
fn parse_action(
    name: Name,
    word: &str,
    args: &[&str],
    what: &str,
) -> Result<(Action, usize), String> {
    let s = |w: &str| w.to_string();
    Ok(match name {
        Name::Lua => {
            let lua_name = word.strip_prefix("lua.").unwrap_or_default();
            if lua_name.is_empty() {
                return Err(format!("'{what}': missing action name after 'lua.'"));
            }
            let n = args.iter().position(|w| is_cond(w)).unwrap_or(args.len());
            let action = Action::Lua {
                name: s(lua_name),
                args: args[..n].iter().map(|w| s(w)).collect(),
            };
            (action, n)
        }
        Name::UseService => {
            let [service] = fixed(args, what, "a service name such as lua.NAME")?;
            match service.strip_prefix("lua.") {
                Some(n) if !n.is_empty() => (Action::UseService { name: s(n) }, 1),
                _ => {
                    return Err(format!(
                        "'{what}': service '{service}' is not supported; only Lua services (lua.NAME) are"
                    ))
                }
            }
        }
        Name::SetHeader | Name::AddHeader => {
            let [header, value] = fixed(args, what, "a header name and a value format")?;
            let (header, value) = (header_name(header, what)?, s(value));
            let action = if name == Name::SetHeader {
                Action::SetHeader {
                    name: header,
                    value,
                }
            } else {
                Action::AddHeader {
                    name: header,
                    value,
                }
            };
            (action, 2)
        }
        Name::DelHeader => {
            let [header] = fixed(args, what, "a header name")?;
            if args.get(1) == Some(&"-m") {
                return Err(format!(
                    "'{what}': the '-m' matching option is not supported yet"
                ));
            }
            (
                Action::DelHeader {
                    name: header_name(header, what)?,
                },
                1,
            )
        }
        Name::ReplaceHeader => {
            let [header, regex, replacement] = fixed(
                args,
                what,
                "a header name, a regular expression and a replacement format",
            )?;
            let action = Action::ReplaceHeader {
                name: header_name(header, what)?,
                regex: s(regex),
                replacement: s(replacement),
            };
            (action, 3)
        }
        Name::SetPath => {
            let [format] = fixed(args, what, "a path format")?;
            (Action::SetPath { format: s(format) }, 1)
        }
        Name::SetQuery => {
            let [format] = fixed(args, what, "a query string format")?;
            (Action::SetQuery { format: s(format) }, 1)
        }
        Name::SetVar => {
            let var = var_ref(word, "set-var")?;
            let [expr] = fixed(args, what, "a sample expression, e.g. req.hdr(host)")?;
            (Action::SetVar { var, expr: s(expr) }, 1)
        }
        Name::Capture => {
            let [expr] = fixed(args, what, "a sample expression and 'len N'")?;
            if args.get(1) != Some(&"len") {
                return Err(format!(
                    "'{what}' expects 'len N' after the sample (the 'id N' form is not supported yet)"
                ));
            }
            let len: usize =
                super::units::int_arg("capture len", "a length", args.get(2).copied(), 1, 65535)?;
            let action = Action::Capture {
                expr: s(expr),
                len,
                slot: 0,
            };
            (action, 3)
        }
        Name::UnsetVar => (
            Action::UnsetVar {
                var: var_ref(word, "unset-var")?,
            },
            0,
        ),
        Name::Deny => {
            let (status, reply, i) = parse_reply(args, what, true)?;
            let custom =
                reply.content_type.is_some() || reply.body.is_some() || !reply.headers.is_empty();
            let reply = custom.then(|| Box::new(reply));
            (Action::Deny { status, reply }, i)
        }
        Name::Return => parse_return(args, what)?,
        Name::Redirect => parse_redirect(args, what)?,
        Name::SetStatus => {
            let code = args.first().copied();
            let status = match code.and_then(parse_u64) {
                Some(c @ 100..=999) => c as u16,
                _ => {
                    return Err(format!(
                        "'{what}' expects a status code between 100 and 999{}",
                        got(code)
                    ))
                }
            };
            let (reason, used) = match args.get(1) {
                Some(&"reason") => match args.get(2) {
                    Some(r) => (Some(s(r)), 3),
                    None => return Err(format!("'{what}': 'reason' expects a text")),
                },
                _ => (None, 1),
            };
            (Action::SetStatus { status, reason }, used)
        }
        Name::Allow => (Action::Allow, 0),
        Name::Accept => (Action::Accept, 0),
        Name::Reject => (Action::Reject, 0),
    })
}

/// ", got 'X'" when there was a word, for messages.
fn got(word: Option<&str>) -> String {
    word.map(|w| format!(", got '{w}'")).unwrap_or_default()
}

/// Checks a header name: a non-empty HTTP token.
fn header_name(name: &str, what: &str) -> Result<String, String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("'{what}': '{name}' is not a valid header name"));
    }
    Ok(name.to_string())
}

/// Reads the status after `key` in `what`: an HTTP status from 200 to 599.
fn status_arg(word: Option<&&str>, what: &str, key: &str) -> Result<u16, String> {
    match word.copied().and_then(parse_u64) {
        Some(c @ 200..=599) => Ok(c as u16),
        _ => Err(format!(
            "'{what}': '{key}' expects an HTTP status code between 200 and 599{}",
            got(word.copied())
        )),
    }
}

/// Reads `set-var(SCOPE.NAME)` or `unset-var(SCOPE.NAME)`.
fn var_ref(word: &str, func: &str) -> Result<VarRef, String> {
    let inner = word
        .strip_prefix(func)
        .and_then(|w| w.strip_prefix('('))
        .and_then(|w| w.strip_suffix(')'));
    let Some(inner) = inner else {
        return Err(format!(
            "'{word}': expected {func}(SCOPE.NAME) with no space inside the parentheses"
        ));
    };
    if inner.contains(',') {
        return Err(format!(
            "'{word}': {func} conditions after ',' are not supported yet"
        ));
    }
    let Some((scope, name)) = inner.split_once('.') else {
        return Err(format!(
            "'{word}': expected SCOPE.NAME inside the parentheses (scopes: proc, sess, txn, req, res)"
        ));
    };
    let scope = match scope {
        "proc" => VarScope::Proc,
        "sess" => VarScope::Sess,
        "txn" => VarScope::Txn,
        "req" => VarScope::Req,
        "res" => VarScope::Res,
        other => {
            return Err(format!(
                "'{word}': unknown variable scope '{other}' (scopes: proc, sess, txn, req, res)"
            ))
        }
    };
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    if name.is_empty() || !name.chars().all(ok) {
        return Err(format!(
            "'{word}': invalid variable name '{name}' (letters, digits, '_' and '.')"
        ));
    }
    Ok(VarRef {
        scope,
        name: name.to_string(),
    })
}

/// Reads `return [status N] [content-type T] [string S | lf-string FMT]`.
fn parse_return(args: &[&str], what: &str) -> Result<(Action, usize), String> {
    let (status, reply, i) = parse_reply(args, what, false)?;
    let action = Action::Return {
        status,
        content_type: reply.content_type,
        body: reply.body,
        headers: reply.headers,
        errorfile: reply.errorfile,
    };
    Ok((action, i))
}

/// Reads the reply arguments of `return` and `deny`: `status N` (also
/// `deny_status N` for deny), `content-type T`, `string S` | `lf-string FMT`
/// | `default-errorfiles`, and any number of `hdr NAME FMT`.
fn parse_reply(
    args: &[&str],
    what: &str,
    deny: bool,
) -> Result<(Option<u16>, ReplySpec, usize), String> {
    let mut status = None;
    let mut reply = ReplySpec {
        content_type: None,
        body: None,
        headers: Vec::new(),
        errorfile: false,
    };
    let mut i = 0;
    while let Some(&key) = args.get(i) {
        if is_cond(key) {
            break;
        }
        let value = args.get(i + 1);
        let text = || {
            value
                .map(|v| v.to_string())
                .ok_or_else(|| format!("'{what}': '{key}' expects a value"))
        };
        let has_body = reply.body.is_some() || reply.errorfile;
        match key {
            "status" if status.is_none() => status = Some(status_arg(value, what, key)?),
            "deny_status" if deny && status.is_none() => status = Some(status_arg(value, what, key)?),
            "content-type" if reply.content_type.is_none() => reply.content_type = Some(text()?),
            "string" if !has_body => reply.body = Some(ReturnBody::String(text()?)),
            "lf-string" if !has_body => reply.body = Some(ReturnBody::LfString(text()?)),
            "default-errorfiles" if !has_body => {
                reply.errorfile = true;
                i += 1;
                continue;
            }
            "hdr" => {
                let (Some(name), Some(fmt)) = (args.get(i + 1), args.get(i + 2)) else {
                    return Err(format!("'{what}': 'hdr' expects a header name and a value format"));
                };
                reply.headers.push((name.to_string(), fmt.to_string()));
                i += 3;
                continue;
            }
            "status" | "deny_status" | "content-type" | "string" | "lf-string" | "default-errorfiles" => {
                return Err(format!("'{what}': '{key}' is given twice or conflicts with an earlier body"))
            }
            "file" | "lf-file" | "errorfile" | "errorfiles" => {
                return Err(format!("'{what}': '{key}' is not supported yet"))
            }
            _ => {
                return Err(format!(
                    "'{what}': unknown argument '{key}'; expected status, content-type, string, lf-string, \
                     default-errorfiles, hdr, 'if' or 'unless'"
                ))
            }
        }
        i += 2;
    }
    Ok((status, reply, i))
}

/// Reads `redirect location|prefix|scheme TARGET [code N]`.
fn parse_redirect(args: &[&str], what: &str) -> Result<(Action, usize), String> {
    let mut target: Option<(RedirectKind, String)> = None;
    let mut code = None;
    let mut drop_query = false;
    let mut i = 0;
    while let Some(&key) = args.get(i) {
        match key {
            _ if is_cond(key) => break,
            "location" | "prefix" | "scheme" if target.is_none() => {
                let kind = match key {
                    "location" => RedirectKind::Location,
                    "prefix" => RedirectKind::Prefix,
                    _ => RedirectKind::Scheme,
                };
                let Some(t) = args.get(i + 1) else {
                    return Err(format!("'{what} {key}' expects a target"));
                };
                target = Some((kind, t.to_string()));
                i += 2;
            }
            "code" => {
                let value = args.get(i + 1).copied();
                code = match value.and_then(parse_u64) {
                    Some(c @ (301 | 302 | 303 | 307 | 308)) => Some(c as u16),
                    _ => {
                        return Err(format!(
                            "'{what}': 'code' expects 301, 302, 303, 307 or 308{}",
                            got(value)
                        ))
                    }
                };
                i += 2;
            }
            "drop-query" => {
                drop_query = true;
                i += 1;
            }
            "append-slash" | "set-cookie" | "clear-cookie" | "ignore-empty" | "keep-query" => {
                return Err(format!("'{what}': option '{key}' is not supported yet"))
            }
            _ => {
                return Err(format!(
                    "'{what}': expected 'location', 'prefix' or 'scheme' with a target, 'code N', \
                     'drop-query', 'if' or 'unless', got '{key}'"
                ))
            }
        }
    }
    let Some((kind, target)) = target else {
        return Err(format!(
            "'{what}' expects 'location', 'prefix' or 'scheme' followed by a target"
        ));
    };
    Ok((
        Action::Redirect {
            kind,
            target,
            code,
            drop_query,
        },
        i,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CondExpr, CondKind};
    use std::sync::Arc;

    fn loc() -> Location {
        Location {
            file: Arc::from("r.cfg"),
            line: 9,
        }
    }

    fn rule_in(set: RuleSet, text: &str, _in_backend: bool) -> Result<Rule, String> {
        let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
        let acls = vec![crate::config::acl::parse_acl_line(
            &["acl", "is_api", "path_beg", "/api"],
            &loc(),
        )?];
        parse_rule(set, &words, &acls, &loc())
    }

    fn req(text: &str) -> Result<Rule, String> {
        rule_in(RuleSet::HttpRequest, text, false)
    }

    fn action(text: &str) -> Action {
        match req(text) {
            Ok(r) => r.action,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn lua_actions() {
        let r = req("lua.auth a b if is_api").unwrap();
        assert_eq!(
            r.action,
            Action::Lua {
                name: "auth".into(),
                args: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(r.words, ["lua.auth", "a", "b"]);
        assert_eq!(r.cond.as_ref().map(|c| c.kind), Some(CondKind::If));
        assert_eq!(r.location, loc());
        assert_eq!(
            action("lua.x"),
            Action::Lua {
                name: "x".into(),
                args: vec![]
            }
        );
        assert!(req("lua.").unwrap_err().contains("missing action name"));
    }

    #[test]
    fn services() {
        assert_eq!(
            action("use-service lua.hello"),
            Action::UseService {
                name: "hello".into()
            }
        );
        let r = rule_in(
            RuleSet::TcpRequestContent,
            "use-service lua.echo unless is_api",
            false,
        )
        .unwrap();
        assert_eq!(
            r.action,
            Action::UseService {
                name: "echo".into()
            }
        );
        assert!(req("use-service prometheus-exporter")
            .unwrap_err()
            .contains("only Lua services"));
        assert!(req("use-service")
            .unwrap_err()
            .contains("expects a service name"));
        // Services may run from a backend's rules too (HAProxy 3.0).
        assert!(rule_in(RuleSet::HttpRequest, "use-service lua.x", true).is_ok());
        let conn = |t: &str| rule_in(RuleSet::TcpRequestConnection, t, false);
        assert_eq!(conn("reject if is_api").unwrap().action, Action::Reject);
        assert!(conn("use-service lua.x")
            .unwrap_err()
            .contains("not valid in 'tcp-request connection' rules"));
        assert!(
            rule_in(RuleSet::TcpResponseContent, "use-service lua.x", false)
                .unwrap_err()
                .contains("not valid in 'tcp-response content' rules")
        );
    }

    #[test]
    fn header_actions() {
        assert_eq!(
            action("set-header X-Id %[uuid]"),
            Action::SetHeader {
                name: "X-Id".into(),
                value: "%[uuid]".into()
            }
        );
        assert_eq!(
            action("add-header X-A b"),
            Action::AddHeader {
                name: "X-A".into(),
                value: "b".into()
            }
        );
        // The arity decides: "if" here is the header value.
        let r = req("set-header X-Mode if").unwrap();
        assert!(r.cond.is_none());
        assert_eq!(
            action("del-header Server"),
            Action::DelHeader {
                name: "Server".into()
            }
        );
        assert_eq!(
            action(r"replace-header Host ^(.*)\.old$ \1.new"),
            Action::ReplaceHeader {
                name: "Host".into(),
                regex: r"^(.*)\.old$".into(),
                replacement: r"\1.new".into()
            }
        );
        assert!(req("set-header X")
            .unwrap_err()
            .contains("expects a header name and a value format"));
        assert!(req("set-header X(y) z")
            .unwrap_err()
            .contains("not a valid header name"));
        assert!(req("del-header")
            .unwrap_err()
            .contains("expects a header name"));
        assert!(req("del-header X -m beg")
            .unwrap_err()
            .contains("not supported yet"));
        assert!(req("replace-header X a")
            .unwrap_err()
            .contains("regular expression"));
        assert!(req("set-header X y z")
            .unwrap_err()
            .contains("unexpected argument 'z'"));
    }

    #[test]
    fn path_and_vars() {
        assert_eq!(
            action("set-path /new%[path]"),
            Action::SetPath {
                format: "/new%[path]".into()
            }
        );
        assert_eq!(
            action("set-query a=1"),
            Action::SetQuery {
                format: "a=1".into()
            }
        );
        assert_eq!(
            action("set-var(txn.host) req.hdr(host),lower"),
            Action::SetVar {
                var: VarRef {
                    scope: VarScope::Txn,
                    name: "host".into()
                },
                expr: "req.hdr(host),lower".into()
            }
        );
        assert_eq!(
            action("unset-var(proc.a.b)"),
            Action::UnsetVar {
                var: VarRef {
                    scope: VarScope::Proc,
                    name: "a.b".into()
                }
            }
        );
        assert!(req("set-path")
            .unwrap_err()
            .contains("expects a path format"));
        assert!(req("set-var(txn.x)")
            .unwrap_err()
            .contains("expects a sample expression"));
        assert!(req("set-var(foo.x) 1")
            .unwrap_err()
            .contains("unknown variable scope 'foo'"));
        assert!(req("set-var(txn) 1")
            .unwrap_err()
            .contains("expected SCOPE.NAME"));
        assert!(req("set-var(txn.) 1")
            .unwrap_err()
            .contains("invalid variable name"));
        assert!(req("set-var(txn.x,ifexists) 1")
            .unwrap_err()
            .contains("not supported yet"));
        assert!(req("set-var(txn.x 1")
            .unwrap_err()
            .contains("no space inside"));
        assert!(req("unset-var(sess.x) y")
            .unwrap_err()
            .contains("unexpected argument 'y'"));
    }

    #[test]
    fn deny_return_redirect() {
        assert_eq!(
            action("deny"),
            Action::Deny {
                status: None,
                reply: None
            }
        );
        assert_eq!(
            action("deny deny_status 429"),
            Action::Deny {
                status: Some(429),
                reply: None
            }
        );
        // HAProxy 2.6 also takes return's reply arguments on deny.
        assert_eq!(
            action("deny status 451 content-type text/plain string no hdr x-why %[path]"),
            Action::Deny {
                status: Some(451),
                reply: Some(Box::new(ReplySpec {
                    content_type: Some("text/plain".into()),
                    body: Some(ReturnBody::String("no".into())),
                    headers: vec![("x-why".into(), "%[path]".into())],
                    errorfile: false,
                })),
            }
        );
        let r = req("deny deny_status 401 if !is_api").unwrap();
        assert_eq!(r.words, ["deny", "deny_status", "401"]);
        assert!(matches!(r.cond.unwrap().expr, CondExpr::Not(_)));
        assert!(req("deny deny_status 99")
            .unwrap_err()
            .contains("between 200 and 599, got '99'"));
        assert!(req("deny deny_status")
            .unwrap_err()
            .contains("between 200 and 599"));
        assert!(req("deny bogus 403")
            .unwrap_err()
            .contains("unknown argument 'bogus'"));

        assert_eq!(
            action("return status 200 content-type text/plain string ok"),
            Action::Return {
                status: Some(200),
                content_type: Some("text/plain".into()),
                body: Some(ReturnBody::String("ok".into())),
                headers: vec![],
                errorfile: false,
            }
        );
        assert_eq!(
            action("return lf-string %[path] status 404"),
            Action::Return {
                status: Some(404),
                content_type: None,
                body: Some(ReturnBody::LfString("%[path]".into())),
                headers: vec![],
                errorfile: false,
            }
        );
        assert_eq!(
            action("return"),
            Action::Return {
                status: None,
                content_type: None,
                body: None,
                headers: vec![],
                errorfile: false,
            }
        );
        assert!(req("return status")
            .unwrap_err()
            .contains("'status' expects"));
        assert!(req("return string")
            .unwrap_err()
            .contains("'string' expects a value"));
        assert!(req("return string a lf-string b")
            .unwrap_err()
            .contains("twice or conflicts"));
        assert!(req("return file /x")
            .unwrap_err()
            .contains("not supported yet"));
        assert!(req("return bogus 1")
            .unwrap_err()
            .contains("unknown argument 'bogus'"));

        assert_eq!(
            action("redirect location https://example.com/ code 301"),
            Action::Redirect {
                kind: RedirectKind::Location,
                target: "https://example.com/".into(),
                code: Some(301),
                drop_query: false,
            }
        );
        assert_eq!(
            action("redirect prefix /v2"),
            Action::Redirect {
                kind: RedirectKind::Prefix,
                target: "/v2".into(),
                code: None,
                drop_query: false,
            }
        );
        assert!(matches!(
            action("redirect scheme https if is_api"),
            Action::Redirect {
                kind: RedirectKind::Scheme,
                ..
            }
        ));
        assert!(req("redirect")
            .unwrap_err()
            .contains("expects 'location', 'prefix' or 'scheme'"));
        assert!(req("redirect to /x").unwrap_err().contains("got 'to'"));
        assert!(req("redirect location")
            .unwrap_err()
            .contains("expects a target"));
        assert!(req("redirect location /x code 200")
            .unwrap_err()
            .contains("got '200'"));
        assert!(matches!(
            action("redirect prefix /x drop-query"),
            Action::Redirect {
                drop_query: true,
                ..
            }
        ));
        assert!(matches!(
            action("redirect code 301 location /x"),
            Action::Redirect {
                code: Some(301),
                ..
            }
        ));
        assert!(req("redirect location /x append-slash")
            .unwrap_err()
            .contains("not supported yet"));
        assert!(req("redirect location /x y")
            .unwrap_err()
            .contains("got 'y'"));
    }

    #[test]
    fn status_and_simple_actions() {
        let res = |t: &str| rule_in(RuleSet::HttpResponse, t, true);
        assert_eq!(
            res("set-status 503 reason Busy").unwrap().action,
            Action::SetStatus {
                status: 503,
                reason: Some("Busy".into())
            }
        );
        assert_eq!(
            res("set-status 204").unwrap().action,
            Action::SetStatus {
                status: 204,
                reason: None
            }
        );
        assert!(res("set-status 42")
            .unwrap_err()
            .contains("between 100 and 999, got '42'"));
        assert!(res("set-status 200 reason")
            .unwrap_err()
            .contains("'reason' expects"));
        assert_eq!(action("allow"), Action::Allow);
        assert!(req("allow now")
            .unwrap_err()
            .contains("unexpected argument 'now'"));
        let tcp = |t: &str| rule_in(RuleSet::TcpRequestContent, t, false);
        assert_eq!(tcp("accept if is_api").unwrap().action, Action::Accept);
        assert_eq!(tcp("reject").unwrap().action, Action::Reject);
        let after = |t: &str| rule_in(RuleSet::HttpAfterResponse, t, false);
        assert!(after("set-header X y").is_ok());
        assert!(after("deny")
            .unwrap_err()
            .contains("not valid in 'http-after-response' rules"));
    }

    #[test]
    fn applicability_and_unknown() {
        let e = req("set-status 200").unwrap_err();
        assert!(e.starts_with("action 'set-status' is not valid in 'http-request' rules; expected one of: lua.<name>, use-service lua.<name>, set-header"), "{e}");
        let e = req("tarpit").unwrap_err();
        assert!(
            e.starts_with("unknown action 'tarpit' in 'http-request' rules; expected one of:"),
            "{e}"
        );
        assert!(req("")
            .unwrap_err()
            .starts_with("'http-request' expects an action"));
        let e = rule_in(RuleSet::TcpRequestContent, "set-header a b", false).unwrap_err();
        assert!(
            e.contains("expected one of: lua.<name>, use-service lua.<name>, accept, reject"),
            "{e}"
        );
        assert!(rule_in(RuleSet::TcpResponseContent, "accept", true).is_ok());
        assert!(req("allow if")
            .unwrap_err()
            .contains("missing condition after 'if'"));
        assert!(req("allow if nope").unwrap_err().contains("no such ACL"));
    }
}
