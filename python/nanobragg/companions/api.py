"""NumPy front ends of the companion programs: background() is nonBragg,
noisify() is noisify, with the commands' flags as keywords.

    >>> import nanobragg
    >>> water = nanobragg.background(stol="water", wavelength=1, distance=100, detpixels=128,
    ...                              pixel=0.1, thick=0.1, flux=1e12, beamsize=0.1)
    >>> water.dtype, water.shape
    (dtype('float32'), (128, 128))
    >>> det = nanobragg.noisify(water, readout_noise=3, seed=1)
    >>> det.image.dtype
    dtype('uint16')

Keywords are the flag names without the dash (every spelling the command
takes: ``thick`` or ``thickness``, ``readout_noise`` or ``readout``);
``lambda`` may be given as ``wavelength``.  Switches take True/False,
vectors a sequence of 3 numbers.  Keywords go through the commands' own flag
tables, so they are checked the same way and mean the same thing.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _command as C
from . import nonbragg as _nb
from . import noisify as _nz
from ..params import UsageError

__all__ = ["background", "noisify", "background_from_args", "noisify_from_args", "NoisifyResult"]


def _to_argv(kw: Mapping[str, Any], flags: Dict[str, C.Flag], where: str) -> List[str]:
    """Keywords as a command line for the flag table (so that one parser
    checks both); values are written so that they read back exactly."""
    argv: List[str] = []
    for key, value in kw.items():
        flag = "-" + key
        f = flags.get(flag)
        if f is None:
            hint = C._suggest(flag, flags)
            raise TypeError(f"{where}() got an unknown keyword {key!r}"
                            + (f" (did you mean {hint.lstrip('-')!r}?)" if hint else ""))
        if f.kind == "switch":
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{key}: a switch takes True or False, got {value!r}")
            if value:
                argv.append(flag)
            continue
        vals = list(value) if f.n > 1 and not isinstance(value, (str, bytes)) else [value]
        if len(vals) != f.n:
            raise ValueError(f"{key}: expected {f.n} values, got {len(vals)}")
        tokens = []
        for v in vals:
            if f.kind in ("float", "int"):
                if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                    raise ValueError(f"{key}: expected a number, got {v!r}")
                if f.kind == "int" and float(v) != int(v):
                    raise ValueError(f"{key}: expected an integer, got {v!r}")
                tokens.append(repr(int(v)) if f.kind == "int" else repr(float(v)))
            else:
                tokens.append(str(v))
        argv += [flag] + tokens
    return argv


def _usage_to_value(fn):
    def wrapped(*args, **kw):
        try:
            return fn(*args, **kw)
        except UsageError as e:
            raise ValueError(str(e)) from None
    wrapped.__name__, wrapped.__doc__, wrapped.__wrapped__ = fn.__name__, fn.__doc__, fn
    return wrapped


@_usage_to_value
def background(*, nthreads: int = 0, **kw: Any) -> np.ndarray:
    """Amorphous scattering (nonBragg) in photons/pixel: a float32 array of
    shape (slow, fast).  Keywords are nonBragg's flags without the dash,
    e.g. ``stol="water"`` (a file or a shipped table), ``thick`` (mm),
    ``density`` (g/cm^3), ``MW`` (g/mol), ``flux``/``exposure``/``beamsize``
    or ``fluence``, ``distance``/``pixel``/``detpixels`` (mm, pixels)."""
    if "wavelength" in kw and "lambda" in kw:
        raise ValueError("give lambda or wavelength, not both")
    for key in ("floatfile", "intfile", "pgmfile", "noisefile", "nonoise", "nopgm", "seed"):
        if key in kw:
            raise TypeError(f"background() takes no {key!r}: it returns the image (use noisify() for noise)")
    if not any(key in kw for key in ("stol", "4stol", "Q")):
        raise ValueError("background() needs stol= (a .stol file or a shipped table: "
                         + ", ".join(_nb.shipped_tables()) + ")")
    return background_from_args(_to_argv(kw, _nb.FLAGS, "background"), nthreads=nthreads)


@_usage_to_value
def background_from_args(argv: Sequence[str], *, nthreads: int = 0) -> np.ndarray:
    """background() from nonBragg's flags as its command line takes them
    (output-file flags have no effect here): what a dataset's [background]
    table renders."""
    s = _nb.settings_from_args(list(argv))
    if "table" not in s:
        raise ValueError("background needs a table: -stol FILE or a shipped table ("
                         + ", ".join(_nb.shipped_tables()) + ")")
    r = _nb.render(s, pgm=False, noise=False, nthreads=nthreads)
    g = r["setup"]
    return np.frombuffer(r["float_image"], dtype=np.float32).reshape(g["spixels"], g["fpixels"]).copy()


class NoisifyResult:
    """What noisify() returns.

    image: the detector's counts with noise (ADU; uint16, or uint32 with bits=32);
    noiseless: the same without noise (PSF applied only with nonoise=True);
    photons: photons on the noise image (after the PSF); photons_before_psf;
    overloads: pixels clipped at the integer type's maximum;
    lost_photons: photons the PSF spread outside its radius (added back evenly)."""

    __slots__ = ("image", "noiseless", "photons", "photons_before_psf", "overloads", "lost_photons", "max_input")

    def __init__(self, **kw: Any):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    def __repr__(self) -> str:
        shape = None if self.image is None else self.image.shape
        return (f"NoisifyResult(image={shape}, photons={self.photons:.0f}, overloads={self.overloads})"
                if self.photons is not None else f"NoisifyResult(noiseless={self.noiseless.shape})")


@_usage_to_value
def noisify(image: Any, *, nthreads: int = 0, **kw: Any) -> NoisifyResult:
    """Detector response (noisify) of an image in photons/pixel (2-D array,
    e.g. simulate(...).float_image + background(...)).  Keywords are
    noisify's flags without the dash: ``scale``, ``fluence``, ``gain``
    (ADU/photon), ``adc`` (ADU), ``readout_noise`` (ADU), ``flicker``,
    ``calibration`` (fractions), ``seed``, ``calib_seed``, ``psf``
    ("gauss"/"fiber"), ``psf_fwhm`` (um), ``psf_radius`` (pixels), ``pixel``
    (mm), ``bits`` (16/32), ``nonoise``."""
    for key in ("floatfile", "intfile", "noisefile", "pgmfile", "header", "detpixels", "detpixels_x",
                "detpixels_y", "detsize", "detsize_x", "detsize_y", "nopgm"):
        if key in kw:
            raise TypeError(f"noisify() takes no {key!r}: the image's shape gives its size")
    return noisify_from_args(image, _to_argv(kw, _nz.FLAGS, "noisify"), nthreads=nthreads)


@_usage_to_value
def noisify_from_args(image: Any, argv: Sequence[str], *, nthreads: int = 0) -> NoisifyResult:
    """noisify() from noisify's flags as its command line takes them (the
    image's shape gives its size): what a dataset's [noisify] table applies."""
    from .. import _core
    arr = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {arr.shape}")
    s = _nz.settings_from_args(list(argv))
    _nz.check_settings(s)
    height, width = arr.shape
    if "seed" not in s and not s.get("nonoise"):
        raise ValueError("noisify() needs seed= (the command takes the clock; a function should be repeatable)")
    p = _nz.engine_params(s, width, height, s.get("pixel", 0.1) / 1000.0)
    r = _core.noisify(arr, p, False, nthreads)
    dtype = np.uint32 if p["bits"] == 32 else np.uint16
    noiseless = np.frombuffer(r["int_image"], dtype=dtype).reshape(height, width).copy()
    noise = None
    if r["noise_image"] is not None:
        noise = np.frombuffer(r["noise_image"], dtype=dtype).reshape(height, width).copy()
    return NoisifyResult(image=noise, noiseless=noiseless,
                         photons=r["photons"] if noise is not None else None,
                         photons_before_psf=r["photons_before_psf"] if noise is not None else None,
                         overloads=r["overloads"] if noise is not None else None,
                         lost_photons=r["psf"]["lost_photons"], max_input=r["max_input"])
