-- Lua actions of the differential group "actions". Each action leaves its
-- traces in request headers (which the echo backend writes into its body),
-- in response headers, or in the response it makes. Lua 5.3 compatible
-- (HAProxy 2.6 is built with Lua 5.3).

-- Shows a value with its Lua type, e.g. "string:abc", "nil:nil".
local function typed(v)
  return type(v) .. ":" .. tostring(v)
end

-- Arguments written on the rule line arrive after the txn.
core.register_action("args", {"http-req"}, function(txn, a, b)
  txn.http:req_set_header("x-args", typed(a) .. "|" .. typed(b))
end, 2)

-- Native fetches and converters through txn.f / txn.sf (typed / string) and
-- txn.c / txn.sc. Names with '.' are written with '_'.
core.register_action("fetches", {"http-req"}, function(txn)
  local h = txn.http
  local function put(name, v)
    h:req_add_header("x-f-" .. name, typed(v))
  end
  put("fhdr", txn.f:req_fhdr("host"))
  put("hdr-missing", txn.f:req_hdr("x-missing"))
  put("shdr-missing", txn.sf:req_hdr("x-missing"))
  put("hdr-cnt", txn.f:req_hdr_cnt("x-multi"))
  put("shdr-cnt", txn.sf:req_hdr_cnt("x-multi"))
  put("hdr-occ", txn.f:req_hdr("x-multi", 1))
  put("path", txn.f:path())
  put("method", txn.f:method())
  put("src", txn.f:src())
  put("int", txn.f:int(7))
  put("bool", txn.f:always_true())
  put("lower", txn.c:lower("MiXeD"))
  put("supper", txn.sc:upper("MiXeD"))
  put("b64", txn.c:base64("hello"))
  put("conv-fail", txn.c:b64dec("***"))
  put("sconv-fail", txn.sc:b64dec("***"))
end)

-- Converter arguments given as Lua integers. HAProxy 3.0 refuses them for
-- bytes() ("unable to duplicate string arg": its arguments may name
-- variables since 2.9); 2.6 and luahost take them.
core.register_action("conv_args", {"http-req"}, function(txn)
  txn.http:req_add_header("x-f-conv-args", typed(txn.c:bytes("abcdef", 1, 3)))
end)

-- The request's headers as Lua sees them, then every header operation.
core.register_action("hdrops", {"http-req"}, function(txn)
  local h = txn.http
  local hdrs = h:req_get_headers()
  local multi = hdrs["x-multi"] or {}
  h:req_add_header("x-seen-multi", typed(multi[0]) .. "|" .. typed(multi[1]) .. "|" .. typed(multi[2]))
  h:req_add_header("x-seen-host", typed(hdrs["host"] and hdrs["host"][0]))
  h:req_set_header("x-set", "replaced")
  h:req_add_header("x-add", "appended")
  h:req_del_header("x-del")
  -- HAProxy regular expressions (PCRE), \1 for the first group. rep_header
  -- works on whole values, rep_value on each comma-separated value.
  h:req_rep_header("x-rep", "^a(.*)z$", "<\\1>")
  h:req_rep_value("x-vals", "^v([0-9])$", "w\\1")
end)

-- Rewrites of the request line, chosen by the x-op request header.
core.register_action("rewrite", {"http-req"}, function(txn)
  local h = txn.http
  local op = txn.sf:req_hdr("x-op")
  if op == "path" then
    h:req_set_path("/new/path")
  elseif op == "query" then
    h:req_set_query("a=1&b=two")
  elseif op == "query-empty" then
    h:req_set_query("")
  elseif op == "method" then
    h:req_set_method("PUT")
  elseif op == "uri" then
    h:req_set_uri("/u/v?w=1")
  end
end)

-- Return codes and replies, chosen by the x-op request header. The
-- configuration adds "x-after: yes" after this action, which shows whether
-- the following rules ran.
core.register_action("codes", {"http-req"}, function(txn)
  local op = txn.sf:req_hdr("x-op")
  txn.http:req_set_header("x-before", op)
  if op == "continue" then
    return act.CONTINUE
  elseif op == "stop" then
    return act.STOP
  elseif op == "deny" then
    return act.DENY
  elseif op == "error" then
    return act.ERROR
  elseif op == "done" then
    return act.DONE
  elseif op == "abort" then
    return act.ABORT
  elseif op == "invalid" then
    return act.INVALID
  elseif op == "reply" then
    -- One header name only: the order of pairs() over several names is not
    -- defined (Lua seeds its string hashes at random), so neither is the
    -- order of the reply's headers. HAProxy ignores "reason" here.
    txn:done(txn:reply({
      status = 418,
      reason = "Tea Time",
      headers = { ["x-r"] = { "r1", "r2" } },
      body = "replied\n",
    }))
  elseif op == "reply-methods" then
    local r = txn:reply()
    r:set_status(201, "Made")
    r:add_header("x-m", "1")
    r:add_header("x-m", "2")
    r:add_header("x-gone", "g")
    r:del_header("x-gone")
    r:set_body("made\n")
    txn:done(r)
  elseif op == "reply-default" then
    txn:done(txn:reply())
  elseif op == "done-noreply" then
    txn:done()
  elseif op == "raise" then
    error("raised on purpose")
  elseif op == "raise-table" then
    error({ code = 1 })
  end
end)

-- Variables set in Lua, read by the configuration and by a Lua fetch; a
-- variable set by the configuration, read in Lua.
core.register_action("vars", {"http-req"}, function(txn)
  local h = txn.http
  txn:set_var("txn.lua_str", "from-lua")
  txn:set_var("req.lua_num", 42)
  txn:set_var("txn.lua_bool", true)
  txn:set_var("txn.gone", "x")
  txn:unset_var("txn.gone")
  h:req_set_header("x-got-cfg", typed(txn:get_var("txn.cfg")))
  h:req_set_header("x-got-cfgint", typed(txn:get_var("txn.cfgint")))
  h:req_set_header("x-got-lua-bool", typed(txn:get_var("txn.lua_bool")))
  h:req_set_header("x-got-missing", typed(txn:get_var("txn.nope")))
  h:req_set_header("x-set-results", typed(txn:set_var("txn.newone", "n", true))
    .. "|" .. typed(txn:set_var("proc.brand_new", "p", true))
    .. "|" .. typed(txn:set_var("bogus.x", 1)))
end)

core.register_fetches("readvar", function(txn, name)
  return txn:get_var(name)
end)

-- Private data shared by the actions of one request; a new request (also on
-- a kept-alive connection) starts without.
core.register_action("priv1", {"http-req"}, function(txn)
  txn.http:req_set_header("x-priv-start", typed(txn:get_priv()))
  txn:set_priv({ count = 1 })
end)

core.register_action("priv2", {"http-req"}, function(txn)
  local p = txn:get_priv()
  txn.http:req_set_header("x-priv-next", typed(type(p) == "table" and p.count or p))
end)

core.register_service("show_priv", "http", function(applet)
  local p = applet:get_priv()
  local body = "priv=" .. typed(type(p) == "table" and p.count or p) .. "\n"
  applet:set_priv("from-service")
  body = body .. "priv.after=" .. typed(applet:get_priv()) .. "\n"
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end)

-- Response side: what the server sent, header operations, the status.
core.register_action("resp", {"http-res"}, function(txn)
  local h = txn.http
  local hdrs = h:res_get_headers()
  h:res_set_header("x-seen-backend", typed(hdrs["x-backend"] and hdrs["x-backend"][0]))
  h:res_set_header("x-seen-type", typed(hdrs["content-type"] and hdrs["content-type"][0]))
  h:res_add_header("x-resp-added", "1")
  h:res_del_header("x-backend")
  h:res_rep_header("content-type", "^text/(.*)$", "application/\\1")
end)

core.register_action("resp_status", {"http-res"}, function(txn, code, reason)
  if reason == "-" then
    txn.http:res_set_status(tonumber(code))
  else
    txn.http:res_set_status(tonumber(code), reason)
  end
end, 2)

-- API HAProxy 2.6 lacks; it fails these with a runtime error, so their cases
-- run against luahost only. core.get_var exists from HAProxy 2.8. Fetches
-- under their dotted names (txn.f["req.fhdr"]) are a luahost addition:
-- HAProxy only has the underscore names.
core.register_action("dotted", {"http-req"}, function(txn)
  txn.http:req_set_header("x-dotted", typed(txn.f["req.fhdr"](txn.f, "host")))
end)

core.register_action("core_get_var", {"http-req"}, function(txn)
  txn.http:req_set_header("x-core-var", typed(core.get_var("proc.greeting")))
end)
