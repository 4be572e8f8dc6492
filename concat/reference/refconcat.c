/*
 * refconcat: the reference point for benches/concat.rs, built with cc by the
 * root package's build.rs. It is not shipped.
 *
 * It is the leanest string builder that still has one Lua->C call per piece
 * and is safe to use: what "the practical limit of a per-call design" means
 * in the benchmark's table. Same object layout and same hot path as the
 * concat crate (a table holding its methods, the buffer at [0], one C
 * closure per builder whose upvalue is the buffer, and an identity check
 * of self by address), but none of the rest: one piece per call, a single
 * contiguous buffer that doubles (so growth copies earlier data), no
 * memory accounting, no recovery from allocation failure beyond an error.
 *
 *   local refconcat = require("refconcat")
 *   local b = refconcat.new(); b:add("x"); local s = b:dump()
 */
#include <string.h>

#include "lauxlib.h"
#include "lua.h"

typedef struct {
  char *data;
  size_t len, cap;
  const void *owner; /* address of the builder table, for the self check */
} RefBuf;

/* Grows the buffer through the state's allocator to hold n more bytes. */
static void ref_grow(lua_State *L, RefBuf *b, size_t n) {
  void *ud;
  lua_Alloc alloc = lua_getallocf(L, &ud);
  size_t cap = b->cap ? b->cap * 2 : 1024;
  char *data;
  if (n > (size_t)-1 / 2 - b->len) luaL_error(L, "not enough memory");
  while (cap < b->len + n) cap *= 2;
  data = (char *)alloc(ud, b->data, b->data ? b->cap : 0, cap);
  if (data == NULL) luaL_error(L, "not enough memory");
  b->data = data;
  b->cap = cap;
}

/* b:add(s): upvalue 1 is the buffer, upvalue 2 the builder table. */
static int ref_add(lua_State *L) {
  RefBuf *b = (RefBuf *)lua_touserdata(L, lua_upvalueindex(1));
  size_t n;
  const char *s;
  if (lua_topointer(L, 1) != b->owner || lua_gettop(L) != 2)
    return luaL_error(L, "refconcat: use b:add(s), one string at a time");
  s = lua_tolstring(L, 2, &n);
  if (s == NULL) return luaL_typeerror(L, 2, "string");
  if (n > b->cap - b->len) ref_grow(L, b, n);
  memcpy(b->data + b->len, s, n);
  b->len += n;
  return 0;
}

/* The buffer of self ([0]); upvalue 1 is the buffer metatable. */
static RefBuf *ref_self(lua_State *L) {
  RefBuf *b = NULL;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_rawgeti(L, 1, 0);
  if (lua_getmetatable(L, -1)) {
    if (lua_rawequal(L, -1, lua_upvalueindex(1))) b = (RefBuf *)lua_touserdata(L, -2);
    lua_pop(L, 1);
  }
  if (b == NULL) luaL_argerror(L, 1, "refconcat builder expected");
  return b;
}

static int ref_dump(lua_State *L) {
  RefBuf *b = ref_self(L);
  lua_pushlstring(L, b->data ? b->data : "", b->len);
  return 1;
}

static int ref_gc(lua_State *L) {
  RefBuf *b = (RefBuf *)lua_touserdata(L, 1);
  if (b != NULL && lua_rawlen(L, 1) == sizeof(RefBuf) && b->data != NULL) {
    void *ud;
    lua_Alloc alloc = lua_getallocf(L, &ud);
    alloc(ud, b->data, b->cap, 0);
    b->data = NULL;
    b->len = b->cap = 0;
  }
  return 0;
}

/* refconcat.new(); upvalue 1: buffer metatable, upvalue 2: the dump method. */
static int ref_new(lua_State *L) {
  RefBuf *b;
  lua_createtable(L, 0, 3);
  b = (RefBuf *)lua_newuserdatauv(L, sizeof(RefBuf), 0);
  b->data = NULL;
  b->len = b->cap = 0;
  b->owner = lua_topointer(L, -2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, 0);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, ref_add, 2); /* upvalues: buffer, table */
  lua_setfield(L, -2, "add");
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_setfield(L, -2, "dump");
  return 1;
}

int luaopen_refconcat(lua_State *L) {
  lua_createtable(L, 0, 1);
  lua_createtable(L, 0, 1); /* buffer metatable */
  lua_pushcfunction(L, ref_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, ref_dump, 1);
  lua_pushcclosure(L, ref_new, 2);
  lua_setfield(L, -2, "new");
  return 1;
}
