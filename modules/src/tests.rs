//! Unit tests: a real Lua 5.4 (linked by the luahost-ffi dev-dependency),
//! opened with `luaL_newstate` the way a C host opens it, loading test
//! modules through `require` and `package.preload`.

use std::cell::Cell;
use std::ffi::{c_int, CStr};

use mlua::{MultiValue, Value};

use crate::{native_fn, native_method, Error, Result};

struct Thing {
    n: i64,
}

struct Other;

/// Counts the Rust heap bytes live on each thread, to see that error and
/// panic paths free what the bodies allocated (messages, payloads, values).
/// Lua's own allocations go through C's realloc and are not counted.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    fn add(n: isize) {
        // try_with: the thread may be tearing down its locals.
        let _ = LIVE.try_with(|c| c.set(c.get() + n));
    }

    /// Bytes allocated and not freed by this thread so far.
    pub fn live() -> isize {
        LIVE.try_with(Cell::get).unwrap_or(0)
    }

    // SAFETY: forwards to the system allocator; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            add(-(layout.size() as isize));
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(new_size as isize - layout.size() as isize);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[global_allocator]
static HEAP: heap::Counting = heap::Counting;

thread_local! {
    /// Drops of native values on this thread (each test runs its Lua state
    /// on its own thread), to see finalizers run exactly once.
    static TRACKED_DROPS: Cell<usize> = const { Cell::new(0) };
}

fn tracked_drops() -> usize {
    TRACKED_DROPS.with(Cell::get)
}

struct Tracked {
    n: i64,
    /// Owned memory, so that a leak would show in the allocator too.
    _payload: Vec<u8>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let _ = TRACKED_DROPS.try_with(|d| d.set(d.get() + 1));
    }
}

// Native (C-ABI) functions and methods: the fast path.
native_fn! {
    fn n_len_plus(s: &[u8], n: i64) -> Result<i64> {
        Ok(s.len() as i64 + n)
    }
    fn n_str(s: &str) -> Result<String> {
        Ok(format!("<{s}>"))
    }
    fn n_borrowed<'a>(s: &'a str) -> Result<&'a str> {
        Ok(s.trim())
    }
    fn n_number(x: f64) -> Result<f64> {
        Ok(x * 2.0)
    }
    fn n_opt(a: Option<i64>, b: Option<&str>) -> Result<(i64, Option<String>)> {
        Ok((a.unwrap_or(7), b.map(str::to_uppercase)))
    }
    fn n_truthy(b: bool) -> Result<bool> {
        Ok(!b)
    }
    fn n_nothing() -> Result<()> {
        Ok(())
    }
    fn n_three(i: i64) -> Result<(i64, &'static str, f64)> {
        Ok((i, "two", 3.5))
    }
    fn n_arg_error(n: i64) -> Result<()> {
        Err(Error::arg(1, format!("{n} is out of range")))
    }
    fn n_type_error() -> Result<()> {
        Err(Error::type_error(2, "widget"))
    }
    fn n_runtime(s: &str) -> Result<()> {
        Err(Error::runtime(s.to_owned()))
    }
    fn n_message(s: &str) -> Result<()> {
        Err(Error::message(s))
    }
    fn n_panic(s: &str) -> Result<i64> {
        panic!("native {s}")
    }
    // Object arguments.
    fn n_swap(a: &mut Tracked, b: &mut Tracked) -> Result<(i64, i64)> {
        std::mem::swap(&mut a.n, &mut b.n);
        Ok((a.n, b.n))
    }
    fn n_tracked_or(o: &mut Tracked, label: &str) -> Result<String> {
        Ok(format!("{label}{}", o.n))
    }
}

native_method! {
    fn t_bump(this: &mut Tracked, by: Option<i64>) -> Result<i64> {
        this.n += by.unwrap_or(1);
        Ok(this.n)
    }
    fn t_get(this: &mut Tracked) -> Result<i64> {
        Ok(this.n)
    }
    fn t_fail(this: &mut Tracked, what: &str) -> Result<i64> {
        if what == "panic" {
            panic!("method panic at {}", this.n);
        }
        Err(Error::runtime(format!("{what} at {}", this.n)))
    }
    fn t_len(this: &mut Tracked) -> Result<i64> {
        Ok(this.n * 10)
    }
    fn t_absorb(this: &mut Tracked, other: &mut Tracked, times: Option<i64>) -> Result<i64> {
        this.n += other.n * times.unwrap_or(1);
        other.n = 0;
        Ok(this.n)
    }
    fn th_bump(this: &mut Thing, by: i64) -> Result<i64> {
        this.n += by;
        Ok(this.n)
    }
}

module!(toolkit_test, |m| {
    m.set("loaded_as", m.name().unwrap_or("?"))?;
    m.function("check_string", |_, a| a.check_string(1))?;
    m.function("check_str", |_, a| a.check_str(1))?;
    m.function("check_lstring", |lua, a| {
        // Two borrowed strings at once, one of them possibly converted.
        let (x, y) = (a.check_lstring(1)?, a.opt_integer(2, 0)?);
        Ok(lua.create_string([x, y.to_string().as_bytes()].concat())?)
    })?;
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
        // A native method beside the mlua-based ones.
        .native_method("nbump", th_bump)?
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

    for (name, f) in [
        ("n_len_plus", n_len_plus),
        ("n_str", n_str),
        ("n_borrowed", n_borrowed),
        ("n_number", n_number),
        ("n_opt", n_opt),
        ("n_truthy", n_truthy),
        ("n_nothing", n_nothing),
        ("n_three", n_three),
        ("n_arg_error", n_arg_error),
        ("n_type_error", n_type_error),
        ("n_runtime", n_runtime),
        ("n_message", n_message),
        ("n_panic", n_panic),
        ("n_swap", n_swap),
        ("n_tracked_or", n_tracked_or),
    ] {
        m.native(name, f)?;
    }
    let tracked = m
        .class::<Tracked>("Tracked")?
        .native_method("bump", t_bump)?
        .native_method("get", t_get)?
        .native_method("fail", t_fail)?
        .native_metamethod("__len", t_len)?
        .native_method("absorb", t_absorb)?
        // An mlua-based method that calls back into Lua with the object
        // borrowed.
        .method("with", |_, this, a| {
            let f = a.check_function(2)?;
            let r: Value = f.call(this.n)?;
            Ok(r)
        })?
        .build();
    m.function("tracked", move |lua, a| {
        tracked.wrap(
            lua,
            Tracked {
                n: a.opt_integer(1, 0)?,
                _payload: vec![0; 64],
            },
        )
    })?;
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

/// The panics the test modules raise on purpose print nothing: the test
/// harness keeps what a test prints in a buffer that grows on the test's
/// thread, which the heap count of the leak test would see. Other panics
/// (failed assertions) go to the default hook.
fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            let deliberate = ["deliberate", "native ", "method panic"];
            if !deliberate.iter().any(|d| msg.starts_with(d)) {
                default(info);
            }
        }));
    });
}

impl RawState {
    fn new() -> RawState {
        quiet_deliberate_panics();
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
fn check_lstring_borrows_strings_and_converts_numbers_like_the_c_api() {
    let s = RawState::new();
    let out = s.run(
        "local t = require 'toolkit_test'
         return table.concat({ t.check_lstring('ab', 5), t.check_lstring(12, 1),
           t.check_lstring(1.5), t.check_lstring(''), #t.check_lstring('a\\0b') }, ' ')",
    );
    assert_eq!(out.as_deref(), Ok("ab5 121 1.50 0 4"));
    for (call, expected) in [
        ("t.check_lstring()", "string expected, got no value"),
        ("t.check_lstring({})", "string expected, got table"),
        ("t.check_lstring(nil, 1)", "string expected, got nil"),
    ] {
        let msg = error_of(&s, call);
        assert!(
            msg.ends_with(&format!("bad argument #1 to 'check_lstring' ({expected})")),
            "{call}: {msg}"
        );
    }
}

#[test]
fn a_method_keeps_its_object_alive_when_a_callback_drops_it() {
    // The script removes the object's native value and collects garbage
    // while an mlua-based method holds it: the value must stay alive until
    // the method returns, then be dropped exactly once.
    let s = RawState::new();
    let before = tracked_drops();
    let out = s.run(
        "local t = require 'toolkit_test'
         local o = t.tracked(41)
         local r = o:with(function(n)
           rawset(o, 0, nil)
           collectgarbage(); collectgarbage()
           return n + 1
         end)
         collectgarbage(); collectgarbage()
         return r",
    );
    assert_eq!(out.as_deref(), Ok("42"));
    assert_eq!(tracked_drops() - before, 1);
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
fn replaced_upvalues_cannot_forge_errors_or_calls() {
    // debug.setupvalue can change a general function's upvalues (mlua's
    // record of the body, and its address). Anything but a matching pair is
    // refused with an error; a pair copied from another general function
    // of the module runs that function; nothing a replacement returns can
    // pass for an error record.
    let s = RawState::new();
    let out = s.run(
        "local t = require 'toolkit_test'
         local results = {}
         debug.setupvalue(t.count, 1, function() return io.stdout, 1, 1, 'fake' end)
         results[#results + 1] = select(2, pcall(t.count))
         debug.setupvalue(t.to_boolean, 1, io.stdout)
         results[#results + 1] = select(2, pcall(t.to_boolean, 1))
         local _, record = debug.getupvalue(t.opt_integer, 1)
         local _, address = debug.getupvalue(t.opt_integer, 2)
         debug.setupvalue(t.check_integer, 1, record)
         results[#results + 1] = select(2, pcall(t.check_integer, 5))
         debug.setupvalue(t.check_integer, 2, address)
         results[#results + 1] = t.check_integer(5) .. ',' .. t.check_integer()
         return table.concat(results, '|')",
    );
    assert_eq!(
        out.as_deref(),
        Ok("luahost_modules: function upvalues replaced|\
            luahost_modules: function upvalues replaced|\
            luahost_modules: function upvalues replaced|5,7")
    );
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

#[test]
fn native_functions_convert_like_the_c_api() {
    let s = RawState::new();
    let out = s.run(
        "local t = require 'toolkit_test'
         local a, b = t.n_opt()
         local c, d = t.n_opt(nil, 'x')
         local e, f, g = t.n_three(1)
         return table.concat({
           t.n_len_plus('abc', 4), t.n_len_plus(12, 1), t.n_len_plus('', '5'), t.n_len_plus('x', 2.0),
           t.n_str('hi'), t.n_str(3), '[' .. t.n_borrowed('  pad  ') .. ']', t.n_number('1.25'), t.n_number(2),
           a, tostring(b), c, d, tostring(t.n_truthy(nil)), tostring(t.n_truthy(0)),
           select('#', t.n_nothing(1, 2)), e, f, g, select('#', t.n_three(1))}, ' ')",
    );
    assert_eq!(
        out.as_deref(),
        Ok("7 3 5 3 <hi> <3> [pad] 2.5 4.0 7 nil 7 X true false 0 1 two 3.5 3")
    );
}

#[test]
fn native_argument_errors_match_the_c_library_word_for_word() {
    let s = RawState::new();
    let cases = [
        (
            "t.n_len_plus()",
            "bad argument #1 to 'n_len_plus' (string expected, got no value)",
        ),
        (
            "t.n_len_plus('a')",
            "bad argument #2 to 'n_len_plus' (number expected, got no value)",
        ),
        (
            "t.n_len_plus({}, 1)",
            "bad argument #1 to 'n_len_plus' (string expected, got table)",
        ),
        (
            "t.n_len_plus(io.stdout, 1)",
            "bad argument #1 to 'n_len_plus' (string expected, got FILE*)",
        ),
        (
            "t.n_len_plus('a', 1.5)",
            "bad argument #2 to 'n_len_plus' (number has no integer representation)",
        ),
        (
            "t.n_len_plus('a', 'x')",
            "bad argument #2 to 'n_len_plus' (number expected, got string)",
        ),
        (
            "t.n_str('\\xff')",
            "bad argument #1 to 'n_str' (invalid UTF-8 string)",
        ),
        (
            "t.n_number(true)",
            "bad argument #1 to 'n_number' (number expected, got boolean)",
        ),
        (
            "t.n_opt('z')",
            "bad argument #1 to 'n_opt' (number expected, got string)",
        ),
        (
            "t.n_opt(nil, {})",
            "bad argument #2 to 'n_opt' (string expected, got table)",
        ),
        (
            "t.n_arg_error(99)",
            "bad argument #1 to 'n_arg_error' (99 is out of range)",
        ),
        (
            "t.n_type_error(1)",
            "bad argument #2 to 'n_type_error' (widget expected, got no value)",
        ),
        (
            "t.n_type_error(1, {})",
            "bad argument #2 to 'n_type_error' (widget expected, got table)",
        ),
        ("t.n_runtime('boom')", "boom"),
        ("t.n_panic('oops')", "panic in native function: native oops"),
    ];
    for (call, expected) in cases {
        assert_eq!(
            error_of(&s, call),
            format!("string: input:2: {expected}"),
            "{call}"
        );
    }
    assert_eq!(error_of(&s, "t.n_message('plain')"), "string: plain");
    // The same mistakes made with Lua's own C functions read the same.
    let pairs = [
        (
            "t.n_len_plus(nil, 1)",
            "string.rep(nil, 1)",
            "rep",
            "n_len_plus",
        ),
        (
            "t.n_len_plus('a', 1.5)",
            "string.rep('a', 1.5)",
            "rep",
            "n_len_plus",
        ),
        ("t.n_len_plus('a')", "string.rep('a')", "rep", "n_len_plus"),
        ("t.n_number({})", "math.floor({})", "floor", "n_number"),
    ];
    for (ours, stock, stock_name, our_name) in pairs {
        let stock_msg =
            error_of(&s, stock).replace(&format!("'{stock_name}'"), &format!("'{our_name}'"));
        assert_eq!(error_of(&s, ours), stock_msg, "{ours} vs {stock}");
    }
}

#[test]
fn native_methods_check_self_like_c_methods() {
    let s = RawState::new();
    let cases = [
        ("local o = t.tracked(); o:bump('x')", "input:2: bad argument #1 to 'bump' (number expected, got string)"),
        ("local o = t.tracked(); o.bump()", "input:2: bad argument #1 to 'bump' (Tracked expected, got no value)"),
        ("local o = t.tracked(); o.bump(nil)", "input:2: bad argument #1 to 'bump' (Tracked expected, got nil)"),
        ("local o = t.tracked(); o.bump({})", "input:2: bad argument #1 to 'bump' (Tracked expected, got table)"),
        ("local o = t.tracked(); o.bump(t.thing())", "input:2: bad argument #1 to 'bump' (Tracked expected, got Thing)"),
        ("local o = t.tracked(); local x = {bump = o.bump}; x:bump()", "input:2: calling 'bump' on bad self (Tracked expected, got table)"),
        // The right metatable around another class's native value, or none.
        (
            "local o = t.tracked(); local f = setmetatable({[0] = rawget(t.thing(), 0)}, getmetatable(o)); f:bump()",
            "input:2: calling 'bump' on bad self (Tracked expected, got Tracked without its native value at [0])",
        ),
        (
            "local o = t.tracked(); local f = setmetatable({}, getmetatable(o)); f:get()",
            "input:2: calling 'get' on bad self (Tracked expected, got Tracked without its native value at [0])",
        ),
        ("local o = t.tracked(3); o:fail('broke')", "input:2: broke at 3"),
        ("local o = t.tracked(4); o:fail('panic')", "input:2: panic in native function: method panic at 4"),
        // A native method on a class that also has mlua-based methods.
        ("local o = t.thing(); o:nbump()", "input:2: bad argument #1 to 'nbump' (number expected, got no value)"),
    ];
    for (code, expected) in cases {
        assert_eq!(error_of(&s, code), format!("string: {expected}"), "{code}");
    }
    // The native value is hidden from getmetatable.
    let out = s.run(
        "local t = require 'toolkit_test'
         local o = t.tracked(1)
         o:bump(); o:bump(5)
         local mt = getmetatable(rawget(o, 0))
         local th = t.thing(1); th:bump(); th:nbump(10)
         return table.concat({o:get(), #o, tostring(mt), th:bump(0), #th}, ' ')",
    );
    assert_eq!(out.as_deref(), Ok("7 70 false 12 12"));
}

#[test]
fn a_failed_or_panicking_native_method_releases_its_object() {
    let s = RawState::new();
    let out = s.run(
        "local t = require 'toolkit_test'
         local o = t.tracked(1)
         local ok1 = pcall(o.fail, o, 'panic')
         local ok2 = pcall(o.fail, o, 'err')
         return tostring(ok1) .. ' ' .. tostring(ok2) .. ' ' .. o:bump()",
    );
    assert_eq!(out.as_deref(), Ok("false false 2"));
}

#[test]
fn native_methods_refuse_an_object_borrowed_by_a_running_method() {
    let s = RawState::new();
    let msg = error_of(
        &s,
        "local o = t.tracked(1); o:with(function() return o:bump() end)",
    );
    assert!(msg.starts_with("string: input:2: "), "{msg}");
    assert!(msg.contains("borrow"), "{msg}");
    // The object is usable once the outer method has returned.
    let out = s.run(
        "local t = require 'toolkit_test'
         local o = t.tracked(1)
         pcall(o.with, o, function() return o:bump() end)
         return o:with(function(n) return n + 100 end) .. ' ' .. o:bump()",
    );
    assert_eq!(out.as_deref(), Ok("101 2"));
}

#[test]
fn native_error_paths_leak_nothing_and_drop_each_value_once() {
    let s = RawState::new();
    let top = s.top();
    let before_drops = tracked_drops();
    let out = s.run(
        "local t = require 'toolkit_test'
         local function round()
           for i = 1, 2000 do
             local o = t.tracked(i)
             pcall(o.fail, o, 'err'); pcall(o.fail, o, 'panic'); pcall(o.bump, o, 'x')
             pcall(o.bump, {}); pcall(t.n_str, '\\xff'); pcall(t.n_runtime, string.rep('m', 100))
             pcall(t.n_panic, 'p'); pcall(t.n_len_plus); pcall(t.n_type_error)
             o:bump()
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
        "memory grew by {growth} KB over failing native calls"
    );
    assert_eq!(s.top(), top);
    // The Rust side too: a third round, on this thread, frees all it takes
    // (error messages, panic payloads, the objects' values).
    let rust_before = heap::live();
    let out = s.run(
        "local t = require 'toolkit_test'
         for i = 1, 2000 do
           local o = t.tracked(i)
           pcall(o.fail, o, 'err'); pcall(o.fail, o, 'panic'); pcall(t.n_runtime, 'r')
           pcall(t.n_panic, 'p'); pcall(t.n_arg_error, 1); pcall(t.n_str, {}); t.n_str('ok')
         end
         collectgarbage(); collectgarbage()
         return 'done'",
    );
    assert_eq!(out.as_deref(), Ok("done"));
    let rust_growth = heap::live() - rust_before;
    assert!(
        rust_growth < 4096,
        "Rust heap grew by {rust_growth} bytes over 2000 rounds of failing native calls"
    );
    // Every object made (3 rounds of 2000) was dropped by its finalizer,
    // once.
    assert_eq!(
        tracked_drops() - before_drops,
        6000,
        "native values dropped"
    );
}

#[test]
fn closing_the_state_drops_live_native_values() {
    let before = tracked_drops();
    {
        let s = RawState::new();
        let out = s.run("local t = require 'toolkit_test'; KEEP = {t.tracked(1), t.tracked(2), t.tracked(3)}; return #KEEP");
        assert_eq!(out.as_deref(), Ok("3"));
    }
    assert_eq!(tracked_drops() - before, 3);
}

#[test]
fn native_functions_work_in_coroutines() {
    let s = RawState::new();
    let out = s.run(
        "local co = coroutine.wrap(function()
           local t = require 'toolkit_test'
           local o = t.tracked(1)
           coroutine.yield(t.n_str('in') .. o:bump())
           local ok, e = pcall(t.n_len_plus)
           coroutine.yield(e)
           return o
         end)
         local a, b, o = co(), co(), co()
         return table.concat({a, b, o:bump()}, '|')",
    );
    assert_eq!(
        out.as_deref(),
        Ok("<in>2|bad argument #1 to 'toolkit_test.n_len_plus' (string expected, got no value)|3")
    );
}

#[test]
fn native_object_arguments_are_checked_and_borrowed() {
    let s = RawState::new();
    let out = s.run(
        "local t = require 'toolkit_test'
         local a, b = t.tracked(1), t.tracked(2)
         local x, y = t.n_swap(a, b)
         local z = a:absorb(b, 10)
         return table.concat({x, y, a:get(), b:get(), z, t.n_tracked_or(a, 'n='), t.n_tracked_or(a, 5)}, ' ')",
    );
    assert_eq!(out.as_deref(), Ok("2 1 12 0 12 n=12 512"));
    let cases = [
        ("local a = t.tracked(); t.n_swap(a)", "input:2: bad argument #2 to 'n_swap' (Tracked expected, got no value)"),
        ("local a = t.tracked(); t.n_swap(a, nil)", "input:2: bad argument #2 to 'n_swap' (Tracked expected, got nil)"),
        ("local a = t.tracked(); t.n_swap({}, a)", "input:2: bad argument #1 to 'n_swap' (Tracked expected, got table)"),
        ("local a = t.tracked(); t.n_swap(a, t.thing())", "input:2: bad argument #2 to 'n_swap' (Tracked expected, got Thing)"),
        ("local a = t.tracked(); t.n_swap(a, io.stdout)", "input:2: bad argument #2 to 'n_swap' (Tracked expected, got FILE*)"),
        // The class's metatable around another class's value, or none.
        (
            "local a = t.tracked(); t.n_swap(a, setmetatable({[0] = rawget(t.thing(), 0)}, getmetatable(a)))",
            "input:2: bad argument #2 to 'n_swap' (Tracked expected, got Tracked without its native value at [0])",
        ),
        (
            "local a = t.tracked(); t.n_swap(a, {[0] = rawget(a, 0)})",
            "input:2: bad argument #2 to 'n_swap' (Tracked expected, got table)",
        ),
        // The same object twice is refused rather than aliased.
        ("local a = t.tracked(); t.n_swap(a, a)", "input:2: cannot borrow the object: a method of it is still running (re-entrant call)"),
        ("local a = t.tracked(); a:absorb(a)", "input:2: cannot borrow the object: a method of it is still running (re-entrant call)"),
        ("local a = t.tracked(); a:absorb({})", "input:2: bad argument #1 to 'absorb' (Tracked expected, got table)"),
        ("local a = t.tracked(); t.n_tracked_or(a, {})", "input:2: bad argument #2 to 'n_tracked_or' (string expected, got table)"),
    ];
    for (code, expected) in cases {
        assert_eq!(error_of(&s, code), format!("string: {expected}"), "{code}");
    }
    // Every failed call gave its borrows back.
    let out = s.run(
        "local t = require 'toolkit_test'
         local a, b = t.tracked(3), t.tracked(4)
         pcall(t.n_swap, a, a); pcall(a.absorb, a, a); pcall(t.n_swap, a, {}); pcall(a.absorb, a, b, 'x')
         return a:absorb(b) .. ' ' .. b:get()",
    );
    assert_eq!(out.as_deref(), Ok("7 0"));
}

#[test]
fn a_module_entry_after_the_first_requiring_coroutine_died_works() {
    // mlua is set up on the state's main thread, not on the coroutine that
    // happened to call require first: that coroutine can die and be
    // collected, and mlua keeps using the thread it was set up with for
    // work outside callbacks, such as the next module entry.
    let s = RawState::new();
    let out = s.run(
        "local co = coroutine.create(function()
           local t = require 'toolkit_test'
           return t.check_str('first')
         end)
         local _, first = coroutine.resume(co)
         co = nil
         collectgarbage(); collectgarbage()
         -- Reuse the memory the coroutine had.
         local junk = {}
         for i = 1, 2000 do junk[i] = coroutine.create(function() end) end
         junk = nil
         collectgarbage()
         for i = 1, 2000 do local c = coroutine.wrap(function(...) return ... end); c(i) end
         local ok, e = pcall(require, 'toolkit_failing')
         local ok2, e2 = pcall(require, 'toolkit_bad_class')
         return first .. '|' .. e .. '|' .. e2",
    );
    assert_eq!(
        out.as_deref(),
        Ok("first|cannot start: no config|class Bad: __index is set by luahost_modules")
    );
}
