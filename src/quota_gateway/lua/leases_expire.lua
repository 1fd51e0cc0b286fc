-- Log and remove a pool's expired leases (the history drainer's sweep), as an obtain does, so a
-- pool nobody obtains from again still reports its expiries.
-- KEYS: 1 lease zset (score = expiry), 2 history stream.  ARGV: 1 now
-- Reply: number of leases that expired
local now = tonumber(ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES')
for i = 1, #gone, 2 do
  redis.call('XADD', KEYS[2], '*', 'action', 'expired', 'lease', gone[i], 'at', now, 'exp', gone[i + 1])
end
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
return #gone / 2
