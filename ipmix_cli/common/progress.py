"""Progress for long work: a bar on a terminal, a log line every few seconds otherwise; the
h:mm:ss durations it and the time estimates print; whether Numba still has kernels to compile."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

COMPILING = "compiling kernels (first run only)…"


def hms(seconds: float) -> str:
    """A duration as h:mm:ss (seconds rounded up, so work left never reads 0:00:00)."""
    total = max(0, int(-(-float(seconds) // 1)))
    h, rest = divmod(total, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def numba_cache_is_warm(package_dir, modules) -> bool:
    """Whether Numba holds cached kernels of each module (a file stem) of `package_dir`: in
    NUMBA_CACHE_DIR when that is set, else in the package's __pycache__. When not, the first
    call compiles them, which takes minutes on a busy machine."""
    custom = os.environ.get("NUMBA_CACHE_DIR")
    root = Path(custom) if custom else Path(package_dir) / "__pycache__"
    if not root.is_dir():
        return False
    pattern = "**/{}.*.nbi" if custom else "{}.*.nbi"
    return all(next(root.glob(pattern.format(m)), None) is not None for m in modules)


class Progress:
    def __init__(self, total: int, desc: str, stream=None, every_s: float = 5.0, enabled: bool = True):
        self.total, self.desc, self.done = max(0, int(total)), desc, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = 0.2 if self.tty else every_s
        self.start = self.last = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last >= self.every_s or self.done >= self.total):
            self.last = now
            self._show(now)

    def _show(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        frac = self.done / self.total if self.total else 1.0
        text = f"{self.desc}: {self.done}/{self.total} ({frac:.0%}) {rate:.1f}/s"
        if self.done < self.total and left == left:
            text += f" eta {hms(left)}"
        if self.tty:
            bar = "#" * int(frac * 24)
            self.stream.write(f"\r[{bar:<24}] {text}\033[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.enabled:
            self.stream.write("\n")
            self.stream.flush()
