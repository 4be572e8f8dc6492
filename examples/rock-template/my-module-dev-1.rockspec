-- LuaRocks rockspec for a Rust module built with cargo. From this directory,
-- offline, into a local tree:
--
--   luarocks make --tree ./lua_modules --lua-version 5.4
--   eval "$(luarocks path --tree ./lua_modules --lua-version 5.4)"
--   lua5.4 -e 'print(require("my_module").greet("you"))'
--
-- cargo names the library libmy_module.so; the install command copies it
-- into the rock as my_module.so, the file require "my_module" looks for.
-- CARGO_TARGET_DIR, when set, is where cargo builds (and the file is taken
-- from); otherwise ./target.
rockspec_format = "3.0"
package = "my-module"
version = "dev-1"

-- `luarocks make` builds the directory it runs in. `luarocks build` and
-- `luarocks pack` fetch this URL: point it at your repository (for example
-- "git+https://example.org/you/my-module.git", with `tag` for a release).
source = {
   url = "file://.",
}

description = {
   summary = "A Lua 5.4 module written in Rust",
   license = "MIT",
}

dependencies = {
   "lua >= 5.4, < 5.5",
}

build = {
   type = "command",
   build_command = [[cargo build --release --lib --target-dir "${CARGO_TARGET_DIR:-target}"]],
   install_command = [[cp "${CARGO_TARGET_DIR:-target}/release/libmy_module.so" "$(LIBDIR)/my_module.so"]],
}
