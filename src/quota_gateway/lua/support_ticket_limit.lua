-- Support ticket creation limits: one fixed window per access token and one per e-mail address.
-- A ticket counts against both windows or, when either is full, against neither.
-- KEYS: 1 the token's window counter, 2 the e-mail address's window counter (one hash tag)
-- ARGV: 1 token limit, 2 e-mail limit, 3 seconds the counters live (the window's length)
-- Reply: {'OK'} | {'LIMITED', 'token' | 'email'}
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  return {'LIMITED', 'token'}
end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then
  return {'LIMITED', 'email'}
end
for i = 1, 2 do
  if redis.call('INCR', KEYS[i]) == 1 then
    redis.call('EXPIRE', KEYS[i], ARGV[3])
  end
end
return {'OK'}
