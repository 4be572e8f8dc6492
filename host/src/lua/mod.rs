//! The Lua side of the host: states, the `core` API, the classes, and the
//! machinery that runs Lua as preemptible, budgeted coroutines.

pub mod applet_http;
pub mod applet_tcp;
pub mod blocking;
pub mod class;
pub mod core_api;
pub mod core_util;
pub mod errors;
pub mod exec;
pub mod memory;
pub mod state;
pub mod vars;
