-- wrk script for `python -m bench` (BENCH_PARTS=batch): POST spendCreditsBatch with EVENTS spends per request,
-- each for a random user and with a fresh idempotencyKey.
--
--   wrk -t2 -c16 -d10s -s bench/batch.lua http://127.0.0.1:PORT/graphql -- TOKEN IDS_FILE TAG EVENTS ACCOUNTS
--
-- Each request's events go to ACCOUNTS users picked at random (a runtime reporting a burst for the customers it
-- serves), in turn.
-- done() prints "BENCH key=value ..." (events_ok: the events answered SpendCreditsSuccess) and "BENCH_SAMPLE
-- <body>" with the first response that was not a batch of successes.

local HEAD = '{"query":"mutation($input: SpendCreditsBatchInput!) { spendCreditsBatch(input: $input) {'
  .. ' __typename ... on SpendCreditsBatchSuccess { results { __typename } } } }","variables":{"input":{"events":['
local EVENT = '{"userId":"%s","agentId":"bench","activity":"answer","credits":"0.001","idempotencyKey":"%s"}'
local TAIL = ']}}}'

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  local token, ids_path, tag, events, accounts = args[1], args[2], args[3], args[4], args[5]
  if token == nil or ids_path == nil or tag == nil or events == nil or accounts == nil then
    error("usage: wrk ... -s batch.lua URL -- TOKEN IDS_FILE TAG EVENTS ACCOUNTS")
  end
  ids = {}
  for line in io.lines(ids_path) do
    if line ~= "" then
      ids[#ids + 1] = line
    end
  end
  per_request = tonumber(events)
  per_batch = tonumber(accounts)
  math.randomseed(os.time() + 7919 * thread_no)
  headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
  prefix = tag .. "-" .. thread_no .. "-"
  sent = 0
  non2xx = 0
  not_success = 0
  events_ok = 0
  sample = ""
end

function request()
  local parts, chosen = {}, {}
  for k = 1, per_batch do
    chosen[k] = ids[math.random(#ids)]
  end
  for n = 1, per_request do
    sent = sent + 1
    parts[n] = string.format(EVENT, chosen[(n - 1) % per_batch + 1], prefix .. sent)
  end
  return wrk.format("POST", nil, headers, HEAD .. table.concat(parts, ",") .. TAIL)
end

function response(status, headers, body)
  local bad = false
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    bad = true
  else
    local _, ok = string.gsub(body, '"SpendCreditsSuccess"', "")
    events_ok = events_ok + ok
    if ok ~= per_request then
      not_success = not_success + 1
      bad = true
    end
  end
  if bad and sample == "" then
    sample = "HTTP " .. status .. ": " .. string.sub(body, 1, 400)
  end
end

function done(summary, latency, requests)
  local total_non2xx, total_not_success, total_ok, first = 0, 0, 0, ""
  for _, thread in ipairs(threads) do
    total_non2xx = total_non2xx + thread:get("non2xx")
    total_not_success = total_not_success + thread:get("not_success")
    total_ok = total_ok + thread:get("events_ok")
    local s = thread:get("sample")
    if first == "" and s ~= nil and s ~= "" then
      first = s
    end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d non2xx=%d not_success=%d events_ok=%d connect=%d read=%d write=%d"
      .. " timeout=%d p50_us=%d p90_us=%d p99_us=%d\n",
    summary.requests, summary.duration, total_non2xx, total_not_success, total_ok, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
  if first ~= "" then
    io.write("BENCH_SAMPLE " .. (string.gsub(first, "\n", " ")) .. "\n")
  end
end
