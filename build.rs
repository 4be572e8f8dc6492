//! Build script of the root package (tests and benchmarks): builds the
//! reference C module `refconcat.so` (concat/reference/refconcat.c) that
//! `cargo bench --bench concat` compares the concat crate with, so that the
//! reference comes from the same build and compiler as everything else.
//!
//! The module is compiled against the headers of the Lua that lua-src ships
//! (the one luahost-ffi builds), found by building lua-src here: a native
//! module needs only the headers, and the Lua 5.4 ABI is the same across
//! 5.4 releases, so the .so loads in the stock lua5.4 and in luahost alike.
//! Its path reaches the bench as the compile-time variable
//! `LUAHOST_REFCONCAT_SO`.

use std::env;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let source = manifest.join("concat/reference/refconcat.c");

    let lua = lua_src::Build::new()
        .out_dir(out.join("lua"))
        .build(lua_src::Version::Lua54);

    // cc knows the compiler and flags for the target; a shared object needs
    // a direct compiler invocation (cc::Build makes static archives).
    let compiler = cc::Build::new()
        .opt_level(2)
        .pic(true)
        .warnings(true)
        .get_compiler();
    let so = out.join("refconcat.so");
    let mut cmd = compiler.to_command();
    cmd.arg("-shared")
        .arg("-I")
        .arg(lua.include_dir())
        .arg(&source)
        .arg("-o")
        .arg(&so);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler ({cmd:?}): {e}"));
    assert!(
        status.success(),
        "compiling {} failed: {cmd:?}",
        source.display()
    );

    println!("cargo:rustc-env=LUAHOST_REFCONCAT_SO={}", so.display());
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed=build.rs");
}
