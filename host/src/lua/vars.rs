//! HAProxy variables: `proc.*` (process-wide), `sess.*` (one connection),
//! `txn.*` (one transaction), `req.*` / `res.*` (one direction).
//! Values are samples; Lua values convert as HAProxy converts them
//! (number -> sint, boolean -> bool, string -> str, anything else -> bool false).

use mlua::{Lua, Value};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// A variable's value (a sample of HAProxy's basic types).
#[derive(Clone, Debug, PartialEq)]
pub enum VarValue {
    Int(i64),
    Bool(bool),
    Str(Vec<u8>),
}

impl VarValue {
    /// Converts a Lua value by HAProxy's rules.
    pub fn from_lua(v: &Value) -> VarValue {
        match v {
            Value::Integer(i) => VarValue::Int(*i),
            // As lua_tointeger (and Lua fetches): a fraction gives 0.
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.2e18 => VarValue::Int(*n as i64),
            Value::Number(_) => VarValue::Int(0),
            Value::Boolean(b) => VarValue::Bool(*b),
            Value::String(s) => VarValue::Str(s.as_bytes().to_vec()),
            _ => VarValue::Bool(false),
        }
    }

    pub fn into_lua(self, lua: &Lua) -> mlua::Result<Value> {
        Ok(match self {
            VarValue::Int(i) => Value::Integer(i),
            // As any boolean sample: a boolean with
            // `tune.lua.bool-sample-conversion normal`, else 0/1.
            VarValue::Bool(b) if crate::lua::sample_bridge::bool_sample_normal() => {
                Value::Boolean(b)
            }
            VarValue::Bool(b) => Value::Integer(b as i64),
            VarValue::Str(s) => Value::String(lua.create_string(&s)?),
        })
    }
}

/// The scope of a variable name such as "txn.foo".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Proc,
    Sess,
    Txn,
    Req,
    Res,
}

/// Splits "scope.name"; None when the scope is unknown or the name empty.
pub fn parse_name(full: &str) -> Option<(Scope, &str)> {
    let (scope, name) = full.split_once('.')?;
    let scope = match scope {
        "proc" => Scope::Proc,
        "sess" => Scope::Sess,
        "txn" => Scope::Txn,
        "req" => Scope::Req,
        "res" => Scope::Res,
        _ => return None,
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    valid.then_some((scope, name))
}

fn proc_vars() -> &'static Mutex<HashMap<String, VarValue>> {
    static PROC: OnceLock<Mutex<HashMap<String, VarValue>>> = OnceLock::new();
    PROC.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The variables of one transaction (and its session), except `proc`,
/// which is process-wide. Plain owned maps so that a transaction can move
/// to the worker that runs its Lua code.
#[derive(Clone, Debug, Default)]
pub struct VarStore {
    pub sess: HashMap<String, VarValue>,
    pub txn: HashMap<String, VarValue>,
    pub req: HashMap<String, VarValue>,
    pub res: HashMap<String, VarValue>,
}

impl VarStore {
    fn map(&self, scope: Scope) -> Option<&HashMap<String, VarValue>> {
        match scope {
            Scope::Proc => None,
            Scope::Sess => Some(&self.sess),
            Scope::Txn => Some(&self.txn),
            Scope::Req => Some(&self.req),
            Scope::Res => Some(&self.res),
        }
    }

    fn map_mut(&mut self, scope: Scope) -> Option<&mut HashMap<String, VarValue>> {
        match scope {
            Scope::Proc => None,
            Scope::Sess => Some(&mut self.sess),
            Scope::Txn => Some(&mut self.txn),
            Scope::Req => Some(&mut self.req),
            Scope::Res => Some(&mut self.res),
        }
    }

    /// Sets a variable; with `ifexist`, only a proc variable that doesn't
    /// exist yet is refused (HAProxy's rule). Returns whether it was set.
    pub fn set(&mut self, full: &str, value: VarValue, ifexist: bool) -> bool {
        let Some((scope, _)) = parse_name(full) else {
            return false;
        };
        match self.map_mut(scope) {
            Some(m) => {
                m.insert(full.to_string(), value);
                true
            }
            None => set_proc(full, value, ifexist),
        }
    }

    pub fn get(&self, full: &str) -> Option<VarValue> {
        let (scope, _) = parse_name(full)?;
        match self.map(scope) {
            Some(m) => m.get(full).cloned(),
            None => get_proc(full),
        }
    }

    pub fn unset(&mut self, full: &str) -> bool {
        let Some((scope, _)) = parse_name(full) else {
            return false;
        };
        match self.map_mut(scope) {
            Some(m) => m.remove(full).is_some(),
            None => proc_vars()
                .lock()
                .map(|mut m| m.remove(full).is_some())
                .unwrap_or(false),
        }
    }
}

pub fn set_proc(full: &str, value: VarValue, ifexist: bool) -> bool {
    let Ok(mut m) = proc_vars().lock() else {
        return false;
    };
    if ifexist && !m.contains_key(full) {
        return false;
    }
    m.insert(full.to_string(), value);
    true
}

pub fn get_proc(full: &str) -> Option<VarValue> {
    proc_vars().lock().ok()?.get(full).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_scopes() {
        assert_eq!(parse_name("txn.foo"), Some((Scope::Txn, "foo")));
        assert_eq!(parse_name("proc.a.b"), Some((Scope::Proc, "a.b")));
        assert_eq!(parse_name("foo"), None);
        assert_eq!(parse_name("bad.x"), None);
        assert_eq!(parse_name("txn."), None);
    }

    #[test]
    fn ifexist_refuses_only_new_proc_vars() {
        let mut s = VarStore::default();
        assert!(s.set("txn.new", VarValue::Int(1), true));
        assert!(!s.set("proc.test_ifexist_new", VarValue::Int(1), true));
        assert!(s.set("proc.test_ifexist_new", VarValue::Int(1), false));
        assert!(s.set("proc.test_ifexist_new", VarValue::Int(2), true));
        assert_eq!(s.get("proc.test_ifexist_new"), Some(VarValue::Int(2)));
        assert!(s.unset("txn.new"));
        assert_eq!(s.get("txn.new"), None);
    }
}
