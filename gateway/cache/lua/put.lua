-- Stores one variant of a cached response (cache/redis_store.py, RedisCacheStore.put).
--
-- Replaces the entry when it is not a hash or was stored under another Vary (its variants were
-- selected by other headers); then keeps the longer of the current and the new lifetime.
--
-- KEYS: [1] the entry hash, gw:c2:{<key>}.
-- ARGV: [1] the normalised Vary names, [2] the variant's field (v:<variant>), [3] the encoded
--       stored response, [4] its lifetime in ms, [5] the full key when the hash's name had to be
--       shortened, else "".
-- Returns: 1.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and (kind ~= 'hash' or redis.call('HGET', KEYS[1], 'vary') ~= ARGV[1]) then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'vary', ARGV[1], ARGV[2], ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'k', ARGV[5]) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
