-- Take a bucket's pending usage for writing to Postgres: an unfinished flush first (its owner
-- may have died), else pending renamed to flushing under a new (epoch, seq).
-- KEYS: 1 pending, 2 flushing, 3 flush state hash.  ARGV: 1 epoch to adopt if the bucket has none
-- Reply: {} nothing to do | flat HGETALL of the flushing hash (with __epoch and __seq, and
--        __more when an unfinished flush is taken while more usage is pending)
if redis.call('EXISTS', KEYS[2]) == 1 then
  local flat = redis.call('HGETALL', KEYS[2])
  if redis.call('EXISTS', KEYS[1]) == 1 then
    flat[#flat + 1], flat[#flat + 2] = '__more', '1'
  end
  return flat
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
redis.call('HSETNX', KEYS[3], 'epoch', ARGV[1])
local epoch = redis.call('HGET', KEYS[3], 'epoch')
local seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], '__epoch', epoch, '__seq', seq)
return redis.call('HGETALL', KEYS[2])
