-- wrk script: replay.lua at a fixed pace, for latency at a given rate.
--
--   wrk -t T -c C -d D -s paced.lua URL -- FILE HEADER SECRET T PACE_MS
--
-- Every connection waits PACE_MS between its requests, so the offered rate
-- is about C * 1000 / (PACE_MS + latency) requests per second.  Everything
-- else, including the BENCH line, is replay.lua's.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "replay.lua")

local replay_init = init
local pace_ms = 0

function init(args)
   pace_ms = tonumber(args[5]) or 0
   replay_init(args)
end

function delay()
   return pace_ms
end
