-- Drop a product's metadata cached in one bucket after a change (features, name), leaving the
-- products.cache_version the change raised: a fill that read Postgres before it carries an older
-- version and is refused (apilicense_fill_batch.lua). The marker alone goes after a day.
-- KEYS: 1 the product's hash in this bucket (keyspace.product_key).  ARGV: 1 the new cache_version
local seen = redis.call('HGET', KEYS[1], 'v')
if not seen or tonumber(seen) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'v', ARGV[1])
end
redis.call('HDEL', KEYS[1], 'm')
redis.call('EXPIRE', KEYS[1], 86400)
return 1
