//! The Lua `Map` class (`Map.new(file, method)`, `m:lookup(key)`,
//! `m:slookup(key)`) and `core.set_map`, `core.del_map`, `core.add_acl`,
//! `core.del_acl`.
//!
//! A `Map` object reads the same loaded copy of the file as the map
//! converters and ACL `-f` lists of the configuration, so changes made with
//! `core.set_map` & co. are seen everywhere at once.

use crate::lua::class::{native, Class};
use crate::sample::map::{self, FileKind, MapFile};
use crate::sample::pattern::MatchMethod;
use mlua::{Lua, Table, Value};
use std::path::Path;
use std::sync::Arc;

/// The native side of a Map object.
struct MapObj {
    file: Arc<MapFile>,
    method: MatchMethod,
}

/// The match methods exposed as `Map._NAME` and `Map.NAME`.
const METHODS: &[&str] = &[
    "found", "bool", "int", "ip", "bin", "len", "str", "beg", "sub", "dir", "dom", "end", "reg",
    "regm",
];

/// Reads argument `pos` of `func` as bytes (numbers are accepted and
/// converted, as Lua's string arguments are).
fn arg_bytes(v: &Value, pos: usize, func: &str) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(i) => Ok(i.to_string().into_bytes()),
        Value::Number(n) => Ok(format!("{n}").into_bytes()),
        other => Err(mlua::Error::runtime(format!(
            "bad argument #{pos} to '{func}' (string expected, got {})",
            other.type_name()
        ))),
    }
}

fn arg_str(v: &Value, pos: usize, func: &str) -> mlua::Result<String> {
    Ok(String::from_utf8_lossy(&arg_bytes(v, pos, func)?).into_owned())
}

/// The loaded file `name` (loading it when it exists on disk but was not
/// referenced yet), or the error HAProxy raises for an unknown file.
fn file_for(name: &str, kind: FileKind, func: &str) -> mlua::Result<Arc<MapFile>> {
    if let Some(f) = map::find(name, kind) {
        return Ok(f);
    }
    let what = match kind {
        FileKind::Map => "map",
        FileKind::Acl => "acl",
    };
    map::load_kind(Path::new(name), kind)
        .map_err(|_| mlua::Error::runtime(format!("'{func}': unknown {what} file '{name}'")))
}

fn lookup(this: &Value, key: &Value, func: &str) -> mlua::Result<Option<Vec<u8>>> {
    let m = native::<MapObj>(this, "Map", func)?;
    let k = arg_bytes(key, 2, func)?;
    Ok(m.file.lookup_str(m.method, &k).map(|v| v.to_vec()))
}

/// Creates the `Map` global and the map/ACL functions of `core`.
pub fn install(lua: &Lua, core: &Table) -> mlua::Result<()> {
    let class = Class::new(lua, "Map")?;
    class.method(
        "lookup",
        lua.create_function(|lua, (this, key): (Value, Value)| {
            match lookup(&this, &key, "lookup")? {
                Some(v) => Ok(Value::String(lua.create_string(&v)?)),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    class.method(
        "slookup",
        lua.create_function(|lua, (this, key): (Value, Value)| {
            let v = lookup(&this, &key, "slookup")?.unwrap_or_default();
            lua.create_string(&v)
        })?,
    )?;

    let global = lua.create_table()?;
    for (code, name) in METHODS.iter().enumerate() {
        global.raw_set(*name, code as i64)?;
        global.raw_set(format!("_{name}"), code as i64)?;
    }
    let c = class.clone();
    global.raw_set(
        "new",
        lua.create_function(move |lua, args: mlua::Variadic<Value>| {
            if args.is_empty() || args.len() > 2 {
                return Err(mlua::Error::runtime("'new' needs at least 1 argument."));
            }
            let name = arg_str(&args[0], 1, "new")?;
            let code = match args.get(1) {
                None | Some(Value::Nil) => MatchMethod::Str.lua_code(),
                Some(Value::Integer(i)) => *i,
                Some(Value::Number(n)) if n.fract() == 0.0 => *n as i64,
                Some(_) => return Err(mlua::Error::runtime("'new' needs a valid match method.")),
            };
            let method = match MatchMethod::from_lua_code(code) {
                Some(
                    m @ (MatchMethod::Str
                    | MatchMethod::Beg
                    | MatchMethod::Sub
                    | MatchMethod::Dir
                    | MatchMethod::Dom
                    | MatchMethod::End
                    | MatchMethod::Reg
                    | MatchMethod::Int
                    | MatchMethod::Ip),
                ) => m,
                Some(_) => {
                    return Err(mlua::Error::runtime(
                        "'new' doesn't support this match mode.",
                    ))
                }
                None => return Err(mlua::Error::runtime("'new' needs a valid match method.")),
            };
            let file = map::load(Path::new(&name))
                .map_err(|e| mlua::Error::runtime(format!("'new': {e}.")))?;
            file.prepare(method, false)
                .map_err(|e| mlua::Error::runtime(format!("'new': {e}.")))?;
            c.instantiate(lua, MapObj { file, method })
        })?,
    )?;
    // Map.lookup and Map.slookup also work on the class, as in HAProxy.
    global.set_metatable(Some(class.meta.clone()))?;
    lua.globals().raw_set("Map", global)?;

    core.raw_set(
        "set_map",
        lua.create_function(|_, (name, key, value): (Value, Value, Value)| {
            let name = arg_str(&name, 1, "set_map")?;
            let key = arg_bytes(&key, 2, "set_map")?;
            let value = arg_bytes(&value, 3, "set_map")?;
            file_for(&name, FileKind::Map, "set_map")?
                .set(&key, &value)
                .map_err(|e| mlua::Error::runtime(format!("'set_map': {e}")))
        })?,
    )?;
    core.raw_set(
        "del_map",
        lua.create_function(|_, (name, key): (Value, Value)| {
            let name = arg_str(&name, 1, "del_map")?;
            let key = arg_bytes(&key, 2, "del_map")?;
            file_for(&name, FileKind::Map, "del_map")?.del(&key);
            Ok(())
        })?,
    )?;
    core.raw_set(
        "add_acl",
        lua.create_function(|_, (name, key): (Value, Value)| {
            let name = arg_str(&name, 1, "add_acl")?;
            let key = arg_bytes(&key, 2, "add_acl")?;
            file_for(&name, FileKind::Acl, "add_acl")?
                .add_if_absent(&key)
                .map_err(|e| mlua::Error::runtime(format!("'add_acl': {e}")))
        })?,
    )?;
    core.raw_set(
        "del_acl",
        lua.create_function(|_, (name, key): (Value, Value)| {
            let name = arg_str(&name, 1, "del_acl")?;
            let key = arg_bytes(&key, 2, "del_acl")?;
            file_for(&name, FileKind::Acl, "del_acl")?.del(&key);
            Ok(())
        })?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::testutil::{s, temp_dir};

    fn state() -> (Lua, Table) {
        // SAFETY: the tests load no native module; unsafe_new only allows
        // the C libraries the host links anyway.
        let lua = unsafe { Lua::unsafe_new() };
        let core = lua.create_table().unwrap();
        install(&lua, &core).unwrap();
        lua.globals().set("core", core.clone()).unwrap();
        (lua, core)
    }

    fn file(text: &str) -> String {
        let d = temp_dir("luamap");
        let p = d.join("f.map");
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn lookups() {
        let (lua, _) = state();
        let f = file("/api api\n/api/v2 v2\n10.0.0.0/8 net\n");
        lua.globals().set("F", f).unwrap();
        let r: (Option<String>, Option<String>, String, String, Option<String>, String) = lua
            .load(
                r#"
                local m = Map.new(F, Map._beg)
                local e = Map.new(F, Map.str)
                return m:lookup("/api/v2/x"), m:lookup("/nope"), m:slookup("/nope"),
                       Map.slookup(e, "/api"), e:lookup("/api/x"), tostring(m):match("^Map: ") and "ok" or "ko"
            "#,
            )
            .eval()
            .unwrap();
        assert_eq!(r.0.as_deref(), Some("v2"));
        assert_eq!(r.1, None);
        assert_eq!(r.2, "");
        assert_eq!(r.3, "api");
        assert_eq!(r.4, None);
        assert_eq!(r.5, "ok");
        let d = temp_dir("luamap-ip");
        let p = d.join("ip.map");
        std::fs::write(&p, "10.0.0.0/8 net8\n10.1.0.0/16 net16\n").unwrap();
        lua.globals()
            .set("IPF", p.to_string_lossy().to_string())
            .unwrap();
        let r: (Option<String>, Option<String>) = lua
            .load(r#"local m = Map.new(IPF, Map._ip) return m:lookup("10.1.2.3"), m:lookup("bad")"#)
            .eval()
            .unwrap();
        assert_eq!(r, (Some("net16".to_string()), None));
        let codes: (i64, i64, i64, i64) = lua
            .load("return Map._str, Map.str, Map._ip, Map._reg")
            .eval()
            .unwrap();
        assert_eq!(codes, (6, 6, 3, 12));
    }

    #[test]
    fn errors_are_clear() {
        let (lua, _) = state();
        let err = |code: &str| lua.load(code).exec().unwrap_err().to_string();
        assert!(err("Map.new()").contains("'new' needs at least 1 argument."));
        assert!(err("Map.new('/nonexistent/x.map', Map._str)").contains("'new': failed to open"));
        assert!(err("Map.new('/x', 99)").contains("needs a valid match method"));
        assert!(err("Map.new('/x', Map._found)").contains("doesn't support this match mode"));
        assert!(err("Map.new('/x', 'str')").contains("needs a valid match method"));
        let f = file("a 1\n");
        lua.globals().set("F", f).unwrap();
        assert!(err("local m = Map.new(F) m:lookup({})")
            .contains("bad argument #2 to 'lookup' (string expected, got table)"));
        assert!(err("Map.lookup({}, 'x')").contains("bad argument #1 to 'lookup' (Map expected"));
        assert!(err("core.set_map('/nonexistent/y.map', 'k', 'v')")
            .contains("'set_map': unknown map file '/nonexistent/y.map'"));
        assert!(
            err("core.add_acl('/nonexistent/y.acl', 'k')").contains("'add_acl': unknown acl file")
        );
        assert!(err("core.set_map(F, nil, 'v')").contains("bad argument #2 to 'set_map'"));
        // Numbers are accepted where strings are expected.
        let v: Option<String> = lua
            .load("local m = Map.new(F) return m:lookup('a')")
            .eval()
            .unwrap();
        assert_eq!(v.as_deref(), Some("1"));
    }

    #[test]
    fn runtime_changes_are_shared() {
        let (lua, _) = state();
        let f = file("a 1\nb 2\n");
        lua.globals().set("F", f.clone()).unwrap();
        let conv_map = map::load(Path::new(&f)).unwrap();
        let r: (Option<String>, Option<String>, Option<String>) = lua
            .load(
                r#"
                local m = Map.new(F, Map._str)
                core.set_map(F, "a", "10")
                core.set_map(F, "c", 3)
                core.del_map(F, "b")
                return m:lookup("a"), m:lookup("b"), m:lookup("c")
            "#,
            )
            .eval()
            .unwrap();
        assert_eq!(r, (Some("10".into()), None, Some("3".into())));
        // The converters' copy is the same one.
        assert_eq!(
            conv_map.lookup(MatchMethod::Str, false, &s("a")).as_deref(),
            Some(&b"10"[..])
        );
        assert_eq!(conv_map.lookup(MatchMethod::Str, false, &s("b")), None);

        let d = temp_dir("luaacl");
        let p = d.join("bad.acl");
        std::fs::write(&p, "1.2.3.4\n").unwrap();
        let acl = map::load_kind(&p, FileKind::Acl).unwrap();
        acl.prepare(MatchMethod::Ip, false).unwrap();
        lua.globals()
            .set("A", p.to_string_lossy().to_string())
            .unwrap();
        lua.load("core.add_acl(A, '10.0.0.0/8') core.add_acl(A, '10.0.0.0/8') core.del_acl(A, '1.2.3.4')")
            .exec()
            .unwrap();
        assert_eq!(acl.entries().len(), 1);
        assert!(acl.matches(MatchMethod::Ip, false, &s("10.9.9.9")));
        assert!(!acl.matches(MatchMethod::Ip, false, &s("1.2.3.4")));
        let e = lua
            .load("core.add_acl(A, 'not-an-ip')")
            .exec()
            .unwrap_err()
            .to_string();
        assert!(e.contains("'add_acl':"), "{e}");
    }
}
