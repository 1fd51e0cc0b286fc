-- Renew, release or check one lease.
-- KEYS: 1 meta hash, 2 lease zset, 3 history stream, 4 marker of the lease ("released" | "renewed"),
--       5 metadata generation counter, 6 epoch marker (present once the lease zset is complete)
-- ARGV: 1 action (renew|release|check|count), 2 now, 3 lease id, 4 new lease id, 5 lease seconds, 6 marker ttl,
--       7 tenant
-- Reply: {code, expiry}; code OK | LEASE_RELEASED | LEASE_RENEWED | LEASE_GONE | KEY_INVALID | KEY_EXPIRED
--        (count: {live leases, 0}; no metadata cached: {"miss", generation}; leases to restore: {"rebuild", 0})
local action, now, lease = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if redis.call('EXISTS', KEYS[6]) == 0 then
  return {'rebuild', 0}  -- Redis lost the pool's leases (or never had them): restore them first
end
if action == 'count' then
  return {redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf'), 0}
end
local marker = redis.call('GET', KEYS[4])
if action == 'release' then
  if marker == 'released' then
    return {'OK', 0}  -- releasing twice is harmless
  end
  if redis.call('ZREM', KEYS[2], lease) == 1 then
    redis.call('XADD', KEYS[3], '*', 'action', 'released', 'lease', lease, 'at', now)
  end
  redis.call('SET', KEYS[4], 'released', 'EX', tonumber(ARGV[6]))
  return {'OK', 0}
end
if marker == 'released' then
  return {'LEASE_RELEASED', 0}
elseif marker == 'renewed' then
  return {'LEASE_RENEWED', 0}
end
-- No cached metadata (its TTL ran out, a revocation dropped it, Redis lost it) is not "allowed":
-- the caller refills it from Postgres and asks again.
local meta = redis.call('HMGET', KEYS[1], 'ok', 'tenant', 'revoked', 'exp')
if not meta[1] then
  return {'miss', redis.call('GET', KEYS[5]) or '0'}
end
if meta[1] ~= '1' or meta[2] ~= ARGV[7] or meta[3] == '1' then
  return {'KEY_INVALID', 0}
end
local key_exp = tonumber(meta[4])
if key_exp > 0 and now >= key_exp then
  return {'KEY_EXPIRED', 0}
end
local score = redis.call('ZSCORE', KEYS[2], lease)
if not score or tonumber(score) <= now then
  return {'LEASE_GONE', 0}
end
if action == 'check' then
  return {'OK', tonumber(score)}
end
local expiry = now + tonumber(ARGV[5])
redis.call('ZREM', KEYS[2], lease)
redis.call('ZADD', KEYS[2], expiry, ARGV[4])
redis.call('SET', KEYS[4], 'renewed', 'EX', tonumber(ARGV[6]))
redis.call('XADD', KEYS[3], '*', 'action', 'renewed', 'lease', ARGV[4], 'previous', lease, 'at', now, 'exp', expiry)
return {'OK', expiry}
