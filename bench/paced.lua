-- wrk script: replay.lua at a given pace, for latency at a given rate.
--
--   wrk -t T -c C -d D -s paced.lua URL -- FILE HEADER SECRET T PACE_MS [random]
--
-- Every connection waits PACE_MS between its requests, so the offered rate
-- is about C * 1000 / (PACE_MS + latency) requests per second.  With
-- "random", each wait is drawn from an exponential distribution of mean
-- PACE_MS instead (rounded to whole ms, wrk's timer unit): the connections
-- then drift apart, as independent senders do, instead of firing in step
-- after each shared batch.  Everything else, including the BENCH line, is
-- replay.lua's.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "replay.lua")

local replay_init = init
local pace_ms = 0
local random = false

function init(args)
   pace_ms = tonumber(args[5]) or 0
   random = args[6] == "random"
   -- a different, reproducible sequence per thread
   math.randomseed(1000 + (tonumber(tid) or 0))
   replay_init(args)
end

function delay()
   if not random then
      return pace_ms
   end
   local u = math.random()
   if u <= 0 then u = 1e-9 end
   return math.floor(-pace_ms * math.log(u) + 0.5)
end
