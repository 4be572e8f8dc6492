//! The methods and fields that TXN, AppletHTTP and AppletTCP share because
//! they all stand for a transaction: variables (`set_var`, `get_var`,
//! `unset_var`), private data (`get_priv`, `set_priv`) and the sample objects
//! (`f`, `sf`, `c`, `sc`, built on first access).

use crate::lua::class::Class;
use crate::lua::state::StateInfo;
use crate::lua::txn_access::TxnCell;
use crate::lua::vars::VarValue;
use mlua::{Lua, Value};
use std::rc::Rc;

/// Finds the transaction of an object (`self`), for method `method`.
pub type CellOf = fn(&Value, &str) -> mlua::Result<Rc<TxnCell>>;

/// The state's bookkeeping, from inside a callback.
pub fn state_info(lua: &Lua) -> mlua::Result<Rc<StateInfo>> {
    lua.app_data_ref::<Rc<StateInfo>>()
        .map(|i| i.clone())
        .ok_or_else(|| mlua::Error::runtime("no luahost state"))
}

/// Adds the variable and private-data methods to `class`.
pub fn add_methods(lua: &Lua, class: &Class, cell_of: CellOf) -> mlua::Result<()> {
    class.method(
        "set_var",
        lua.create_function(
            move |_, (this, name, v, ifexist): (Value, String, Value, Option<bool>)| {
                let value = VarValue::from_lua(&v);
                cell_of(&this, "set_var")?
                    .with_mut(|t| t.vars.set(&name, value, ifexist.unwrap_or(false)))
            },
        )?,
    )?;
    class.method(
        "unset_var",
        lua.create_function(move |_, (this, name): (Value, String)| {
            cell_of(&this, "unset_var")?.with_mut(|t| t.vars.unset(&name))
        })?,
    )?;
    class.method(
        "get_var",
        lua.create_function(move |lua, (this, name): (Value, String)| {
            match cell_of(&this, "get_var")?.with(|t| t.vars.get(&name))? {
                Some(v) => v.into_lua(lua),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    // Private data belongs to the transaction, kept by the Lua state that
    // stored it: what a Lua action set is visible to the service that
    // answers the same request.
    class.method(
        "get_priv",
        lua.create_function(move |lua, this: Value| {
            let id = cell_of(&this, "get_priv")?.with(|t| t.id)?;
            Ok(state_info(lua)?
                .privs
                .borrow()
                .get(&id)
                .cloned()
                .unwrap_or(Value::Nil))
        })?,
    )?;
    class.method(
        "set_priv",
        lua.create_function(move |lua, (this, v): (Value, Value)| {
            let cell = cell_of(&this, "set_priv")?;
            let info = state_info(lua)?;
            let mask = if info.thread_num == 0 { 1 } else { 2 };
            // Tell the transaction which state holds data for it, so the data
            // is dropped when the transaction ends.
            let id = cell.with(|t| {
                t.priv_states
                    .fetch_or(mask, std::sync::atomic::Ordering::Relaxed);
                t.id
            })?;
            info.privs.borrow_mut().insert(id, v);
            Ok(())
        })?,
    )?;
    Ok(())
}

/// The `f`, `sf`, `c` and `sc` fields of an object of class `parent`, for
/// `Class::lazy_fields`.
pub fn sample_fields(
    lua: &Lua,
    parent: crate::lua::handles::Kind,
    samples: &crate::lua::fetches_class::SampleClasses,
) -> mlua::Result<Vec<(&'static str, mlua::Function)>> {
    use crate::lua::handles::Kind;
    let mut fields = Vec::new();
    for (key, class, kind) in [
        ("f", &samples.fetches, Kind::Fetches),
        ("sf", &samples.string_fetches, Kind::Fetches),
        ("c", &samples.converters, Kind::Converters),
        ("sc", &samples.string_converters, Kind::Converters),
    ] {
        let make = crate::lua::raw::sub_object_builder(lua, &class.meta, parent, kind, key, false)?;
        fields.push((key, make));
    }
    Ok(fields)
}
