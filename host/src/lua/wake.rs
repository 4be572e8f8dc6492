//! Waking a Lua context that waits in `core.wait()`.
//!
//! Every running context (action, service, task, init function, event
//! callback) can get a [`Wake`] handle for itself while its Lua code runs:
//! [`current`]. Whoever holds the handle may call [`Wake::wake`] later,
//! from any thread; the context's next or pending `core.wait()` then
//! returns. A wake-up sent while the context is not waiting is kept (one
//! at most) and ends its next `core.wait()` at once, so a wake-up that
//! races with the call is never lost.
//!
//! Users: `Queue:alarm()` (queue_class.rs) keeps the handle of the context
//! that armed it and wakes it on the next push. An event source (e.g.
//! `core.event_sub`) wakes the context that subscribed the same way: call
//! [`current`] while that context runs (at subscription), keep the handle,
//! and call `wake()` when an event is delivered.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The wake-up handle of one Lua context. Cheap to clone; `Send + Sync`.
#[derive(Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    /// Wakes the context's pending `core.wait()`, or the next one.
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Waits until woken, or until `timeout` has passed when given.
    pub async fn wait(&self, timeout: Option<Duration>) {
        match timeout {
            Some(d) => {
                let _ = tokio::time::timeout(d, self.0.notified()).await;
            }
            None => self.0.notified().await,
        }
    }
}

/// The handle of the context whose Lua code runs on this thread now; None
/// outside of one (a state's body) or in a context that cannot wait (a
/// sample fetch or converter).
pub fn current() -> Option<Wake> {
    crate::lua::exec::with_current(|ctx| ctx.filter(|c| c.yieldable()).map(|c| c.wake()))
}
