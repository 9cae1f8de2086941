"""Progress for long work: a bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import sys
import time


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
            text += f" eta {left:.0f}s"
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
