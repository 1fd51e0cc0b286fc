-- Validate (and optionally consume) one API-key request, atomically: every limit passes and all
-- are consumed, or nothing is. All keys share the bucket hash tag of KEYS[3].
-- The script only counts and returns numbers; the gateway renders the answer from them (the
-- compiled fast path does that in well under a microsecond; in Lua it cost Redis ~13 us a call).
-- Every redis.call costs more than the Lua around it, so a validation makes four: the key's hash
-- (metadata and counters), its product's metadata, the new counters, and the pending usage.
-- KEYS: 1 the key's hash "qg:{b<n>}:k:<digest>", 2 pending-usage hash, 3 key prefix "qg:{b<n>}:"
-- ARGV: 1 tenant, 2 units, 3 consume (1|0), 4 idempotency suffix or "", 5 the clock, packed
--       (cmsgpack: now, day yyyymmdd, then start/end of the minute, hour, day, month windows)
-- The key's hash (keyspace.LicenseRef; no TTL once the key exists):
--   m  the key's own metadata, cmsgpack {format, found (0|1), id, product id, revoked (0|1), then
--      as numbers exp, limit (-1: none), offset, then expires ISO or ""}
--   c  counters, cmsgpack {total consumed ever, time of the last consume, then the count of each
--      of the 8 windows (calls then units, each minute..month)}: a count is of the current window
--      only if the last consume fell in it; a rebuilt value is {total} alone
--   g  generation of m (bumped by every invalidation)
-- The product's metadata, once per bucket ("qg:{b<n>}:p:<product id>", keyspace.product_key),
--   field m: cmsgpack {format, tenant, product name, features json, then as numbers the 8 window
--   limits (0: none)}; field v: the Postgres cache_version it was read at.
-- Numbers are stored packed, not as text: parsing them cost Redis more than the rest of the ARGV.
-- Reply: {"miss", gen} | {"fill", id} | {"nf"} |
--        {code, consumed, retry_after, near_limit (0|1), product, used, limit, features json,
--         expires ISO, then slot (0..7), limit, used for each limited window}
-- A retried consume with an Idempotency-Key gets the first reply again, as it was (unless the key has
-- been revoked since: then it is refused like any request).
local FORMAT = '6'  -- keyspace.META_FORMAT
local held = redis.call('HMGET', KEYS[1], 'm', 'c')
local m = held[1] and {cmsgpack.unpack(held[1])} or {}
if m[1] ~= FORMAT then
  return {'miss', redis.call('HGET', KEYS[1], 'g') or '0'}
end
if m[2] ~= '1' then
  return {'nf'}
end
local id, revoked, exp, limit, offset, expires = m[3], m[5], m[6], m[7], m[8], m[9]
local prefix = KEYS[3]
local pm = redis.call('HGET', prefix .. 'p:' .. m[4], 'm')
local p = pm and {cmsgpack.unpack(pm)} or {}
if p[1] ~= FORMAT then  -- the product's metadata was dropped by a change: filled with the key's
  return {'miss', redis.call('HGET', KEYS[1], 'g') or '0'}
end
if p[2] ~= ARGV[1] then
  return {'nf'}
end
local product, features = p[3], p[4]  -- then window limits p[5..12]
local consume = ARGV[3] == '1'
local idem_key = nil
if consume and ARGV[4] ~= '' and revoked ~= '1' then  -- revocation ends replays too
  idem_key = prefix .. 'ir:' .. id .. ':' .. ARGV[4]  -- ir: msgpack replies (i: held JSON)
  local stored = redis.call('GET', idem_key)
  if stored then
    return {cmsgpack.unpack(stored)}
  end
end
if not held[2] then
  return {'fill', id}
end
local c = {cmsgpack.unpack(held[2])}
local clock = {cmsgpack.unpack(ARGV[5])}
local now, day = clock[1], clock[2]
local last = c[2] or 0
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
  local wlimit = p[4 + slot]
  local q = (slot - 1) % 4
  local start, wend = clock[3 + 2 * q], clock[4 + 2 * q]
  local current = last >= start and last < wend and c[2 + slot] or 0
  if wlimit > 0 then
    local cost = slot <= 4 and call_cost or units
    if (code == 'ok' or limited) and current + cost > wlimit and wend - now > retry_after then
      code = 'rate_limit_' .. ({'minute', 'hour', 'day', 'month'})[q + 1]
      limited = true
      retry_after = wend - now
    end
    local n = #reply
    reply[n + 1], reply[n + 2], reply[n + 3] = slot - 1, wlimit, current
  end
  c[2 + slot] = current
end

if code == 'ok' and consume and units > 0 then
  reply[2] = units
  c[1] = c[1] + units
  c[2] = now
  used = used + units
  reply[6] = used
  for slot = 1, 8 do  -- windows without a limit count too: a limit added later starts from the truth
    c[2 + slot] = c[2 + slot] + (slot <= 4 and 1 or units)
  end
  for i = 10, #reply, 3 do
    reply[i + 2] = c[reply[i] + 3]
  end
  redis.call('HSET', KEYS[1], 'c', cmsgpack.pack(unpack(c)))
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
