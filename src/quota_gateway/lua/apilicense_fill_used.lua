-- Rebuild a license's counters lost from Redis: the lifetime total is Postgres's + the deltas not
-- yet applied there; window counts start again at 0.
-- KEYS: 1 the key's hash (counters: field c, see apilicense_validate.lua), 2 pending hash, 3 flushing hash, 4 last-applied marker "epoch:seq"
-- ARGV: 1 license id, 2 Postgres used_total, 3 "epoch:last_seq,..." as read with that total,
--       4 key prefix of idempotent replies "qg:{b<n>}:ir:<id>:", then (idempotency hash, reply, ttl) triples
-- Reply: 1 already present | -1 the Postgres snapshot is older than a finished flush: re-read |
--        {1, the total rebuilt}
-- Also restores the idempotent replies Redis lost with the counters (those written behind).
if redis.call('HEXISTS', KEYS[1], 'c') == 1 then
  return 1
end
local applied = {}
for epoch, seq in string.gmatch(ARGV[3], '([^:,]+):(%d+)') do
  applied[epoch] = tonumber(seq)
end
local marker = redis.call('GET', KEYS[4])
if marker then
  local epoch, seq = string.match(marker, '([^:]+):(%d+)')
  if tonumber(seq) > (applied[epoch] or 0) then
    return -1
  end
end
local field_prefix = ARGV[1] .. ':'
local function sum(hash)
  local total = 0
  local flat = redis.call('HGETALL', hash)
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, #field_prefix) == field_prefix then
      total = total + tonumber(flat[i + 1])
    end
  end
  return total
end
local total = tonumber(ARGV[2]) + sum(KEYS[2])
local fepoch = redis.call('HGET', KEYS[3], '__epoch')
if fepoch then
  local fseq = tonumber(redis.call('HGET', KEYS[3], '__seq'))
  if fseq > (applied[fepoch] or 0) then
    total = total + sum(KEYS[3])
  end
end
redis.call('HSET', KEYS[1], 'c', cmsgpack.pack(total))
redis.call('PERSIST', KEYS[1])  -- counters never expire
for i = 5, #ARGV, 3 do  -- first replies of idempotent consumes, as written behind
  redis.call('SET', ARGV[4] .. ARGV[i], ARGV[i + 1], 'EX', tonumber(ARGV[i + 2]), 'NX')
end
return {1, total}
