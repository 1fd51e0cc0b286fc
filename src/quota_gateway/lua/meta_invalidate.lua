-- Drop cached metadata and bump its generation so no in-flight fill re-caches stale data.
-- KEYS: 1 meta hash, 2 generation counter, then copies of the metadata to drop with it (optional)
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 86400)
return redis.call('DEL', KEYS[1], unpack(KEYS, 3))
