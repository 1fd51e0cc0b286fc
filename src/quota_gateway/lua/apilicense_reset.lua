-- Reset windows of a license (current windows of the given periods, both kinds).
-- KEYS: 1 key prefix "qg:{b<n>}:".  ARGV: 1 license id, then period/start pairs
local removed = 0
for i = 2, #ARGV, 2 do
  for _, kind in ipairs({'calls', 'units'}) do
    removed = removed + redis.call('DEL', KEYS[1] .. 'w:' .. ARGV[1] .. ':' .. kind .. ':' .. ARGV[i] .. ':' .. ARGV[i + 1])
  end
end
return removed
