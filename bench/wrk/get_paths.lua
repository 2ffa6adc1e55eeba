-- wrk script: each request GETs a path picked at random from a file of URL paths.
--
-- Usage: wrk ... -s get_paths.lua URL -- PATHS_FILE [SEED] [METHOD] [ORDER]
--   PATHS_FILE  one URL path per line ("/ab/cd/name"); blank lines are skipped
--   SEED        integer seed of the per-thread random generators (default 1)
--   METHOD      GET (default) or HEAD
--   ORDER       "random" (default): each request picks a path at random;
--               "sequential": each thread walks the file in order from its own starting
--               point (thread i of n starts at i/n of the file), wrapping at the end, so a
--               pre-shuffled file gives distinct paths (cold reads that never repeat)
-- Headers given to wrk with -H are sent with every request. done() prints one JSON line
-- starting with {"pinhole_wrk":1, ...}: counts, duration and latencies in microseconds.

local next_thread_id = 0

local thread_objects = {}

function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
  table.insert(thread_objects, thread)
  for _, t in ipairs(thread_objects) do
    t:set("thread_count", next_thread_id)
  end
end

local requests = {}
local request_count = 0
local sequential = false
local position = 0

function init(args)
  local paths_file = args[1]
  if paths_file == nil then
    error("get_paths.lua needs a paths file argument")
  end
  local seed = tonumber(args[2]) or 1
  local method = args[3] or "GET"
  sequential = args[4] == "sequential"
  math.randomseed(seed + (thread_id or 0) * 7919)
  -- Requests are formatted once here so that request() costs one table lookup.
  for line in io.lines(paths_file) do
    if line ~= "" then
      request_count = request_count + 1
      requests[request_count] = wrk.format(method, line)
    end
  end
  if request_count == 0 then
    error("no paths in " .. paths_file)
  end
  position = math.floor((thread_id or 0) * request_count / (thread_count or 1))
end

function request()
  if sequential then
    position = position % request_count + 1
    return requests[position]
  end
  return requests[math.random(request_count)]
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
