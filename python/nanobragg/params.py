"""The one table of nanoBragg options, shared by the command line and simulate().

Every option of the reference ``nanoBragg`` is one :class:`Option`: its
spellings, how many values it takes, their units (shown by ``nanoBragg -h``),
a help line and how it updates the engine parameters (``struct nb_params`` of
csrc/nanobragg.h, in the flags' own units: the C side converts to SI).

Two front ends fill the same table:

* :func:`args_to_params` turns a command line into an ordered dict of
  keyword parameters named like the flags without the dash
  (``-lambda 1`` -> ``{"lambda": 1.0}``), exactly the keywords of
  :func:`nanobragg.simulate`;
* :func:`normalize` checks keyword parameters (from either front end) and
  :func:`params_to_fields` turns them into the ``nb_params`` field dict given
  to ``_core.Setup``.  The pivot and convention rules live here.

Differences from the reference's parser, on purpose:

* flags match by their exact name or an alias (the reference matches
  substrings, so ``-twotheta_axis`` also sets ``-twotheta``, ``-misset_seed``
  also sets misset angles, ``-lambda_A`` acts as ``-lambda``, ...); spellings
  the reference's README uses but the reference ignores (:data:`IGNORED`)
  are accepted with a warning;
* an unknown flag, a missing value or a value that is not a number is an
  error (the reference ignores or ``atof``\\ s it);
* ``-cell`` needs its six numbers;
* a flag given twice counts once, at its last position (the dict of
  keywords keeps one entry per option).  This equals the reference's left to
  right processing except in one contrived case: a ``-detector_abs inf``
  (which also zeroes the sensor thickness) followed later by another
  ``-detector_abs``.
"""

from __future__ import annotations

import math
import os

# annotations only (they are strings here): no typing or dataclasses at run
# time, which the nanoBragg command's lean path would pay for in memory
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "Option", "OPTIONS", "UsageError", "args_to_params", "normalize",
    "params_to_fields", "lookup", "suggest", "help_text", "keyword_names", "IGNORED", "usage_text",
]

DEFAULT_PIXEL_MM = 0.1          # the reference's default pixel size, used by -mask header seeding
# the command's default output and cache files, as the reference names them
DEFAULT_FILES = {"floatfile": "floatimage.bin", "intfile": "intimage.img", "pgmfile": "image.pgm",
                 "noisefile": "noiseimage.img", "dump": "Fdump.bin"}
HC_EV_A = 12398.42              # -energy: lambda(A) = 12398.42 / E(eV), as the reference


class UsageError(ValueError):
    """A command-line mistake: unknown flag, missing or malformed value."""


# ---------------------------------------------------------------------------
# what an option does to the parameters
# ---------------------------------------------------------------------------

class State:
    """Accumulates the effect of the options, in order."""
    __slots__ = ("fields", "extras", "origin")

    def __init__(self, fields: Optional[Dict[str, Any]] = None, extras: Optional[Dict[str, Any]] = None):
        self.fields: Dict[str, Any] = {} if fields is None else fields   # nb_params fields for _core.Setup
        self.extras: Dict[str, Any] = {} if extras is None else extras   # everything the front ends handle (files, outputs)
        self.origin: Dict[str, str] = {}   # nb_params field -> the keyword that set it last (for messages)

    def __repr__(self) -> str:
        return f"State(fields={self.fields!r}, extras={self.extras!r})"

    def __eq__(self, other):
        if not isinstance(other, State):
            return NotImplemented
        return self.fields == other.fields and self.extras == other.extras

    __hash__ = None   # mutable

    def vec_item(self, name: str, index: int, value: float, default=(0.0, 0.0, 0.0)) -> None:
        v = list(self.fields.get(name, default))
        v[index] = value
        self.fields[name] = v


def _set(*names: str, scale: Optional[Callable[[Any], Any]] = None, **also):
    """apply(): every field in names gets the value (converted by scale); also: constant fields."""
    def apply(st: State, v):
        val = scale(v) if scale else v
        for n in names:
            st.fields[n] = list(val) if isinstance(val, tuple) else val
        st.fields.update(also)
    return apply


def _extra(name: str, **also_extras):
    def apply(st: State, v):
        st.extras[name] = v
        st.extras.update(also_extras)
    return apply


def _extras(**kv):
    def apply(st: State, v):
        st.extras.update(kv)
    return apply


def _fields(**kv):
    def apply(st: State, v):
        st.fields.update(kv)
    return apply


def _vec_item(name: str, index: int):
    def apply(st: State, v):
        st.vec_item(name, index, v)
    return apply


def _xtal_all(st: State, v):
    st.fields["xtal_size_mm"] = [v, v, v]


def _misset(st: State, v):
    if v == "random":
        st.fields["misset_mode"] = "random"
    else:
        st.fields["misset_mode"] = "angles"
        st.fields["misset_deg"] = list(v)


def _detector_abs(st: State, v):
    # the reference: "inf" or 0 means no absorption, and it also zeroes the
    # sensor thickness at that point of the command line
    if math.isinf(v) or v == 0.0:
        st.fields["detector_abs_um"] = math.inf
        st.fields["detector_thick_um"] = 0.0
    else:
        st.fields["detector_abs_um"] = v


def _convention(name: str, pivot: str):
    def apply(st: State, v):
        st.fields["convention"] = name
        st.fields["pivot"] = pivot
    return apply


def _convention_kw(st: State, v):
    # simulate(convention="xds") == simulate(xds=True)
    _CONVENTION_PIVOT[v](st, True)


def _custom_vector(name: str, basis: bool = False):
    def apply(st: State, v):
        st.fields["convention"] = "custom"
        st.fields[name] = list(v)
        if basis:
            st.fields["custom_basis"] = 1
    return apply


def _pix0(units: str):
    def apply(st: State, v):
        st.fields["convention"] = "custom"
        st.fields["pix0"] = list(v)
        st.fields["pix0_units"] = units
    return apply


def _energy(st: State, v):
    st.fields["lambda_A"] = HC_EV_A / v


def _mat(st: State, v):
    # v: the 9 numbers of the file (3 lines of 3), resolved by the front end
    st.extras["mat"] = v
    if not isinstance(v, (str, os.PathLike)):
        st.fields["has_amat"] = 1
        st.fields["amat"] = [float(x) for x in _flat9(v)]


def _flat9(v):
    # a plain list of 9 numbers (the command's lean path) needs no NumPy
    if isinstance(v, list) and len(v) == 9 and all(isinstance(x, float) for x in v):
        return list(v)
    try:
        import numpy as np
        return np.asarray(v, dtype=float).reshape(9).tolist()
    except ImportError:  # pragma: no cover - numpy is a dependency
        return [float(x) for row in v for x in row]


def _sources(st: State, v):
    st.extras["sourcefile"] = v
    if not isinstance(v, (str, os.PathLike)):
        st.fields["sources"] = v


def _pgmscale(st: State, v):
    st.fields["pgm_scale"] = v
    st.extras["write_pgm"] = True


def _stol(mult: float):
    def apply(st: State, v):
        st.extras["stol"] = v
        st.extras["stol_mult"] = mult
    return apply


# ---------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------

class Option:
    """One option: read-only once made."""
    __slots__ = ("names", "kind", "n", "metavar", "units", "help", "apply", "off", "check", "choices",
                 "api_names", "cli", "group", "cli_names")

    def __init__(self,
                 names: Tuple[str, ...],          # command-line spellings, canonical first
                 kind: str,                       # switch float int floats ints path data choice misset abs
                 n: int,                          # number of values on the command line
                 metavar: str,                    # value names for -h
                 units: str,                      # units for -h
                 help: str,
                 apply: Callable[[State, Any], None],
                 off: Optional[Callable[[State, Any], None]] = None,      # switch=False in simulate()
                 check: Optional[Callable[[Any], Optional[str]]] = None,  # -> message when out of range
                 choices: Tuple[str, ...] = (),
                 api_names: Tuple[str, ...] = (),  # extra keyword spellings (simulate() only)
                 cli: bool = True,                 # offered on the command line
                 group: str = "",
                 cli_names: Tuple[str, ...] = ()):  # extra flag spellings (command line only, not keywords)
        values = (names, kind, n, metavar, units, help, apply, off, check, choices, api_names, cli, group,
                  cli_names)
        for name, value in zip(Option.__slots__, values):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"Option is read-only: cannot set {name!r}")

    def __repr__(self) -> str:
        return f"Option(names={self.names!r}, kind={self.kind!r}, n={self.n!r})"

    def _values(self):
        return tuple(getattr(self, name) for name in Option.__slots__)

    def __eq__(self, other):
        if not isinstance(other, Option):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self):
        return hash(self._values())

    @property
    def key(self) -> str:
        """The canonical keyword: the first flag without its dash."""
        return self.names[0].lstrip("-") if self.cli else self.api_names[0]

    @property
    def flags(self) -> Tuple[str, ...]:
        """Every command-line spelling: the names, then the command-line-only ones."""
        return self.names + self.cli_names

    @property
    def keywords(self) -> Tuple[str, ...]:
        return tuple(n.lstrip("-") for n in self.names) + self.api_names


def _positive(v):
    vals = v if isinstance(v, tuple) else (v,)
    return None if all(x > 0 for x in vals) else "must be > 0"


def _nonneg(v):
    vals = v if isinstance(v, tuple) else (v,)
    return None if all(x >= 0 for x in vals) else "must be >= 0"


_OPTS: List[Option] = []
_GROUP = [""]


def _o(names, kind, n, metavar, units, help, apply, **kw):
    if isinstance(names, str):
        names = (names,)
    _OPTS.append(Option(tuple(names), kind, n, metavar, units, help, apply, group=_GROUP[0], **kw))


def _group(name):
    _GROUP[0] = name


_group("crystal")
_o("-cell", "floats", 6, "a b c al be ga", "A, deg", "unit cell lengths and angles (alternative to -mat)",
   _set("cell", has_cell=1))
_o("-mat", "data", 1, "FILE", "", "MOSFLM-style orientation matrix: 9 numbers, 3 lines of a*,b*,c* components x lambda",
   _mat, cli_names=("-matrix",))
_o("-misset", "misset", 3, "X Y Z|random", "deg", "crystal rotations about x, y, z, or 'random' for a random orientation",
   _misset)
_o("-misset_seed", "int", 1, "N", "", "random-number seed for -misset random (default: the -seed value)",
   _set("misset_seed", has_misset_seed=1))
_o("-hkl", "data", 1, "FILE", "", "text file of h k l F (P1, every reflection; no symmetry applied)", _extra("hkl"))
_o("-default_F", "float", 1, "F", "electrons", "structure factor of every reflection not in -hkl (default: 0)",
   _set("default_F"))
_o("-dump", "path", 1, "FILE", "", "binary cache of the structure factors: written after reading -hkl, read "
   "when -hkl is absent (default: Fdump.bin)", _extra("dump"))
_o("-N", "int", 1, "N", "cells", "number of unit cells along a, b and c", _set("Na", "Nb", "Nc"))
_o("-Na", "int", 1, "N", "cells", "number of unit cells along a", _set("Na"))
_o("-Nb", "int", 1, "N", "cells", "number of unit cells along b", _set("Nb"))
_o("-Nc", "int", 1, "N", "cells", "number of unit cells along c", _set("Nc"))
_o(("-xtalsize", "-xtal_size", "-samplesize", "-sample_size"), "float", 1, "SIZE", "mm",
   "crystal full width along x, y and z (alternative to -N)", _xtal_all, check=_nonneg)
_o(("-xtal_thick", "-xtal_x", "-sample_thick", "-sample_x"), "float", 1, "SIZE", "mm",
   "crystal size along x (the beam in MOSFLM convention)", _vec_item("xtal_size_mm", 0), check=_nonneg)
_o(("-xtal_width", "-xtal_y", "-sample_width", "-sample_y", "-width"), "float", 1, "SIZE", "mm",
   "crystal size along y", _vec_item("xtal_size_mm", 1), check=_nonneg)
_o(("-xtal_height", "-xtal_z", "-sample_height", "-sample_z", "-height"), "float", 1, "SIZE", "mm",
   "crystal size along z", _vec_item("xtal_size_mm", 2), check=_nonneg,
   cli_names=("-xtal_heigh", "-sample_heigh", "-heigh"))
_o("-square_xtal", "switch", 0, "", "", "parallelepiped crystal: sinc lattice transform (default)",
   _set("xtal_shape", scale=lambda v: "square"))
_o("-round_xtal", "switch", 0, "", "", "ellipsoidal crystal shape", _set("xtal_shape", scale=lambda v: "round"))
_o("-gauss_xtal", "switch", 0, "", "", "Gaussian spots: no inter-Bragg maxima", _set("xtal_shape", scale=lambda v: "gauss"))
_o(("-tophat_spots", "-binary_spots"), "switch", 0, "", "", "lattice transform clipped at its FWHM: no inter-Bragg maxima",
   _set("xtal_shape", scale=lambda v: "tophat"))
_o("-fudge", "float", 1, "X", "", "width factor of the round/Gaussian/tophat spot shapes (default: 1)", _set("fudge"))
_o(("-density", "-sample_density"), "float", 1, "D", "g/cm^3", "sample density (accepted; no effect, as in the reference)",
   _extra("density"), cli_names=("-sample_den",))
_o(("-MW", "-molecular_weight"), "float", 1, "MW", "g/mol", "molecular weight (accepted; no effect, as in the reference)",
   _extra("MW"), cli_names=("-molec",))
_o("-interpolate", "switch", 0, "", "", "force tricubic interpolation of structure factors (default: on if any N <= 2)",
   _set("interpolate", scale=lambda v: 1), off=_fields(interpolate=0))
_o("-nointerpolate", "switch", 0, "", "", "no structure-factor interpolation", _set("interpolate", scale=lambda v: 0),
   off=_fields(interpolate=1))
_o(("-mosaic", "-mosaic_spread", "-mosaicity", "-mosaici"), "float", 1, "DEG", "deg",
   "isotropic mosaic spread (90 for a powder)", _set("mosaic_deg"), check=_nonneg,
   cli_names=("-mosaic_spr",))
_o(("-mosaic_domains", "-mosaic_dom"), "int", 1, "N", "", "number of randomly oriented mosaic domains", _set("mosaic_domains"),
   check=_nonneg)
_o("-mosaic_seed", "int", 1, "N", "", "random-number seed for the mosaic domains (default: 12345678)", _set("mosaic_seed"))

_group("beam")
_o(("-lambda", "-wave"), "float", 1, "A", "Angstrom", "X-ray wavelength (default: 1)", _set("lambda_A"),
   api_names=("wavelength",))
_o("-energy", "float", 1, "EV", "eV", "X-ray photon energy (alternative to -lambda)", _energy, check=_positive)
_o("-dispersion", "float", 1, "PCT", "percent", "spectral dispersion delta-lambda/lambda", _set("dispersion_pct"),
   check=_nonneg)
_o("-dispsteps", "int", 1, "N", "", "number of wavelengths across the dispersion (0: automatic)", _set("dispsteps"),
   check=_nonneg)
_o("-divergence", "float", 1, "MRAD", "mrad", "horizontal and vertical beam divergence",
   _set("hdivrange_mrad", "vdivrange_mrad"), check=_nonneg)
_o("-hdivrange", "float", 1, "MRAD", "mrad", "horizontal beam divergence", _set("hdivrange_mrad"), check=_nonneg)
_o("-vdivrange", "float", 1, "MRAD", "mrad", "vertical beam divergence", _set("vdivrange_mrad"), check=_nonneg)
_o("-hdivstep", "float", 1, "MRAD", "mrad", "horizontal divergence step", _set("hdivstep_mrad"))
_o("-vdivstep", "float", 1, "MRAD", "mrad", "vertical divergence step", _set("vdivstep_mrad"))
_o("-hdivsteps", "int", 1, "N", "", "number of horizontal divergence steps (0: automatic)", _set("hdivsteps"),
   check=_nonneg)
_o("-vdivsteps", "int", 1, "N", "", "number of vertical divergence steps (0: automatic)", _set("vdivsteps"),
   check=_nonneg)
_o("-divsteps", "int", 1, "N", "", "number of divergence steps, horizontal and vertical (0: automatic)",
   _set("hdivsteps", "vdivsteps"), check=_nonneg)
_o("-round_div", "switch", 0, "", "", "trim the divergence grid to an ellipse (default)",
   _set("round_div", scale=lambda v: 1), off=_fields(round_div=0))
_o("-square_div", "switch", 0, "", "", "full rectangular divergence grid", _set("round_div", scale=lambda v: 0),
   off=_fields(round_div=1))
_o("-fluence", "float", 1, "F", "photons/m^2", "integrated incident fluence (default: 1.25932e29)", _set("fluence"),
   check=_nonneg)
_o("-flux", "float", 1, "F", "photons/s", "incident flux (with -exposure and -beamsize, instead of -fluence)",
   _set("flux"), check=_nonneg)
_o("-exposure", "float", 1, "S", "s", "exposure time (default: 1)", _set("exposure_s"))
_o("-beamsize", "float", 1, "MM", "mm", "beam size (default: 0.1); clips the crystal", _set("beamsize_mm"))
_o("-polar", "float", 1, "K", "", "Kahn polarization factor (default: 0)", _set("polarization", nopolar=0))
_o("-nopolar", "switch", 0, "", "", "no polarization correction", _set("nopolar", scale=lambda v: 1),
   off=_fields(nopolar=0))
_o("-sourcefile", "data", 1, "FILE", "m", "text file of sources, columns X Y Z weight lambda (m); missing columns default",
   _sources)
_o("-coherent", "switch", 0, "", "", "accepted; no effect, as in the reference", _extras(coherent=True))

_group("detector")
_o("-distance", "float", 1, "MM", "mm", "sample to detector distance along the beam (pivot: beam)",
   _set("distance_mm", pivot="beam"))
_o("-close_distance", "float", 1, "MM", "mm", "sample to detector plane, perpendicular (pivot: sample)",
   _set("close_distance_mm", pivot="sample"))
_o("-pixel", "float", 1, "MM", "mm", "pixel size (default: 0.1)", _set("pixel_mm"))
_o("-detsize", "float", 1, "MM", "mm", "detector size, fast and slow (default: 102.4)", _set("detsize_f_mm", "detsize_s_mm"),
   check=_positive)
_o("-detsize_f", "float", 1, "MM", "mm", "detector size along the fast axis", _set("detsize_f_mm"), check=_positive)
_o("-detsize_s", "float", 1, "MM", "mm", "detector size along the slow axis", _set("detsize_s_mm"), check=_positive)
_o("-detpixels", "int", 1, "N", "pixels", "detector size in pixels, fast and slow", _set("fpixels", "spixels"),
   check=_positive)
_o(("-detpixels_f", "-detpixels_x"), "int", 1, "N", "pixels", "detector pixels along the fast axis", _set("fpixels"),
   check=_positive)
_o(("-detpixels_s", "-detpixels_y"), "int", 1, "N", "pixels", "detector pixels along the slow axis", _set("spixels"),
   check=_positive)
_o("-Xbeam", "float", 1, "MM", "mm", "direct-beam position, fast coordinate in the convention's frame (pivot: beam)",
   _set("Xbeam_mm", pivot="beam"))
_o("-Ybeam", "float", 1, "MM", "mm", "direct-beam position, slow coordinate (pivot: beam)", _set("Ybeam_mm", pivot="beam"))
_o("-Xclose", "float", 1, "MM", "mm", "point of the detector nearest the sample, fast (pivot: sample)",
   _set("Xclose_mm", pivot="sample"))
_o("-Yclose", "float", 1, "MM", "mm", "point of the detector nearest the sample, slow (pivot: sample)",
   _set("Yclose_mm", pivot="sample"))
_o("-ORGX", "float", 1, "PX", "pixels", "XDS origin, fast (pivot: sample)", _set("ORGX_px", pivot="sample"))
_o("-ORGY", "float", 1, "PX", "pixels", "XDS origin, slow (pivot: sample)", _set("ORGY_px", pivot="sample"))
_o("-pivot", "choice", 1, "beam|sample", "", "rotate the detector about the direct-beam spot or the sample",
   _set("pivot"), choices=("beam", "sample"))
_o("-mosflm", "switch", 0, "", "", "MOSFLM conventions (default; pivot: beam)", _convention("mosflm", "beam"))
_o("-denzo", "switch", 0, "", "", "DENZO conventions (pivot: beam)", _convention("denzo", "beam"))
_o("-adxv", "switch", 0, "", "", "ADXV conventions (pivot: beam)", _convention("adxv", "beam"))
_o("-xds", "switch", 0, "", "", "XDS conventions (pivot: sample)", _convention("xds", "sample"))
_o("-dials", "switch", 0, "", "", "DIALS conventions (pivot: sample)", _convention("dials", "beam"))
_o("-fdet_vector", "floats", 3, "X Y Z", "", "detector fast axis (custom convention)", _custom_vector("fdet", True))
_o("-sdet_vector", "floats", 3, "X Y Z", "", "detector slow axis (custom convention)", _custom_vector("sdet", True))
_o("-odet_vector", "floats", 3, "X Y Z", "", "detector normal, away from the sample (custom convention)",
   _custom_vector("odet", True))
_o("-beam_vector", "floats", 3, "X Y Z", "", "X-ray beam direction (custom convention)", _custom_vector("beam"))
_o("-polar_vector", "floats", 3, "X Y Z", "", "E-vector of the polarization (custom convention)", _custom_vector("polar_vec"))
_o("-spindle_axis", "floats", 3, "X Y Z", "", "right-handed phi rotation axis (custom convention)", _custom_vector("spindle"))
_o("-twotheta_axis", "floats", 3, "X Y Z", "", "detector two-theta rotation axis (custom convention)",
   _custom_vector("twotheta_axis"))
_o("-pix0_vector", "floats", 3, "X Y Z", "m", "sample to the first pixel (custom convention; ignored with custom "
   "basis vectors)", _pix0("m"))
_o("-pix0_vector_mm", "floats", 3, "X Y Z", "mm", "as -pix0_vector, in millimetres", _pix0("mm"))
_o("-detector_rotx", "float", 1, "DEG", "deg", "detector rotation about x", _vec_item("rot_deg", 0))
_o("-detector_roty", "float", 1, "DEG", "deg", "detector rotation about y", _vec_item("rot_deg", 1))
_o("-detector_rotz", "float", 1, "DEG", "deg", "detector rotation about z", _vec_item("rot_deg", 2))
_o("-twotheta", "float", 1, "DEG", "deg", "detector rotation about the two-theta axis (pivot: sample)",
   _set("twotheta_deg", pivot="sample"))
_o("-curved_det", "switch", 0, "", "", "curved detector: every pixel at the same distance", _set("curved_det", scale=lambda v: 1),
   off=_fields(curved_det=0))
_o("-point_pixel", "switch", 0, "", "", "no pixel solid-angle (obliquity) correction", _set("point_pixel", scale=lambda v: 1),
   off=_fields(point_pixel=0))
_o(("-detector_abs", "-detector_absorb", "-detector_absorption"), "abs", 1, "UM|inf", "um",
   "sensor attenuation depth; inf or 0: no absorption (and thickness 0)", _detector_abs, check=_nonneg)
_o("-detector_thick", "float", 1, "UM", "um", "sensor thickness", _set("detector_thick_um"), check=_nonneg)
_o(("-detector_thicksteps", "-thicksteps"), "int", 1, "N", "", "number of sensor layers (0: automatic)",
   _set("detector_thicksteps"), check=_nonneg)
_o("-oversample", "int", 1, "N", "", "sub-pixels per pixel edge (default: automatic)", _set("oversample"), check=_nonneg)
_o("-oversample_thick", "switch", 0, "", "", "compute the sensor capture fraction per sub-pixel",
   _set("oversample_thick", scale=lambda v: 1), off=_fields(oversample_thick=0))
_o("-oversample_polar", "switch", 0, "", "", "compute polarization per sub-pixel",
   _set("oversample_polar", scale=lambda v: 1), off=_fields(oversample_polar=0))
_o("-oversample_omega", "switch", 0, "", "", "compute the solid angle per sub-pixel",
   _set("oversample_omega", scale=lambda v: 1), off=_fields(oversample_omega=0))
_o("-roi", "ints", 4, "XMIN XMAX YMIN YMAX", "pixels", "render only this region (inclusive; -1: the edge)", _set("roi"))
_o("-mask", "data", 1, "FILE", "", "SMV image whose zero pixels are skipped; its header sets the detector",
   _extra("mask"))
_o("-img", "path", 1, "FILE", "", "SMV image whose header sets the detector, beam and phi", _extra("img"))
_o("-dmin", "float", 1, "A", "Angstrom", "skip scattering beyond this resolution", _set("dmin_A"), check=_nonneg)
_o("-water", "float", 1, "UM", "um", "thickness of water around the crystal (background)", _set("water_um"), check=_nonneg)

_group("spindle")
_o("-phi", "float", 1, "DEG", "deg", "starting spindle rotation", _set("phi_deg"))
_o("-osc", "float", 1, "DEG", "deg", "spindle oscillation range", _set("osc_deg"))
_o("-phistep", "float", 1, "DEG", "deg", "spindle step", _set("phistep_deg"))
_o("-phisteps", "int", 1, "N", "", "number of spindle steps", _set("phisteps"), check=_nonneg)

_group("output")
_o(("-floatfile", "-floatimage"), "path", 1, "FILE", "", "raw 4-byte float image (default: floatimage.bin)",
   _extra("floatfile"))
_o(("-intfile", "-intimage"), "path", 1, "FILE", "", "noiseless SMV image (default: intimage.img)", _extra("intfile"))
_o(("-pgmfile", "-pgmimage"), "path", 1, "FILE", "", "8-bit PGM image (default: image.pgm)", _extra("pgmfile", write_pgm=True))
_o(("-noisefile", "-noiseimage"), "path", 1, "FILE", "", "SMV image with Poisson noise (default: noiseimage.img)",
   _extra("noisefile", noise=True))
_o("-nonoise", "switch", 0, "", "", "do not write the noise image", _extras(noise=False), off=_extras(noise=True))
_o("-nopgm", "switch", 0, "", "", "do not write the PGM image", _extras(write_pgm=False), off=_extras(write_pgm=True))
_o("-skip_negligible", "choice", 1, "auto|on|off", "", "skip the pixels whose lattice sum provably stays below "
   "1e-7 of the peak (docs/skipping.md); auto (default): on when no noise image is made from the render",
   _extra("skip_negligible"), choices=("auto", "on", "off"))
_o("-scale", "float", 1, "X", "", "scale of the int image (default: peak to 55000)", _set("intfile_scale"))
_o("-pgmscale", "float", 1, "X", "", "scale of the PGM image (default: automatic); turns the PGM on",
   _pgmscale)
_o("-adc", "float", 1, "COUNTS", "counts", "offset added to the SMV images (default: 40)", _set("adc_offset"),
   cli_names=("-adcoffset", "-adc_offset"))
_o("-seed", "int", 1, "N", "", "random-number seed of the noise image (default: from the clock)", _set("seed"))
_o("-stol", "data", 1, "FILE", "1/A", "amorphous F vs sin(theta)/lambda (read and checked; no effect, as the reference)",
   _stol(1e10))
_o("-4stol", "data", 1, "FILE", "1/A", "as -stol with 4 sin(theta)/lambda", _stol(1e10 / 4))
_o("-Q", "data", 1, "FILE", "1/A", "as -stol with Q = 4 pi sin(theta)/lambda", _stol(1e10 / math.pi / 4))
_o("-stolout", "path", 1, "FILE", "", "accepted; no effect, as in the reference", _extra("stolout"))
_o("-printout", "switch", 0, "", "", "print every pixel's values (the reference's per-pixel dump; no 'N% done' lines)",
   _extras(printout=True))
_o("-printout_pixel", "ints", 2, "F S", "pixels", "-printout of pixel F S only (on the detector; F < 0: every pixel)",
   _extra("printout_pixel"))
_o("-progress", "switch", 0, "", "", "print the reference's 'N% done' lines while rendering (default)",
   _extras(progress=True), off=_extras(progress=False))
_o("-noprogress", "switch", 0, "", "", "no 'N% done' lines", _extras(progress=False), off=_extras(progress=True))
_o("-threads", "int", 1, "N", "", "render threads (default 0: all cores); the image does not depend on it",
   _extra("threads"), check=_nonneg)

# crystallographic inputs and image formats (structure.py, images.py, nexus.py), front-end handled
_group("formats")
_o("-hkl_column", "path", 1, "NAME", "", "amplitude (or intensity) column of an MTZ or mmCIF -hkl "
   "(default: the first amplitude column)", _extra("hkl_column"))
_o("-pdb", "path", 1, "FILE", "", "atomic model (PDB or mmCIF): F computed to the resolution of the detector "
   "corner (or -dmin), with F000", _extra("pdb"))
_o("-k_sol", "float", 1, "K", "e/A^3", "flat bulk solvent density for -pdb (default: 0, no solvent; typical 0.35)",
   _extra("k_sol"), check=_nonneg)
_o("-b_sol", "float", 1, "B", "A^2", "flat bulk solvent B-factor for -pdb (default: 46)", _extra("b_sol"),
   check=_nonneg)
_o(("-cbffile", "-cbfimage"), "path", 1, "FILE", "", "miniCBF image with a Pilatus header: the noise image "
   "(-nonoise: the int image) less the -adc offset", _extra("cbffile"))
_o(("-pngfile", "-pngimage"), "path", 1, "FILE", "", "8-bit PNG preview of the float image", _extra("pngfile"))
_o("-adc_header", "switch", 0, "", "", "add ADC_OFFSET=<-adc> to the SMV headers, the pedestal key DIALS reads",
   _extras(adc_header=True), off=_extras(adc_header=False))
_o(("-nexus", "-h5file"), "path", 1, "FILE", "", "NXmx HDF5 file (DIALS/XDS): the noise image (-nonoise: the int "
   "image) with the detector, beam and goniometer geometry", _extra("nexus"))
_o("-nexus_float", "switch", 0, "", "", "also store the float image in the -nexus file",
   _extras(nexus_float=True), off=_extras(nexus_float=False))
_o("-nexus_compression", "path", 1, "NAME", "", "HDF5 filter of the -nexus images: none (default), gzip[:LEVEL], "
   "lzf, bitshuffle or lz4 (hdf5plugin)", _extra("nexus_compression"))

_group("api")
_CONVENTION_PIVOT = {
    "mosflm": _convention("mosflm", "beam"), "denzo": _convention("denzo", "beam"),
    "adxv": _convention("adxv", "beam"), "xds": _convention("xds", "sample"),
    "dials": _convention("dials", "beam"),
}
_o((), "choice", 1, "NAME", "", "simulate(convention=...) as the -mosflm/-denzo/-adxv/-xds/-dials switches",
   _convention_kw, choices=tuple(_CONVENTION_PIVOT), api_names=("convention",), cli=False)

OPTIONS: Tuple[Option, ...] = tuple(_OPTS)

_BY_FLAG: Dict[str, Option] = {}
_BY_KEYWORD: Dict[str, Option] = {}
for _opt in OPTIONS:
    for _n in _opt.flags:
        assert _n not in _BY_FLAG, _n
        _BY_FLAG[_n] = _opt
    for _k in _opt.keywords:
        assert _k not in _BY_KEYWORD, _k
        _BY_KEYWORD[_k] = _opt
del _opt, _n, _k

HELP_FLAGS = ("-h", "--help", "-help")

# Spellings that the reference's README or usage text shows but that its
# argument loop does not act on (no substring of theirs is a flag it knows):
# the reference renders as if they were absent.  We accept them, consume their
# values and warn: (number of values, what to use instead, what that is).
# The upstream README's own examples use -hdiv 0 -vdiv 0 and -detsize_x.
IGNORED: Dict[str, Tuple[int, str]] = {
    "-hdiv": (1, "-hdivrange"),
    "-vdiv": (1, "-vdivrange"),
    "-detsize_x": (1, "-detsize_f"),
    "-detsize_y": (1, "-detsize_s"),
    "-xdet_vector": (3, "-fdet_vector"),
    "-ydet_vector": (3, "-sdet_vector"),
    "-zdet_vector": (3, "-odet_vector"),
}


def ignored_message(flag: str) -> str:
    """The one-line warning for a spelling in IGNORED."""
    instead = IGNORED[flag][1]
    return f"{flag} has no effect (the reference ignores it too; the image is the reference's); use {instead}"


def lookup(name: str) -> Optional[Option]:
    """The option for a flag ('-lambda') or keyword ('lambda', 'wavelength'), or None."""
    if name.startswith("-"):
        return _BY_FLAG.get(name)
    return _BY_KEYWORD.get(name)


def keyword_names() -> List[str]:
    return sorted(_BY_KEYWORD)


# the reference's x/y/z detector spellings are its fast/slow/normal axes
# (-detpixels_x is -detpixels_f); tried before the fuzzy match
_AXIS_WORDS = (("_x", "_f"), ("_y", "_s"), ("-xdet", "-fdet"), ("-ydet", "-sdet"), ("-zdet", "-odet"))


def suggest(name: str) -> Optional[str]:
    """The closest flag (for '-x') or keyword (for 'x'), for 'did you mean'."""
    if name in IGNORED:
        return IGNORED[name][1]
    pool = list(_BY_FLAG) if name.startswith("-") else list(_BY_KEYWORD)
    if name.startswith("-"):
        for old, new in _AXIS_WORDS:
            name = name.replace(old, new)
        if name in pool:
            return name
    import difflib   # only for messages: not paid by every command
    best = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not best:
        low = {p.lower(): p for p in pool}
        best = [low[m] for m in difflib.get_close_matches(name.lower(), list(low), n=1, cutoff=0.6)]
    return best[0] if best else None


# ---------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------

def _is_number(x) -> bool:
    if isinstance(x, (int, float)):          # the command line's values: no need for numbers
        return not isinstance(x, bool)
    import numbers
    return isinstance(x, numbers.Real) and not (hasattr(x, "dtype") and getattr(x.dtype, "kind", "") == "b")


def _to_float(x, what: str, allow_inf: bool = False) -> float:
    if hasattr(x, "ndim") and getattr(x, "ndim", 0) == 0 and hasattr(x, "item"):
        x = x.item()
    if not _is_number(x):
        raise ValueError(f"{what}: expected a number, got {x!r}")
    v = float(x)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{what}: expected a finite number, got {x!r}")
    return v


def _to_int(x, what: str) -> int:
    if hasattr(x, "ndim") and getattr(x, "ndim", 0) == 0 and hasattr(x, "item"):
        x = x.item()
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    import numbers
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return int(x)
    if _is_number(x) and float(x).is_integer():
        return int(x)
    raise ValueError(f"{what}: expected an integer, got {x!r}")


def _seq(x, n: int, what: str):
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__"):
        raise ValueError(f"{what}: expected {n} numbers, got {x!r}")
    try:
        items = list(x)
    except TypeError:
        raise ValueError(f"{what}: expected {n} numbers, got {x!r}") from None
    if len(items) != n:
        raise ValueError(f"{what}: expected {n} numbers, got {len(items)}")
    return items


def coerce(opt: Option, value, what: Optional[str] = None):
    """Check a keyword value (Python object) for an option; returns the canonical value.

    Raises ValueError naming the parameter."""
    what = what or opt.key
    k = opt.kind
    if k == "switch":
        if isinstance(value, bool) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "b"
                                       and getattr(value, "ndim", 1) == 0):
            return bool(value)
        raise ValueError(f"{what}: a switch takes True or False, got {value!r}")
    if k == "float":
        v = _to_float(value, what)
    elif k == "abs":
        if isinstance(value, str):
            if "inf" in value.lower():
                v = math.inf
            else:
                raise ValueError(f"{what}: expected a number or 'inf', got {value!r}")
        else:
            v = _to_float(value, what, allow_inf=True)
    elif k == "int":
        v = _int_in_range(opt, _to_int(value, what), what)
    elif k == "floats":
        v = tuple(_to_float(x, what) for x in _seq(value, opt.n, what))
    elif k == "ints":
        v = tuple(_int_in_range(opt, _to_int(x, what), what) for x in _seq(value, opt.n, what))
    elif k == "path":
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"{what}: expected a file name, got {type(value).__name__}")
        v = os.fspath(value)
        if not v:
            raise ValueError(f"{what}: empty file name")
    elif k == "data":
        v = os.fspath(value) if isinstance(value, os.PathLike) else value
        if isinstance(v, bytes) or (isinstance(v, str) and not v):
            raise ValueError(f"{what}: expected a file name or an array")
        # arrays and dicts are checked where they are used (api.py)
    elif k == "choice":
        if not isinstance(value, str) or value not in opt.choices:
            raise ValueError(f"{what}: expected one of {', '.join(opt.choices)}, got {value!r}")
        v = value
    elif k == "misset":
        if isinstance(value, str):
            if value.lower().startswith("rand"):
                return "random"
            raise ValueError(f"{what}: expected 3 angles or 'random', got {value!r}")
        v = tuple(_to_float(x, what) for x in _seq(value, 3, what))
    else:  # pragma: no cover
        raise AssertionError(k)
    if opt.check is not None:
        msg = opt.check(v)
        if msg:
            raise ValueError(f"{what}: {msg}, got {_show(v)}")
    return v


_INT_RANGE = (-2**31, 2**31 - 1)          # C int
_LONG_RANGE = (-2**63 + 1, 2**63 - 1)     # C long (seeds; negated inside, so not -2**63)
_LONG_OPTIONS = ("-seed", "-mosaic_seed", "-misset_seed")


def _int_in_range(opt: Option, v: int, what: str) -> int:
    lo, hi = _LONG_RANGE if opt.names[0] in _LONG_OPTIONS else _INT_RANGE
    if not lo <= v <= hi:
        raise ValueError(f"{what}: {v} is out of range ({lo}..{hi})")
    return v


def _show(v):
    if isinstance(v, tuple):
        return " ".join("%g" % x for x in v)
    return "%g" % v if isinstance(v, float) else str(v)


# ---------------------------------------------------------------------------
# command line -> keywords
# ---------------------------------------------------------------------------

def _token_value(opt: Option, flag: str, tok: str, want: str):
    """One command-line token as a Python value for this option kind."""
    try:
        if want == "int":
            return int(tok)
        v = float(tok)
        if not math.isfinite(v):
            raise ValueError
        return v
    except ValueError:
        units = f" ({opt.units})" if opt.units else ""
        noun = "an integer" if want == "int" else "a number"
        raise UsageError(f"{flag} expects {noun}{units}, got '{tok}'") from None


def _too_few(opt: Option, flag: str, got: int):
    noun = "integers" if opt.kind in ("int", "ints") else "numbers"
    if opt.n == 1:
        noun = noun[:-1]
        raise UsageError(f"{flag} expects {'an' if noun == 'integer' else 'a'} {noun}"
                         + (f" ({opt.units})" if opt.units else "") + ", got none")
    raise UsageError(f"{flag} expects {opt.n} {noun} ({opt.metavar}), got {got}")


def _warn_stderr(message: str) -> None:
    import sys
    sys.stderr.write(f"nanoBragg: warning: {message}\n")


def args_to_params(argv: Sequence[str], warn: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Parse a nanoBragg command line into simulate() keywords, in order.

    Flags match by exact name; a flag given again moves to its new position
    (the last one wins).  A spelling of :data:`IGNORED` is consumed with its
    values and reported through ``warn`` (default: one line on stderr).
    Raises UsageError with a one-line message.
    """
    warn = _warn_stderr if warn is None else warn
    out: Dict[str, Any] = {}
    argv = list(argv)
    i = 0
    while i < len(argv):
        flag = argv[i]
        i += 1
        if not flag.startswith("-") or flag == "-":
            raise UsageError(f"unexpected argument '{flag}' (options start with '-'; see nanoBragg -h)")
        if flag in HELP_FLAGS:
            raise UsageError("-h must be given alone")
        opt = _BY_FLAG.get(flag)
        if opt is None and flag in IGNORED:
            n = IGNORED[flag][0]
            for j in range(n):
                if i >= len(argv):
                    raise UsageError(f"{flag} expects {n} number{'s' if n > 1 else ''}, got {j}")
                try:
                    float(argv[i])
                except ValueError:
                    raise UsageError(f"{flag} expects a number, got '{argv[i]}'") from None
                i += 1
            warn(ignored_message(flag))
            continue
        if opt is None:
            hint = suggest(flag)
            raise UsageError(f"unknown option '{flag}'" + (f" (did you mean '{hint}'?)" if hint else "")
                             + "; nanoBragg -h lists the options")
        k = opt.kind
        if k == "switch":
            value: Any = True
        elif k == "misset" and i < len(argv) and argv[i].lower().startswith("rand"):
            value = "random"
            i += 1
        else:
            n = opt.n
            if k in ("path", "data", "choice", "abs"):
                if i >= len(argv):
                    raise UsageError(f"{flag} expects a value ({opt.metavar}), got none")
                tok = argv[i]
                i += 1
                if k in ("path", "data"):
                    if tok.startswith("-") and lookup(tok) is not None:
                        raise UsageError(f"{flag} expects a file name, got the option '{tok}'")
                    value = tok
                elif k == "choice":
                    if tok not in opt.choices:
                        raise UsageError(f"{flag} expects one of {'|'.join(opt.choices)}, got '{tok}'")
                    value = tok
                else:
                    value = math.inf if "inf" in tok.lower() else _token_value(opt, flag, tok, "float")
            else:  # numbers: float int floats ints misset
                want = "int" if k in ("int", "ints") else "float"
                vals = []
                for j in range(n):
                    if i >= len(argv):
                        _too_few(opt, flag, j)
                    tok = argv[i]
                    if n > 1 and tok.startswith("-") and lookup(tok) is not None:
                        _too_few(opt, flag, j)
                    vals.append(_token_value(opt, flag, tok, want))
                    i += 1
                value = vals[0] if n == 1 and k in ("int", "float") else tuple(vals)
        try:
            value = coerce(opt, value, flag)
        except ValueError as e:
            raise UsageError(str(e)) from None
        key = opt.key
        out.pop(key, None)     # the last occurrence wins, at its own position
        out[key] = value
    return out


# ---------------------------------------------------------------------------
# keywords -> nb_params fields
# ---------------------------------------------------------------------------

def normalize(params: Mapping[str, Any], *, api: bool = True) -> List[Tuple[Option, str, Any]]:
    """Check keyword parameters: [(option, keyword, value)] in the given order.

    Unknown keyword -> TypeError naming the closest valid one; a bad value
    -> ValueError naming the parameter."""
    out = []
    for name, value in params.items():
        opt = _BY_KEYWORD.get(name)
        if opt is None:
            hint = suggest(name)
            raise TypeError(f"simulate() got an unexpected keyword argument '{name}'"
                            + (f" (did you mean '{hint}'?)" if hint else ""))
        out.append((opt, name, coerce(opt, value, name)))
    return out


def _header_seed(st: State, kind: str, smv) -> None:
    """-mask / -img: the SMV header seeds the detector, beam and spindle.

    ``smv`` has .width, .height and .value(keyword) -> float or None.  These
    values do not change the pivot.  Mirrors the reference's main() prologue."""
    w, h = int(smv.width), int(smv.height)
    f = st.fields
    f["fpixels"], f["spixels"] = w, h
    v = smv.value("PIXEL_SIZE")
    if v is not None:
        f["pixel_mm"] = v
    pixel = f.get("pixel_mm", DEFAULT_PIXEL_MM)
    f["detsize_f_mm"], f["detsize_s_mm"] = pixel * w, pixel * h
    for key, name in (("DISTANCE", "distance_mm"), ("CLOSE_DISTANCE", "close_distance_mm"),
                      ("WAVELENGTH", "lambda_A"), ("BEAM_CENTER_X", "Xbeam_mm"),
                      ("ORGX", "ORGX_px"), ("ORGY", "ORGY_px"), ("PHI", "phi_deg"), ("OSC_RANGE", "osc_deg")):
        v = smv.value(key)
        if v is not None:
            f[name] = v
    v = smv.value("BEAM_CENTER_Y")
    if v is not None:
        # the reference flips the mask's Y beam centre (detsize_s - value) but not the img's
        f["Ybeam_mm"] = pixel * h - v if kind == "mask" else v
    # TWOTHETA: the reference reads it into a variable that is never used
    # afterwards, so the header's two-theta has no effect: a deliberate no-op.


def params_to_fields(params, headers: Iterable[Tuple[str, Any]] = ()) -> State:
    """Keyword parameters -> State(fields for _core.Setup, extras for the front ends).

    ``params``: a mapping of keywords, or the list from :func:`normalize`.
    ``headers``: [("mask", smv), ("img", smv)] already read, applied first
    (mask, then img) whatever their position, as the reference does.
    Data keywords (mat, sourcefile) must already be resolved to arrays for
    their fields to be filled (api.py does that)."""
    # a mapping of keywords, or normalize()'s list (collections.abc would
    # cost the command's start-up 1.7 ms)
    items = normalize(params) if hasattr(params, "keys") else list(params)
    st = State()
    for kind, smv in headers:
        if smv is not None and getattr(smv, "width", 0):
            _header_seed(st, kind, smv)
    for opt, name, value in items:
        before = dict(st.fields)
        if opt.kind == "switch" and value is False:
            if opt.off is not None:
                opt.off(st, value)
        else:
            opt.apply(st, value)
        for field, v in st.fields.items():
            if field not in before or before[field] is not v:
                st.origin[field] = name
    return st


# ---------------------------------------------------------------------------
# -h
# ---------------------------------------------------------------------------

_GROUP_TITLES = {"crystal": "Crystal and structure factors", "beam": "Beam", "detector": "Detector",
                 "spindle": "Spindle", "output": "Output, noise and run control",
                 "formats": "Crystallographic files and image formats (need gemmi / fabio / h5py)"}


def help_text() -> str:
    lines = [
        "usage: nanoBragg -mat auto.mat -hkl Fs.hkl [options]",
        "       nanoBragg -cell a b c al be ga -default_F F [options]",
        "",
        "Simulates a diffraction image like James Holton's nanoBragg.  Options are read",
        "left to right and the last one wins; names must be spelled exactly.",
        "Units are shown in [brackets].",
    ]
    group = None
    for opt in OPTIONS:
        if not opt.cli:
            continue
        if opt.group != group:
            group = opt.group
            lines += ["", _GROUP_TITLES.get(group, group) + ":"]
        head = ", ".join(opt.flags)
        if opt.metavar:
            head += " " + opt.metavar
        units = f"[{opt.units}] " if opt.units else ""
        if len(head) <= 29:
            lines.append(f"  {head:<30} {units}{opt.help}")
        else:
            lines.append(f"  {head}")
            lines.append(f"  {'':<30} {units}{opt.help}")
    lines += ["", "Accepted with a warning, no effect (as in the reference):"]
    for flag, (n, instead) in IGNORED.items():
        head = flag + (" X" if n == 1 else " X Y Z")
        lines.append(f"  {head:<30} use {instead}")
    lines += ["", "  -h, --help                     this text"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# no arguments: the reference's usage text
# ---------------------------------------------------------------------------

BANNER = "nanoBragg nanocrystal diffraction simulator - James Holton and Ken Frankel 5-17-17"

# What the reference prints, word for word (its typos and the defaults it
# fills in included), when it has nothing to render: scripts and users that
# run the bare command see the same text.
REFERENCE_USAGE = (
    'usage: nanoBragg -mat auto.mat -hkl Fs.hkl\n'
    'options:\n'
    '\t-mat filename.mat\tmosflm-style matrix file containing three reciprocal unit cell vectors\n'
    '\t-hkl filename.hkl\ttext file containing h, k, l and F for P1 unit cell\n'
    '\t-misset 10 20 30 \talternative to mat file: crystal rotations about x,y,z axes (degrees)\n'
    '\t-misset random   \talternative to mat file: random orientation\n'
    '\t-cell a b c al be ga\talternative to mat file: specify crystal unit cell (Angstroms and degrees)\n'
    '\t-default_F       \talternative to -hkl: assign all unspecified structure factors (default: 0)\n'
    '\t-distance        \tdistance from origin to detector center in mm\n'
    '\t-detsize         \tdetector size in mm.  may also use -detsize_f -detsize_s\n'
    '\t-detpixels       \tdetector size in pixels.  may also use -detpixels_x -detpixels_y\n'
    '\t-pixel           \tdetector pixel size in mm.\n'
    '\t-img header.img  \tattempt to initialize camera parameters from an ADSC img header\n'
    '\t-mask mask.img   \tuse ADSC img file full of 0 or non-0 values as a mask\n'
    '\t-detector_absorb \tdetector sensor material attenuation depth (um) (default: "inf" to save time)\n'
    '\t-detector_thick  \tdetector sensor thickness (um)\n'
    '\t-detector_thicksteps\tnumber of layers of detector sensor material. Default: 1\n'
    '\t-Xbeam           \timage fast coordinate of direct-beam spot (mm). (default: center)\n'
    '\t-Ybeam           \timage slow coordinate of direct-beam spot (mm). (default: center)\n'
    "\t-mosflm          \tuse MOSFLM's direct-beam convention, same as -denzo. (default: adxv)\n"
    '\t-xds             \tuse XDS detector origin convention. (default: adxv)\n'
    '\t-ORGX  -ORGY     \tXDS-convention beam center\n'
    '\t-twotheta        \trotation of detector about spindle axis (deg). (default: 0)\n'
    '\t-N               \tnumber of unit cells in all directions. may also use -Na -Nb or -Nc\n'
    '\t-xtalsize        \talternative to -N: specify crystal full width (mm)\n'
    '\t-square_xtal     \tspecify parallelpiped crystal shape (default)\n'
    '\t-round_xtal      \tspecify ellipsoidal crystal shape (sort of)\n'
    '\t-gauss_xtal      \tGaussian-shaped spots: no inter-Bragg maxima\n'
    '\t-tophat_spots    \tclip lattice transform at fwhm: no inter-Bragg maxima\n'
    '\t-oversample      \tnumber of sub-pixels per pixel. use this if xtalsize/lambda > distance/pixel\n'
    '\t-oversample_thick \tre-calculate thickness effect for sub-pixels (not the default)\n'
    '\t-oversample_polar \tre-calculate polarization effect for sub-pixels (not the default)\n'
    '\t-oversample_omega \tre-calculate solid-angle effect for sub-pixels (not the default)\n'
    '\t-lambda          \tincident x-ray wavelength in Angstrom. may also use -energy in eV\n'
    '\t-mosaic          \tisotropic mosaic spread in degrees (use 90 for powder)\n'
    '\t-mosaic_domains  \tnumber of randomly-oriented mosaic domains to render\n'
    '\t-dispersion      \tspectral dispersion: delta-lambda/lambda in percent\n'
    '\t-dispsteps       \tnumber of wavelengths in above range\n'
    '\t-hdivrange       \thorizontal angular spread of source points in mrad\n'
    '\t-vdivrange       \tvertical angular spread of source points in mrad\n'
    '\t-hdivstep        \tnumber of source points in the horizontal\n'
    '\t-vdivstep        \tnumber of source points in the vertical\n'
    '\t-square_div      \tfull divergence grid (default: round off corners)\n'
    '\t-phi             \tstarting rotation value about spindle axis in degrees\n'
    '\t-osc             \trotation range about spindle axis in degrees\n'
    '\t-phisteps        \tnumber of rotation steps to render\n'
    '\t-water           \tadd contribution of x microns of water surrounding crystal\n'
    '\t-floatfile       \tname of binary output file (4-byte floats)\n'
    '\t-intfile         \tname of noiseless smv-formatted output file (not on absolute scale by default)\n'
    '\t-scale           \tscale factor to apply to intfile (default: autoscale)\n'
    '\t-adc             \toffset to apply to output img file pixels (default: 40)\n'
    '\t-polar           \tspecify Kahn polarization factor (default: 1)\n'
    '\t-noisefile       \tname of photon-scale smv-formatted output file (with Poisson noise)\n'
    '\t-pgmfile         \tname of 8-bit portable greymap format output file\n'
    '\t-pgmscale        \trelative scale of pgm file (default: auto)\n'
    '\t-nopgm           \tdo not write pgm file\n'
    '\t-roi             \tonly render part of the image: xmin xmax ymin ymax\n'
    '\t-printout        \tprint pixel values out to the screen\n'
    '\t-seed            \tspecify random-number seed for noisefile (default, initialize with time)\n'
    '\t-mosaic_seed     \tspecify random-number seed for mosaic domain generation (default: 1234567)\n'
    '\t-misset_seed     \tspecify random-number seed for crystal orentaiton when -misset random (default, same as -seed)\n'
    '\t-fluence         \tincident beam intensity for photon-counting statistics (photons/m^2)\n'
    '\t-flux            \talternative to -fluence, specify flux, along with -beamsize and -exposure (photons/s)\n'
    '\t-beamsize        \talternative to -fluence, specify beam size, along with -flux and -exposure (default: 0.1 mm)\n'
    '\t-exposure        \talternative to -fluence, specify flux, along with -flux and -beamsize (default: 1 s)\n'
    '\t-nonoise         \tdisable generating the noisefile\n'
    '\t-noprogress      \tturn off the progress meter\n'
    '\t-nopolar         \tturn off the polarization correction\n'
    '\t-nointerpolate   \tdisable inter-Bragg peak structure factor interpolation\n'
    '\t-interpolate     \tforce inter-Bragg peak structure factor interpolation (default: on if < 3 cells wide)\n'
    '\t-point_pixel     \tturn off the pixel solid angle correction\n'
    '\t-curved_det      \tall pixels same distance from crystal\n'
    '\t-fdet_vector     \tunit vector of increasing fast-axis detector pixel coordinate (default: 0 0 1)\n'
    '\t-sdet_vector     \tunit vector of increasing slow-axis detector pixel coordinate (default: 0 -1 0)\n'
    '\t-odet_vector     \tunit vector of increasing detector distance (default: 1 0 0)\n'
    '\t-beam_vector     \tunit vector of x-ray beam direction (default: 1 0 0)\n'
    '\t-polar_vector    \tunit vector of x-ray E-vector polarization (default: 0 0 1)\n'
    '\t-spindle_axis    \tunit vector of right-handed phi rotation axis (default: 0 0 1)\n'
    '\t-pix0_vector     \tvector from crystal to first pixel in image (default: beam centered on detector)\n'
)


def usage_text(dump_exists: bool) -> str:
    """The reference's output for a bare ``nanoBragg``: banner, the missing-input
    error when there is no structure-factor cache (no newline: it runs into
    the usage line, as in the reference) and the usage text."""
    missing = "" if dump_exists else "ERROR: no hkl file and no dump file to read."
    return BANNER + "\n" + missing + "".join(REFERENCE_USAGE)


USAGE_EXIT = 9      # the reference's exit status after the usage text
