-- Validate (and optionally consume) one API-key request, atomically: every limit passes and all
-- are consumed, or nothing is. All keys share the bucket hash tag of KEYS[3].
-- The answer's JSON body is rendered here, beside the numbers it reports, so the gateway process
-- (the bottleneck: Redis has cycles to spare) only forwards it.
-- KEYS: 1 meta hash, 2 pending-usage hash, 3 key prefix "qg:{b<n>}:" (for derived keys)
-- ARGV: 1 tenant, 2 now, 3 units, 4 consume (1|0), 5 idempotency suffix or "", 6 day yyyymmdd,
--       7..14 start/end of the minute, hour, day, month windows, 15..18 their ends as ISO-8601
-- Reply: {"miss", gen} | {"fill", id} | {"nf"} | {"idem", json of a reply} |
--        {code, consumed, retry_after, near_limit (0|1), product, body_json,
--         limit_name, limit, remaining, window_seconds (the limit a 429 names), used}
local meta = redis.call('HMGET', KEYS[1], 'ok', 'id', 'tenant', 'revoked', 'exp', 'limit', 'off', 'rules', 'feat',
  'prod', 'expiso')
if not meta[1] or (meta[1] == '1' and not meta[11]) then  -- absent, or cached by an older format
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

-- Window ARGV positions by period: start at ARGV[i], end at ARGV[i + 1], ISO end at ARGV[iso].
-- (Plain comparisons: a table literal here would be allocated on every call.)
local function window_args(period)
  if period == 'minute' then return 7, 15 elseif period == 'hour' then return 9, 16
  elseif period == 'day' then return 11, 17 else return 13, 18 end
end
local n = 0
local w_kind, w_period, w_limit, w_used, w_key, w_cost, w_end, w_iso = {}, {}, {}, {}, {}, {}, {}, {}
for kind, period, wlimit in string.gmatch(meta[8], '(%a+):(%a+):(%d+)') do
  local at, iso = window_args(period)
  local wend = tonumber(ARGV[at + 1])
  local wkey = prefix .. 'w:' .. id .. ':' .. kind .. ':' .. period .. ':' .. ARGV[at]
  local current = tonumber(redis.call('GET', wkey) or '0')
  local cost = (units == 0 and 0) or (kind == 'calls' and 1) or units
  wlimit = tonumber(wlimit)
  if (code == 'ok' or string.sub(code, 1, 11) == 'rate_limit_') and current + cost > wlimit and wend - now > retry_after then
    code = 'rate_limit_' .. period
    retry_after = wend - now
  end
  n = n + 1
  w_kind[n], w_period[n], w_limit[n], w_used[n], w_key[n], w_cost[n], w_end[n], w_iso[n] =
    kind, period, wlimit, current, wkey, cost, wend, ARGV[iso]
end

local consumed = 0
if code == 'ok' and consume and units > 0 then
  consumed = units
  used = redis.call('INCRBY', used_key, units) - offset
  for i = 1, n do
    local value = redis.call('INCRBY', w_key[i], w_cost[i])
    w_used[i] = value
    if value == w_cost[i] then  -- a new window: it expires a minute after it ends (relative: the injected clock need not match Redis's)
      redis.call('EXPIRE', w_key[i], w_end[i] - now + 60)
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
for i = 1, n do
  near = near or w_used[i] >= 0.8 * w_limit[i]
  parts[i] = string.format('"%s_%s":{"limit":%d,"used":%d,"remaining":%d,"resetsAt":"%s"}', w_kind[i], w_period[i],
    w_limit[i], w_used[i], math.max(w_limit[i] - w_used[i], 0), w_iso[i])
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
  elseif string.sub(code, 1, 11) == 'rate_limit_' then
    local period = string.sub(code, 12)
    local tightest = nil
    for i = 1, n do
      if w_period[i] == period and (not tightest or w_limit[i] - w_used[i] < w_limit[tightest] - w_used[tightest]) then
        tightest = i
      end
    end
    limit_name = w_kind[tightest] .. '_' .. period
    named_limit, remaining = w_limit[tightest], math.max(w_limit[tightest] - w_used[tightest], 0)
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
