"""The user's own pictures: a folder of bad files and a URL list served on 127.0.0.1."""

import io
import json
import os
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from fractalgen.errors import FractalgenError
from fractalgen.images import load_rgb
from fractalgen.pictures import cache_name, gather
from fractalgen.render import render_set


def _pattern(w, h, seed):
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.02, 0.1, 3)
    return (127 + 120 * np.sin(x[..., None] * f + y[..., None] * f[::-1])).astype(np.uint8)


def _encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_claiming(w, h):
    """A tiny PNG whose header claims w×h pixels (a decompression bomb's signature)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


@pytest.fixture()
def bad_folder(tmp_path):
    d = tmp_path / "mine"
    (d / "sub").mkdir(parents=True)
    rgb = Image.fromarray(_pattern(300, 200, 0))
    jpeg = _encode(rgb, "JPEG", quality=90)
    files = {
        "good.jpg": jpeg,
        "corrupt.png": bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)),
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "zero.png": b"",
        "notes.txt": b"not a picture at all\n",
        "cmyk.jpg": _encode(Image.fromarray(_pattern(120, 120, 2)).convert("CMYK"), "JPEG"),
        "deep16.png": _encode(Image.fromarray(_pattern(100, 140, 3)[..., 0].astype(np.uint16) * 257), "PNG"),
        "sub/grey.png": _encode(Image.fromarray(_pattern(90, 90, 4)[..., 1], "L"), "PNG"),
        "tiny.png": _encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
        "bomb.png": _png_claiming(30000, 30000),
        "good2.jpg": jpeg,
    }
    pal = Image.fromarray(_pattern(80, 80, 5)).convert("P", palette=Image.ADAPTIVE, colors=32)
    pal.info["transparency"] = 0
    files["palette-alpha.png"] = _encode(pal, "PNG", transparency=0)
    for name, data in files.items():
        (d / name).write_bytes(data)
    (d / ".hidden").write_bytes(b"ignored")
    return d


@pytest.mark.kernels
def test_a_folder_of_bad_files_converts_or_skips_each_with_a_reason(bad_folder, tmp_path):
    out = tmp_path / "set"
    m = render_set(out, escape=1, ifs=0, size=64, include=bad_folder)
    assert m["complete"] is True
    users = [e for e in m["images"] if e["family"] == "user"]
    origins = sorted(e["params"]["origin"] for e in users)
    assert origins == ["file:cmyk.jpg", "file:deep16.png", "file:good.jpg", "file:palette-alpha.png",
                       "file:sub/grey.png"]
    for e in users:
        assert load_rgb(out / e["file"]).shape == (64, 64, 3)
    reasons = {s["origin"]: s["reason"] for s in m["skipped"]}
    assert reasons == {
        "file:bomb.png": "too-large",
        "file:good2.jpg": "duplicate",
        "file:corrupt.png": "not-an-image",
        "file:notes.txt": "not-an-image",
        "file:tiny.png": "too-small",
        "file:truncated.jpg": "truncated",
        "file:zero.png": "empty",
    }
    grey = next(e for e in users if e["params"]["origin"] == "file:sub/grey.png")
    px = load_rgb(out / grey["file"]).astype(int)
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()
    assert grey["params"]["original_size"] == [90, 90]


def test_resized_pictures_are_centre_crops(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = 255  # the centre square is white, the sides black
    Image.fromarray(img).save(d / "wide.png")
    report = gather(d, size=50, cache_dir=tmp_path / "cache")
    px = report.pictures[0].pixels
    assert px.shape == (50, 50, 3) and px[5:-5, 5:-5].min() > 240


def test_an_empty_or_missing_source_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.txt").write_text("# nothing here\n\n")
    Image.fromarray(_pattern(40, 40, 1)).save(tmp_path / "photo.png")  # a picture, not a URL list
    for source, message in ((tmp_path / "empty", "holds no files"), (tmp_path / "blank.txt", "holds no URLs"),
                            (tmp_path / "nope", "does not exist"), (tmp_path / "photo.png", "is not a text file")):
        with pytest.raises(FractalgenError, match=message):
            render_set(tmp_path / "out", escape=1, ifs=0, size=64, include=source)
    assert not (tmp_path / "out").exists()


class _Handler(BaseHTTPRequestHandler):
    hits: dict = {}
    slow_may_answer = threading.Event()  # /slow.png answers only once the test is over
    png_a = _encode(Image.fromarray(_pattern(96, 80, 10)), "PNG")
    png_b = _encode(Image.fromarray(_pattern(70, 90, 11)), "PNG")

    def log_message(self, *args):
        pass

    def _send(self, code, body, ctype="image/png", length=True, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        path = self.path
        _Handler.hits[path] = _Handler.hits.get(path, 0) + 1
        if path == "/a.png":
            self._send(200, self.png_a)
        elif path.endswith("/x.png"):  # "/../../x.png": the name tries to climb out of the cache
            self._send(200, self.png_b)
        elif path == "/missing.png":
            self._send(404, b"no", "text/plain")
        elif path == "/slow.png":
            _Handler.slow_may_answer.wait(120)  # far past any client timeout of the tests
            self._send(200, self.png_a)
        elif path == "/loop":
            self._send(302, b"", "text/plain", extra=[("Location", "/loop")])
        elif path == "/to-file":
            self._send(302, b"", "text/plain", extra=[("Location", "file:///etc/hostname")])
        elif path == "/page.png":
            self._send(200, b"<!DOCTYPE html><html><body>hello</body></html>", "text/html; charset=utf-8")
        elif path == "/sneaky.png":
            self._send(200, b"<html><body>not a picture</body></html>", "image/png")
        elif path == "/big.png":
            self._send(200, b"\0" * 300_000)
        elif path == "/big-unannounced.png":
            self.close_connection = True
            self._send(200, b"\0" * 300_000, length=False)
        else:
            self._send(404, b"no", "text/plain")


@pytest.fixture()
def server():
    _Handler.hits = {}
    _Handler.slow_may_answer.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _Handler.slow_may_answer.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.kernels
def test_url_list_fetches_once_and_skips_bad_answers(server, tmp_path):
    urls = ["/a.png", "/../../x.png", "/missing.png", "/slow.png", "/loop", "/to-file", "/page.png",
            "/sneaky.png", "/big.png", "/big-unannounced.png", "/a.png"]
    listing = tmp_path / "urls.txt"
    listing.write_text("# my pictures\n" + "\n".join(server + u for u in urls) + "\nftp://example.org/p.png\n")
    out = tmp_path / "set"
    # /slow.png never answers while the test runs; the others answer at once, however busy the
    # machine, well within the timeout
    opts = {"timeout": 3.0, "max_bytes": 100_000}
    m = render_set(out, escape=0, ifs=1, size=64, include=listing, fetch_options=opts)
    users = [e for e in m["images"] if e["family"] == "user"]
    assert [e["params"]["origin"] for e in users] == [server + "/a.png", server + "/../../x.png"]
    reasons = {s["origin"].replace(server, ""): s["reason"] for s in m["skipped"]}
    assert reasons == {
        "/missing.png": "http-404",
        "/slow.png": "timeout",
        "/loop": "redirect-loop",
        "/to-file": "bad-redirect",
        "/page.png": "html",
        "/sneaky.png": "html",
        "/big.png": "download-too-large",
        "/big-unannounced.png": "download-too-large",
        "/a.png": "duplicate",
        "ftp://example.org/p.png": "bad-url",
    }
    # downloads live in the cache under hashed names, nothing lands outside it
    cache = out / ".cache" / "include"
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [cache_name(server + "/a.png"), cache_name(server + "/../../x.png")]
        + [cache_name(server + "/a.png")[:-4] + ".json", cache_name(server + "/../../x.png")[:-4] + ".json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set", "urls.txt"]
    assert not (out / "x.png").exists()
    # a second run reads the cache: the good pictures are not fetched again
    hits = dict(_Handler.hits)
    m2 = render_set(out, escape=0, ifs=1, size=64, include=listing, fetch_options=opts)
    assert _Handler.hits["/a.png"] == hits["/a.png"]
    assert [e["sha256"] for e in m2["images"]] == [e["sha256"] for e in m["images"]]
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_a_named_pipe_in_the_folder_is_skipped_not_waited_on(tmp_path):
    d = tmp_path / "pics"
    d.mkdir()
    Image.fromarray(_pattern(60, 60, 2)).save(d / "a.png")
    os.mkfifo(d / "pipe")  # reading it would block until someone writes
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        report=gather(d, size=32, cache_dir=tmp_path / "cache")), daemon=True)
    worker.start()
    worker.join(20)
    assert "report" in result, "gather blocked on a named pipe"
    assert result["report"].kept == 1
    assert result["report"].skipped == [{"origin": "file:pipe", "reason": "unreadable", "detail": "not a regular file"}]


def test_a_non_picture_in_an_include_folder_is_skipped_without_reading_it(tmp_path, monkeypatch):
    from pathlib import Path

    from fractalgen import pictures

    d = tmp_path / "inc"
    d.mkdir()
    (d / "huge.bin").write_bytes(b"not a picture" * 1000)
    (d / "ok.png").write_bytes(_encode(Image.fromarray(_pattern(80, 80, 1)), "PNG"))
    read = Path.read_bytes

    def guarded(self):
        assert self.name != "huge.bin", "the non-picture was read whole"
        return read(self)

    monkeypatch.setattr(Path, "read_bytes", guarded)
    report = pictures.gather(d, size=64, cache_dir=tmp_path / "cache")
    assert [p.origin for p in report.pictures] == ["file:ok.png"]
    assert [(s["origin"], s["reason"]) for s in report.skipped] == [("file:huge.bin", "not-an-image")]
