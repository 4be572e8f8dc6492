//! The Lua `Queue` class (`core.queue()`): a FIFO of Lua values shared by
//! the coroutines and tasks of one state, and `core.wait([ms])`.
//!
//! `pop_wait()` waits without blocking the worker until an item arrives;
//! `alarm()` (HAProxy 3.2) arms a one-shot wake-up of the calling context
//! for the next push, which `core.wait()` waits for (wake.rs).
//!
//! A state lives on one worker, so a queue is only ever used from one
//! thread; items are kept as Lua values (registry references, as HAProxy
//! keeps them).

use crate::lua::class::{native, Class};
use crate::lua::wake::Wake;
use mlua::{Lua, MultiValue, Table, Value};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::Notify;

/// The native side of a Queue object.
#[derive(Default)]
pub struct QueueInner {
    items: RefCell<VecDeque<Value>>,
    /// Wakes the coroutines waiting in `pop_wait()`.
    arrived: Notify,
    /// Contexts that armed `alarm()`: each is woken once, by the next push.
    alarms: RefCell<Vec<Wake>>,
}

impl QueueInner {
    fn push(&self, v: Value) {
        self.items.borrow_mut().push_back(v);
        self.arrived.notify_waiters();
        for w in self.alarms.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn pop(&self) -> Option<Value> {
        self.items.borrow_mut().pop_front()
    }
}

/// The userdata at [0] of a Queue object.
pub struct QueueObj {
    inner: Rc<QueueInner>,
}

fn queue(this: &Value, method: &str) -> mlua::Result<Rc<QueueInner>> {
    Ok(native::<QueueObj>(this, "Queue", method)?.inner.clone())
}

/// The running context's wake-up handle, or HAProxy's error for a context
/// that cannot wait.
fn waiting_context(what: &str) -> mlua::Result<Wake> {
    crate::lua::wake::current().ok_or_else(|| {
        mlua::Error::runtime(format!(
            "{what} may only be used within task context (requires yielding)"
        ))
    })
}

/// Adds `core.queue`, `core.wait` and the Queue class.
pub fn install(lua: &Lua, core: &Table) -> mlua::Result<()> {
    let class = Class::new(lua, "Queue")?;
    // HAProxy's queues print as the plain tables they are.
    class.meta.raw_set("__tostring", Value::Nil)?;
    class.method(
        "size",
        lua.create_function(|_, this: Value| Ok(queue(&this, "size")?.items.borrow().len()))?,
    )?;
    class.method(
        "push",
        lua.create_function(|_, args: MultiValue| {
            if args.len() != 2 || args[1].is_nil() {
                return Err(mlua::Error::runtime("unexpected argument"));
            }
            let mut args = args.into_vec();
            let item = args.pop().unwrap_or(Value::Nil);
            queue(&args[0], "push")?.push(item);
            Ok(true)
        })?,
    )?;
    class.method(
        "pop",
        lua.create_function(|_, this: Value| Ok(queue(&this, "pop")?.pop()))?,
    )?;
    class.method(
        "pop_wait",
        lua.create_async_function(|_, this: Value| async move {
            let q = queue(&this, "pop_wait")?;
            if let Some(v) = q.pop() {
                return Ok(v);
            }
            waiting_context("pop_wait()")?;
            loop {
                // Registered before the check, so a push in between is seen.
                let arrived = q.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                if let Some(v) = q.pop() {
                    return Ok(v);
                }
                arrived.await;
            }
        })?,
    )?;
    class.method(
        "alarm",
        lua.create_function(|_, this: Value| {
            let q = queue(&this, "alarm")?;
            let wake = waiting_context("alarm()")?;
            q.alarms.borrow_mut().push(wake);
            Ok(())
        })?,
    )?;
    core.set(
        "queue",
        lua.create_function(move |lua, ()| {
            class.instantiate(
                lua,
                QueueObj {
                    inner: Rc::new(QueueInner::default()),
                },
            )
        })?,
    )?;
    core.set(
        "wait",
        lua.create_async_function(|_, ms: Option<Value>| async move {
            let timeout = match ms {
                None | Some(Value::Nil) => None,
                Some(Value::Integer(n)) => Some(Duration::from_millis(n.max(0) as u64)),
                Some(Value::Number(n)) if n.fract() == 0.0 => {
                    Some(Duration::from_millis(n.max(0.0) as u64))
                }
                Some(other) => {
                    return Err(mlua::Error::runtime(format!(
                        "bad argument #1 to 'wait' (number expected, got {})",
                        other.type_name()
                    )))
                }
            };
            let wake = waiting_context("core.wait()")?;
            wake.wait(timeout).await;
            Ok(())
        })?,
    )?;
    Ok(())
}
