"""Rate limiting: `policy` (pure rules and header values), `lua/decide.lua` (the Redis decision
script), `limiter` (Redis and in-process adapters) and `middleware` (the ASGI layer).

Kept empty on purpose: importing the pure `policy` module must not pull in the ASGI layer.
"""
