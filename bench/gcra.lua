-- Stand-in GCRA for redis-benchmark while the tree has no src/ratelimit/gcra.lua (bench/run.sh
-- prefers the project's own script). Same contract, the shape DESIGN §7 asks of the limiter:
-- KEYS[1] = rl:{policy}:{identity}; ARGV[1] = emission interval in microseconds
-- (60 s / per_minute); ARGV[2] = burst. Returns {allowed (0|1), remaining, retry_after_ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, 0, math.ceil((allow_at - now) / 1000)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.floor((tolerance - (new_tat - now)) / interval), 0}
