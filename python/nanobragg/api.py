"""simulate(): the nanoBragg simulation as a Python function returning NumPy arrays.

The command line (cli.py) runs the very same code: args_to_params() turns
its flags into simulate()'s keywords, and both go through :class:`Run`.
"""

from __future__ import annotations

import math
import os
from collections import namedtuple
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from . import _io
from .params import DEFAULT_FILES, UsageError, normalize, params_to_fields

__all__ = ["simulate", "Result", "Noise"]

BANNER = "nanoBragg nanocrystal diffraction simulator - James Holton and Ken Frankel 5-17-17"

Noise = namedtuple("Noise", "image photons overloads")


def _core():
    try:
        from . import _core as core
    except ImportError as e:  # pragma: no cover - only without a build
        raise ImportError("nanobragg._core, the compiled engine, is missing: install the package with "
                          "'pip install .' from the source tree") from e
    return core




class _ArrayHeader:
    """A mask given as an array: it sizes the detector like an SMV mask, with no header keywords."""

    def __init__(self, shape):
        self.height, self.width = int(shape[0]), int(shape[1])

    def value(self, keyword):
        return None


class Run:
    """Keyword parameters resolved into what one render needs.

    ``cli=True`` is the command line's behaviour: names in messages are
    flags, the Fdump cache is read when -hkl is absent (and written by the
    CLI after -hkl is read), and the messages the reference prints while
    reading its inputs are collected for the log."""

    def __init__(self, params: Mapping[str, Any], *, cli: bool = False):
        self.cli = cli
        self.dump_message = ""
        self.notes: Dict[str, List[str]] = {"pre": [], "mat": [], "hkl": []}
        self.sources_name: Optional[str] = None      # for messages about the sources
        self.sources_lines: Optional[List[int]] = None
        items = normalize(params)
        last: Dict[str, Any] = {}
        for opt, _name, value in items:
            last[opt.key] = value

        # --- formats (issue 13): an MTZ/mmCIF hkl or a pdb model, read before the setup;
        # the file's cell stands in for a missing cell (re-pointed into the job layer by the lead)
        from . import structure as _structure
        self.sf_input = _structure.run_input(last, self._name)
        if self.sf_input is not None and last.get("cell") is None and last.get("mat") is None:
            items = normalize({"cell": tuple(self.sf_input.cell), **dict(params)})
            last["cell"] = tuple(self.sf_input.cell)
        # --- end formats ---

        # the reference's usage check: structure factors and a crystal are required
        self.dump_path = last.get("dump", DEFAULT_FILES["dump"] if cli else None)
        if (last.get("hkl") is None and last.get("pdb") is None and float(last.get("default_F", 0.0)) == 0.0
                and not (self.dump_path is not None and os.path.isfile(self.dump_path))):
            raise UsageError(self._usage_hkl())
        if last.get("cell") is None and last.get("mat") is None:
            raise UsageError(f"no crystal: give {self._name('cell')} or {self._name('mat')}")
        core = _core()

        # -mask then -img: their headers seed the detector before every flag
        headers = []
        self.mask: Optional[np.ndarray] = None
        self.mask_name: Optional[str] = None
        if last.get("mask") is not None:
            m = last["mask"]
            if isinstance(m, str):
                smv = self._read_smv(core, m, "mask")
                self.mask = np.ascontiguousarray(smv.data, dtype=np.uint16)
                self.mask_name = m
                headers.append(("mask", smv))
            else:
                arr = np.asarray(m)
                if arr.ndim != 2 or arr.size == 0 or not (arr.dtype.kind in "biuf"):
                    raise ValueError(f"{self._name('mask')}: expected a file name or a 2-D numeric array, "
                                     f"got {_describe(m)}")
                self.mask = np.ascontiguousarray(arr != 0, dtype=np.uint16)
                self.mask_name = "the mask array"
                headers.append(("mask", _ArrayHeader(arr.shape)))
        if last.get("img") is not None:
            headers.append(("img", self._read_smv(core, last["img"], "img")))

        # data keywords resolved to arrays, in place, so that their fields follow flag order
        resolved = []
        for opt, name, value in items:
            if opt.key == "mat":
                value = self._read_mat(value)
            elif opt.key == "sourcefile":
                value = self._read_sources(value)
            resolved.append((opt, name, value))
        st = params_to_fields(resolved, headers)
        self.fields: Dict[str, Any] = st.fields
        self.extras: Dict[str, Any] = st.extras
        self.threads = int(self.extras.get("threads", 0))

        if self.cli:
            if self.extras.get("stol") is not None:
                self._check_stol(self.extras["stol"])
            for key in ("stol", "4stol", "Q", "stolout", "coherent", "printout", "printout_pixel"):
                if key in last:
                    self.notes["pre"].append(f"note: -{key} is accepted for compatibility and has no effect")

        # the setup first: its checks (sizes, memory) are cheap, the HKL read may not be
        self.setup = self._make_setup(core)

        if self.mask is not None and self.mask.shape != (self.setup.spixels, self.setup.fpixels):
            h, w = self.mask.shape
            raise ValueError(f"{self._name('mask')}: the mask is {w}x{h} pixels but the detector is "
                             f"{self.setup.fpixels}x{self.setup.spixels} (fast x slow)")
        pp = self.extras.get("printout_pixel")
        if pp is not None and pp[0] >= 0 and not (pp[0] < self.setup.fpixels and 0 <= pp[1] < self.setup.spixels):
            # the reference prints every pixel for a negative fast index; otherwise it must be on the detector
            raise UsageError(f"{self._name('printout_pixel')} {pp[0]} {pp[1]}: outside the "
                             f"{self.setup.fpixels} x {self.setup.spixels} pixel detector (0..{self.setup.fpixels - 1}, "
                             f"0..{self.setup.spixels - 1})")

        self.hkl = None
        self.hkl_count = 0
        self.hkl_from_text = False
        default_F = float(self.fields.get("default_F", 0.0))
        self._load_hkl(core, last, default_F)

    def _make_setup(self, core):
        try:
            return core.Setup(self.fields)
        except ValueError as e:
            msg = str(e)
            if self.sources_name and msg.startswith("source "):
                # the engine numbers the sources; name the file (or array) and line
                try:
                    k = int(msg.split()[1])
                    msg = f"{self._source_where(k - 1)}: the source {msg.split(' ', 2)[2]}"
                except (ValueError, IndexError):
                    msg = f"{self.sources_name}: {msg}"
            raise ValueError(msg) from None

    # -- names and messages -------------------------------------------------

    def _name(self, key: str) -> str:
        return "-" + key if self.cli else key

    def _usage_hkl(self) -> str:
        if self.cli:
            return f"no structure factors: give -hkl FILE or -default_F F (no {self.dump_path} to read)"
        return "no structure factors: give hkl= (a file, an (n,4) array or a dict) or default_F="

    # -- inputs ---------------------------------------------------------------

    def _read_file(self, path: str, key: str) -> bytes:
        try:
            return _io.read_bytes(path)
        except OSError as e:
            raise type(e)(e.errno, f"cannot read {self._name(key)} file '{path}': {e.strerror or e}") from None

    def _read_smv(self, core, path, key):
        if not isinstance(path, str):
            raise ValueError(f"{self._name(key)}: expected an SMV file name, got {_describe(path)}")
        data = self._read_file(path, key)
        try:
            smv = core.parse_smv(data)
        except ValueError as e:
            raise ValueError(f"{self._name(key)} {path}: {e}") from None
        _io.check_smv_seed_values(smv, f"{self._name(key)} {path}")
        self.notes["pre"].append(f"reading {path}")
        return smv

    def _read_mat(self, value):
        if isinstance(value, str):
            text = self._read_file(value, "mat").decode("latin-1")
            try:
                mat = _io.parse_mat(text)
            except ValueError as e:
                raise ValueError(f"{self._name('mat')} {value}: {e}") from None
            self.notes["mat"].append(f"reading {value}")
            return mat
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.size != 9 or arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape != (3, 3)):
            raise ValueError(f"{self._name('mat')}: expected a file name or a 3x3 array, got {_describe(value)}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{self._name('mat')}: the matrix has non-finite values")
        return arr.reshape(3, 3)

    def _read_sources(self, value):
        name = self._name("sourcefile")
        if isinstance(value, str):
            text = self._read_file(value, "sourcefile").decode("latin-1")
            try:
                arr, lines = _io.read_sources(text)
            except ValueError as e:
                raise ValueError(f"{name} {value}: {e}") from None
            if arr.shape[0] == 0:
                raise ValueError(f"{name} {value}: no sources in the file")
            self.sources_name, self.sources_lines = f"{name} {value}", lines
            _io.check_sources(arr, self._source_where)
            return arr
        try:
            arr = np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a file name or an (n, <=5) array "
                             f"(X Y Z weight lambda_m), got {_describe(value)}") from None
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[0] == 0 or not 1 <= arr.shape[1] <= 5:
            raise ValueError(f"{name}: expected an (n, <=5) array (X Y Z weight lambda_m), "
                             f"got shape {arr.shape}")
        if arr.shape[1] < 5:
            arr = np.hstack([arr, np.full((arr.shape[0], 5 - arr.shape[1]), np.nan)])
        if np.isinf(arr).any():
            raise ValueError(f"{name}: the sources must be finite (NaN: the default for that column)")
        self.sources_name, self.sources_lines = name, None
        _io.check_sources(arr, self._source_where)
        return np.ascontiguousarray(arr)

    def _source_where(self, i: int) -> str:
        """Row i of the sources, for messages: the file's line, or the array's row."""
        if self.sources_lines is None:
            return f"{self.sources_name}: row {i}"
        return f"{self.sources_name}: line {self.sources_lines[i]}"

    def _check_stol(self, value):
        # the reference reads the amorphous F(stol) table and stops when it is
        # empty, but never uses it; we check it the same way
        if isinstance(value, str):
            text = self._read_file(value, "stol").decode("latin-1")
            self.notes["hkl"].append(f"reading {value}")
            if _io.read_text_columns(text, 2).shape[0] == 0:
                raise ValueError(f"-stol {value}: no data in the file")

    def _load_hkl(self, core, last, default_F):
        if self.sf_input is not None:   # --- formats (issue 13): MTZ / mmCIF / model -> P1 rows ---
            sf = _structure_rows(self.sf_input, self.setup.geometry, self.fields.get("dmin_A"), self.extras)
            self.notes["hkl"] += sf.messages
            self.hkl = core.Hkl.from_rows(np.ascontiguousarray(sf.rows), default_F)
            self.hkl_count = int(self.hkl.count)
            self.hkl_from_text = last.get("hkl") is not None     # the CLI caches -hkl files in -dump
            return                      # --- end formats ---
        value = last.get("hkl")
        name = self._name("hkl")
        if value is None:
            dump = self.dump_path
            if dump is not None and os.path.isfile(dump):
                data = self._read_file(dump, "dump")
                try:
                    self.hkl = core.Hkl.from_fdump(data)
                except ValueError as e:
                    raise ValueError(f"{self._name('dump')} {dump}: {e}") from None
                self.hkl_count = _grid_count(self.hkl)
                self.notes["hkl"].append(f"reading Fs from {dump}")
            return
        if isinstance(value, str):
            data = self._read_file(value, "hkl")
            try:
                self.hkl = core.Hkl.from_text(data, default_F)
            except ValueError as e:
                raise ValueError(f"{name} {value}: {e}") from None
            self.hkl_from_text = True
            self.hkl_count = int(self.hkl.count)
            self.notes["hkl"].append(f"counting entries in {value}")
            if default_F != 0.0:
                self.notes["hkl"] += ["initializing to default_F = %g:" % default_F, "done initializing:"]
            self.notes["hkl"].append(f"re-reading {value}")
            return
        if isinstance(value, Mapping):
            try:
                rows = np.array([(h, k, l, F) for (h, k, l), F in value.items()], dtype=np.float64).reshape(-1, 4)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: a dict must map (h, k, l) tuples to F values") from None
        else:
            try:
                rows = np.array(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: expected a file name, an (n, 4) array of h k l F or a dict "
                                 f"{{(h, k, l): F}}, got {_describe(value)}") from None
            if rows.ndim != 2 or rows.shape[1] != 4:
                raise ValueError(f"{name}: expected an (n, 4) array of h k l F, got shape {rows.shape}")
        if rows.shape[0] == 0:
            raise ValueError(f"{name}: no reflections")
        if not np.all(np.isfinite(rows)):
            raise ValueError(f"{name}: non-finite values")
        if np.any(rows[:, :3] != np.round(rows[:, :3])):
            raise ValueError(f"{name}: Miller indices must be integers")
        self.hkl = core.Hkl.from_rows(np.ascontiguousarray(rows), default_F)
        self.hkl_count = int(self.hkl.count)

    # -- running ---------------------------------------------------------------

    def render(self) -> "Result":
        image, stats = self.setup.render(hkl=self.hkl, mask=self.mask, threads=self.threads)
        return Result(self.setup, image, stats)

    def log_lines(self) -> List[str]:
        """The reference's setup messages: the engine's log with the front end's
        input messages put where the reference prints them."""
        lines = self.setup.log.splitlines()

        def find(pred, start=0):
            for i in range(start, len(lines)):
                if pred(lines[i]):
                    return i
            return None

        if not any(l.startswith("nanoBragg nanocrystal") for l in lines):
            i = find(lambda l: l.endswith("convention selected."))
            lines.insert(i if i is not None else 0, BANNER)
        if self.notes["mat"]:
            i = find(lambda l: l.startswith("XDS incident beam"))
            if i is None:
                i = find(lambda l: l.startswith("Unit Cell:"))
                i = len(lines) if i is None else i
            else:
                i += 1
                if i < len(lines) and lines[i].startswith("auto-selected") and "interpolation" in lines[i]:
                    i += 1
            lines[i:i] = self.notes["mat"]
        hkl_notes = list(self.notes["hkl"])
        if self.hkl_from_text and self.cli:
            hkl_notes.append(self.dump_message)
        if hkl_notes:
            i = find(lambda l: l.startswith("approximate MW"))
            i = len(lines) if i is None else i + 1
            lines[i:i] = hkl_notes
        if not any("initialized hkls" in l for l in lines):
            i = find(lambda l: l.startswith("  ") and " xtal: " in l)
            if i is not None:
                lines.insert(i, "  %d initialized hkls (all others =%g)"
                             % (self.hkl_count, float(self.fields.get("default_F", 0.0))))
        if self.mask_name and not any("skipping zero-flagged" in l for l in lines):
            i = find(lambda l: "pixel oversample steps" in l)
            i = len(lines) if i is None else i + 1
            lines.insert(i, f"  skipping zero-flagged pixels in {self.mask_name}")
        if self.cli and self.extras.get("noise", True) and not any("noise image paramters" in l for l in lines):
            g = self.setup.geometry
            lines += ["", "  noise image paramters:", "  seed: %d" % g["seed"],
                      "  water droplet size: %g m" % g["water_m"]]
        return self.notes["pre"] + lines

    def write_dump(self) -> None:
        """CLI: cache the structure factors read from -hkl (the reference's Fdump.bin)."""
        path = self.dump_path
        try:
            _io.atomic_write(path, [self.hkl.fdump()])
            self.dump_message = f"writing dump file for next time: {path}"
        except OSError:
            self.dump_message = f"WARNING: unable to open dump file: {path}"


def _structure_rows(inp, geometry, dmin_A, extras):
    from .structure import run_rows   # formats (issue 13)
    return run_rows(inp, geometry, dmin_A, extras)


def _grid_count(hkl) -> int:
    c = int(hkl.count)
    if c:
        return c
    # the reference reports h_range*k_range*l_range for a dump file
    return ((hkl.h_max - hkl.h_min + 1) * (hkl.k_max - hkl.k_min + 1) * (hkl.l_max - hkl.l_min + 1))


def _describe(v) -> str:
    if isinstance(v, np.ndarray):
        return f"an array of shape {v.shape}"
    r = repr(v)
    return r if len(r) <= 60 else type(v).__name__


class Result:
    """One rendered image and everything needed to write it like nanoBragg.

    Attributes: ``float_image`` (float32, shape (spixels, fpixels), photons
    per pixel), ``stats``, ``log``, ``header``, ``geometry``.  Methods make
    the derived images and write files (atomically)."""

    def __init__(self, setup, image: np.ndarray, stats: Mapping[str, Any]):
        self._setup = setup
        self.float_image: np.ndarray = image
        s = dict(stats)
        s["max_I_x"] = s.get("max_I_x_m")
        s["max_I_y"] = s.get("max_I_y_m")
        steps = setup.steps or 1
        s["solid_angle"] = s.get("omega_sum", 0.0) / steps
        self.stats: Dict[str, Any] = s
        self.log: str = setup.log
        self.warnings: List[str] = [l for l in self.log.splitlines() if l.startswith("WARNING")]
        if s.get("interpolation_fell_back"):
            self.warnings.append("WARNING: out of range for three point interpolation at h,k,l = %g,%g,%g: "
                                 "interpolation switched off from pixel %d on"
                                 % (tuple(s["fallback_hkl"]) + (s["fallback_pixel"],)))
        self._header = None
        self._geometry = None

    def __repr__(self):
        h, w = self.float_image.shape
        return f"<nanobragg.Result {w}x{h} pixels, max_I={self.stats['max_I']:g}>"

    # -- derived images --------------------------------------------------------

    def _int(self) -> Tuple[np.ndarray, float]:
        img, scale = self._setup.int_image(self.float_image, self.stats["max_I"])
        return img, float(scale)

    def int_image(self) -> np.ndarray:
        """uint16 noiseless image as written to the -intfile (scale: -scale, or peak -> 55000; plus -adc)."""
        return self._int()[0]

    @property
    def intfile_scale(self) -> float:
        return self._int()[1]

    def _pgm(self, intfile_scale: Optional[float] = None) -> Tuple[np.ndarray, float]:
        if intfile_scale is None:
            intfile_scale = self.intfile_scale
        img, scale = self._setup.pgm_image(self.float_image, intfile_scale, self.stats["rmsd"])
        return img, float(scale)

    def pgm_image(self) -> np.ndarray:
        """uint8 image as written to the -pgmfile."""
        return self._pgm()[0]

    @property
    def pgm_scale(self) -> float:
        return self._pgm()[1]

    def noise(self, seed: Optional[int] = None) -> Noise:
        """Poisson noise: Noise(image uint16, photons, overloads).  seed as -seed (None: the run's)."""
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise ValueError(f"seed: expected an integer, got {seed!r}")
        img, photons, overloads = self._setup.noise_image(self.float_image, None if seed is None else int(seed))
        return Noise(img, float(photons), int(overloads))

    def noise_image(self, seed: Optional[int] = None) -> np.ndarray:
        """uint16 image with Poisson noise, as the -noisefile (same seed -> same image)."""
        return self.noise(seed).image

    # -- metadata ----------------------------------------------------------------

    @property
    def header(self) -> Dict[str, Any]:
        """The SMV header keywords of the int/noise images (numbers as int/float, DIALS_ORIGIN a tuple)."""
        if self._header is None:
            self._header = parse_smv_header(self._setup.smv_header())
        return dict(self._header)

    @property
    def geometry(self) -> Dict[str, Any]:
        """The resolved geometry: the engine's fields (SI units, as nb_setup) plus
        friendly names in the flags' units (mm, pixels, degrees, Angstrom)."""
        if self._geometry is None:
            self._geometry = _friendly_geometry(dict(self._setup.geometry))
        return dict(self._geometry)

    # -- files -------------------------------------------------------------------

    def float_bytes(self) -> bytes:
        return np.ascontiguousarray(self.float_image, dtype=np.float32).tobytes()

    def _smv_file(self, img: np.ndarray, adc_header: bool = False) -> bytes:
        # pixels in the machine's byte order, which the engine's header states
        data = self._setup.smv_header() + np.ascontiguousarray(img, dtype=np.uint16).tobytes()
        if adc_header:   # formats (issue 13): the pedestal key DIALS reads
            from .images import smv_with_adc_offset
            data = smv_with_adc_offset(data, float(self._setup.geometry["adc_offset"]))
        return data

    def _pgm_file(self, img: np.ndarray, scale: float) -> bytes:
        return self._setup.pgm_header(scale) + np.ascontiguousarray(img, dtype=np.uint8).tobytes()

    def smv_bytes(self, noise: bool = False, seed: Optional[int] = None, adc_header: bool = False) -> bytes:
        """The SMV file content (header + pixels) of the int image, or of the noise image.
        adc_header=True adds ADC_OFFSET=<adc> to the header (the pedestal key DIALS reads)."""
        return self._smv_file(self.noise(seed).image if noise else self.int_image(), adc_header)

    def pgm_bytes(self) -> bytes:
        """The PGM file content."""
        return self._pgm_file(*self._pgm())

    def write_float(self, path) -> None:
        """Raw 4-byte floats, fast index fastest (the -floatfile)."""
        _io.atomic_write(path, [self.float_bytes()])

    def write_smv(self, path, noise: bool = False, seed: Optional[int] = None, adc_header: bool = False) -> None:
        """SMV image: the int image, or with noise=True the noise image (-intfile / -noisefile);
        adc_header=True adds the ADC_OFFSET key (-adc_header)."""
        _io.atomic_write(path, [self.smv_bytes(noise, seed, adc_header)])

    # --- formats (issue 13): CBF and PNG ---------------------------------------

    def cbf_counts(self, noise: bool = True, seed: Optional[int] = None) -> Tuple[np.ndarray, int]:
        """The CBF's counts: the noise image (noise=False: the int image) less
        the -adc offset, as int32, and the count cutoff (65535 less the offset)."""
        img = self.noise(seed).image if noise else self.int_image()
        adc = int(round(float(self._setup.geometry["adc_offset"])))
        counts = np.clip(img.astype(np.int32) - adc, 0, None).astype(np.int32)
        return counts, 65535 - max(adc, 0)

    def cbf_bytes(self, noise: bool = True, seed: Optional[int] = None, name: str = "image") -> bytes:
        """The miniCBF file content (see :meth:`write_cbf`)."""
        from . import images
        counts, cutoff = self.cbf_counts(noise, seed)
        return images.cbf_bytes(counts, images.pilatus_header(self._setup.geometry, cutoff), name)

    def write_cbf(self, path, noise: bool = True, seed: Optional[int] = None) -> None:
        """miniCBF (byte offset, Pilatus-style header from the geometry) of the
        noise image, or with noise=False of the int image, less the -adc offset (-cbffile)."""
        _io.atomic_write(path, [self.cbf_bytes(noise, seed, os.fspath(path))])

    def png_bytes(self, image: Optional[np.ndarray] = None) -> bytes:
        """8-bit PNG preview of the float image (or of ``image``)."""
        from .images import png_bytes
        return png_bytes(self.float_image if image is None else image)

    def write_png(self, path, image: Optional[np.ndarray] = None) -> None:
        """8-bit PNG preview (-pngfile): spots dark on white, log contrast."""
        _io.atomic_write(path, [self.png_bytes(image)])

    def write_pgm(self, path) -> None:
        """8-bit binary PGM (-pgmfile)."""
        _io.atomic_write(path, [self.pgm_bytes()])


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


_VEC_NAMES = {"fdet": "fdet_vector", "sdet": "sdet_vector", "odet": "odet_vector", "beam": "beam_vector",
              "polar_vec": "polar_vector", "spindle": "spindle_axis", "twotheta_axis": "twotheta_axis"}


def _friendly_geometry(g: Dict[str, Any]) -> Dict[str, Any]:
    def mm(key):
        v = g.get(key)
        return None if v is None else v * 1000.0

    def vec(key):
        v = g.get(key)
        return None if v is None else tuple(float(x) for x in v)

    f = dict(g)
    for key, name in _VEC_NAMES.items():
        if key in g:
            f[name] = vec(key)
    if "pix0_m" in g:
        f["pix0_vector"] = vec("pix0_m")                       # metres, as -pix0_vector
        f["pix0_vector_mm"] = tuple(1000.0 * x for x in g["pix0_m"])
    for name in ("Fbeam", "Sbeam", "Fclose", "Sclose", "Xbeam", "Ybeam", "Xclose", "Yclose", "distance",
                 "close_distance", "pixel"):
        if name + "_m" in g:
            f[name] = mm(name + "_m")                          # mm, as the flags
    if "ORGX_px" in g:
        f["ORGX"], f["ORGY"] = g["ORGX_px"], g.get("ORGY_px")
    if "dials_origin_mm" in g:
        f["dials_origin"] = vec("dials_origin_mm")
    if "lambda0_m" in g:
        f["lambda"] = g["lambda0_m"] * 1e10                    # Angstrom
    if "twotheta_rad" in g:
        f["twotheta"] = math.degrees(g["twotheta_rad"])
    for k in ("fpixels", "spixels"):
        if k in g:
            f[k] = g[k]
    return f


def simulate(**params) -> Result:
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

    Nothing is written to disk.  Unknown keyword -> TypeError naming the
    closest valid one; a bad value -> ValueError naming the parameter.
    See docs/api.md.
    """
    return Run(params).render()
