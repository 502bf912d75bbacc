-- wrk script: replays the deliveries written by gen.py, with keep-alive.
--
--   wrk -t T -c C -d D -s replay.lua URL -- FILE HEADER SECRET T
--
-- Every thread loads FILE and keeps the lanes (orders) with lane % T == its
-- id, in delivery order, so the events of one order go through one thread in
-- sequence.  Once a thread has sent all its lines it starts over with the
-- next generation: the same stream with a different byte in every order id
-- (at gen_pos), so the bodies are new orders rather than redeliveries.
--
-- done() prints one line that bench/run parses:
--   BENCH key=value key=value ...
-- latencies in milliseconds.

local threads = {}
local nthreads_seen = 0

function setup(thread)
   thread:set("tid", nthreads_seen)
   nthreads_seen = nthreads_seen + 1
   table.insert(threads, thread)
end

-- per-thread state (globals of the thread's Lua state; read by done())
sent = 0
sent_new_events = 0
sent_new_orders = 0
generation = 0
ok2xx = 0
non2xx = 0
statuses = ""
lines = 0

local bodies, flags, gpos
local n, pos
local path, hdrs
local scount = {}

function init(args)
   local file, header, secret, nthreads = args[1], args[2], args[3], tonumber(args[4])
   if file == nil or header == nil or secret == nil or nthreads == nil then
      error("usage: wrk ... -s replay.lua URL -- FILE HEADER SECRET NTHREADS")
   end
   local me = tid or 0
   bodies, flags, gpos = {}, {}, {}
   n = 0
   local f = assert(io.open(file, "r"))
   for line in f:lines() do
      local lane, flag, gp, body = line:match("^(%d+)\t(%S+)\t(%d+)\t(.*)$")
      if lane and (tonumber(lane) % nthreads) == me then
         n = n + 1
         bodies[n] = body
         flags[n] = flag
         gpos[n] = tonumber(gp)
      end
   end
   f:close()
   lines = n
   pos = 0
   -- wrk calls request() once in the first thread to check the script
   -- before any connection exists: that call must not consume a line.
   verify_pending = (me == 0)
   path = wrk.path
   hdrs = {}
   hdrs["Content-Type"] = "application/json"
   hdrs["User-Agent"] = "Biteship-Webhook/1.0"
   hdrs[header] = secret
end

function request()
   if verify_pending then
      verify_pending = false
      return wrk.format("POST", path, hdrs, bodies[1])
   end
   pos = pos + 1
   if pos > n then
      pos = 1
      generation = generation + 1
   end
   local body = bodies[pos]
   if generation > 0 then
      local gp = gpos[pos]
      body = body:sub(1, gp - 1) .. string.format("%02x", generation % 256) .. body:sub(gp + 2)
   end
   local fl = flags[pos]
   sent = sent + 1
   if fl ~= "d" then
      sent_new_events = sent_new_events + 1
   end
   if fl == "n" then
      sent_new_orders = sent_new_orders + 1
   end
   return wrk.format("POST", path, hdrs, body)
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      ok2xx = ok2xx + 1
   else
      non2xx = non2xx + 1
      local k = tostring(status)
      scount[k] = (scount[k] or 0) + 1
      local s = ""
      for code, c in pairs(scount) do
         s = s .. code .. ":" .. c .. ","
      end
      statuses = s
   end
end

function done(summary, latency, requests)
   local t = {sent = 0, new_events = 0, new_orders = 0, ok = 0, bad = 0,
              gen = 0, lines = 0}
   local st = ""
   for _, th in ipairs(threads) do
      t.sent = t.sent + (th:get("sent") or 0)
      t.new_events = t.new_events + (th:get("sent_new_events") or 0)
      t.new_orders = t.new_orders + (th:get("sent_new_orders") or 0)
      t.ok = t.ok + (th:get("ok2xx") or 0)
      t.bad = t.bad + (th:get("non2xx") or 0)
      t.lines = t.lines + (th:get("lines") or 0)
      local g = th:get("generation") or 0
      if g > t.gen then t.gen = g end
      local s = th:get("statuses") or ""
      if s ~= "" then st = st .. s end
   end
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      "BENCH requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f mean_ms=%.3f " ..
      "ok2xx=%d non2xx=%d non2xx_by_status=%s sent=%d sent_new_events=%d sent_new_orders=%d " ..
      "generations=%d lines=%d threads=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d bytes=%d\n",
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
      latency.max / 1000, latency.mean / 1000,
      t.ok, t.bad, (st ~= "" and st or "-"), t.sent, t.new_events, t.new_orders,
      t.gen, t.lines, #threads, e.connect, e.read, e.write, e.timeout, summary.bytes))
end
