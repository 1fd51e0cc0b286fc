-- A new license: nothing consumed yet, so its lifetime counter starts at 0 without a Postgres read;
-- any metadata cached for the key before it existed (a negative entry) is dropped.
-- KEYS: 1 counter, 2 meta hash, 3 generation counter
redis.call('SETNX', KEYS[1], 0)
redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], 86400)
return redis.call('DEL', KEYS[2])
