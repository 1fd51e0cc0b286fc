-- The live leases of one pool, soonest expiry first. A read: expired leases are left for the next
-- obtain to remove and log.
-- KEYS: 1 lease zset (score = expiry)
-- ARGV: 1 now, 2 at most this many
-- Reply: {lease id, expiry, lease id, expiry, ...}
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
