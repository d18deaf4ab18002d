-- Marks an entry stale without deleting it (cache/redis_store.py, soft purge).
--
-- Only marks existing hashes: HSET on a missing key would create one that never expires. The
-- time is the server's, so every gateway compares it with its stored responses the same way.
--
-- KEYS: [1] the entry hash, gw:c2:{<key>}.
-- ARGV: none.
-- Returns: 1 if the entry was marked, 0 if there was none.
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'purged', now[1] .. '.' .. string.format('%06d', tonumber(now[2])))
return 1
