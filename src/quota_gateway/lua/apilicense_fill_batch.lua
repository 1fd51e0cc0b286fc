-- Fill the metadata and the counters of every API key that missed in one batch, and the metadata
-- of their products, from one Postgres read (missfill.MissBatcher), then run the validations that
-- waited on them: one call instead of a metadata fill, a counter fill and a second validation per
-- key. The batch's keys come in groups, one per bucket: a single Redis takes the whole batch in one
-- call; a cluster, whose scripts may touch one hash tag each, gets one call per bucket (group).
-- Layout: see apilicense_validate.lua, which this script runs as the local function `validate`
-- (scripts.LuaScript's `functions`).
-- KEYS: per group: 1 the bucket's pending hash, 2 its flushing hash, 3 its last-applied marker
--       "epoch:seq", then the group's products' hashes, then each key's hash. The four entries
--       format 5 kept a found key in (metadata, generation, backup copy, counters:
--       keyspace.LicenseRef.legacy_keys) are named here from its hash and id, in its slot: their
--       counters are taken over, then dropped.
-- ARGV: 1 the number of products of the call, then per product: cache_version, its metadata
--       packed (field m of its hash); then the number of groups, then per group: its number of
--       KEYS, "epoch:last_seq,..." applied in Postgres for the bucket as of the read, the number of
--       the group's products and each one's place among the call's products; then the number of
--       keys, then per key: generation seen before the read, used_total ("": leave the counters to
--       apilicense_fill_used.lua), found (1|0: no such key), license id, reset offset, its
--       metadata packed (field m); then the number of validations, then per
--       validation: its key's place in the group (1-based) and the validate script's 5 arguments
-- The metadata comes packed by the gateway as cmsgpack.pack packs it (keyspace.packed_values).
-- A key's metadata invalidated since the read is left alone (the next validation misses again), as
-- is a product's when an invalidation left a newer cache_version; counters are rebuilt as
-- apilicense_fill_used.lua does, unless the Postgres read is older than a finished flush (then
-- they are left alone and the validation asks for them, see engine._fill_used).
-- Reply: {1, then the validate script's reply to each validation, in order (group by group)}
local NEGATIVE_TTL = 30  -- keyspace.NEGATIVE_TTL
local replies = {1}

local versions, packed = {}, {}  -- the call's products
local a = 2
for i = 1, tonumber(ARGV[1]) do
  versions[i], packed[i] = tonumber(ARGV[a]), ARGV[a + 1]
  a = a + 2
end

-- One bucket's group: its keys from KEYS[k + 1], its arguments from ARGV[a]; returns the next
-- group's argument position.
local function fill_group(k, a)
  local applied = {}
  for epoch, seq in string.gmatch(ARGV[a], '([^:,]+):(%d+)') do
    applied[epoch] = tonumber(seq)
  end
  local stale = false
  local marker = redis.call('GET', KEYS[k + 3])
  if marker then
    local epoch, seq = string.match(marker, '([^:]+):(%d+)')
    stale = tonumber(seq) > (applied[epoch] or 0)
  end
  -- Units of a license consumed but not yet applied in Postgres: its fields ("<id>:<day>") of the
  -- pending hash, and of the flushing one while a flush Postgres has not applied is in flight.
  -- Matched by Redis (HSCAN), not copied whole into Lua: a cold wave fills one or two keys a
  -- bucket, and copying each bucket's pending usage into Lua cost the fill a third of its time.
  local flushing = nil  -- whether the bucket's flushing hash counts (looked up once)
  local function sum_of(hash, pattern)
    local units, cursor = {}, '0'  -- field -> units: a field met twice by the scan counts once
    repeat
      local page = redis.call('HSCAN', hash, cursor, 'MATCH', pattern, 'COUNT', 1000)
      cursor = page[1]
      local flat = page[2]
      for i = 1, #flat, 2 do units[flat[i]] = tonumber(flat[i + 1]) end
    until cursor == '0'
    local total = 0
    for _, n in pairs(units) do total = total + n end
    return total
  end
  local function unflushed_of(id)
    local pattern = id .. ':*'
    local total = sum_of(KEYS[k + 1], pattern)
    if flushing == nil then
      local fepoch = redis.call('HGET', KEYS[k + 2], '__epoch')
      flushing = fepoch ~= false and tonumber(redis.call('HGET', KEYS[k + 2], '__seq')) > (applied[fepoch] or 0)
    end
    if flushing then
      total = total + sum_of(KEYS[k + 2], pattern)
    end
    return total
  end

  local products = tonumber(ARGV[a + 1])
  for i = 1, products do
    local p = tonumber(ARGV[a + 1 + i])
    local version = versions[p]
    local held = redis.call('HMGET', KEYS[k + 3 + i], 'v', 'm')
    local seen = held[1] and tonumber(held[1])
    if not seen or seen < version or (seen == version and not held[2]) then
      redis.call('HSET', KEYS[k + 3 + i], 'm', packed[p], 'v', version)
      if held[1] or held[2] then  -- an invalidation's marker expires; metadata does not (a new hash has no TTL)
        redis.call('PERSIST', KEYS[k + 3 + i])
      end
    end
  end
  a = a + 2 + products

  local base = k + 3 + products
  local pending = KEYS[k + 1]
  local prefix = string.sub(pending, 1, -8)  -- "qg:{b<n>}:" of "qg:{b<n>}:pending"
  for key = 1, tonumber(ARGV[a]) do
    local entry = KEYS[base + key]
    local seen, total, found, id, offset, m = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4],
                                                tonumber(ARGV[a + 5]), ARGV[a + 6]
    a = a + 6
    local held = redis.call('HMGET', entry, 'g', 'c', 'm')  -- m: only whether the hash exists
    if found == '0' then  -- no such key: remembered briefly (a hash holding counters is kept)
      if (held[1] or '0') == seen then
        redis.call('HSET', entry, 'm', m)
        if not held[2] and redis.call('TTL', entry) < NEGATIVE_TTL then
          redis.call('EXPIRE', entry, NEGATIVE_TTL)
        end
      end
    else
      local write = {}  -- field, value, ...: one HSET for the metadata and the counters
      if (held[1] or '0') == seen then
        write[1], write[2] = 'm', m
      end
      if not held[2] then
        local digest = string.sub(entry, #prefix + 3)  -- of "<prefix>k:<digest>"
        local legacy_counters = prefix .. 'c:' .. id
        local legacy = redis.call('GET', legacy_counters)
        if legacy then  -- format 5's counters: {total, then start and count of each window}
          local o = {cmsgpack.unpack(legacy)}
          local c = #o >= 17 and {o[1], o[2], o[3], o[5], o[7], o[9], o[11], o[13], o[15], o[17]} or {o[1]}
          write[#write + 1], write[#write + 2] = 'c', cmsgpack.pack(unpack(c))
        elseif total ~= '' and not stale then
          local rebuilt = tonumber(total) + unflushed_of(id)
          if rebuilt >= offset then  -- below the reset offset: engine._fill_used lowers it first
            write[#write + 1], write[#write + 2] = 'c', cmsgpack.pack(rebuilt)
          end
        end
        redis.call('DEL', prefix .. 'm:' .. digest, prefix .. 'gen:' .. digest, prefix .. 'mb:' .. digest,
                   legacy_counters)
      end
      if #write > 0 then
        redis.call('HSET', entry, unpack(write))
      end
      if held[1] or held[2] or held[3] then  -- a found key's hash never expires (its counters must not);
        redis.call('PERSIST', entry)         -- one this call created has no TTL to drop
      end
    end
  end

  a = a + 1
  local validations = tonumber(ARGV[a])
  for q = 0, validations - 1 do
    local at = a + 1 + 6 * q
    local entry = KEYS[base + tonumber(ARGV[at])]
    replies[#replies + 1] = validate({entry, pending, prefix}, {ARGV[at + 1], ARGV[at + 2], ARGV[at + 3],
                                                                ARGV[at + 4], ARGV[at + 5]})
  end
  return a + 1 + 6 * validations
end

local k = 0
local groups = tonumber(ARGV[a])
a = a + 1
for _ = 1, groups do
  local count = tonumber(ARGV[a])
  a = fill_group(k, a + 1)
  k = k + count
end
return replies
