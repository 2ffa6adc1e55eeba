-- wrk script: every request PUTs a new object, its path made from a template.
--
-- Usage: wrk ... -s put_paths.lua URL -- TEMPLATE BODY_BYTES [TIMESTAMP] [SEED] [METHOD]
--   TEMPLATE    URL path containing "{n}", replaced by a counter unique across threads:
--               thread id * 1e9 + i for the thread's i-th request (i from 1)
--   BODY_BYTES  size of the random body, generated once per thread
--   TIMESTAMP   "1" to send a fresh X-Timestamp ("%.5f" seconds since the epoch, strictly
--               increasing within a thread) as Swift's object server requires; default "0"
--   SEED        integer seed of the per-thread random generators (default 1)
--   METHOD      PUT (default) or POST
-- Headers given to wrk with -H are sent with every request. done() prints one JSON line
-- starting with {"pinhole_wrk":1, ...}: counts, duration and latencies in microseconds.

local next_thread_id = 0

function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
end

local template
local body
local method
local send_timestamp
local counter
local timestamp_ticks = 0 -- hundred-thousandths of a second, an exact integer in a double

function init(args)
  template = args[1]
  if template == nil or not template:find("{n}", 1, true) then
    error("put_paths.lua needs a path template containing {n}")
  end
  local body_bytes = tonumber(args[2]) or 0
  send_timestamp = args[3] == "1"
  local seed = tonumber(args[4]) or 1
  method = args[5] or "PUT"
  math.randomseed(seed + (thread_id or 0) * 7919)
  local chars = {}
  for i = 1, body_bytes do
    chars[i] = string.char(math.random(0, 255))
  end
  body = table.concat(chars)
  counter = (thread_id or 0) * 1e9
end

local function next_timestamp()
  local now_ticks = os.time() * 100000
  if now_ticks > timestamp_ticks then
    timestamp_ticks = now_ticks
  else
    timestamp_ticks = timestamp_ticks + 1
  end
  local seconds = math.floor(timestamp_ticks / 100000)
  return string.format("%.0f.%05.0f", seconds, timestamp_ticks - seconds * 100000)
end

function request()
  counter = counter + 1
  local start, stop = template:find("{n}", 1, true)
  local path = template:sub(1, start - 1) .. string.format("%.0f", counter)
    .. template:sub(stop + 1)
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  if send_timestamp then
    headers["X-Timestamp"] = next_timestamp()
  end
  return wrk.format(method, path, headers, body)
end

function done(summary, latency, _)
  local errors = summary.errors
  io.write(string.format(
    '{"pinhole_wrk":1,"duration_us":%.0f,"requests":%.0f,"bytes":%.0f,'
      .. '"errors_connect":%.0f,"errors_read":%.0f,"errors_write":%.0f,'
      .. '"errors_status":%.0f,"errors_timeout":%.0f,'
      .. '"latency_min_us":%.0f,"latency_mean_us":%.3f,"latency_max_us":%.0f,'
      .. '"latency_p50_us":%.0f,"latency_p90_us":%.0f,"latency_p99_us":%.0f,'
      .. '"latency_p999_us":%.0f}\n',
    summary.duration, summary.requests, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
