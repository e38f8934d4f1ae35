-- wrk script: POST every line of an applications file, cycling; count status codes; report.
--
--   wrk -t1 -c64 -d10s -s benchmarks/decide.lua http://127.0.0.1:8000/decide \
--       -- benchmarks/data/applications.jsonl [think_ms]
--
-- Arguments after `--`:
--   1. the JSONL file (one request body per line; required)
--   2. think time in ms before each request on a connection (absent or 0: none); used to hold
--      a fixed, lower rate for the latency run
-- Environment: WRK_AUTH=<Authorization header value> ("Bearer <key>") is sent on every request.
-- WRK_IDS_OUT=<file> writes the decision_id of every 200 response there (one a
-- line), so the harness can check each of them against the audit store (decisions lost).
--
-- Each thread starts at its own offset in the file. done() prints ONE line starting with
-- "WRK_RESULT " followed by JSON: requests, duration, errors, status counts, latency
-- percentiles in microseconds.

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

local requests = {}
local n = 0
local idx = 0
local think_ms = 0
statuses = {}
ids = {}
collect_ids = false

function init(args)
   local path = args[1]
   if path == nil then
      error("decide.lua: pass the applications file after --")
   end
   local headers = { ["Content-Type"] = "application/json" }
   local auth = os.getenv("WRK_AUTH")
   if auth ~= nil and auth ~= "" then
      headers["Authorization"] = auth
   end
   for line in io.lines(path) do
      if #line > 0 then
         n = n + 1
         requests[n] = wrk.format("POST", wrk.path, headers, line)
      end
   end
   if n == 0 then
      error("decide.lua: no requests in " .. path)
   end
   -- each thread its own offset (a stride that is not a multiple of typical file sizes)
   idx = ((tid or 0) * 977) % n
   local ids_out = os.getenv("WRK_IDS_OUT")
   collect_ids = ids_out ~= nil and ids_out ~= ""
   think_ms = tonumber(args[2] or "0") or 0
   if think_ms <= 0 then
      delay = nil -- wrk checks after init(): no delay() means back-to-back requests
   end
end

function delay()
   return think_ms
end

function request()
   idx = idx % n + 1
   return requests[idx]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if collect_ids and status == 200 then
      local id = string.match(body, '"decision_id":"([^"]+)"')
      if id then
         ids[#ids + 1] = id
      end
   end
end

local function json_escape(s)
   return (string.gsub(s, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end))
end

function done(summary, latency, _requests)
   local counts = {}
   local all_ids = {}
   for _, t in ipairs(threads) do
      local st = t:get("statuses") or {}
      for code, c in pairs(st) do
         counts[code] = (counts[code] or 0) + c
      end
      local tids = t:get("ids") or {}
      for _, id in ipairs(tids) do
         all_ids[#all_ids + 1] = id
      end
   end
   local ids_path = os.getenv("WRK_IDS_OUT")
   if ids_path == "" then
      ids_path = nil
   end
   if ids_path ~= nil then
      local f = assert(io.open(ids_path, "w"))
      for _, id in ipairs(all_ids) do
         f:write(id, "\n")
      end
      f:close()
   end
   local parts = {}
   for code, c in pairs(counts) do
      parts[#parts + 1] = string.format('"%d":%d', code, c)
   end
   local e = summary.errors
   print(string.format(
      'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"statuses":{%s},"ids_collected":%d,"ids_file":"%s",'
         .. '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,'
         .. '"p50":%d,"p90":%d,"p99":%d,"p99_9":%d}}',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      table.concat(parts, ","), #all_ids, json_escape(ids_path or ""),
      latency.min, latency.mean, latency.max, latency.stdev,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9)
   ))
end
