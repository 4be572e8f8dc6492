//! Compiles hello.c into the Lua C module `hello.so` with the compiler and
//! flags the `cc` crate picks for the target, and puts it in
//! `target/<profile>/hello.so`, next to the binaries and cdylibs cargo makes,
//! where tests and users find it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = manifest.join("hello.c");

    // The Lua headers. lua-src also compiles the library; it is not linked:
    // a module must take lua_* from the interpreter that loads it.
    let lua = lua_src::Build::new()
        .out_dir(out_dir.join("lua"))
        .build(lua_src::Version::Lua54);

    // cc knows the target's compiler and flags (-fPIC, -m64, optimisation,
    // CC/CFLAGS from the environment); it only builds static archives itself,
    // so drive the compiler to link a shared object.
    let compiler = cc::Build::new()
        .try_get_compiler()
        .unwrap_or_else(|e| panic!("no C compiler for this target: {e}"));
    let built = out_dir.join("hello.so");
    let mut cmd: Command = compiler.to_command();
    cmd.arg("-shared")
        .arg("-fvisibility=hidden")
        .arg("-Wall")
        .arg("-Wextra")
        .arg("-I")
        .arg(lua.include_dir())
        .arg("-o")
        .arg(&built)
        .arg(&source);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cmd:?}: {e}"));
    assert!(
        status.success(),
        "compiling {} failed: {cmd:?}",
        source.display()
    );

    // OUT_DIR is target/<profile>/build/hello-c-<hash>/out.
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        install(&built, &profile_dir.join("hello.so"));
    }

    println!("cargo:rerun-if-changed=hello.c");
    println!("cargo:rerun-if-changed=build.rs");
}

/// Copies through a temporary name and renames, so a reader never sees a
/// half-written module (and a running process keeps its mapped old copy).
fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("so.tmp");
    std::fs::copy(from, &tmp).unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, to).unwrap_or_else(|e| panic!("cannot write {}: {e}", to.display()));
}
