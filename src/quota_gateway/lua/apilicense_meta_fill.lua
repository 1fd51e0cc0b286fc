-- Cache an API key's metadata read from Postgres, packed (see apilicense_validate.lua), unless it
-- was invalidated meanwhile.
-- KEYS: 1 packed metadata, 2 generation counter.  ARGV: 1 generation seen before the read, 2 ttl, 3.. fields
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], cmsgpack.pack(unpack(ARGV, 3)), 'EX', tonumber(ARGV[2]))
return 1
