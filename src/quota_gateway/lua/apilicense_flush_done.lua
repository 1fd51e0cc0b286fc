-- After Postgres committed flush (epoch, seq): drop the flushing hash and remember what was applied.
-- KEYS: 1 flushing, 2 last-applied marker.  ARGV: 1 epoch, 2 seq
if redis.call('HGET', KEYS[1], '__epoch') == ARGV[1] and redis.call('HGET', KEYS[1], '__seq') == ARGV[2] then
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
return 1
