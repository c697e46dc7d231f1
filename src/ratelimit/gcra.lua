-- GCRA (generic cell rate algorithm), one atomic step per request.
-- KEYS[1]  rate-limit key (prefix + rl:{policy}:{identity})
-- ARGV[1]  emission interval T in microseconds (60 s / per_minute)
-- ARGV[2]  burst: requests admitted at once from a full bucket
-- Returns "allowed remaining retry_after_ms reset_ms" (allowed 0|1): one string, because the
-- client parses one bulk reply for a quarter of what an array of four integers cost it.
-- Redis' own clock is used so every instance shares one notion of "now".
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return string.format('0 0 %.0f %.0f', math.ceil((allow_at - now) / 1000), math.ceil((tat - now) / 1000))
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return string.format('1 %.0f 0 %.0f', math.floor((tolerance - (new_tat - now)) / interval), math.ceil((new_tat - now) / 1000))
