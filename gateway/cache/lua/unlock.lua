-- Releases a collapsing lock only if the caller still owns it (cache/redis_store.py, unlock).
--
-- KEYS: [1] the lock, gw:c2:{<key>}:lock.
-- ARGV: [1] the token the caller's SET NX stored.
-- Returns: 1 if the lock was released, 0 if it had expired or belongs to another caller.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
