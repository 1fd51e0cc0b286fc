-- Reset the current windows of the given periods (both kinds) of a license's counters.
-- KEYS: 1 packed counters (see apilicense_validate.lua).  ARGV: period indexes (0 minute .. 3 month)
-- Reply: number of window counts that were not zero
local blob = redis.call('GET', KEYS[1])
if not blob then
  return 0
end
local c = {cmsgpack.unpack(blob)}
local cleared = 0
for _, period in ipairs(ARGV) do
  for _, slot in ipairs({tonumber(period) + 1, tonumber(period) + 5}) do
    if (c[2 * slot + 1] or 0) > 0 then
      cleared = cleared + 1
    end
    c[2 * slot], c[2 * slot + 1] = 0, 0
  end
end
for i = 2, 17 do  -- a counters value written before any window was counted is short
  c[i] = c[i] or 0
end
redis.call('SET', KEYS[1], cmsgpack.pack(unpack(c)))
return cleared
