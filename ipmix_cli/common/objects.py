"""Reading objects from a store (s3://, gs://, az://...) through fsspec: one call per object,
one line for any failure of the store."""

from __future__ import annotations

from ipmix_cli.common.errors import IpmixError
from ipmix_cli.common.storage import _reason, classify


class StoreError(IpmixError):
    """The store cannot be reached or refuses us: no shard can be read, so there is no
    substitute to try (skip_bad does not apply)."""


def is_store_url(path) -> bool:
    where = classify(path)
    return where.kind == "url" and where.scheme not in ("http", "https")


def fetch(url: str, size: int | None = None, options: dict | None = None) -> bytes:
    """All bytes of one object (with `size`, its first `size` bytes: one ranged GET and no
    HEAD request first). `options` are fsspec storage options added to those of the environment.
    FileNotFoundError if it is not there; StoreError (one line) when the store fails after its
    client's own retries."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **(options or {}))
        return fs.cat_file(path, start=0, end=size or None)
    except FileNotFoundError:
        raise
    except Exception as exc:  # each store's client has its own error types: one line for any of them
        raise StoreError(f"cannot read {url}: {_reason(exc)}") from None
