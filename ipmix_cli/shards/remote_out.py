"""A shard build whose OUT is a URL (s3://, gs://, az://...).

Object stores have no rename, so the build runs on a local staging folder with OUT's layout:
each shard is finished there (written, fsynced, renamed), uploaded whole with one PUT, then
its record; the local copy is deleted once uploaded. The manifest, indexes and dataset card
are uploaded last, after the shards they describe, so nothing in OUT looks complete before
it is. A resume lists OUT once and keeps the shards whose object has the size and the hash
their record gives, without downloading them: on s3:// the SHA-256 checksum each shard's PUT
carried (one HEAD per shard to keep). Where the store keeps no SHA-256 (gs://, az://, an
S3-compatible store that ignores the checksum: its answer to the PUT lacks it) the record also
carries the shard's MD5, which a resume compares with the MD5 the listing gives (a single
PUT's ETag, GCS's md5Hash, Azure's Content-MD5); where the listing gives none, the size alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import weakref
from pathlib import Path

from ipmix_cli.common.errors import OptionError
from ipmix_cli.common.objstore import Prefix, without_payload_signing
from ipmix_cli.shards import manifest as mf
from ipmix_cli.shards.indexes import md5_file

# What a build writes under OUT; anything else means OUT holds something that is not a build.
_BUILD_NAME = re.compile(r"^(manifest\.json|README\.md|\.records/.+|epoch-\d{4}/[^/]+)$")
_RECORD = re.compile(r"^\.records/epoch-\d{4}/shard-\d{5}\.json$")


def _record_key(rel: str) -> tuple[int, int]:
    """(epoch, shard) of a record's name, .records/epoch-EEEE/shard-SSSSS.json."""
    epoch, shard = re.findall(r"\d+", rel)
    return int(epoch), int(shard)


class RemoteOut:
    """OUT as a prefix of an object store, and the local staging folder mirroring it."""

    def __init__(self, url: str, staging_root=None, options: dict | None = None):
        self.prefix = Prefix(str(url), "--out", without_payload_signing(str(url), options))
        self.url = self.prefix.url
        root = Path(staging_root).expanduser() if staging_root else Path(tempfile.gettempdir())
        self.staging_root = root
        self.staging: Path | None = None
        self.entries: dict = {}  # the last listing of OUT: {relative name: Entry}
        self.sha256s: dict = {}  # {shard name: the SHA-256 the store keeps} of the shards a resume may keep

    def __getstate__(self):  # workers get the listing and their staging folder, not a client
        return {"prefix": self.prefix, "url": self.url, "staging_root": self.staging_root,
                "staging": self.staging, "entries": self.entries, "sha256s": self.sha256s}

    def __setstate__(self, state):
        self.__dict__.update(state)

    # ------------------------------------------------------------------ before the build

    def pull(self, *, overwrite: bool = False, dry_run: bool = False) -> Path:
        """List OUT once and mirror its manifest and shard records into a new staging folder;
        returns that folder. With `overwrite` (and not `dry_run`) the build in OUT is deleted
        first, manifest first, so nothing is left that looks complete."""
        entries = self.prefix.listing()
        stray = sorted(r for r in entries if not _BUILD_NAME.match(r))
        is_build = mf.MANIFEST in entries or any(_RECORD.match(r) for r in entries)
        if stray and not is_build:
            raise OptionError("{out} {url} is not empty and holds no ipmix build (found {found}); "
                              "choose an empty or new prefix", url=self.url, found=stray[0])
        if overwrite and not dry_run and entries:
            if mf.MANIFEST in entries:
                self.prefix.remove([mf.MANIFEST])
            self.prefix.remove(sorted(r for r in entries if _BUILD_NAME.match(r) and r != mf.MANIFEST))
            entries = {}
        self.staging_root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        self.staging = Path(tempfile.mkdtemp(prefix=f"ipmix-staging-{digest}-", dir=self.staging_root))
        # deleted when this object goes (the build returned or failed), or at exit
        weakref.finalize(self, shutil.rmtree, str(self.staging), True)
        self.entries = entries
        self._fetch([r for r in entries if r == mf.MANIFEST or _RECORD.match(r)])
        self.sha256s = self.prefix.sha256s(self._checksum_candidates())
        return self.staging

    def _checksum_candidates(self) -> list[str]:
        """The shards whose record and object agree in size, and whose record has no md5 the
        object's ETag could be compared with."""
        names = []
        for rel in self.entries:
            if not _RECORD.match(rel):
                continue
            record = mf.read_record(self.staging, *_record_key(rel))
            entry = self.entries.get(record["path"]) if record else None
            if entry is not None and entry.size == record.get("bytes") and not self._md5_comparable(record, entry):
                names.append(record["path"])
        return sorted(names)

    @staticmethod
    def _md5_comparable(record: dict, entry) -> bool:
        return bool(record.get("md5")) and bool(entry.md5)

    def _fetch(self, rels) -> None:
        for rel, data in self.prefix.cat(rels).items():
            path = self.staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def shard_is_done(self, record: dict | None, config_hash: str) -> bool:
        """Whether OUT holds the shard `record` describes: same configuration, an object of the
        recorded size and hash: its MD5 where the record has an md5 and the listing gives the
        object's, else on s3:// the SHA-256 checksum the store keeps for it."""
        if not record or record.get("config_hash") != config_hash:
            return False
        entry = self.entries.get(record.get("path", ""))
        if entry is None or entry.size != record.get("bytes"):
            return False
        if self._md5_comparable(record, entry):
            return entry.md5 == record["md5"]
        if self.prefix.is_s3:
            return self.sha256s.get(record["path"]) == record.get("sha256")
        return True

    # ------------------------------------------------------------------ during the build

    def upload_shard(self, local_shard: Path, record: dict, local_index: Path | None = None) -> float:
        """Upload a finished (fsynced) shard, then its DALI index when given, then its record;
        the local shard and index are deleted. Where the store keeps no SHA-256 of the shard,
        its MD5 (read from the file, still in the page cache) joins `record` first, for a
        resume to compare. Returns the seconds the uploads took."""
        t0 = time.perf_counter()
        rec_rel = mf.record_path("", record["epoch"], record["shard"]).as_posix()
        if not self.prefix.put_file(local_shard, record["path"], sha256=record["sha256"]):
            record["md5"] = md5_file(local_shard)
            mf.write_record(self.staging, record)
        if local_index is not None:
            self.prefix.put_file(local_index, local_index.relative_to(self.staging).as_posix())
        self.prefix.put_file(self.staging / rec_rel, rec_rel)
        for done in (local_shard, local_index):
            try:
                if done is not None:
                    os.unlink(done)
            except OSError:
                pass
        return time.perf_counter() - t0

    def put(self, rel: str) -> None:
        """Upload the staging folder's file `rel` to the same name in OUT."""
        self.prefix.put_file(self.staging / rel, rel)

    # ------------------------------------------------------------------ after the build

    def sync_records(self) -> None:
        """List OUT again and fetch the records other nodes (or Dask workers) uploaded since."""
        self.entries = self.prefix.listing()
        self._fetch([r for r in self.entries if _RECORD.match(r) and not (self.staging / r).is_file()])

    def size_of(self, rel: str) -> int | None:
        entry = self.entries.get(rel)
        return None if entry is None else entry.size

    def download(self, rel: str) -> Path:
        """A local copy of OUT's object `rel` in the staging folder (e.g. to index it)."""
        local = self.staging / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        self.prefix.get_file(rel, local)
        return local

    def remove_contexts(self) -> None:
        prefix = f"{mf.RECORDS}/contexts/"
        self.prefix.remove(sorted(r for r in self.entries if r.startswith(prefix)))

