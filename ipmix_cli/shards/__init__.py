"""Materialized epochs as WebDataset shards: sources, plan, tar writer, build, tools.

`from ipmix_cli.shards import build_shards` is imported lazily so that reading a source
(`ipmix_cli.data.sources`) does not pull in the augmentation engine.
"""


def __getattr__(name):
    if name in ("build_shards", "combine_parts"):
        from ipmix_cli.shards import build

        return getattr(build, name)
    raise AttributeError(name)


__all__ = ["build_shards", "combine_parts"]
