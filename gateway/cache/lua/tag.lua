-- Records an entry under one of its purge tags (cache/redis_store.py, RedisCacheStore.put).
--
-- A value of another type under the tag's name is replaced; the set lives as long as the
-- longest-lived entry added to it.
--
-- KEYS: [1] the tag's set, gw:c2:tag:{<tag>}.
-- ARGV: [1] the entry hash's name, [2] the entry's lifetime in ms.
-- Returns: 1.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'set' then redis.call('DEL', KEYS[1]) end
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
