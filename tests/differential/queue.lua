-- Queues passing items between tasks and an HTTP service.
local function show(...)
  local t = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    t[#t + 1] = type(v) .. ":" .. tostring(v)
  end
  return "(" .. table.concat(t, ", ") .. ")"
end

-- Requests go from the service to a task, replies come back.
local requests, replies = core.queue(), core.queue()
core.register_task(function()
  while true do
    local item = requests:pop_wait()
    replies:push("task saw " .. tostring(item))
  end
end)

-- A task that produces three items, 20 ms apart, from start-up.
local ticks = core.queue()
core.register_task(function()
  for i = 1, 3 do
    ticks:push("tick" .. i)
    core.msleep(20)
  end
end)

local scenarios = {}

scenarios.basic = function()
  local q = core.queue()
  local r = show(q:size()) .. show(q:push(1)) .. show(q:push("a")) .. show(q:push({}) ) .. show(q:size())
  r = r .. show(q:pop()) .. show(q:pop()) .. show(type(q:pop())) .. show(q:pop()) .. show(q:size())
  r = r .. show(pcall(q.push, q, nil)) .. show(pcall(q.push, q)) .. show(pcall(q.push, q, 1, 2))
  return r
end

scenarios.roundtrip = function()
  for _, item in ipairs({ "a", 2, "c" }) do
    requests:push(item)
  end
  return show(replies:pop_wait()) .. show(replies:pop_wait()) .. show(replies:pop_wait())
end

scenarios.ticks = function()
  return show(ticks:pop_wait()) .. show(ticks:pop_wait()) .. show(ticks:pop_wait())
end

-- core.wait() woken by a Queue alarm (HAProxy 3.2).
scenarios.alarm = function()
  local q = core.queue()
  q:alarm()
  core.register_task(function()
    core.msleep(50)
    q:push("x")
  end)
  local t0 = core.now()
  core.wait(5000)
  local ms = (core.now().sec - t0.sec) * 1000 + (core.now().usec - t0.usec) / 1000
  return show(ms < 2000) .. show(q:pop())
end

-- core.wait() with nothing to wake it: the timeout.
scenarios.wait_timeout = function()
  local t0 = core.now()
  core.wait(50)
  local ms = (core.now().sec - t0.sec) * 1000 + (core.now().usec - t0.usec) / 1000
  return show(ms >= 40 and ms < 2000)
end

core.register_service("queue_svc", "http", function(applet)
  local name = applet.path:sub(2)
  local ok, r = pcall(scenarios[name])
  local body = tostring(ok) .. " " .. tostring(r) .. "\n"
  applet:set_status(200)
  applet:add_header("content-length", #body)
  applet:start_response()
  applet:send(body)
end)

core.register_fetches("pop_wait_fetch", function(txn)
  local q = core.queue()
  return show(pcall(q.pop_wait, q))
end)
