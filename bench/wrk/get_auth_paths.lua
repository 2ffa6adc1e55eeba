-- wrk script: each request GETs a path with its own bearer token, picked at random from a
-- file of "PATH<TAB>TOKEN" lines (one signed-in reader's request a line), so that a load of
-- per-user reads (a home timeline) spreads over many users.
--
-- Usage: wrk ... -s get_auth_paths.lua URL -- LINES_FILE [SEED]
-- done() prints one JSON line starting with {"pinhole_wrk":1, ...}, as get_paths.lua does.

local next_thread_id = 0

function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
end

local requests = {}
local request_count = 0

function init(args)
  local lines_file = args[1]
  if lines_file == nil then
    error("get_auth_paths.lua needs a file of PATH<TAB>TOKEN lines")
  end
  local seed = tonumber(args[2]) or 1
  math.randomseed(seed + (thread_id or 0) * 7919)
  for line in io.lines(lines_file) do
    local path, token = line:match("^([^\t]+)\t(.+)$")
    if path ~= nil then
      request_count = request_count + 1
      requests[request_count] = wrk.format("GET", path, { Authorization = "Bearer " .. token })
    end
  end
  if request_count == 0 then
    error("no PATH<TAB>TOKEN lines in " .. lines_file)
  end
end

function request()
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
