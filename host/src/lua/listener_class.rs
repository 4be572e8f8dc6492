//! The Lua `Listener` class (HAProxy 3.0): one listening address of a
//! frontend, reached through a Proxy's `listeners` table (named `sock-N`).

use crate::backend::stat_fields;
use crate::backend::ProxyEntry;
use crate::lua::class::{native, Class};
use crate::lua::proxy_class::stat_table;
use crate::lua::proxy_index::ListenerHandle;
use mlua::{Lua, Value};

/// Builds the class (once per Lua state).
pub fn class(lua: &Lua) -> mlua::Result<Class> {
    let class = Class::new(lua, "Listener")?;
    class.method(
        "get_stats",
        lua.create_function(|lua, this: Value| {
            let h = native::<ListenerHandle>(&this, "Listener", "get_stats")?;
            match h.reg.proxy_at(h.at) {
                Some(p) if p.cap.is_frontend() => {
                    let name = ProxyEntry::listener_name(h.idx);
                    let line = stat_fields::frontend_line(p, Some(&name));
                    Ok(Value::Table(stat_table(lua, line)?))
                }
                _ => Ok(Value::Nil),
            }
        })?,
    )?;
    Ok(class)
}
