"""Upper bounds of the counts `build_shards` accepts: far above any useful build, far below what
could exhaust a machine (the manifest lists every shard of every epoch)."""

MAX_EPOCHS = 1000  # training runs reuse each materialized epoch at least twice (see the echo factor)
MAX_SHARDS = 65_536  # per epoch: 256 MB shards of a 16 TB epoch
MAX_BUILD_SHARDS = 1_000_000  # epochs x shards per epoch: a manifest of about 200 MB
MAX_WORKERS = 1024
MAX_NODES = 10_000
MAX_SEED = 2**63 - 1
