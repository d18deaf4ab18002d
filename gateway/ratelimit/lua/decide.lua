-- Decides one request against all of a client's limits and charges them (ratelimit/limiter.py).
--
-- One EVALSHA per request: Redis runs the script atomically, so concurrent requests from any
-- number of gateway processes are serialised on the server and can neither over-admit (read,
-- then increment: Kong #5790, APISIX #12592) nor under-admit. Time is Redis TIME, never a
-- gateway clock. The arithmetic is mirrored by limiter.MemoryLimiter; tests hold both to `limits`.
--
-- Strategies (all times are integers: windows in ms, gcra in µs):
--   sliding: sliding-window counter over windows aligned to the epoch, as `limits`' counter:
--            used = floor(previous * (window - offset) / window) + current.
--   fixed:   a window opens at the first admitted hit and counts until it closes (as `limits`).
--   gcra:    generic cell rate algorithm; emission interval T = period / amount, bucket `burst`.
--            A request costing n fits when TAT + n*T - burst*T <= now.
--
-- KEYS: one counter per limit, all in one hash slot (`{...}` tag), so it runs on Redis Cluster.
--       Several limit sets of one request (a per-IP ceiling and a per-API-key quota) are simply
--       more keys: they are decided and charged together, atomically, in the same call.
-- ARGV: [1] now in µs ("" = Redis TIME; tests pin it), [2] charge_rejected (0/1), then 7 per
--       key: strategy, cost, enforce (1; 0 = shadow: counted, never refusing), amount,
--       window_ms, emission_us, burst.
-- Returns: {allowed (1/0), then per key: remaining, reset_ms, retry_ms}. The request is allowed
--       when every enforced limit has room; then every limit with room is charged its cost (an
--       enforced one always has). Every key written gets an expiry; rejected requests are not
--       charged unless charge_rejected is 1.

local now_us
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now_us = tonumber(ARGV[1])
end
local now = math.floor(now_us / 1000)
local charge_rejected = ARGV[2] == '1'

-- Milliseconds from offset r of the current window until floor(p*(w-r)/w) + c <= room.
local function sliding_wait(p, c, r, w, room)
  if room < 0 then return w end
  local a = room - c
  if a >= 0 then
    if a >= p then return 0 end
    local first = w - math.ceil((a + 1) * w / p) + 1
    if first <= r then return 0 end
    return first - r
  end
  -- Not before the next window, where today's count c becomes the weighted one.
  local first = 0
  if room < c then first = w - math.ceil((room + 1) * w / c) + 1 end
  return w - r + first
end

local states = {}
local allowed = true
for i = 1, #KEYS do
  local base = 2 + (i - 1) * 7
  local s = {strategy = ARGV[base + 1], cost = tonumber(ARGV[base + 2]),
             enforce = ARGV[base + 3] == '1', amount = tonumber(ARGV[base + 4]),
             w = tonumber(ARGV[base + 5]), T = tonumber(ARGV[base + 6]),
             B = tonumber(ARGV[base + 7])}
  local strategy, cost = s.strategy, s.cost
  if strategy == 'sliding' then
    local idx = math.floor(now / s.w)
    local h = redis.call('HMGET', KEYS[i], 'i', 'p', 'c')
    local seen = tonumber(h[1])
    s.idx, s.p, s.c, s.r = idx, 0, 0, now - idx * s.w
    if seen ~= nil and seen >= idx then
      s.p, s.c = tonumber(h[2]), tonumber(h[3])
    elseif seen == idx - 1 then
      s.p = tonumber(h[3])
    end
    s.fits = math.floor(s.p * (s.w - s.r) / s.w) + s.c + cost <= s.amount
  elseif strategy == 'fixed' then
    local h = redis.call('HMGET', KEYS[i], 's', 'c')
    s.start, s.c = tonumber(h[1]), tonumber(h[2]) or 0
    if s.start == nil or now >= s.start + s.w then s.start, s.c = now, 0 end
    s.fits = s.c + cost <= s.amount
  else
    local tat = tonumber(redis.call('GET', KEYS[i])) or now_us
    if tat < now_us then tat = now_us end
    s.tat, s.tau = tat, s.T * s.B
    s.fits = tat + cost * s.T - s.tau <= now_us
  end
  if s.enforce then allowed = allowed and s.fits end
  states[i] = s
end

local reply = {allowed and 1 or 0}
for i, s in ipairs(states) do
  local remaining, reset, retry
  local strategy, cost = s.strategy, s.cost
  local charge = cost > 0 and ((allowed and s.fits) or charge_rejected)
  if strategy == 'sliding' then
    if charge then
      s.c = s.c + cost
      redis.call('HSET', KEYS[i], 'i', s.idx, 'p', s.p, 'c', s.c)
      redis.call('PEXPIRE', KEYS[i], (s.idx + 2) * s.w - now)
    end
    local used = math.floor(s.p * (s.w - s.r) / s.w) + s.c
    remaining = math.max(0, s.amount - used)
    reset = used > 0 and sliding_wait(s.p, s.c, s.r, s.w, used - 1) or 0
    retry = s.fits and 0 or sliding_wait(s.p, s.c, s.r, s.w, s.amount - cost)
  elseif strategy == 'fixed' then
    if charge then
      s.c = s.c + cost
      redis.call('HSET', KEYS[i], 's', s.start, 'c', s.c)
      redis.call('PEXPIRE', KEYS[i], s.start + s.w - now)
    end
    remaining = math.max(0, s.amount - s.c)
    reset = s.c > 0 and s.start + s.w - now or 0
    retry = s.fits and 0 or s.start + s.w - now
  else
    if charge then
      s.tat = s.tat + cost * s.T
      redis.call('SET', KEYS[i], string.format('%.0f', s.tat),
                 'PX', math.ceil((s.tat - now_us) / 1000))
    end
    remaining = math.max(0, math.floor((now_us + s.tau - s.tat) / s.T))
    if remaining >= s.B then
      remaining, reset = s.B, 0
    else
      reset = math.ceil((s.tat - s.tau + (remaining + 1) * s.T - now_us) / 1000)
    end
    retry = s.fits and 0 or math.ceil((s.tat + cost * s.T - s.tau - now_us) / 1000)
  end
  reply[#reply + 1] = remaining
  reply[#reply + 1] = reset
  reply[#reply + 1] = retry
end
return reply
