"""The nonBragg command: scattering of amorphous material (water, air, ice,
...) from a table of F against sin(theta)/lambda, as the reference nonBragg.c.

    nonBragg -stol water -lambda 1 -distance 100 -thick 0.1 -flux 1e12 -beamsize 0.1

Flags, units and defaults are the reference's (the table below); the physics
is nb_amorphous_*() of csrc/amorphous.c.  ``-stol`` takes a file, or the
name of a table shipped with the package (air, water, ice, nanoice,
shortwater, unity).  Outputs: ``-floatfile`` (floatimage.bin), ``-intfile``
(intimage.img), ``-pgmfile`` (image.pgm) and, unless -nonoise,
``-noisefile`` (noiseimage.img), written together and atomically.
"""

from __future__ import annotations

import math
import os
import sys
import time
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import _command as C
from ..params import UsageError, HC_EV_A

PROG = "nonBragg"
RTD = 180.0 / math.pi
DEFAULT_FILES = {"floatfile": "floatimage.bin", "intfile": "intimage.img", "pgmfile": "image.pgm",
                 "noisefile": "noiseimage.img"}
# sin(theta)/lambda (1/m) per unit of the table's x, for -stol, -4stol, -Q
STOL_MULT = {"stol": 1e10, "4stol": 1e10 / 4, "Q": 1e10 / math.pi / 4}

F, I, P, S, W = "float", "int", "path", "switch", "word"
FLAGS = C.table([
    # the table
    ("-stol", P, 1, "", "F against sin(theta)/lambda (1/A): a file, or a shipped table by name (water, air, ice, ...)", "stol"),
    ("-4stol", P, 1, "", "the same with x = 4 sin(theta)/lambda", "4stol"),
    ("-Q", P, 1, "", "the same with x = Q = 4 pi sin(theta)/lambda", "Q"),
    # sample
    (("-thick", "-thickness", "-sample_thick", "-sample_x"), F, 1, "mm", "sample thickness along the beam (default 0.1)", "thick"),
    (("-width", "-sample_width", "-sample_y"), F, 1, "mm", "sample width (default 0.1)", "width"),
    (("-height", "-sample_height", "-sample_z"), F, 1, "mm", "sample height (default 0.1)", "height"),
    (("-samplesize", "-sample_size"), F, 1, "mm", "thickness, width and height at once", "samplesize"),
    (("-density", "-sample_density"), F, 1, "g/cm^3", "sample density (default 1)", "density"),
    (("-molecules", "-sample_molecules"), F, 1, "", "number of molecules (overrides -density)", "molecules"),
    (("-MW", "-molecular_weight"), F, 1, "g/mol", "molecular weight (default 18)", "MW"),
    # beam
    (("-lambda", "-wave", "-wavelength"), F, 1, "A", "wavelength (default 1)", "lambda"),
    ("-energy", F, 1, "eV", "photon energy instead of -lambda", "energy"),
    ("-fluence", F, 1, "photons/m^2", "incident fluence (default 1.26e29)", "fluence"),
    ("-flux", F, 1, "photons/s", "incident flux: fluence = flux * exposure / beamsize^2", "flux"),
    ("-exposure", F, 1, "s", "exposure time (default 1)", "exposure"),
    ("-beamsize", F, 1, "mm", "beam size; clips the sample's width and height (default 0.1)", "beamsize"),
    ("-dispersion", F, 1, "%", "spectral dispersion", "dispersion"),
    ("-dispsteps", I, 1, "", "wavelengths across the dispersion", "dispsteps"),
    ("-divergence", F, 1, "mrad", "horizontal and vertical divergence", "divergence"),
    ("-hdivrange", F, 1, "mrad", "horizontal divergence", "hdivrange"),
    ("-vdivrange", F, 1, "mrad", "vertical divergence", "vdivrange"),
    ("-hdivstep", F, 1, "mrad", "horizontal divergence step", "hdivstep"),
    ("-vdivstep", F, 1, "mrad", "vertical divergence step", "vdivstep"),
    ("-hdivsteps", I, 1, "", "horizontal divergence steps", "hdivsteps"),
    ("-vdivsteps", I, 1, "", "vertical divergence steps", "vdivsteps"),
    ("-divsteps", I, 1, "", "divergence steps, both directions", "divsteps"),
    ("-round_div", S, 0, "", "cut the divergence grid to an ellipse (default)", "round_div"),
    ("-square_div", S, 0, "", "keep the whole divergence grid", "square_div"),
    ("-sourcefile", P, 1, "", "sources: X Y Z (m) weight lambda (m) per line", "sourcefile"),
    ("-source_distance", F, 1, "mm", "distance of sources missing from -sourcefile columns (default 10 m)", "source_distance"),
    (("-polar",), F, 1, "", "Kahn polarization factor (default 0: unpolarized)", "polar"),
    ("-nopolar", S, 0, "", "no polarization factor", "nopolar"),
    ("-polar_vector", F, 3, "", "polarization axis (default 0 0 1)", "polar_vector"),
    ("-beam_vector", F, 3, "", "beam direction (default 1 0 0)", "beam_vector"),
    # detector
    ("-distance", F, 1, "mm", "sample to detector along the beam (default 100; pivots about the beam spot)", "distance"),
    ("-close_distance", F, 1, "mm", "sample to detector plane (pivots about the sample)", "close_distance"),
    ("-pixel", F, 1, "mm", "pixel size (default 0.1)", "pixel"),
    ("-detsize", F, 1, "mm", "detector size (default 102.4)", "detsize"),
    ("-detsize_x", F, 1, "mm", "detector width", "detsize_x"),
    ("-detsize_y", F, 1, "mm", "detector height", "detsize_y"),
    ("-detpixels", I, 1, "", "pixels along both edges", "detpixels"),
    (("-detpixels_x", "-detpixels_f"), I, 1, "", "pixels along the fast axis", "detpixels_x"),
    (("-detpixels_y", "-detpixels_s"), I, 1, "", "pixels along the slow axis", "detpixels_y"),
    ("-Xbeam", F, 1, "mm", "beam centre along the fast axis", "Xbeam"),
    ("-Ybeam", F, 1, "mm", "beam centre along the slow axis", "Ybeam"),
    ("-Xclose", F, 1, "mm", "point of closest approach along the fast axis", "Xclose"),
    ("-Yclose", F, 1, "mm", "point of closest approach along the slow axis", "Yclose"),
    ("-ORGX", F, 1, "pixels", "XDS origin along the fast axis", "ORGX"),
    ("-ORGY", F, 1, "pixels", "XDS origin along the slow axis", "ORGY"),
    ("-pivot", W, 1, "beam|sample", "keep the beam spot or the closest point fixed", "pivot"),
    ("-fdet_vector", F, 3, "", "fast axis (default 0 0 1)", "fdet_vector"),
    ("-sdet_vector", F, 3, "", "slow axis (default 0 -1 0)", "sdet_vector"),
    ("-odet_vector", F, 3, "", "accepted; the normal is always fast x slow, as in the reference", "odet_vector"),
    ("-pix0_vector", F, 3, "", "accepted; the placement overrides it, as in the reference", "pix0_vector"),
    ("-spindle_axis", F, 3, "", "accepted (no crystal to rotate)", "spindle_axis"),
    ("-twotheta_axis", F, 3, "", "detector 2theta axis (default 0 1 0); also sets -twotheta to its first number", "twotheta_axis"),
    ("-twotheta", F, 1, "deg", "detector 2theta swing (pivots about the sample)", "twotheta"),
    ("-detector_rotx", F, 1, "deg", "detector rotation about x", "detector_rotx"),
    ("-detector_roty", F, 1, "deg", "detector rotation about y", "detector_roty"),
    ("-detector_rotz", F, 1, "deg", "detector rotation about z", "detector_rotz"),
    ("-curved_det", S, 0, "", "every pixel at the same distance from the sample", "curved_det"),
    ("-point_pixel", S, 0, "", "solid angle 1/R^2 (no obliquity)", "point_pixel"),
    ("-Fmap", S, 0, "", "store F itself instead of the intensity", "Fmap"),
    ("-oversample", I, 1, "", "sub-pixels per pixel edge (default 1)", "oversample"),
    ("-roi", I, 4, "", "xmin xmax ymin ymax: render only these pixels (inclusive)", "roi"),
    # header and outputs
    ("-phi", F, 1, "deg", "spindle start, for the header", "phi"),
    ("-osc", F, 1, "deg", "oscillation range, for the header", "osc"),
    ("-phistep", F, 1, "deg", "accepted; gives the header's OSC_RANGE without -osc", "phistep"),
    ("-phisteps", I, 1, "", "accepted; gives the header's OSC_RANGE without -osc", "phisteps"),
    ("-adc", F, 1, "ADU", "offset added to the integer images (default 40)", "adc"),
    ("-gain", F, 1, "ADU/photon", "accepted (used by the reference's -img only)", "gain"),
    ("-scale", F, 1, "", "scale of the int image (default 55000/max)", "scale"),
    ("-pgmscale", F, 1, "", "scale of the PGM image (default 250/(5 rmsd))", "pgmscale"),
    (("-floatfile", "-floatimage"), P, 1, "", "raw float32 output in photons/pixel (default floatimage.bin)", "floatfile"),
    (("-intfile", "-intimage"), P, 1, "", "SMV output (default intimage.img)", "intfile"),
    (("-pgmfile", "-pgmimage"), P, 1, "", "PGM output (default image.pgm)", "pgmfile"),
    (("-noisefile", "-noiseimage"), P, 1, "", "SMV output with Poisson noise (default noiseimage.img); turns noise back on", "noisefile"),
    ("-nonoise", S, 0, "", "no noise image", "nonoise"),
    ("-nopgm", S, 0, "", "accepted; the PGM is written anyway, as in the reference", "nopgm"),
    ("-seed", I, 1, "", "seed of the noise (default: the clock)", "seed"),
    (("-noprogress", "-progress", "-coherent", "-noreject"), S, 0, "", "accepted (no effect here)", "ignored"),
])

# the flags naming a pivot, as the reference's parser sets it
_PIVOT_OF = {"Xbeam": 0, "Ybeam": 0, "distance": 0, "Xclose": 1, "Yclose": 1, "ORGX": 1, "ORGY": 1,
             "close_distance": 1, "twotheta": 1, "twotheta_axis": 1}


def data_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def shipped_tables() -> List[str]:
    """Names of the .stol tables shipped with the package."""
    return sorted(f[:-5] for f in os.listdir(data_dir()) if f.endswith(".stol"))


def table_path(name: str) -> str:
    """A table file: the path if it exists, else a shipped table by name."""
    if os.path.exists(name):
        return name
    base = name[:-5] if name.endswith(".stol") else name
    shipped = os.path.join(data_dir(), base + ".stol")
    if os.sep not in name and os.path.exists(shipped):
        return shipped
    raise FileNotFoundError(2, f"no such file, nor a shipped table (shipped: {', '.join(shipped_tables())})", name)


def parse_table(text: str, what: str) -> List[float]:
    """x F rows of a .stol table, flat (read as every table is:
    nanobragg._io.read_number_rows); a missing F is NaN (0 for the engine)."""
    from .. import _io
    try:
        rows, _lines = _io.read_number_rows(text, ("x", "F"))
    except ValueError as e:
        raise ValueError(f"{what} {e}") from None
    if not rows:
        raise ValueError(f"{what}: no data")
    return [v for row in rows for v in row]


def settings_from_args(argv: Sequence[str]) -> Dict[str, Any]:
    """The command line as ordered settings (the last of repeated flags wins);
    'pivot' and 'noise' record the last flag that set them."""
    s: Dict[str, Any] = {}
    for key, v in C.parse(argv, FLAGS):
        if key == "ignored":
            continue
        if key in _PIVOT_OF:
            s["pivot"] = _PIVOT_OF[key]
        if key == "pivot":
            if "sample" in v:
                v = 1
            elif "beam" in v:
                v = 0
            else:
                raise UsageError(f"-pivot expects beam or sample, got '{v}'")
        if key == "twotheta_axis":
            s.pop("twotheta", None)
            s["twotheta"] = v[0]
        if key in ("nonoise", "noisefile"):
            s.pop("noise", None)
            s["noise"] = key == "noisefile"
        if key in ("stol", "4stol", "Q"):
            s.pop("table", None)
            s["table"] = (v, STOL_MULT[key])
            continue
        if key in ("round_div", "square_div"):
            s.pop("round_div", None)
            s["round_div"] = key == "round_div"
            continue
        s.pop(key, None)
        s[key] = v
    return s


def engine_params(s: Dict[str, Any]) -> Dict[str, Any]:
    """nb_amorphous_params fields (SI) for these settings."""
    for key in ("pixel", "lambda", "energy", "MW"):
        if key in s and not s[key] > 0:
            raise UsageError(f"-{key} must be > 0, got {s[key]:g}")
    for key in ("oversample", "detpixels", "detpixels_x", "detpixels_y", "seed", "dispsteps", "hdivsteps",
                "vdivsteps", "divsteps"):
        if key in s:
            C.c_int(s[key], "-" + key)
    mm = 1e-3
    p: Dict[str, Any] = {}
    pixel = s.get("pixel", 0.1) * mm
    dx, dy, fp, sp = C.detector_size(s)
    sample = [1e-4, 1e-4, 1e-4]
    for k, v in s.items():            # command-line order
        if k == "samplesize":
            sample = [v * mm] * 3
        elif k == "thick":
            sample[0] = v * mm
        elif k == "width":
            sample[1] = v * mm
        elif k == "height":
            sample[2] = v * mm
        elif k == "lambda":
            p["lambda0_m"] = v / 1.0e10
        elif k == "energy":
            p["lambda0_m"] = (HC_EV_A / v) / 1.0e10
        elif k == "divergence":
            p["hdivrange_rad"] = p["vdivrange_rad"] = v / 1000.0
        elif k in ("hdivrange", "vdivrange", "hdivstep", "vdivstep"):
            p[k + "_rad"] = v / 1000.0
        elif k in ("hdivsteps", "vdivsteps", "dispsteps"):
            p[k] = v
        elif k == "divsteps":
            p["hdivsteps"] = p["vdivsteps"] = v
    if fp < 0 or sp < 0:
        raise UsageError("-detpixels must be >= 0")
    if fp:
        dx = pixel * fp
    if sp:
        dy = pixel * sp
    p["fpixels"] = int(math.ceil(dx / pixel))
    p["spixels"] = int(math.ceil(dy / pixel))
    if p["fpixels"] <= 0 or p["spixels"] <= 0:
        raise UsageError(f"the detector has {p['fpixels']} x {p['spixels']} pixels: give -detpixels or -detsize")
    if p["fpixels"] * p["spixels"] > C.MAX_PIXELS:
        raise UsageError(f"{p['fpixels']} x {p['spixels']} pixels is more than {C.MAX_PIXELS}")
    p.update(pixel_m=pixel, detsize_f_m=dx, detsize_s_m=dy, sample_m=sample)
    for key, field in (("distance", "distance_m"), ("close_distance", "close_distance_m"), ("Xbeam", "Xbeam_m"),
                       ("Ybeam", "Ybeam_m"), ("Xclose", "Xclose_m"), ("Yclose", "Yclose_m"),
                       ("beamsize", "beamsize_m"), ("source_distance", "source_distance_m")):
        if key in s:
            p[field] = s[key] * mm
    # ORGX/ORGY give Xclose/Yclose in pixels (they win over -Xclose/-Yclose, as the reference)
    if "ORGX" in s:
        p["Xclose_m"] = s["ORGX"] * pixel
    if "ORGY" in s:
        p["Yclose_m"] = s["ORGY"] * pixel
    p["pivot"] = s.get("pivot", 0)
    for key, field in (("fdet_vector", "fdet"), ("sdet_vector", "sdet"), ("beam_vector", "beam"),
                       ("polar_vector", "polar_vec"), ("twotheta_axis", "twotheta_axis")):
        if key in s:
            p[field] = list(s[key])
    p["rot_rad"] = [s.get("detector_rot" + a, 0.0) / RTD for a in "xyz"]
    p["twotheta_rad"] = s.get("twotheta", 0.0) / RTD
    p["curved_det"] = int(s.get("curved_det", False))
    p["point_pixel"] = int(s.get("point_pixel", False))
    p["nopolar"] = int(s.get("nopolar", False))
    p["fmap"] = int(s.get("Fmap", False))
    if "polar" in s:
        p["polarization"] = s["polar"]
    if "oversample" in s:
        p["oversample"] = s["oversample"]
    if "roi" in s:
        p["roi"] = list(s["roi"])
    if "dispersion" in s:
        p["dispersion"] = s["dispersion"] / 100.0
    p["round_div"] = int(s.get("round_div", True))
    for key, field in (("fluence", "fluence"), ("flux", "flux"), ("exposure", "exposure_s"),
                       ("molecules", "molecules"), ("MW", "molecular_weight"), ("adc", "adc_offset"),
                       ("scale", "intfile_scale"), ("pgmscale", "pgm_scale")):
        if key in s:
            p[field] = s[key]
    if "density" in s:
        p["density_g_m3"] = s["density"] * 1e6
    return p


def osc_deg(s: Dict[str, Any]) -> float:
    """The header's OSC_RANGE by the reference's phi-step rules."""
    if "osc" in s and s["osc"] >= 0:
        return s["osc"]
    if s.get("phistep", -1.0) > 0:
        return s["phistep"]
    if s.get("phisteps", -1) >= 0:
        return 1.0
    return 0.0


def header_fields(g: Dict[str, Any], s: Dict[str, Any]) -> List[Tuple[str, float, bool]]:
    px = g["pixel_m"]
    phi = s.get("phi", 0.0)
    return [("SIZE1", g["fpixels"], True), ("SIZE2", g["spixels"], True), ("PIXEL_SIZE", px * 1000.0, False),
            ("DISTANCE", g["distance_m"] * 1000.0, False), ("WAVELENGTH", g["lambda0_m"] * 1e10, False),
            ("BEAM_CENTER_X", g["Xbeam_m"] * 1000.0, False),
            ("BEAM_CENTER_Y", (g["detsize_s_m"] - g["Ybeam_m"]) * 1000, False),
            ("ORGX", g["Xclose_m"] / px, False), ("ORGY", g["Yclose_m"] / px, False),
            ("CLOSE_DISTANCE", g["close_distance_m"] * 1000.0, False),
            ("PHI", phi, False), ("OSC_START", phi, False), ("OSC_RANGE", osc_deg(s), False),
            ("TWOTHETA", g["twotheta_rad"] * RTD, False)]


def read_inputs(s: Dict[str, Any]) -> Tuple[List[float], Optional[List[float]]]:
    """The F table (flat x F) and the source rows (flat, 5 a row) or None."""
    from .. import _io
    if "table" not in s:
        raise UsageError("no F table: give -stol FILE (or a shipped table: " + ", ".join(shipped_tables()) + ")")
    name, _mult = s["table"]
    path = table_path(name)
    table = parse_table(C.read_file(path, "-stol", "stol").decode("latin-1"), f"-stol '{name}'")
    sources = None
    if "sourcefile" in s:
        rows, _lines = _io.read_source_file(s["sourcefile"], "-sourcefile")
        sources = [v for row in rows for v in row]
    return table, sources


def render(s: Dict[str, Any], pgm: bool = True, noise: bool = True, nthreads: int = 0) -> Dict[str, Any]:
    """Read the inputs and render: the _core.amorphous() result."""
    import array
    from .. import _core
    p = engine_params(s)
    table, sources = read_inputs(s)
    p["table_x_to_stol"] = s["table"][1]
    seed = -int(s["seed"]) if "seed" in s else -int(time.time())
    r = _core.amorphous(p, array.array("d", table), None if sources is None else array.array("d", sources),
                        pgm, noise, seed, nthreads)
    r["seed"] = seed
    return r


def _run(argv: List[str]) -> int:
    from .. import _core, _io
    s = settings_from_args(argv)
    files = {k: s.get(k, v) for k, v in DEFAULT_FILES.items()}
    write_noise = s.get("noise", True)
    outputs = {"-floatfile": files["floatfile"], "-intfile": files["intfile"], "-pgmfile": files["pgmfile"]}
    if write_noise:
        outputs["-noisefile"] = files["noisefile"]
    C.check_distinct(outputs)
    C.say("nonBragg amorphous material diffraction simulator - James Holton and Ken Frankel 3-19-16")
    if "table" not in s:
        raise UsageError("no F table: give -stol FILE (or a shipped table: " + ", ".join(shipped_tables()) + ")")
    _io.check_writable(list(outputs.values()))
    r = render(s, pgm=True, noise=write_noise)
    g, st = r["setup"], r["stats"]
    h, w = g["clipped"]
    if h:
        C.say("WARNING: clipping sample (%g m high) with beam (%g m)" % (h, g["sample_m"][1]))
    if w:
        C.say("WARNING: clipping sample (%g m wide) with beam (%g m)" % (w, g["sample_m"][2]))
    C.say("pivoting detector around sample" if g["pivot"] else "pivoting detector around direct beam spot")
    C.say("reading %s" % s["table"][0])
    for line in g["log"].splitlines():
        C.say(line)
    v3 = lambda v: "%g %g %g" % tuple(v)
    C.say("  %d initialized F points (will cubic-spline interpolate between them)" % g["n_points"])
    C.say("  wave=%g meters +/- %g%% in %d steps" % (g["lambda0_m"], g["dispersion"] * 100, g["dispsteps"]))
    C.say("  polarization effect disabled" if g["nopolar"] else "  Kahn polarization factor: %f" % g["polarization"])
    if g["curved_det"]:
        C.say("  curved detector: all pixels same distance from origin")
    if g["point_pixel"]:
        C.say("  pixel obliquity effect disabled")
    if g["fmap"]:
        C.say("  Fmap mode: plotting structure factor at every pixel")
    C.say("  incident fluence: %g photons/m^2" % g["fluence"])
    C.say("  sample is %g m thick x %g m high x %g m wide, %g g/cm^3 and %g g/mol (%g molecules)"
          % (g["sample_m"][0], g["sample_m"][1], g["sample_m"][2], g["density_g_m3"] / 1e6,
             s.get("MW", 18.0), g["molecules"]))
    C.say("  distance=%g detsize=%gx%g  pixel=%g meters (%dx%d pixels)"
          % (g["distance_m"], g["detsize_f_m"], g["detsize_s_m"], g["pixel_m"], g["fpixels"], g["spixels"]))
    C.say("  Xbeam=%g Ybeam=%g" % (g["Xbeam_m"], g["Ybeam_m"]))
    C.say("  detector origin: " + v3(g["pix0_m"]))
    C.say("  DIRECTION_OF_DETECTOR_X-AXIS= " + v3(g["fdet"]))
    C.say("  DIRECTION_OF_DETECTOR_Y-AXIS= " + v3(g["sdet"]))
    C.say("  INCIDENT_BEAM_DIRECTION= " + v3(g["beam"]))
    C.say("  POLARIZATION_PLANE_NORMAL= " + v3(g["polar_vec"]))
    C.say("  roi: %d < x < %d && %d < y < %d" % tuple(g["roi"]))
    C.say("  hdivrange=%g hdivstep=%g  radians" % (g["hdivrange_rad"], g["hdivstep_rad"]))
    C.say("  vdivrange=%g vdivstep=%g  radians" % (g["vdivrange_rad"], g["vdivstep_rad"]))
    C.say("  %d divergence steps" % g["divsteps"])
    C.say("  %d sources" % g["n_sources"])
    C.say("  %d pixel oversample steps" % g["oversample"])
    if write_noise:
        C.say()
        C.say("  noise image paramters:")
        C.say("  seed: %d" % r["seed"])
    C.say()
    C.say("solid angle subtended by detector = %g steradian ( %g%% sphere)"
          % (st["omega_sum"], 100 * st["omega_sum"] / 4 / math.pi))
    head = _core.smv_header_fields("unsigned_short", header_fields(g, s))
    pixels = g["fpixels"] * g["spixels"]
    with _io.OutputSet() as out:
        C.say("writing %s as %d 4-byte floats" % (files["floatfile"], pixels))
        out.stage(files["floatfile"], [r["float_image"]])
        C.say("max_I = %g  at %g %g" % (st["max_I"], st["max_I_x"], st["max_I_y"]))
        C.say("mean= %g rms= %g rmsd= %g" % (st["mean"], st["rms"], st["rmsd"]))
        C.say("intfile_scale = %g" % r["intfile_scale"])
        C.say("writing %s as 2-byte integers" % files["intfile"])
        out.stage(files["intfile"], [head, r["int_image"]])
        C.say("pgm_scale = %g" % r["pgm_scale"])
        C.say("writing %s as 1-byte integers" % files["pgmfile"])
        out.stage(files["pgmfile"], [_core.pgm_header(g["fpixels"], g["spixels"], r["pgm_scale"]), r["pgm"]])
        if write_noise:
            C.say("%.0f photons on noise image (%d overloads)" % (r["photons"], r["overloads"]))
            C.say("writing %s as 2-byte integers" % files["noisefile"])
            out.stage(files["noisefile"], [head, r["noise_image"]])
        out.commit()
    return 0


def help_text() -> str:
    return C.help_text(PROG, "Scattering of amorphous material onto a detector, from a table of F "
                       "against sin(theta)/lambda.", FLAGS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return C.run_command(PROG, _run, argv, help_text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
