-- wrk script shared by bench/run.sh: request shape from the environment, and one
-- machine-readable summary line (WRKJSON {...}) with latency percentiles at the end.
--   WRK_METHOD  GET (default) | POST
--   WRK_BODY    request body (sent as application/json)
--   WRK_TOKEN   bearer token for the Authorization header
--   WRK_DELAY_MS  pause of each connection before each request: paces the load (a fixed
--                 offered rate of about connections / (delay + latency)) instead of saturating
local method = os.getenv("WRK_METHOD")
local body = os.getenv("WRK_BODY")
local token = os.getenv("WRK_TOKEN")

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "")
if delay_ms then
  function delay()
    return delay_ms
  end
end

wrk.method = method or "GET"
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_timeout":%d,"non_2xx_3xx":%d}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000,
    e.connect, e.read, e.write, e.timeout, e.status))
end
