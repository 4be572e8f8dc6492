-- Lua services of the differential group "applet". Lua 5.3 compatible
-- (HAProxy 2.6 is built with Lua 5.3).

-- Sends `body` with a content-length, as a complete response.
local function answer(applet, status, body)
  applet:set_status(status)
  applet:add_header("content-type", "text/plain")
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end

-- The values of a 0-indexed header list, joined with "|".
local function values(list)
  local parts, i = {}, 0
  while list[i] ~= nil do
    parts[#parts + 1] = list[i]
    i = i + 1
  end
  return table.concat(parts, "|")
end

-- The request as the applet sees it. Header names are sorted because the
-- order of pairs() over a Lua table is not defined.
core.register_service("info", "http", function(applet)
  local out = {
    "method=" .. applet.method,
    "path=" .. applet.path,
    "qs=" .. applet.qs,
    "version=" .. applet.version,
    "length=" .. tostring(applet.length),
  }
  local names = {}
  for name in pairs(applet.headers) do
    names[#names + 1] = name
  end
  table.sort(names)
  for _, name in ipairs(names) do
    out[#out + 1] = "h." .. name .. "=" .. values(applet.headers[name])
  end
  answer(applet, 200, table.concat(out, "\n") .. "\n")
end)

-- No content-length: the response is chunked, one chunk per send.
core.register_service("chunks", "http", function(applet)
  applet:set_status(200)
  applet:add_header("content-type", "text/plain")
  applet:start_response()
  for i = 1, 3 do
    applet:send("piece " .. i .. "\n")
  end
end)

-- A status with a custom reason, repeated headers.
core.register_service("status", "http", function(applet)
  if applet.path == "/default-reason" then
    applet:set_status(404)
  else
    applet:set_status(299, "Quite Fine")
  end
  applet:add_header("x-dup", "one")
  applet:add_header("x-dup", "two")
  applet:add_header("content-length", "2")
  applet:start_response()
  applet:send("ok")
end)

-- Reads the request body: the whole of it, or a line then the rest.
core.register_service("body", "http", function(applet)
  local out
  if applet.path == "/line" then
    local first = applet:getline()
    local rest = applet:receive()
    out = string.format("first=%q rest=%q", first, rest)
  else
    local all = applet:receive()
    out = string.format("len=%d declared=%d body=%q", #all, applet.length, all)
  end
  answer(applet, 200, out .. "\n")
end)

-- Nothing sent after the head.
core.register_service("empty", "http", function(applet)
  applet:set_status(204)
  applet:start_response()
end)

-- Sample fetches and converters from a service. Fetches that need the HTTP
-- transaction (path, req.hdr, ...) are refused in services; see "httpfetch".
core.register_service("fetch", "http", function(applet)
  local out = {
    "f.src=" .. tostring(applet.f:src()),
    "sf.str=" .. applet.sf:str("abc"),
    "f.int=" .. math.type(applet.f:int(12)) .. ":" .. tostring(applet.f:int(12)),
    "f.bool=" .. tostring(applet.f:always_true()),
    "c.upper=" .. applet.c:upper("abc"),
    "sc.hex=" .. applet.sc:hex("AB"),
    "c.fail=" .. tostring(applet.c:b64dec("***")),
    "sc.fail=[" .. applet.sc:b64dec("***") .. "]",
  }
  answer(applet, 200, table.concat(out, "\n") .. "\n")
end)

-- An HTTP sample fetch from a service raises an error (the service fails).
core.register_service("httpfetch", "http", function(applet)
  answer(applet, 200, applet.sf:path())
end)

-- Per-request state: private data starts as nil on every request (also on a
-- kept-alive connection); variables are visible within the request.
-- (What get_priv gives after set_priv here is not shown: HAProxy keeps
-- private data in the stream's Lua context, which only exists once a Lua
-- action or fetch ran for the request, so in a service alone set_priv
-- stores nothing. The "actions" group covers action-to-service.)
core.register_service("state", "http", function(applet)
  local before = applet:get_priv()
  applet:set_priv("set")
  applet:set_var("txn.svc", "v1")
  local out = {
    "priv.before=" .. tostring(before),
    "var=" .. tostring(applet:get_var("txn.svc")),
    "var.missing=" .. tostring(applet:get_var("txn.none")),
  }
  applet:unset_var("txn.svc")
  out[#out + 1] = "var.unset=" .. tostring(applet:get_var("txn.svc"))
  answer(applet, 200, table.concat(out, "\n") .. "\n")
end)

-- A runtime error before the response starts.
core.register_service("fail", "http", function(applet)
  error("service failed on purpose")
end)
