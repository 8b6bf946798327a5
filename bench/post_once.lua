-- wrk script: each thread sends its own slice of pre-signed requests once, then stops.
-- REQUESTS_FILE holds "<Stripe-Signature>\t<body>" per line (as post_events.lua reads it).
local requests = {}
local index = 0
local answered = 0
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local total = tonumber(os.getenv("THREADS") or "1")
  local n = 0
  for line in io.lines(os.getenv("REQUESTS_FILE")) do
    if n % total == id then
      local tab = line:find("\t", 1, true)
      local headers = {["Content-Type"] = "application/json",
                       ["Stripe-Signature"] = line:sub(1, tab - 1)}
      table.insert(requests, wrk.format("POST", "/webhooks/stripe", headers, line:sub(tab + 1)))
    end
    n = n + 1
  end
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function response(status, headers, body)
  answered = answered + 1
  if answered >= #requests then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
