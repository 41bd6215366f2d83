-- wrk script for the ingest benchmark: cycles through pre-signed webhook bodies.
--
-- Usage: wrk ... -s webhooks.lua URL -- <bodies.tsv> [first index]
-- Each line of bodies.tsv is "<X-Hub-Signature-256 value>\t<raw JSON body>". Requests are
-- pre-formatted in init() so request() is a table lookup. done() prints one line
-- "BENCH_JSON {...}" that tests/bench/run.py parses.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("thread_id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   local path = args[1]
   local first = tonumber(args[2] or "0")
   local bodies = {}
   for line in io.lines(path) do
      local tab = string.find(line, "\t", 1, true)
      bodies[#bodies + 1] = { string.sub(line, 1, tab - 1), string.sub(line, tab + 1) }
   end
   -- Each thread starts at its own offset so threads do not send the same bodies together.
   local n = #bodies
   local start = (first + thread_id * math.floor(n / 8)) % n
   requests = {}
   for i = 1, n do
      local pair = bodies[((start + i - 1) % n) + 1]
      requests[i] = wrk.format("POST", nil, {
         ["Content-Type"] = "application/json",
         ["X-Hub-Signature-256"] = pair[1],
      }, pair[2])
   end
   count = n
   index = 0
end

function request()
   index = index + 1
   if index > count then
      index = 1
   end
   return requests[index]
end

function done(summary, latency, requests)
   -- wrk counts a status above 399 in errors.status.
   local e = summary.errors
   local parts = {
      string.format('"generator":"wrk"'),
      string.format('"duration_s":%.6f', summary.duration / 1e6),
      string.format('"requests":%d', summary.requests),
      string.format('"bad_status":%d', e.status),
      string.format('"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}',
         e.connect, e.read, e.write, e.timeout),
      string.format('"latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"p999":%.3f,'
         .. '"mean":%.3f,"max":%.3f}',
         latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
         latency:percentile(99) / 1e3, latency:percentile(99.9) / 1e3,
         latency.mean / 1e3, latency.max / 1e3),
   }
   io.write("BENCH_JSON {" .. table.concat(parts, ",") .. "}\n")
end
