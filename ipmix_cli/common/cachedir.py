"""Where ipmix keeps what it can rebuild: mixing-bank caches and local copies of objects."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def default_cache_dir() -> Path:
    """The `ipmix` folder in the user's cache folder: `$XDG_CACHE_HOME` where set, else the
    platform's own (`~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows, `~/.cache`)."""
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "ipmix"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "ipmix"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "ipmix" / "Cache"
    return Path.home() / ".cache" / "ipmix"
