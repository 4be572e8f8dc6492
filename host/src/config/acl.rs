//! Reads `acl` definitions and the `if` / `unless` conditions that use them.
//!
//! Grammar of a condition, as in HAProxy: terms separated by `||` (or `or`)
//! are alternatives; adjacent terms must all match; `!` negates one term; a
//! term is an ACL name or an anonymous ACL between `{` and `}`.

use super::{AclDef, AclFlag, CondExpr, CondKind, Condition, Location, MatchMethod};

/// ACLs every proxy has without declaring them.
pub(crate) const PREDEFINED_ACLS: &[&str] = &[
    "FALSE",
    "HTTP",
    "HTTP_1.0",
    "HTTP_1.1",
    "HTTP_2.0",
    "HTTP_3.0",
    "HTTP_CONTENT",
    "HTTP_URL_ABS",
    "HTTP_URL_SLASH",
    "HTTP_URL_STAR",
    "LOCALHOST",
    "METH_CONNECT",
    "METH_DELETE",
    "METH_GET",
    "METH_HEAD",
    "METH_OPTIONS",
    "METH_POST",
    "METH_PUT",
    "METH_TRACE",
    "RDP_COOKIE",
    "REQ_CONTENT",
    "TRUE",
    "WAIT_END",
];

/// Whether `c` may appear in a proxy, server or ACL name (HAProxy's rule).
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

fn match_method(word: &str) -> Option<MatchMethod> {
    Some(match word {
        "found" => MatchMethod::Found,
        "bool" => MatchMethod::Bool,
        "int" => MatchMethod::Int,
        "ip" => MatchMethod::Ip,
        "bin" => MatchMethod::Bin,
        "len" => MatchMethod::Len,
        "str" => MatchMethod::Str,
        "sub" => MatchMethod::Sub,
        "reg" => MatchMethod::Reg,
        "beg" => MatchMethod::Beg,
        "end" => MatchMethod::End,
        "dir" => MatchMethod::Dir,
        "dom" => MatchMethod::Dom,
        _ => return None,
    })
}

/// Reads a whole `acl NAME CRITERION [flags] [patterns]` line.
pub(crate) fn parse_acl_line(words: &[&str], loc: &Location) -> Result<AclDef, String> {
    let Some(&name) = words.get(1) else {
        return Err("'acl' expects a name, a fetch method and optional patterns".to_string());
    };
    if let Some(c) = name.chars().find(|&c| !is_name_char(c)) {
        return Err(format!(
            "character '{c}' is not permitted in ACL name '{name}' (letters, digits, '-', '_', '.' and ':' are)"
        ));
    }
    if name.is_empty() {
        return Err("'acl' expects a non-empty name".to_string());
    }
    acl_body(name, &words[2..], loc).map_err(|e| format!("in ACL '{name}': {e}"))
}

/// Reads the criterion, flags and patterns of an ACL named `name`.
fn acl_body(name: &str, words: &[&str], loc: &Location) -> Result<AclDef, String> {
    let Some((&criterion, rest)) = words.split_first() else {
        return Err("missing fetch method (e.g. 'path_beg', 'req.hdr(host)')".to_string());
    };
    if !criterion.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!(
            "'{criterion}' is not a fetch method (e.g. 'path_beg', 'req.hdr(host),lower')"
        ));
    }
    let mut flags = Vec::new();
    let mut i = 0;
    let mut has_match = false;
    while let Some(&flag) = rest.get(i) {
        if !flag.starts_with('-') {
            break;
        }
        i += 1;
        let mut value = |what: &str| {
            let v = rest.get(i).copied();
            i += 1;
            v.ok_or_else(|| format!("'{flag}' expects {what}"))
        };
        match flag {
            "--" => break,
            "-i" => flags.push(AclFlag::IgnoreCase),
            "-n" => flags.push(AclFlag::NoDns),
            "-M" => flags.push(AclFlag::Map),
            "-f" => flags.push(AclFlag::File(value("a file name")?.to_string())),
            "-u" => flags.push(AclFlag::UniqueId(value("an identifier")?.to_string())),
            "-m" => {
                let m = value("a matching method")?;
                let Some(method) = match_method(m) else {
                    return Err(format!(
                        "unknown matching method '{m}' after '-m' (known: found, bool, int, ip, bin, len, str, sub, reg, beg, end, dir, dom)"
                    ));
                };
                if has_match {
                    return Err("only one '-m' flag is allowed".to_string());
                }
                has_match = true;
                flags.push(AclFlag::Match(method));
            }
            other => {
                return Err(format!(
                    "'{other}' is not a valid ACL flag (known: -i, -f FILE, -m METHOD, -n, -M, -u ID); put '--' before a pattern that starts with '-'"
                ))
            }
        }
    }
    Ok(AclDef {
        name: name.to_string(),
        criterion: criterion.to_string(),
        flags,
        patterns: rest
            .get(i..)
            .unwrap_or_default()
            .iter()
            .map(|p| p.to_string())
            .collect(),
        location: loc.clone(),
    })
}

/// Reads a condition; `words` starts with `if` or `unless`. Named ACLs must be
/// among `known` (declared earlier in the proxy) or predefined.
pub(crate) fn parse_condition(
    words: &[&str],
    known: &[AclDef],
    loc: &Location,
) -> Result<Condition, String> {
    let (kind, keyword) = match words.first() {
        Some(&"if") => (CondKind::If, "if"),
        Some(&"unless") => (CondKind::Unless, "unless"),
        Some(other) => return Err(format!("expected 'if' or 'unless', got '{other}'")),
        None => return Err("expected 'if' or 'unless'".to_string()),
    };
    if words.len() < 2 {
        return Err(format!("missing condition after '{keyword}'"));
    }
    let mut p = CondParser {
        words: &words[1..],
        pos: 0,
        known,
        loc,
    };
    let expr = p.or()?;
    Ok(Condition { kind, expr })
}

/// A cursor over the words of a condition.
struct CondParser<'w, 'a> {
    words: &'w [&'a str],
    pos: usize,
    known: &'w [AclDef],
    loc: &'w Location,
}

fn is_or(w: &str) -> bool {
    w == "||" || w == "or"
}

impl<'a> CondParser<'_, 'a> {
    fn peek(&self) -> Option<&'a str> {
        self.words.get(self.pos).copied()
    }

    fn or(&mut self) -> Result<CondExpr, String> {
        let mut alternatives = Vec::new();
        loop {
            alternatives.push(self.and()?);
            match self.peek() {
                Some(w) if is_or(w) => {
                    self.pos += 1;
                    if self.peek().is_none() {
                        return Err(format!("missing ACL after '{w}'"));
                    }
                }
                _ => break,
            }
        }
        Ok(if alternatives.len() == 1 {
            alternatives.pop().unwrap_or(CondExpr::Or(Vec::new()))
        } else {
            CondExpr::Or(alternatives)
        })
    }

    fn and(&mut self) -> Result<CondExpr, String> {
        let mut terms = Vec::new();
        while let Some(w) = self.peek() {
            if is_or(w) {
                break;
            }
            terms.push(self.term()?);
        }
        match terms.len() {
            0 => Err(format!(
                "missing ACL before '{}'",
                self.peek().unwrap_or("||")
            )),
            1 => Ok(terms.pop().unwrap_or(CondExpr::And(Vec::new()))),
            _ => Ok(CondExpr::And(terms)),
        }
    }

    fn term(&mut self) -> Result<CondExpr, String> {
        let mut negated = false;
        loop {
            let Some(word) = self.peek() else {
                return Err("missing ACL after '!'".to_string());
            };
            let name = word.trim_start_matches('!');
            // Each leading '!' flips the sense, whether attached or not.
            if (word.len() - name.len()) % 2 == 1 {
                negated = !negated;
            }
            if name.is_empty() {
                self.pos += 1;
                continue;
            }
            let expr = if name == "{" {
                self.pos += 1;
                self.anonymous()?
            } else if name.starts_with('{') {
                return Err(format!(
                    "'{name}': '{{' must be followed by a space before the fetch method"
                ));
            } else if name.ends_with('}') {
                return Err(format!(
                    "unexpected '}}' in '{name}' (braces must be separate words)"
                ));
            } else if is_or(name) {
                return Err(format!("missing ACL before '{name}'"));
            } else {
                self.pos += 1;
                if !PREDEFINED_ACLS.contains(&name) && !self.known.iter().any(|a| a.name == name) {
                    return Err(format!(
                        "no such ACL: '{name}' (an ACL must be declared with 'acl' before the rule that uses it)"
                    ));
                }
                CondExpr::Acl(name.to_string())
            };
            return Ok(if negated {
                CondExpr::Not(Box::new(expr))
            } else {
                expr
            });
        }
    }

    /// Reads an anonymous ACL; the opening brace is already consumed.
    fn anonymous(&mut self) -> Result<CondExpr, String> {
        let start = self.pos;
        let Some(len) = self.words[start..].iter().position(|w| *w == "}") else {
            return Err("missing '}' to close the anonymous ACL opened with '{'".to_string());
        };
        let body = &self.words[start..start + len];
        if body.contains(&"{") {
            return Err("anonymous ACLs cannot be nested".to_string());
        }
        if body.is_empty() {
            return Err("an anonymous ACL expects a fetch method between '{' and '}'".to_string());
        }
        self.pos = start + len + 1;
        let acl = acl_body("", body, self.loc).map_err(|e| format!("in anonymous ACL: {e}"))?;
        Ok(CondExpr::Anonymous(Box::new(acl)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn loc() -> Location {
        Location {
            file: Arc::from("t.cfg"),
            line: 3,
        }
    }

    fn acl(line: &str) -> Result<AclDef, String> {
        let words: Vec<&str> = line.split(' ').collect();
        parse_acl_line(&words, &loc())
    }

    fn known() -> Vec<AclDef> {
        ["a", "b", "c", "is_api"]
            .iter()
            .map(|n| acl(&format!("acl {n} path_beg /{n}")).unwrap())
            .collect()
    }

    fn cond(text: &str) -> Result<Condition, String> {
        let words: Vec<&str> = text.split(' ').collect();
        parse_condition(&words, &known(), &loc())
    }

    fn named(n: &str) -> CondExpr {
        CondExpr::Acl(n.to_string())
    }

    fn not(e: CondExpr) -> CondExpr {
        CondExpr::Not(Box::new(e))
    }

    #[test]
    fn acl_definitions() {
        let a =
            acl("acl host_ok req.hdr(host),lower -i -m str example.com www.example.com").unwrap();
        assert_eq!(a.name, "host_ok");
        assert_eq!(a.criterion, "req.hdr(host),lower");
        assert_eq!(
            a.flags,
            vec![AclFlag::IgnoreCase, AclFlag::Match(MatchMethod::Str)]
        );
        assert_eq!(a.patterns, ["example.com", "www.example.com"]);
        assert_eq!(a.location, loc());

        let a = acl("acl bad src -n -f /etc/bad.lst -M -u 7").unwrap();
        assert_eq!(
            a.flags,
            vec![
                AclFlag::NoDns,
                AclFlag::File("/etc/bad.lst".into()),
                AclFlag::Map,
                AclFlag::UniqueId("7".into())
            ]
        );
        assert!(a.patterns.is_empty());

        let a = acl("acl neg req.hdr_val(x) -- -1 -2").unwrap();
        assert!(a.flags.is_empty());
        assert_eq!(a.patterns, ["-1", "-2"]);

        let a = acl("acl has_host req.hdr(host) -m found").unwrap();
        assert_eq!(a.flags, vec![AclFlag::Match(MatchMethod::Found)]);
        let a = acl("acl ssl ssl_fc").unwrap();
        assert_eq!((a.criterion.as_str(), a.patterns.len()), ("ssl_fc", 0));
    }

    #[test]
    fn acl_errors() {
        assert!(acl("acl").unwrap_err().contains("expects a name"));
        assert!(acl("acl x").unwrap_err().contains("missing fetch method"));
        assert!(acl("acl x/y path").unwrap_err().contains("character '/'"));
        assert!(acl("acl x -i foo")
            .unwrap_err()
            .contains("'-i' is not a fetch method"));
        assert!(acl("acl x path -z foo")
            .unwrap_err()
            .contains("'-z' is not a valid ACL flag"));
        assert!(acl("acl x path -m")
            .unwrap_err()
            .contains("'-m' expects a matching method"));
        assert!(acl("acl x path -m nope")
            .unwrap_err()
            .contains("unknown matching method 'nope'"));
        assert!(acl("acl x path -m beg -m end")
            .unwrap_err()
            .contains("only one '-m'"));
        assert!(acl("acl x path -f")
            .unwrap_err()
            .contains("'-f' expects a file name"));
        assert!(acl("acl x path -u")
            .unwrap_err()
            .starts_with("in ACL 'x': '-u' expects"));
    }

    #[test]
    fn conditions() {
        let c = cond("if a").unwrap();
        assert_eq!((c.kind, c.expr), (CondKind::If, named("a")));
        let c = cond("unless a b").unwrap();
        assert_eq!(c.kind, CondKind::Unless);
        assert_eq!(c.expr, CondExpr::And(vec![named("a"), named("b")]));
        assert_eq!(
            cond("if a b || !c or TRUE").unwrap().expr,
            CondExpr::Or(vec![
                CondExpr::And(vec![named("a"), named("b")]),
                not(named("c")),
                named("TRUE"),
            ])
        );
        assert_eq!(cond("if ! a").unwrap().expr, not(named("a")));
        assert_eq!(cond("if !!a").unwrap().expr, named("a"));
        assert_eq!(cond("if ! !a").unwrap().expr, named("a"));
        assert_eq!(
            cond("if METH_GET HTTP_1.1").unwrap().expr,
            CondExpr::And(vec![named("METH_GET"), named("HTTP_1.1")])
        );
    }

    #[test]
    fn anonymous_acls() {
        let c = cond("if { path_beg /api /v2 } !{ req.hdr(x) -m found } || is_api").unwrap();
        let CondExpr::Or(alts) = c.expr else {
            panic!("not an or")
        };
        let CondExpr::And(terms) = &alts[0] else {
            panic!("not an and")
        };
        let CondExpr::Anonymous(first) = &terms[0] else {
            panic!("not anonymous")
        };
        assert_eq!(first.name, "");
        assert_eq!(first.criterion, "path_beg");
        assert_eq!(first.patterns, ["/api", "/v2"]);
        let CondExpr::Not(inner) = &terms[1] else {
            panic!("not negated")
        };
        let CondExpr::Anonymous(second) = inner.as_ref() else {
            panic!("not anonymous")
        };
        assert_eq!(second.flags, vec![AclFlag::Match(MatchMethod::Found)]);
        assert_eq!(alts[1], named("is_api"));
        let c = cond("if ! { src 10.0.0.0/8 }").unwrap();
        assert!(matches!(c.expr, CondExpr::Not(_)));
    }

    #[test]
    fn condition_errors() {
        let e = |t: &str| cond(t).unwrap_err();
        assert_eq!(e("if"), "missing condition after 'if'");
        assert_eq!(e("unless"), "missing condition after 'unless'");
        assert!(e("if nope").contains("no such ACL: 'nope'"));
        assert!(e("if a ||").contains("missing ACL after '||'"));
        assert!(e("if || a").contains("missing ACL before '||'"));
        assert!(e("if a || || b").contains("missing ACL before '||'"));
        assert!(e("if a or").contains("missing ACL after 'or'"));
        assert!(e("if a !").contains("missing ACL after '!'"));
        assert!(e("if { path_beg /x").contains("missing '}'"));
        assert!(e("if { }").contains("expects a fetch method"));
        assert!(e("if { a { b } }").contains("cannot be nested"));
        assert!(e("if {path_beg /x }").contains("must be followed by a space"));
        assert!(e("if a }").contains("unexpected '}'"));
        assert!(e("if { path -z }").contains("in anonymous ACL: '-z'"));
        assert!(e("when a").contains("expected 'if' or 'unless'"));
    }
}
