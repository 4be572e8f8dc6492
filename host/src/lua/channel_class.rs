//! The Channel class (`txn.req`, `txn.res`): the data buffered in one
//! direction of a TCP-mode stream. In HTTP mode the message is parsed, so as
//! in HAProxy only the size queries are available there.
//!
//! luahost's channels hold what was received before the content rules ran
//! (up to `tune.bufsize`); everything left in the request channel is sent to
//! the server when the rules are done. Functions never wait for more data.

use crate::lua::class::Class;
use crate::lua::handles;
use crate::lua::txn_access::TxnCell;
use crate::txn::{Txn, TxnMode};
use bytes::BytesMut;
use mlua::{Lua, Value};
use std::rc::Rc;

fn handle(this: &Value, method: &str) -> mlua::Result<(Rc<TxnCell>, bool)> {
    handles::channel(this, method)
}

fn buf(t: &Txn, response: bool) -> &BytesMut {
    if response {
        &t.res_buf
    } else {
        &t.req_buf
    }
}

fn buf_mut(t: &mut Txn, response: bool) -> &mut BytesMut {
    if response {
        &mut t.res_buf
    } else {
        &mut t.req_buf
    }
}

/// Fails in HTTP mode, where the raw buffer isn't exposed.
fn tcp_only(t: &Txn, method: &str) -> mlua::Result<()> {
    if t.mode == TxnMode::Http {
        return Err(mlua::Error::runtime(format!(
            "Channel:{method}() is not available in HTTP mode; use the HTTP class (txn.http)"
        )));
    }
    Ok(())
}

/// (offset, length) of a range within `len` bytes; a negative length means
/// "to the end", as HAProxy accepts.
fn range(len: usize, offset: Option<i64>, length: Option<i64>) -> (usize, usize) {
    let off = offset.unwrap_or(0).clamp(0, len as i64) as usize;
    let avail = len - off;
    let n = match length {
        Some(l) if l >= 0 => (l as usize).min(avail),
        _ => avail,
    };
    (off, n)
}

pub fn class(lua: &Lua) -> mlua::Result<Class> {
    let c = Class::new(lua, "Channel")?;
    c.method(
        "data",
        lua.create_function(|lua, (this, off, len): (Value, Option<i64>, Option<i64>)| {
            let (cell, resp) = handle(&this, "data")?;
            cell.with(|t| {
                tcp_only(t, "data")?;
                let b = buf(t, resp);
                let (o, n) = range(b.len(), off, len);
                lua.create_string(&b[o..o + n])
            })?
        })?,
    )?;
    c.method(
        "line",
        lua.create_function(|lua, (this, off, len): (Value, Option<i64>, Option<i64>)| {
            let (cell, resp) = handle(&this, "line")?;
            cell.with(|t| {
                tcp_only(t, "line")?;
                let b = buf(t, resp);
                let (o, n) = range(b.len(), off, len);
                let window = &b[o..o + n];
                let end = window
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(window.len(), |p| p + 1);
                lua.create_string(&window[..end])
            })?
        })?,
    )?;
    c.method(
        "set",
        lua.create_function(
            |_, (this, data, off, len): (Value, mlua::LuaString, Option<i64>, Option<i64>)| {
                let (cell, resp) = handle(&this, "set")?;
                let data = data.as_bytes().to_vec();
                cell.with_mut(|t| {
                    tcp_only(t, "set")?;
                    let b = buf_mut(t, resp);
                    let (o, n) = range(b.len(), off, len);
                    let mut out = BytesMut::with_capacity(b.len() - n + data.len());
                    out.extend_from_slice(&b[..o]);
                    out.extend_from_slice(&data);
                    out.extend_from_slice(&b[o + n..]);
                    *b = out;
                    Ok(data.len() as i64)
                })?
            },
        )?,
    )?;
    c.method(
        "remove",
        lua.create_function(|_, (this, off, len): (Value, Option<i64>, Option<i64>)| {
            let (cell, resp) = handle(&this, "remove")?;
            cell.with_mut(|t| {
                tcp_only(t, "remove")?;
                let b = buf_mut(t, resp);
                let (o, n) = range(b.len(), off, len);
                let mut out = BytesMut::with_capacity(b.len() - n);
                out.extend_from_slice(&b[..o]);
                out.extend_from_slice(&b[o + n..]);
                *b = out;
                Ok(n as i64)
            })?
        })?,
    )?;
    for (name, at_end) in [("append", true), ("send", true), ("prepend", false)] {
        c.method(
            name,
            lua.create_function(move |_, (this, data): (Value, mlua::LuaString)| {
                let (cell, resp) = handle(&this, name)?;
                let data = data.as_bytes().to_vec();
                cell.with_mut(|t| {
                    tcp_only(t, name)?;
                    let b = buf_mut(t, resp);
                    if at_end {
                        b.extend_from_slice(&data);
                    } else {
                        let mut out = BytesMut::with_capacity(b.len() + data.len());
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b);
                        *b = out;
                    }
                    Ok(data.len() as i64)
                })?
            })?,
        )?;
    }
    c.method(
        "insert",
        lua.create_function(
            |_, (this, data, off): (Value, mlua::LuaString, Option<i64>)| {
                let (cell, resp) = handle(&this, "insert")?;
                let data = data.as_bytes().to_vec();
                cell.with_mut(|t| {
                    tcp_only(t, "insert")?;
                    let b = buf_mut(t, resp);
                    let (o, _) = range(b.len(), off, Some(0));
                    let mut out = BytesMut::with_capacity(b.len() + data.len());
                    out.extend_from_slice(&b[..o]);
                    out.extend_from_slice(&data);
                    out.extend_from_slice(&b[o..]);
                    *b = out;
                    Ok(data.len() as i64)
                })?
            },
        )?,
    )?;
    c.method(
        "forward",
        lua.create_function(|_, (this, n): (Value, i64)| {
            let (cell, resp) = handle(&this, "forward")?;
            // Everything buffered is forwarded once the rules are done; report
            // how much of the request is covered.
            cell.with(|t| {
                tcp_only(t, "forward")?;
                Ok(n.clamp(0, buf(t, resp).len() as i64))
            })?
        })?,
    )?;
    c.method(
        "input",
        lua.create_function(|_, this: Value| {
            let (cell, resp) = handle(&this, "input")?;
            cell.with(|t| buf(t, resp).len() as i64)
        })?,
    )?;
    c.method("output", lua.create_function(|_, _this: Value| Ok(0i64))?)?;
    c.method(
        "may_recv",
        lua.create_function(|_, this: Value| {
            let (cell, resp) = handle(&this, "may_recv")?;
            cell.with(|t| buf(t, resp).len() < crate::proxy::bufsize())
        })?,
    )?;
    c.method(
        "is_full",
        lua.create_function(|_, this: Value| {
            let (cell, resp) = handle(&this, "is_full")?;
            cell.with(|t| buf(t, resp).len() >= crate::proxy::bufsize())
        })?,
    )?;
    c.method(
        "is_resp",
        lua.create_function(|_, this: Value| Ok(handle(&this, "is_resp")?.1))?,
    )?;
    Ok(c)
}
