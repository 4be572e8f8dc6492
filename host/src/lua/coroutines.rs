//! `coroutine.resume` and `coroutine.wrap` that let luahost's own yields
//! through.
//!
//! `core.sleep`, `core.msleep`, `core.yield` and the other waiting functions
//! are mlua async functions: when they must wait, they yield an internal
//! "pending" value to whoever resumed the running coroutine. In a host
//! coroutine that is luahost's runner, which parks the request until the wait
//! is over. In a coroutine the script created itself, it was the script's own
//! `coroutine.resume`, which received the internal value as if the coroutine
//! had yielded it, and the wait never happened.
//!
//! The replacements below pass such a yield on to their own resumer (level
//! after level, up to the host coroutine) and, once resumed, resume the inner
//! coroutine with what they were given, so the wait happens and the script
//! only ever sees its own values. Where the host coroutine cannot yield (a
//! sample fetch or converter), the outer yield fails as calling `core.msleep`
//! there directly does.

use mlua::{Lua, Value};

/// The replacements, in Lua so that they can yield. Their upvalues are the
/// stock coroutine functions and `is_pending`, a Rust function: the internal
/// value itself is not among them. This `coroutine.resume` also turns an
/// error a host function raised into its message, as `pcall` does
/// (errors.rs); `coroutine.wrap` uses the stock `resume` directly (one C
/// call per step, as the stock `wrap`), so such an error leaves it as raised
/// and the next `pcall` turns it into its message.
const WRAPPERS: &str = r##"
local is_pending, to_message, co_resume, co_yield, co_status, co_create, co_close = ...
local select, type, error = select, type, error

-- What an inner coroutine gave back: a luahost wait is passed on to our own
-- resumer, and the inner coroutine resumed with whatever comes back; an
-- error a host function raised becomes its message (errors.rs). The common
-- case (a script's own value) costs one `type` call.
local forward
forward = function(co, ok, ...)
  if type((...)) == "userdata" then
    if not ok then
      return false, to_message((...)), select(2, ...)
    end
    if select("#", ...) == 1 and is_pending((...)) and co_status(co) == "suspended" then
      return forward(co, co_resume(co, co_yield((...))))
    end
  end
  return ok, ...
end

local function resume(co, ...)
  return forward(co, co_resume(co, ...))
end

-- coroutine.wrap's failure: raised in the caller, with its position when
-- the error is a string, after closing the coroutine (as the stock wrap).
local function fail(co, err)
  if co_status(co) == "dead" then
    local closed, cerr = co_close(co)
    if not closed and cerr ~= nil then err = cerr end
  end
  error(err, 2)
end

local function wrap(f)
  local co = co_create(f)
  local step
  step = function(ok, ...)
    if ok then
      if type((...)) == "userdata" and select("#", ...) == 1 and is_pending((...))
         and co_status(co) == "suspended" then
        return step(co_resume(co, co_yield((...))))
      end
      return ...
    end
    return fail(co, (...))
  end
  return function(...)
    return step(co_resume(co, ...))
  end
end

return resume, wrap
"##;

/// Replaces `coroutine.resume` and `coroutine.wrap` in `lua`.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let pending = mlua::Lua::poll_pending();
    let is_pending = lua.create_function(move |_, v: Value| {
        Ok(matches!(v, Value::LightUserData(p) if p == pending))
    })?;
    let coroutine: mlua::Table = lua.globals().get("coroutine")?;
    let (resume, wrap): (mlua::Function, mlua::Function) =
        lua.load(WRAPPERS).set_name("=luahost-coroutines").call((
            is_pending,
            crate::lua::errors::to_message_function(lua)?,
            coroutine.get::<mlua::Function>("resume")?,
            coroutine.get::<mlua::Function>("yield")?,
            coroutine.get::<mlua::Function>("status")?,
            coroutine.get::<mlua::Function>("create")?,
            coroutine.get::<mlua::Function>("close")?,
        ))?;
    coroutine.set("resume", resume)?;
    coroutine.set("wrap", wrap)?;
    Ok(())
}
