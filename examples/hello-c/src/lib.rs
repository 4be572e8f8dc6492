//! `hello`: an example Lua module written in C (hello.c), compiled by this
//! package's build script with the `cc` crate into `target/<profile>/hello.so`.
//!
//! It shows that C modules load in luahost as in the stock interpreter:
//! `require "hello"` with `target/<profile>/?.so` in package.cpath. The Rust
//! library itself is empty.

/// The file the build script produces in `target/<profile>/`.
pub const MODULE_FILE: &str = "hello.so";
