-- wrk script for `python -m bench`: POST the spendCredits mutation, one fresh idempotencyKey per request.
--
--   wrk -t2 -c16 -d10s -s bench/spend.lua http://127.0.0.1:PORT/graphql -- TOKEN IDS_FILE TAG
--
-- TOKEN is a service token with scope usage:write, IDS_FILE holds one global user ID per line (each request
-- picks one at random) and TAG makes the keys of this run unique. done() prints one machine-readable line,
-- "BENCH key=value ...", and "BENCH_SAMPLE <body>" with the first response that was not a success.

local BODY = '{"query":"mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { __typename'
  .. ' ... on SpendCreditsSuccess { balance { available } } } }","variables":{"input":{"userId":"%s",'
  .. '"agentId":"bench","activity":"answer","credits":"0.001","idempotencyKey":"%s"}}}'

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  local token, ids_path, tag = args[1], args[2], args[3]
  if token == nil or ids_path == nil or tag == nil then
    error("usage: wrk ... -s spend.lua URL -- TOKEN IDS_FILE TAG")
  end
  ids = {}
  for line in io.lines(ids_path) do
    if line ~= "" then
      ids[#ids + 1] = line
    end
  end
  math.randomseed(os.time() + 7919 * thread_no)
  headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
  prefix = tag .. "-" .. thread_no .. "-"
  sent = 0
  non2xx = 0
  not_success = 0
  sample = ""
end

function request()
  sent = sent + 1
  local body = string.format(BODY, ids[math.random(#ids)], prefix .. sent)
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  local bad = false
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    bad = true
  elseif not string.find(body, "SpendCreditsSuccess", 1, true) then
    not_success = not_success + 1
    bad = true
  end
  if bad and sample == "" then
    sample = "HTTP " .. status .. ": " .. string.sub(body, 1, 400)
  end
end

function done(summary, latency, requests)
  local total_non2xx, total_not_success, first = 0, 0, ""
  for _, thread in ipairs(threads) do
    total_non2xx = total_non2xx + thread:get("non2xx")
    total_not_success = total_not_success + thread:get("not_success")
    local s = thread:get("sample")
    if first == "" and s ~= nil and s ~= "" then
      first = s
    end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d non2xx=%d not_success=%d connect=%d read=%d write=%d timeout=%d"
      .. " p50_us=%d p90_us=%d p99_us=%d\n",
    summary.requests, summary.duration, total_non2xx, total_not_success, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
  if first ~= "" then
    io.write("BENCH_SAMPLE " .. (string.gsub(first, "\n", " ")) .. "\n")
  end
end
