//! Unit tests: a real Lua 5.4 (linked by the luahost-ffi dev-dependency),
//! opened with `luaL_newstate` the way a C host opens it, loading test
//! modules through `require` and `package.preload`.

use std::ffi::{c_int, CStr};

use mlua::{MultiValue, Value};

use crate::{Error, Result};

struct Thing {
    n: i64,
}

struct Other;

module!(toolkit_test, |m| {
    m.set("loaded_as", m.name().unwrap_or("?"))?;
    m.function("check_string", |_, a| a.check_string(1))?;
    m.function("check_str", |_, a| a.check_str(1))?;
    m.function("check_integer", |_, a| a.check_integer(1))?;
    m.function("check_number", |_, a| a.check_number(1))?;
    m.function("check_table", |_, a| a.check_table(1).map(|_| true))?;
    m.function("check_function", |_, a| a.check_function(1).map(|_| true))?;
    m.function("check_any", |_, a| a.check_any(1))?;
    m.function("check_option", |_, a| {
        a.check_option(1, None, &["alpha", "beta"])
    })?;
    m.function("opt_integer", |_, a| a.opt_integer(1, 7))?;
    m.function("opt_str", |_, a| a.opt_str(1, "dflt"))?;
    m.function("to_boolean", |_, a| Ok(a.to_boolean(1)))?;
    m.function("arg_u8", |_, a| a.arg::<u8>(1))?;
    m.function("runtime", |_, a| -> Result<()> {
        Err(Error::runtime(a.check_str(1)?))
    })?;
    m.function("message", |_, a| -> Result<()> {
        Err(Error::message(a.check_str(1)?))
    })?;
    m.function("widget_at_3", |_, _| -> Result<()> {
        Err(Error::type_error(3, "widget"))
    })?;
    m.function("panic", |_, _| -> Result<()> { panic!("deliberate") })?;
    m.function("call", |_, a| {
        let f = a.check_function(1)?;
        Ok(f.call::<MultiValue>(a.get(2))?)
    })?;
    m.function("echo", |_, a| Ok(MultiValue::from_vec(a.into_values())))?;
    m.function("count", |_, a| Ok(a.len()))?;

    let thing = m
        .class::<Thing>("Thing")?
        .method("bump", |_, this, a| {
            this.n += a.opt_integer(2, 1)?;
            Ok(this.n)
        })?
        .method("with", |_, this, a| {
            // Calls back into Lua while the object is borrowed.
            let f = a.check_function(2)?;
            let r: Value = f.call(this.n)?;
            Ok(r)
        })?
        .metamethod("__len", |_, this, _| Ok(this.n))?
        .build();
    let other = m.class::<Other>("Other")?.build();
    m.function("thing", move |lua, a| {
        thing.wrap(
            lua,
            Thing {
                n: a.opt_integer(1, 0)?,
            },
        )
    })?;
    m.function("other", move |lua, _| other.wrap(lua, Other))?;
    Ok(())
});

module!(toolkit_failing, |_m| Err(Error::message(
    "cannot start: no config"
)));

module!(toolkit_bad_class, |m| {
    m.class::<Thing>("Bad")?
        .metamethod("__index", |_, _, _| Ok(()))?;
    Ok(())
});

unsafe extern "C-unwind" {
    fn luaopen_toolkit_test(state: *mut mlua::lua_State) -> c_int;
    fn luaopen_toolkit_failing(state: *mut mlua::lua_State) -> c_int;
    fn luaopen_toolkit_bad_class(state: *mut mlua::lua_State) -> c_int;
}

/// A state opened by plain C API calls (as a C host such as lua.c or HAProxy
/// does), with the test modules in package.preload.
struct RawState(*mut luahost_ffi::lua_State);

impl RawState {
    fn new() -> RawState {
        // SAFETY: ordinary C API use on a fresh state; the pointer casts
        // convert between two bindings of the same `lua_State` type.
        unsafe {
            let l = luahost_ffi::luaL_newstate();
            assert!(!l.is_null(), "luaL_newstate failed");
            luahost_ffi::luaL_openlibs(l);
            let m = l.cast::<mlua::lua_State>();
            mlua::ffi::luaL_getsubtable(
                m,
                mlua::ffi::LUA_REGISTRYINDEX,
                mlua::ffi::LUA_PRELOAD_TABLE,
            );
            mlua::ffi::lua_pushcfunction(m, luaopen_toolkit_test);
            mlua::ffi::lua_setfield(m, -2, c"toolkit_test".as_ptr());
            mlua::ffi::lua_pushcfunction(m, luaopen_toolkit_failing);
            mlua::ffi::lua_setfield(m, -2, c"toolkit_failing".as_ptr());
            mlua::ffi::lua_pushcfunction(m, luaopen_toolkit_bad_class);
            mlua::ffi::lua_setfield(m, -2, c"toolkit_bad_class".as_ptr());
            mlua::ffi::lua_settop(m, 0);
            RawState(l)
        }
    }

    /// Runs `code` as chunk "input"; Ok(its result as a string) or
    /// Err(the error value as a string, prefixed with its Lua type).
    fn run(&self, code: &str) -> std::result::Result<String, String> {
        // SAFETY: load + pcall on the main thread; every value pushed is
        // popped before returning.
        unsafe {
            let l = self.0;
            let base = luahost_ffi::lua_gettop(l);
            let status = luahost_ffi::luaL_loadbufferx(
                l,
                code.as_ptr().cast(),
                code.len(),
                c"=input".as_ptr(),
                std::ptr::null(),
            );
            let status = if status == 0 {
                luahost_ffi::lua_pcallk(l, 0, 1, 0, 0, None)
            } else {
                status
            };
            let ty = CStr::from_ptr(luahost_ffi::lua_typename(l, luahost_ffi::lua_type(l, -1)))
                .to_string_lossy()
                .into_owned();
            let text = CStr::from_ptr(luahost_ffi::luaL_tolstring(l, -1, std::ptr::null_mut()))
                .to_string_lossy()
                .into_owned();
            luahost_ffi::lua_settop(l, base);
            if status == 0 {
                Ok(text)
            } else {
                Err(format!("{ty}: {text}"))
            }
        }
    }

    fn top(&self) -> c_int {
        // SAFETY: reads the stack height of a valid state.
        unsafe { luahost_ffi::lua_gettop(self.0) }
    }
}

impl Drop for RawState {
    fn drop(&mut self) {
        // SAFETY: the state was made by luaL_newstate and is closed once.
        unsafe { luahost_ffi::lua_close(self.0) }
    }
}

/// The error message `body` raises when called at line 2 of chunk "input".
fn error_of(state: &RawState, body: &str) -> String {
    let code = format!("local t = require 'toolkit_test'\n{body}\nreturn 'no error'");
    match state.run(&code) {
        Err(e) => e,
        Ok(v) => panic!("{body:?} did not fail: {v}"),
    }
}

#[test]
fn argument_errors_are_strings_in_the_stock_wording() {
    let s = RawState::new();
    let cases = [
        (
            "t.check_string()",
            "bad argument #1 to 'check_string' (string expected, got no value)",
        ),
        (
            "t.check_string(nil)",
            "bad argument #1 to 'check_string' (string expected, got nil)",
        ),
        (
            "t.check_string({})",
            "bad argument #1 to 'check_string' (string expected, got table)",
        ),
        (
            "t.check_string(io.stdout)",
            "bad argument #1 to 'check_string' (string expected, got FILE*)",
        ),
        (
            "t.check_integer(1.5)",
            "bad argument #1 to 'check_integer' (number has no integer representation)",
        ),
        (
            "t.check_integer('x')",
            "bad argument #1 to 'check_integer' (number expected, got string)",
        ),
        (
            "t.check_number({})",
            "bad argument #1 to 'check_number' (number expected, got table)",
        ),
        (
            "t.check_table(1)",
            "bad argument #1 to 'check_table' (table expected, got number)",
        ),
        (
            "t.check_function(true)",
            "bad argument #1 to 'check_function' (function expected, got boolean)",
        ),
        (
            "t.check_any()",
            "bad argument #1 to 'check_any' (value expected)",
        ),
        (
            "t.check_option('gamma')",
            "bad argument #1 to 'check_option' (invalid option 'gamma')",
        ),
        (
            "t.opt_integer('z')",
            "bad argument #1 to 'opt_integer' (number expected, got string)",
        ),
        (
            "t.widget_at_3(1)",
            "bad argument #3 to 'widget_at_3' (widget expected, got no value)",
        ),
        (
            "t.arg_u8(300)",
            "bad argument #1 to 'arg_u8' (u8 expected, got integer: out of range)",
        ),
        (
            "t.check_str('\\xff')",
            "bad argument #1 to 'check_str' (invalid UTF-8 string)",
        ),
    ];
    for (call, expected) in cases {
        assert_eq!(
            error_of(&s, call),
            format!("string: input:2: {expected}"),
            "{call}"
        );
    }
}

#[test]
fn wording_equals_the_c_library_for_the_same_mistakes() {
    // Each pair: a toolkit check and a standard library function that uses
    // the matching luaL_check* on its first argument. With the function
    // names swapped, the messages must be identical.
    let s = RawState::new();
    let pairs = [
        ("t.check_string(nil)", "string.len(nil)", "len"),
        ("t.check_string(io.stdout)", "string.len(io.stdout)", "len"),
        ("t.check_integer(1.5)", "utf8.char(1.5)", "char"),
        ("t.check_integer('x')", "utf8.char('x')", "char"),
        ("t.check_integer()", "select()", "select"),
        ("t.check_number({})", "math.floor({})", "floor"),
        ("t.check_table(1)", "table.concat(1)", "concat"),
        ("t.check_function(1)", "coroutine.create(1)", "create"),
        ("t.check_any()", "type()", "type"),
        (
            "t.check_option('gamma')",
            "collectgarbage('gamma')",
            "collectgarbage",
        ),
    ];
    for (ours, stock, stock_name) in pairs {
        let ours_msg = error_of(&s, ours);
        let ours_name = ours[2..].split('(').next().unwrap_or_default();
        let stock_msg =
            error_of(&s, stock).replace(&format!("'{stock_name}'"), &format!("'{ours_name}'"));
        assert_eq!(ours_msg, stock_msg, "{ours} vs {stock}");
    }
}

#[test]
fn methods_report_self_and_arguments_like_c_methods() {
    let s = RawState::new();
    let cases = [
        // obj:m(x): x is argument #1 in messages, as for io.stdout:seek().
        ("local o = t.thing(); o:bump('x')", "input:2: bad argument #1 to 'bump' (number expected, got string)"),
        ("local o = t.thing(); o.bump(nil)", "input:2: bad argument #1 to 'bump' (Thing expected, got nil)"),
        ("local o = t.thing(); o.bump({})", "input:2: bad argument #1 to 'bump' (Thing expected, got table)"),
        ("local o = t.thing(); o.bump(t.other())", "input:2: bad argument #1 to 'bump' (Thing expected, got Other)"),
        (
            "local o = t.thing(); local x = {bump = o.bump}; x:bump()",
            "input:2: calling 'bump' on bad self (Thing expected, got table)",
        ),
        // A forged table with the right metatable but a foreign native value.
        (
            "local o = t.thing(); local f = setmetatable({[0] = rawget(t.other(), 0)}, getmetatable(o)); f:bump()",
            "input:2: calling 'bump' on bad self (Thing expected, got Thing without its native value at [0])",
        ),
    ];
    for (code, expected) in cases {
        assert_eq!(error_of(&s, code), format!("string: {expected}"), "{code}");
    }
    // The stock library words the same situations the same way.
    assert_eq!(
        error_of(&s, "local f = {seek = io.stdout.seek}; f:seek()"),
        "string: input:2: calling 'seek' on bad self (FILE* expected, got table)"
    );
    assert_eq!(
        error_of(&s, "local x = 'x'; x:rep('y')"),
        "string: input:2: bad argument #1 to 'rep' (number expected, got string)"
    );
}

#[test]
fn objects_are_tables_with_the_native_value_at_zero() {
    let s = RawState::new();
    let out = s.run(
        "local t = require 'toolkit_test'
         local o = t.thing(5)
         o.note = 'scripts may add fields'
         local a = o:bump()
         local b = o:bump(10)
         -- the same native value in another table with the class metatable is the same object
         local alias = setmetatable({[0] = rawget(o, 0)}, getmetatable(o))
         local c = alias:bump()
         return table.concat({type(o), type(rawget(o, 0)), a, b, c, #o, o.note,
                              tostring(o):match('^Thing: ') and 'named' or tostring(o)}, ' ')",
    );
    assert_eq!(
        out.as_deref(),
        Ok("table userdata 6 16 17 17 scripts may add fields named")
    );
}

#[test]
fn reentrant_use_of_a_borrowed_object_is_an_error_not_aliasing() {
    let s = RawState::new();
    let msg = error_of(
        &s,
        "local o = t.thing(1); o:with(function() return o:bump() end)",
    );
    assert!(msg.starts_with("string: input:2: "), "{msg}");
    assert!(msg.contains("borrow"), "{msg}");
    // Reading the value from the callback without a method is fine.
    let ok = s.run("local t = require 'toolkit_test'; local o = t.thing(4); return o:with(function(n) return n * 2 end)");
    assert_eq!(ok.as_deref(), Ok("8"));
}

#[test]
fn runtime_errors_get_the_callers_position_and_messages_do_not() {
    let s = RawState::new();
    assert_eq!(error_of(&s, "t.runtime('boom')"), "string: input:2: boom");
    // Exactly like error() in Lua and luaL_error in C.
    assert_eq!(error_of(&s, "error('boom')"), "string: input:2: boom");
    assert_eq!(error_of(&s, "t.message('boom')"), "string: boom");
    // Called directly by pcall (a C function), there is no Lua position, as
    // for pcall(error, 'boom').
    let out = s.run(
        "local t = require 'toolkit_test'
         local _, a = pcall(t.runtime, 'boom')
         local _, b = pcall(error, 'boom')
         return a .. '|' .. b",
    );
    assert_eq!(out.as_deref(), Ok("boom|boom"));
}

#[test]
fn errors_from_lua_callbacks_pass_through_unchanged() {
    let s = RawState::new();
    assert_eq!(
        error_of(&s, "t.call(function() error('inner', 0) end)"),
        "string: inner"
    );
    assert_eq!(
        error_of(&s, "t.call(function() error('inner') end)"),
        "string: input:2: inner"
    );
    // A toolkit error raised by a nested toolkit function keeps its own text.
    assert_eq!(
        error_of(&s, "t.call(function() t.check_integer('x') end)"),
        "string: input:2: bad argument #1 to 'check_integer' (number expected, got string)"
    );
    let ok =
        s.run("local t = require 'toolkit_test'; return t.call(function(x) return x + 1 end, 41)");
    assert_eq!(ok.as_deref(), Ok("42"));
}

#[test]
fn a_panic_becomes_a_lua_error_and_the_state_stays_usable() {
    let s = RawState::new();
    assert_eq!(
        error_of(&s, "t.panic()"),
        "string: input:2: panic in native function: deliberate"
    );
    assert_eq!(
        s.run("local t = require 'toolkit_test'; return t.check_str('still fine')")
            .as_deref(),
        Ok("still fine")
    );
}

#[test]
fn conversions_and_results_follow_the_c_api() {
    let s = RawState::new();
    let out = s.run(
        "local t = require 'toolkit_test'
         return table.concat({
           t.check_string(12), t.check_string(1.5), t.check_integer('10'), t.check_integer(3.0),
           t.check_number('2.5'), t.opt_integer(), t.opt_integer(nil), t.opt_str(), tostring(t.to_boolean(0)),
           tostring(t.to_boolean(nil)), t.check_option('beta'), select('#', t.echo(1, nil, 3)),
           select('#', t.echo()), t.count(table.unpack({}, 1, 300)), t.loaded_as }, ' ')",
    );
    assert_eq!(
        out.as_deref(),
        Ok("12 1.5 10 3 2.5 7 7 dflt true false 1 3 0 300 toolkit_test")
    );
}

#[test]
fn failing_module_init_makes_require_fail_with_a_string() {
    let s = RawState::new();
    let out = s.run("local ok, e = pcall(require, 'toolkit_failing'); return type(e) .. ': ' .. e");
    assert_eq!(out.as_deref(), Ok("string: cannot start: no config"));
    let out = s.run("local ok, e = pcall(require, 'toolkit_bad_class'); return e");
    assert_eq!(
        out.as_deref(),
        Ok("class Bad: __index is set by luahost_modules")
    );
}

#[test]
fn error_paths_leak_neither_memory_nor_stack() {
    let s = RawState::new();
    let top = s.top();
    let out = s.run(
        "local t = require 'toolkit_test'
         local o = t.thing()
         local function round()
           for i = 1, 2000 do
             pcall(t.check_string); pcall(t.runtime, 'x'); pcall(t.message, 'm')
             pcall(o.bump, {}); pcall(t.widget_at_3); pcall(t.call, error, 'e')
           end
         end
         round(); collectgarbage(); collectgarbage()
         local before = collectgarbage('count')
         round(); collectgarbage(); collectgarbage()
         return collectgarbage('count') - before",
    );
    let growth: f64 = out.expect("loop runs").parse().expect("a number");
    assert!(
        growth < 16.0,
        "memory grew by {growth} KB over 12000 failing calls"
    );
    assert_eq!(s.top(), top);
}

#[test]
fn works_in_coroutines_including_the_first_require() {
    let s = RawState::new();
    let out = s.run(
        "local co = coroutine.wrap(function()
           local t = require 'toolkit_test'
           local o = t.thing(1)
           coroutine.yield(t.check_str('in') .. o:bump())
           local ok, e = pcall(t.check_string)
           coroutine.yield(e)
           return o
         end)
         local a, b, o = co(), co(), co()
         local t = require 'toolkit_test'
         local c = coroutine.wrap(function() return o:bump(5) end)()
         return table.concat({a, b, o:bump(), c}, '|')",
    );
    assert_eq!(
        out.as_deref(),
        Ok("in2|bad argument #1 to 'toolkit_test.check_string' (string expected, got no value)|8|7")
    );
}

#[test]
fn a_replaced_inner_function_cannot_forge_errors() {
    // debug.setupvalue can swap a function's inner implementation. Its
    // results are passed on as results: Lua code cannot make the marker of
    // an error record, so nothing it returns is taken for one.
    let s = RawState::new();
    let out = s.run(
        "local t = require 'toolkit_test'
         debug.setupvalue(t.count, 1, function() return io.stdout, 1, 1, 'fake' end)
         local n = select('#', t.count())
         debug.setupvalue(t.count, 1, 42)
         local ok, e = pcall(t.count)
         return n .. '|' .. tostring(ok) .. '|' .. e",
    );
    assert_eq!(out.as_deref(), Ok("4|false|attempt to call a number value"));
}

#[test]
fn works_in_a_state_owned_by_mlua_too() {
    // The same mlua copy on both sides (as when a Rust host links the module
    // statically): mlua's own state, module registered via package.preload.
    let lua = mlua::Lua::new();
    // SAFETY: luaopen_toolkit_test is a lua_CFunction exported by module!.
    let open = unsafe { lua.create_c_function(luaopen_toolkit_test) }.expect("c function");
    let preload: mlua::Table = lua
        .globals()
        .get::<mlua::Table>("package")
        .and_then(|p| p.get("preload"))
        .expect("package.preload");
    preload.set("toolkit_test", open).expect("set preload");
    let msg: String = lua
        .load("local t = require 'toolkit_test'; local ok, e = pcall(function() t.check_integer(nil) end); return e")
        .set_name("=input")
        .eval()
        .expect("runs");
    assert_eq!(
        msg,
        "input:1: bad argument #1 to 'check_integer' (number expected, got nil)"
    );
}
