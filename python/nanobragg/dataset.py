"""Datasets: a rotation series or a set of stills from one description file,
rendered serially or on dask.distributed, resumable, the same bytes either way.

The description (TOML, or JSON with the same keys)::

    args = "-cell 78 78 38 90 90 90 -default_F 100 -N 10 -distance 100 -detpixels 512"
    frames = 100
    seed = 1
    output = "nexus"             # nexus (default), cbf or smv
    images = ["counts"]          # counts (Poisson noise), int (noiseless), float
    compression = "bitshuffle"   # nexus only: none, gzip[:N], lzf, bitshuffle, lz4

    [rotation]                   # frame i covers phi_start + i*osc over osc (degrees);
    phi_start = 0                # either key may be left out: then -phi / -osc of args
    osc = 0.5

    # or, instead of [rotation]:
    [stills]
    random_orientation = true    # a uniformly random crystal orientation per shot
    mosaic = {uniform = [0.05, 0.3]}          # any simulate() keyword: a value or a
    wavelength = {normal = [1.0, 0.002]}      # distribution (uniform, normal, lognormal,
    N = {integers = [5, 20]}                  # integers [lo, hi], choice [...])

Every frame's random numbers come from numpy SeedSequence(seed, spawn_key=(i, key)):
frame i depends on (description, i) only, never on the workers or their order.

Run ``nanobragg-dataset SPEC --out DIR [--workers N] [--scheduler ADDRESS]``;
``DIR/master.h5:/entry/data/data[i]`` (nexus) or ``DIR/frame_00001.img`` (.cbf)
onward, plus ``DIR/frames.csv`` (each frame's parameters and seeds) and
``DIR/dataset.json`` (the description, which a later run into DIR must match).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = ["Spec", "DatasetError", "load_spec", "frame_keywords", "render_frame", "write_frame",
           "run", "main"]

OUTPUTS = ("nexus", "cbf", "smv")
IMAGES = ("counts", "int", "float")
DISTRIBUTIONS = ("uniform", "normal", "lognormal", "integers", "choice")
SPEC_FILE = "dataset.json"
TABLE_FILE = "frames.csv"
MASTER_FILE = "master.h5"
DATA_DIR = "data"


class DatasetError(ValueError):
    """A description or an output folder that cannot be used (one-line message)."""


@dataclass(frozen=True)
class Spec:
    """A validated dataset description.  ``canonical`` (JSON) identifies it."""
    args: str
    frames: int
    seed: int
    kind: str                              # "rotation" or "stills"
    phi_start: Optional[float] = None      # rotation (None: -phi of args)
    osc: Optional[float] = None            # rotation (None: -osc of args)
    random_orientation: bool = False       # stills
    vary: Tuple[Tuple[str, Any], ...] = () # stills: (keyword, value or distribution)
    output: str = "nexus"
    images: Tuple[str, ...] = ("counts",)
    compression: Optional[str] = None
    background: Optional[str] = None       # companion: flags for nanobragg.background
    noisify: Optional[str] = None          # companion: flags for nanobragg.noisify
    frames_per_file: int = 1               # nexus: frames in one data file (one task renders them)
    source_text: str = field(default="", compare=False)

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"args": self.args, "frames": self.frames, "seed": self.seed,
                             "output": self.output, "images": list(self.images)}
        if self.compression is not None:
            d["compression"] = self.compression
        if self.frames_per_file != 1:
            d["frames_per_file"] = self.frames_per_file
        if self.background is not None:
            d["background"] = {"args": self.background}
        if self.noisify is not None:
            d["noisify"] = {"args": self.noisify}
        if self.kind == "rotation":
            rot = {}
            if self.phi_start is not None:
                rot["phi_start"] = self.phi_start
            if self.osc is not None:
                rot["osc"] = self.osc
            d["rotation"] = rot
        else:
            st: Dict[str, Any] = {"random_orientation": self.random_orientation}
            st.update(dict(self.vary))
            d["stills"] = st
        return d

    @property
    def canonical(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


# -- the description ------------------------------------------------------------

def _toml_loads(text: str) -> Dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - 3.9/3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise DatasetError("TOML descriptions need tomli on Python < 3.11: pip install tomli") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DatasetError(f"not valid TOML: {e}") from None


def load_spec(source: Any) -> Spec:
    """A description from a path (.toml or .json), TOML/JSON text, or a dict."""
    text = ""
    if isinstance(source, Mapping):
        raw = dict(source)
        name = "the description"
    else:
        path = os.fspath(source)
        name = path
        if not os.path.exists(path) and ("\n" in path or "=" in path or path.lstrip().startswith("{")):
            text, name = path, "the description"
        else:
            try:
                with open(path, "r", encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as e:
                raise DatasetError(f"cannot read the description '{path}': {e.strerror or e}") from None
            except UnicodeDecodeError:
                raise DatasetError(f"{path}: not a text file") from None
        if text.lstrip().startswith("{"):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{name}: not valid JSON: {e}") from None
        else:
            try:
                raw = _toml_loads(text)
            except DatasetError as e:
                raise DatasetError(f"{name}: {e}") from None
        if not isinstance(raw, dict):
            raise DatasetError(f"{name}: expected a table of keys")
    try:
        spec = _validate(raw)
    except DatasetError as e:
        raise DatasetError(f"{name}: {e}") from None
    return Spec(**{**spec.__dict__, "source_text": text})


def _number(v, what: str, *, integer: bool = False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise DatasetError(f"{what}: expected {'an integer' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(v):
        raise DatasetError(f"{what}: not finite")
    return v


def _validate(raw: Dict[str, Any]) -> Spec:
    known = {"args", "frames", "seed", "rotation", "stills", "output", "images", "compression", "background",
             "noisify", "frames_per_file"}
    extra = sorted(set(raw) - known)
    if extra:
        raise DatasetError(f"unknown key '{extra[0]}' (keys: {', '.join(sorted(known))})")
    for k in ("args", "frames", "seed"):
        if k not in raw:
            raise DatasetError(f"missing key '{k}'")
    args = raw["args"]
    if not isinstance(args, str):
        raise DatasetError("args: expected a string of nanoBragg flags")
    frames = _number(raw["frames"], "frames", integer=True)
    if frames < 1:
        raise DatasetError("frames: at least 1")
    seed = _number(raw["seed"], "seed", integer=True)
    if seed < 0:
        raise DatasetError("seed: must be >= 0")
    output = raw.get("output", "nexus")
    if output not in OUTPUTS:
        raise DatasetError(f"output: {output!r} is not one of {', '.join(OUTPUTS)}")
    images = raw.get("images", ["counts"])
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not images or any(i not in IMAGES for i in images):
        raise DatasetError(f"images: a list of {', '.join(IMAGES)}")
    images = tuple(i for i in IMAGES if i in images)
    if output == "nexus" and "counts" in images and "int" in images:
        raise DatasetError("images: a NeXus dataset holds counts or int (and float), not both")
    compression = raw.get("compression")
    if compression is not None:
        if output != "nexus":
            raise DatasetError("compression: only for output = \"nexus\"")
        from .nexus import compression_options, NexusError
        try:
            compression_options(compression)
        except NexusError as e:
            raise DatasetError(str(e)) from None
    fpf = _number(raw.get("frames_per_file", 1), "frames_per_file", integer=True)
    if fpf < 1:
        raise DatasetError("frames_per_file: at least 1")
    if fpf != 1 and output != "nexus":
        raise DatasetError("frames_per_file: only for output = \"nexus\" (cbf/smv: one file per frame)")
    companions = {}
    for name, program in (("background", "nonBragg"), ("noisify", "noisify")):
        c = raw.get(name)
        if c is not None:
            if not isinstance(c, dict) or set(c) - {"args"} or not isinstance(c.get("args"), str):
                raise DatasetError(f"{name}: a table with args = \"<{program} flags>\"")
            companions[name] = c["args"]
    background, noisify = companions.get("background"), companions.get("noisify")
    if ("rotation" in raw) == ("stills" in raw):
        raise DatasetError("give exactly one of [rotation] or [stills]")
    base = _base_keywords(args)
    kw: Dict[str, Any] = dict(args=args, frames=frames, seed=seed, output=output, images=images,
                              compression=compression, background=background, noisify=noisify,
                              frames_per_file=fpf)
    if "rotation" in raw:
        rot = raw["rotation"]
        if not isinstance(rot, dict) or set(rot) - {"phi_start", "osc"}:
            raise DatasetError("rotation: a table with phi_start and osc (degrees)")
        phi = rot.get("phi_start")
        osc = rot.get("osc")
        if phi is not None:
            phi = float(_number(phi, "rotation.phi_start"))
        if osc is not None:
            osc = float(_number(osc, "rotation.osc"))
            if osc < 0:
                raise DatasetError("rotation.osc: must be >= 0")
        spec = Spec(kind="rotation", phi_start=phi, osc=osc, **kw)
    else:
        st = raw["stills"]
        if not isinstance(st, dict):
            raise DatasetError("stills: a table")
        ro = st.get("random_orientation", False)
        if not isinstance(ro, bool):
            raise DatasetError("stills.random_orientation: true or false")
        vary = []
        for key in sorted(k for k in st if k != "random_orientation"):
            vary.append((key, _check_distribution(key, st[key])))
        if ro and ("misset" in dict(vary)):
            raise DatasetError("stills: random_orientation and misset together")
        spec = Spec(kind="stills", random_orientation=ro, vary=tuple(vary), **kw)
    # every frame's keywords must be ones simulate() knows, with valid values
    from .params import normalize
    try:
        normalize({**base, **_drawn(spec, 0)[0]})
    except (TypeError, ValueError) as e:
        raise DatasetError(str(e).replace("simulate() got an unexpected keyword argument", "unknown keyword")) from None
    for name, flags in companions.items():
        _check_companion(name, flags, output)
    return spec


def _check_distribution(key: str, v):
    what = f"stills.{key}"
    if isinstance(v, dict):
        if len(v) != 1 or next(iter(v)) not in DISTRIBUTIONS:
            raise DatasetError(f"{what}: a distribution is one of {{{' | '.join(d + ' = [...]' for d in DISTRIBUTIONS)}}}")
        (name, p), = v.items()
        if not isinstance(p, list) or not p:
            raise DatasetError(f"{what}.{name}: expected a list")
        if name == "choice":
            return {name: p}
        if len(p) != 2:
            raise DatasetError(f"{what}.{name}: expected two numbers")
        a, b = (_number(x, f"{what}.{name}", integer=(name == "integers")) for x in p)
        if name in ("uniform", "integers") and b < a:
            raise DatasetError(f"{what}.{name}: the upper bound is below the lower one")
        if name in ("normal", "lognormal") and b < 0:
            raise DatasetError(f"{what}.{name}: the spread must be >= 0")
        return {name: [a, b]}
    return v


def _base_keywords(args: str) -> Dict[str, Any]:
    from .params import args_to_params, UsageError
    try:
        kw = args_to_params(shlex.split(args))
    except (UsageError, ValueError) as e:
        raise DatasetError(f"args: {e}") from None
    for k in ("floatfile", "intfile", "noisefile", "pgmfile", "noiseimage", "image", "imgfile"):
        kw.pop(k, None)  # the dataset writes its own files
    return kw


# -- one frame --------------------------------------------------------------------

def _seq(spec: Spec, i: int, name: str):
    import numpy as np
    return np.random.SeedSequence(entropy=spec.seed, spawn_key=(i, zlib.crc32(name.encode())))


def _seed31(spec: Spec, i: int, name: str) -> int:
    import numpy as np
    return int(_seq(spec, i, name).generate_state(1, np.uint32)[0] >> 1) or 1


def _draw(rng, key: str, d):
    if not isinstance(d, dict):
        return d
    (name, p), = d.items()
    if name == "uniform":
        return float(rng.uniform(p[0], p[1]))
    if name == "normal":
        return float(rng.normal(p[0], p[1]))
    if name == "lognormal":
        return float(rng.lognormal(p[0], p[1]))
    if name == "integers":
        return int(rng.integers(p[0], p[1], endpoint=True))
    v = p[int(rng.integers(0, len(p)))]
    return v


def _random_rotation(rng) -> "np.ndarray":
    """A uniformly random rotation matrix (from a uniform unit quaternion)."""
    import numpy as np
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def misset_from_matrix(R) -> Tuple[float, float, float]:
    """nanoBragg's -misset angles (degrees) of a rotation matrix: the reference
    turns the crystal about x, then y, then z, so R = Rz Ry Rx."""
    ry = math.asin(max(-1.0, min(1.0, -float(R[2][0]))))
    rx = math.atan2(float(R[2][1]), float(R[2][2]))
    rz = math.atan2(float(R[1][0]), float(R[0][0]))
    return (math.degrees(rx), math.degrees(ry), math.degrees(rz))


def _drawn(spec: Spec, i: int) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(keywords that vary for frame i, the record of frame i's parameters and seeds)."""
    import numpy as np
    kw: Dict[str, Any] = {}
    rec: Dict[str, Any] = {"frame": i + 1, "noise_seed": _seed31(spec, i, "noise")}
    if spec.kind == "rotation":
        base = _base_keywords(spec.args)
        phi0 = spec.phi_start if spec.phi_start is not None else float(base.get("phi", 0.0))
        osc = spec.osc if spec.osc is not None else float(base.get("osc", 0.0))
        kw["phi"] = phi0 + i * osc
        kw["osc"] = osc
        rec["phi_deg"] = kw["phi"]
        rec["osc_deg"] = kw["osc"]
        return kw, rec
    # stills: one crystal per shot, so its mosaic domains are drawn anew too
    kw["mosaic_seed"] = _seed31(spec, i, "mosaic_seed")
    rec["mosaic_seed"] = kw["mosaic_seed"]
    if spec.random_orientation:
        m = misset_from_matrix(_random_rotation(np.random.default_rng(_seq(spec, i, "misset"))))
        kw["misset"] = m
        rec["misset_x_deg"], rec["misset_y_deg"], rec["misset_z_deg"] = m
    for key, d in spec.vary:
        v = _draw(np.random.default_rng(_seq(spec, i, key)), key, d)
        kw[key] = v
        rec[key] = v if not isinstance(v, (list, tuple)) else " ".join(str(x) for x in v)
    return kw, rec


def frame_keywords(spec: Spec, i: int) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """simulate() keywords of frame i (0-based) and its record for the table."""
    if not 0 <= i < spec.frames:
        raise DatasetError(f"frame {i + 1} is outside 1..{spec.frames}")
    base = _base_keywords(spec.args)
    kw, rec = _drawn(spec, i)
    # the varied keywords go last, so that they win over the same flag in args
    for k in kw:
        base.pop(k, None)
    base.update(kw)
    return base, rec


def render_frame(spec: Spec, i: int, threads: int = 1) -> Dict[str, Any]:
    """Render frame i: {"counts"/"int"/"float": arrays asked for, "result", "record"}."""
    from . import simulate
    kw, rec = frame_keywords(spec, i)
    kw["threads"] = threads
    r = simulate(**kw)
    out: Dict[str, Any] = {"result": r, "record": rec}
    photons = r.float_image
    if spec.background is not None:            # spots + amorphous scattering (nonBragg)
        bg = _background(spec.background)
        if bg.shape != photons.shape:
            raise DatasetError(f"background: its detector is {bg.shape[1]}x{bg.shape[0]} pixels, the frame's "
                               f"{photons.shape[1]}x{photons.shape[0]}: give nonBragg the same -detpixels/-pixel")
        photons = photons + bg
    if "float" in spec.images:
        out["float"] = photons
    if spec.noisify is not None:               # the detector model (noisify), seeded per frame
        from .companions.api import noisify_from_args
        det = noisify_from_args(photons, shlex.split(spec.noisify) + ["-seed", str(rec["noise_seed"])],
                                nthreads=threads)
        if "int" in spec.images:
            out["int"] = det.noiseless
        if "counts" in spec.images:
            out["counts"] = det.image
    else:                                      # nanoBragg's own scaling and Poisson noise
        if "int" in spec.images:
            out["int"] = r.int_image() if photons is r.float_image else r.int_image_of(photons)
        if "counts" in spec.images:
            out["counts"] = (r.noise_image(rec["noise_seed"]) if photons is r.float_image
                             else r.noise_image_of(photons, rec["noise_seed"]))
    return out


def _check_companion(name: str, flags: str, output: str) -> None:
    """[background] (nonBragg's flags) and [noisify] (noisify's flags) are
    checked with their commands' own flag tables before anything renders."""
    from .companions import noisify as _nz, nonbragg as _nb
    from .params import UsageError
    mod = _nb if name == "background" else _nz
    try:
        s = mod.settings_from_args(shlex.split(flags))
    except (UsageError, ValueError) as e:
        raise DatasetError(f"{name}.args: {e}") from None
    if name == "background" and "table" not in s:
        raise DatasetError("background.args: needs -stol FILE (or a shipped table: "
                           + ", ".join(_nb.shipped_tables()) + ")")
    if name == "noisify" and s.get("bits") == 32 and output != "nexus":
        raise DatasetError("noisify.args: -bits 32 counts need output = \"nexus\" (SMV and CBF frames are 16-bit)")
    if output == "cbf":
        raise DatasetError(f"{name}: output = \"cbf\" takes nanoBragg's own counts; use \"nexus\" or \"smv\"")


_BACKGROUNDS: Dict[str, Any] = {}


def _background(flags: str):
    """The [background] image: the same for every frame, rendered once per process."""
    if flags not in _BACKGROUNDS:
        from .companions.api import background_from_args
        _BACKGROUNDS[flags] = background_from_args(shlex.split(flags), nthreads=1)
    return _BACKGROUNDS[flags]


def block_of(spec: Spec, i: int) -> Tuple[int, int]:
    """(first frame, number of frames) of the file that holds frame i."""
    k = spec.frames_per_file
    first = (i // k) * k
    return first, min(k, spec.frames - first)


def frame_name(spec: Spec, i: int) -> str:
    """The file that holds frame i (relative to the output folder): it exists
    only once the frame (with the others of its file) is complete."""
    if spec.output == "nexus":
        return os.path.join(DATA_DIR, f"frame_{block_of(spec, i)[0] + 1:06d}.h5")
    if spec.images == ("float",):
        return f"frame_{i + 1:05d}.bin"
    return f"frame_{i + 1:05d}.{'cbf' if spec.output == 'cbf' else 'img'}"


_GEOMETRY_KEYS = ("fdet", "sdet", "odet", "beam", "spindle", "pix0_m", "pixel_m", "distance_m",
                  "close_distance_m", "lambda0_m", "Fbeam_m", "Sbeam_m", "fpixels", "spixels",
                  "phi0_rad", "osc_rad", "thick_m", "exposure_s", "flux", "convention")


def _geometry_record(g: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: (list(g[k]) if isinstance(g[k], tuple) else g[k]) for k in _GEOMETRY_KEYS if k in g}


def write_frame(spec: Spec, out_dir: str, i: int, threads: int = 1) -> Dict[str, Any]:
    """Render frame i (for nexus: the frames of its data file, i being the
    first) and publish its file(s) in out_dir atomically.  Returns
    {"frame", "frames", "seconds"}: small, to travel back from a worker."""
    t0 = time.perf_counter()
    path = os.path.join(out_dir, frame_name(spec, i))
    if spec.output == "nexus":
        import numpy as np
        from . import nexus
        first, count = block_of(spec, i)
        imgs = [render_frame(spec, j, threads) for j in range(first, first + count)]
        main = "counts" if "counts" in spec.images else "int" if "int" in spec.images else "float"
        stack = np.stack([m[main] for m in imgs])
        fl = np.stack([m["float"] for m in imgs]) if main != "float" and "float" in spec.images else None
        geoms = [_geometry_record(m["result"].geometry) for m in imgs]
        nexus.write_data_file(path, stack, float_image=fl, compression=spec.compression,
                              attrs={"geometry": json.dumps(geoms, sort_keys=True),
                                     "record": json.dumps([m["record"] for m in imgs], sort_keys=True)})
        return {"frame": first, "frames": count, "seconds": time.perf_counter() - t0}
    import numpy as np
    img = render_frame(spec, i, threads)
    r = img["result"]
    main_image = img.get("counts", img.get("int"))
    from . import _io
    base = path.rsplit(".", 1)[0]
    with _io.OutputSet() as out:   # the frame's own file is staged last: it marks the frame complete
        if "float" in img:
            out.stage(base + ".bin", [np.ascontiguousarray(img["float"], dtype=np.float32)])
        if spec.output == "smv":            # the frame's images under nanoBragg's header of its geometry
            if "int" in img and "counts" in img:
                out.stage(base + ".int.img", [r.smv_header(), np.ascontiguousarray(img["int"], dtype=np.uint16)])
            if main_image is not None:
                out.stage(path, [r.smv_header(), np.ascontiguousarray(main_image, dtype=np.uint16)])
        elif main_image is not None:      # miniCBF (images.py): the counts less the -adc pedestal
            if "int" in img and "counts" in img:
                out.stage(base + ".int.cbf", [r.cbf_bytes(noise=False, name=base + ".int.cbf")])
            out.stage(path, [r.cbf_bytes(noise="counts" in img, seed=img["record"]["noise_seed"], name=path)])
        out.commit()
    return {"frame": i, "frames": 1, "seconds": time.perf_counter() - t0}


# -- the output folder --------------------------------------------------------------

def _table_bytes(spec: Spec) -> bytes:
    rows = [frame_keywords(spec, i)[1] for i in range(spec.frames)]
    cols: List[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue().encode()


def prepare(spec: Spec, out_dir: str) -> List[int]:
    """Create or check the output folder; return the units (first frame of
    each file) still to render.

    A folder written by another description is refused; temporary files left
    by an interrupted run are removed (frames are published by rename, so a
    frame's file is either complete or absent)."""
    from . import _io
    out_dir = os.fspath(out_dir)
    spec_path = os.path.join(out_dir, SPEC_FILE)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        try:
            with open(spec_path, "r", encoding="utf-8") as fh:
                old = json.load(fh)
        except (OSError, ValueError):
            raise DatasetError(f"{out_dir}: not empty and not a nanobragg dataset (no readable {SPEC_FILE}); "
                               f"give a new or empty folder") from None
        if json.dumps(old.get("description"), sort_keys=True, separators=(",", ":")) != spec.canonical:
            raise DatasetError(f"{out_dir}: holds a dataset of a different description; give a new folder "
                               f"(or the same description to resume)")
    else:
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as e:
            raise DatasetError(f"cannot create the output folder '{out_dir}': {e.strerror or e}") from None
    if spec.output == "nexus":
        os.makedirs(os.path.join(out_dir, DATA_DIR), exist_ok=True)
    for d in (out_dir, os.path.join(out_dir, DATA_DIR)):
        if os.path.isdir(d):
            for name in os.listdir(d):
                if name.startswith(".") and name.endswith(".tmp"):
                    try:
                        os.unlink(os.path.join(d, name))
                    except OSError:
                        pass
    record = {"nanobragg_dataset": 1, "description": spec.to_dict()}
    _io.atomic_write(spec_path, [json.dumps(record, sort_keys=True, indent=1).encode() + b"\n"])
    if spec.source_text:
        _io.atomic_write(os.path.join(out_dir, "dataset.toml" if not spec.source_text.lstrip().startswith("{")
                                      else "dataset.source.json"), [spec.source_text.encode()])
    _io.atomic_write(os.path.join(out_dir, TABLE_FILE), [_table_bytes(spec)])
    return [i for i in _units(spec) if not os.path.exists(os.path.join(out_dir, frame_name(spec, i)))]


def _units(spec: Spec) -> List[int]:
    """The first frame of each file: the unit of work, of publishing and of resuming."""
    return list(range(0, spec.frames, spec.frames_per_file))


def finish(spec: Spec, out_dir: str) -> None:
    """Once every frame is present: the NXmx master over the per-frame files."""
    if spec.output != "nexus":
        return
    from . import nexus
    import h5py
    geoms = []
    for i in _units(spec):
        with h5py.File(os.path.join(out_dir, frame_name(spec, i)), "r") as f:
            geoms.extend(json.loads(f["/entry/data"].attrs["geometry"]))
            if i == 0:
                dtype = f["/entry/data/data"].dtype
                has_float = "float_image" in f["/entry/data"]
    g0 = geoms[0]
    stills = spec.kind == "stills"
    phi = [math.degrees(g["phi0_rad"]) for g in geoms]
    osc = 0.0 if stills else math.degrees(g0.get("osc_rad", 0.0))
    wl = [g["lambda0_m"] for g in geoms]
    try:
        nexus.write_master(os.path.join(out_dir, MASTER_FILE), g0,
                           [(frame_name(spec, i).replace(os.sep, "/"), block_of(spec, i)[1]) for i in _units(spec)],
                           phi_deg=phi, osc_deg=osc, stills=stills,
                           wavelength_m=wl if len(set(wl)) > 1 else wl[0], dtype=dtype, float_image=has_float,
                           per_frame=geoms if stills else None,
                           extra={"description": spec.canonical, "frames_table": _table_bytes(spec).decode()})
    except nexus.NexusError as e:
        raise DatasetError(f"every frame is rendered, but there is no master file: {e}") from None


# -- running -------------------------------------------------------------------------

@dataclass
class Summary:
    frames: int
    rendered: List[int]
    skipped: int
    failed: Dict[int, str]
    seconds: float
    workers: int

    def line(self) -> str:
        n = len(self.rendered)
        rate = n / self.seconds if self.seconds > 0 else float("inf")
        s = (f"{n} frame(s) rendered, {self.skipped} already present, {len(self.failed)} failed, of {self.frames}; "
             f"{self.seconds:.1f} s on {self.workers} worker(s), {rate:.2f} frames/s")
        if self.failed:
            i, msg = sorted(self.failed.items())[0]
            s += f"; frame {i + 1}: {msg}"
        return s

    @property
    def ok(self) -> bool:
        return not self.failed


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="frame", dynamic_ncols=True, file=sys.stderr,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]")


def run(spec: Any, out_dir: str, *, workers: Optional[int] = None, scheduler: Optional[str] = None,
        threads: int = 1, frames: Optional[Iterable[int]] = None, progress: bool = False,
        retries: int = 2, processes: bool = True) -> Summary:
    """Render the frames of a description that out_dir does not hold yet.

    workers=0: in this process, in order.  Otherwise a dask.distributed
    LocalCluster of ``workers`` processes (None: one per core), or the cluster
    at ``scheduler``.  threads: render threads per frame.  frames: 0-based
    indices to render (default all).  A failed frame is retried ``retries``
    times, then reported in the summary."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    out_dir = os.fspath(out_dir)
    if frames is not None:
        want = sorted(set(int(i) for i in frames))
        bad = [i for i in want if not 0 <= i < spec.frames]
        if bad:
            raise DatasetError(f"frame {bad[0] + 1} is outside 1..{spec.frames}")
    todo = prepare(spec, out_dir)
    if frames is not None:
        units = {block_of(spec, i)[0] for i in want}
        todo = [i for i in todo if i in units]
        total = sum(block_of(spec, i)[1] for i in units)
    else:
        total = spec.frames
    pending = sum(block_of(spec, i)[1] for i in todo)
    bar = _progress(total, total - pending, progress)
    t0 = time.perf_counter()
    rendered: List[int] = []
    failed: Dict[int, str] = {}
    nworkers = 0
    try:
        if todo and workers == 0 and scheduler is None:
            nworkers = 1
            for i in todo:
                first, count = block_of(spec, i)
                try:
                    write_frame(spec, out_dir, i, threads)
                    rendered.extend(range(first, first + count))
                except Exception as e:  # reported with the frame, as a worker's would be
                    for j in range(first, first + count):
                        failed[j] = f"{type(e).__name__}: {e}"
                if bar is not None:
                    bar.update(count)
        elif todo:
            nworkers = _run_dask(spec, out_dir, todo, workers, scheduler, threads, retries, processes,
                                 rendered, failed, bar)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    complete = all(os.path.exists(os.path.join(out_dir, frame_name(spec, i))) for i in _units(spec))
    if complete:
        finish(spec, out_dir)
    return Summary(total, sorted(rendered), total - pending, failed, seconds, nworkers)


def _local_cluster_config():
    """dask settings for the LocalCluster this module starts.

    On Linux its worker processes start by fork: a spawned worker re-imports
    Python, dask and the engine (about half a second on this class of
    machine, paid by every run), a forked one starts from this process (an
    explicit DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD, and every
    other platform, keep dask's choice).  The system and memory monitors,
    which feed only the dashboard's plots here, sample less often: on a
    small machine their CPU is taken from the renders."""
    import dask
    config = {"distributed.admin.system-monitor.interval": "2s",
              "distributed.admin.system-monitor.disk": False,
              "distributed.worker.memory.monitor-interval": "1s"}
    if sys.platform.startswith("linux") and "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD" not in os.environ:
        config["distributed.worker.multiprocessing-method"] = "fork"
    return dask.config.set(config)


class _DeferredSignals:
    """Ctrl-C, SIGTERM and SIGHUP, deferred to ``check()`` while dask runs.

    A KeyboardInterrupt raised at an arbitrary point leaves dask's state half
    changed: inside its start-up or tear-down the workers are half made or
    half closed, and dask's exit hook then fails to close them, with a
    traceback; inside a wait it can break a lock.  So a signal is only noted,
    and raised where the run can unwind cleanly.  A second signal acts at
    once, so that a start-up that hangs can still be stopped.  Only in the
    main thread, and only for signals whose handler raises (Python's for
    SIGINT, the command's for SIGTERM and SIGHUP): a host's own handler is
    left alone."""

    def __init__(self) -> None:
        self.previous: Dict[int, Any] = {}
        self.pending: Optional[int] = None

    def __enter__(self) -> "_DeferredSignals":
        import signal
        from ._console import _stop
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                if signal.getsignal(sig) in (signal.default_int_handler, _stop):
                    self.previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                break
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.pending is None:
            self.pending = signum
        else:
            self.previous[signum](signum, frame)

    def check(self) -> None:
        """Raise what the first signal's own handler raises, if one came."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            self.previous[signum](signum, None)

    def __exit__(self, exc_type, *exc) -> None:
        import signal
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if exc_type is None:
            self.check()


def _run_dask(spec, out_dir, todo, workers, scheduler, threads, retries, processes, rendered, failed, bar) -> int:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise DatasetError("parallel runs need dask.distributed: pip install 'nanobragg[dataset]' "
                           "(or --workers 0 for one process)") from None
    import logging
    with _DeferredSignals() as signals:
        cluster = client = None
        try:
            if scheduler is not None:
                try:
                    client = Client(scheduler, timeout="20s")
                except (OSError, TimeoutError) as e:
                    raise DatasetError(f"cannot reach the dask scheduler at {scheduler}: {e}") from None
            else:
                n = workers if workers else (os.cpu_count() or 1)
                # the workers' own logs stay quiet: a task's error comes back with
                # its future and is reported in the summary; the scheduler's HTTP
                # server takes a free port (8787 may be another cluster's)
                with _local_cluster_config():
                    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                                           dashboard_address=":0", silence_logs=logging.CRITICAL)
                client = Client(cluster)
            signals.check()
            nworkers = len(client.scheduler_info().get("workers", {})) or (workers or 1)
            # a key of its own per task: a long-lived cluster must never hand back
            # the result of an earlier run (another folder) instead of rendering
            run_id = uuid.uuid4().hex[:12]
            # one message for the whole batch rather than one per frame
            submitted = client.map(write_frame, [spec] * len(todo), [out_dir] * len(todo), todo, [threads] * len(todo),
                                   key=[f"nanobragg-frame-{i + 1}-{run_id}" for i in todo], retries=retries, pure=False)
            futures = dict(zip(submitted, todo))
            done = as_completed(futures)
            while not done.is_empty():
                batch = done.next_batch(block=False)
                if not batch:  # a signal is raised here, between waits
                    signals.check()
                    time.sleep(0.02)
                for fut in batch:
                    first, count = block_of(spec, futures[fut])
                    # a finished frame's small result stays on its worker:
                    # fetching it costs the client a round trip per frame,
                    # which on a small machine takes CPU from the workers
                    if fut.status == "finished":
                        rendered.extend(range(first, first + count))
                    else:  # a worker's error, after its retries (or the task was lost)
                        e = fut.exception()
                        for j in range(first, first + count):
                            failed[j] = f"{type(e).__name__}: {e}"
                    fut.release()
                    if bar is not None:
                        bar.update(count)
        except BaseException:
            # interrupted (Ctrl-C) or failed: the tear-down of tasks in flight makes
            # dask and tornado log tracebacks that say nothing to the user
            for name in ("distributed", "tornado", "asyncio"):
                logging.getLogger(name).setLevel(logging.CRITICAL + 1)
            raise
        finally:
            try:
                if client is not None:
                    client.close()
            finally:
                if cluster is not None:
                    cluster.close()
        return nworkers


# -- command -------------------------------------------------------------------------

def _frames_arg(text: str) -> List[int]:
    out: List[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        try:
            lo = int(a)
            hi = int(b) if b else lo
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}': frames are numbers from 1, e.g. 1,5-8") from None
        out.extend(range(lo - 1, hi))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nanobragg-dataset",
                                description="Render a rotation series or a set of stills from a description file.")
    p.add_argument("spec", help="the description (TOML or JSON)")
    p.add_argument("--out", required=True, help="output folder (created; an existing one is resumed)")
    p.add_argument("--workers", type=int, default=None,
                   help="dask LocalCluster worker processes (default: one per core; 0: this process)")
    p.add_argument("--scheduler", help="address of an existing dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--threads", type=int, default=1, help="render threads per frame (default 1)")
    p.add_argument("--frames", type=_frames_arg, help="only these frames (1-based), e.g. 1,5-8")
    p.add_argument("--retries", type=int, default=2, help="retries of a failed frame (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.workers is not None and a.workers < 0:
        p.error("--workers: 0 or more")
    if a.threads < 0:
        p.error("--threads: 0 (all cores) or more")
    from ._console import Stopped, _StopHandlers
    try:
        with _StopHandlers():  # SIGTERM (a batch system's) unwinds like Ctrl-C
            spec = load_spec(a.spec)
            s = run(spec, a.out, workers=a.workers, scheduler=a.scheduler, threads=a.threads, frames=a.frames,
                    progress=not a.no_progress, retries=a.retries)
    except (DatasetError, OSError) as e:
        print(f"nanobragg-dataset: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nanobragg-dataset: interrupted; run again with the same description to resume", file=sys.stderr)
        return 130
    except Stopped as e:
        import signal
        print(f"nanobragg-dataset: stopped by {signal.Signals(e.signum).name}; run again with the same "
              "description to resume", file=sys.stderr)
        return 128 + e.signum
    print(s.line(), file=sys.stderr)
    return 0 if s.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
