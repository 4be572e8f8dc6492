-- LuaRocks packaging of the C example module (docs/modules.md, "Packaging
-- with LuaRocks"). LuaRocks' builtin backend compiles hello.c itself, with
-- the Lua 5.4 headers it finds (Debian: liblua5.4-dev), into hello.so:
--
--   luarocks make --tree ./lua_modules --lua-version 5.4
--   eval "$(luarocks path --tree ./lua_modules --lua-version 5.4)"
--   lua5.4 -e 'print(require("hello").greet("you"))'
rockspec_format = "3.0"
package = "hello-c"
version = "dev-1"

-- `luarocks make` builds the directory it runs in; `source` is required by
-- the rockspec format but only `luarocks build` and `pack` fetch it.
source = {
   url = "file://.",
}

description = {
   summary = "Example Lua 5.4 module written in C",
   license = "MIT",
}

dependencies = {
   "lua >= 5.4, < 5.5",
}

build = {
   type = "builtin",
   modules = {
      hello = "hello.c",
   },
}
