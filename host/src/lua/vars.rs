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

/// A `proc` variable. One the configuration names (`var(proc.x)`,
/// `set-var(proc.x)`, a converter's variable argument) exists from start-up
/// on, without a value, and stays when unset: HAProxy creates such
/// variables "permanent" while parsing, and `set_var(name, v, true)`
/// (ifexist) may then set them.
#[derive(Debug, Default)]
struct ProcVar {
    value: Option<VarValue>,
    permanent: bool,
}

fn proc_vars() -> &'static Mutex<HashMap<String, ProcVar>> {
    static PROC: OnceLock<Mutex<HashMap<String, ProcVar>>> = OnceLock::new();
    PROC.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Records that the configuration (or a sample expression a script built)
/// names variable `full`: a `proc` one then exists, as in HAProxy.
pub fn declare(full: &str) {
    if !matches!(parse_name(full), Some((Scope::Proc, _))) {
        return;
    }
    if let Ok(mut m) = proc_vars().lock() {
        m.entry(full.to_string()).or_default().permanent = true;
    }
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
            None => unset_proc(full),
        }
    }
}

pub fn set_proc(full: &str, value: VarValue, ifexist: bool) -> bool {
    let Ok(mut m) = proc_vars().lock() else {
        return false;
    };
    match m.get_mut(full) {
        Some(var) => var.value = Some(value),
        None if ifexist => return false,
        None => {
            m.insert(
                full.to_string(),
                ProcVar {
                    value: Some(value),
                    permanent: false,
                },
            );
        }
    }
    true
}

pub fn get_proc(full: &str) -> Option<VarValue> {
    proc_vars().lock().ok()?.get(full)?.value.clone()
}

/// Unsets a `proc` variable; one the configuration names keeps existing.
fn unset_proc(full: &str) -> bool {
    let Ok(mut m) = proc_vars().lock() else {
        return false;
    };
    match m.get_mut(full) {
        Some(var) if var.permanent => var.value.take().is_some(),
        Some(_) => m.remove(full).is_some_and(|v| v.value.is_some()),
        None => false,
    }
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

    #[test]
    fn ifexist_sets_proc_vars_the_configuration_names() {
        let mut s = VarStore::default();
        declare("proc.test_declared");
        // Declared: exists without a value.
        assert_eq!(s.get("proc.test_declared"), None);
        assert!(s.set("proc.test_declared", VarValue::Int(1), true));
        assert_eq!(s.get("proc.test_declared"), Some(VarValue::Int(1)));
        // Unset keeps a declared variable (HAProxy's permanent variables).
        assert!(s.unset("proc.test_declared"));
        assert_eq!(s.get("proc.test_declared"), None);
        assert!(s.set("proc.test_declared", VarValue::Int(2), true));
        // An undeclared one set, then unset, is gone.
        assert!(s.set("proc.test_undeclared", VarValue::Int(1), false));
        assert!(s.unset("proc.test_undeclared"));
        assert!(!s.set("proc.test_undeclared", VarValue::Int(1), true));
        // Other scopes: declaring does nothing.
        declare("txn.test_declared");
        assert_eq!(s.get("txn.test_declared"), None);
    }
}
