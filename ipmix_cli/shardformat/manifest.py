"""OUT/manifest.json as both sides read it: its schema name, the versions written and read."""

from __future__ import annotations

SCHEMA = "ipmix-shards"
# 2: shard files named ipmix-eEEEE-SSSSS.tar (unique within a build); 1 named them
# shard-SSSSS.tar in every epoch folder. Readers take both; builds write and resume 2 only.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
