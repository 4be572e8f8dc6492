-- Lua sample fetches and converters of the differential group
-- "lua_samples", used from the configuration. Lua 5.3 compatible.

-- Arguments written in the configuration arrive as strings after the txn.
core.register_fetches("join", function(txn, a, b)
  return tostring(a) .. "+" .. tostring(b)
end)

core.register_fetches("nargs", function(txn, ...)
  return select("#", ...)
end)

-- Lua values of every type, converted to samples: numbers become integers,
-- booleans booleans, strings strings, anything else the boolean false.
core.register_fetches("ret_nil", function(txn) return nil end)
core.register_fetches("ret_int", function(txn) return 42 end)
core.register_fetches("ret_neg", function(txn) return -7 end)
core.register_fetches("ret_float", function(txn) return 2.75 end)
core.register_fetches("ret_true", function(txn) return true end)
core.register_fetches("ret_false", function(txn) return false end)
core.register_fetches("ret_table", function(txn) return { 1, 2 } end)
core.register_fetches("ret_func", function(txn) return print end)
core.register_fetches("ret_empty", function(txn) return "" end)
core.register_fetches("ret_none", function(txn) end)

-- A fetch that reads the request through txn.
core.register_fetches("host_path", function(txn)
  return txn.sf:req_fhdr("host") .. txn.sf:path()
end)

-- A fetch that fails with a runtime error.
core.register_fetches("broken", function(txn)
  error("fetch failed on purpose")
end)

-- Converters get the input as a string, then the arguments.
core.register_converters("wrap", function(s, a, b)
  return "[" .. s .. "|" .. tostring(a) .. "|" .. tostring(b) .. "]"
end)

core.register_converters("typeof", function(v)
  return type(v) .. ":" .. tostring(v)
end)

core.register_converters("strlen", function(s)
  return #s
end)

core.register_converters("conv_nil", function(s)
  return nil
end)
