-- Obtain a lease from a key's pool, atomically: never more live leases than the limit.
-- Expired leases leave the pool here (no sweeper needed for correctness) and are logged.
-- KEYS: 1 meta hash, 2 lease zset (score = expiry), 3 history stream, 4 generation counter, 5 epoch marker
--       (present once the lease zset is complete; see leases_rebuild.lua)
-- ARGV: 1 tenant, 2 now, 3 lease seconds, 4 lease id, 5 client id
-- Reply: {"miss", gen} | {"rebuild", key id} | {"KEY_INVALID"} | {"KEY_EXPIRED"} |
--        {"LEASE_LIMIT_REACHED", used, limit} | {"OK", used, limit, expiry}
local meta = redis.call('HMGET', KEYS[1], 'ok', 'tenant', 'limit', 'exp', 'revoked', 'id')
if not meta[1] then
  return {'miss', redis.call('GET', KEYS[4]) or '0'}
end
if meta[1] ~= '1' or meta[2] ~= ARGV[1] or meta[5] == '1' then
  return {'KEY_INVALID'}
end
local now = tonumber(ARGV[2])
local exp = tonumber(meta[4])
if exp > 0 and now >= exp then
  return {'KEY_EXPIRED'}
end
if redis.call('EXISTS', KEYS[5]) == 0 then
  return {'rebuild', meta[6]}  -- Redis lost the pool's leases (or never had them): restore them first
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES')
for i = 1, #gone, 2 do
  redis.call('XADD', KEYS[3], '*', 'action', 'expired', 'lease', gone[i], 'at', now, 'exp', gone[i + 1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local used = redis.call('ZCARD', KEYS[2])
local limit = tonumber(meta[3])
if used >= limit then
  return {'LEASE_LIMIT_REACHED', used, limit}
end
local expiry = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], expiry, ARGV[4])
redis.call('XADD', KEYS[3], '*', 'action', 'obtained', 'lease', ARGV[4], 'client', ARGV[5], 'at', now, 'exp', expiry)
return {'OK', used + 1, limit, expiry}
