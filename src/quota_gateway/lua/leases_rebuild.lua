-- Restore a pool's live leases (read from Postgres's lease history) after Redis lost them, once:
-- the pool's epoch marker says its leases in Redis are complete, so a rebuild that lost the race
-- with another process's changes nothing.
-- KEYS: 1 lease zset, 2 epoch marker.  ARGV: 1 now, then lease id, expiry pairs
-- Reply: 1 rebuilt | 0 already complete
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local now = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local expiry = tonumber(ARGV[i + 1])
  if expiry > now then
    redis.call('ZADD', KEYS[1], expiry, ARGV[i])
  end
end
redis.call('SET', KEYS[2], '1')
return 1
