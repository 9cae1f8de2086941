"""The one exception type for errors a user can cause; the CLI prints it as one line."""

from fractalgen.errors import FractalgenError


class IpmixError(FractalgenError):
    """A bad path, option, image or environment: shown as `Error: <message>`, exit code 1."""
