//! The HTTP class (`txn.http`): the request and response header blocks of
//! an HTTP transaction.

use crate::lua::class::Class;
use crate::lua::handles::{self, Kind};
use crate::lua::txn_access::TxnCell;
use crate::txn::Txn;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use mlua::{Lua, Table, Value};
use std::rc::Rc;

fn cell(this: &Value, method: &str) -> mlua::Result<Rc<TxnCell>> {
    handles::cell(this, Kind::Http, method)
}

#[derive(Clone, Copy)]
enum Side {
    Req,
    Res,
}

fn headers(t: &Txn, side: Side) -> Option<&HeaderMap> {
    match side {
        Side::Req => t.req.as_ref().map(|r| &r.headers),
        Side::Res => t.res.as_ref().map(|r| &r.headers),
    }
}

fn headers_mut(t: &mut Txn, side: Side) -> mlua::Result<&mut HeaderMap> {
    match side {
        Side::Req => t.req.as_mut().map(|r| &mut r.headers),
        Side::Res => t.res.as_mut().map(|r| &mut r.headers),
    }
    .ok_or_else(|| {
        mlua::Error::runtime(match side {
            Side::Req => "no HTTP request in this transaction",
            Side::Res => "no HTTP response yet in this transaction",
        })
    })
}

fn header_name(name: &str) -> mlua::Result<HeaderName> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| mlua::Error::runtime(format!("invalid header name '{name}'")))
}

fn header_value(v: &[u8]) -> mlua::Result<HeaderValue> {
    HeaderValue::from_bytes(v).map_err(|_| mlua::Error::runtime("invalid header value"))
}

/// `t[name][0..n]`: HAProxy's 0-indexed values per lower-case name.
fn get_headers(lua: &Lua, map: Option<&HeaderMap>) -> mlua::Result<Table> {
    let out = lua.create_table()?;
    if let Some(map) = map {
        for name in map.keys() {
            let values = lua.create_table()?;
            for (i, v) in map.get_all(name).iter().enumerate() {
                values.raw_set(i as i64, lua.create_string(v.as_bytes())?)?;
            }
            out.raw_set(name.as_str(), values)?;
        }
    }
    Ok(out)
}

/// Applies `re` to each value of header `name` (the whole value, or each
/// comma-separated element for rep_value).
fn replace(
    map: &mut HeaderMap,
    name: &str,
    re: &str,
    with: &str,
    per_value: bool,
) -> mlua::Result<()> {
    let name = header_name(name)?;
    let re =
        regex::Regex::new(re).map_err(|e| mlua::Error::runtime(format!("invalid regex: {e}")))?;
    let with = crate::headers::regex_replacement(with);
    // As HAProxy's replace-header: a value the regex matches (anywhere) is
    // replaced whole by the expansion; other values are kept.
    let rewrite_one = |text: &str| -> String {
        match re.captures(text) {
            Some(caps) => {
                let mut out = String::new();
                caps.expand(&with, &mut out);
                out
            }
            None => text.to_string(),
        }
    };
    // Values are rewritten where they stand, as HAProxy does.
    let mut failed = false;
    crate::headers::rewrite(map, &name, |v| {
        let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
        let new = if per_value {
            text.split(',')
                .map(|part| rewrite_one(part.trim()))
                .collect::<Vec<_>>()
                // HAProxy writes the rewritten values back comma-separated.
                .join(",")
        } else {
            rewrite_one(&text)
        };
        HeaderValue::from_str(&new).unwrap_or_else(|_| {
            failed = true;
            v.clone()
        })
    });
    if failed {
        return Err(mlua::Error::runtime(
            "the rewritten header value is invalid",
        ));
    }
    Ok(())
}

/// The HTTP class.
pub fn class(lua: &Lua) -> mlua::Result<Class> {
    let c = Class::new(lua, "HTTP")?;
    for (prefix, side) in [("req", Side::Req), ("res", Side::Res)] {
        c.method(
            &format!("{prefix}_get_headers"),
            lua.create_function(move |lua, this: Value| {
                let cell = cell(&this, "get_headers")?;
                cell.with(|t| get_headers(lua, headers(t, side)))?
            })?,
        )?;
        c.method(
            &format!("{prefix}_add_header"),
            lua.create_function(
                move |_, (this, name, value): (Value, String, mlua::LuaString)| {
                    let (n, v) = (header_name(&name)?, header_value(&value.as_bytes())?);
                    cell(&this, "add_header")?.with_mut(|t| {
                        headers_mut(t, side).map(|m| {
                            m.append(n, v);
                        })
                    })?
                },
            )?,
        )?;
        c.method(
            &format!("{prefix}_set_header"),
            lua.create_function(
                move |_, (this, name, value): (Value, String, mlua::LuaString)| {
                    let (n, v) = (header_name(&name)?, header_value(&value.as_bytes())?);
                    cell(&this, "set_header")?
                        .with_mut(|t| headers_mut(t, side).map(|m| crate::headers::set(m, n, v)))?
                },
            )?,
        )?;
        c.method(
            &format!("{prefix}_del_header"),
            lua.create_function(move |_, (this, name): (Value, String)| {
                let n = header_name(&name)?;
                cell(&this, "del_header")?
                    .with_mut(|t| headers_mut(t, side).map(|m| crate::headers::delete(m, &n)))?
            })?,
        )?;
        c.method(
            &format!("{prefix}_rep_header"),
            lua.create_function(
                move |_, (this, name, re, with): (Value, String, String, String)| {
                    cell(&this, "rep_header")?
                        .with_mut(|t| replace(headers_mut(t, side)?, &name, &re, &with, false))?
                },
            )?,
        )?;
        c.method(
            &format!("{prefix}_rep_value"),
            lua.create_function(
                move |_, (this, name, re, with): (Value, String, String, String)| {
                    cell(&this, "rep_value")?
                        .with_mut(|t| replace(headers_mut(t, side)?, &name, &re, &with, true))?
                },
            )?,
        )?;
    }
    c.method(
        "req_set_method",
        lua.create_function(|_, (this, m): (Value, String)| {
            let m = hyper::Method::from_bytes(m.as_bytes())
                .map_err(|_| mlua::Error::runtime("invalid method"))?;
            cell(&this, "req_set_method")?.with_mut(|t| req(t).map(|r| r.method = m))?
        })?,
    )?;
    c.method(
        "req_set_path",
        lua.create_function(|_, (this, path): (Value, String)| {
            cell(&this, "req_set_path")?.with_mut(|t| {
                let r = req(t)?;
                let q = r.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                r.uri = parse_uri(&format!("{path}{q}"))?;
                Ok(())
            })?
        })?,
    )?;
    c.method(
        "req_set_query",
        lua.create_function(|_, (this, query): (Value, String)| {
            cell(&this, "req_set_query")?.with_mut(|t| {
                let r = req(t)?;
                let path = r.uri.path().to_string();
                let q = query.strip_prefix('?').unwrap_or(&query);
                // As HAProxy: an empty query keeps its '?'.
                r.uri = parse_uri(&format!("{path}?{q}"))?;
                Ok(())
            })?
        })?,
    )?;
    c.method(
        "req_set_uri",
        lua.create_function(|_, (this, uri): (Value, String)| {
            cell(&this, "req_set_uri")?.with_mut(|t| {
                let r = req(t)?;
                r.uri = parse_uri(&uri)?;
                Ok(())
            })?
        })?,
    )?;
    c.method(
        "res_set_status",
        lua.create_function(|_, (this, status, reason): (Value, i64, Option<String>)| {
            let s = u16::try_from(status)
                .ok()
                .and_then(|s| hyper::StatusCode::from_u16(s).ok())
                .ok_or_else(|| {
                    mlua::Error::runtime(format!("res_set_status: invalid status code {status}"))
                })?;
            let reason = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok());
            cell(&this, "res_set_status")?.with_mut(|t| match t.res.as_mut() {
                Some(r) => {
                    r.status = s;
                    r.extensions.remove::<hyper::ext::ReasonPhrase>();
                    if let Some(reason) = reason {
                        r.extensions.insert(reason);
                    }
                    Ok(())
                }
                None => Err(mlua::Error::runtime(
                    "no HTTP response yet in this transaction",
                )),
            })?
        })?,
    )?;
    Ok(c)
}

fn req(t: &mut Txn) -> mlua::Result<&mut hyper::http::request::Parts> {
    t.req
        .as_mut()
        .ok_or_else(|| mlua::Error::runtime("no HTTP request in this transaction"))
}

fn parse_uri(s: &str) -> mlua::Result<hyper::Uri> {
    s.parse::<hyper::Uri>()
        .map_err(|_| mlua::Error::runtime(format!("invalid URI '{s}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rep_header_and_rep_value() {
        let mut m = HeaderMap::new();
        m.append("x-a", HeaderValue::from_static("foo, bar"));
        replace(&mut m, "x-a", "^(.*)$", r"<\1>", false).unwrap();
        assert_eq!(m.get("x-a").unwrap(), "<foo, bar>");
        let mut m = HeaderMap::new();
        m.append("x-a", HeaderValue::from_static("foo, bar"));
        replace(&mut m, "x-a", "^b(.*)", r"B\1", true).unwrap();
        assert_eq!(m.get("x-a").unwrap(), "foo,Bar");
    }
}
