-- wrk script for `python -m bench`: spendCredits in time slots, each slot one variant's accounts.
--
--   wrk -t2 -c16 -dNs -s bench/slots.lua http://127.0.0.1:PORT/graphql -- \
--       TOKEN TAG T0_MS SLOT_MS GUARD_MS CYCLES ROUND WARM_FILE FILE_1 ... FILE_n
--
-- Time (CLOCK_MONOTONIC, the clock Python's time.monotonic() reads) is cut into slots of SLOT_MS from T0_MS:
-- slot k belongs to cycle k // n, and its variant is (k % n + cycle + ROUND) % n + 1, so every connection
-- spends from the same variant's accounts (FILE_v: one global user ID per line) at the same time, and each
-- variant takes every position of a cycle in turn. A request sent in the first GUARD_MS of its slot (while
-- the previous variant's requests in flight finish) or outside the CYCLES cycles (before T0_MS: the warm-up,
-- on WARM_FILE's accounts; after the last cycle) is sent but not counted. done() prints "BENCH key=value ..."
-- (every request, as spend.lua does), one "BENCH_SLOT cycle=c variant=v sent=n" per slot with counted
-- requests, and "BENCH_SAMPLE <body>" with the first response that was not a success.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local BODY = '{"query":"mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { __typename'
  .. ' ... on SpendCreditsSuccess { balance { available } } } }","variables":{"input":{"userId":"%s",'
  .. '"agentId":"bench","activity":"answer","credits":"0.001","idempotencyKey":"%s"}}}'

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

local function read_ids(path)
  local ids = {}
  for line in io.lines(path) do
    if line ~= "" then
      ids[#ids + 1] = line
    end
  end
  if #ids == 0 then
    error("no user IDs in " .. path)
  end
  return ids
end

function init(args)
  if #args < 9 then
    error("usage: wrk ... -s slots.lua URL -- TOKEN TAG T0_MS SLOT_MS GUARD_MS CYCLES ROUND WARM_FILE FILE...")
  end
  local token = args[1]
  prefix = args[2] .. "-" .. thread_no .. "-"
  t0, slot_ms, guard_ms = tonumber(args[3]), tonumber(args[4]), tonumber(args[5])
  cycles, round_no = tonumber(args[6]), tonumber(args[7])
  warm = read_ids(args[8])
  variants = {}
  for i = 9, #args do
    variants[#variants + 1] = read_ids(args[i])
  end
  n = #variants
  math.randomseed(os.time() + 7919 * thread_no)
  headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
  sent = 0
  counted = {}
  non2xx = 0
  not_success = 0
  sample = ""
end

-- The variant (1..n) and cycle (0..) of a request sent at ``at``, and whether it counts; nil before T0_MS
-- and after the last cycle.
local function slot_of(at)
  local since = at - t0
  if since < 0 then
    return nil
  end
  local k = math.floor(since / slot_ms)
  local cycle = math.floor(k / n)
  if cycle >= cycles then
    return nil
  end
  local variant = (k % n + cycle + round_no) % n + 1
  return variant, cycle, since - k * slot_ms >= guard_ms
end

function request()
  sent = sent + 1
  local variant, cycle, counts = slot_of(now_ms())
  local ids = warm
  if variant ~= nil then
    ids = variants[variant]
    if counts then
      local key = cycle * n + variant - 1
      counted[key] = (counted[key] or 0) + 1
    end
  end
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
  local slots = {}
  local n_variants = 0
  for _, thread in ipairs(threads) do
    total_non2xx = total_non2xx + thread:get("non2xx")
    total_not_success = total_not_success + thread:get("not_success")
    n_variants = thread:get("n")
    local s = thread:get("sample")
    if first == "" and s ~= nil and s ~= "" then
      first = s
    end
    local c = thread:get("counted")
    for key, value in pairs(c) do
      slots[key] = (slots[key] or 0) + value
    end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d non2xx=%d not_success=%d connect=%d read=%d write=%d timeout=%d"
      .. " p50_us=%d p90_us=%d p99_us=%d\n",
    summary.requests, summary.duration, total_non2xx, total_not_success, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
  for key, value in pairs(slots) do
    io.write(string.format("BENCH_SLOT cycle=%d variant=%d sent=%d\n",
      math.floor(key / n_variants), key % n_variants + 1, value))
  end
  if first ~= "" then
    io.write("BENCH_SAMPLE " .. (string.gsub(first, "\n", " ")) .. "\n")
  end
end
