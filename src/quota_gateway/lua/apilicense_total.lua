-- A license's lifetime total of consumed units (Postgres's total + what is not yet flushed), the
-- base a lifetime reset sets its offset to.
-- KEYS: 1 the key's hash (counters: field c, see apilicense_validate.lua).
-- Reply: the total | false (not in Redis: fill it)
local blob = redis.call('HGET', KEYS[1], 'c')
if not blob then
  return false
end
return (cmsgpack.unpack(blob))
