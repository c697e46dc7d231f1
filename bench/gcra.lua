-- GCRA in one atomic script, the shape DESIGN §7 asks of the limiter: redis-benchmark runs it
-- with EVALSHA to give Redis's own ceiling for one limiter decision per request.
-- KEYS[1] = rl:{policy}:{identity}; ARGV[1] = emission interval (ms per request);
-- ARGV[2] = burst. Returns {allowed (0|1), remaining, retry_after_ms}.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, 0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1)
return {1, math.floor((now - allow_at) / interval), 0}
