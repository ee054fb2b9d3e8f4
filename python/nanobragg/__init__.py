"""nanobragg: James Holton's nanoBragg diffraction simulator as a C core with a NumPy API.

    >>> from nanobragg import simulate
    >>> r = simulate(cell=(100, 100, 100, 90, 90, 90), default_F=100, N=5,
    ...              wavelength=1, distance=100, detpixels=128, pixel=0.1)
    >>> r.float_image.shape
    (128, 128)

The ``nanoBragg`` command (``python -m nanobragg``) takes the reference's flags.
"""
from .params import args_to_params, UsageError
from .api import simulate, Result

try:  # the installed distribution's version; works without the compiled core
    from importlib.metadata import version as _dist_version, PackageNotFoundError as _NotFound
    try:
        __version__ = _dist_version("nanobragg")
    except _NotFound:  # running from a source tree
        __version__ = "0.1.0"
except ImportError:  # pragma: no cover
    __version__ = "0.1.0"

__all__ = ["simulate", "Result", "args_to_params", "UsageError", "__version__"]
