-- Fill the metadata and the counters of every API key of one bucket that missed in one event-loop
-- tick, from one Postgres read (engine.MissBatcher): one call instead of a metadata fill and a
-- counter fill per key.
-- KEYS: 1 pending hash, 2 flushing hash, 3 last-applied marker "epoch:seq" (the bucket's), then
--       per key: packed metadata, generation counter, backup copy of the metadata (served while
--       Postgres is unreachable, see apilicense_meta_restore.lua), packed counters (not found: unused)
-- ARGV: 1 "epoch:last_seq,..." applied in Postgres as of the read, 2 number of keys, then per key:
--       generation seen before the read, ttl, used_total ("": leave the counters to
--       apilicense_fill_used.lua), field count, fields
--       (the metadata layout of apilicense_validate.lua, numbers as text: packed as numbers here)
-- Metadata invalidated since the read is left alone (the next validation misses again); counters
-- are rebuilt as apilicense_fill_used.lua does. Reply: 1 | -1 when the Postgres read is older than
-- a finished flush (counters left alone: the validation asks for them again, see engine._fill_used)
local applied = {}
for epoch, seq in string.gmatch(ARGV[1], '([^:,]+):(%d+)') do
  applied[epoch] = tonumber(seq)
end
local stale = false
local marker = redis.call('GET', KEYS[3])
if marker then
  local epoch, seq = string.match(marker, '([^:]+):(%d+)')
  stale = tonumber(seq) > (applied[epoch] or 0)
end
local unflushed = nil  -- license id -> units consumed but not applied in Postgres (read once)
local function unflushed_of(id)
  if not unflushed then
    unflushed = {}
    local function add(hash)
      local flat = redis.call('HGETALL', hash)
      for i = 1, #flat, 2 do
        local owner = string.match(flat[i], '^(%d+):')
        if owner then unflushed[owner] = (unflushed[owner] or 0) + tonumber(flat[i + 1]) end
      end
    end
    add(KEYS[1])
    local fepoch = redis.call('HGET', KEYS[2], '__epoch')
    if fepoch and tonumber(redis.call('HGET', KEYS[2], '__seq')) > (applied[fepoch] or 0) then
      add(KEYS[2])
    end
  end
  return unflushed[id] or 0
end
local numeric = {6, 7, 8, 12, 13, 14, 15, 16, 17, 18, 19}
local a = 3
for k = 0, tonumber(ARGV[2]) - 1 do
  local meta, gen, backup, counters = KEYS[4 + 4 * k], KEYS[5 + 4 * k], KEYS[6 + 4 * k], KEYS[7 + 4 * k]
  local seen, ttl, total, n = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
  local fields = {unpack(ARGV, a + 4, a + 3 + n)}
  a = a + 4 + n
  if (redis.call('GET', gen) or '0') == seen then
    if fields[2] == '1' then
      for _, i in ipairs(numeric) do fields[i] = tonumber(fields[i]) end
    end
    local packed = cmsgpack.pack(unpack(fields))
    if ttl > 0 then
      redis.call('SET', meta, packed, 'EX', ttl)
    else
      redis.call('SET', meta, packed)
    end
    if fields[2] == '1' then  -- dropped with the metadata by every invalidation
      redis.call('SET', backup, packed, 'EX', 604800)
    end
  end
  if total ~= '' and not stale and redis.call('EXISTS', counters) == 0 then
    local rebuilt = tonumber(total) + unflushed_of(fields[3])
    if rebuilt >= tonumber(fields[8]) then  -- below the reset offset: engine._fill_used lowers it first
      redis.call('SET', counters, cmsgpack.pack(rebuilt))
    end
  end
end
return stale and -1 or 1
