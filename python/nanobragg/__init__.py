"""nanobragg: James Holton's nanoBragg diffraction simulator as a C core with a NumPy API.

    >>> from nanobragg import simulate
    >>> r = simulate(cell=(100, 100, 100, 90, 90, 90), default_F=100, N=5,
    ...              wavelength=1, distance=100, detpixels=128, pixel=0.1)
    >>> r.float_image.shape
    (128, 128)

The ``nanoBragg`` command (``python -m nanobragg``) takes the reference's flags.
"""
from ._version import __version__
from .params import args_to_params, UsageError

__all__ = ["simulate", "Result", "background", "noisify", "args_to_params", "UsageError", "structure_factors",
           "read_image", "__version__"]


def __getattr__(name: str):
    # simulate/Result (NumPy and the compiled engine) load on first use: the
    # nanoBragg command imports this package and must stay lean (see cli.py)
    if name in ("simulate", "Result"):
        from . import api
        return getattr(api, name)
    if name == "structure_factors":
        from .structure import structure_factors
        return structure_factors
    if name == "read_image":
        from .images import read_image
        return read_image
    if name in ("background", "noisify"):   # the companions nonBragg and noisify (NumPy)
        from .companions import api as companions_api
        return getattr(companions_api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
