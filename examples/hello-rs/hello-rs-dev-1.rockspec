-- LuaRocks packaging of the example module (docs/modules.md, "Packaging
-- with LuaRocks"). Offline, into a local tree, from this directory:
--
--   luarocks make --tree ./lua_modules --lua-version 5.4
--   eval "$(luarocks path --tree ./lua_modules --lua-version 5.4)"
--   lua5.4 -e 'print(require("hello_rs").greet("you"))'
--
-- cargo builds the cdylib, which it names libhello_rs.so; the install step
-- copies it into the rock as hello_rs.so, the file require "hello_rs" looks
-- for. Set CARGO_TARGET_DIR to build in an existing target directory (for
-- example the workspace's own, to build incrementally); otherwise cargo
-- builds in ./target.
rockspec_format = "3.0"
package = "hello-rs"
version = "dev-1"

-- `luarocks make` builds the directory it runs in; `source` is required by
-- the rockspec format but only `luarocks build` and `pack` fetch it.
source = {
   url = "file://.",
}

description = {
   summary = "Example Lua 5.4 module written in Rust with the luahost-modules toolkit",
   license = "MIT",
}

dependencies = {
   "lua >= 5.4, < 5.5",
}

build = {
   type = "command",
   build_command = [[cargo build --release --lib --target-dir "${CARGO_TARGET_DIR:-target}"]],
   install_command = [[cp "${CARGO_TARGET_DIR:-target}/release/libhello_rs.so" "$(LIBDIR)/hello_rs.so"]],
}
