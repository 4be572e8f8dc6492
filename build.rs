//! Build script of the root package (tests and benchmarks): builds the
//! reference C modules the benchmarks compare with, so that they come from
//! the same build and compiler as everything else: `refconcat.so`
//! (concat/reference/refconcat.c, for `cargo bench --bench concat`) and
//! `refcalls.so` (benches/calls/refcalls.c, for `cargo bench --bench calls`).
//!
//! The module is compiled against the headers of the Lua that lua-src ships
//! (the one luahost-ffi builds), found by building lua-src here: a native
//! module needs only the headers, and the Lua 5.4 ABI is the same across
//! 5.4 releases, so the .so loads in the stock lua5.4 and in luahost alike.
//! Their paths reach the benches as the compile-time variables
//! `LUAHOST_REFCONCAT_SO` and `LUAHOST_REFCALLS_SO`.

use std::env;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));

    let lua = lua_src::Build::new()
        .out_dir(out.join("lua"))
        .build(lua_src::Version::Lua54);

    for (source, name, var) in [
        (
            "concat/reference/refconcat.c",
            "refconcat.so",
            "LUAHOST_REFCONCAT_SO",
        ),
        (
            "benches/calls/refcalls.c",
            "refcalls.so",
            "LUAHOST_REFCALLS_SO",
        ),
    ] {
        let source = manifest.join(source);
        let so = out.join(name);
        compile_module(&source, lua.include_dir(), &so);
        println!("cargo:rustc-env={var}={}", so.display());
        println!("cargo:rerun-if-changed={}", source.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// Compiles one C source file into a Lua module (a shared object that takes
/// the Lua API from the interpreter that loads it).
fn compile_module(source: &std::path::Path, include: &std::path::Path, so: &std::path::Path) {
    // cc knows the compiler and flags for the target; a shared object needs
    // a direct compiler invocation (cc::Build makes static archives).
    let compiler = cc::Build::new()
        .opt_level(2)
        .pic(true)
        .warnings(true)
        .get_compiler();
    let mut cmd = compiler.to_command();
    cmd.arg("-shared")
        .arg("-I")
        .arg(include)
        .arg(source)
        .arg("-o")
        .arg(so);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler ({cmd:?}): {e}"));
    assert!(
        status.success(),
        "compiling {} failed: {cmd:?}",
        source.display()
    );
}
