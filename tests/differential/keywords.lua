-- Differential group "keywords": Lua parts.

-- What Lua sees of the request body (option http-buffer-request).
core.register_action("show_body", { "http-req" }, function(txn)
  local b = txn.f:req_body()
  txn:set_var("txn.lua_body", b or "<nil>")
end, 0)

core.register_service("hello", "http", function(applet)
  local body = "hello from the service\n"
  applet:set_status(200)
  applet:add_header("content-type", "text/plain")
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end)

-- A response shaped by the query: content type, etag, cache-control,
-- vary, content-encoding, status, and a body long enough to compress.
core.register_service("shaped", "http", function(applet)
  local q = applet.qs or ""
  local function arg(name)
    return q:match(name .. "=([^&]*)")
  end
  local body = string.rep("compress me please, ", 20) .. "\n"
  applet:set_status(tonumber(arg("status") or "200"))
  applet:add_header("content-type", (arg("type") or "text/plain"):gsub("%%20", " "))
  if arg("etag") then applet:add_header("etag", arg("etag"):gsub("%%22", '"')) end
  if arg("etag2") then applet:add_header("etag", '"second"') end
  if arg("cc") then applet:add_header("cache-control", arg("cc")) end
  if arg("vary") then applet:add_header("vary", arg("vary")) end
  if arg("ce") then applet:add_header("content-encoding", arg("ce")) end
  if arg("len") then applet:add_header("content-length", tostring(#body)) end
  applet:start_response()
  applet:send(body)
end)

core.register_service("fail", "http", function(applet)
  error("this service fails")
end)
