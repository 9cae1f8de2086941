"""Option types shared by the shards and fractals commands: a seed, a bounded count, and an
image format that takes `jpeg` as another spelling of `jpg` without listing it twice."""

from __future__ import annotations

import click

MAX_SEED = 2**63 - 1


class SeedType(click.ParamType):
    name = "seed"

    def get_metavar(self, param, ctx=None) -> str:
        return "0..2^63-1"

    def convert(self, value, param, ctx):
        try:
            seed = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number", param, ctx)
        if not 0 <= seed <= MAX_SEED:
            self.fail(f"{value} is not in 0..2^63-1", param, ctx)
        return seed


class Count(click.IntRange):
    """A whole number in min..max whose help shows the range as `1..N`, not `1<=x<=N`."""

    def __init__(self, min: int, max: int):
        super().__init__(min, max)

    def _describe_range(self) -> str:
        return f"{self.min}..{self.max}"

    def get_metavar(self, param, ctx=None) -> str:
        return "N"


class ImageFormat(click.Choice):
    """png, npy, jpg or webp; `jpeg` is accepted as `jpg`."""

    def __init__(self, choices=("png", "npy", "jpg", "webp")):
        super().__init__(list(choices), case_sensitive=False)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.lower() == "jpeg":
            value = "jpg"
        return super().convert(value, param, ctx)


SEED = SeedType()
