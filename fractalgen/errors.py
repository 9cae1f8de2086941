"""Errors a caller can cause (bad option, unreadable folder, bad picture)."""


class FractalgenError(Exception):
    """A user-facing error; the message is one line that says what to fix."""


class BadImage(FractalgenError):
    """A picture that cannot be used; `reason` is a short machine-friendly tag."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
