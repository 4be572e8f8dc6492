//! How the Lua objects built for each transaction reach their native object.
//!
//! HAProxy's objects are tables holding their native object at [0]. For the
//! objects a request creates (TXN and its HTTP, Fetches, Converters and
//! Channel objects, AppletHTTP, AppletTCP), [0] holds a light userdata: a
//! handle naming a slot of this worker's handle table, plus the class of the
//! object. Unlike a full userdata, a handle costs the Lua state no allocation
//! and its collector no finalizer, and all the objects of one transaction
//! share its slot (docs/benchmarks.md has the measurements).
//!
//! A slot lives as long as the [`Registration`] that filled it: the length of
//! the action, fetch or service. Afterwards, a method called on an object a
//! script kept raises "the transaction this object belongs to is over". A
//! slot's generation changes when it is reused, so a stale handle never
//! reaches a newer transaction; a value that is not a handle at all (a light
//! userdata from elsewhere) fails the lookup the same way.

use crate::lua::applet_http::HttpApplet;
use crate::lua::applet_tcp::TcpApplet;
use crate::lua::txn_access::TxnCell;
use mlua::{LightUserData, Value};
use std::cell::RefCell;
use std::rc::Rc;

/// What a slot holds.
pub enum Native {
    /// A transaction seen by an action or a fetch.
    Txn(Rc<TxnCell>),
    AppletHttp(Rc<HttpApplet>),
    AppletTcp(Rc<TcpApplet>),
}

/// The class of an object, part of its handle.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Kind {
    Txn = 1,
    Http,
    Fetches,
    Converters,
    ReqChannel,
    ResChannel,
    AppletHttp,
    AppletTcp,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Txn,
        Kind::Http,
        Kind::Fetches,
        Kind::Converters,
        Kind::ReqChannel,
        Kind::ResChannel,
        Kind::AppletHttp,
        Kind::AppletTcp,
    ];

    /// The kind whose code (`kind as u64`) is `code`.
    pub fn from_code(code: u64) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| *k as u64 == code)
    }

    /// The class name scripts see in errors.
    pub fn class_name(self) -> &'static str {
        match self {
            Kind::Txn => "TXN",
            Kind::Http => "HTTP",
            Kind::Fetches => "Fetches",
            Kind::Converters => "Converters",
            Kind::ReqChannel | Kind::ResChannel => "Channel",
            Kind::AppletHttp => "AppletHTTP",
            Kind::AppletTcp => "AppletTCP",
        }
    }
}

/// A slot of the handle table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    index: u32,
    generation: u32,
}

/// Slots are numbered on 24 bits (the rest of the handle's value holds the
/// generation and the kind).
const MAX_SLOTS: usize = 1 << 24;

impl Handle {
    /// The value stored at [0] of an object of class `kind`.
    pub fn with_kind(self, kind: Kind) -> LightUserData {
        let v = (u64::from(self.generation) << 32) | (u64::from(self.index) << 8) | kind as u64;
        LightUserData(v as usize as *mut std::ffi::c_void)
    }

    fn decode(p: LightUserData) -> Option<(Handle, Kind)> {
        let v = p.0 as usize as u64;
        let kind = Kind::from_code(v & 0xff)?;
        let handle = Handle {
            index: ((v >> 8) & 0xff_ffff) as u32,
            generation: (v >> 32) as u32,
        };
        Some((handle, kind))
    }
}

struct Slot {
    generation: u32,
    native: Option<Native>,
}

#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

thread_local! {
    /// The handle table of this worker (Lua states never leave their thread).
    static SLOTS: RefCell<Slots> = RefCell::new(Slots::default());
}

/// Keeps a native object reachable by handle until dropped.
pub struct Registration {
    handle: Handle,
}

impl Registration {
    /// Fills a slot with `native`.
    pub fn new(native: Native) -> mlua::Result<Registration> {
        SLOTS.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(index) = s.free.pop() {
                let slot = &mut s.slots[index as usize];
                slot.native = Some(native);
                let handle = Handle {
                    index,
                    generation: slot.generation,
                };
                return Ok(Registration { handle });
            }
            if s.slots.len() >= MAX_SLOTS {
                return Err(mlua::Error::runtime(
                    "too many Lua transactions in progress",
                ));
            }
            let index = s.slots.len() as u32;
            s.slots.push(Slot {
                generation: 1,
                native: Some(native),
            });
            Ok(Registration {
                handle: Handle {
                    index,
                    generation: 1,
                },
            })
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let native = SLOTS.with(|s| {
            let mut s = s.borrow_mut();
            let index = self.handle.index;
            let slot = &mut s.slots[index as usize];
            let native = slot.native.take();
            // Never 0, so that a zeroed value is never a live handle.
            slot.generation = slot.generation.wrapping_add(1).max(1);
            s.free.push(index);
            native
        });
        // Dropped outside the table's borrow: a native's drop may end a
        // transaction, which must not find the table borrowed.
        drop(native);
    }
}

fn bad(class: &str, method: &str, got: &str) -> String {
    format!("bad argument #1 to '{method}' ({class} expected, got {got})")
}

fn gone() -> String {
    "the transaction this object belongs to is over".to_string()
}

/// Resolves `this` for a method of a class among `kinds`; passes the kind
/// found, the handle and the slot's native object to `f`.
fn resolve<R>(
    this: &Value,
    kinds: &[Kind],
    method: &str,
    f: impl FnOnce(Kind, Handle, &Native) -> R,
) -> mlua::Result<R> {
    let found = match this {
        Value::Table(t) => match t.raw_get::<Value>(0) {
            Ok(Value::LightUserData(p)) => Some(p),
            _ => None,
        },
        _ => None,
    };
    resolve_value(found, || this.type_name(), kinds, method, f).map_err(mlua::Error::runtime)
}

/// [`resolve`] for the value at [0] of an object (`at0`) whose Lua type is
/// `type_name()` (asked for only in an error); errors are plain messages.
fn resolve_value<'a, R>(
    at0: Option<LightUserData>,
    type_name: impl FnOnce() -> &'a str,
    kinds: &[Kind],
    method: &str,
    f: impl FnOnce(Kind, Handle, &Native) -> R,
) -> Result<R, String> {
    let class = kinds[0].class_name();
    let Some((handle, kind)) = at0.and_then(Handle::decode) else {
        return Err(bad(class, method, type_name()));
    };
    if !kinds.contains(&kind) {
        return Err(bad(class, method, kind.class_name()));
    }
    SLOTS.with(|s| {
        let s = s.borrow();
        match s.slots.get(handle.index as usize) {
            Some(Slot {
                generation,
                native: Some(n),
            }) if *generation == handle.generation => Ok(f(kind, handle, n)),
            _ => Err(gone()),
        }
    })
}

fn cell_of(native: &Native) -> Rc<TxnCell> {
    match native {
        Native::Txn(c) => c.clone(),
        Native::AppletHttp(a) => a.cell.clone(),
        Native::AppletTcp(a) => a.cell.clone(),
    }
}

/// The transaction behind `this`, an object of class `kind`.
pub fn cell(this: &Value, kind: Kind, method: &str) -> mlua::Result<Rc<TxnCell>> {
    resolve(this, &[kind], method, |_, _, n| cell_of(n))
}

/// The transaction behind a Channel, and whether it is the response one.
pub fn channel(this: &Value, method: &str) -> mlua::Result<(Rc<TxnCell>, bool)> {
    resolve(
        this,
        &[Kind::ReqChannel, Kind::ResChannel],
        method,
        |kind, _, n| (cell_of(n), kind == Kind::ResChannel),
    )
}

/// For building the sub-object `key` (`txn.http`, `applet.sf`, ...) of the
/// object of class `parent` whose [0] is `at0`: the handle it shares, and
/// whether the transaction is an HTTP one. `type_name()` names what was
/// found instead of an object, for the error.
pub fn sub_object_of<'a>(
    at0: Option<LightUserData>,
    type_name: impl FnOnce() -> &'a str,
    parent: Kind,
    key: &str,
) -> Result<(Handle, bool), String> {
    resolve_value(at0, type_name, &[parent], key, |_, handle, native| {
        let http = cell_of(native)
            .with(|t| t.mode == crate::txn::TxnMode::Http)
            .unwrap_or(false);
        (handle, http)
    })
}

/// The AppletHTTP behind `this`.
pub fn applet_http(this: &Value, method: &str) -> mlua::Result<Rc<HttpApplet>> {
    resolve(this, &[Kind::AppletHttp], method, |_, _, n| match n {
        Native::AppletHttp(a) => Some(a.clone()),
        _ => None,
    })?
    .ok_or_else(|| mlua::Error::runtime(gone()))
}

/// The AppletHTTP behind argument 1 of a C function (see lua/raw.rs).
///
/// # Safety
/// `state` is the running state of a C function.
pub unsafe fn applet_http_arg(
    state: *mut mlua::ffi::lua_State,
    method: &str,
) -> Result<Rc<HttpApplet>, String> {
    // SAFETY: reads of argument 1 only.
    let at0 = unsafe { crate::lua::raw::self_handle(state) };
    // SAFETY: as above.
    let type_name = || unsafe { crate::lua::raw::type_name(state, 1) };
    resolve_value(
        at0,
        type_name,
        &[Kind::AppletHttp],
        method,
        |_, _, n| match n {
            Native::AppletHttp(a) => Some(a.clone()),
            _ => None,
        },
    )?
    .ok_or_else(gone)
}

/// The AppletTCP behind `this`.
pub fn applet_tcp(this: &Value, method: &str) -> mlua::Result<Rc<TcpApplet>> {
    resolve(this, &[Kind::AppletTcp], method, |_, _, n| match n {
        Native::AppletTcp(a) => Some(a.clone()),
        _ => None,
    })?
    .ok_or_else(|| mlua::Error::runtime(gone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T>(r: mlua::Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn handles_round_trip_and_go_stale() {
        let lua = mlua::Lua::new();
        let cell = TxnCell::owned(Box::new(crate::txn::Txn::new(
            crate::txn::TxnMode::Http,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            std::sync::Arc::from("fe"),
            1,
        )));
        let reg = Registration::new(Native::Txn(cell.clone())).unwrap();
        let obj = lua.create_table().unwrap();
        obj.raw_set(0, reg.handle().with_kind(Kind::Http)).unwrap();
        let v = Value::Table(obj);
        assert!(Rc::ptr_eq(
            &super::cell(&v, Kind::Http, "m").unwrap(),
            &cell
        ));
        // Another class's method refuses it, naming both classes.
        let e = err(super::cell(&v, Kind::Txn, "get_var"));
        assert!(
            e.contains("bad argument #1 to 'get_var' (TXN expected, got HTTP)"),
            "{e}"
        );
        let e = err(super::cell(&Value::Integer(3), Kind::Txn, "m"));
        assert!(e.contains("(TXN expected, got integer)"), "{e}");
        // The slot is reused by the next registration, under a new
        // generation: the old handle is stale, not redirected.
        drop(reg);
        let other = TxnCell::owned(Box::new(crate::txn::Txn::new(
            crate::txn::TxnMode::Http,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            std::sync::Arc::from("fe"),
            1,
        )));
        let reg2 = Registration::new(Native::Txn(other)).unwrap();
        assert_eq!(reg2.handle().index, 0);
        let e = err(super::cell(&v, Kind::Http, "m"));
        assert!(
            e.contains("the transaction this object belongs to is over"),
            "{e}"
        );
        // A light userdata that is no handle at all.
        let fake = lua.create_table().unwrap();
        fake.raw_set(0, LightUserData(0x5 as *mut _)).unwrap();
        assert!(super::cell(&Value::Table(fake), Kind::Txn, "m").is_err());
    }
}
