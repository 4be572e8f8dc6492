//! Samples crossing the Lua boundary, and Lua fetches/converters called from
//! the sample engine.
//!
//! HAProxy's conversion rules, which scripts depend on:
//! - Lua to sample: integer -> sint (a float is truncated), boolean -> bool,
//!   string -> str, anything else (nil, table, function, ...) -> bool false.
//! - sample to Lua: bool -> integer 0/1 (`tune.lua.bool-sample-conversion
//!   pre-3.1-bug`, the default) or boolean (`normal`), sint -> integer,
//!   str/bin/meth -> string, addresses -> their text form.

use crate::lua::exec::{self, ExecCtx, ExecError};
use crate::lua::handles::{Native, Registration};
use crate::lua::state::StateInfo;
use crate::lua::txn_access::{BorrowGuard, TxnCell};
use crate::sample::{LuaSamples, Sample};
use crate::txn::Txn;
use bytes::Bytes;
use mlua::{Lua, Value};
use std::sync::atomic::{AtomicBool, Ordering};

/// `tune.lua.bool-sample-conversion normal`: process-wide, as in HAProxy,
/// and set once at start-up before any state exists.
static BOOL_AS_BOOLEAN: AtomicBool = AtomicBool::new(false);

/// Whether boolean samples (and variables) reach Lua as booleans.
pub fn bool_sample_normal() -> bool {
    BOOL_AS_BOOLEAN.load(Ordering::Relaxed)
}

/// Sets how boolean samples reach Lua: `true` as booleans (`normal`),
/// `false` as integers 0/1 (`pre-3.1-bug`).
pub fn set_bool_sample_normal(normal: bool) {
    BOOL_AS_BOOLEAN.store(normal, Ordering::Relaxed);
}

pub fn lua_to_sample(v: &Value) -> Sample {
    match v {
        Value::Integer(i) => Sample::Sint(*i),
        // As lua_tointeger: a float without an exact integer value gives 0.
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.2e18 => Sample::Sint(*n as i64),
        Value::Number(_) => Sample::Sint(0),
        Value::Boolean(b) => Sample::Bool(*b),
        Value::String(s) => Sample::Str(Bytes::copy_from_slice(&s.as_bytes())),
        _ => Sample::Bool(false),
    }
}

pub fn sample_to_lua(lua: &Lua, s: &Sample) -> mlua::Result<Value> {
    Ok(match s {
        // HAProxy 3.0 and before hand booleans to Lua as integers 0/1; 3.2+
        // does so unless told `normal`.
        Sample::Bool(b) if bool_sample_normal() => Value::Boolean(*b),
        Sample::Bool(b) => Value::Integer(*b as i64),
        Sample::Sint(i) => Value::Integer(*i),
        Sample::Str(b) | Sample::Bin(b) | Sample::Meth(b) => Value::String(lua.create_string(b)?),
        Sample::Ip(ip) => Value::String(lua.create_string(ip.to_string())?),
    })
}

/// Lua arguments of a fetch/converter call as the strings the sample engine
/// takes (numbers in decimal, booleans as 1/0).
pub fn lua_args<'a>(args: impl IntoIterator<Item = &'a Value>) -> mlua::Result<Vec<String>> {
    args.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.to_string_lossy()),
            Value::Integer(n) => Ok(n.to_string()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Boolean(b) => Ok(if *b { "1" } else { "0" }.to_string()),
            other => Err(mlua::Error::runtime(format!(
                "bad argument #{} (string or number expected, got {})",
                i + 1,
                other.type_name()
            ))),
        })
        .collect()
}

/// Lua fetches and converters registered in one state, called synchronously
/// (they may not yield) under the session budget.
pub struct StateSamples<'a> {
    pub lua: &'a Lua,
    pub info: &'a StateInfo,
}

impl StateSamples<'_> {
    fn call(
        &self,
        kind: &str,
        func: mlua::Function,
        name: &str,
        txn: &Txn,
        first: Value,
        args: &[String],
    ) -> Option<Sample> {
        let lua = self.lua;
        // SAFETY: `txn` outlives this call; the guard closes the cell before
        // the borrow ends, so Lua objects kept by the script can't reach it.
        let cell = unsafe { TxnCell::borrowed(txn) };
        let _guard = BorrowGuard(cell.clone());
        let mut call_args = Vec::with_capacity(args.len() + 1);
        // Dropped (closing the Lua objects' access) before the guard ends
        // the borrow.
        let _registration;
        if kind == "sample-fetch" {
            let registration = match Registration::new(Native::Txn(cell)) {
                Ok(r) => r,
                Err(e) => {
                    crate::log::log(
                        crate::log::ERR,
                        &format!("Lua {kind} '{name}': {}.", crate::lua::errors::message(&e)),
                    );
                    return None;
                }
            };
            let handle = registration.handle();
            _registration = registration;
            match crate::lua::txn_class::new_txn(lua, self.info, handle) {
                Ok(t) => call_args.push(Value::Table(t)),
                Err(e) => {
                    crate::log::log(
                        crate::log::ERR,
                        &format!("Lua {kind} '{name}': {}.", crate::lua::errors::message(&e)),
                    );
                    return None;
                }
            }
        } else {
            call_args.push(first);
        }
        for a in args {
            call_args.push(Value::String(lua.create_string(a).ok()?));
        }
        let ctx = ExecCtx::new(self.info.settings.session_budget(), false);
        match exec::call_sync::<mlua::MultiValue>(
            &ctx,
            &func,
            mlua::MultiValue::from_vec(call_args),
        ) {
            // No value at all is no sample; nil is a false sample (HAProxy).
            Ok(v) => v.front().map(lua_to_sample),
            Err(ExecError::Done) => None,
            Err(e) => {
                crate::log::log(
                    crate::log::ERR,
                    &format!("Lua {kind} '{name}': {}.", e.message()),
                );
                None
            }
        }
    }
}

impl LuaSamples for StateSamples<'_> {
    fn fetch(&self, name: &str, txn: &Txn, args: &[String]) -> Option<Sample> {
        let func = self.info.regs.borrow().fetches.get(name).cloned()?;
        self.call("sample-fetch", func, name, txn, Value::Nil, args)
    }

    fn convert(&self, name: &str, txn: &Txn, input: Sample, args: &[String]) -> Option<Sample> {
        let func = self.info.regs.borrow().converters.get(name).cloned()?;
        // "A converter gets a string as input" (HAProxy's Lua reference).
        let first = Value::String(self.lua.create_string(input.to_bytes()).ok()?);
        self.call("converter", func, name, txn, first, args)
    }
}
