-- Reset the current windows of the given periods (both kinds) of a license's counters.
-- KEYS: 1 the key's hash (counters: field c, see apilicense_validate.lua).
-- ARGV: period indexes (0 minute .. 3 month)
-- Reply: number of window counts that were not zero
local blob = redis.call('HGET', KEYS[1], 'c')
if not blob then
  return 0
end
local c = {cmsgpack.unpack(blob)}
for i = 2, 10 do  -- a rebuilt counters value holds the total alone
  c[i] = c[i] or 0
end
local cleared = 0
for _, period in ipairs(ARGV) do
  for _, slot in ipairs({tonumber(period) + 1, tonumber(period) + 5}) do
    if c[2 + slot] > 0 then
      cleared = cleared + 1
    end
    c[2 + slot] = 0
  end
end
redis.call('HSET', KEYS[1], 'c', cmsgpack.pack(unpack(c)))
return cleared
