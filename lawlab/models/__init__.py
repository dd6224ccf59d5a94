"""Models on disk and in memory: loading and hashing, the hub, token caches."""
