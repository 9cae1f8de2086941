"""A TCP relay in front of the test S3 server that can hold one upload half-way.

    proxy = HoldingProxy(upstream_port)
    proxy.hold(b"PUT /bucket/out/epoch-0000/ipmix-e0000-00002.tar")
    ... start a build against proxy.url ...
    proxy.held.wait()     # the request line and part of the body reached the server
    ... kill the client, or stop the server ...
    proxy.release()       # the held connection is dropped, never completed

Everything else passes through unchanged. The hold is what makes "in the middle of an upload"
an observable point for a test instead of a guess about timing.

    proxy = HoldingProxy(upstream_port, strip=CHECKSUM_HEADERS)

reads the requests as HTTP and drops the headers named in `strip` from each, so the server
behind it acts as a store that ignores them (one that keeps no SHA-256 checksum, say).
"""

from __future__ import annotations

import socket
import threading

CHUNK = 16 * 1024
# What an S3 client sends about a checksum of the body: the checksum itself and its algorithm.
CHECKSUM_HEADERS = (b"x-amz-checksum-", b"x-amz-sdk-checksum-algorithm")


class HoldingProxy:
    def __init__(self, upstream_port: int, strip: tuple[bytes, ...] = ()):
        self.upstream_port = upstream_port
        self.strip = tuple(name.lower() for name in strip)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.marker: bytes | None = None
        self.held = threading.Event()
        self._released = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self, marker: bytes) -> None:
        """Hold the first request whose bytes contain `marker` (after passing its first chunk)."""
        self.marker = marker
        self.held.clear()
        self._released.clear()

    def release(self) -> None:
        self.marker = None
        self._released.set()

    def close(self) -> None:
        self._closed = True
        self._released.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:  # the server is down: the client sees its connection dropped
                client.close()
                continue
            requests = self._pump_requests if self.strip else self._pump
            threading.Thread(target=requests, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump_requests(self, src, dst, from_client: bool = True) -> None:
        """Client to server, one HTTP request at a time: the header block without the `strip`
        headers, then Content-Length bytes of body as they come."""
        buffered = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = src.recv(CHUNK)
                    if not data:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                kept = [lines[0]] + [line for line in lines[1:] if not line.lower().startswith(self.strip)]
                fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
                if b"chunked" in fields.get(b"transfer-encoding", b""):
                    raise OSError("chunked request bodies are not relayed")  # the connection is dropped
                left = int(fields.get(b"content-length", b"0"))
                dst.sendall(b"\r\n".join(kept) + b"\r\n\r\n")
                marker = self.marker
                if marker is not None and marker in lines[0] and not self.held.is_set():
                    part = buffered or src.recv(CHUNK)  # (a client may wait for 100-continue first)
                    dst.sendall(part[:max(1, min(len(part), left // 2))])
                    self.held.set()
                    self._released.wait()
                    return  # never the rest: the connection is dropped
                body, buffered = buffered[:left], buffered[left:]
                dst.sendall(body)
                left -= len(body)
                while left > 0:
                    data = src.recv(min(CHUNK, left))
                    if not data:
                        return
                    dst.sendall(data)
                    left -= len(data)
        except OSError:
            pass
        finally:
            self._close_both(src, dst)

    def _pump(self, src, dst, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                marker = self.marker
                if from_client and marker is not None and marker in data and not self.held.is_set():
                    dst.sendall(data)  # the request has started: the server holds a part of it
                    self.held.set()
                    self._released.wait()
                    break  # never the rest: the connection is dropped
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close_both(src, dst)

    @staticmethod
    def _close_both(src, dst) -> None:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
