//! Memory behaviour of the builder, measured: a Lua state created with
//! `lua_newstate` and a counting allocator (Lua linked in through the
//! luahost-ffi dev-dependency), the module registered from this crate's
//! rlib. Every byte Lua and the module allocate goes through the counter, so
//! the tests compare bytes in use before and after.

// `L` is the C API's name for the state.
#![allow(non_snake_case)]

use concat::{luaopen_concat, new_builder};
use mlua::ffi::{
    luaL_loadstring, luaL_openlibs, luaL_requiref, lua_State, lua_close, lua_gc, lua_newstate,
    lua_pcall, lua_pop, lua_pushcfunction, lua_setglobal, lua_settop, lua_tostring, LUA_GCGEN,
    LUA_OK,
};
use std::ffi::{c_void, CStr, CString};

/// Bytes in use, the peak, and an optional limit, for one state.
struct Counter {
    in_use: usize,
    peak: usize,
    limit: Option<usize>,
}

unsafe extern "C" fn counting_alloc(
    ud: *mut c_void,
    block: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the Box<Counter> owned by the `State` wrapping this
    // allocator; Lua calls it from one thread at a time.
    let c = unsafe { &mut *ud.cast::<Counter>() };
    // With a null block, osize is a type tag, not a size.
    let old = if block.is_null() { 0 } else { osize };
    if nsize == 0 {
        c.in_use -= old;
        // SAFETY: blocks come from realloc below.
        unsafe { free(block) };
        return std::ptr::null_mut();
    }
    let after = c.in_use - old + nsize;
    if c.limit.is_some_and(|l| after > l) {
        return std::ptr::null_mut();
    }
    // SAFETY: realloc of a block from realloc, or of null.
    let p = unsafe { realloc(block, nsize) };
    if !p.is_null() {
        c.in_use = after;
        c.peak = c.peak.max(after);
    }
    p
}

extern "C" {
    fn realloc(p: *mut c_void, n: usize) -> *mut c_void;
    fn free(p: *mut c_void);
}

/// A Lua state with all standard libraries, the generational collector
/// (as lua.c and luahost set it), `concat` loadable with `require`, and
/// `new_builder` as the global `newbuilder` (the way luahost serves
/// `core.concat()`).
struct State {
    L: *mut lua_State,
    counter: Box<Counter>,
}

impl State {
    fn new() -> State {
        luahost_ffi::link();
        let mut counter = Box::new(Counter {
            in_use: 0,
            peak: 0,
            limit: None,
        });
        let ud: *mut Counter = &mut *counter;
        // SAFETY: the allocator follows lua_Alloc's contract; `ud` lives in
        // the Box that the State keeps until after lua_close.
        let L = unsafe { lua_newstate(counting_alloc, ud.cast()) };
        assert!(!L.is_null());
        // SAFETY: a fresh, valid state; each call leaves the stack balanced.
        unsafe {
            luaL_openlibs(L);
            lua_gc(L, LUA_GCGEN, 0, 0);
            luaL_requiref(L, c"concat".as_ptr(), luaopen_concat, 0);
            lua_pop(L, 1);
            lua_pushcfunction(L, new_builder);
            lua_setglobal(L, c"newbuilder".as_ptr());
        }
        State { L, counter }
    }

    /// Runs a chunk; Err(message) if it raised an error.
    fn run(&mut self, code: &str) -> Result<(), String> {
        let code = CString::new(code).expect("no NUL in test code");
        // SAFETY: valid state; the error message is read before being popped.
        unsafe {
            let mut status = luaL_loadstring(self.L, code.as_ptr());
            if status == LUA_OK {
                status = lua_pcall(self.L, 0, 0, 0);
            }
            if status == LUA_OK {
                return Ok(());
            }
            let msg = CStr::from_ptr(lua_tostring(self.L, -1))
                .to_string_lossy()
                .into_owned();
            lua_settop(self.L, 0);
            Err(msg)
        }
    }

    #[track_caller]
    fn ok(&mut self, code: &str) {
        if let Err(e) = self.run(code) {
            panic!("Lua error: {e}\nin: {code}");
        }
    }

    /// Bytes in use after two full collections (so finalizers have run).
    fn settled(&mut self) -> usize {
        self.ok("collectgarbage() collectgarbage()");
        self.counter.in_use
    }

    fn in_use(&self) -> usize {
        self.counter.in_use
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // SAFETY: the state is valid and not used afterwards; the counter
        // outlives it.
        unsafe { lua_close(self.L) };
        assert_eq!(
            self.counter.in_use, 0,
            "bytes still allocated after lua_close"
        );
    }
}

const MB: usize = 1 << 20;

#[test]
fn reset_releases_the_chunks_at_once() {
    let mut s = State::new();
    s.ok("concat = require('concat')");
    let base = s.settled();
    s.ok("b = concat.new() for i = 1, 200000 do b:add('0123456789') end");
    let filled = s.in_use();
    assert!(
        filled >= base + 2_000_000,
        "2 MB of content: {} bytes in use over {base}",
        filled - base
    );
    // No collection here: reset itself frees the chunks.
    s.ok("b:reset()");
    let after = s.in_use();
    assert!(
        filled - after >= 2_000_000,
        "reset released only {} bytes",
        filled - after
    );
    assert!(after < base + 64 * 1024, "{} bytes left", after - base);
    s.ok("assert(#b == 0 and b:dump() == '')");
}

#[test]
fn collection_releases_everything() {
    let mut s = State::new();
    s.ok("concat = require('concat')
         function fill()
           local keep = {}
           for i = 1, 50 do
             local b = concat.new()
             for j = 1, 20000 do b:add('abcdefghij', j) end
             if i % 2 == 0 then b:dump() end
             keep[i] = b
           end
           return keep
         end");
    // A first round grows Lua's own tables (the short-string table, with
    // the 20,000 numbers converted to strings) to their working size, so
    // that what remains after the second is the builders' doing only.
    s.ok("fill()");
    let base = s.settled();
    s.ok("held = fill()");
    assert!(s.in_use() > base + 10 * MB);
    s.ok("held = nil");
    let after = s.settled();
    assert!(
        after <= base + 4096,
        "{} bytes still in use after collecting every builder",
        after as isize - base as isize
    );
}

#[test]
fn dump_keeps_only_the_string() {
    let mut s = State::new();
    s.ok("concat = require('concat')");
    let base = s.settled();
    s.ok("b = concat.new() for i = 1, 100000 do b:add('0123456789') end");
    let building = s.in_use();
    // The builder's chunks are freed; the string remains (held by the
    // builder and by `s1`), once.
    s.ok("s1 = b:dump() s2 = b:dump() assert(s1 == s2 and #s1 == 1000000)");
    let dumped = s.settled();
    assert!(
        dumped < building,
        "dump kept the chunks: {building} -> {dumped}"
    );
    assert!(
        dumped - base < MB + 64 * 1024,
        "a 1 MB result costs {} bytes",
        dumped - base
    );
    // Both the builder and the variables must let go for it to be freed.
    s.ok("b = nil s1 = nil s2 = nil");
    assert!(s.settled() <= base + 16 * 1024);
}

/// Builders dropped without dump() hold chunks that only their finalizer
/// frees. Their allocations are reported to the collector (as GC steps), so
/// they are collected at the pace of the memory they hold, not of their small
/// userdata: the peak stays near one builder's worth.
#[test]
fn dropped_builders_are_collected_at_the_pace_of_their_memory() {
    let mut s = State::new();
    s.ok("concat = require('concat') big = string.rep('x', 1 << 20)");
    let base = s.settled();
    s.counter.peak = base;
    s.ok("for i = 1, 300 do local b = concat.new() b:add(big) end");
    let peak = s.counter.peak - base;
    // 300 builders of 1 MB each: without the GC steps, they would pile up
    // until the collector noticed the small Lua objects (hundreds of MB).
    assert!(peak < 16 * MB, "peak {} MB over the base", peak / MB);
    assert!(s.settled() <= base + 16 * 1024);
}

#[test]
fn out_of_memory_raises_and_leaves_the_builder_intact() {
    let mut s = State::new();
    s.ok("concat = require('concat')
         big = string.rep('y', 4 << 20)
         b = concat.new()
         b:add('kept')");
    let limit = s.settled() + 256 * 1024;
    s.counter.limit = Some(limit);
    // A piece larger than the limit allows.
    s.ok("local ok, err = pcall(b.add, b, big)
         assert(not ok and err == 'not enough memory', tostring(err))
         assert(b:dump() == 'kept', 'unchanged')");
    // Several pieces: the first fits, the second doesn't; neither stays.
    s.ok("local ok, err = pcall(b.add, b, string.rep('z', 100), big)
         assert(not ok and err == 'not enough memory', tostring(err))
         assert(b:dump() == 'kept' and #b == 4, 'unchanged')");
    // The builder still works within the limit.
    s.ok("b:add(' and more') assert(b:dump() == 'kept and more')");
    s.counter.limit = None;
    s.ok("b:add(big) assert(#b == 13 + #big)");
}

#[test]
fn out_of_memory_in_dump_raises() {
    let mut s = State::new();
    s.ok("concat = require('concat')
         b = concat.new()
         for i = 1, 3 do b:add(string.rep('w', 1 << 20)) end");
    // Merging the chunks, or the result string, needs 3 MB more.
    s.counter.limit = Some(s.settled() + MB);
    s.ok("local ok, err = pcall(b.dump, b)
         assert(not ok and err == 'not enough memory', tostring(err))
         assert(#b == 3 << 20)");
    s.counter.limit = None;
    s.ok("assert(b:dump() == string.rep('w', 3 << 20))");
}

/// A builder resurrected by another object's finalizer, after its own
/// finalizer ran: it stays usable (empty), and the chunks it allocates then
/// are freed by a second finalization.
#[test]
fn a_resurrected_builder_is_usable_and_freed_again() {
    let mut s = State::new();
    s.ok("concat = require('concat')");
    let base = s.settled();
    s.ok("do
           local b = concat.new()
           b:add(string.rep('r', 100000))
           setmetatable({}, {__gc = function() saved = b end})
         end");
    s.settled();
    s.ok("assert(saved, 'resurrected')
         saved:add(string.rep('s', 300000))
         assert(saved:len() == #saved:dump())");
    s.ok("saved:add('more')");
    s.ok("saved = nil");
    let after = s.settled();
    assert!(
        after <= base + 16 * 1024,
        "{} bytes not freed",
        after as isize - base as isize
    );
}

/// `new_builder`, as the host calls it for `core.concat()`, makes the same
/// objects as `require("concat").new()`, interchangeable with them.
#[test]
fn new_builder_makes_the_same_objects() {
    let mut s = State::new();
    s.ok("local concat = require('concat')
         local a, b = newbuilder(), concat.new()
         assert(getmetatable(a) == getmetatable(b))
         assert(tostring(a):match('^Concat object: 0x'))
         a:add('x', 1) b:add('y')
         a.add(b, 2)
         assert(a:dump() == 'x1' and b:dump() == 'y2' and #a == 2)
         local ok, err = pcall(a.add, {}, 'z')
         assert(not ok and err:find('Concat expected, got table', 1, true), err)");
}

/// Closing the state runs every finalizer: nothing leaks (checked by the
/// State's Drop, which asserts 0 bytes after lua_close).
#[test]
fn closing_the_state_frees_live_builders() {
    let mut s = State::new();
    s.ok("concat = require('concat')
         live = {}
         for i = 1, 20 do
           live[i] = concat.new()
           live[i]:add(string.rep('c', i * 10000))
         end");
}
