//! `debug.sethook` / `debug.gethook` chained behind luahost's hook.
//!
//! A Lua thread has one hook. luahost's count hook (exec.rs) is what preempts
//! scripts and enforces their budgets, so a script must not be able to
//! replace it: the stock `debug.sethook` would, and a loop after
//! `debug.sethook()` then ran unbounded. The two functions are replaced by
//! Rust functions (the stock C functions are not kept anywhere a script can
//! reach) that record the script's hook per thread and set the thread's
//! real hook to luahost's hook procedure with the union of both masks.
//! luahost's hook then calls the script's hook function for the events the
//! script asked for, as the stock `debug` library would:
//! `hook(event, line)` with `line` only for "line" events, on the hooked
//! thread, so `debug.getinfo(2)` inside it is the hooked function.
//!
//! Count hooks: the thread's count is the smaller of the script's and
//! luahost's (`tune.lua.forced-yield`); each side keeps its own running count,
//! so luahost still ticks every `forced-yield` instructions and the script's
//! hook is called every `count` instructions on average (each call within
//! `forced-yield` instructions of its due point when its count is larger).
//!
//! The script's hooks live in a weak-keyed table (thread -> entry) held only
//! by Rust: a collected coroutine takes its entry with it, and a pooled host
//! coroutine is cleaned before reuse ([`ScriptHooks::clean`]).

use mlua::debug::{Debug, DebugEvent};
use mlua::{ffi, Function, Lua, Table, Thread, Value, Variadic};
use std::cell::Cell;
use std::ffi::c_int;
use std::rc::Rc;

/// Entry fields (a sequence, for speed).
const F_FUNC: i64 = 1;
const F_MASK: i64 = 2;
const F_COUNT: i64 = 3;
const F_STEP: i64 = 4;
const F_HOST_ACC: i64 = 5;
const F_SCRIPT_ACC: i64 = 6;
const F_MASK_STR: i64 = 7;

/// The script hooks of one state.
pub struct ScriptHooks {
    /// thread -> {func, mask bits, count, step, host acc, script acc, mask}.
    table: Table,
    /// Whether any script hook was ever set (the hook's fast path skips
    /// every lookup while false).
    any: Cell<bool>,
    /// luahost's hook procedure (mlua's global hook), read back from the
    /// main thread once it is installed.
    proc_: Cell<Option<ffi::lua_Hook>>,
    /// `tune.lua.forced-yield`.
    every: c_int,
}

/// What the hook should do for luahost after the script's part ran.
pub enum HostTick {
    /// A count event that is luahost's: account and maybe yield.
    Run,
    /// Not luahost's event (or not its turn yet).
    Skip,
    /// A script's hook function just ran: check the budget, and yield by
    /// time rather than by count (count events that fall inside a hook
    /// function are lost, so a loop whose instructions keep pace with its
    /// hook's could otherwise never see one).
    Check,
}

impl ScriptHooks {
    /// Creates the registry of script hooks and replaces `debug.sethook` and
    /// `debug.gethook` in `lua`. `every` is `tune.lua.forced-yield`.
    pub fn install(lua: &Lua, every: u32) -> mlua::Result<Rc<ScriptHooks>> {
        let table = lua.create_table()?;
        let meta = lua.create_table()?;
        meta.set("__mode", "k")?;
        table.set_metatable(Some(meta))?;
        let hooks = Rc::new(ScriptHooks {
            table,
            any: Cell::new(false),
            proc_: Cell::new(None),
            every: every.clamp(1, c_int::MAX as u32) as c_int,
        });
        let debug: Table = lua.globals().get("debug")?;
        let h = hooks.clone();
        debug.set(
            "sethook",
            lua.create_function(move |lua, args: Variadic<Value>| h.sethook(lua, args))?,
        )?;
        let h = hooks.clone();
        debug.set(
            "gethook",
            lua.create_function(move |lua, args: Variadic<Value>| h.gethook(lua, args))?,
        )?;
        Ok(hooks)
    }

    /// Records luahost's hook procedure; called once the global hook is set.
    pub fn capture_proc(&self, lua: &Lua) -> mlua::Result<()> {
        // SAFETY: lua_gethook only reads the running thread's hook field.
        unsafe { lua.exec_raw::<()>((), |state| self.proc_.set(ffi::lua_gethook(state))) }
    }

    /// Sets `thread`'s real hook: luahost's procedure with `mask`/`count`.
    fn set_raw(&self, thread: &Thread, mask: c_int, count: c_int) {
        let co = thread.to_pointer() as *mut ffi::lua_State;
        // SAFETY: a thread's pointer is its lua_State (lua_topointer), alive
        // while `thread` is referenced. lua_sethook only writes that thread's
        // hook fields, with no protected call (the thread may be in the
        // middle of a hook, or yielding from one); the debug library calls it
        // on other threads in the same way.
        let Some(proc_) = self.proc_.get() else {
            // Never the case once install_hook ran; setting no procedure
            // would remove luahost's hook, so leave the thread as it is.
            return;
        };
        unsafe { ffi::lua_sethook(co, Some(proc_), mask, count) }
    }

    /// Restores luahost's plain hook on a host coroutine about to be reused:
    /// a hook a script set on it must not follow into another request.
    pub fn clean(&self, thread: &Thread) {
        if !self.any.get() {
            return;
        }
        let _ = self.table.raw_set(thread.clone(), Value::Nil);
        self.set_raw(thread, ffi::LUA_MASKCOUNT, self.every);
    }

    /// The script's part of a hook event on the running thread. Called only
    /// once a script hook has been set somewhere in the state.
    pub fn dispatch(&self, lua: &Lua, debug: &Debug) -> mlua::Result<HostTick> {
        let event = debug.event();
        if !self.any.get() {
            return Ok(host_tick_for(event));
        }
        let thread = lua.current_thread();
        // SAFETY: the running thread's lua_State; lua_status only reads it.
        let status = unsafe { ffi::lua_status(thread.to_pointer() as *mut ffi::lua_State) };
        if status != ffi::LUA_OK {
            // luahost's count hook just asked this thread to yield, and Lua
            // calls the line hook of the same instruction before yielding: no
            // Lua call may run on a yielding thread.
            return Ok(HostTick::Skip);
        }
        let entry: Option<Table> = self.table.raw_get(thread.clone())?;
        let Some(entry) = entry else {
            // A coroutine created by a hooked thread inherits its mask and
            // count, not its hook function (as with the stock library): put
            // luahost's plain hook back on it.
            if !matches!(event, DebugEvent::Count) {
                self.set_raw(&thread, ffi::LUA_MASKCOUNT, self.every);
                return Ok(HostTick::Skip);
            }
            return Ok(HostTick::Run);
        };
        let func: Function = entry.raw_get(F_FUNC)?;
        let mask: c_int = entry.raw_get(F_MASK)?;
        let (name, line, tick) = match event {
            DebugEvent::Count => {
                let step: i64 = entry.raw_get(F_STEP)?;
                let count: i64 = entry.raw_get(F_COUNT)?;
                let host_acc = entry.raw_get::<i64>(F_HOST_ACC)? + step;
                let tick = if host_acc >= self.every as i64 {
                    entry.raw_set(F_HOST_ACC, 0)?;
                    HostTick::Run
                } else {
                    entry.raw_set(F_HOST_ACC, host_acc)?;
                    HostTick::Skip
                };
                if count <= 0 {
                    return Ok(tick);
                }
                let script_acc = entry.raw_get::<i64>(F_SCRIPT_ACC)? + step;
                if script_acc < count {
                    entry.raw_set(F_SCRIPT_ACC, script_acc)?;
                    return Ok(tick);
                }
                entry.raw_set(F_SCRIPT_ACC, script_acc - count)?;
                let tick = match tick {
                    HostTick::Run => HostTick::Run,
                    _ => HostTick::Check,
                };
                ("count", None, tick)
            }
            DebugEvent::Line if mask & ffi::LUA_MASKLINE != 0 => {
                ("line", debug.current_line(), HostTick::Check)
            }
            DebugEvent::Call if mask & ffi::LUA_MASKCALL != 0 => ("call", None, HostTick::Check),
            DebugEvent::TailCall if mask & ffi::LUA_MASKCALL != 0 => {
                ("tail call", None, HostTick::Check)
            }
            DebugEvent::Ret if mask & ffi::LUA_MASKRET != 0 => ("return", None, HostTick::Check),
            _ => return Ok(HostTick::Skip),
        };
        func.call::<()>((name, line.map(|l| l as i64)))?;
        Ok(tick)
    }

    /// `debug.sethook([thread,] hook, mask [, count])`.
    fn sethook(&self, lua: &Lua, args: Variadic<Value>) -> mlua::Result<()> {
        let mut args = args.into_iter();
        let mut first = args.next().unwrap_or(Value::Nil);
        let thread = match first {
            Value::Thread(t) => {
                first = args.next().unwrap_or(Value::Nil);
                t
            }
            _ => lua.current_thread(),
        };
        let func = match first {
            Value::Nil => {
                // Turn the script's hook off; luahost's stays.
                self.table.raw_set(thread.clone(), Value::Nil)?;
                self.set_raw(&thread, ffi::LUA_MASKCOUNT, self.every);
                return Ok(());
            }
            Value::Function(f) => f,
            other => {
                return Err(mlua::Error::runtime(format!(
                    "bad argument to 'sethook' (function expected, got {})",
                    other.type_name()
                )))
            }
        };
        let smask = match args.next() {
            Some(Value::String(s)) => s.to_string_lossy(),
            Some(Value::Integer(i)) => i.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            other => {
                return Err(mlua::Error::runtime(format!(
                    "bad argument to 'sethook' (string expected, got {})",
                    other.map_or("no value", |v| v.type_name())
                )))
            }
        };
        let count = match args.next() {
            None | Some(Value::Nil) => 0,
            Some(Value::Integer(i)) => i,
            Some(Value::Number(n)) if n.fract() == 0.0 => n as i64,
            Some(other) => {
                return Err(mlua::Error::runtime(format!(
                    "bad argument to 'sethook' (number expected, got {})",
                    other.type_name()
                )))
            }
        }
        .clamp(0, c_int::MAX as i64);
        let mut mask = 0;
        if smask.contains('c') {
            mask |= ffi::LUA_MASKCALL;
        }
        if smask.contains('r') {
            mask |= ffi::LUA_MASKRET;
        }
        if smask.contains('l') {
            mask |= ffi::LUA_MASKLINE;
        }
        let step = if count > 0 {
            count.min(self.every as i64)
        } else {
            self.every as i64
        };
        let entry = lua.create_sequence_from([
            Value::Function(func),
            Value::Integer(mask as i64),
            Value::Integer(count),
            Value::Integer(step),
            Value::Integer(0),
            Value::Integer(0),
            Value::String(lua.create_string(mask_string(mask))?),
        ])?;
        self.table.raw_set(thread.clone(), entry)?;
        self.any.set(true);
        self.set_raw(&thread, mask | ffi::LUA_MASKCOUNT, step as c_int);
        Ok(())
    }

    /// `debug.gethook([thread])`: the script's hook, never luahost's.
    fn gethook(&self, lua: &Lua, args: Variadic<Value>) -> mlua::Result<Variadic<Value>> {
        let thread = match args.into_iter().next() {
            Some(Value::Thread(t)) => t,
            _ => lua.current_thread(),
        };
        let entry: Option<Table> = self.table.raw_get(thread)?;
        let Some(entry) = entry else {
            return Ok(Variadic::from_iter([Value::Nil]));
        };
        Ok(Variadic::from_iter([
            entry.raw_get::<Value>(F_FUNC)?,
            entry.raw_get::<Value>(F_MASK_STR)?,
            entry.raw_get::<Value>(F_COUNT)?,
        ]))
    }
}

/// The mask as the stock `debug.gethook` returns it.
fn mask_string(mask: c_int) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (ffi::LUA_MASKCALL, 'c'),
        (ffi::LUA_MASKRET, 'r'),
        (ffi::LUA_MASKLINE, 'l'),
    ] {
        if mask & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// luahost's part of an event when no script hook is involved.
fn host_tick_for(event: DebugEvent) -> HostTick {
    match event {
        DebugEvent::Count => HostTick::Run,
        _ => HostTick::Skip,
    }
}
