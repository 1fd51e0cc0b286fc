-- Postgres is unreachable and an API key's cached metadata lapsed: serve its backup copy (written by
-- every fill, dropped by every invalidation, so never older than the last change) for a short while.
-- KEYS: 1 packed metadata, 2 generation counter, 3 backup copy.  ARGV: 1 generation seen before the read, 2 ttl
-- Reply: 1 restored | 0 no backup (or invalidated meanwhile)
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then
  return 0
end
local backup = redis.call('GET', KEYS[3])
if not backup then
  return 0
end
redis.call('SET', KEYS[1], backup, 'EX', tonumber(ARGV[2]))
return 1
