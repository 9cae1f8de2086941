"""The user's own pictures ("downloaded images" in the IPMix paper): from a local folder or a
text file of http(s) URLs (fetched once into a cache). Each is validated, converted to RGB,
resized and centre-cropped to the set's size; what cannot be used is skipped with a reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fractalgen.errors import BadImage, FractalgenError
from fractalgen.files import atomic_write_bytes
from fractalgen.images import MAX_PIXELS, open_rgb, resize_center_crop

FETCH_TIMEOUT = 10.0  # seconds per connect / read
MAX_DOWNLOAD = 32 * 1024 * 1024  # bytes
MAX_REDIRECTS = 5
USER_AGENT = "ipmix-fractalgen/1 (+mixing-set ingest)"


@dataclass
class Picture:
    """One usable picture: where it came from, its original size and its pixels already
    resized and centre-cropped to the set's size (uint8 HxWx3)."""

    origin: str
    pixels: np.ndarray
    original_size: tuple[int, int]
    source_sha256: str


@dataclass
class IngestReport:
    """What `gather` kept and skipped. With `on_picture` set, each kept picture is handed to it
    as soon as it is ready instead of being held in `pictures` (memory stays flat)."""

    pictures: list[Picture] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    on_picture: object = None
    kept: int = 0

    def keep(self, picture: Picture) -> None:
        self.kept += 1
        if self.on_picture is None:
            self.pictures.append(picture)
        else:
            self.on_picture(picture)

    def skip(self, origin: str, reason: str, detail: str = "") -> None:
        self.skipped.append({"origin": origin, "reason": reason, "detail": detail})


def default_min_size(size: int) -> int:
    """Smallest side accepted for a set of `size`: a quarter of it, at least 16 px."""
    return max(16, size // 4)


def list_source(source: str | os.PathLike, exclude: str | os.PathLike | None = None) -> tuple[str, list[str]]:
    """('folder', relative file paths) or ('urls', URL lines); one clear error if unusable.

    `exclude`: a folder (the set being written) whose files are never listed."""
    path = Path(source)
    if path.is_dir():
        skip = None if exclude is None else Path(exclude).resolve()
        if skip is not None and path.resolve() == skip:
            raise FractalgenError(f"include folder {path} is the output folder itself; "
                                  "keep your pictures in another folder")
        files = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and (skip is None or Path(root, d).resolve() != skip))
            for name in sorted(names):
                if not name.startswith("."):
                    files.append(os.path.relpath(os.path.join(root, name), path))
        files.sort()
        if not files:
            raise FractalgenError(f"include folder {path} holds no files")
        return "folder", files
    if path.is_file():
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise FractalgenError(f"cannot read include list {path}: {exc.strerror or exc}") from None
        if b"\0" in raw:  # a picture or other binary file, not a URL list
            raise FractalgenError(f"include list {path} is not a text file (give a folder of pictures, "
                                  "or a text file with one http(s) URL per line)")
        text = raw.decode("utf-8-sig", errors="replace")
        lines = [ln.strip() for ln in text.splitlines()]
        urls = [ln for ln in lines if ln and not ln.startswith("#")]
        if not urls:
            raise FractalgenError(f"include list {path} holds no URLs (one http(s) URL per line)")
        return "urls", urls
    raise FractalgenError(f"include source {path} does not exist (give a folder or a text file of URLs)")


def _looks_like_a_picture(path: Path) -> bool:
    """False when Pillow recognises no picture format in the file's first bytes (it reads only
    the header). Anything else, unreadable or empty files included, goes on to the full read,
    which names the exact reason."""
    try:
        if path.stat().st_size == 0:
            return True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path):
                return True
    except UnidentifiedImageError:
        return False
    except Exception:  # truncated header, too large, unreadable: reported by the full read
        return True


def _pixel_key(img) -> str:
    h = hashlib.sha256()
    h.update(f"{img.size[0]}x{img.size[1]}".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def _accept(report: IngestReport, seen: dict, origin: str, data: bytes, size: int, min_size: int,
            max_pixels: int) -> None:
    try:
        img = open_rgb(data, min_size=min_size, max_pixels=max_pixels)
    except BadImage as exc:
        report.skip(origin, exc.reason, exc.detail)
        return
    key = _pixel_key(img)
    if key in seen:
        report.skip(origin, "duplicate", f"same pixels as {seen[key]}")
        return
    seen[key] = origin
    pixels = np.asarray(resize_center_crop(img, size), dtype=np.uint8)
    report.keep(Picture(origin, pixels, tuple(img.size), hashlib.sha256(data).hexdigest()))


class FetchError(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class _LimitedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow at most `max_redirections` redirects, and only to http(s)."""

    def __init__(self, limit: int):
        super().__init__()
        self.max_redirections = limit

    def http_error_302(self, req, fp, code, msg, headers):
        target = headers.get("location") or headers.get("uri") or ""
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, target)).scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError("bad-redirect", f"redirect to a {scheme} URL refused")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError("bad-redirect", f"redirect to a {scheme} URL refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, *, timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_DOWNLOAD,
          max_redirects: int = MAX_REDIRECTS) -> bytes:
    """Download `url` (http/https only) with a per-operation timeout, an overall deadline of
    five timeouts, a size cap and a redirect limit. HTML answers are refused. Raises FetchError."""
    opener = urllib.request.build_opener(_LimitedRedirects(max_redirects))
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
    deadline = time.monotonic() + 5 * timeout
    try:
        with opener.open(request, timeout=timeout) as resp:
            ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype in ("text/html", "application/xhtml+xml"):
                raise FetchError("html", f"server answered with {ctype}, not a picture")
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise FetchError("download-too-large", f"{int(length)} bytes exceeds {max_bytes}")
            chunks, got = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise FetchError("timeout", f"download took longer than {5 * timeout:g} s")
                block = resp.read(min(1 << 16, max_bytes + 1 - got))
                if not block:
                    break
                chunks.append(block)
                got += len(block)
                if got > max_bytes:
                    raise FetchError("download-too-large", f"more than {max_bytes} bytes")
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise FetchError("redirect-loop", str(exc.reason or exc)) from None
        raise FetchError(f"http-{exc.code}", str(exc.reason or "")) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (socket.timeout, TimeoutError)):
            raise FetchError("timeout", f"no answer within {timeout:g} s") from None
        raise FetchError("unreachable", str(exc.reason)) from None
    except (socket.timeout, TimeoutError):
        raise FetchError("timeout", f"no answer within {timeout:g} s") from None
    except (OSError, ValueError) as exc:  # reset connections, malformed URLs, bad chunking
        raise FetchError("unreachable", str(exc) or type(exc).__name__) from None
    data = b"".join(chunks)
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise FetchError("html", "the answer is a web page, not a picture")
    return data


def cache_name(url: str) -> str:
    """The cache file for a URL: a hash, so no URL can name a path outside the cache."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:40] + ".bin"


def fetch_cached(url: str, cache_dir: Path, **kw) -> bytes:
    """Fetch once: later calls read the cached copy. Failures are not cached (retried)."""
    path = cache_dir / cache_name(url)
    if path.is_file():
        return path.read_bytes()
    data = fetch(url, **kw)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_suffix(".json"), json.dumps({"url": url, "bytes": len(data)}).encode())
    return data


def gather(source, *, size: int, cache_dir: Path, min_size: int | None = None,
           max_pixels: int = MAX_PIXELS, timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_DOWNLOAD,
           max_redirects: int = MAX_REDIRECTS, progress=None, on_picture=None, exclude=None) -> IngestReport:
    """Read every entry of a folder or URL list; keep the usable, distinct pictures (in
    source order) and record each skipped one with its reason. `on_picture(picture)`, if
    given, receives each kept picture at once (see IngestReport); nothing under the folder
    `exclude` is read."""
    kind, entries = list_source(source, exclude)
    min_size = default_min_size(size) if min_size is None else min_size
    report, seen, seen_urls = IngestReport(on_picture=on_picture), {}, set()
    root = Path(source)
    for n, entry in enumerate(entries):
        if progress is not None:
            progress(n, len(entries))
        if kind == "folder":
            origin = f"file:{Path(entry).as_posix()}"
            if not (root / entry).is_file():  # a named pipe or device would block or never end
                report.skip(origin, "unreadable", "not a regular file")
                continue
            if not _looks_like_a_picture(root / entry):  # a huge non-picture is never read whole
                report.skip(origin, "not-an-image", "not a recognised picture format")
                continue
            try:
                data = (root / entry).read_bytes()
            except OSError as exc:
                report.skip(origin, "unreadable", str(exc.strerror or exc))
                continue
        else:
            origin = entry
            scheme = urllib.parse.urlsplit(entry).scheme.lower()
            if scheme not in ("http", "https"):
                report.skip(origin, "bad-url", "only http:// and https:// URLs are fetched")
                continue
            if entry in seen_urls:
                report.skip(origin, "duplicate", "URL listed twice")
                continue
            seen_urls.add(entry)
            try:
                data = fetch_cached(entry, cache_dir, timeout=timeout, max_bytes=max_bytes, max_redirects=max_redirects)
            except FetchError as exc:
                report.skip(origin, exc.reason, exc.detail)
                continue
        if not data:
            report.skip(origin, "empty", "zero bytes")
            continue
        _accept(report, seen, origin, data, size, min_size, max_pixels)
    return report
