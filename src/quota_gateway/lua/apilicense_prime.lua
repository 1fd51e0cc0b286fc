-- A new license: nothing consumed yet, so its counters start at 0 without a Postgres read; any
-- metadata cached for the key before it existed (a negative entry) is dropped.
-- KEYS: 1 packed counters, 2 meta, 3 generation counter
redis.call('SET', KEYS[1], cmsgpack.pack(0), 'NX')
redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], 86400)
return redis.call('DEL', KEYS[2])
