//! ACLs: a sample expression matched against patterns, and the `if` /
//! `unless` conditions that combine them.
//!
//! ACL-specific keywords (`path_beg`, `hdr_dom(host)`, `method` ...) are
//! translated to their fetch and implied matching method. Without `-m` the
//! method follows the expression's type (boolean, integer, address, string;
//! binary needs `-m`). Several definitions of one name are alternatives.
//! Fetches with several values (every occurrence of a header, every cookie
//! of a name) match when any value matches.

use super::map::{self, FileKind, MapFile};
use super::pattern::{Entry, MatchMethod};
use super::{Sample, SampleCtx, SampleExpr, SampleType};
use crate::config::{AclDef, AclFlag, CondExpr, CondKind, Condition, Location};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

/// Where patterns come from.
#[derive(Debug)]
enum Source {
    /// The patterns written on the line (`-i` applies when given).
    Inline(MapFile, bool),
    /// A `-f` file (shared, may change at run time) with its `-i` state.
    File(Arc<MapFile>, bool),
}

impl Source {
    fn matches(&self, method: MatchMethod, s: &Sample) -> bool {
        match self {
            Source::Inline(m, icase) => m.matches(method, *icase, s),
            Source::File(m, icase) => m.matches(method, *icase, s),
        }
    }

    fn prepare(&self, method: MatchMethod) -> Result<(), String> {
        match self {
            Source::Inline(m, icase) => m.prepare(method, *icase),
            Source::File(m, icase) => m.prepare(method, *icase),
        }
    }
}

/// One compiled ACL definition.
#[derive(Debug)]
pub struct CompiledAcl {
    expr: SampleExpr,
    /// None: chosen from each sample's type at run time (variables, Lua).
    method: Option<MatchMethod>,
    sources: Vec<Source>,
    location: Location,
}

/// The matching method a sample type implies.
fn method_for(t: SampleType) -> Option<MatchMethod> {
    Some(match t {
        SampleType::Bool => MatchMethod::Bool,
        SampleType::Sint => MatchMethod::Int,
        SampleType::Ip => MatchMethod::Ip,
        SampleType::Str => MatchMethod::Str,
        SampleType::Meth => MatchMethod::Meth,
        SampleType::Bin | SampleType::Any => return None,
    })
}

/// ACL keywords that stand for a fetch with an implied method: the exact
/// name matches strings, `_beg` & co. the other string methods.
const DERIVED: &[(&str, &str)] = &[
    ("base", "base"),
    ("path", "path"),
    ("url", "url"),
    ("urlp", "urlp"),
    ("hdr", "req.hdr"),
    ("req.hdr", "req.hdr"),
    ("shdr", "res.hdr"),
    ("res.hdr", "res.hdr"),
    ("cook", "req.cook"),
    ("req.cook", "req.cook"),
    ("scook", "res.cook"),
    ("res.cook", "res.cook"),
];

const SUFFIXES: &[(&str, MatchMethod)] = &[
    ("beg", MatchMethod::Beg),
    ("dir", MatchMethod::Dir),
    ("dom", MatchMethod::Dom),
    ("end", MatchMethod::End),
    ("len", MatchMethod::Len),
    ("reg", MatchMethod::Reg),
    ("sub", MatchMethod::Sub),
];

/// Resolves an ACL keyword to (fetch name, implied method).
fn derived(name: &str) -> Option<(&'static str, MatchMethod)> {
    match name {
        "method" => return Some(("method", MatchMethod::Meth)),
        "req_ver" => return Some(("req.ver", MatchMethod::Str)),
        "resp_ver" => return Some(("res.ver", MatchMethod::Str)),
        _ => {}
    }
    for (kw, fetch) in DERIVED {
        if name == *kw {
            return Some((fetch, MatchMethod::Str));
        }
        if let Some(sfx) = name.strip_prefix(kw).and_then(|r| r.strip_prefix('_')) {
            if let Some((_, m)) = SUFFIXES.iter().find(|(s, _)| *s == sfx) {
                return Some((fetch, *m));
            }
        }
    }
    None
}

/// Compiles one ACL definition.
pub fn compile_acl(def: &AclDef) -> Result<CompiledAcl, String> {
    let crit = def.criterion.trim();
    let name_end = crit.find(['(', ',']).unwrap_or(crit.len());
    let kw = &crit[..name_end];
    let (text, implied) = match derived(kw) {
        Some((fetch, m)) => (format!("{fetch}{}", &crit[name_end..]), Some(m)),
        None => (crit.to_string(), None),
    };
    let expr = SampleExpr::parse(&text)?;
    let forced = def.flags.iter().find_map(|f| match f {
        AclFlag::Match(m) => Some(MatchMethod::from(*m)),
        _ => None,
    });
    // An implied method only holds for the bare keyword: converters decide
    // the type otherwise.
    let method = forced
        .or(if expr.has_converters() { None } else { implied })
        .or_else(|| method_for(expr.out_type()));
    if method.is_none() && expr.out_type() == SampleType::Bin {
        return Err(format!(
            "'{}' returns binary data: a matching method is required (e.g. '-m bin', '-m sub')",
            def.criterion
        ));
    }
    let is_map = def.flags.contains(&AclFlag::Map);
    let mut icase = false;
    let mut sources = Vec::new();
    for f in &def.flags {
        match f {
            AclFlag::IgnoreCase => icase = true,
            AclFlag::File(path) => {
                let kind = if is_map { FileKind::Map } else { FileKind::Acl };
                let m = map::load_kind(Path::new(path), kind)?;
                sources.push(Source::File(m, icase));
            }
            _ => {}
        }
    }
    if !def.patterns.is_empty() {
        let words = if matches!(method, Some(MatchMethod::Int | MatchMethod::Len)) {
            super::int_pattern::apply_operators(&def.patterns)?
        } else {
            def.patterns.clone()
        };
        let entries = words
            .into_iter()
            .map(|p| Entry {
                key: Bytes::from(p),
                value: Bytes::new(),
            })
            .collect();
        sources.push(Source::Inline(
            MapFile::anonymous(FileKind::Acl, entries),
            icase,
        ));
    }
    if let Some(m) = method {
        for s in &sources {
            s.prepare(m)?;
        }
    }
    Ok(CompiledAcl {
        expr,
        method,
        sources,
        location: def.location.clone(),
    })
}

impl CompiledAcl {
    /// Whether the ACL matches for this transaction.
    pub fn matches(&self, ctx: &SampleCtx) -> bool {
        let values = self.expr.eval_all(ctx);
        match self.method {
            Some(MatchMethod::Found) => !values.is_empty(),
            Some(MatchMethod::Bool) => values.iter().any(|v| match v {
                Sample::Bool(b) => *b,
                Sample::Sint(i) => *i != 0,
                Sample::Str(b) => super::str_to_int(b) != 0,
                _ => false,
            }),
            Some(m) => values
                .iter()
                .any(|v| self.sources.iter().any(|s| s.matches(m, v))),
            None => values.iter().any(|v| match method_for(SampleType::of(v)) {
                Some(MatchMethod::Bool) => v.truthy(),
                Some(m) => self.sources.iter().any(|s| s.matches(m, v)),
                None => false,
            }),
        }
    }

    /// Where the ACL was written.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The expression it matches.
    pub fn expr(&self) -> &SampleExpr {
        &self.expr
    }
}

/// The ACLs every proxy has, as (name, criterion and patterns).
const PREDEFINED: &[(&str, &str, &[&str])] = &[
    ("TRUE", "always_true", &[]),
    ("FALSE", "always_false", &[]),
    ("HTTP", "req.proto_http", &[]),
    ("HTTP_1.0", "req.ver", &["1.0"]),
    ("HTTP_1.1", "req.ver", &["1.1"]),
    ("HTTP_2.0", "req.ver", &["2.0"]),
    ("HTTP_3.0", "req.ver", &["3.0"]),
    ("HTTP_CONTENT", "req.hdr_val(content-length)", &["gt", "0"]),
    ("HTTP_URL_ABS", "url_reg", &["^[^/:]*://"]),
    ("HTTP_URL_SLASH", "url_beg", &["/"]),
    ("HTTP_URL_STAR", "url", &["*"]),
    ("LOCALHOST", "src", &["127.0.0.1/8", "::1"]),
    ("METH_CONNECT", "method", &["CONNECT"]),
    ("METH_DELETE", "method", &["DELETE"]),
    ("METH_GET", "method", &["GET", "HEAD"]),
    ("METH_HEAD", "method", &["HEAD"]),
    ("METH_OPTIONS", "method", &["OPTIONS"]),
    ("METH_POST", "method", &["POST"]),
    ("METH_PUT", "method", &["PUT"]),
    ("METH_TRACE", "method", &["TRACE"]),
    // No RDP cookie parsing: never matches.
    ("RDP_COOKIE", "always_false", &[]),
    ("REQ_CONTENT", "req.len", &["gt", "0"]),
    // Content is never waited for, so the inspection has always ended.
    ("WAIT_END", "always_true", &[]),
];

fn predefined() -> &'static HashMap<&'static str, Arc<CompiledAcl>> {
    static P: OnceLock<HashMap<&'static str, Arc<CompiledAcl>>> = OnceLock::new();
    P.get_or_init(|| {
        let loc = Location {
            file: Arc::from("<predefined>"),
            line: 0,
        };
        PREDEFINED
            .iter()
            .filter_map(|(name, crit, pats)| {
                let def = AclDef {
                    name: name.to_string(),
                    criterion: crit.to_string(),
                    flags: Vec::new(),
                    patterns: pats.iter().map(|p| p.to_string()).collect(),
                    location: loc.clone(),
                };
                compile_acl(&def).ok().map(|a| (*name, Arc::new(a)))
            })
            .collect()
    })
}

/// A condition with every ACL resolved and compiled.
#[derive(Debug)]
pub struct CompiledCond {
    kind: CondKind,
    expr: CExpr,
}

#[derive(Debug)]
enum CExpr {
    Or(Vec<CExpr>),
    And(Vec<CExpr>),
    Not(Box<CExpr>),
    /// A named ACL: its definitions, any of which may match.
    Acl(Vec<Arc<CompiledAcl>>),
}

impl CExpr {
    fn eval(&self, ctx: &SampleCtx) -> bool {
        match self {
            CExpr::Or(v) => v.iter().any(|e| e.eval(ctx)),
            CExpr::And(v) => v.iter().all(|e| e.eval(ctx)),
            CExpr::Not(e) => !e.eval(ctx),
            CExpr::Acl(defs) => defs.iter().any(|a| a.matches(ctx)),
        }
    }
}

impl CompiledCond {
    /// Whether the rule applies (`if` true, or `unless` false).
    pub fn eval(&self, ctx: &SampleCtx) -> bool {
        let v = self.expr.eval(ctx);
        match self.kind {
            CondKind::If => v,
            CondKind::Unless => !v,
        }
    }
}

/// The named ACLs of a proxy.
#[derive(Debug, Default)]
pub struct AclSet {
    named: HashMap<String, Vec<Arc<CompiledAcl>>>,
    /// Anonymous ACLs met by `check_condition`/`eval`, by their text.
    anonymous: RwLock<HashMap<String, Arc<CompiledAcl>>>,
}

impl AclSet {
    /// Compiles ACL definitions (in order; one name may be defined several
    /// times). Every faulty definition is reported with its location.
    pub fn compile(defs: &[AclDef]) -> Result<AclSet, Vec<(Location, String)>> {
        let mut set = AclSet::default();
        let mut errors = Vec::new();
        for d in defs {
            match compile_acl(d) {
                Ok(a) => set
                    .named
                    .entry(d.name.clone())
                    .or_default()
                    .push(Arc::new(a)),
                Err(e) => errors.push((d.location.clone(), format!("in ACL '{}': {e}", d.name))),
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// A set with no declared ACL (the predefined ones still resolve).
    pub fn empty() -> AclSet {
        AclSet::default()
    }

    /// Whether an ACL of this name exists (declared or predefined).
    pub fn contains(&self, name: &str) -> bool {
        self.named.contains_key(name) || predefined().contains_key(name)
    }

    fn anon_key(def: &AclDef) -> String {
        format!("{:?}|{:?}|{:?}", def.criterion, def.flags, def.patterns)
    }

    fn anonymous(&self, def: &AclDef) -> Result<Arc<CompiledAcl>, String> {
        let key = Self::anon_key(def);
        if let Some(a) = self
            .anonymous
            .read()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(a);
        }
        let a = Arc::new(compile_acl(def).map_err(|e| format!("in anonymous ACL: {e}"))?);
        if let Ok(mut m) = self.anonymous.write() {
            m.entry(key).or_insert_with(|| a.clone());
        }
        Ok(a)
    }

    fn resolve(&self, e: &CondExpr) -> Result<CExpr, String> {
        Ok(match e {
            CondExpr::Or(v) => CExpr::Or(
                v.iter()
                    .map(|x| self.resolve(x))
                    .collect::<Result<_, _>>()?,
            ),
            CondExpr::And(v) => CExpr::And(
                v.iter()
                    .map(|x| self.resolve(x))
                    .collect::<Result<_, _>>()?,
            ),
            CondExpr::Not(x) => CExpr::Not(Box::new(self.resolve(x)?)),
            CondExpr::Acl(name) => match self.named.get(name) {
                Some(defs) => CExpr::Acl(defs.clone()),
                None => match predefined().get(name.as_str()) {
                    Some(a) => CExpr::Acl(vec![a.clone()]),
                    None => return Err(format!("no such ACL: '{name}'")),
                },
            },
            CondExpr::Anonymous(def) => CExpr::Acl(vec![self.anonymous(def)?]),
        })
    }

    /// Compiles a condition for repeated evaluation.
    pub fn compile_condition(&self, cond: &Condition) -> Result<CompiledCond, String> {
        Ok(CompiledCond {
            kind: cond.kind,
            expr: self.resolve(&cond.expr)?,
        })
    }

    /// Checks that every ACL of a condition exists and that its anonymous
    /// ACLs compile (they are kept for `eval`).
    pub fn check_condition(&self, cond: &Condition) -> Result<(), String> {
        self.resolve(&cond.expr).map(|_| ())
    }

    /// Evaluates a condition: whether the rule applies. An ACL that does
    /// not resolve (not checked beforehand) does not match.
    pub fn eval(&self, cond: &Condition, ctx: &SampleCtx) -> bool {
        match self.compile_condition(cond) {
            Ok(c) => c.eval(ctx),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MatchMethod as CM;
    use crate::lua::vars::VarValue;
    use crate::sample::testutil::{ctx, http_txn, tcp_txn, temp_dir, with_response};
    use crate::txn::Txn;

    fn loc() -> Location {
        Location {
            file: Arc::from("t.cfg"),
            line: 7,
        }
    }

    fn def(name: &str, crit: &str, flags: Vec<AclFlag>, pats: &[&str]) -> AclDef {
        AclDef {
            name: name.to_string(),
            criterion: crit.to_string(),
            flags,
            patterns: pats.iter().map(|p| p.to_string()).collect(),
            location: loc(),
        }
    }

    fn m(crit: &str, flags: Vec<AclFlag>, pats: &[&str], t: &Txn) -> bool {
        compile_acl(&def("x", crit, flags, pats))
            .unwrap()
            .matches(&ctx(t))
    }

    fn req() -> Txn {
        let mut t = http_txn(
            "GET",
            "/images/png/logo.PNG?id=42&user=Bob",
            &[
                ("host", "www.Example.com:8080"),
                ("x-list", "a, b"),
                ("x-list", "c"),
                ("cookie", "sid=abc; lang=fr; sid=xyz"),
                ("content-length", "0"),
            ],
        );
        t.vars.set("txn.n", VarValue::Int(15), false);
        t.vars.set("txn.s", VarValue::Str(b"hello".to_vec()), false);
        t
    }

    #[test]
    fn string_methods_and_case() {
        let t = req();
        assert!(m("path", vec![], &["/images/png/logo.PNG"], &t));
        assert!(!m("path", vec![], &["/images/png/logo.png"], &t));
        assert!(m(
            "path",
            vec![AclFlag::IgnoreCase],
            &["/images/png/logo.png"],
            &t
        ));
        assert!(m("path_beg", vec![], &["/static", "/images"], &t));
        assert!(m("path_end", vec![AclFlag::IgnoreCase], &[".png"], &t));
        assert!(!m("path_end", vec![], &[".png"], &t));
        assert!(m("path_sub", vec![], &["png/"], &t));
        assert!(m("path_dir", vec![], &["png"], &t));
        assert!(!m("path_dir", vec![], &["pn"], &t));
        assert!(m("path_reg", vec![], &["^/images/[a-z]+/"], &t));
        assert!(m("path_len", vec![], &["20"], &t));
        assert!(m("path_len", vec![], &["gt", "10"], &t));
        assert!(m("url_beg", vec![], &["/images"], &t));
        assert!(m("url_sub", vec![], &["id=42"], &t));
        assert!(m(
            "hdr_dom(host)",
            vec![AclFlag::IgnoreCase],
            &["example.com"],
            &t
        ));
        assert!(!m("hdr_dom(host)", vec![], &["example.com"], &t));
        assert!(m("hdr_beg(host)", vec![AclFlag::IgnoreCase], &["www."], &t));
        assert!(m("hdr_end(host)", vec![], &[":8080"], &t));
        assert!(m("hdr_reg(host)", vec![], &["^www\\."], &t));
        assert!(m("hdr_sub(host)", vec![], &["Example"], &t));
        assert!(m("hdr(host)", vec![], &["www.Example.com:8080"], &t));
        assert!(m("hdr_len(host)", vec![], &["20"], &t));
        // -m on the fetch, and on a derivative (applied to its fetch).
        assert!(m(
            "req.hdr(host)",
            vec![AclFlag::Match(CM::Beg)],
            &["www."],
            &t
        ));
        assert!(m(
            "hdr_dom(host)",
            vec![AclFlag::Match(CM::Beg)],
            &["www."],
            &t
        ));
        assert!(m(
            "base",
            vec![],
            &["www.Example.com:8080/images/png/logo.PNG"],
            &t
        ));
        assert!(m("base_beg", vec![], &["www.Example.com:8080/images"], &t));
        // A converter replaces the implied method by the type's.
        assert!(m(
            "hdr_beg(host),lower",
            vec![],
            &["www.example.com:8080"],
            &t
        ));
        assert!(!m("hdr_beg(host),lower", vec![], &["www."], &t));
    }

    #[test]
    fn every_occurrence_is_tried() {
        let t = req();
        assert!(m("hdr(x-list)", vec![], &["a"], &t));
        assert!(m("hdr(x-list)", vec![], &["b"], &t));
        assert!(m("req.hdr(x-list)", vec![], &["c"], &t));
        assert!(!m("req.hdr(x-list,1)", vec![], &["c"], &t));
        assert!(m("req.fhdr(x-list)", vec![], &["a, b"], &t));
        assert!(m("req.cook(sid)", vec![], &["abc"], &t));
        assert!(m("cook(sid)", vec![], &["xyz"], &t));
        assert!(m("cook_beg(sid)", vec![], &["xy"], &t));
        assert!(m("urlp(user)", vec![], &["Bob"], &t));
        assert!(m("urlp_reg(id)", vec![], &["^[0-9]+$"], &t));
        assert!(m("req.hdr(x-list),upper", vec![], &["B"], &t));
    }

    #[test]
    fn found_bool_int() {
        let t = req();
        assert!(m("req.cook(sid)", vec![AclFlag::Match(CM::Found)], &[], &t));
        assert!(!m(
            "req.cook(none)",
            vec![AclFlag::Match(CM::Found)],
            &[],
            &t
        ));
        assert!(m(
            "req.hdr(content-length)",
            vec![AclFlag::Match(CM::Found)],
            &[],
            &t
        ));
        assert!(m("always_true", vec![], &[], &t));
        assert!(!m("always_false", vec![], &[], &t));
        assert!(m("int(3)", vec![AclFlag::Match(CM::Bool)], &[], &t));
        assert!(!m("int(0)", vec![AclFlag::Match(CM::Bool)], &[], &t));
        assert!(m("always_true", vec![AclFlag::Match(CM::Int)], &["1"], &t));
        assert!(m("req.hdr_cnt(x-list)", vec![], &["3"], &t));
        assert!(m("req.hdr_cnt(x-list)", vec![], &["eq", "3"], &t));
        assert!(m("req.hdr_cnt(x-list)", vec![], &["ge", "3"], &t));
        assert!(!m("req.hdr_cnt(x-list)", vec![], &["gt", "3"], &t));
        assert!(m("req.hdr_cnt(x-list)", vec![], &["lt", "4"], &t));
        assert!(m("req.hdr_cnt(x-list)", vec![], &["le", "3"], &t));
        // HAProxy accepts `ne` and leaves the number an exact match.
        assert!(m("req.hdr_cnt(x-list)", vec![], &["ne", "3"], &t));
        assert!(!m("req.hdr_cnt(x-list)", vec![], &["ne", "2"], &t));
        assert!(m("req.hdr_cnt(x-list)", vec![], &["1:5"], &t));
        assert!(m("req.hdr_cnt(x-list)", vec![], &["3:"], &t));
        assert!(!m("req.hdr_cnt(x-list)", vec![], &[":2"], &t));
        assert!(m("req.hdr_val(content-length)", vec![], &["0"], &t));
        assert!(m("urlp_val(id)", vec![], &["40:50"], &t));
        assert!(m("src_port", vec![], &["1024:65535"], &t));
        assert!(m("path", vec![AclFlag::Match(CM::Len)], &["20"], &t));
        assert!(compile_acl(&def("x", "src_port", vec![], &["gt", "x"])).is_err());
        assert!(compile_acl(&def("x", "src_port", vec![], &["abc"])).is_err());
    }

    #[test]
    fn addresses() {
        let t = req();
        assert!(m("src", vec![], &["192.0.2.0/24"], &t));
        assert!(m("src", vec![], &["10.0.0.0/8", "192.0.2.7"], &t));
        assert!(!m("src", vec![], &["10.0.0.0/8"], &t));
        assert!(m("dst", vec![], &["10.0.0.1"], &t));
        assert!(m("src,ipmask(16)", vec![], &["192.0.0.0"], &t));
        assert!(compile_acl(&def("x", "src", vec![], &["not-an-ip"]))
            .unwrap_err()
            .contains("not a valid IPv4"));
        let mut t6 = tcp_txn();
        t6.client = "[2001:db8::5]:1".parse().unwrap();
        assert!(m("src", vec![], &["2001:db8::/32"], &t6));
        assert!(!m("src", vec![], &["192.0.2.0/24"], &t6));
    }

    #[test]
    fn runtime_typed_and_binary() {
        let t = req();
        assert!(m("var(txn.n)", vec![], &["10:20"], &t));
        assert!(m("var(txn.s)", vec![], &["hello"], &t));
        assert!(m("var(txn.s)", vec![AclFlag::Match(CM::Beg)], &["he"], &t));
        assert!(!m("var(txn.none)", vec![], &["x"], &t));
        assert!(m("var(txn.none)", vec![AclFlag::Match(CM::Found)], &[], &{
            let mut t2 = req();
            t2.vars.set("txn.none", VarValue::Bool(false), false);
            t2
        }));
        let e = compile_acl(&def("x", "req.body", vec![], &["x"])).unwrap_err();
        assert!(e.contains("matching method is required"));
        let mut t = req();
        t.req_body = Some(Bytes::from_static(b"Hello\n<tag>"));
        assert!(m(
            "req.body",
            vec![AclFlag::Match(CM::Bin)],
            &["48656c6c6f0a3c7461673e"],
            &t
        ));
        assert!(m("req.body", vec![AclFlag::Match(CM::Sub)], &["<tag>"], &t));
        assert!(m(
            "req.body,hex",
            vec![AclFlag::Match(CM::Sub)],
            &["3C7461673E"],
            &t
        ));
        assert!(m("lua.echo(a)", vec![], &["a"], &t));
    }

    #[test]
    fn methods_and_versions() {
        let t = req();
        assert!(m("method", vec![], &["GET", "HEAD"], &t));
        assert!(!m("method", vec![], &["get"], &t));
        assert!(m("method", vec![AclFlag::IgnoreCase], &["get"], &t));
        assert!(m("req.ver", vec![], &["1.1"], &t));
        assert!(m("req_ver", vec![], &["1.1"], &t));
        let t = with_response(req(), 503, &[("x-r", "v")]);
        assert!(m("status", vec![], &["500:599"], &t));
        assert!(m("shdr(x-r)", vec![], &["v"], &t));
        assert!(m("res.hdr_beg(x-r)", vec![], &["v"], &t));
    }

    #[test]
    fn pattern_files() {
        let d = temp_dir("aclfiles");
        let exact = d.join("exact.lst");
        std::fs::write(&exact, "# agents\nCurl/7\n\n  Wget/1 \n").unwrap();
        let generic = d.join("generic.lst");
        std::fs::write(&generic, "mozilla\n").unwrap();
        let nets = d.join("nets.lst");
        std::fs::write(&nets, "10.0.0.0/8\n192.0.2.0/24\n").unwrap();
        let f = |p: &std::path::Path| AclFlag::File(p.to_string_lossy().into_owned());
        let ua = |v: &str| http_txn("GET", "/", &[("user-agent", v)]);
        // -i applies to what follows it only.
        let flags = vec![f(&exact), AclFlag::IgnoreCase, f(&generic)];
        let a = compile_acl(&def("x", "hdr(user-agent)", flags, &["test"])).unwrap();
        assert!(a.matches(&ctx(&ua("Curl/7"))));
        assert!(!a.matches(&ctx(&ua("curl/7"))));
        // The file's trailing blank is part of the pattern; header values
        // have none.
        assert!(!a.matches(&ctx(&ua("Wget/1"))));
        assert!(a.matches(&ctx(&ua("MOZILLA"))));
        assert!(a.matches(&ctx(&ua("TEST"))));
        assert!(!a.matches(&ctx(&ua("other"))));
        let a = compile_acl(&def("x", "src", vec![f(&nets)], &[])).unwrap();
        assert!(a.matches(&ctx(&tcp_txn())));
        // Runtime additions to the shared file are seen by the ACL.
        let fl = map::load_kind(&exact, FileKind::Acl).unwrap();
        fl.add_if_absent(b"NewBot").unwrap();
        let a2 = compile_acl(&def("x", "hdr(user-agent)", vec![f(&exact)], &[])).unwrap();
        assert!(a2.matches(&ctx(&ua("NewBot"))));
        fl.del(b"NewBot");
        assert!(!a2.matches(&ctx(&ua("NewBot"))));
        // -M reads the file as a map: keys are the patterns.
        let mp = d.join("m.map");
        std::fs::write(&mp, "/api backend1\n").unwrap();
        let a = compile_acl(&def("x", "path", vec![AclFlag::Map, f(&mp)], &[])).unwrap();
        assert!(a.matches(&ctx(&http_txn("GET", "/api", &[]))));
        let e = compile_acl(&def("x", "path", vec![f(&d.join("missing.lst"))], &[])).unwrap_err();
        assert!(e.contains("failed to open"));
        let bad = d.join("bad.lst");
        std::fs::write(&bad, "10.0.0.0/8\nnope\n").unwrap();
        let e = compile_acl(&def("x", "src", vec![f(&bad)], &[])).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    fn cond(kind: CondKind, expr: CondExpr) -> Condition {
        Condition { kind, expr }
    }

    fn acl(n: &str) -> CondExpr {
        CondExpr::Acl(n.to_string())
    }

    #[test]
    fn conditions() {
        let set = AclSet::compile(&[
            def("api", "path_beg", vec![], &["/api"]),
            def("img", "path_beg", vec![], &["/images"]),
            // A second definition of a name is an alternative.
            def("img", "path_end", vec![], &[".gif"]),
            def("local", "src", vec![], &["127.0.0.1"]),
        ])
        .unwrap();
        let t = req();
        let c = ctx(&t);
        assert!(set.eval(&cond(CondKind::If, acl("img")), &c));
        assert!(!set.eval(&cond(CondKind::Unless, acl("img")), &c));
        assert!(set.eval(&cond(CondKind::If, CondExpr::Not(Box::new(acl("api")))), &c));
        assert!(set.eval(
            &cond(CondKind::If, CondExpr::Or(vec![acl("api"), acl("img")])),
            &c
        ));
        assert!(!set.eval(
            &cond(CondKind::If, CondExpr::And(vec![acl("api"), acl("img")])),
            &c
        ));
        assert!(set.eval(
            &cond(
                CondKind::If,
                CondExpr::And(vec![acl("img"), acl("METH_GET")])
            ),
            &c
        ));
        let t2 = http_txn("GET", "/x.gif", &[]);
        assert!(set.eval(&cond(CondKind::If, acl("img")), &ctx(&t2)));
        let anon = CondExpr::Anonymous(Box::new(def(
            "",
            "req.hdr_cnt(x-list)",
            vec![],
            &["eq", "3"],
        )));
        let cc = set
            .compile_condition(&cond(CondKind::If, anon.clone()))
            .unwrap();
        assert!(cc.eval(&c));
        assert!(set.eval(&cond(CondKind::If, anon), &c));
        assert_eq!(
            set.check_condition(&cond(CondKind::If, acl("nope")))
                .unwrap_err(),
            "no such ACL: 'nope'"
        );
        let bad = CondExpr::Anonymous(Box::new(def("", "nofetch", vec![], &[])));
        assert!(set
            .check_condition(&cond(CondKind::If, bad.clone()))
            .unwrap_err()
            .contains("unknown fetch"));
        assert!(!set.eval(&cond(CondKind::If, bad), &c));
        assert!(set.contains("img") && set.contains("TRUE") && !set.contains("nope"));
    }

    #[test]
    fn predefined_acls() {
        let set = AclSet::default();
        let t = req();
        let is = |name: &str, t: &Txn| set.eval(&cond(CondKind::If, acl(name)), &ctx(t));
        // Every name the configuration parser accepts as predefined.
        let names = crate::config::PREDEFINED_ACLS;
        for &name in names {
            assert!(predefined().contains_key(name), "predefined {name} missing");
        }
        assert!(is("TRUE", &t));
        assert!(!is("FALSE", &t));
        assert!(is("HTTP", &t));
        assert!(is("HTTP_1.1", &t));
        assert!(!is("HTTP_1.0", &t));
        assert!(is("METH_GET", &t));
        assert!(is("METH_GET", &http_txn("HEAD", "/", &[])));
        assert!(!is("METH_POST", &t));
        assert!(is("METH_POST", &http_txn("POST", "/", &[])));
        assert!(!is("HTTP_CONTENT", &t));
        assert!(is(
            "HTTP_CONTENT",
            &http_txn("POST", "/", &[("content-length", "3")])
        ));
        assert!(is("HTTP_URL_SLASH", &t));
        assert!(!is("HTTP_URL_ABS", &t));
        assert!(is("HTTP_URL_ABS", &http_txn("GET", "http://x/", &[])));
        assert!(is("HTTP_URL_STAR", &http_txn("OPTIONS", "*", &[])));
        assert!(!is("LOCALHOST", &t));
        let mut l = tcp_txn();
        l.client = "127.0.0.1:5".parse().unwrap();
        assert!(is("LOCALHOST", &l));
        l.client = "[::1]:5".parse().unwrap();
        assert!(is("LOCALHOST", &l));
        assert!(!is("REQ_CONTENT", &l));
        l.req_buf.extend_from_slice(b"x");
        assert!(is("REQ_CONTENT", &l));
        assert!(!is("HTTP", &l));
    }

    #[test]
    fn compile_errors_carry_locations() {
        let errs = AclSet::compile(&[
            def("a", "nofetch", vec![], &[]),
            def("b", "path", vec![], &["/"]),
            def("c", "src", vec![], &["x"]),
        ])
        .unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].0, loc());
        assert!(errs[0]
            .1
            .starts_with("in ACL 'a': unknown fetch method 'nofetch'"));
        assert!(errs[1].1.starts_with("in ACL 'c':"));
        assert!(compile_acl(&def("x", "path_reg", vec![], &["("]))
            .unwrap_err()
            .contains("invalid regex"));
    }

    #[test]
    fn thread_safe() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AclSet>();
        assert_send_sync::<CompiledCond>();
    }
}
