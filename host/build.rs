//! Exports the Lua C API from the `luahost` executable so that native modules
//! loaded with `require` (dlopen) resolve `lua_*`/`luaL_*` against the Lua
//! linked into the host. A dynamic list exports only those symbols instead of
//! every symbol of the binary (`--export-dynamic`). Link arguments from a
//! dependency's build script do not reach the binary, hence this file.
fn main() {
    let list = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("lua-api.list");
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--dynamic-list={}",
        list.display()
    );
    println!("cargo:rerun-if-changed=lua-api.list");
    println!("cargo:rerun-if-changed=build.rs");
}
