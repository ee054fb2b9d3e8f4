"""simulate(): the nanoBragg simulation as a Python function returning NumPy arrays.

The command line runs the very same job layer (_job.py): args_to_params()
turns its flags into simulate()'s keywords, and both go through
:class:`nanobragg._job.Job`.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from . import _io
from ._job import Images, Job

__all__ = ["simulate", "Result", "Noise"]

PathLike = Union[str, "os.PathLike[str]"]


class Noise(NamedTuple):
    """A noise image and its figures, as the -noisefile."""
    image: np.ndarray
    photons: float
    overloads: int


class Result:
    """One rendered image and everything needed to write it like nanoBragg.

    ``float_image`` (float32, shape (spixels, fpixels), photons per pixel),
    ``stats``, ``log``, ``warnings``, ``header`` and ``geometry``; the derived
    images (int, PGM, noise) are computed once, on first use, and kept."""

    def __init__(self, images: Images):
        self._images = images
        self._setup = images.setup
        self.float_image: np.ndarray = np.asarray(images.float_image)
        self.stats: Dict[str, Any] = images.stats
        self.log: str = self._setup.log
        self.warnings: List[str] = [l for l in self.log.splitlines() if l.startswith("WARNING")]
        s = self.stats
        if s.get("interpolation_fell_back"):
            self.warnings.append("WARNING: out of range for three point interpolation at h,k,l = %g,%g,%g: "
                                 "interpolation switched off from pixel %d on"
                                 % (tuple(s["fallback_hkl"]) + (s["fallback_pixel"],)))
        self._header: Optional[Dict[str, Any]] = None
        self._geometry: Optional[Dict[str, Any]] = None

    def __repr__(self) -> str:
        h, w = self.float_image.shape
        return f"<nanobragg.Result {w}x{h} pixels, max_I={self.stats['max_I']:g}>"

    # -- derived images --------------------------------------------------------

    def int_image(self) -> np.ndarray:
        """uint16 noiseless image as written to the -intfile (scale: -scale, or peak -> 55000; plus -adc)."""
        return np.asarray(self._images.int_image()[0])

    @property
    def intfile_scale(self) -> float:
        """The scale of the int image (photons -> counts)."""
        return self._images.intfile_scale

    def pgm_image(self) -> np.ndarray:
        """uint8 image as written to the -pgmfile."""
        return np.asarray(self._images.pgm_image()[0])

    @property
    def pgm_scale(self) -> float:
        """The scale of the PGM image."""
        return self._images.pgm_image()[1]

    def printout(self, fpixel: Optional[int] = None, spixel: Optional[int] = None) -> str:
        """The reference's per-pixel dump (the -printout text): the lines of
        pixel (fpixel, spixel), or of every rendered pixel when fpixel is None
        or negative.  Without arguments: what the printout / printout_pixel
        keywords asked for, else every pixel.  An empty string for a pixel
        outside the ROI or masked, as the reference prints nothing there."""
        from ._job import Printout
        if fpixel is None:
            request = self._images.printout or (-1, -1)
        else:
            if spixel is None:
                raise ValueError("printout: give both fpixel and spixel, or neither")
            fp, sp = int(fpixel), int(spixel)
            h, w = self.float_image.shape
            if fp >= 0 and not (fp < w and 0 <= sp < h):
                raise ValueError(f"printout: pixel {fp} {sp} is outside the {w} x {h} pixel detector")
            request = (fp, sp) if fp >= 0 else (-1, -1)
        parts: List[str] = []
        Printout(self._images, request, parts.append).through()
        return "".join(parts)

    def noise(self, seed: Optional[int] = None) -> Noise:
        """Poisson noise: Noise(image uint16, photons, overloads).  seed as -seed (None: the run's)."""
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise ValueError(f"seed: expected an integer, got {seed!r}")
            seed = int(seed)
        img, photons, overloads = self._images.noise_image(seed)
        return Noise(np.asarray(img), photons, overloads)

    def noise_image(self, seed: Optional[int] = None) -> np.ndarray:
        """uint16 image with Poisson noise, as the -noisefile (same seed -> same image)."""
        return self.noise(seed).image

    def int_image_of(self, photons: np.ndarray) -> np.ndarray:
        """The -intfile scaling of another float image of this detector (e.g.
        float_image + background(...)): scaled to 55000 at its peak unless
        -scale, plus -adc."""
        img = np.ascontiguousarray(photons, dtype=np.float32)
        peak = float(img.max()) if img.size else 0.0
        return np.asarray(self._setup.int_image(img, max(peak, 0.0))[0])

    def noise_image_of(self, photons: np.ndarray, seed: Optional[int] = None) -> np.ndarray:
        """The -noisefile Poisson noise of another float image of this detector
        (e.g. float_image + background(...)), with this run's generator."""
        img = np.ascontiguousarray(photons, dtype=np.float32)
        return np.asarray(self._setup.noise_image(img, None if seed is None else int(seed))[0])

    def smv_header(self, adc_header: bool = False) -> bytes:
        """The SMV header of this run's int and noise images (512 bytes, or
        longer as the reference writes it), for writing other images of the
        same detector."""
        return self._images.smv_header(adc_header)

    # -- metadata ----------------------------------------------------------------

    @property
    def header(self) -> Dict[str, Any]:
        """The SMV header keywords of the int/noise images (numbers as int/float, DIALS_ORIGIN a tuple)."""
        if self._header is None:
            self._header = parse_smv_header(self._images.smv_header())
        return dict(self._header)

    @property
    def geometry(self) -> Dict[str, Any]:
        """The resolved geometry: the engine's fields (SI units, as nb_setup) plus
        friendly names in the flags' units (mm, pixels, degrees, Angstrom)."""
        if self._geometry is None:
            self._geometry = self._images.geometry()
        return dict(self._geometry)

    # -- files -------------------------------------------------------------------

    def float_bytes(self) -> bytes:
        """The -floatfile content: raw 4-byte floats, fast index fastest."""
        return np.ascontiguousarray(self.float_image, dtype=np.float32).tobytes()

    def smv_bytes(self, noise: bool = False, seed: Optional[int] = None, adc_header: bool = False) -> bytes:
        """The SMV file content (header + pixels) of the int image, or of the noise image.
        adc_header=True adds ADC_OFFSET=<adc> to the header (the pedestal key DIALS reads)."""
        img = self.noise(seed).image if noise else self.int_image()
        return self._images.smv_header(adc_header) + img.tobytes()

    def pgm_bytes(self) -> bytes:
        """The PGM file content."""
        img, scale = self._images.pgm_image()
        return self._setup.pgm_header(scale) + bytes(img)

    def write_float(self, path: PathLike) -> None:
        """Raw 4-byte floats, fast index fastest (the -floatfile)."""
        _io.atomic_write(path, [self._images.float_image])

    def write_smv(self, path: PathLike, noise: bool = False, seed: Optional[int] = None,
                  adc_header: bool = False) -> None:
        """SMV image: the int image, or with noise=True the noise image (-intfile / -noisefile);
        adc_header=True adds the ADC_OFFSET key (-adc_header)."""
        img = self._images.noise_image(seed)[0] if noise else self._images.int_image()[0]
        _io.atomic_write(path, [self._images.smv_header(adc_header), img])

    def cbf_counts(self, noise: bool = True, seed: Optional[int] = None) -> Tuple[np.ndarray, int]:
        """The CBF's counts: the noise image (noise=False: the int image) less
        the -adc offset, as int32, and the count cutoff (65535 less the offset)."""
        return self._images.cbf_counts(noise, seed)

    def cbf_bytes(self, noise: bool = True, seed: Optional[int] = None, name: str = "image") -> bytes:
        """The miniCBF file content (see :meth:`write_cbf`)."""
        return self._images.cbf_bytes(noise, seed, name)

    def write_cbf(self, path: PathLike, noise: bool = True, seed: Optional[int] = None) -> None:
        """miniCBF (byte offset, Pilatus-style header from the geometry) of the
        noise image, or with noise=False of the int image, less the -adc offset (-cbffile)."""
        _io.atomic_write(path, [self.cbf_bytes(noise, seed, os.fspath(path))])

    def png_bytes(self, image: Optional[np.ndarray] = None) -> bytes:
        """8-bit PNG preview of the float image (or of ``image``)."""
        from .images import png_bytes
        return png_bytes(self.float_image if image is None else image)

    def write_png(self, path: PathLike, image: Optional[np.ndarray] = None) -> None:
        """8-bit PNG preview (-pngfile): spots dark on white, log contrast."""
        _io.atomic_write(path, [self.png_bytes(image)])

    def write_nexus(self, path: PathLike, noise: bool = True, seed: Optional[int] = None,
                    float_image: bool = False, compression: Optional[str] = None) -> None:
        """NXmx HDF5 file (-nexus): the noise image (noise=False: the int
        image) as /entry/data/data, the geometry as NXmx, optionally the float
        image too; compression e.g. "bslz4" (hdf5plugin).  Written atomically."""
        self._images.write_nexus(path, noise, seed, float_image, compression)

    def write_pgm(self, path: PathLike) -> None:
        """8-bit binary PGM (-pgmfile)."""
        img, scale = self._images.pgm_image()
        _io.atomic_write(path, [self._setup.pgm_header(scale), img])


def parse_smv_header(raw: bytes) -> Dict[str, Any]:
    text = raw.decode("latin-1").split("}", 1)[0].lstrip("{")
    out: Dict[str, Any] = {}
    for line in text.splitlines():
        line = line.strip().rstrip(";").strip()
        if "=" not in line:
            continue
        k, v = (t.strip() for t in line.split("=", 1))
        out[k] = _header_value(v)
    return out


def _header_value(v: str):
    parts = v.split(",")
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        return v
    if len(nums) > 1:
        return tuple(nums)
    try:
        return int(v)
    except ValueError:
        return nums[0]


def simulate(progress: Any = None, **params: Any) -> Result:
    """Render a diffraction image; every nanoBragg flag is a keyword.

    Keywords are the flags without the dash, in the flags' units
    (``distance=100`` mm, ``pixel=0.1`` mm, ``wavelength=1`` A, ``phi=0`` deg,
    ``cell=(a, b, c, alpha, beta, gamma)``, ``N=5``, ...); switches take
    True (``xds=True`` or ``convention="xds"``), and they are applied in the
    order given, as the command line applies its flags.  Data may be given
    instead of files: ``hkl=`` a path, an (n, 4) array of h k l F or a dict
    {(h, k, l): F}; ``mat=`` a path or a 3x3 array; ``mask=`` an SMV path or
    a 2-D array (0 = skip); ``sourcefile=`` a path or an (n, <=5) array of
    X Y Z weight lambda(m).  ``threads=`` render threads (0 = all).
    ``progress=``: a callable(pixels_done, pixels_total), called about every
    20 ms from this thread while the image renders (an exception from it
    stops the render and propagates), True for a tqdm bar (tqdm installed),
    or a tqdm bar; off by default.

    Nothing is written to disk.  Ctrl-C (KeyboardInterrupt) stops the
    render promptly.  Unknown keyword -> TypeError naming the closest valid
    one; a bad value -> ValueError naming the parameter.  See docs/api.md.
    """
    from ._progress import callback
    poll = callback(progress)
    images = Job(params).render(progress=poll)
    if poll is not None and images.stats.get("interpolation_fell_back"):
        total = images.stats["pixels"]
        poll(total, total)        # the engine's count stopped at the fall-back
    return Result(images)
