-- Fill the metadata and the counters of every API key of one bucket that missed in one batch, and
-- the metadata of their products in this bucket, from one Postgres read (missfill.MissBatcher),
-- then run the validations that waited on them: one call instead of a metadata fill, a counter
-- fill and a second validation per key. Layout: see apilicense_validate.lua, which this script
-- runs as the local function `validate` (scripts.LuaScript's `functions`).
-- KEYS: 1 pending hash, 2 flushing hash, 3 last-applied marker "epoch:seq" (the bucket's), then
--       the P products' hashes, then each key's hash. The four entries format 5 kept a found key
--       in (metadata, generation, backup copy, counters: keyspace.LicenseRef.legacy_keys) are
--       named here from its hash and id, in its slot: their counters are taken over, then dropped.
-- ARGV: 1 "epoch:last_seq,..." applied in Postgres as of the read, 2 P, then per product:
--       cache_version, field count, fields (numbers as text: packed as numbers here);
--       then the number of keys, then per key: generation seen before the read, used_total
--       ("": leave the counters to apilicense_fill_used.lua), its product's position (0: no such
--       key), field count, fields;
--       then the number of validations, then per validation: its key's position (1-based) and
--       the validate script's 5 arguments
-- A key's metadata invalidated since the read is left alone (the next validation misses again), as
-- is a product's when an invalidation left a newer cache_version; counters are rebuilt as
-- apilicense_fill_used.lua does, unless the Postgres read is older than a finished flush (then
-- they are left alone and the validation asks for them, see engine._fill_used).
-- Reply: {1, then the validate script's reply to each validation, in order}
local NEGATIVE_TTL = 30  -- keyspace.NEGATIVE_TTL
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

local products = tonumber(ARGV[2])
local a = 3
for i = 1, products do
  local version, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local fields = {unpack(ARGV, a + 2, a + 1 + n)}
  a = a + 2 + n
  local held = redis.call('HMGET', KEYS[3 + i], 'v', 'm')
  local seen = held[1] and tonumber(held[1])
  if not seen or seen < version or (seen == version and not held[2]) then
    for f = 5, 12 do fields[f] = tonumber(fields[f]) end
    redis.call('HSET', KEYS[3 + i], 'm', cmsgpack.pack(unpack(fields)), 'v', version)
    redis.call('PERSIST', KEYS[3 + i])  -- an invalidation's marker expires; metadata does not
  end
end

local base = 3 + products
local prefix = string.sub(KEYS[1], 1, -8)  -- "qg:{b<n>}:" of "qg:{b<n>}:pending"
for k = 0, tonumber(ARGV[a]) - 1 do
  local entry = KEYS[base + 1 + k]
  local seen, total, product, n = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local fields = {unpack(ARGV, a + 5, a + 4 + n)}
  a = a + 4 + n
  local held = redis.call('HMGET', entry, 'g', 'c')
  if product == 0 then  -- no such key: remembered briefly (a hash holding counters is kept)
    if (held[1] or '0') == seen then
      redis.call('HSET', entry, 'm', cmsgpack.pack(unpack(fields)))
      if not held[2] and redis.call('TTL', entry) < NEGATIVE_TTL then
        redis.call('EXPIRE', entry, NEGATIVE_TTL)
      end
    end
  else
    for _, f in ipairs({6, 7, 8}) do fields[f] = tonumber(fields[f]) end
    if (held[1] or '0') == seen then
      redis.call('HSET', entry, 'm', cmsgpack.pack(unpack(fields)))
    end
    if not held[2] then
      local digest = string.sub(entry, #prefix + 3)  -- of "<prefix>k:<digest>"
      local legacy_counters = prefix .. 'c:' .. fields[3]
      local legacy = redis.call('GET', legacy_counters)
      if legacy then  -- format 5's counters: {total, then start and count of each window}
        local o = {cmsgpack.unpack(legacy)}
        local c = #o >= 17 and {o[1], o[2], o[3], o[5], o[7], o[9], o[11], o[13], o[15], o[17]} or {o[1]}
        redis.call('HSET', entry, 'c', cmsgpack.pack(unpack(c)))
      elseif total ~= '' and not stale then
        local rebuilt = tonumber(total) + unflushed_of(fields[3])
        if rebuilt >= fields[8] then  -- below the reset offset: engine._fill_used lowers it first
          redis.call('HSET', entry, 'c', cmsgpack.pack(rebuilt))
        end
      end
      redis.call('DEL', prefix .. 'm:' .. digest, prefix .. 'gen:' .. digest, prefix .. 'mb:' .. digest,
                 legacy_counters)
    end
    redis.call('PERSIST', entry)  -- a found key's hash never expires (its counters must not)
  end
end

local replies = {1}
for q = 0, tonumber(ARGV[a + 1]) - 1 do
  local at = a + 2 + 6 * q
  local entry = KEYS[base + tonumber(ARGV[at])]
  replies[q + 2] = validate({entry, KEYS[1], prefix}, {ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4],
                                                        ARGV[at + 5]})
end
return replies
