//! The Fetches (`txn.f`, `txn.sf`) and Converters (`txn.c`, `txn.sc`)
//! classes: every native sample fetch and converter as a method.
//!
//! HAProxy names the methods after the keywords with '.', '-' and '+'
//! turned into '_' (`txn.f:req_fhdr("host")`); the original spelling works
//! too (`txn.f["req.fhdr"](txn.f, "host")`). `f`/`c` return typed values or
//! nil when the sample is missing; `sf`/`sc` always return a string ("" when
//! missing).

use crate::lua::class::Class;
use crate::lua::handles::{self, Kind};
use crate::lua::sample_bridge::{lua_args, lua_to_sample, sample_to_lua, StateSamples};
use crate::lua::state::StateInfo;
use crate::sample::{conv, fetch, Sample, SampleCtx};
use mlua::{Lua, MultiValue, Value};
use std::rc::Rc;

/// "req.fhdr" -> "req_fhdr".
pub fn method_name(keyword: &str) -> String {
    keyword.replace(['.', '-', '+'], "_")
}

/// The four classes: (f, sf, c, sc).
pub struct SampleClasses {
    pub fetches: Class,
    pub string_fetches: Class,
    pub converters: Class,
    pub string_converters: Class,
}

/// Builds the classes with one method per native fetch and converter.
pub fn classes(lua: &Lua) -> mlua::Result<SampleClasses> {
    let fetches = Class::new(lua, "Fetches")?;
    let string_fetches = Class::new(lua, "Fetches")?;
    for kw in fetch::keywords() {
        let name = kw.name;
        let http_only = reads_http_message(name);
        for (class, as_string) in [(&fetches, false), (&string_fetches, true)] {
            let f = lua.create_function(move |lua, (this, args): (Value, MultiValue)| {
                call_fetch(lua, &this, kw, http_only, &args, as_string)
            })?;
            class.method(name, f.clone())?;
            class.method(&method_name(name), f)?;
        }
    }
    let converters = Class::new(lua, "Converters")?;
    let string_converters = Class::new(lua, "Converters")?;
    for name in conv::names() {
        for (class, as_string) in [(&converters, false), (&string_converters, true)] {
            let f = lua.create_function(
                move |lua, (this, input, args): (Value, Value, MultiValue)| {
                    call_conv(lua, &this, name, &input, &args.into_vec(), as_string)
                },
            )?;
            class.method(name, f.clone())?;
            class.method(&method_name(name), f)?;
        }
    }
    Ok(SampleClasses {
        fetches,
        string_fetches,
        converters,
        string_converters,
    })
}

fn state_info(lua: &Lua) -> mlua::Result<Rc<StateInfo>> {
    lua.app_data_ref::<Rc<StateInfo>>()
        .map(|i| i.clone())
        .ok_or_else(|| mlua::Error::runtime("no luahost state"))
}

/// The value to return for a sample (or its absence).
fn result(lua: &Lua, s: Option<Sample>, as_string: bool) -> mlua::Result<Value> {
    match (s, as_string) {
        (Some(s), false) => sample_to_lua(lua, &s),
        (Some(s), true) => Ok(Value::String(lua.create_string(s.to_bytes())?)),
        (None, false) => Ok(Value::Nil),
        (None, true) => Ok(Value::String(lua.create_string("")?)),
    }
}

/// Fetches that read the HTTP message, which a Lua service has consumed:
/// HAProxy refuses them there.
fn reads_http_message(name: &str) -> bool {
    const PREFIXES: [&str; 12] = [
        "req.", "res.", "http", "path", "url", "base", "query", "method", "hdr", "cook", "status",
        "capture.",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || name == "req_ver" || name == "res_ver"
}

fn call_fetch(
    lua: &Lua,
    this: &Value,
    kw: &'static fetch::FetchKw,
    http_only: bool,
    args: &MultiValue,
    as_string: bool,
) -> mlua::Result<Value> {
    let name = kw.name;
    let cell = handles::cell(this, Kind::Fetches, name)?;
    if http_only && cell.applet {
        return Err(mlua::Error::runtime(format!(
            "fetch '{name}': not available in a Lua service (the HTTP message belongs to the service)"
        )));
    }
    let args = if args.is_empty() {
        Vec::new()
    } else {
        lua_args(args.iter()).map_err(|e| mlua::Error::runtime(format!("{name}: {e}")))?
    };
    let info = state_info(lua)?;
    let sample = cell.with(|txn| {
        let samples = StateSamples { lua, info: &info };
        let registry = info.registry.borrow().clone();
        let ctx = SampleCtx::new(txn, &samples, &*registry);
        fetch::call_kw(kw, &args, &ctx)
    })?;
    let sample = sample.map_err(|e| mlua::Error::runtime(format!("{name}: {e}")))?;
    result(lua, sample, as_string)
}

fn call_conv(
    lua: &Lua,
    this: &Value,
    name: &str,
    input: &Value,
    args: &[Value],
    as_string: bool,
) -> mlua::Result<Value> {
    let cell = handles::cell(this, Kind::Converters, name)?;
    let args = lua_args(args).map_err(|e| mlua::Error::runtime(format!("{name}: {e}")))?;
    let input = lua_to_sample(input);
    let info = state_info(lua)?;
    let sample = cell.with(|txn| {
        let samples = StateSamples { lua, info: &info };
        let registry = info.registry.borrow().clone();
        let ctx = SampleCtx::new(txn, &samples, &*registry);
        conv::call(name, input, &args, &ctx)
    })?;
    let sample = sample.map_err(|e| mlua::Error::runtime(format!("{name}: {e}")))?;
    result(lua, sample, as_string)
}
