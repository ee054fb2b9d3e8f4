"""nanobragg: James Holton's nanoBragg diffraction simulator as a C core with a NumPy API.

    >>> from nanobragg import simulate
    >>> r = simulate(cell=(100, 100, 100, 90, 90, 90), default_F=100, N=5,
    ...              wavelength=1, distance=100, detpixels=128, pixel=0.1)
    >>> r.float_image.shape
    (128, 128)

The ``nanoBragg`` command (``python -m nanobragg``) takes the reference's flags.
"""
from .params import args_to_params, UsageError

__all__ = ["simulate", "Result", "background", "noisify", "args_to_params", "UsageError", "__version__"]


def __getattr__(name):
    # simulate/Result (NumPy and the compiled engine) and the version
    # (importlib.metadata) load on first use: the nanoBragg command imports
    # this package and must stay lean (see cli.py)
    if name in ("simulate", "Result"):
        from . import api
        return getattr(api, name)
    if name in ("background", "noisify"):   # the companions nonBragg and noisify (NumPy)
        from .companions import api as companions_api
        return getattr(companions_api, name)
    if name == "__version__":
        global __version__
        __version__ = _version()
        return __version__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _version() -> str:
    try:  # the installed distribution's version; works without the compiled core
        from importlib.metadata import version as _dist_version, PackageNotFoundError as _NotFound
        try:
            return _dist_version("nanobragg")
        except _NotFound:  # running from a source tree
            return "0.1.0"
    except ImportError:  # pragma: no cover
        return "0.1.0"
