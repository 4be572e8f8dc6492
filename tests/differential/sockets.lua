-- Lua sockets against local servers (tests/differential/local_servers.rs).
local LINE = "@LINE@"
local LINE_HOST, LINE_PORT = LINE:match("^(.*):(%d+)$")
local SILENT = "@SILENT@"
local DEAD = "@DEAD@"
local UNIX = "@UNIX@"
local ABNS = "@ABNS@"
local ECHO = "@ECHO@"

-- Every result of a call, with its type: "(number:1)(nil:nil, string:x)".
local function show(...)
  local t = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    t[#t + 1] = type(v) .. ":" .. tostring(v)
  end
  return "(" .. table.concat(t, ", ") .. ")"
end

-- The gate: ask the check service; fail closed when it can't be asked.
core.register_action("ask_check", { "http-req" }, function(txn)
  local s = core.tcp()
  s:settimeout(2)
  if s:connect(LINE) ~= 1 then
    txn:set_var("txn.verdict", "deny")
    return
  end
  s:send("CHECK " .. txn.sf:path() .. "\n")
  local verdict = s:receive("*l")
  s:close()
  txn:set_var("txn.verdict", verdict or "deny")
end)

-- How many line-service connections are still open (this one aside).
local function open_count()
  local s = core.tcp()
  s:connect(LINE)
  s:send("OPEN\n")
  local r = s:receive("*l")
  s:close()
  return r
end

local scenarios = {}

-- A line-based conversation: *l, byte counts, a prefix counted in the size.
scenarios.talk = function()
  local s = core.tcp()
  local r = show(s:connect(LINE_HOST, tonumber(LINE_PORT)))
  r = r .. show(s:send("ECHO one\nBYTES 10\n"))
  r = r .. show(s:receive("*l")) .. show(s:receive(4)) .. show(s:receive(6, "pre:"))
  r = r .. show(s:receive("2"))
  r = r .. show(s:send("xECHO two\n", 2)) .. show(s:receive())
  r = r .. show(s:send("ECHO three\n", 1, -1)) .. show(s:receive("*l", ">"))
  r = r .. show(s:send("abc", 3, 1)) .. show(s:setoption("tcp-nodelay", true))
  r = r .. show(s:getpeername() == LINE) .. show(s:getsockname():match("^127%.0%.0%.1:%d+$") ~= nil)
  r = r .. show(s:send("BYE\n")) .. show(s:receive("*l")) .. show(s:receive("*l")) .. show(s:receive(3))
  r = r .. show(s:close()) .. show(s:send("x")) .. show(s:receive()) .. show(s:getpeername()) .. show(s:close())
  return r
end

-- A send larger than the socket's buffers: the bytes that went out at once
-- and the rest, sent after waiting, arrive once each and in order.
scenarios.big_send = function()
  local s = core.tcp()
  s:settimeout(5)
  local mib = {}
  for i = 0, 15 do mib[#mib + 1] = string.rep(string.format("%07d\n", i), 1024 * 1024 / 8) end
  local data = table.concat(mib)
  local r = show(s:connect(LINE)) .. show(s:send("SINK " .. #data .. "\n"))
  r = r .. show(s:send(data)) .. show(s:receive("*l"))
  s:close()
  return r
end

-- The peer closes: what was read is returned, then "connection closed.".
scenarios.peer_close = function()
  local s = core.tcp()
  local r = show(s:connect(LINE)) .. show(s:send("PARTIAL\n"))
  r = r .. show(s:receive("*l")) .. show(s:receive("*l")) .. show(s:receive("*a"))
  local t = core.tcp()
  r = r .. show(t:connect(LINE)) .. show(t:send("ECHO all\nPARTIAL\n")) .. show(t:receive("*a"))
  local u = core.tcp()
  r = r .. show(u:connect(LINE)) .. show(u:send("PARTIAL\n")) .. show(u:receive(100, "p:"))
  return r
end

-- Nothing listens: HAProxy's results for a refused connection.
scenarios.refused = function()
  local s = core.tcp()
  local r = show(s:connect(DEAD))
  r = r .. show(s:send("x")) .. show(s:receive()) .. show(s:receive(2, "pre")) .. show(s:getpeername())
  return r
end
-- (A second refused socket in the same action makes HAProxy 3.0 hang the
-- request, hence a scenario of its own.)
scenarios.refused_port = function()
  local t = core.tcp()
  local host, port = DEAD:match("^(.*):(%d+)$")
  return show(t:connect(host, tonumber(port)))
end

-- A server that never answers: the timeout ends each wait and the socket.
scenarios.timeout = function()
  local s = core.tcp()
  local r = show(s:settimeout(0.3)) .. show(s:connect(SILENT)) .. show(s:send("hello\n"))
  r = r .. show(s:receive("*l")) .. show(s:send("x")) .. show(s:receive(1))
  local t = core.tcp()
  t:settimeout(0.2)
  r = r .. show(t:connect(SILENT)) .. show(t:receive(5, "pre"))
  local u = core.tcp()
  u:settimeout(0.2)
  r = r .. show(u:connect(SILENT)) .. show(u:receive("*a"))
  -- Data, then silence: "*a" returns what came before the timeout.
  local v = core.tcp()
  v:settimeout(0.3)
  r = r .. show(v:connect(LINE)) .. show(v:send("ECHO before\n")) .. show(v:receive("*a"))
  return r
end

-- Arguments refused as HAProxy refuses them.
scenarios.errors = function()
  local s = core.tcp()
  local r = show(pcall(s.connect, s, "127.0.0.1"))
  r = r .. show(pcall(s.connect, s, "localhost", 80))
  r = r .. show(pcall(s.connect, s, "nope:x"))
  r = r .. show(pcall(s.connect, s))
  r = r .. show(pcall(s.settimeout, s, -1))
  r = r .. show(pcall(s.settimeout, s))
  r = r .. show(s:settimeout(0.0001))
  r = r .. show(pcall(s.receive, s, "*x"))
  r = r .. show(pcall(s.receive, s, -1))
  r = r .. show(pcall(s.receive, s, "*l", 5))
  r = r .. show(pcall(s.send, s))
  r = r .. show(pcall(s.getpeername, s, 1))
  r = r .. show(tostring(s))
  return r
end

-- A Unix socket, and address prefixes.
scenarios.unix = function()
  local s = core.tcp()
  local r = show(s:connect("unix@" .. UNIX)) .. show(s:send("ECHO unix\n")) .. show(s:receive("*l"))
  r = r .. show(s:getpeername()) .. show(s:getsockname())
  s:close()
  local t = core.tcp()
  r = r .. show(t:connect(UNIX)) .. show(t:send("ECHO plain\n")) .. show(t:receive("*l"))
  t:close()
  local u = core.tcp()
  r = r .. show(u:connect("ipv4@" .. LINE)) .. show(u:send("ECHO v4\n")) .. show(u:receive("*l"))
  u:close()
  return r
end

-- A socket in Linux's abstract namespace (the line service listens there).
scenarios.abns = function()
  local s = core.tcp()
  local r = show(s:connect("abns@" .. ABNS)) .. show(s:send("ECHO abns\n")) .. show(s:receive("*l"))
  s:close()
  local t = core.tcp()
  r = r .. show(t:connect("abns@" .. ABNS .. "-none"))
  return r
end

-- Sockets left open by the script: none outlives the context.
scenarios.leave_open = function()
  local r = ""
  for i = 1, 5 do
    local s = core.tcp()
    r = r .. show(s:connect(LINE)) .. show(s:send("ECHO " .. i .. "\n")) .. show(s:receive("*l"))
  end
  return r
end
-- A socket the collector frees is closed then, while its context runs on.
scenarios.collected = function()
  local s = core.tcp()
  local r = show(s:connect(LINE)) .. show(s:send("ECHO gc\n")) .. show(s:receive("*l"))
  s = nil
  collectgarbage("collect")
  collectgarbage("collect")
  return r .. " " .. open_count()
end
scenarios.open_count = function()
  return open_count()
end

-- A task talks to the line service at start-up, leaves its socket open and
-- ends; the services below report what it got.
local task_result
core.register_task(function()
  local s = core.tcp()
  local r = show(s:connect(LINE)) .. show(s:send("ECHO task\nBYTES 30\n"))
  r = r .. show(s:receive("*l")) .. show(s:receive(26)) .. show(s:receive(4))
  task_result = r
end)
scenarios.task = function()
  while not task_result do core.msleep(10) end
  return task_result
end

-- A server event handler (HAProxy 2.8+) that talks over a Lua socket and
-- the HTTP client when server s1 of backend evbe enters maintenance.
local event_result
if core.event_sub then
  core.event_sub({"SERVER_ADMIN"}, function(event, data)
    if data.name ~= "s1" or not data.admin.new_admin.MAINT then return end
    local s = core.tcp()
    s:settimeout(2)
    local r = show(s:connect(LINE)) .. show(s:send("ECHO event\n")) .. show(s:receive("*l"))
    s:close()
    local res = core.httpclient():get{ url = "http://" .. ECHO .. "/event", timeout = 2000 }
    event_result = r .. show(res.status)
  end)
end
scenarios.event_sub = function()
  event_result = nil
  local srv = core.backends["evbe"].servers["s1"]
  srv:set_maint()
  local waited = 0
  while not event_result and waited < 5000 do
    core.msleep(10)
    waited = waited + 10
  end
  srv:set_ready()
  return event_result or "no event"
end

core.register_action("run", { "http-req" }, function(txn)
  local name = txn.sf:path():sub(2)
  local ok, r = pcall(scenarios[name])
  txn:set_var("txn.r", tostring(ok) .. " " .. tostring(r))
end)

core.register_service("run_svc", "http", function(applet)
  local name = applet.path:sub(2)
  local ok, r = pcall(scenarios[name])
  local body = tostring(ok) .. " " .. tostring(r) .. "\n"
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)

core.register_fetches("socket_fetch", function(txn)
  local s = core.tcp()
  return show(s:connect(LINE))
end)

-- TLS to a server with a self-signed certificate. HAProxy verifies nothing
-- and sends no server name.
local TLS = "@TLS@"
local TLS_HOST, TLS_PORT = TLS:match("^(.*):(%d+)$")
scenarios.tls = function()
  local s = core.tcp()
  s:settimeout(3)
  local r = show(s:connect_ssl(TLS_HOST, tonumber(TLS_PORT)))
  r = r .. show(s:send("ECHO secret\nSNI\n")) .. show(s:receive("*l")) .. show(s:receive("*l"))
  r = r .. show(s:getpeername() == TLS)
  s:close()
  r = r .. show(pcall(s.connect_ssl, s, TLS))
  return r
end

-- luahost's fourth argument: a server name (SNI), and verification.
scenarios.tls_options = function()
  local s = core.tcp()
  s:settimeout(3)
  local r = show(s:connect_ssl(TLS_HOST, tonumber(TLS_PORT), "tls.test"))
  r = r .. show(s:send("SNI\n")) .. show(s:receive("*l"))
  s:close()
  -- Verified against the certificate itself: accepted for its name...
  local t = core.tcp()
  t:settimeout(3)
  r = r .. show(t:connect_ssl(TLS_HOST, tonumber(TLS_PORT),
    { server_name = "tls.test", verify = "required", ca_file = "@TLS_CERT@" }))
  r = r .. show(t:send("ECHO verified\n")) .. show(t:receive("*l"))
  t:close()
  -- ...refused for another name, and refused against the system's roots.
  local u = core.tcp()
  u:settimeout(3)
  r = r .. show(u:connect_ssl(TLS_HOST, tonumber(TLS_PORT),
    { server_name = "other.test", verify = "required", ca_file = "@TLS_CERT@" }))
  local v = core.tcp()
  v:settimeout(3)
  r = r .. show(v:connect_ssl(TLS_HOST, tonumber(TLS_PORT), { server_name = "tls.test", verify = "required" }))
  -- A plain connection to the TLS port: the handshake never comes.
  return r
end
