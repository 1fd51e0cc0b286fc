-- Validate (and optionally consume) one API-key request, atomically: every limit passes and all
-- are consumed, or nothing is. All keys share the bucket hash tag of KEYS[3].
-- The script only counts: it returns numbers, and the gateway renders the answer from them (the
-- compiled fast path does that in ~1 us; the same rendering in Lua cost Redis ~13 us a call).
-- KEYS: 1 packed metadata, 2 pending-usage hash, 3 key prefix "qg:{b<n>}:" (for derived keys)
-- ARGV: 1 tenant, 2 now, 3 units, 4 consume (1|0), 5 idempotency suffix or "", 6 day yyyymmdd,
--       7..14 start/end of the minute, hour, day, month windows
-- Metadata: cmsgpack array (one GET and a C unpack: a third of an HMGET of the same fields)
--   {format, found (0|1), id, tenant, revoked (0|1), exp, limit (-1: none), offset, features json,
--    product, expires ISO or "", 8 window limits (calls then units, each minute..month; 0: none)}
-- Reply: {"miss", gen} | {"fill", id} | {"nf"} |
--        {code, consumed, retry_after, near_limit (0|1), product, used, limit, features json,
--         expires ISO, then slot (0..7), limit, used for each limited window}
-- A retried consume with an Idempotency-Key gets the first reply again, as it was.
local FORMAT = '3'  -- engine.META_FORMAT
local packed = redis.pcall('GET', KEYS[1])  -- metadata of an older format may be of another type
local meta = type(packed) == 'string' and {cmsgpack.unpack(packed)}
if not meta or meta[1] ~= FORMAT then
  return {'miss', redis.call('GET', KEYS[3] .. 'gen:' .. string.sub(KEYS[1], #KEYS[3] + 3)) or '0'}
end
if meta[2] ~= '1' or meta[4] ~= ARGV[1] then
  return {'nf'}
end
local id = meta[3]
local prefix = KEYS[3]
local consume = ARGV[4] == '1'
local idem_key = nil
if consume and ARGV[5] ~= '' then
  idem_key = prefix .. 'i:' .. id .. ':' .. ARGV[5]
  local stored = redis.call('GET', idem_key)
  if stored then
    return {cmsgpack.unpack(stored)}
  end
end
local used_key = prefix .. 'u:' .. id
local total = redis.call('GET', used_key)
if not total then
  return {'fill', id}
end
local now = tonumber(ARGV[2])
local units = tonumber(ARGV[3])
local offset = tonumber(meta[8])
local used = tonumber(total) - offset
local limit = tonumber(meta[7])
local exp = tonumber(meta[6])
local code = 'ok'
local retry_after = 0

if meta[5] == '1' then
  code = 'revoked'
elseif exp > 0 and now >= exp then
  code = 'expired'
elseif limit >= 0 and used + units > limit then
  code = 'quota_exhausted'
  retry_after = exp > 0 and (exp - now) or 86400
end

local WINDOWS = {'calls:minute', 'calls:hour', 'calls:day', 'calls:month',
                 'units:minute', 'units:hour', 'units:day', 'units:month'}
local PERIODS = {'minute', 'hour', 'day', 'month'}
local reply = {code, 0, 0, 0, meta[10], used, limit, meta[9], meta[11]}
-- Windows: reply holds slot, limit, used from index 10 on; keys[i] and costs[i] per window.
local keys, costs = {}, {}
local limited = false
for slot = 0, 7 do
  local wlimit = tonumber(meta[12 + slot])
  if wlimit > 0 then
    local p = slot % 4
    local wend = tonumber(ARGV[8 + 2 * p])
    local wkey = prefix .. 'w:' .. id .. ':' .. WINDOWS[slot + 1] .. ':' .. ARGV[7 + 2 * p]
    local current = tonumber(redis.call('GET', wkey) or '0')
    local cost = (slot < 4 and 1) or units
    if (code == 'ok' or limited) and current + cost > wlimit and wend - now > retry_after then
      code = 'rate_limit_' .. PERIODS[p + 1]
      limited = true
      retry_after = wend - now
    end
    local n = #reply
    reply[n + 1], reply[n + 2], reply[n + 3] = slot, wlimit, current
    keys[#keys + 1], costs[#costs + 1] = wkey, cost
  end
end

if code == 'ok' and consume and units > 0 then
  reply[2] = units
  used = redis.call('INCRBY', used_key, units) - offset
  reply[6] = used
  for i, wkey in ipairs(keys) do
    local cost = costs[i]
    local current = redis.call('INCRBY', wkey, cost)
    reply[9 + 3 * i] = current
    if current == cost then  -- a new window: it expires a minute after it ends (relative: the injected clock need not match Redis's)
      local p = reply[7 + 3 * i] % 4
      redis.call('EXPIRE', wkey, tonumber(ARGV[8 + 2 * p]) - now + 60)
    end
  end
  redis.call('HINCRBY', KEYS[2], id .. ':' .. ARGV[6], units)
end

local near = limit > 0 and used >= 0.8 * limit
for i = 10, #reply, 3 do
  near = near or reply[i + 2] >= 0.8 * reply[i + 1]
end
reply[1], reply[3], reply[4] = code, retry_after, near and 1 or 0
if idem_key then
  redis.call('SET', idem_key, cmsgpack.pack(unpack(reply)), 'EX', 86400)  -- msgpack keeps big integers exact
end
return reply
