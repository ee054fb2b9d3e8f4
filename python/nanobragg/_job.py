"""The job layer: one path from flags or keywords to images and files.

Both front ends run through here, in one process:

* ``simulate(**keywords)`` (api.py) builds a :class:`Job` and renders it;
* the ``nanoBragg`` command (cli.py) parses its flags into the same keywords
  (params.args_to_params) and calls :func:`run_command`, which prints the
  reference's messages and writes the files.

Steps, each in one place: keywords -> checked options (params.normalize) ->
inputs read with size bounds (_io.read_input) -> nb_params fields
(params.params_to_fields) -> the engine's setup (_core.Setup: it owns every
value check) -> render (cancelled by a signal within the engine's poll
interval) -> scaled images, computed once (:class:`Images`) -> files
(_io.OutputSet: temporary file + rename, or written through).

No NumPy here: images are the engine's buffers, written as they are.  NumPy
is imported only where a caller hands arrays in (simulate(hkl=array)).
"""

from __future__ import annotations

import math
import os

from . import _io
from .params import BANNER, DEFAULT_FILES, UsageError, normalize, params_to_fields

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only: the command does not load typing
    from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

# inputs named by flags: they are read, so no output may name the same file
_INPUT_KEYS = ("hkl", "mat", "sourcefile", "mask", "img", "stol", "pdb")
# the command's outputs: the reference's four (written by default) and the
# formats written only when asked for
_OUTPUT_FLAGS = (("floatfile", "-floatfile"), ("intfile", "-intfile"), ("pgmfile", "-pgmfile"),
                 ("noisefile", "-noisefile"), ("cbffile", "-cbffile"), ("pngfile", "-pngfile"),
                 ("nexus", "-nexus"))


def _core():
    try:
        from . import _core as core
    except ImportError as e:  # pragma: no cover - only without a build
        raise ImportError("nanobragg._core, the compiled engine, is missing: install the package with "
                          "'pip install .' from the source tree") from e
    return core


class _ArrayHeader:
    """A mask given as an array: it sizes the detector like an SMV mask, with no header keywords."""

    def __init__(self, shape: Tuple[int, int]):
        self.height, self.width = int(shape[0]), int(shape[1])

    def value(self, keyword: str) -> Optional[float]:
        return None


def _exact_threads() -> bool:
    """NANOBRAGG_EXACT_THREADS=1: render on the requested number of threads
    even when the image is small enough for one (the thread-count tests)."""
    return os.environ.get("NANOBRAGG_EXACT_THREADS", "") not in ("", "0")


class Job:
    """Keyword parameters resolved into what one render needs.

    ``cli=True`` is the command line's behaviour: names in messages are
    flags, the Fdump cache is read when -hkl is absent (and written after
    -hkl is read), and the messages the reference prints while reading its
    inputs are collected for the log."""

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
        self.last = last

        # an MTZ/mmCIF -hkl or a -pdb model (structure.py, gemmi) is read
        # before the setup: the file's cell stands in for a missing -cell
        from . import structure
        self.sf_input = structure.run_input(last, self._name)
        if self.sf_input is not None and last.get("cell") is None and last.get("mat") is None:
            items = normalize({"cell": tuple(self.sf_input.cell), **dict(params)})
            last["cell"] = tuple(self.sf_input.cell)

        # the reference's usage check: structure factors and a crystal are required
        self.dump_path: Optional[str] = last.get("dump", DEFAULT_FILES["dump"] if cli else None)
        if (last.get("hkl") is None and last.get("pdb") is None and float(last.get("default_F", 0.0)) == 0.0
                and not (self.dump_path is not None and os.path.isfile(self.dump_path))):
            raise UsageError(self._usage_hkl())
        if last.get("cell") is None and last.get("mat") is None:
            raise UsageError(f"no crystal: give {self._name('cell')} or {self._name('mat')}")
        threads = int(last.get("threads", 0))
        if threads > _io.MAX_THREADS:
            raise ValueError(f"{self._name('threads')}: {threads} is more than {_io.MAX_THREADS}")
        core = _core()

        # -mask then -img: their headers seed the detector before every flag
        headers: List[Tuple[str, Any]] = []
        self.mask: Any = None          # a uint16 buffer (engine Buffer or NumPy array) or None
        self.mask_name: Optional[str] = None
        if last.get("mask") is not None:
            m = last["mask"]
            if isinstance(m, str):
                smv = self._read_smv(core, m, "mask")
                self.mask = smv.data
                self.mask_name = m
                headers.append(("mask", smv))
            else:
                import numpy as np
                arr = np.asarray(m)
                if arr.ndim != 2 or arr.size == 0 or not (arr.dtype.kind in "biuf"):
                    raise ValueError(f"{self._name('mask')}: expected a file name or a 2-D numeric array, "
                                     f"got {_describe(m)}")
                self.mask = np.ascontiguousarray(arr != 0, dtype=np.uint16)
                self.mask_name = "the mask array"
                headers.append(("mask", _ArrayHeader(arr.shape)))
        if last.get("img") is not None:
            headers.append(("img", self._read_smv(core, last["img"], "img")))

        # data keywords resolved in place, so that their fields follow flag order
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
        self.origin: Dict[str, str] = st.origin
        self.threads = threads

        if self.cli:
            if self.extras.get("stol") is not None:
                self._check_stol(self.extras["stol"])
            for key in ("stol", "4stol", "Q", "stolout", "coherent"):
                if key in last:
                    self.notes["pre"].append(f"note: -{key} is accepted for compatibility and has no effect")

        # the setup first: its checks (sizes, memory) are cheap, the HKL read may not be
        self.setup = self._make_setup(core)

        if self.mask is not None:
            h, w = _shape_of(self.mask)
            if (h, w) != (self.setup.spixels, self.setup.fpixels):
                raise ValueError(f"{self._name('mask')}: the mask is {w}x{h} pixels but the detector is "
                                 f"{self.setup.fpixels}x{self.setup.spixels} (fast x slow)")
        pp = self.extras.get("printout_pixel")
        if pp is not None and pp[0] >= 0 and not (pp[0] < self.setup.fpixels and 0 <= pp[1] < self.setup.spixels):
            # the reference prints every pixel for a negative fast index; otherwise it must be on the detector
            raise UsageError(f"{self._name('printout_pixel')} {pp[0]} {pp[1]}: outside the "
                             f"{self.setup.fpixels} x {self.setup.spixels} pixel detector (0..{self.setup.fpixels - 1}, "
                             f"0..{self.setup.spixels - 1})")

        self.hkl: Any = None
        self.hkl_count = 0
        self.hkl_from_text = False
        default_F = float(self.fields.get("default_F", 0.0))
        self._load_hkl(core, last, default_F)

    def _make_setup(self, core):
        try:
            return core.Setup(self.fields)
        except ValueError as e:
            msg = str(e)
            field, sep, rest = msg.partition(": ")
            if sep and field.isidentifier():
                # the engine names the nb_params field out of range: name the
                # flag (or keyword) that set it, a usage mistake on the command line
                if field in self.origin:
                    msg = f"{self._name(self.origin[field])}: {rest}"
                    raise (UsageError if self.cli else ValueError)(msg) from None
                raise ValueError(rest) from None        # a default or an input file's header set it
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

    def _read_file(self, path: str, key: str, text: bool = False) -> bytearray:
        return _io.read_input(path, self._name(key), key, text=text)

    def _read_smv(self, core, path, key):
        if not isinstance(path, str):
            raise ValueError(f"{self._name(key)}: expected an SMV file name, got {_describe(path)}")
        data = self._read_file(path, key)
        try:
            smv = core.parse_smv(data)
        except ValueError as e:
            raise ValueError(f"{self._name(key)} {path}: {e}") from None
        del data
        _io.check_smv_seed_values(smv, f"{self._name(key)} {path}")
        self.notes["pre"].append(f"reading {path}")
        return smv

    def _read_mat(self, value):
        if isinstance(value, str):
            text = self._read_file(value, "mat", text=True).decode("latin-1")
            try:
                mat = _io.parse_mat_values(text)
            except ValueError as e:
                raise ValueError(f"{self._name('mat')} {value}: {e}") from None
            self.notes["mat"].append(f"reading {value}")
            return mat
        import numpy as np
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.size != 9 or arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape != (3, 3)):
            raise ValueError(f"{self._name('mat')}: expected a file name or a 3x3 array, got {_describe(value)}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{self._name('mat')}: the matrix has non-finite values")
        return [float(x) for x in arr.reshape(9)]

    def _read_sources(self, value):
        name = self._name("sourcefile")
        if isinstance(value, str):
            rows, lines = _io.read_source_file(value, name)
            self.sources_name, self.sources_lines = f"{name} {value}", lines
            _io.check_source_rows(rows, self._source_where)
            return rows
        import numpy as np
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
        rows = arr.tolist()
        _io.check_source_rows(rows, self._source_where)
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
            text = self._read_file(value, "stol", text=True).decode("latin-1")
            self.notes["hkl"].append(f"reading {value}")
            if not _io.read_text_rows(text, 2):
                raise ValueError(f"-stol {value}: no data in the file")

    def _load_hkl(self, core, last, default_F):
        if self.sf_input is not None:      # MTZ / mmCIF / model -> P1 rows, once the detector is known
            from . import structure
            import numpy as np
            sf = structure.run_rows(self.sf_input, self.setup.geometry, self.fields.get("dmin_A"), self.extras)
            self.notes["hkl"] += sf.messages
            rows = np.ascontiguousarray(sf.rows, dtype=np.float64)
            self.hkl = core.Hkl.from_rows(rows, rows.shape[0], default_F)
            self.hkl_count = int(self.hkl.count)
            self.hkl_from_text = last.get("hkl") is not None     # the command caches -hkl files in -dump
            return
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
            data = self._read_file(value, "hkl", text=True)
            try:
                self.hkl = core.Hkl.from_text(data, default_F)
            except ValueError as e:
                raise ValueError(f"{name} {value}: {e}") from None
            del data
            self.hkl_from_text = True
            self.hkl_count = int(self.hkl.count)
            self.notes["hkl"].append(f"counting entries in {value}")
            if default_F != 0.0:
                self.notes["hkl"] += ["initializing to default_F = %g:" % default_F, "done initializing:"]
            self.notes["hkl"].append(f"re-reading {value}")
            return
        import numpy as np
        from collections.abc import Mapping as _Mapping
        if isinstance(value, _Mapping):
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
        rows = np.ascontiguousarray(rows)
        self.hkl = core.Hkl.from_rows(rows, rows.shape[0], default_F)
        self.hkl_count = int(self.hkl.count)

    # -- running ---------------------------------------------------------------

    def render(self, progress: Optional[Callable[[int, int], Any]] = None, noise: bool = False,
               noise_later: bool = True) -> "Images":
        """Render the float image.  noise: also draw the noise image at the
        run's seed, while the image renders (the same image as
        Images.noise_image() draws after).  noise_later: a noise image may
        still be drawn from the result (simulate()'s Result can), which
        keeps -skip_negligible auto off.  A signal handler that raises
        (KeyboardInterrupt) or an exception from progress(done, total) stops
        the render and propagates."""
        skip = self.skip_negligible(noise or noise_later)
        # skipping changes pixels after the rows are drawn: its noise image comes after the render
        image, stats, noise_image = self.setup.render(hkl=self.hkl, mask=self.mask, threads=self.threads,
                                                      exact_threads=_exact_threads(), progress=progress,
                                                      noise=noise and not skip, skip_negligible=skip)
        _check_image(stats, self.fields, self._name)
        return Images(self.setup, image, stats, hkl=self.hkl, mask=self.mask, printout=printout_request(self.extras),
                      noise=noise_image)

    def skip_negligible(self, noise: bool) -> bool:
        """-skip_negligible: on, off, or auto: on unless a noise image is
        made from this render (a skipped pixel moves by up to 1e-7 of the
        peak, and the noise image would no longer follow the reference's)
        or -printout shows the pixels' own sums."""
        mode = self.extras.get("skip_negligible", "auto")
        if mode == "auto":
            return not noise and not printout_request(self.extras)
        return mode == "on"

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


def check_paths(params: Mapping[str, Any]) -> Dict[str, str]:
    """Before any input is read: the command's outputs by flag, refused when
    two name the same file, when one names an input (compared by real path),
    or when one cannot be written."""
    items = normalize(params)
    last: Dict[str, Any] = {}
    for opt, _name, value in items:
        last[opt.key] = value
    extras = params_to_fields(items).extras
    out: Dict[str, str] = {}
    for key, flag in _OUTPUT_FLAGS:
        if key == "pgmfile" and not extras.get("write_pgm", True):
            continue
        if key == "noisefile" and not extras.get("noise", True):
            continue
        if key not in DEFAULT_FILES and key not in extras:
            continue
        out[flag] = extras.get(key, DEFAULT_FILES.get(key))
    dump = last.get("dump", DEFAULT_FILES["dump"])
    inputs: Dict[str, str] = {f"-{k}": last[k] for k in _INPUT_KEYS if isinstance(last.get(k), str)}
    if "hkl" in last:
        out["-dump"] = dump
    else:
        inputs["-dump"] = dump
    seen = _io.check_distinct_outputs(out)
    for flag, path in inputs.items():
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(f"{flag} {path} is also the {seen[real]} output: it would be overwritten "
                             f"before it is read")
    _io.check_writable([p for flag, p in out.items() if flag != "-dump"])
    return out


def _shape_of(buf) -> Tuple[int, int]:
    shape = tuple(getattr(buf, "shape", ()))
    return (int(shape[0]), int(shape[1])) if len(shape) == 2 else (-1, -1)


# values beyond these are far outside any experiment: named as the likely
# cause when the image comes out NaN or infinite
_IMPLAUSIBLE = (("pixel_mm", "pixel", lambda v: v < 1e-12), ("mosaic_deg", "mosaic", lambda v: v > 1e6),
                ("flux", "flux", lambda v: v > 1e60), ("fluence", "fluence", lambda v: v > 1e80),
                ("exposure_s", "exposure", lambda v: abs(v) > 1e40), ("default_F", "default_F", lambda v: abs(v) > 1e30),
                ("distance_mm", "distance", lambda v: v < 1e-12 or v > 1e30))


def _check_image(stats: Mapping[str, Any], fields: Mapping[str, Any], name: Callable[[str], str]) -> None:
    """Refuse an image no detector could record: NaN, infinite or negative
    photon counts come from parameters outside what the model handles."""
    n = int(stats.get("nonfinite_pixels", 0))
    if n:
        suspects = [f"{name(flag)} {fields[field]:g}" for field, flag, bad in _IMPLAUSIBLE
                    if isinstance(fields.get(field), (int, float)) and bad(float(fields[field]))]
        cause = ("likely cause: " + ", ".join(suspects)) if suspects else "a parameter is outside the range the model handles"
        raise ValueError(f"the rendered image has {n} NaN or infinite pixels ({cause})")
    if stats.get("min_I", 0.0) < 0.0:
        raise ValueError("the rendered image has negative pixels (min %g): the detector faces away from the sample "
                         "(e.g. %s 180) or %s is outside -1..1" % (stats["min_I"], name("twotheta"), name("polar")))


def _grid_count(hkl) -> int:
    c = int(hkl.count)
    if c:
        return c
    # the reference reports h_range*k_range*l_range for a dump file
    return ((hkl.h_max - hkl.h_min + 1) * (hkl.k_max - hkl.k_min + 1) * (hkl.l_max - hkl.l_min + 1))


def _describe(v) -> str:
    shape = getattr(v, "shape", None)
    if shape is not None and hasattr(v, "dtype"):
        return f"an array of shape {tuple(shape)}"
    r = repr(v)
    return r if len(r) <= 60 else type(v).__name__


class Images:
    """A rendered float image and the images derived from it, each computed
    once on first use (engine buffers, viewable with numpy.asarray)."""

    def __init__(self, setup, image, stats: Mapping[str, Any], hkl: Any = None, mask: Any = None,
                 printout: Optional[Tuple[int, int]] = None, noise: Optional[Tuple[Any, float, int]] = None):
        """noise: the noise image at the run's seed, drawn with the render
        (what noise_image() would draw), or None."""
        self.setup = setup
        self.float_image = image
        self.hkl, self.mask = hkl, mask        # what rendered it, for -printout
        self.printout = printout               # what -printout/-printout_pixel asked for, or None
        s = dict(stats)
        s["max_I_x"] = s.get("max_I_x_m")
        s["max_I_y"] = s.get("max_I_y_m")
        steps = setup.steps or 1
        s["solid_angle"] = s.get("omega_sum", 0.0) / steps
        s["pixels"] = setup.fpixels * setup.spixels
        self.stats: Dict[str, Any] = s
        self._cache: Dict[Any, Any] = {}
        if noise is not None:
            img, photons, overloads = noise
            self._cache[("noise", None)] = (img, float(photons), int(overloads))

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def forget(self, key: str) -> None:
        """Drop a cached image (the command frees each one once written)."""
        for k in [k for k in self._cache if k == key or (isinstance(k, tuple) and k[0] == key)]:
            del self._cache[k]

    def int_image(self) -> Tuple[Any, float]:
        """(uint16 buffer, scale) as the -intfile."""
        def make():
            img, scale = self.setup.int_image(self.float_image, self.stats["max_I"])
            return img, float(scale)
        return self._cached("int", make)

    @property
    def intfile_scale(self) -> float:
        if "int_scale" not in self._cache:
            self._cache["int_scale"] = self.int_image()[1]
        return self._cache["int_scale"]

    def pgm_image(self) -> Tuple[Any, float]:
        """(uint8 buffer, scale) as the -pgmfile."""
        def make():
            img, scale = self.setup.pgm_image(self.float_image, self.intfile_scale, self.stats["rmsd"])
            return img, float(scale)
        return self._cached("pgm", make)

    def noise_image(self, seed: Optional[int] = None) -> Tuple[Any, float, int]:
        """(uint16 buffer, photons, overloads) as the -noisefile; seed as -seed (None: the run's)."""
        def make():
            img, photons, overloads = self.setup.noise_image(self.float_image, seed)
            return img, float(photons), int(overloads)
        return self._cached(("noise", seed), make)

    def smv_header(self, adc_header: bool = False) -> bytes:
        """The SMV header of the int and noise images; adc_header adds the
        ADC_OFFSET key DIALS reads the pedestal from (-adc_header)."""
        header = self._cached("smv_header", self.setup.smv_header)
        if adc_header:
            from .images import smv_header_with_adc_offset
            header = smv_header_with_adc_offset(header, float(self.setup.geometry["adc_offset"]))
        return header

    def geometry(self) -> Dict[str, Any]:
        """The resolved geometry (see Result.geometry); imports NumPy for the per-source arrays."""
        def make():
            import numpy as np
            g = dict(self.setup.geometry)
            for key in ("source_dir", "source_weight", "source_lambda_m", "mosaic_umats"):
                g[key] = np.asarray(g[key])
            return friendly_geometry(g)
        return self._cached("geometry", make)

    def cbf_counts(self, noise: bool = True, seed: Optional[int] = None):
        """The counts a CBF holds: the noise image (noise=False: the int image)
        less the -adc offset, as int32, and the count cutoff (65535 less it)."""
        import numpy as np
        img = np.asarray(self.noise_image(seed)[0] if noise else self.int_image()[0])
        adc = int(round(float(self.setup.geometry["adc_offset"])))
        counts = np.clip(img.astype(np.int32) - adc, 0, None).astype(np.int32)
        return counts, 65535 - max(adc, 0)

    def cbf_bytes(self, noise: bool = True, seed: Optional[int] = None, name: str = "image") -> bytes:
        """A miniCBF (byte offset, Pilatus-style header from the geometry)."""
        from . import images
        counts, cutoff = self.cbf_counts(noise, seed)
        return images.cbf_bytes(counts, images.pilatus_header(self.geometry(), cutoff), name)

    def write_nexus(self, path: str, noise: bool = True, seed: Optional[int] = None, float_image: bool = False,
                    compression: Optional[str] = None, atomic: bool = True) -> None:
        """An NXmx file of the noise (or int) counts, optionally with the float image."""
        import numpy as np
        from . import nexus
        counts = np.asarray(self.noise_image(seed)[0] if noise else self.int_image()[0])
        nexus.write_nexus(path, counts, self.geometry(), compression=compression, atomic=atomic,
                          float_image=np.asarray(self.float_image) if float_image else None)


# ---------------------------------------------------------------------------
# the nanoBragg command
# ---------------------------------------------------------------------------

def _stage_formats(out, images: Images, files: Mapping[str, str], extras: Mapping[str, Any],
                   say: Callable[[str], None], noise: bool) -> None:
    """-cbffile and -nexus, from the counts image just made (noise or int)."""
    what = "noise" if noise else "int"
    if "cbffile" in files:
        say("writing %s as a miniCBF of the %s image" % (files["cbffile"], what))
        out.stage(files["cbffile"], [images.cbf_bytes(noise=noise, name=files["cbffile"])])
    if "nexus" in files:
        say("writing %s as NXmx HDF5 of the %s image" % (files["nexus"], what))
        out.stage_with(files["nexus"], lambda tmp: images.write_nexus(
            tmp, noise=noise, float_image=bool(extras.get("nexus_float")),
            compression=extras.get("nexus_compression"), atomic=False))


def _flushing(update: Callable[[int, int], None], flush: Callable[[], None]) -> Callable[[int, int], None]:
    def poll(done: int, total: int) -> None:
        update(done, total)
        flush()          # a pipe or a log file sees each line as it comes
    return poll


def _reference_meter(job: Job, say: Callable[[str], None]):
    """The reference's "N% done" lines for this run, or None (-noprogress, -printout)."""
    x = job.extras
    if not x.get("progress", True) or printout_request(x) is not None:
        return None
    from ._progress import ReferenceMeter
    g = job.setup.geometry
    return ReferenceMeter(g["fpixels"], g["spixels"], (g["roi_xmin"], g["roi_xmax"], g["roi_ymin"], g["roi_ymax"]),
                          say, mask=job.mask)


def printout_request(extras: Mapping[str, Any]) -> Optional[Tuple[int, int]]:
    """What -printout asks for: None (off), (F, S) for -printout_pixel F S
    (which the reference's flag matching also reads as -printout), (-1, -1)
    for every pixel (-printout alone, or a negative F)."""
    pp = extras.get("printout_pixel")
    if pp is not None:
        return (int(pp[0]), int(pp[1])) if pp[0] >= 0 else (-1, -1)
    return (-1, -1) if extras.get("printout") else None


def printout_text(rec: Mapping[str, Any], fpixels: int, lambda0_m: float, steps: int, pixel_value: float) -> str:
    """One pixel's lines of the reference's -printout (its formats), from a
    Tracer record; pixel_value: the pixel in the float image."""
    x, y, z = rec["pixel_pos_m"]
    twotheta = math.atan2(math.sqrt(y * y + z * z), x)
    h, k, l = rec["hkl"]
    h0, k0, l0 = rec["hkl0"]
    a, b, c = rec["a_m"], rec["b_m"], rec["c_m"]
    sp, fp = divmod(rec["pixel"], fpixels)
    lines = [
        "%4d %4d : stol = %g or %g" % (fp, sp, rec["stol_per_m"], math.sin(twotheta / 2.0) / (lambda0_m * 1e10)),
        "at %g %g %g" % (x, y, z),
        "hkl= %f %f %f  hkl0= %d %d %d" % (h, k, l, h0, k0, l0),
        " F_cell=%g  F_latt=%g   I = %g" % (rec["F_cell"], rec["F_latt"], rec["I"]),
        "I/steps %15.10g" % (rec["I"] / steps),
        "polar   %15.10g" % rec["polar"],
        "omega   %15.10g" % rec["omega_sr"],
        "capfrac %15.10g" % rec["capture_fraction"],
        "pixel   %15.10g" % pixel_value,
        "real-space cell vectors (Angstrom):",
        "     %-10s  %-10s  %-10s" % ("a", "b", "c"),
    ]
    for i, axis in enumerate("XYZ"):
        lines.append("%s: %11.8f %11.8f %11.8f" % (axis, a[i] * 1e10, b[i] * 1e10, c[i] * 1e10))
    return "\n".join(lines) + "\n"


class Printout:
    """The reference's -printout lines of a render, pixel by pixel in raster
    order: every rendered pixel (request (-1, -1)) or the one named (F, S),
    printed where the reference prints them (each pixel after its steps).
    Which pixels are rendered (ROI, mask), and the values a pixel's steps
    never set (the previous rendered pixel's, as in the single-threaded
    reference), are the engine's (nb_trace_pixels)."""

    def __init__(self, images: "Images", request: Optional[Tuple[int, int]], write: Callable[[str], None]):
        self._write = write
        self._next = self._end = 0              # raster range still to print
        if request is None:
            return
        st, setup = images.stats, images.setup
        g = setup.geometry
        self._W, self._lambda0_m, self._steps = g["fpixels"], g["lambda0_m"], setup.steps or 1
        self._image = memoryview(images.float_image).cast("B").cast("f")
        fallback = st["fallback_pixel"] if st.get("interpolation_fell_back") else -1
        self._tracer = setup.tracer(images.hkl, images.mask, fallback)
        fp, sp = request
        if fp < 0:
            self._end = g["fpixels"] * g["spixels"]
        elif 0 <= fp < g["fpixels"] and 0 <= sp < g["spixels"]:
            self._next = sp * self._W + fp
            self._end = self._next + 1

    def through(self, end: Optional[int] = None) -> None:
        """Print the pixels with raster index < end (None: all that are left),
        a detector row at a time."""
        stop = self._end if end is None else min(end, self._end)
        while self._next < stop:
            upto = min(stop, (self._next // self._W + 1) * self._W)
            for rec in self._tracer.trace(self._next, upto):
                self._write(printout_text(rec, self._W, self._lambda0_m, self._steps, self._image[rec["pixel"]]))
            self._next = upto


def run_command(params: Mapping[str, Any], write: Callable[[str], None], flush: Callable[[], None]) -> int:
    """The whole command: check the paths, read the inputs, print the
    reference's messages, render and write the files.  write(text) prints to
    stdout, flush() flushes it.  Raises UsageError, ValueError, OSError,
    KeyboardInterrupt as they come."""
    def say(line: str) -> None:
        write(line + "\n")

    outputs = check_paths(params)
    job = Job(params, cli=True)
    files = {flag.lstrip("-"): path for flag, path in outputs.items()}

    if job.hkl_from_text:
        job.write_dump()
    for line in job.log_lines():
        say(line)
    if job.setup.warn_pix0_ignored and not any("pix0_vector ignored" in l for l in job.setup.log.splitlines()):
        say("WARNING: -pix0_vector ignored because custom detector vectors (-fdet/-sdet/-odet_vector) are given")
    flush()

    # progress lines while the image renders, from the engine's poll: the
    # count stops at an interpolation fall-back, whose warning comes next
    meter = _reference_meter(job, say)
    images = job.render(progress=None if meter is None else _flushing(meter.update, flush),
                        noise="noisefile" in files, noise_later=False)
    st = images.stats
    # -printout: the lines of each pixel after its steps, so the pixels
    # before an interpolation fall-back come before its warning
    printout = Printout(images, images.printout, write)
    printout.through(st["fallback_pixel"] if st.get("interpolation_fell_back") else None)
    if st.get("interpolation_fell_back"):
        h, k, l = st["fallback_hkl"]
        h0, k0, l0 = st["fallback_hkl0"]
        say("WARNING: out of range for three point interpolation: h,k,l,h0,k0,l0: %g,%g,%g,%d,%d,%d "
            % (h, k, l, h0, k0, l0))
        write("WARNING: further warnings will not be printed! ")   # no newline, as the reference
    printout.through()
    if meter is not None:
        meter.finish()
    say("")

    omega = st["solid_angle"]
    say("solid angle subtended by detector = %g steradian ( %g%% sphere)" % (omega, 100 * omega / 4 / math.pi))

    # each image goes to a temporary file as soon as it is made (and is then
    # freed); they replace the old files together at the end, so a failed or
    # interrupted run changes nothing
    with _io.OutputSet(before_direct_write=flush) as out:
        image = images.float_image
        say("writing %s as %d %d-byte floats" % (files["floatfile"], st["pixels"], 4))
        out.stage(files["floatfile"], [image])

        say("max_I = %g  at %g %g" % (st["max_I"], st["max_I_x"], st["max_I_y"]))
        say("mean= %g rms= %g rmsd= %g" % (st["mean"], st["rms"], st["rmsd"]))
        adc_header = bool(job.extras.get("adc_header", False))
        counts_from_noise = "noisefile" in files      # CBF and NeXus hold the noise image, else the int image
        int_img, int_scale = images.int_image()
        say("intfile_scale = %g" % int_scale)
        say("writing %s as %d-byte integers" % (files["intfile"], 2))
        out.stage(files["intfile"], [images.smv_header(adc_header), int_img])
        del int_img
        if not counts_from_noise:
            _stage_formats(out, images, files, job.extras, say, noise=False)
        images.forget("int")

        if "pgmfile" in files:
            pgm_img, pgm_scale = images.pgm_image()
            say("pgm_scale = %g" % pgm_scale)
            say("writing %s as %d-byte integers" % (files["pgmfile"], 1))
            out.stage(files["pgmfile"], [job.setup.pgm_header(pgm_scale), pgm_img])
            del pgm_img
            images.forget("pgm")

        if "noisefile" in files:
            noise, photons, overloads = images.noise_image()
            say("%.0f photons on noise image (%d overloads)" % (photons, overloads))
            say("writing %s as %d-byte integers" % (files["noisefile"], 2))
            out.stage(files["noisefile"], [images.smv_header(adc_header), noise])
            del noise
            _stage_formats(out, images, files, job.extras, say, noise=True)
            images.forget("noise")
        if "pngfile" in files:
            say("writing %s as an 8-bit PNG preview" % files["pngfile"])
            from .images import png_bytes
            import numpy as np
            out.stage(files["pngfile"], [png_bytes(np.asarray(images.float_image))])
        out.commit()
    flush()
    return 0


_VEC_NAMES = {"fdet": "fdet_vector", "sdet": "sdet_vector", "odet": "odet_vector", "beam": "beam_vector",
              "polar_vec": "polar_vector", "spindle": "spindle_axis", "twotheta_axis": "twotheta_axis"}


def friendly_geometry(g: Dict[str, Any]) -> Dict[str, Any]:
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
