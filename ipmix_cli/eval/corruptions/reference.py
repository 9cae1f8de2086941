"""The `imagecorruptions` package (Michaelis et al.: ImageNet-C's corruptions for any image
size) as the reference that tests and `ipmix bench corrupt` hold ipmix's corruptions against.

The package predates NumPy 2 (`np.float_`) and scikit-image's `channel_axis` (it passes
`multichannel=True`); `load_reference` supplies those two names for it and changes nothing
else. It draws from NumPy's global generator: seed it with `np.random.seed` before a call.
"""

from __future__ import annotations

import warnings

import numpy as np

from ipmix_cli.common.errors import IpmixError


def load_reference():
    """imagecorruptions' `corrupt(image, severity, corruption_name)`, adapted as above."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import imagecorruptions
            import imagecorruptions.corruptions as package
    except ImportError as exc:
        raise IpmixError(f"the reference corruptions need the imagecorruptions package ({exc.name} is missing): "
                         "pip install imagecorruptions 'setuptools<81'") from None
    import skimage.filters

    if not hasattr(np, "float_"):
        np.float_ = np.float64
    if not getattr(package.gaussian, "_ipmix_adapted", False):
        plain = skimage.filters.gaussian

        def gaussian(image, sigma=1, multichannel=None, **kw):
            return plain(image, sigma=sigma, channel_axis=-1 if multichannel else None, **kw)

        gaussian._ipmix_adapted = True
        package.gaussian = gaussian
    return imagecorruptions.corrupt
