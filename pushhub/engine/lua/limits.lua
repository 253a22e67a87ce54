-- Limits shared by all nodes. One key per script call.
--   acquire:  KEYS[1] ZSET conn id -> expiry (ms), one per user. Expired entries (a
--             crashed node's) fall out, so a crash never locks a user out for long.
--   refresh:  extends this node's entries of one user.
--   release:  drops one entry.
--   gcra:     KEYS[1] the limiter's theoretical arrival time (ms); a Generic Cell Rate
--             Algorithm, so a limit is smooth and needs one key and one round trip.
local op = ARGV[1]
local key = KEYS[1]

if op == 'acquire' then
  -- ARGV: op, conn id, now, expiry, key ttl, limit (0: none)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[3])
  local limit = tonumber(ARGV[6])
  if not redis.call('ZSCORE', key, ARGV[2]) and limit > 0
      and redis.call('ZCARD', key) >= limit then
    return 0
  end
  redis.call('ZADD', key, ARGV[4], ARGV[2])
  redis.call('PEXPIRE', key, ARGV[5])
  return 1

elseif op == 'refresh' then
  -- ARGV: op, expiry, key ttl, conn ids...
  for i = 4, #ARGV do redis.call('ZADD', key, 'XX', ARGV[2], ARGV[i]) end
  redis.call('PEXPIRE', key, ARGV[3])
  return 1

elseif op == 'release' then
  redis.call('ZREM', key, ARGV[2])
  return 1

elseif op == 'gcra' then
  -- ARGV: op, now (ms), emission interval (ms), burst. Returns 1 allowed, 0 limited.
  local now, interval, burst = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - now > interval * burst then return 0 end
  redis.call('SET', key, string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
  return 1
end

return redis.error_reply('unknown limits operation ' .. tostring(op))
