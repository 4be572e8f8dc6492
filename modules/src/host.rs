//! What a native function can ask of the host it runs in (luahost, through
//! [`crate::host_abi`]): the running context's budget, whether to return to
//! Lua soon, and memory charged to `tune.lua.maxmem`.
//!
//! Under a Lua without the luahost contract (the stock `lua5.4`) there is no
//! budget: [`should_yield`] is always false, [`budget`] is `None`, and memory
//! charges always succeed.

use std::sync::atomic::{AtomicPtr, Ordering};

use mlua::Lua;

use crate::error::{Error, Result};
use crate::host_abi::{self, BudgetV1, HostApiV1};

/// The host API once found: it is one static of the host process, so any
/// state's answer holds for all.
static API: AtomicPtr<HostApiV1> = AtomicPtr::new(std::ptr::null_mut());

/// The host API, if `lua`'s host provides it.
pub(crate) fn api(lua: &Lua) -> Option<&'static HostApiV1> {
    let cached = API.load(Ordering::Acquire);
    // SAFETY: only pointers returned by host_abi::lookup are stored; they
    // point at a struct that lives for the process.
    if let Some(api) = unsafe { cached.cast_const().as_ref() } {
        return Some(api);
    }
    let mut found: Option<&'static HostApiV1> = None;
    // SAFETY: exec_raw runs the closure on the running state, in protected
    // mode, with stack space for the lookup's one value.
    let _ = unsafe {
        lua.exec_raw::<()>((), |state| {
            found = host_abi::lookup(state);
        })
    };
    if let Some(api) = found {
        API.store((api as *const HostApiV1).cast_mut(), Ordering::Release);
    }
    found
}

/// True when a long computation should return to Lua soon, so that the host
/// can preempt the context: it is out of budget, or its current
/// uninterrupted run has lasted long enough that a forced yield is due (see
/// docs/modules.md). A native function cannot yield itself: it returns what
/// it has (and, e.g., a "call me again" value) and lets the Lua caller loop.
pub fn should_yield(lua: &Lua) -> bool {
    match api(lua) {
        // SAFETY: a host function of the contract; it does not unwind.
        Some(api) => unsafe { (api.should_yield)() != 0 },
        None => false,
    }
}

/// The running context's budget, when a host context is running.
pub fn budget(lua: &Lua) -> Option<BudgetV1> {
    let api = api(lua)?;
    let mut out = BudgetV1::default();
    // SAFETY: `out` is a valid BudgetV1 for the call.
    (unsafe { (api.budget)(&mut out) } != 0).then_some(out)
}

/// Bytes charged to the host's Lua memory cap (`tune.lua.maxmem`) for as
/// long as the value lives, as if Lua had allocated them.
///
/// A refused charge first runs a full collection and tries again, as Lua
/// does for its own allocations: Lua's collector does not see these bytes,
/// so objects holding them may be garbage that only a collection returns.
pub struct MemoryCharge {
    api: Option<&'static HostApiV1>,
    bytes: usize,
    lua: mlua::WeakLua,
}

impl MemoryCharge {
    /// Charges `bytes`; fails with Lua's own "not enough memory" message
    /// when that would pass the cap.
    pub fn new(lua: &Lua, bytes: usize) -> Result<MemoryCharge> {
        let api = api(lua);
        let mut charge = MemoryCharge {
            api,
            bytes: 0,
            lua: lua.weak(),
        };
        charge.grow(bytes)?;
        Ok(charge)
    }

    /// Charges `bytes` more.
    pub fn grow(&mut self, bytes: usize) -> Result<()> {
        if let Some(api) = self.api {
            // SAFETY: a host function of the contract; it does not unwind.
            let charge = || unsafe { (api.mem_charge)(bytes) } != 0;
            if !charge() {
                // The emergency collection; its finalizers may give back
                // charges of collected objects.
                if let Some(lua) = self.lua.try_upgrade() {
                    let _ = lua.gc_collect();
                }
                if !charge() {
                    return Err(Error::message("not enough memory"));
                }
            }
        }
        self.bytes += bytes;
        Ok(())
    }

    /// Gives back `bytes` (at most what is charged).
    pub fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        if let Some(api) = self.api {
            // SAFETY: as in grow; these bytes were charged by this value.
            unsafe { (api.mem_uncharge)(bytes) };
        }
        self.bytes -= bytes;
    }

    /// Bytes charged now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl std::fmt::Debug for MemoryCharge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCharge")
            .field("bytes", &self.bytes)
            .field("host", &self.api.is_some())
            .finish()
    }
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        self.shrink(self.bytes);
    }
}

/// A byte buffer whose capacity is charged to the host's Lua memory cap:
/// a module that builds large values (like the concat builder) stays under
/// `tune.lua.maxmem` with the scripts.
#[derive(Debug)]
pub struct TrackedBuffer {
    bytes: Vec<u8>,
    charge: MemoryCharge,
}

impl TrackedBuffer {
    /// An empty buffer with room for `capacity` bytes, charged now.
    pub fn with_capacity(lua: &Lua, capacity: usize) -> Result<TrackedBuffer> {
        let charge = MemoryCharge::new(lua, capacity)?;
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(capacity)
            .map_err(|_| Error::message("not enough memory"))?;
        Ok(TrackedBuffer { bytes, charge })
    }

    /// Appends `data`, charging any growth of the capacity first.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> Result<()> {
        let needed = self.bytes.len().saturating_add(data.len());
        if needed > self.bytes.capacity() {
            let target = needed.max(self.bytes.capacity().saturating_mul(2));
            let extra = target - self.bytes.capacity();
            self.charge.grow(extra)?;
            if self.bytes.try_reserve_exact(extra).is_err() {
                self.charge.shrink(extra);
                return Err(Error::message("not enough memory"));
            }
            // The allocator may round up; charge what was really reserved.
            let real = self.bytes.capacity();
            if real > self.charge.bytes() {
                self.charge.grow(real - self.charge.bytes())?;
            }
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes charged to the cap (the capacity).
    pub fn charged(&self) -> usize {
        self.charge.bytes()
    }
}
