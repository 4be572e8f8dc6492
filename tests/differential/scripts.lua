-- Differential group "scripts": behaviours published scripts depend on.

-- A CORS script registers one action name twice, for the request and for
-- the response rule sets, with different functions and argument counts;
-- the request side stores what the response side needs with set_priv.
core.register_action("cors", {"http-req"}, function(txn, methods, origins, headers)
  local origin = txn.sf:req_hdr("origin") or ""
  txn:set_priv({ origin = origin, args = methods .. "|" .. origins .. "|" .. headers })
  txn:set_var("txn.cors_origin", origin)
end, 3)
core.register_action("cors", {"http-res"}, function(txn)
  local data = txn:get_priv()
  if data == nil then
    txn.http:res_set_header("x-cors", "no-priv")
    return
  end
  txn.http:res_set_header("access-control-allow-origin", data.origin)
  txn.http:res_set_header("x-cors-args", data.args)
  txn.http:res_set_header("x-cors-var", txn:get_var("txn.cors_origin") or "nil")
end, 0)

-- The same name registered twice for one rule set: the last one counts.
core.register_action("twice", {"http-req"}, function(txn)
  txn.http:req_set_header("x-twice", "first")
end)
core.register_action("twice", {"http-req"}, function(txn)
  txn.http:req_set_header("x-twice", "second")
end)

-- What an http-res (and, on 3.0, http-after-res) action sees of a response
-- made by a Lua service.
local function see_response(txn)
  local h = txn.http:res_get_headers()
  local svc = h["x-svc"] and h["x-svc"][0] or "none"
  txn.http:res_add_header("x-seen", svc .. ":" .. tostring(txn.sf:status()) .. ":" .. tostring(txn:get_var("txn.svc")))
end
core.register_action("see_response", {"http-res"}, see_response)
-- HAProxy 2.6 has no Lua http-after-response actions.
pcall(core.register_action, "see_after", {"http-after-res"}, see_response)

core.register_service("hello", "http", function(applet)
  applet:set_var("txn.svc", "from-service")
  local body = "hello\n"
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:add_header("x-svc", "1")
  applet:start_response()
  applet:send(body)
end)

-- Returns without any response.
core.register_service("silent", "http", function(applet)
end)

-- Ends with core.done() before any response.
core.register_service("done_early", "http", function(applet)
  core.done()
end)

-- Raises before any response.
core.register_service("fails", "http", function(applet)
  error("service failed")
end)

-- set_var(name, value, true) (ifexist) on proc variables: those the
-- configuration names exist (without a value) from start-up on.
core.register_service("procvar", "http", function(applet)
  local out = { "before=" .. tostring(applet:get_var("proc.named")) }
  for _, n in ipairs({ "proc.named", "proc.set_by_rule", "proc.unset_by_rule", "proc.in_acl", "proc.in_format", "proc.never_named" }) do
    out[#out + 1] = n .. "=" .. tostring(applet:set_var(n, "v", true)) .. "/" .. tostring(applet:get_var(n))
  end
  local body = table.concat(out, "\n") .. "\n"
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)
