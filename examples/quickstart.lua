-- The quickstart's services. Loaded with `lua-load FILE ARG`: the argument
-- arrives as `...`.
local greeting = ... or "from luahost"

-- An HTTP service answering every request.
core.register_service("hello", "http", function(applet)
  local body = "hello " .. greeting .. ": " .. applet.method .. " " .. applet.path .. "\n"
  applet:set_status(200)
  applet:add_header("content-type", "text/plain")
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)

-- An HTTP service whose body is built with the concat native module, loaded
-- with `require` from package.cpath (see lua-prepend-path in the config).
-- No content-length is set, so the response is chunked.
local concat = require("concat")
core.register_service("report", "http", function(applet)
  local n = tonumber(applet.qs:match("n=(%d+)")) or 10
  local b = concat.new()
  b:add("report of ", n, " lines\n")
  for i = 1, math.min(n, 10000) do
    b:add("line ", i, ": ", string.rep("*", i % 40), "\n")
  end
  applet:set_status(200)
  applet:add_header("content-type", "text/plain")
  applet:start_response()
  applet:send(b:dump())
end)

-- A TCP service echoing each line back.
core.register_service("echo", "tcp", function(applet)
  while true do
    local line = applet:getline()
    if line == "" then break end
    applet:send(line)
  end
end)

-- A background task logging every few seconds.
core.register_task(function()
  while true do
    local info = core.get_info()
    core.Info(string.format("quickstart: up %ds, %d connections so far",
      info.Uptime_sec, info.CumConns))
    core.sleep(5)
  end
end)

-- Once the configuration is loaded, say what to try.
core.register_init(function()
  core.Info("quickstart ready; try:")
  core.Info("  curl http://127.0.0.1:8080/hello")
  core.Info("  curl http://127.0.0.1:8082/report?n=5")
  core.Info("  printf 'hi\\n' | nc -q1 127.0.0.1 8081")
end)
