"""Reading a needle straight from its store replicas (with failover, ETag checks and repair
reports): the layer below both the cache (on a miss) and the router (when its cache node is
down). It knows the store's wire format and nothing of either caller."""
