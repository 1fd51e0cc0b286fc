-- Validate (and optionally consume) one API-key request, atomically: every limit passes and all
-- are consumed, or nothing is. All keys share the bucket hash tag of KEYS[3].
-- The script only counts and returns numbers; the gateway renders the answer from them (the
-- compiled fast path does that in well under a microsecond; in Lua it cost Redis ~13 us a call).
-- Every redis.call costs more than the Lua around it, so a validation makes four: the packed
-- metadata, the packed counters, their new value, and the pending usage.
-- KEYS: 1 packed metadata, 2 pending-usage hash, 3 key prefix "qg:{b<n>}:" (for derived keys)
-- ARGV: 1 tenant, 2 units, 3 consume (1|0), 4 idempotency suffix or "", 5 the clock, packed
--       (cmsgpack: now, day yyyymmdd, then start/end of the minute, hour, day, month windows)
-- Metadata (engine.py fills it): cmsgpack {format, found (0|1), id, tenant, revoked (0|1), then
--   as numbers exp, limit (-1: none), offset, then features json, product, expires ISO or "",
--   then as numbers 8 window limits (calls then units, each minute..month; 0: none)}
-- Numbers arrive packed, not as text: parsing them cost Redis more than the rest of the ARGV.
-- Counters (no TTL: they may hold unflushed usage): cmsgpack {total consumed ever, then for each
--   of the 8 windows its start and count}; a count is of the current window only if its start is.
-- Reply: {"miss", gen} | {"fill", id} | {"nf"} |
--        {code, consumed, retry_after, near_limit (0|1), product, used, limit, features json,
--         expires ISO, then slot (0..7), limit, used for each limited window}
-- A retried consume with an Idempotency-Key gets the first reply again, as it was (unless the key has
-- been revoked since: then it is refused like any request).
local FORMAT = '5'  -- engine.META_FORMAT
local packed = redis.pcall('GET', KEYS[1])  -- metadata of an older format may be of another type
local m = type(packed) == 'string' and {cmsgpack.unpack(packed)} or {}
local format, found, id, tenant, revoked, exp, limit, offset, features, product, expires =
  m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9], m[10], m[11]  -- then window limits m[12..19]
if format ~= FORMAT then
  return {'miss', redis.call('GET', KEYS[3] .. 'gen:' .. string.sub(KEYS[1], #KEYS[3] + 3)) or '0'}
end
if found ~= '1' or tenant ~= ARGV[1] then
  return {'nf'}
end
local prefix = KEYS[3]
local consume = ARGV[3] == '1'
local idem_key = nil
if consume and ARGV[4] ~= '' and revoked ~= '1' then  -- revocation ends replays too
  idem_key = prefix .. 'ir:' .. id .. ':' .. ARGV[4]  -- ir: msgpack replies (i: held JSON)
  local stored = redis.call('GET', idem_key)
  if stored then
    return {cmsgpack.unpack(stored)}
  end
end
local counters_key = prefix .. 'c:' .. id
local blob = redis.call('GET', counters_key)
if not blob then
  return {'fill', id}
end
local c = {cmsgpack.unpack(blob)}
local clock = {cmsgpack.unpack(ARGV[5])}
local now, day = clock[1], clock[2]
local units = tonumber(ARGV[2])
local used = c[1] - offset
local code = 'ok'
local retry_after = 0

if revoked == '1' then
  code = 'revoked'
elseif exp > 0 and now >= exp then
  code = 'expired'
elseif limit >= 0 and used + units > limit then
  code = 'quota_exhausted'
  retry_after = exp > 0 and (exp - now) or 86400
end

local reply = {code, 0, 0, 0, product, used, limit, features, expires}
local limited = false
local call_cost = units == 0 and 0 or 1  -- units 0: a look, as usage takes
for slot = 1, 8 do
  local wlimit = m[11 + slot]
  local p = (slot - 1) % 4
  local start = clock[3 + 2 * p]
  local current = c[2 * slot] == start and c[2 * slot + 1] or 0
  if wlimit > 0 then
    local wend = clock[4 + 2 * p]
    local cost = slot <= 4 and call_cost or units
    if (code == 'ok' or limited) and current + cost > wlimit and wend - now > retry_after then
      code = 'rate_limit_' .. ({'minute', 'hour', 'day', 'month'})[p + 1]
      limited = true
      retry_after = wend - now
    end
    local n = #reply
    reply[n + 1], reply[n + 2], reply[n + 3] = slot - 1, wlimit, current
  end
  c[2 * slot], c[2 * slot + 1] = start, current
end

if code == 'ok' and consume and units > 0 then
  reply[2] = units
  c[1] = c[1] + units
  used = used + units
  reply[6] = used
  for slot = 1, 8 do  -- windows without a limit count too: a limit added later starts from the truth
    c[2 * slot + 1] = c[2 * slot + 1] + (slot <= 4 and 1 or units)
  end
  for i = 10, #reply, 3 do
    reply[i + 2] = c[2 * reply[i] + 3]
  end
  redis.call('SET', counters_key, cmsgpack.pack(unpack(c)))
  redis.call('HINCRBY', KEYS[2], id .. ':' .. day, units)
end

local near = limit > 0 and used >= 0.8 * limit
for i = 10, #reply, 3 do
  near = near or reply[i + 2] >= 0.8 * reply[i + 1]
end
reply[1], reply[3], reply[4] = code, retry_after, near and 1 or 0
if idem_key then
  local first = cmsgpack.pack(unpack(reply))  -- msgpack keeps big integers exact
  redis.call('SET', idem_key, first, 'EX', 86400)
  if reply[2] > 0 then  -- it consumed: written behind with the usage, so the replay outlives a loss of Redis data
    redis.call('HSET', KEYS[2], 'i:' .. id .. ':' .. ARGV[4], first)
  end
end
return reply
