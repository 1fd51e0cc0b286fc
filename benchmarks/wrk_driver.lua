-- wrk script for the load harness: POSTs the bodies listed (one per line) in $QG_BENCH_BODIES,
-- round-robin from a per-thread offset, with the headers in $QG_BENCH_HEADERS ("Name: value" lines),
-- and prints one JSON line of results for the harness to parse.
local bodies, headers = {}, {["Content-Type"] = "application/json"}
for line in io.lines(os.getenv("QG_BENCH_BODIES")) do bodies[#bodies + 1] = line end
local header_file = os.getenv("QG_BENCH_HEADERS")
if header_file and header_file ~= "" then
  for line in io.lines(header_file) do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then headers[name] = value end
  end
end
local counter = 0
local QUANTILES = 1000  -- benchmarks/loadgen.py QUANTILES
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("counter", thread_count * 997)
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, headers, bodies[counter % #bodies + 1])
end

function done(summary, latency, requests)
  local errors = summary.errors
  local quantiles = {}  -- the latency distribution, so the harness can pool runs
  for i = 1, QUANTILES do
    quantiles[i] = latency:percentile((i - 0.5) * 100 / QUANTILES)
  end
  io.write(string.format('QG_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"non2xx": %d, "socket_errors": %d, "quantiles_us": [%s]}\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), errors.status,
    errors.connect + errors.read + errors.write + errors.timeout, table.concat(quantiles, ",")))
end
