-- Validate (and optionally consume) one API-key request, atomically: every limit passes and all
-- are consumed, or nothing is. All keys share the bucket hash tag of KEYS[3].
-- KEYS: 1 meta hash, 2 pending-usage hash, 3 key prefix "qg:{b<n>}:" (for derived keys)
-- ARGV: 1 tenant, 2 now, 3 units, 4 consume (1|0), 5 day yyyymmdd,
--       6..13 start/end of the minute, hour, day, month windows, 14 idempotency suffix or ""
-- Reply: {"miss", gen} | {"fill", id} | {"nf"} | {"idem", json} |
--        {code, used, limit, consumed, exp, features_json, product, retry_after, n, (kind, period, limit, used, end)*n}
local meta = redis.call('HMGET', KEYS[1], 'ok', 'id', 'tenant', 'revoked', 'exp', 'limit', 'off', 'rules', 'feat', 'prod')
if not meta[1] then
  return {'miss', redis.call('GET', KEYS[3] .. 'gen:' .. string.sub(KEYS[1], #KEYS[3] + 3)) or '0'}
end
if meta[1] ~= '1' or meta[3] ~= ARGV[1] then
  return {'nf'}
end
local id = meta[2]
local prefix = KEYS[3]
local consume = ARGV[4] == '1'
local idem_key = nil
if consume and ARGV[14] ~= '' then
  idem_key = prefix .. 'i:' .. id .. ':' .. ARGV[14]
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

local period_index = {minute = 6, hour = 8, day = 10, month = 12}
local windows = {}
for kind, period, wlimit in string.gmatch(meta[8], '(%a+):(%a+):(%d+)') do
  local at = period_index[period]
  local wend = tonumber(ARGV[at + 1])
  local wkey = prefix .. 'w:' .. id .. ':' .. kind .. ':' .. period .. ':' .. ARGV[at]
  local current = tonumber(redis.call('GET', wkey) or '0')
  local cost = kind == 'calls' and 1 or units
  if units == 0 then cost = 0 end
  wlimit = tonumber(wlimit)
  if code == 'ok' or string.sub(code, 1, 11) == 'rate_limit_' then
    if current + cost > wlimit and (wend - now) > retry_after then
      code = 'rate_limit_' .. period
      retry_after = wend - now
    end
  end
  windows[#windows + 1] = {kind, period, wlimit, current, wend, wkey, cost}
end

local consumed = 0
if code == 'ok' and consume and units > 0 then
  consumed = units
  used = tonumber(redis.call('INCRBY', used_key, units)) - offset
  for _, w in ipairs(windows) do
    w[4] = redis.call('INCRBY', w[6], w[7])
    if w[4] == w[7] then  -- a new window: it expires a minute after it ends (relative: the injected clock need not match Redis's)
      redis.call('EXPIRE', w[6], w[5] - now + 60)
    end
  end
  redis.call('HINCRBY', KEYS[2], id .. ':' .. ARGV[5], units)
end

local reply = {code, used, limit, consumed, exp, meta[9], meta[10], retry_after, #windows}
for _, w in ipairs(windows) do
  reply[#reply + 1] = w[1]
  reply[#reply + 1] = w[2]
  reply[#reply + 1] = w[3]
  reply[#reply + 1] = w[4]
  reply[#reply + 1] = w[5]
end
if idem_key then
  redis.call('SET', idem_key, cjson.encode(reply), 'EX', 86400)
end
return reply
