-- A license's lifetime total of consumed units (Postgres's total + what is not yet flushed), the
-- base a lifetime reset sets its offset to.
-- KEYS: 1 packed counters (see apilicense_validate.lua).  Reply: the total | false (not in Redis: fill it)
local blob = redis.call('GET', KEYS[1])
if not blob then
  return false
end
return (cmsgpack.unpack(blob))
