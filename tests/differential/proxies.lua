-- Differential group "proxies": services that read the proxy model through
-- the Proxy/Server/Listener classes and answer what they saw.

local function reply(applet, body)
  applet:set_status(200)
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end

local function sorted_keys(t)
  local k = {}
  for n in pairs(t) do k[#k + 1] = n end
  table.sort(k)
  return k
end

-- Only fields HAProxy fills for the kind of line asked (its stats buffer
-- keeps other fields from earlier calls).
local SRV_FIELDS = { "pxname", "svname", "status", "weight", "uweight", "act", "bck",
  "iid", "sid", "type", "scur", "qcur", "srid", "mode" }
local BE_FIELDS = { "pxname", "svname", "status", "weight", "uweight", "act", "bck",
  "iid", "sid", "type", "scur", "qcur", "algo", "mode" }

local function fields(st, names)
  local out = {}
  for _, f in ipairs(names) do out[#out + 1] = f .. "=" .. tostring(st[f]) end
  return table.concat(out, " ")
end

local function server_line(s)
  return string.format("  %s puid=%s(%s) rid=%s addr=%s w=%d mc=%d cur=%d pend=%d drain=%s bck=%s dyn=%s px=%s track=%s trackers=%d\n    %s\n",
    s:get_name(), s:get_puid(), type(s:get_puid()), s:get_rid(), s:get_addr(), s:get_weight(),
    s:get_maxconn(), s:get_cur_sess(), s:get_pend_conn(), tostring(s:is_draining()),
    tostring(s:is_backup()), tostring(s:is_dynamic()), s:get_proxy():get_name(),
    tostring(s:tracking()), #s:get_trackers(), fields(s:get_stats(), SRV_FIELDS))
end

local function proxy_block(p)
  local out = { string.format("%s uuid=%s(%s) cap=%s mode=%s act=%d bck=%d mailers=%d\n",
    p:get_name(), p:get_uuid(), type(p:get_uuid()), p:get_cap(), p:get_mode(),
    p:get_srv_act(), p:get_srv_bck(), select("#", p:get_mailers())) }
  if p:get_cap() ~= "frontend" then
    out[#out + 1] = "  " .. fields(p:get_stats(), BE_FIELDS) .. "\n"
  end
  for _, name in ipairs(sorted_keys(p.servers)) do
    out[#out + 1] = server_line(p.servers[name])
  end
  local l = sorted_keys(p.listeners)
  out[#out + 1] = "  listeners: " .. table.concat(l, ",") .. "\n"
  return table.concat(out)
end

core.register_service("model", "http", function(applet)
  local out = {}
  for _, name in ipairs(sorted_keys(core.proxies)) do
    out[#out + 1] = proxy_block(core.proxies[name])
  end
  reply(applet, table.concat(out))
end)

-- Changes made through Server methods, read back; the server ends as it
-- started so that the case can run again.
core.register_service("ops", "http", function(applet)
  local be = core.backends["ops"]
  local s = be.servers["o1"]
  local out = {}
  local function say(what, v) out[#out + 1] = what .. " -> " .. tostring(v) .. "\n" end
  local function state(tag)
    say(tag, s:get_stats().status .. " w=" .. s:get_weight() .. " drain=" .. tostring(s:is_draining())
      .. " act=" .. be:get_srv_act() .. " be.weight=" .. be:get_stats().weight)
  end
  state("start")
  say("set_weight 5", s:set_weight("5")); state("w5")
  say("set_weight 300", s:set_weight("300"))
  say("set_weight 3x", s:set_weight("3x"))
  say("set_weight 50%", s:set_weight("50%")); state("w50%")
  say("set_weight 100%", s:set_weight("100%")); state("w100%")
  s:set_drain(); state("drain")
  s:set_maint(); state("maint")
  s:set_ready(); state("ready")
  say("set_maxconn 7", s:set_maxconn("7")); say("maxconn", s:get_maxconn())
  say("set_maxconn x", s:set_maxconn("x"))
  say("set_maxconn 0", s:set_maxconn("0")); say("maxconn", s:get_maxconn())
  say("set_addr bad", s:set_addr("bad"))
  s:check_force_down(); state("force_down")
  s:check_force_up(); state("force_up")
  s:check_force_nolb(); state("force_nolb")
  s:check_force_up(); state("force_up again")
  -- Deprecated fields still answer (with a one-time warning in the log).
  say("deprecated", be.name .. " " .. be.uuid .. " " .. s.name .. " " .. s.puid)
  reply(applet, table.concat(out))
end)

-- Address changes, one per request: HAProxy 3.0 applies a new address
-- shortly after the call (from a task), so it is read back by the next
-- request.
core.register_service("addr", "http", function(applet)
  local s = core.backends["ops"].servers["o2"]
  local out
  if applet.path == "/set" then
    out = s:set_addr("127.0.0.2", "9105")
  elseif applet.path == "/back" then
    out = s:set_addr("127.0.0.1", 9102)
  elseif applet.path == "/same" then
    out = s:set_addr("127.0.0.1")
  else
    out = s:get_addr()
  end
  reply(applet, tostring(out) .. "\n")
end)

-- Shaped like published auth-request scripts: the auth backend is looked up
-- in core.backends and its server's address read with get_addr().
core.register_service("auth", "http", function(applet)
  local be = core.backends["auth"]
  local body
  if be == nil then
    body = "no auth backend\n"
  else
    local addr
    for _, srv in pairs(be.servers) do addr = srv:get_addr() break end
    body = "auth server at " .. tostring(addr) .. "\n"
  end
  reply(applet, body)
end)

-- Shaped like a published least-sessions balancer: walk core.backends and
-- pick, per backend, the server with the fewest current sessions from
-- get_stats().
core.register_service("least", "http", function(applet)
  local out = {}
  for _, bname in ipairs(sorted_keys(core.backends)) do
    local best, best_cur
    for _, sname in ipairs(sorted_keys(core.backends[bname].servers)) do
      local st = core.backends[bname].servers[sname]:get_stats()
      if st.status ~= "MAINT" and (best_cur == nil or st.scur < best_cur) then
        best, best_cur = sname, st.scur
      end
    end
    out[#out + 1] = bname .. ": " .. tostring(best) .. " (" .. tostring(best_cur) .. ")\n"
  end
  reply(applet, table.concat(out))
end)

-- The index tables themselves.
core.register_service("index", "http", function(applet)
  local function count(t) local n = 0 for _ in pairs(t) do n = n + 1 end return n end
  local out = {}
  out[#out + 1] = "counts proxies=" .. count(core.proxies) .. " frontends=" .. count(core.frontends)
    .. " backends=" .. count(core.backends) .. "\n"
  out[#out + 1] = "len=" .. #core.backends .. " missing=" .. tostring(core.backends["nope"])
    .. " fe_as_backend=" .. tostring(core.backends["fe_model"]) .. "\n"
  core.backends["zzz"] = 1
  out[#out + 1] = "assigned=" .. tostring(rawget(core.backends, "zzz")) .. " "
    .. tostring(core.backends["zzz"]) .. "\n"
  out[#out + 1] = "li cap=" .. core.proxies["li"]:get_cap() .. " frontend=" .. core.frontends["li"]:get_name()
    .. " backend=" .. core.backends["li"]:get_name() .. "\n"
  out[#out + 1] = "fe servers=" .. count(core.frontends["fe_model"].servers)
    .. " app servers=" .. count(core.backends["app"].servers)
    .. " missing server=" .. tostring(core.backends["app"].servers["zz"]) .. "\n"
  out[#out + 1] = "frontends: " .. table.concat(sorted_keys(core.frontends), ",") .. "\n"
  reply(applet, table.concat(out))
end)
