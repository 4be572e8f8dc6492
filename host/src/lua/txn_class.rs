//! The TXN class (the `txn` argument of Lua actions and fetches) and the
//! Reply class (`txn:reply()`).

use crate::lua::class::Class;
use crate::lua::errors::done_error;
use crate::lua::handles::{self, Handle, Kind};
use crate::lua::state::StateInfo;
use crate::lua::txn_access::TxnCell;
use bytes::Bytes;
use mlua::{Lua, Table, Value};
use std::rc::Rc;

/// A reply given to `txn:done(reply)`.
#[derive(Clone, Debug)]
pub struct ReplyData {
    pub status: u16,
    pub reason: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

fn cell(this: &Value, method: &str) -> mlua::Result<Rc<TxnCell>> {
    handles::cell(this, Kind::Txn, method)
}

fn info(lua: &Lua) -> mlua::Result<Rc<StateInfo>> {
    lua.app_data_ref::<Rc<StateInfo>>()
        .map(|i| i.clone())
        .ok_or_else(|| mlua::Error::runtime("no luahost state"))
}

/// The TXN class.
pub fn class(lua: &Lua) -> mlua::Result<Class> {
    let c = Class::new(lua, "TXN")?;
    c.method(
        "log",
        lua.create_function(|_, (this, level, msg): (Value, i64, mlua::LuaString)| {
            if level >= 0 {
                txn_log(&this, level.min(7) as i32, &msg.to_string_lossy());
            }
            Ok(())
        })?,
    )?;
    // deflog: the transaction's level (set_loglevel), "info" by default.
    c.method(
        "deflog",
        lua.create_function(|_, (this, msg): (Value, mlua::LuaString)| {
            let level = cell(&this, "deflog")
                .and_then(|c| c.with(|t| t.log_level))
                .ok()
                .flatten()
                .filter(|l| *l >= 0)
                .unwrap_or(crate::log::INFO);
            txn_log(&this, level, &msg.to_string_lossy());
            Ok(())
        })?,
    )?;
    for (name, level) in [
        ("Debug", crate::log::DEBUG),
        ("Info", crate::log::INFO),
        ("Warning", crate::log::WARNING),
        ("Alert", crate::log::ALERT),
    ] {
        c.method(
            name,
            lua.create_function(move |_, (this, msg): (Value, mlua::LuaString)| {
                txn_log(&this, level, &msg.to_string_lossy());
                Ok(())
            })?,
        )?;
    }
    crate::lua::txn_methods::add_methods(lua, &c, cell)?;
    c.method(
        "set_loglevel",
        lua.create_function(|_, (this, level): (Value, i64)| {
            // -1 is core.silent: no traffic log line for this transaction.
            if !(-1..=7).contains(&level) {
                return Err(mlua::Error::runtime(
                    "set_loglevel: the level must be core.silent (-1) or between 0 and 7",
                ));
            }
            cell(&this, "set_loglevel")?.with_mut(|t| t.log_level = Some(level as i32))
        })?,
    )?;
    c.method(
        "reply",
        lua.create_function(|lua, (_this, init): (Value, Option<Table>)| new_reply(lua, init))?,
    )?;
    c.method(
        "done",
        lua.create_function(
            |_, (this, reply): (Value, Option<Table>)| -> mlua::Result<()> {
                let cell = cell(&this, "done")?;
                if let Some(r) = reply {
                    *cell.reply.borrow_mut() = Some(reply_data(&r)?);
                }
                cell.done.set(true);
                Err(done_error())
            },
        )?,
    )?;
    Ok(c)
}

/// Logs for a transaction: to its proxy's loggers (the backend once one
/// is chosen, else the frontend), as HAProxy's `txn:log` does.
fn txn_log(this: &Value, level: i32, msg: &str) {
    let proxy = cell(this, "log")
        .and_then(|c| c.with(|t| t.backend.clone().unwrap_or_else(|| t.frontend.clone())))
        .ok();
    crate::log::lua(proxy.as_deref(), level, msg);
}

/// A Reply object: a plain table (status, reason, headers, body) with the
/// Reply methods.
fn new_reply(lua: &Lua, init: Option<Table>) -> mlua::Result<Table> {
    let info = info(lua)?;
    let t = lua.create_table()?;
    t.raw_set("status", 200)?;
    t.raw_set("headers", lua.create_table()?)?;
    t.raw_set("body", "")?;
    if let Some(init) = init {
        // HAProxy ignores `reason` here (the status's own phrase is sent);
        // Reply:set_status(code, reason) does set one.
        for key in ["status", "body"] {
            let v: Value = init.get(key)?;
            if !v.is_nil() {
                t.raw_set(key, v)?;
            }
        }
        if let Some(h) = init.get::<Option<Table>>("headers")? {
            t.raw_set("headers", h)?;
        }
    }
    t.set_metatable(Some(info.classes.reply.meta.clone()))?;
    Ok(t)
}

/// Reads a reply table (a Reply object or a plain table).
pub fn reply_data(t: &Table) -> mlua::Result<ReplyData> {
    let status: Option<i64> = t.get("status")?;
    let status = status.unwrap_or(200);
    if !(100..=999).contains(&status) {
        return Err(mlua::Error::runtime(format!(
            "reply: invalid status code {status}"
        )));
    }
    let reason: Option<String> = t.get("reason")?;
    let body: Option<mlua::LuaString> = t.get("body")?;
    let mut headers = Vec::new();
    if let Some(h) = t.get::<Option<Table>>("headers")? {
        for pair in h.pairs::<String, Value>() {
            let (name, v) = pair?;
            match v {
                Value::Table(list) => {
                    for item in list.sequence_values::<mlua::LuaString>() {
                        headers.push((name.to_ascii_lowercase(), item?.to_string_lossy()));
                    }
                }
                Value::String(s) => headers.push((name.to_ascii_lowercase(), s.to_string_lossy())),
                Value::Integer(i) => headers.push((name.to_ascii_lowercase(), i.to_string())),
                _ => {}
            }
        }
    }
    Ok(ReplyData {
        status: status as u16,
        reason,
        headers,
        body: body
            .map(|b| Bytes::copy_from_slice(&b.as_bytes()))
            .unwrap_or_default(),
    })
}

/// The Reply class.
pub fn reply_class(lua: &Lua) -> mlua::Result<Class> {
    let c = Class::new(lua, "Reply")?;
    c.method(
        "set_status",
        lua.create_function(|_, (this, status, reason): (Table, i64, Option<String>)| {
            this.raw_set("status", status)?;
            this.raw_set("reason", reason)?;
            Ok(())
        })?,
    )?;
    c.method(
        "add_header",
        lua.create_function(
            |lua, (this, name, value): (Table, String, mlua::LuaString)| {
                let headers: Table = this.raw_get("headers")?;
                let name = name.to_ascii_lowercase();
                let list = match headers.raw_get::<Option<Table>>(name.as_str())? {
                    Some(l) => l,
                    None => {
                        let l = lua.create_table()?;
                        headers.raw_set(name.as_str(), &l)?;
                        l
                    }
                };
                list.raw_push(value)?;
                Ok(())
            },
        )?,
    )?;
    c.method(
        "del_header",
        lua.create_function(|_, (this, name): (Table, String)| {
            let headers: Table = this.raw_get("headers")?;
            headers.raw_set(name.to_ascii_lowercase(), Value::Nil)?;
            Ok(())
        })?,
    )?;
    c.method(
        "set_body",
        lua.create_function(|_, (this, body): (Table, mlua::LuaString)| {
            this.raw_set("body", body)
        })?,
    )?;
    Ok(c)
}

/// Creates a TXN object for the transaction registered as `handle`. Its
/// f/sf/c/sc, req/res and (in HTTP mode) http objects are built when first
/// read (see `install_lazy_fields`), sharing the handle.
pub fn new_txn(lua: &Lua, info: &StateInfo, handle: Handle) -> mlua::Result<Table> {
    info.classes
        .txn
        .build(lua, handle.with_kind(Kind::Txn), &[])
}

/// Declares the TXN's sub-objects as fields built on first access.
pub fn install_lazy_fields(lua: &Lua, classes: &crate::lua::state::Classes) -> mlua::Result<()> {
    use crate::lua::raw::sub_object_builder;
    let mut fields = crate::lua::txn_methods::sample_fields(lua, Kind::Txn, &classes.samples)?;
    let channel = &classes.channel.meta;
    fields.push((
        "req",
        sub_object_builder(lua, channel, Kind::Txn, Kind::ReqChannel, "req", false)?,
    ));
    fields.push((
        "res",
        sub_object_builder(lua, channel, Kind::Txn, Kind::ResChannel, "res", false)?,
    ));
    let http = &classes.http.meta;
    fields.push((
        "http",
        sub_object_builder(lua, http, Kind::Txn, Kind::Http, "http", true)?,
    ));
    classes.txn.lazy_fields(lua, fields)
}
