"""Caching adapters: an in-process LRU (L1) in front of Redis (L2), validated by version tokens.

Import from the submodules: `namespaces` is free to import, `twolevel` loads redis.
"""
