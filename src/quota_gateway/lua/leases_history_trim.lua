-- Drop history entries written to Postgres, or the whole stream when no ids are given (the pool
-- key no longer exists).
-- KEYS: 1 history stream.  ARGV: entry ids
-- Reply: number of entries (or keys) removed
if #ARGV == 0 then
  return redis.call('DEL', KEYS[1])
end
return redis.call('XDEL', KEYS[1], unpack(ARGV))
