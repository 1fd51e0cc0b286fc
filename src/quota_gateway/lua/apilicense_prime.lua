-- A new license: nothing consumed yet, so its counters start at 0 without a Postgres read; any
-- metadata cached for the key before it existed (a negative entry) is dropped, and its generation
-- bumped so no fill that read Postgres before the key existed caches "no such key" again.
-- KEYS: 1 the key's hash (see apilicense_validate.lua)
redis.call('HSETNX', KEYS[1], 'c', cmsgpack.pack(0))
redis.call('HINCRBY', KEYS[1], 'g', 1)
redis.call('PERSIST', KEYS[1])  -- a negative entry's TTL: counters never expire
return redis.call('HDEL', KEYS[1], 'm')
