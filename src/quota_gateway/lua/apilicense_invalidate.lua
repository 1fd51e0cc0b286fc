-- Drop an API key's cached metadata and bump its generation so no in-flight fill re-caches stale
-- data. A hash left without counters (a key never used, or unknown) goes after a day; one holding
-- counters is kept (they may hold unflushed usage).
-- KEYS: 1 the key's hash (see apilicense_validate.lua)
redis.call('HINCRBY', KEYS[1], 'g', 1)
if redis.call('HEXISTS', KEYS[1], 'c') == 0 then
  redis.call('EXPIRE', KEYS[1], 86400)
end
return redis.call('HDEL', KEYS[1], 'm')
