/*
 * refcalls: the hand-written C peers of `cargo bench --bench calls`.
 *
 *   bare()        does nothing: the cost of calling a C function at all.
 *   check(s, i)   #s + i, reading s with luaL_checklstring and i with
 *                 luaL_checkinteger.
 *   new(n)        an object in HAProxy's layout: a table whose [0] is a
 *                 userdata holding the counter, with a metatable whose
 *                 __index is the methods table.
 *   o:add([n])    adds n (default 1) and returns the sum, fetching its
 *                 counter from [0] with luaL_checkudata, as HAProxy's C
 *                 methods fetch theirs.
 *
 * Built by the root package's build.rs against the Lua 5.4 headers and
 * linked against nothing: the interpreter provides the API.
 */
#include "lua.h"
#include "lauxlib.h"

#define COUNTER_NATIVE "refcalls.Counter.native"
#define COUNTER_CLASS "refcalls.Counter"

typedef struct {
  lua_Integer value;
} Counter;

static int bare(lua_State *L) {
  (void)L;
  return 0;
}

static int check(lua_State *L) {
  size_t len;
  luaL_checklstring(L, 1, &len);
  lua_Integer i = luaL_checkinteger(L, 2);
  lua_pushinteger(L, (lua_Integer)len + i);
  return 1;
}

static int counter_new(lua_State *L) {
  lua_Integer start = luaL_optinteger(L, 1, 0);
  lua_createtable(L, 0, 1);
  Counter *c = (Counter *)lua_newuserdatauv(L, sizeof(Counter), 0);
  c->value = start;
  luaL_setmetatable(L, COUNTER_NATIVE);
  lua_rawseti(L, -2, 0);
  luaL_setmetatable(L, COUNTER_CLASS);
  return 1;
}

static int counter_add(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_rawgeti(L, 1, 0);
  Counter *c = (Counter *)luaL_checkudata(L, -1, COUNTER_NATIVE);
  lua_Integer n = luaL_optinteger(L, 2, 1);
  /* Lua integers wrap around; signed overflow in C would be undefined. */
  c->value = (lua_Integer)((lua_Unsigned)c->value + (lua_Unsigned)n);
  lua_pushinteger(L, c->value);
  return 1;
}

static const luaL_Reg functions[] = {
  {"bare", bare},
  {"check", check},
  {"new", counter_new},
  {NULL, NULL}
};

static const luaL_Reg methods[] = {
  {"add", counter_add},
  {NULL, NULL}
};

__attribute__((visibility("default")))
int luaopen_refcalls(lua_State *L) {
  luaL_newmetatable(L, COUNTER_NATIVE);
  lua_pop(L, 1);
  luaL_newmetatable(L, COUNTER_CLASS);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, functions);
  return 1;
}
