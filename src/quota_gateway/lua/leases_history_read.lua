-- Read a pool's oldest history entries, and who owns the pool, for the history drainer.
-- KEYS: 1 history stream, 2 meta hash.  ARGV: 1 most entries to read
-- Reply: {{pool key id or nil, tenant or nil}, entries as XRANGE answers them: {id, {field, value, ...}}...}
local owner = redis.call('HMGET', KEYS[2], 'id', 'tenant')
return {owner, redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])}
