"""Stream pre-built shards back into training: `ShardLoader` (torch), plus the pure
planning functions in `ipmix_cli.stream.plan`."""

from __future__ import annotations

__all__ = ["ShardLoader"]


def __getattr__(name):
    # Importing the package does not import torch; ShardLoader does.
    if name == "ShardLoader":
        from .loader import ShardLoader

        return ShardLoader
    raise AttributeError(name)
