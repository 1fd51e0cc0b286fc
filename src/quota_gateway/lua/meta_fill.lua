-- Cache metadata read from Postgres (a license, a pool key) unless it was invalidated meanwhile.
-- KEYS: 1 meta hash, 2 generation counter.  ARGV: 1 generation seen before the read, 2 ttl, 3.. field/value pairs
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
