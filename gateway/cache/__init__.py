"""The RFC 9111 shared HTTP cache: policy, entries, store and middleware."""
