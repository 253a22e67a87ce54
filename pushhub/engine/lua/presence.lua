-- Presence scripts for one channel. Every script gets the channel's five keys, all
-- hash-tagged with the channel name so they share one Redis Cluster slot:
--   KEYS[1] conns     ZSET  conn id -> expiry (ms)
--   KEYS[2] conninfo  HASH  conn id -> member key ("u:<user>" or "c:<conn id>")
--   KEYS[3] members   ZSET  member key -> 0 (lexicographic order, for stable paging)
--   KEYS[4] counts    HASH  member key -> connections of that member
--   KEYS[5] info      HASH  member key -> info JSON
-- A script runs atomically, so "first connection joins" and "last connection leaves"
-- are decided once, even when several nodes change the same member at the same time.
-- Presence events are published on the channel itself, as an envelope starting with
-- the byte 0x1E (read back by pushhub/engine/envelope.py), with the channel's users
-- ("u") and connections ("c") right after the change: past a channel's member bound
-- the nodes send those counts instead of the events.

local conns, conninfo, members, counts, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function counted()
  return ',"u":' .. redis.call('ZCARD', members) .. ',"c":' .. redis.call('ZCARD', conns) .. '}'
end

local function touch(ttl)
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ttl) end
end

local function remove_conn(id, emit, channel)
  local member = redis.call('HGET', conninfo, id)
  redis.call('ZREM', conns, id)
  if not member then return end
  redis.call('HDEL', conninfo, id)
  if redis.call('HINCRBY', counts, member, -1) <= 0 then
    redis.call('HDEL', counts, member)
    redis.call('HDEL', info, member)
    redis.call('ZREM', members, member)
    if emit == '1' then
      redis.call('PUBLISH', channel, '\30{"t":"leave","m":' .. cjson.encode(member) .. counted())
    end
  end
end

local op = ARGV[1]
local channel = ARGV[2]

if op == 'join' then
  -- ARGV: op, channel, conn id, member, info or '', expiry, key ttl, emit
  local id, member, inf, expiry, ttl, emit = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  local existed = redis.call('HGET', conninfo, id)
  redis.call('ZADD', conns, expiry, id)
  if inf ~= '' then redis.call('HSET', info, member, inf) end
  if not existed then
    redis.call('HSET', conninfo, id, member)
    if redis.call('HINCRBY', counts, member, 1) == 1 then
      redis.call('ZADD', members, 0, member)
      if emit == '1' then
        local i = redis.call('HGET', info, member) or 'null'
        redis.call('PUBLISH', channel,
          '\30{"t":"join","m":' .. cjson.encode(member) .. ',"i":' .. i .. counted())
      end
    end
  end
  touch(ttl)
  return 1

elseif op == 'leave' then
  -- ARGV: op, channel, conn id, emit
  remove_conn(ARGV[3], ARGV[4], channel)
  return 1

elseif op == 'refresh' then
  -- ARGV: op, channel, now, expiry, key ttl, emit, conn ids...
  -- First extend ours (a refresh that comes late must not expire this node's own live
  -- entries), then expire what nobody refreshed; report ours that are gone.
  local now, expiry, ttl, emit = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local missing = {}
  for i = 7, #ARGV do
    if redis.call('ZADD', conns, 'XX', 'CH', expiry, ARGV[i]) == 0 then
      if not redis.call('ZSCORE', conns, ARGV[i]) then missing[#missing + 1] = ARGV[i] end
    end
  end
  local stale = redis.call('ZRANGEBYSCORE', conns, '-inf', '(' .. now, 'LIMIT', 0, 1000)
  for _, id in ipairs(stale) do remove_conn(id, emit, channel) end
  touch(ttl)
  return missing

elseif op == 'page' then
  -- ARGV: op, channel, after or '', limit. Returns member, count, info triples.
  local start = '-'
  if ARGV[3] ~= '' then start = '(' .. ARGV[3] end
  local keys = redis.call('ZRANGEBYLEX', members, start, '+', 'LIMIT', 0, tonumber(ARGV[4]))
  local out = {}
  for _, m in ipairs(keys) do
    out[#out + 1] = m
    out[#out + 1] = redis.call('HGET', counts, m) or '0'
    out[#out + 1] = redis.call('HGET', info, m) or ''
  end
  return out

elseif op == 'reap' then
  -- ARGV: op, channel, conn id prefix of a dead node, emit. O(connections in the channel).
  local prefix, emit = ARGV[3], ARGV[4]
  local removed = 0
  for _, id in ipairs(redis.call('ZRANGE', conns, 0, -1)) do
    if string.sub(id, 1, #prefix) == prefix then
      remove_conn(id, emit, channel)
      removed = removed + 1
    end
  end
  return removed
end

return redis.error_reply('unknown presence operation ' .. tostring(op))
