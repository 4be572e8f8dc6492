//! `concat`: a chunk-based string builder for Lua 5.4, API-compatible with
//! HAProxy's `core.concat()` objects and fast enough to beat `table.concat`.
//!
//! ```lua
//! local concat = require("concat")
//! local b = concat.new()
//! b:add("GET ", path, " HTTP/1.1\r\n")   -- any number of strings or numbers
//! b:add(42)                              -- numbers as `..` writes them
//! print(#b, b:len())                     -- content length
//! local s = b:dump()                     -- the string; b stays usable
//! b:reset()                              -- empty again, memory released
//! ```
//!
//! The same code serves `core.concat()` in luahost: the host calls
//! [`new_builder`] from this crate's rlib. See docs/concat.md for the
//! reference and docs/benchmarks.md for the measurements quoted below.
//!
//! # Why the object is shaped the way it is
//!
//! Each `b:add(x)` is one Lua→native call, and with short pieces the copy is
//! nothing next to the call, so the cost of reaching the method and finding
//! the buffer decides whether a builder beats `table.concat` (about 440
//! instructions per piece on stock lua5.4, of which the interpreter's side
//! of a `b:add(x)` call alone takes about 250). The alternatives were
//! measured (docs/concat.md, "Why the hot path is shaped as it is"):
//!
//! * A builder is a plain Lua table holding its methods as fields (HAProxy's
//!   layout: the native buffer at `[0]`). `b:add` is then a single hash hit
//!   in `b`; a userdata with its methods behind `__index` adds a metamethod
//!   dispatch and a second lookup (with `luaL_checkudata`: 799 instructions
//!   per append, twice `table.concat`'s time).
//! * `add` is a C closure made per builder, with the buffer userdata and the
//!   builder table as upvalues. The hot path reaches the buffer with one API
//!   call (`lua_touserdata` on an upvalue) and checks `self` with one more,
//!   `lua_topointer(L, 1)` compared with the owner's address stored in the
//!   buffer: 420 instructions per append, against 474 with `lua_rawequal`
//!   and 566 with a `[0]` lookup and a metatable comparison.
//! * Raw `lua_CFunction`s (`extern "C-unwind"`) through `mlua::ffi`, not
//!   mlua's `UserData` dispatch, which costs several times a bare C call.
//! * The single-piece case that fits in the current chunk is handled inline
//!   (`add` below, with short copies inlined too); everything else (several
//!   pieces, a new chunk, another `self`, errors) goes to a cold function, so
//!   the hot one stays small. Result: 414 instructions per append.

//! # Memory and errors
//!
//! Chunks are allocated with the state's allocator (`lua_getallocf`), so a
//! host's memory limit bounds them. Allocations are announced to the
//! collector as a GC step (`lua_gc(LUA_GCSTEP)`) so that dead builders are
//! collected at the pace of the memory they hold, and freed on `reset()` and
//! by the buffer's `__gc`. On allocation failure the call runs a full
//! collection, retries once, and then raises "not enough memory" with the
//! builder unchanged.
//!
//! Lua errors are `longjmp`s: they must not cross a Rust frame that owns
//! anything with a destructor. No function here holds such a value (the
//! builder state is plain data inside a Lua userdata), and every error is
//! raised by Lua's auxiliary library at the end of a function.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
// `L` is the C API's name for the state in every signature.
#![allow(non_snake_case)]

mod chunks;

use chunks::{Allocator, Buf};
use mlua::ffi::{
    luaL_argerror, luaL_checkstack, luaL_error, luaL_getmetafield, luaL_typename, lua_CFunction,
    lua_Integer, lua_State, lua_copy, lua_createtable, lua_error, lua_gc, lua_getiuservalue,
    lua_getmetatable, lua_gettop, lua_newuserdatauv, lua_pop, lua_pushboolean, lua_pushcclosure,
    lua_pushcfunction, lua_pushfstring, lua_pushinteger, lua_pushliteral, lua_pushlstring,
    lua_pushnil, lua_pushvalue, lua_rawequal, lua_rawgeti, lua_rawgetp, lua_rawlen, lua_rawseti,
    lua_rawsetp, lua_setfield, lua_setiuservalue, lua_setmetatable, lua_settop, lua_tolstring,
    lua_topointer, lua_tostring, lua_touserdata, lua_type, lua_upvalueindex, LUA_GCCOLLECT,
    LUA_GCISRUNNING, LUA_GCSTEP, LUA_REGISTRYINDEX, LUA_TLIGHTUSERDATA, LUA_TSTRING, LUA_TTABLE,
    LUA_TUSERDATA,
};
use std::ffi::{c_int, c_void, CStr};
use std::mem::size_of;
use std::ptr;

/// Its address is the registry key of this copy of the module's shared
/// objects. A host that links this crate and also loads `concat.so` has two
/// copies with two keys: each builder carries its own methods, so the copies
/// never see each other's objects as their own.
static STATE_KEY: u8 = 0;

fn state_key() -> *const c_void {
    ptr::addr_of!(STATE_KEY).cast()
}

// Slots of the module state table (registry[&STATE_KEY]).
const BUF_MT: lua_Integer = 1;
const OBJ_MT: lua_Integer = 2;
const DUMP: lua_Integer = 3;
const LEN: lua_Integer = 4;
const RESET: lua_Integer = 5;

/// `luaopen_concat`: the entry point `require("concat")` calls. Returns the
/// module table `{ new = <function> }`.
///
/// # Safety
/// Called by Lua as a `lua_CFunction` with a valid state.
#[no_mangle]
pub unsafe extern "C-unwind" fn luaopen_concat(L: *mut lua_State) -> c_int {
    // SAFETY: a C function has LUA_MINSTACK free slots; we push two.
    unsafe {
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, new_builder);
        lua_setfield(L, -2, c"new".as_ptr());
    }
    1
}

/// Pushes a fresh builder: `require("concat").new()`, and luahost's
/// `core.concat()`. Arguments are ignored. Returns 1 (the builder).
///
/// The builder is a table `{ [0] = <buffer userdata>, add = <closure>,
/// dump, len, reset }` with the shared metatable `Concat` (`__len`,
/// `__tostring`, `__name`).
///
/// # Safety
/// `L` must be a valid Lua state; may be called as a `lua_CFunction` or
/// directly (it checks its stack space itself).
pub unsafe extern "C-unwind" fn new_builder(L: *mut lua_State) -> c_int {
    // SAFETY: all indices are absolute and refer to values pushed here; the
    // buffer userdata is initialized before anything else can see it (its
    // finalizer may run after any later allocation fails).
    unsafe {
        luaL_checkstack(L, 8, ptr::null());
        let base = lua_gettop(L);
        let state = push_state(L);
        lua_createtable(L, 0, 5);
        let obj = state + 1;
        // One user value: the last dumped string (see `dump`).
        let ud = lua_newuserdatauv(L, size_of::<Buf>(), 1).cast::<Buf>();
        ud.write(Buf::new(lua_topointer(L, obj)));
        let ud_idx = obj + 1;
        // Set the metatable (with its __gc) right after creating the
        // userdata: Lua then unlinks it from the head of the object list in
        // O(1). Done later, it would walk every object created in between.
        lua_rawgeti(L, state, BUF_MT);
        lua_setmetatable(L, ud_idx);
        // `add` goes in first: the first key of an empty table sits in its
        // main hash position, so `b:add` finds it without a collision chain.
        lua_pushvalue(L, ud_idx);
        lua_pushvalue(L, obj);
        lua_pushcclosure(L, add, 2);
        lua_setfield(L, obj, c"add".as_ptr());
        lua_pushvalue(L, ud_idx);
        lua_rawseti(L, obj, 0);
        for (slot, name) in [(DUMP, c"dump"), (LEN, c"len"), (RESET, c"reset")] {
            lua_rawgeti(L, state, slot);
            lua_setfield(L, obj, name.as_ptr());
        }
        lua_rawgeti(L, state, OBJ_MT);
        lua_setmetatable(L, obj);
        // Leave only the builder, at base + 1.
        lua_copy(L, obj, base + 1);
        lua_settop(L, base + 1);
    }
    1
}

/// Pushes this copy's state table, creating it on first use; returns its
/// absolute index.
unsafe fn push_state(L: *mut lua_State) -> c_int {
    // SAFETY: the caller reserved stack space (new_builder checks 8 slots;
    // at most 4 are used at once here); indices are absolute.
    unsafe {
        if lua_rawgetp(L, LUA_REGISTRYINDEX, state_key()) == LUA_TTABLE {
            return lua_gettop(L);
        }
        lua_pop(L, 1);
        lua_createtable(L, 5, 0);
        let st = lua_gettop(L);

        // The buffer's metatable: __gc frees the chunks. `__metatable` hides
        // it from Lua code, so only this module can attach it to a userdata
        // or call the finalizer.
        lua_createtable(L, 0, 3);
        let mt = st + 1;
        lua_pushliteral(L, c"Concat buffer");
        lua_setfield(L, mt, c"__name".as_ptr());
        lua_pushboolean(L, 0);
        lua_setfield(L, mt, c"__metatable".as_ptr());
        lua_pushvalue(L, mt);
        lua_pushcclosure(L, buffer_gc, 1);
        lua_setfield(L, mt, c"__gc".as_ptr());
        lua_rawseti(L, st, BUF_MT);

        // Methods shared by all builders: closures over the buffer metatable,
        // which they use to recognize a buffer.
        let shared: [(lua_Integer, lua_CFunction); 3] = [(DUMP, dump), (LEN, len), (RESET, reset)];
        for (slot, f) in shared {
            lua_rawgeti(L, st, BUF_MT);
            lua_pushcclosure(L, f, 1);
            lua_rawseti(L, st, slot);
        }

        // The builder table's metatable.
        lua_createtable(L, 0, 3);
        let omt = st + 1;
        lua_pushliteral(L, c"Concat");
        lua_setfield(L, omt, c"__name".as_ptr());
        lua_rawgeti(L, st, LEN);
        lua_setfield(L, omt, c"__len".as_ptr());
        lua_pushcfunction(L, to_string);
        lua_setfield(L, omt, c"__tostring".as_ptr());
        lua_rawseti(L, st, OBJ_MT);

        lua_pushvalue(L, st);
        lua_rawsetp(L, LUA_REGISTRYINDEX, state_key());
        st
    }
}

/// `b:add(piece, ...)`, the hot path. Upvalue 1: the buffer userdata;
/// upvalue 2: the builder table it belongs to (only held, so that the
/// address recorded in `Buf::owner` stays this table's while the closure
/// exists).
///
/// The common call — on its own builder, one string that fits in the current
/// chunk — is four API calls and a short copy. Measured per call with
/// callgrind on lua5.4 5.4.4 (instructions): `lua_touserdata` on an upvalue
/// 36, `lua_topointer(L, 1)` 22, `lua_gettop` 7, `lua_tolstring` 31, against
/// `lua_rawequal(L, 1, upvalue)` 46 for the identity check it replaces, and
/// about 250 for the Lua side of `b:add(x)` itself. Everything else goes to
/// [`add_general`].
unsafe extern "C-unwind" fn add(L: *mut lua_State) -> c_int {
    // SAFETY: Lua calls this closure with its two upvalues: upvalue 1 is a
    // full userdata holding an initialized `Buf` (new_builder writes it before
    // creating the closure), kept alive by the closure being called. The
    // string pointer from lua_tolstring stays valid while argument 2 is on
    // the stack. The buffer's fields are read after lua_tolstring, which may
    // run a collection (converting a number allocates) and with it
    // finalizers that use this builder.
    unsafe {
        let buf = lua_touserdata(L, lua_upvalueindex(1)).cast::<Buf>();
        if lua_topointer(L, 1) == (*buf).owner && lua_gettop(L) == 2 {
            let mut n = 0;
            let s = lua_tolstring(L, 2, &mut n);
            if !s.is_null() && (*buf).try_push(s.cast(), n) {
                return 0;
            }
        }
        add_general(L)
    }
}

/// `add` when the hot path doesn't apply: several pieces (or none), a piece
/// that needs a new chunk, a bad argument, or `self` not being the builder
/// this closure was made for (`b1.add(b2, x)` appends to `b2`, as a method
/// does; anything else that isn't a builder is a "bad self" error).
///
/// Either every piece is appended or none is: types are checked (and numbers
/// converted) before the first append, and an allocation failure is undone.
#[cold]
#[inline(never)]
unsafe fn add_general(L: *mut lua_State) -> c_int {
    // SAFETY: as in `add`. Indices: `top` is the last argument; we push the
    // buffer metatable at top + 1 and, for another builder, its buffer at
    // top + 2 (keeping it alive while we write into it). At most 5 slots
    // are pushed (LUA_MINSTACK guarantees 20).
    unsafe {
        let top = lua_gettop(L);
        if top == 0 {
            // Checked before pushing anything, which would become index 1.
            return type_error(L, 1, c"Concat");
        }
        // The buffer metatable, at top + 1 (nil if the debug library removed
        // it: the stack layout stays the same, and no other builder matches).
        if lua_getmetatable(L, lua_upvalueindex(1)) == 0 {
            lua_pushnil(L);
        }
        let mt = top + 1;
        let own = lua_touserdata(L, lua_upvalueindex(1)).cast::<Buf>();
        let (buf, ud) = if lua_topointer(L, 1) == (*own).owner {
            (own, lua_upvalueindex(1))
        } else {
            (self_buffer(L, mt), top + 2)
        };
        if top < 2 {
            // `b:add()`: report the missing piece as luaL_checkstring would
            // (not through type_error: index 2 now holds what we pushed).
            return luaL_argerror(L, 2, c"string expected, got no value".as_ptr());
        }
        // Pass 1: every piece must be a string or a number; numbers become
        // strings in place, exactly as `..` converts them. This may allocate
        // and so run finalizers, but nothing has been appended yet.
        for i in 2..=top {
            if lua_tolstring(L, i, ptr::null_mut()).is_null() {
                return type_error(L, i, c"string");
            }
        }
        // Pass 2: append. All pieces are strings now: no Lua allocation, no
        // collection, no Lua code runs until push_pieces returns.
        let allocated = match push_pieces(L, buf, top) {
            Some(bytes) => bytes,
            None => {
                // Out of memory. A full collection runs the finalizers of dead
                // builders, which frees their chunks; then try once more.
                lua_gc(L, LUA_GCCOLLECT, 0);
                match push_pieces(L, buf, top) {
                    Some(bytes) => bytes,
                    None => return raise_out_of_memory(L),
                }
            }
        };
        after_allocation(L, buf, ud, mt, allocated);
        0
    }
}

/// Appends arguments 2..=top (all strings) to `buf`. Returns the bytes
/// allocated, or None, with the buffer as it was, if memory ran out.
unsafe fn push_pieces(L: *mut lua_State, buf: *mut Buf, top: c_int) -> Option<usize> {
    // SAFETY: `buf` is a live buffer (caller); arguments 2..=top are strings
    // on the stack, so their pointers are valid; the allocator is the
    // state's, as for every chunk.
    unsafe {
        let a = Allocator::of(L);
        let len0 = (*buf).len();
        let mut allocated = 0;
        for i in 2..=top {
            let mut n = 0;
            let s = lua_tolstring(L, i, &mut n);
            match (*buf).push(&a, s.cast(), n) {
                Ok(bytes) => allocated += bytes,
                Err(_) => {
                    (*buf).truncate(&a, len0);
                    return None;
                }
            }
        }
        Some(allocated)
    }
}

/// After chunks were allocated for a buffer: re-arm its finalizer if it had
/// already run, then tell the collector. Must be the last thing a method
/// does with `buf`: the GC step may run finalizers that use the builder.
unsafe fn after_allocation(L: *mut lua_State, buf: *mut Buf, ud: c_int, mt: c_int, bytes: usize) {
    if bytes == 0 {
        return;
    }
    // SAFETY: forwarded: `ud` indexes the buffer's userdata, `mt` its
    // metatable.
    unsafe {
        rearm_finalizer(L, buf, ud, mt);
        gc_hint(L, bytes);
    }
}

/// If the buffer's finalizer already ran (the builder was resurrected by
/// another object's finalizer and is used again), attach the metatable again
/// so that the finalizer runs again and frees the new chunks.
unsafe fn rearm_finalizer(L: *mut lua_State, buf: *mut Buf, ud: c_int, mt: c_int) {
    // SAFETY: `ud` indexes the buffer's userdata and `mt` its metatable
    // (pseudo- or absolute indices, stable while we push one value);
    // setting a metatable neither allocates nor runs Lua code.
    unsafe {
        if (*buf).collected {
            (*buf).collected = false;
            lua_pushvalue(L, mt);
            lua_setmetatable(L, ud);
        }
    }
}

/// Announces `bytes` of memory allocated outside the collector's accounting,
/// as a GC step of that size: otherwise a program that drops builders
/// holding megabytes, but allocates little else, would not collect them
/// (their userdata look tiny to the collector). Does nothing while the
/// collector is stopped (a step would restart it) or inside a finalizer.
unsafe fn gc_hint(L: *mut lua_State, bytes: usize) {
    let kb = bytes / 1024;
    if kb == 0 {
        return;
    }
    // SAFETY: lua_gc may be called from a C function; the step may run
    // finalizers, which is why callers call this last.
    unsafe {
        if lua_gc(L, LUA_GCISRUNNING) != 0 {
            lua_gc(L, LUA_GCSTEP, kb.min(c_int::MAX as usize) as c_int);
        }
    }
}

/// `b:dump()`: the content as one string. The builder stays usable: it
/// keeps the returned string (as its user value) as the start of its
/// content and frees its chunks, so a dumped builder holds no memory of its
/// own, a second `dump()` returns the same string without copying, and
/// later appends go to new chunks after it.
unsafe extern "C-unwind" fn dump(L: *mut lua_State) -> c_int {
    // SAFETY: upvalue 1 is the buffer metatable (push_state). self_buffer
    // pushes the buffer userdata at `ud`, which keeps it (and its user value)
    // alive for this call. The slice from `contiguous` is only used by
    // lua_pushlstring, which copies it before anything can run Lua code (its
    // own allocation failure triggers an emergency collection, which runs no
    // finalizer). The string's bytes stay valid while user value 1 holds it.
    unsafe {
        let buf = self_buffer(L, lua_upvalueindex(1));
        let ud = lua_gettop(L);
        if !(*buf).has_chunks() {
            // Nothing appended since the last dump (or ever): return the
            // kept string itself.
            if (*buf).prefix().is_none() {
                lua_pushliteral(L, c"");
            } else if push_prefix(L, buf, ud) == 0 {
                return raise_tampered(L);
            }
            return 1;
        }
        if (*buf).prefix().is_some() {
            if push_prefix(L, buf, ud) == 0 {
                return raise_tampered(L);
            }
            lua_pop(L, 1);
        }
        if (*buf).contiguous().is_none() {
            let merged = match (*buf).make_contiguous(&Allocator::of(L)) {
                Ok(bytes) => bytes,
                Err(_) => {
                    // As in add_general: collect (running finalizers), retry.
                    lua_gc(L, LUA_GCCOLLECT, 0);
                    match (*buf).make_contiguous(&Allocator::of(L)) {
                        Ok(bytes) => bytes,
                        Err(_) => return raise_out_of_memory(L),
                    }
                }
            };
            if merged > 0 {
                // The merged chunk lives until set_prefix below, or on if
                // lua_pushlstring fails: it must be freed by a finalizer.
                rearm_finalizer(L, buf, ud, lua_upvalueindex(1));
            }
        }
        let s = (*buf).contiguous().unwrap_or_default();
        lua_pushlstring(L, s.as_ptr().cast(), s.len());
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, ud, 1);
        let mut n = 0;
        let p = lua_tolstring(L, -1, &mut n);
        (*buf).set_prefix(&Allocator::of(L), p.cast(), n);
        chunks::note_result_len(n);
    }
    1
}

/// Pushes user value 1 of the buffer at `ud` — the string kept by the last
/// dump — and returns 1 if it is still that string (same bytes in memory).
/// Returns 0, with the value pushed, if Lua code replaced it (only the debug
/// library can): the prefix pointer must then not be used.
unsafe fn push_prefix(L: *mut lua_State, buf: *mut Buf, ud: c_int) -> c_int {
    // SAFETY: `ud` indexes a buffer userdata with one user value; the
    // pointer comparison reads nothing through the prefix pointer.
    unsafe {
        let mut n = 0;
        let kept = if lua_getiuservalue(L, ud, 1) == LUA_TSTRING {
            lua_tolstring(L, -1, &mut n).cast::<u8>()
        } else {
            ptr::null()
        };
        c_int::from((*buf).prefix() == Some((kept, n)))
    }
}

/// Raises the error for a builder whose kept string was replaced.
unsafe fn raise_tampered(L: *mut lua_State) -> c_int {
    // SAFETY: luaL_error raises; nothing here needs dropping.
    unsafe {
        luaL_error(
            L,
            c"Concat object: internal state modified (debug.setuservalue?)".as_ptr(),
        )
    }
}

/// `b:len()` and `#b`: the content length in bytes.
unsafe extern "C-unwind" fn len(L: *mut lua_State) -> c_int {
    // SAFETY: upvalue 1 is the buffer metatable; self_buffer checks self.
    unsafe {
        let buf = self_buffer(L, lua_upvalueindex(1));
        lua_pushinteger(L, (*buf).len() as lua_Integer);
    }
    1
}

/// `b:reset()`: empties the builder; its chunks are freed now, and the
/// string of the last dump is no longer referenced by it.
unsafe extern "C-unwind" fn reset(L: *mut lua_State) -> c_int {
    // SAFETY: upvalue 1 is the buffer metatable; self_buffer checks self;
    // chunks were allocated with the state's allocator.
    unsafe {
        let buf = self_buffer(L, lua_upvalueindex(1));
        let ud = lua_gettop(L);
        (*buf).clear(&Allocator::of(L));
        lua_pushnil(L);
        lua_setiuservalue(L, ud, 1);
    }
    0
}

/// `tostring(b)`: "Concat object: 0x...", as HAProxy prints its objects.
unsafe extern "C-unwind" fn to_string(L: *mut lua_State) -> c_int {
    // SAFETY: lua_topointer accepts any index (NULL for non-objects); "%p"
    // takes a pointer argument.
    unsafe {
        lua_pushfstring(L, c"Concat object: %p".as_ptr(), lua_topointer(L, 1));
    }
    1
}

/// The buffer's `__gc`: frees the chunks. Upvalue 1: the buffer metatable.
/// The buffer is left empty and valid (an object resurrected by another
/// finalizer may still be used), and marked so that an allocation re-arms
/// the finalizer.
unsafe extern "C-unwind" fn buffer_gc(L: *mut lua_State) -> c_int {
    // SAFETY: buffer_at checks that argument 1 is a userdata of our size
    // with our metatable, i.e. a `Buf` written by new_builder.
    unsafe {
        let buf = buffer_at(L, 1, lua_upvalueindex(1));
        if !buf.is_null() {
            (*buf).clear(&Allocator::of(L));
            (*buf).collected = true;
        }
    }
    0
}

/// The buffer of the builder passed as `self` (argument 1): `self[0]`, which
/// is pushed on the stack (keeping it alive for the caller). Raises the
/// standard "bad argument #1 ... (Concat expected, got X)" error (or
/// "calling 'm' on bad self") when `self` is not a builder.
///
/// `mt` indexes the buffer metatable (not a negative relative index).
unsafe fn self_buffer(L: *mut lua_State, mt: c_int) -> *mut Buf {
    // SAFETY: lua_rawgeti is only applied to a table; buffer_at validates
    // the value before it is used as a `Buf`.
    unsafe {
        if lua_type(L, 1) == LUA_TTABLE {
            lua_rawgeti(L, 1, 0);
            let buf = buffer_at(L, -1, mt);
            if !buf.is_null() {
                return buf;
            }
        }
        type_error(L, 1, c"Concat");
        // type_error does not return (it raises a Lua error).
        ptr::null_mut()
    }
}

/// The `Buf` at `idx` if the value there is one of our buffers: a full
/// userdata of our size whose metatable is the buffer metatable (which Lua
/// code cannot obtain or attach). Null otherwise.
unsafe fn buffer_at(L: *mut lua_State, idx: c_int, mt: c_int) -> *mut Buf {
    // SAFETY: every call takes any valid index; getmetatable pushes only when
    // it returns nonzero, and that value is popped.
    unsafe {
        if lua_type(L, idx) != LUA_TUSERDATA || lua_rawlen(L, idx) != size_of::<Buf>() as _ {
            return ptr::null_mut();
        }
        if lua_getmetatable(L, idx) == 0 {
            return ptr::null_mut();
        }
        // `idx` may be relative: compare with the metatable just pushed
        // before popping it.
        let ours = lua_rawequal(L, -1, mt) != 0;
        lua_pop(L, 1);
        if ours {
            lua_touserdata(L, idx).cast()
        } else {
            ptr::null_mut()
        }
    }
}

/// Raises Lua's standard argument type error, as luaL_typeerror does:
/// "bad argument #N to 'f' (EXPECTED expected, got TYPE)", where TYPE is the
/// value's `__name` if it has one. Never returns.
unsafe fn type_error(L: *mut lua_State, arg: c_int, expected: &CStr) -> c_int {
    // SAFETY: getmetafield pushes only a found field (we use it as a string
    // only if it is one); luaL_argerror raises and never returns. Nothing on
    // the Rust stack needs dropping.
    unsafe {
        let got = if luaL_getmetafield(L, arg, c"__name".as_ptr()) == LUA_TSTRING {
            lua_tostring(L, -1)
        } else if lua_type(L, arg) == LUA_TLIGHTUSERDATA {
            c"light userdata".as_ptr()
        } else {
            luaL_typename(L, arg)
        };
        let msg = lua_pushfstring(L, c"%s expected, got %s".as_ptr(), expected.as_ptr(), got);
        luaL_argerror(L, arg, msg)
    }
}

/// Raises Lua's "not enough memory" error (as a runtime error with Lua's own
/// message: the C API has no way to raise LUA_ERRMEM itself). Never returns.
unsafe fn raise_out_of_memory(L: *mut lua_State) -> c_int {
    // SAFETY: the message is a literal; lua_error raises. Callers hold no
    // value with a destructor.
    unsafe {
        lua_pushliteral(L, c"not enough memory");
        lua_error(L)
    }
}
