-- Cache an API key's metadata read from Postgres, packed (see apilicense_validate.lua), unless it
-- was invalidated meanwhile.
-- KEYS: 1 packed metadata, 2 generation counter, 3 backup copy (a week; see apilicense_meta_restore.lua).  ARGV: 1 generation seen before the read, 2 ttl, 3.. fields
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
local packed = cmsgpack.pack(unpack(fields))
redis.call('SET', KEYS[1], packed, 'EX', tonumber(ARGV[2]))
if fields[2] == '1' then  -- the copy served while Postgres is unreachable (dropped with the metadata)
  redis.call('SET', KEYS[3], packed, 'EX', 604800)
end
return 1
