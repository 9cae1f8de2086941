"""fractalgen: render fractal pictures (escape-time and IFS) and ingest a user's own
pictures into a mixing set. A library: no CLI and no torch in here."""

from fractalgen.errors import BadImage, FractalgenError

__all__ = ["BadImage", "FractalgenError"]
