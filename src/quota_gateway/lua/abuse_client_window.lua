-- Per-client-address windows on unauthenticated routes (fixed windows, like the quota windows).
-- KEYS[1] requests in this window, KEYS[2] failed lookups in this window (one hash tag: the address)
-- ARGV: mode ("check" or "fail"), request limit, failure limit (0 = none), seconds until the window ends
-- check: {1, 0} allowed (the request counted), or {0, retry_after, reason} refused (nothing counted)
-- fail:  the failure counted; {1, failures}
local ttl = tonumber(ARGV[4]) + 1
if ARGV[1] == "fail" then
  local failures = redis.call("INCR", KEYS[2])
  if failures == 1 then redis.call("EXPIRE", KEYS[2], ttl) end
  return {1, failures}
end
local request_limit, failure_limit = tonumber(ARGV[2]), tonumber(ARGV[3])
if failure_limit > 0 and tonumber(redis.call("GET", KEYS[2]) or "0") >= failure_limit then
  return {0, tonumber(ARGV[4]), "failures"}
end
if request_limit > 0 then
  local requests = redis.call("INCR", KEYS[1])
  if requests == 1 then redis.call("EXPIRE", KEYS[1], ttl) end
  if requests > request_limit then
    return {0, tonumber(ARGV[4]), "requests"}
  end
end
return {1, 0}
