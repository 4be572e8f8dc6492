//! The Lua side of the host: states, the `core` API, the classes, and the
//! machinery that runs Lua as preemptible, budgeted coroutines.

pub mod action;
pub mod applet_http;
pub mod applet_tcp;
pub mod blocking;
pub mod body_reader;
pub mod bytecode;
pub mod channel_class;
pub mod class;
pub mod core_api;
pub mod core_util;
pub mod coroutines;
pub mod debug_hooks;
pub mod errors;
pub mod exec;
pub mod fetches_class;
pub mod handles;
pub mod http_class;
pub mod httpclient_class;
pub mod long_calls;
pub mod map_class;
pub mod memory;
pub mod native_async;
pub mod raw;
pub mod regex_class;
pub mod sample_bridge;
pub mod state;
pub mod txn_access;
pub mod txn_class;
pub mod txn_methods;
pub mod vars;
