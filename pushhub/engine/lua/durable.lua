#!lua name=pushhub
-- pushhub's Redis Function library: durable publishing and history.
-- Loaded (FUNCTION LOAD REPLACE) by every node at start-up, with the configuration's
-- key prefix and channel rules compiled in below, so that one line of redis-cli
--   FCALL pushhub_publish 1 user:42 '{"text":"hi"}'
-- does exactly what an HTTP publish does. Keys are hash-tagged with the channel name,
-- which puts them in the channel's Redis Cluster slot (the slot of the declared key).
--   <prefix>stream:{ch}      STREAM  one entry per message, id "<offset>-0", field d
--   <prefix>meta:{ch}        HASH    epoch, offset (the newest offset given out)
--   <prefix>idem:{ch}:<key>  STRING  "<offset> <epoch>" of an idempotent publish

local PREFIX = __PREFIX__
local IDEMPOTENCY_TTL_MS = __IDEMPOTENCY_TTL_MS__
-- The largest payload FCALL pushhub_publish takes: the nodes' max_message_size, which
-- is also the largest raw PUBLISH they deliver.
local MAX_PAYLOAD = __MAX_PAYLOAD__
-- { lua pattern, durable (0/1), history size, history ttl ms }, first match wins.
local RULES = __RULES__
local DEFAULT_TTL_MS = 86400000

local function rule_for(channel)
  for _, r in ipairs(RULES) do
    if string.find(channel, r[1]) then return r end
  end
  return nil
end

-- Nodes pass their own prefix (and options), so that their calls stay right even while
-- the library of a node with another configuration is the one loaded.
local function keys_for(channel, prefix)
  local tag = '{' .. channel .. '}'
  prefix = prefix or PREFIX
  return prefix .. 'stream:' .. tag, prefix .. 'meta:' .. tag
end

-- An epoch names one life of a stream. It is made from the server's clock, so a stream
-- lost with its data (FLUSHALL, a restart without persistence, an expired TTL) comes
-- back under a different epoch and no client mistakes old offsets for valid ones.
local function ensure_meta(stream, meta, ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    local t = redis.call('TIME')
    epoch = string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
    redis.call('PEXPIRE', meta, ttl)
  end
  return epoch
end

local function durable_publish(channel, data, idem, size, ttl, prefix, idem_ttl)
  prefix = prefix or PREFIX
  idem_ttl = idem_ttl or IDEMPOTENCY_TTL_MS
  local idem_key = nil
  if idem ~= nil and idem ~= '' then
    idem_key = prefix .. 'idem:{' .. channel .. '}:' .. idem
    local seen = redis.call('GET', idem_key)
    if seen then
      local sep = string.find(seen, ' ', 1, true)
      return {tonumber(string.sub(seen, 1, sep - 1)), string.sub(seen, sep + 1)}
    end
  end
  local stream, meta = keys_for(channel, prefix)
  local epoch = ensure_meta(stream, meta, ttl)
  local offset = redis.call('HINCRBY', meta, 'offset', 1)
  redis.call('XADD', stream, 'MAXLEN', size, offset .. '-0', 'd', data)
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', meta, ttl)
  -- The envelope: 0x1E, a JSON header, a newline, then the payload exactly as given.
  redis.call('PUBLISH', channel,
    '\30{"t":"msg","o":' .. offset .. ',"e":"' .. epoch .. '"}\n' .. data)
  if idem_key then
    redis.call('SET', idem_key, offset .. ' ' .. epoch, 'PX', idem_ttl)
  end
  return {offset, epoch}
end

-- For people and scripts: the channel rules compiled in above decide durability.
local function publish(keys, args)
  local channel, data, idem = keys[1], args[1], args[2]
  if channel == nil or data == nil then
    return redis.error_reply('usage: FCALL pushhub_publish 1 <channel> <data> [idempotency key]')
  end
  if #data > MAX_PAYLOAD then
    return redis.error_reply('payload of ' .. #data .. ' bytes is over ' .. MAX_PAYLOAD ..
      ' (max_message_size)')
  end
  local r = rule_for(channel)
  if r == nil or r[2] == 0 then
    -- Not durable: exactly a PUBLISH, no offset.
    redis.call('PUBLISH', channel, data)
    return {0, ''}
  end
  return durable_publish(channel, data, idem, r[3], r[4])
end

-- For nodes: they pass the channel's options themselves, so their publishes stay right
-- even while another node's library (another configuration) is the one loaded.
local function publish_with(keys, args)
  -- args: data, idempotency key, history size, history ttl ms, key prefix, idempotency ttl ms
  return durable_publish(keys[1], args[1], args[2], tonumber(args[3]), tonumber(args[4]),
    args[5], tonumber(args[6]))
end

local function ttl_for(channel, given)
  if given ~= nil and given ~= '' then return tonumber(given) end
  local r = rule_for(channel)
  if r ~= nil then return r[4] end
  return DEFAULT_TTL_MS
end

local function history(keys, args)
  -- args: after ('' for the start), limit, reverse ('1' for newest first),
  --       [ttl ms (unused, kept for older callers), prefix, max bytes]
  -- A read writes nothing: a channel without history answers epoch '' and offset 0, so
  -- reading (or subscribing to) names that were never published leaves no keys behind.
  -- With max bytes, entries stop once their data would pass it (at least one is given),
  -- so a reply is bounded in bytes as well as in count.
  local channel, after, limit, reverse = keys[1], args[1], tonumber(args[2]), args[3] == '1'
  local stream, meta = keys_for(channel, args[5])
  local budget = tonumber(args[6] or '') or 0
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then return {'', 0, 0} end
  local top = tonumber(redis.call('HGET', meta, 'offset'))
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  local first = 0
  if #oldest > 0 then first = tonumber(string.match(oldest[1][1], '^(%d+)')) end
  local entries
  if reverse then
    local hi = '+'
    if after ~= '' then hi = '(' .. after .. '-0' end
    entries = redis.call('XREVRANGE', stream, hi, '-', 'COUNT', limit)
  else
    local lo = '-'
    if after ~= '' then lo = '(' .. after .. '-0' end
    entries = redis.call('XRANGE', stream, lo, '+', 'COUNT', limit)
  end
  local out = {epoch, top, first}
  local used = 0
  for _, e in ipairs(entries) do
    local data = e[2][2]
    if budget > 0 and #out > 3 and used + #data > budget then break end
    used = used + #data
    out[#out + 1] = tonumber(string.match(e[1], '^(%d+)'))
    out[#out + 1] = data
  end
  return out
end

local function clear(keys, args)
  -- args: [ttl ms, prefix]
  local channel = keys[1]
  local ttl = ttl_for(channel, args[1])
  local stream, meta = keys_for(channel, args[2])
  redis.call('DEL', stream, meta)
  return {0, ensure_meta(stream, meta, ttl)}
end

redis.register_function('pushhub_publish', publish)
redis.register_function('pushhub_publish_with', publish_with)
redis.register_function('pushhub_history', history)
redis.register_function('pushhub_clear', clear)
