-- Cache an API key's metadata read from Postgres, packed (see apilicense_validate.lua), unless it
-- was invalidated meanwhile.
-- KEYS: 1 packed metadata, 2 generation counter.  ARGV: 1 generation seen before the read, 2 ttl, 3.. fields
-- (of a found key, the fields the validate script reads as numbers are packed as numbers)
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then
  return 0
end
local fields = {unpack(ARGV, 3)}
if fields[2] == '1' then
  for _, i in ipairs({6, 7, 8, 12, 13, 14, 15, 16, 17, 18, 19}) do
    fields[i] = tonumber(fields[i])
  end
end
redis.call('SET', KEYS[1], cmsgpack.pack(unpack(fields)), 'EX', tonumber(ARGV[2]))
return 1
