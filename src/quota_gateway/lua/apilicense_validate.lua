-- Validate (and optionally consume) one API-key request, atomically: every limit passes and all
-- are consumed, or nothing is. All keys share the bucket hash tag of KEYS[3].
-- The answer's JSON body is rendered here, beside the numbers it reports, and the gateway only
-- forwards it: ~3.5 us of script time instead of ~6 us of decoding and dict building in the
-- gateway process, the busier of the two (benchmarks/load.py prints both CPU costs).
-- KEYS: 1 meta hash, 2 pending-usage hash, 3 key prefix "qg:{b<n>}:" (for derived keys)
-- ARGV: 1 tenant, 2 now, 3 units, 4 consume (1|0), 5 idempotency suffix or "", 6 day yyyymmdd,
--       7..14 start/end of the minute, hour, day, month windows, 15..18 their ends as ISO-8601
-- Reply: {"miss", gen} | {"fill", id} | {"nf"} | {"idem", json of a reply} |
--        {code, consumed, retry_after, near_limit (0|1), product, body_json,
--         limit_name, limit, remaining, window_seconds (the limit a 429 names), used}
-- Meta fields 12..19 hold the window limits, one field per (kind, period) that has one, in the
-- order calls then units, each minute, hour, day, month (so no rule text is parsed per call).
local meta = redis.call('HMGET', KEYS[1], 'ok', 'id', 'tenant', 'revoked', 'exp', 'limit', 'off', 'v', 'feat',
  'prod', 'expiso', 'calls:minute', 'calls:hour', 'calls:day', 'calls:month', 'units:minute', 'units:hour', 'units:day',
  'units:month')
if not meta[1] or (meta[1] == '1' and meta[8] ~= '2') then  -- absent, or not in engine.META_FORMAT
  return {'miss', redis.call('GET', KEYS[3] .. 'gen:' .. string.sub(KEYS[1], #KEYS[3] + 3)) or '0'}
end
if meta[1] ~= '1' or meta[3] ~= ARGV[1] then
  return {'nf'}
end
local id = meta[2]
local prefix = KEYS[3]
local consume = ARGV[4] == '1'
local idem_key = nil
if consume and ARGV[5] ~= '' then
  idem_key = prefix .. 'i:' .. id .. ':' .. ARGV[5]
  local stored = redis.call('GET', idem_key)
  if stored then
    return {'idem', stored}
  end
end
local used_key = prefix .. 'u:' .. id
local total = redis.call('GET', used_key)
if not total then
  return {'fill', id}
end
local now = tonumber(ARGV[2])
local units = tonumber(ARGV[3])
local offset = tonumber(meta[7])
local used = tonumber(total) - offset
local limit = tonumber(meta[6])
local exp = tonumber(meta[5])
local code = 'ok'
local retry_after = 0

if meta[4] == '1' then
  code = 'revoked'
elseif exp > 0 and now >= exp then
  code = 'expired'
elseif limit >= 0 and used + units > limit then
  code = 'quota_exhausted'
  retry_after = exp > 0 and (exp - now) or 86400
end

-- Windows: W[i] = {kind, period, limit, used, key, cost, end, iso}. Period p (0..3) starts at
-- ARGV[7 + 2p], ends at ARGV[8 + 2p] and ends at ARGV[15 + p] as ISO text.
local W = {}
local limited = false
for slot = 0, 7 do
  local wlimit = meta[12 + slot]
  if wlimit then
    local p = slot % 4
    local kind = slot < 4 and 'calls' or 'units'
    local period = (p == 0 and 'minute') or (p == 1 and 'hour') or (p == 2 and 'day') or 'month'
    local wend = tonumber(ARGV[8 + 2 * p])
    local wkey = prefix .. 'w:' .. id .. ':' .. kind .. ':' .. period .. ':' .. ARGV[7 + 2 * p]
    local current = tonumber(redis.call('GET', wkey) or '0')
    local cost = (units == 0 and 0) or (slot < 4 and 1) or units
    wlimit = tonumber(wlimit)
    if (code == 'ok' or limited) and current + cost > wlimit and wend - now > retry_after then
      code = 'rate_limit_' .. period
      limited = true
      retry_after = wend - now
    end
    W[#W + 1] = {kind, period, wlimit, current, wkey, cost, wend, ARGV[15 + p]}
  end
end

local consumed = 0
if code == 'ok' and consume and units > 0 then
  consumed = units
  used = redis.call('INCRBY', used_key, units) - offset
  for _, w in ipairs(W) do
    w[4] = redis.call('INCRBY', w[5], w[6])
    if w[4] == w[6] then  -- a new window: it expires a minute after it ends (relative: the injected clock need not match Redis's)
      redis.call('EXPIRE', w[5], w[7] - now + 60)
    end
  end
  redis.call('HINCRBY', KEYS[2], id .. ':' .. ARGV[6], units)
end

-- The body. Numbers through %d: Lua's tostring would print large counts in exponent form.
local near = limit > 0 and used >= 0.8 * limit
local quota
if limit < 0 then
  quota = string.format('{"limit":null,"used":%d,"remaining":null}', used)
else
  quota = string.format('{"limit":%d,"used":%d,"remaining":%d}', limit, used, math.max(limit - used, 0))
end
local parts = {}
for i, w in ipairs(W) do
  near = near or w[4] >= 0.8 * w[3]
  parts[i] = string.format('"%s_%s":{"limit":%d,"used":%d,"remaining":%d,"resetsAt":"%s"}', w[1], w[2], w[3], w[4],
    math.max(w[3] - w[4], 0), w[8])
end
local rate_limits = '{' .. table.concat(parts, ',') .. '}'

local body
local limit_name, named_limit, remaining, window_seconds = '', 0, 0, 0
if code == 'ok' then
  local expires_at = meta[11] ~= '' and ('"' .. meta[11] .. '"') or 'null'
  body = string.format('{"isValid":true,"unitsConsumed":%d,"quota":%s,"rateLimits":%s,"features":%s,"expiresAt":%s}',
    consumed, quota, rate_limits, meta[9], expires_at)
else
  local messages = {
    revoked = 'this API key has been revoked',
    expired = 'this API key has expired',
    quota_exhausted = 'the lifetime quota of this API key is used up',
    rate_limit_minute = 'per-minute limit reached',
    rate_limit_hour = 'per-hour limit reached',
    rate_limit_day = 'per-day limit reached',
    rate_limit_month = 'per-month limit reached',
  }
  body = string.format('{"isValid":false,"errorCode":"%s","errorMessage":"%s","quota":%s,"rateLimits":%s', code,
    messages[code], quota, rate_limits)
  if code == 'quota_exhausted' then
    limit_name, named_limit, remaining = 'quota', limit, math.max(limit - used, 0)
  elseif limited then
    local period = string.sub(code, 12)
    local tightest = nil
    for _, w in ipairs(W) do
      if w[2] == period and (not tightest or w[3] - w[4] < tightest[3] - tightest[4]) then
        tightest = w
      end
    end
    limit_name = tightest[1] .. '_' .. period
    named_limit, remaining = tightest[3], math.max(tightest[3] - tightest[4], 0)
    window_seconds = ({minute = 60, hour = 3600, day = 86400, month = 2592000})[period]
  end
  if limit_name ~= '' then
    body = body .. string.format(',"retryAfterSeconds":%d', retry_after)
  end
  body = body .. '}'
end

local reply = {code, consumed, retry_after, near and 1 or 0, meta[10], body, limit_name, named_limit, remaining,
               window_seconds, used}
if idem_key then
  redis.call('SET', idem_key, cjson.encode(reply), 'EX', 86400)
end
return reply
