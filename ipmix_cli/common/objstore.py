"""Writing under a prefix of an object store (any fsspec URL): whole-file uploads, one listing,
batched reads of small objects, and retries of the errors a store has now and then.

    prefix = Prefix("s3://bucket/shards", "--out", {"anon": False})
    prefix.put_file(local_path, "epoch-0000/ipmix-e0000-00000.tar")   # one PUT, retried
    sizes = prefix.listing()                                          # {relative name: Entry}

An object store has no rename: an object appears whole when its PUT completes, so a file is
always finished (and fsynced) on local disk first and uploaded in one piece. Errors end in one
IpmixError line that names the URL; transient ones (dropped connections, throttling, 5xx) are
retried a few times with backoff first. Endpoint and credentials come from where users keep
them (AWS_ENDPOINT_URL, AWS_* variables and files, FSSPEC_<PROTOCOL>_<OPTION> variables);
`--storage-option KEY=VALUE` adds to them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ipmix_cli.common import storage
from ipmix_cli.common.errors import IpmixError, OptionError

SINGLE_PUT_LIMIT = 5 * 2**30  # S3's largest object uploaded in one PUT
RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before the 2nd, 3rd and 4th try
# Errors that another try cannot fix: a missing bucket or object, refused credentials, bad arguments.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError)


def parse_storage_options(pairs) -> dict:
    """`KEY=VALUE` strings → fsspec options. A value that reads as JSON (a number, true/false,
    an object such as {"endpoint_url": "..."}) is taken as that; otherwise it is a string.
    A dotted key (client_kwargs.endpoint_url=...) sets a key of a nested dict."""
    options: dict = {}
    for pair in pairs or ():
        key, sep, text = str(pair).partition("=")
        key = key.strip()
        if not sep or not key:
            raise OptionError("{storage_option} {pair} is not KEY=VALUE", pair=repr(pair))
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *parents, last = key.split(".")
        into = options
        for part in parents:
            into = into.setdefault(part, {})
            if not isinstance(into, dict):
                raise OptionError("{storage_option} {pair}: {part} is set twice, as a value and as a group", pair=repr(pair), part=part)
        into[last] = value
    return options


def is_store_url(path) -> bool:
    """A URL of an object store (s3://, gs://, az://, ... through fsspec); http(s) URLs are
    plain web addresses, read whole (a shard manifest, pipe-like), never written."""
    if path is None:
        return False
    where = storage.classify(path)
    return where.kind == "url" and where.scheme not in ("http", "https")


def fetch(url: str, size: int | None = None, options: dict | None = None, option: str = "shards") -> bytes:
    """All bytes of the object at `url` (with `size`, its first `size` bytes: one ranged GET,
    no HEAD first), through the Prefix of its folder: its retries, its one-line errors.
    FileNotFoundError if the object is not there."""
    folder, _, name = url.rpartition("/")
    return Prefix(folder, option, options).read(name, size)


def fetch_whole(url: str, size: int | None, options: dict | None = None, option: str = "shards") -> "Whole":
    """The object at `url` read whole, with its length and the SHA-256 the store keeps for it
    (Prefix.read_whole)."""
    folder, _, name = url.rpartition("/")
    return Prefix(folder, option, options).read_whole(name, size)


def with_s3_config(url: str, options: dict | None, **defaults) -> dict | None:
    """For s3://, `options` with the botocore Config values `defaults` filled in where neither
    `options` nor fsspec's configuration sets them (a dict value, such as `s3`, is filled key
    by key): a value the user set wins. Other stores: `options` unchanged."""
    if storage.classify(url).scheme not in ("s3", "s3a"):
        return options
    from fsspec.config import conf

    merged = dict(options or {})
    config = {**(conf.get("s3", {}).get("config_kwargs") or {}), **(merged.get("config_kwargs") or {})}
    for key, value in defaults.items():
        config[key] = {**value, **(config.get(key) or {})} if isinstance(value, dict) else config.get(key, value)
    merged["config_kwargs"] = config
    return merged


def without_payload_signing(url: str, options: dict | None) -> dict | None:
    """For s3://, `options` with botocore's payload signing off (with_s3_config): a body is then
    not hashed for the request's signature, which botocore otherwise does over plain http and
    for any PUT that carries its own checksum. The store still checks each body against the
    checksum its PUT carries (a shard's SHA-256, else botocore's CRC32)."""
    return with_s3_config(url, options, s3={"payload_signing_enabled": False})


@dataclass(frozen=True)
class Entry:
    size: int
    etag: str  # the store's content tag without quotes ("" when it gives none)
    md5: str = ""  # the object's MD5 in hex where the listing gives one, else ""


_HEX_MD5 = re.compile(r"^[0-9a-f]{32}$")


def _entry(info: dict) -> Entry:
    tag = storage.etag(info).strip('"')
    return Entry(int(info.get("size") or 0), tag, _listed_md5(info, tag))


def _listed_md5(info: dict, tag: str) -> str:
    """The MD5 a listing gives: S3's ETag of a single PUT (32 hex digits; a multipart upload's
    has a dash), GCS's md5Hash (base64), Azure's Content-MD5 (bytes; a blob put in one call)."""
    if _HEX_MD5.match(tag.lower()):
        return tag.lower()
    try:
        if info.get("md5Hash"):
            return base64.b64decode(info["md5Hash"]).hex()
        settings = info.get("content_settings")
        digest = settings.get("content_md5") if isinstance(settings, dict) else getattr(settings, "content_md5", None)
        return bytes(digest).hex() if digest and len(digest) == 16 else ""
    except (ValueError, TypeError):
        return ""


@dataclass(frozen=True)
class Whole:
    """An object read whole (Prefix.read_whole)."""

    data: object  # its bytes (bytes-like); empty, not read, when `length` is not the size asked for
    length: int  # its length in the store
    sha256: str | None  # hex of the SHA-256 the store keeps for it and sent with it; None if none


def _full_object_sha256(value: str | None) -> str | None:
    """S3's base64 SHA-256 checksum of a whole object as hex; None for none, or for a
    multipart upload's checksum of its parts ('...-N')."""
    if not value or "-" in value:
        return None
    return base64.b64decode(value).hex()


def _ask_for_stored_checksum(request, **kwargs) -> None:
    """botocore hook (before-sign of GetObject): S3 sends the checksum it keeps for an object
    only when the request asks for it (x-amz-checksum-mode). Asked through botocore's
    ChecksumMode parameter instead, botocore would also hash the whole body to check it,
    which is the CPU time the caller saves by comparing the store's checksum with its own."""
    if "x-amz-checksum-mode" not in request.headers:
        request.headers["x-amz-checksum-mode"] = "ENABLED"


def _quiet_dropped_connections(loop, context) -> None:
    """An async client leaves a task behind when a connection drops in the middle of a request;
    its error is the one already retried and reported, so it is not printed again at exit."""
    if isinstance(context.get("exception"), OSError):
        return
    loop.default_exception_handler(context)


class Prefix:
    """A folder-like prefix of an object store. Pickles as its URL and options (workers open
    their own client)."""

    def __init__(self, url: str, option: str = "--out", options: dict | None = None):
        where = storage.classify(url)
        if where.kind != "url":
            raise ValueError(f"not a URL: {url}")
        storage.check_scheme(where, option)
        self.url = url.rstrip("/")
        self.option = option
        self.options = dict(options or {})
        self._fs = None
        self._root = None

    def __getstate__(self):
        return {"url": self.url, "option": self.option, "options": self.options}

    def __setstate__(self, state):
        self.__init__(state["url"], state["option"], state["options"])

    def _open(self):
        if self._fs is None:
            import fsspec

            try:
                self._fs, root = fsspec.core.url_to_fs(self.url, **self.options)
            except Exception as exc:  # a bad option or a client that cannot start
                raise IpmixError(f"{self.option} {self.url}: {storage._reason(exc)}") from None
            self._root = root.rstrip("/")
            loop = getattr(self._fs, "loop", None)  # an async filesystem's event loop thread
            if loop is not None:
                loop.set_exception_handler(_quiet_dropped_connections)
        return self._fs

    @property
    def fs(self):
        return self._open()

    def path(self, rel: str) -> str:
        self._open()
        return f"{self._root}/{rel}" if rel else self._root

    def child_url(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def _retry(self, what: str, call, missing_is_error: bool = True):
        """call() with retries of transient errors; IpmixError (one line) when they run out.
        With `missing_is_error` False a FileNotFoundError reaches the caller as it is."""
        for attempt in range(len(RETRY_DELAYS) + 1):
            try:
                return call()
            except IpmixError:
                raise
            except _PERMANENT as exc:
                if isinstance(exc, FileNotFoundError) and not missing_is_error:
                    raise
                raise IpmixError(f"{self.option} {self.url}: {what} failed: {storage._reason(exc)}") from None
            except Exception as exc:  # the client's types vary by store; the last one is reported
                if attempt == len(RETRY_DELAYS):
                    raise IpmixError(f"{self.option} {self.url}: {what} failed after {attempt + 1} tries: "
                                     f"{storage._reason(exc)}") from None
                time.sleep(RETRY_DELAYS[attempt])

    def _bucket_must_exist(self) -> None:
        bucket = self._root.split("/", 1)[0]
        if not self.fs.exists(bucket):
            raise FileNotFoundError(f"bucket {bucket} does not exist")

    def check_bucket(self) -> None:
        """One line if the prefix's bucket does not exist (or cannot be reached), before a
        command does work it could not store."""
        self._open()
        self._retry("checking the bucket", self._bucket_must_exist)

    def listing(self) -> dict[str, Entry]:
        """Every object under the prefix: {name relative to it: Entry}; {} for a prefix with
        none (a bucket that does not exist is an error). One listing request series."""
        fs = self._open()

        def find():
            try:
                found = fs.find(self._root, detail=True)
            except FileNotFoundError:
                found = {}
            if not found:  # an empty prefix, or no bucket at all: only the bucket's absence is an error
                self._bucket_must_exist()
            return found

        fs.invalidate_cache(self._root)
        found = self._retry("listing", find)
        out = {}
        for name, info in found.items():
            if info.get("type") != "file" or not name.startswith(self._root + "/"):
                continue
            out[name[len(self._root) + 1:]] = _entry(info)
        return out

    def entry(self, rel: str) -> Entry | None:
        """The Entry of the one object `rel`; None if there is none."""
        fs = self._open()
        try:
            info = self._retry(f"reading {rel}", lambda: fs.info(self.path(rel)), missing_is_error=False)
        except FileNotFoundError:
            return None
        return _entry(info) if info.get("type") == "file" else None

    @property
    def is_s3(self) -> bool:
        return storage.classify(self.url).scheme in ("s3", "s3a")

    def put_file(self, local, rel: str, sha256: str | None = None) -> bool:
        """Upload a finished local file as the object `rel` (a PUT is all or nothing); returns
        whether the store keeps `sha256` for it.

        With `sha256` (hex) on s3://, the PUT carries it as S3's SHA-256 checksum: the store
        checks the bytes against it and keeps it (see `sha256s`), and the client computes no
        checksum of its own (nor any hash at all with `without_payload_signing`'s options).
        Such a file is always one PUT (a whole-object checksum needs one), up to S3's 5 GB
        limit for one. A store that ignores the checksum (some S3-compatible ones) answers
        without it: False."""
        fs = self._open()
        size = os.path.getsize(local)
        if sha256 and self.is_s3 and 0 < size < SINGLE_PUT_LIMIT:
            return self._retry(f"uploading {rel}", lambda: self._put_with_sha256(local, rel, sha256))
        self._retry(f"uploading {rel}", lambda: fs.put_file(str(local), self.path(rel)))
        return False

    def _put_with_sha256(self, local, rel: str, sha256: str) -> bool:
        """One PUT of the whole file carrying its SHA-256 (what s3fs's put_file sends for a file
        this size, with the same content type); True if the answer shows the store kept it."""
        import mimetypes

        fs = self._open()
        bucket, key, _ = fs.split_path(self.path(rel))
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        content_type = mimetypes.guess_type(str(local))[0]
        with open(local, "rb") as f:
            body = f.read()
        answer = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256",
                            ChecksumSHA256=checksum, **({"ContentType": content_type} if content_type else {}))
        fs.invalidate_cache(self.path(rel))
        return answer.get("ChecksumSHA256") == checksum

    def sha256s(self, rels) -> dict[str, str | None]:
        """The SHA-256 checksum S3 keeps for each object of `rels` (hex; None where it keeps
        none, e.g. an object not uploaded by put_file with its sha256, or not there any more);
        {} for other stores. One HEAD per object, several at a time."""
        rels = list(rels)
        if not rels or not self.is_s3:
            return {}
        fs = self._open()

        def head(rel):
            bucket, key, _ = fs.split_path(self.path(rel))

            def request():
                return fs.call_s3("head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED")

            try:
                info = self._retry(f"reading the checksum of {rel}", request, missing_is_error=False)
            except FileNotFoundError:
                return None
            return _full_object_sha256(info.get("ChecksumSHA256"))

        with ThreadPoolExecutor(8) as pool:
            return dict(zip(rels, pool.map(head, rels)))

    def put_bytes(self, rel: str, data: bytes) -> None:
        fs = self._open()
        self._retry(f"writing {rel}", lambda: fs.pipe_file(self.path(rel), data))

    def get_file(self, rel: str, local) -> None:
        fs = self._open()
        self._retry(f"downloading {rel}", lambda: fs.get_file(self.path(rel), str(local)))

    def get_files(self, rels, locals_) -> None:
        """Download the objects `rels` to the local paths `locals_`, several at a time where
        the store allows; retried as a whole."""
        fs = self._open()
        paths = [self.path(r) for r in rels]
        targets = [str(p) for p in locals_]
        if paths:
            self._retry("downloading", lambda: fs.get(paths, targets))

    def read(self, rel: str, size: int | None = None) -> bytes:
        """The bytes of the object `rel` (with `size`, its first `size` bytes, in one ranged
        GET); FileNotFoundError if it is not there."""
        fs = self._open()
        return self._retry(f"reading {rel}", lambda: fs.cat_file(self.path(rel), start=0, end=size or None),
                           missing_is_error=False)

    def read_whole(self, rel: str, size: int | None) -> Whole:
        """The object `rel` read whole, in one GET. FileNotFoundError if it is not there.

        On s3:// with `size`: the body is copied once, chunk by chunk, into one array (s3fs's
        cat_file joins the chunks and copies them again); an object of another length is not
        read (its Whole has no data); and the GET asks for the SHA-256 checksum the store keeps
        for the object (S3 checked it when the object was uploaded with it, see put_file), which
        comes back as `sha256`, without botocore hashing the body. Elsewhere (other stores, or
        no size) there is no checksum, and with `size` only its first `size` bytes are read."""
        if not (self.is_s3 and size):
            data = self.read(rel, size)
            return Whole(data, len(data), None)
        import numpy as np

        fs = self._open()
        bucket, key, _ = fs.split_path(self.path(rel))

        async def get():
            await fs.set_session()
            client = await fs.get_s3(bucket)
            client.meta.events.register("before-sign.s3.GetObject", _ask_for_stored_checksum,
                                        unique_id="ipmix-ask-for-stored-checksum")
            # Not a ranged GET: S3 sends no checksum with a range.
            response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
            body, length = response["Body"], response["ContentLength"]
            try:
                if length != size:
                    return Whole(b"", length, None)
                data = np.empty(size, np.uint8)  # not zeroed first, as a bytearray would be
                into, got = memoryview(data), 0
                async for chunk in body.iter_chunks(1 << 20):  # the client checks the body's length
                    into[got:got + len(chunk)] = chunk
                    got += len(chunk)
            finally:
                body.close()
            return Whole(data, length, _full_object_sha256(response.get("ChecksumSHA256")))

        from fsspec.asyn import sync

        return self._retry(f"reading {rel}", lambda: sync(fs.loop, get), missing_is_error=False)

    def cat(self, rels) -> dict[str, bytes]:
        """The bytes of several small objects, fetched concurrently where the store allows."""
        rels = list(rels)
        if not rels:
            return {}
        fs = self._open()
        paths = [self.path(r) for r in rels]
        got = self._retry("reading", lambda: fs.cat(paths, on_error="raise"))
        return {r: got[p] for r, p in zip(rels, paths)}

    def remove(self, rels) -> None:
        rels = list(rels)
        if rels:
            fs = self._open()
            paths = [self.path(r) for r in rels]
            self._retry("deleting", lambda: fs.rm(paths))


def _sha256(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class StagedOut:
    """A command's OUT folder at a URL: the command writes a local staging folder (`folder`),
    then `publish` uploads its files, the one that marks the folder complete last.

    What the prefix already holds is copied into the staging folder first, so the command
    sees what it would see in a local OUT (a finished set, a set to resume, something else to
    refuse) and publishes only the files it changed; objects the command removed (an
    `--overwrite`) are deleted, the completion marker before anything else."""

    SKIP = (".cache/",)  # fetch caches stay on this machine

    def __init__(self, url: str, option: str, options: dict | None = None, staging_root=None):
        import tempfile
        from pathlib import Path

        self.prefix = Prefix(url, option, options)
        root = Path(staging_root).expanduser() if staging_root else Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="ipmix-out-", dir=root))
        self.pulled: dict = {}  # {relative name: sha256} of what the prefix holds: copied in, or published since

    def pull(self):
        """Copy what the prefix holds into the staging folder; returns the folder."""
        for rel in sorted(self.prefix.listing()):
            if rel.startswith(self.SKIP):
                continue
            local = self.folder / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            self.prefix.get_file(rel, local)
            self.pulled[rel] = _sha256(local)
        return self.folder

    def publish(self, marker: str, replace_marker: bool = False) -> None:
        """Upload every new or changed file, delete the objects the command removed, and upload
        `marker` last; a marker that is about to change is deleted first, unless `replace_marker`
        (an old marker stays valid beside the newer files, as a training checkpoint does beside a
        longer log). May be called again: each call uploads what changed since the last."""
        files = {p.relative_to(self.folder).as_posix(): p for p in sorted(self.folder.rglob("*")) if p.is_file()}
        files = {rel: p for rel, p in files.items() if not rel.startswith(self.SKIP)}
        digests = {rel: _sha256(p) for rel, p in files.items()}

        def changed(rel):  # by content: a command may rewrite a file with the same bytes
            return self.pulled.get(rel) != digests[rel]

        def upload(rel):
            self.prefix.put_file(files[rel], rel)
            self.pulled[rel] = digests[rel]

        if marker in self.pulled and not replace_marker and (marker not in files or changed(marker)):
            self.prefix.remove([marker])
            del self.pulled[marker]
        for rel in files:
            if rel != marker and changed(rel):
                upload(rel)
        removed = sorted(set(self.pulled) - set(files) - {marker})
        self.prefix.remove(removed)
        for rel in removed:
            del self.pulled[rel]
        if marker in files and changed(marker):
            upload(marker)

    def cleanup(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def staged_out(out, option: str, options: dict | None = None, marker: str = "manifest.json", staging_root=None):
    """A context manager yielding the folder a command writes OUT into: `out` itself when local;
    for a URL, a staging folder published (marker last) when the block ends without an error."""
    import contextlib
    from pathlib import Path

    @contextlib.contextmanager
    def local():
        yield Path(out)

    @contextlib.contextmanager
    def remote():
        staged = StagedOut(str(out), option, options, staging_root)
        try:
            yield staged.pull()
            staged.publish(marker)
        finally:
            staged.cleanup()

    return remote() if is_store_url(out) else local()
