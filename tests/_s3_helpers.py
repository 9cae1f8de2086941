"""Buckets for the tests that run against the moto S3 server (fixtures `s3_endpoint`, `s3`)."""

import uuid


def new_bucket(s3) -> str:
    """A fresh, empty bucket; returns its name."""
    name = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(name)
    return name


def upload_folder(s3, local, prefix: str = "shards") -> str:
    """The folder `local` copied to `prefix` in a new bucket; returns its s3:// URL."""
    name = new_bucket(s3)
    s3.put(str(local), f"{name}/{prefix}", recursive=True)
    return f"s3://{name}/{prefix}"
