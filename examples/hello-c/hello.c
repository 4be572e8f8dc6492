/*
 * hello: a minimal Lua 5.4 module in C.
 *
 *   local hello = require "hello"
 *   print(hello.greet("world"))   --> hello from C, world!
 *   print(hello.add(2, 3))        --> 5
 *
 * The module uses only the Lua C API (lua_*, luaL_*): it is compiled
 * against the headers and linked against nothing, so the running
 * interpreter (luahost, or lua5.4) provides those functions when the file
 * is loaded. Only the entry point is exported (-fvisibility=hidden).
 */
#include "lua.h"
#include "lauxlib.h"

static int hello_greet(lua_State *L) {
  const char *who = luaL_checkstring(L, 1);
  lua_pushfstring(L, "hello from C, %s!", who);
  return 1;
}

static int hello_add(lua_State *L) {
  lua_Integer a = luaL_checkinteger(L, 1);
  lua_Integer b = luaL_checkinteger(L, 2);
  /* Lua integers wrap around; signed overflow in C would be undefined. */
  lua_pushinteger(L, (lua_Integer)((lua_Unsigned)a + (lua_Unsigned)b));
  return 1;
}

static const luaL_Reg hello_functions[] = {
  {"greet", hello_greet},
  {"add", hello_add},
  {NULL, NULL}
};

__attribute__((visibility("default")))
int luaopen_hello(lua_State *L) {
  luaL_newlib(L, hello_functions);
  lua_pushliteral(L, "C");
  lua_setfield(L, -2, "language");
  return 1;
}
