"""The noisify command: photons per pixel (a raw float image) -> SMV images
with the detector's errors, as the reference noisify.c.

    noisify -floatfile floatimage.bin -scale 10 -readout_noise 3 -flicker 0.02 -psf gauss -psf_fwhm 150

Flags, units and defaults are the reference's (the flag table below); the
physics is nb_noisify() of csrc/detector_noise.c.  Outputs: the noiseless
``-intfile`` (intimage.img), ``-pgmfile`` (image.pgm, unless -nopgm) and
``-noisefile`` (noiseimage.img, unless -nonoise), written together and
atomically.
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
from ..params import UsageError

PROG = "noisify"
R_E_SQR = 7.94079248018965e-30            # Thomson cross section (m^2)
UNIT_FLUENCE = 125932015286227086360700780544.0   # photons/m^2 that make r_e^2 * fluence = 1
PSF_KINDS = {"gauss": 1, "fiber": 2}
DEFAULT_FILES = {"floatfile": "floatimage.bin", "intfile": "intimage.img", "noisefile": "noiseimage.img",
                 "pgmfile": "image.pgm"}

FLAGS = C.table([
    (("-floatfile", "-floatimage", "-bin"), "path", 1, "", "input: raw float32 image in photons/pixel "
     "(default floatimage.bin; a bare argument containing floatimage.bin also names it)", "floatfile"),
    (("-intfile", "-intimage"), "path", 1, "", "noiseless SMV output (default intimage.img)", "intfile"),
    (("-noisefile", "-noiseimage"), "path", 1, "", "noisy SMV output (default noiseimage.img)", "noisefile"),
    (("-pgmfile", "-pgmimage"), "path", 1, "", "PGM preview of the noiseless image (default image.pgm)", "pgmfile"),
    ("-nopgm", "switch", 0, "", "do not write the PGM file", "nopgm"),
    ("-nonoise", "switch", 0, "", "no noise image; also zeroes calibration, flicker and read-out noise", "nonoise"),
    ("-scale", "float", 1, "", "multiplies every input value", "scale"),
    ("-fluence", "float", 1, "photons/m^2", "incident fluence (default 1.26e29: the input is in photons)", "fluence"),
    ("-gain", "float", 1, "ADU/photon", "detector gain (default 1)", "gain"),
    ("-adc", "float", 1, "ADU", "offset added to every pixel (default 40)", "adc"),
    (("-readout_noise", "-readout", "-readnoise"), "float", 1, "ADU", "rms read-out noise (default 0)", "readout_noise"),
    ("-flicker", "float", 1, "fraction", "rms shot-to-shot source intensity noise (default 0)", "flicker"),
    ("-calibration", "float", 1, "fraction", "rms static per-pixel calibration error (default 0.03)", "calibration"),
    ("-seed", "int", 1, "", "seed of the noise (default: the clock)", "seed"),
    ("-calib_seed", "int", 1, "", "seed of the calibration error (default 123456789)", "calib_seed"),
    (("-badpix_seed",), "int", 1, "", "accepted for compatibility (unused, as in the reference)", "badpix_seed"),
    (("-hotpix_seed",), "int", 1, "", "accepted for compatibility (unused, as in the reference)", "hotpix_seed"),
    ("-psf", "word", 1, "gauss|fiber", "point-spread function", "psf"),
    (("-psf_fwhm", "-psf_width", "-psf_sigma"), "float", 1, "um", "PSF full width at half maximum (default 46)", "psf_fwhm"),
    (("-psf_radius", "-psf_rad"), "int", 1, "pixels", "PSF rendering radius (default 0: automatic)", "psf_radius"),
    ("-bits", "int", 1, "", "16 or 32 bits per output pixel (default 16)", "bits"),
    ("-header", "path", 1, "", "copy this SMV file's header (and size and pixel) into the outputs", "header"),
    ("-pixel", "float", 1, "mm", "pixel size (default 0.1)", "pixel"),
    ("-distance", "float", 1, "mm", "detector distance, for the header (default 100)", "distance"),
    ("-detsize", "float", 1, "mm", "detector size (used only when no pixel count is known)", "detsize"),
    ("-detsize_x", "float", 1, "mm", "detector width", "detsize_x"),
    ("-detsize_y", "float", 1, "mm", "detector height", "detsize_y"),
    ("-detpixels", "int", 1, "", "pixels along both edges", "detpixels"),
    ("-detpixels_x", "int", 1, "", "pixels along the fast axis", "detpixels_x"),
    ("-detpixels_y", "int", 1, "", "pixels along the slow axis", "detpixels_y"),
    ("-Xbeam", "float", 1, "mm", "beam centre for the header (default: the detector's centre)", "Xbeam"),
    ("-Ybeam", "float", 1, "mm", "beam centre for the header", "Ybeam"),
    ("-lambda", "float", 1, "A", "wavelength for the header (default 1)", "lambda"),
    ("-phi", "float", 1, "deg", "spindle start for the header (default 0)", "phi"),
    ("-osc", "float", 1, "deg", "oscillation range for the header (default 1)", "osc"),
])


def _positional(arg: str, out: List[Tuple[str, Any]]) -> bool:
    # the reference takes any argument containing "floatimage.bin" as the input
    if "floatimage.bin" in arg:
        out.append(("floatfile", arg))
        return True
    return False


def settings_from_args(argv: Sequence[str]) -> Dict[str, Any]:
    """The command line as keyword settings (the last of repeated flags wins)."""
    s: Dict[str, Any] = {}
    for key, v in C.parse(argv, FLAGS, _positional):
        s.pop(key, None)
        s[key] = v
    return s


def check_settings(s: Dict[str, Any]) -> None:
    """Values the reference would misbehave on are usage errors."""
    if "psf" in s and s["psf"] not in PSF_KINDS:
        raise UsageError(f"-psf expects gauss or fiber, got '{s['psf']}'")
    if s.get("bits", 16) not in (16, 32):
        raise UsageError(f"-bits expects 16 or 32, got {s['bits']}")
    for key in ("pixel",):
        if key in s and not s[key] > 0:
            raise UsageError(f"-{key} must be > 0, got {s[key]:g}")
    for key in ("detpixels", "detpixels_x", "detpixels_y", "psf_radius"):
        if key in s and s[key] < 0:
            raise UsageError(f"-{key} must be >= 0, got {s[key]}")
    for key in ("seed", "calib_seed", "psf_radius", "detpixels", "detpixels_x", "detpixels_y"):
        if key in s:
            C.c_int(s[key], "-" + key)
    if "psf_fwhm" in s and s["psf_fwhm"] < 0:
        raise UsageError(f"-psf_fwhm must be >= 0, got {s['psf_fwhm']:g}")


def image_size(s: Dict[str, Any], nfloats: int, header=None) -> Tuple[int, int, float, List[str]]:
    """Width, height, pixel (m) and warnings, by the reference's rules: the
    -header's size, else -detpixels*, else a guess from the float count."""
    warnings: List[str] = []
    pixel = s.get("pixel", 0.1) / 1000.0
    dx, dy, x, y = C.detector_size(s)
    pixels = nfloats
    if header is not None:
        x, y = header.width, header.height
        pixels = x * y
        v = header.value("PIXEL_SIZE")
        if v is not None:
            pixel = v / 1000.0
        dx, dy = pixel * x, pixel * y
    if not x and not y:
        warnings.append("WARNING: guessing xy pixel dimensions.")
        x = int(math.isqrt(pixels))
        y = pixels // x if x else 0
        while pixels != x * y and x > 0:
            x -= 1
            y = pixels // x if x else 0
        if pixels != x * y:
            x, y = pixels, 1
    if x and not y:
        y = pixels // x
    if y and not x:
        x = pixels // y
    if not x:
        x = int(math.ceil(dx / pixel - 0.5))
    if not y:
        y = int(math.ceil(dy / pixel - 0.5))
    if x <= 0 or y <= 0:
        raise ValueError(f"image size {x} x {y}: the input has too few pixels for it (give -detpixels)")
    if x * y > C.MAX_PIXELS:
        raise ValueError(f"image size {x} x {y} is more than {C.MAX_PIXELS} pixels")
    if not pixel > 0:
        raise ValueError(f"pixel size {pixel * 1000:g} mm must be positive")
    return x, y, pixel, warnings


def engine_params(s: Dict[str, Any], width: int, height: int, pixel_m: float) -> Dict[str, Any]:
    """The nb_noisify_params fields for these settings."""
    noise = not s.get("nonoise", False)
    fwhm_m = C.float32(s.get("psf_fwhm", 46.0) / 1e6)      # the reference keeps it in a float
    seed = s.get("seed")
    p = {
        "width": width, "height": height,
        "fluence_re2": s.get("fluence", UNIT_FLUENCE) * R_E_SQR,
        "scale": s.get("scale", 1.0),
        "gain": s.get("gain", 1.0),
        "adc_offset": s.get("adc", 40.0),
        "readout": s.get("readout_noise", 0.0) if noise else 0.0,
        "flicker": s.get("flicker", 0.0) if noise else 0.0,
        "calibration": s.get("calibration", 0.03) if noise else 0.0,
        "seed": -int(seed) if seed is not None else -int(time.time()),
        "calib_seed": -int(s["calib_seed"]) if "calib_seed" in s else 123456789,
        "psf": PSF_KINDS.get(s.get("psf", ""), 0),
        "psf_fwhm_px": fwhm_m / pixel_m,
        "psf_radius": s.get("psf_radius", 0),
        "bits": s.get("bits", 16),
        "noise": noise,
    }
    return p


def header_fields(s: Dict[str, Any], width: int, height: int, pixel_m: float) -> List[Tuple[str, float, bool]]:
    """The keys of the header noisify makes up (without -header)."""
    dy = pixel_m * height
    xbeam = s["Xbeam"] / 1000.0 if "Xbeam" in s else pixel_m * width / 2.0
    ybeam = s["Ybeam"] / 1000.0 if "Ybeam" in s else dy / 2.0
    phi = s.get("phi", 0.0)
    distance = s.get("distance", 100.0) / 1000.0
    return [("SIZE1", width, True), ("SIZE2", height, True), ("PIXEL_SIZE", pixel_m * 1000.0, False),
            ("DISTANCE", distance * 1000.0, False), ("WAVELENGTH", s.get("lambda", 1.0), False),
            ("BEAM_CENTER_X", xbeam * 1000.0, False), ("BEAM_CENTER_Y", (dy - ybeam) * 1000, False),
            ("PHI", phi, False), ("OSC_START", phi, False), ("OSC_RANGE", s.get("osc", 1.0), False)]


def _read_header(path: str):
    """-header FILE: the SMV file (read as every SMV input is) and its raw header bytes."""
    from .. import _core
    data = C.read_file(path, "-header", "header")
    try:
        smv = _core.parse_smv(data)
    except ValueError as e:
        raise ValueError(f"-header '{path}': {e}") from None
    return smv, data[:smv.header_bytes]


def _run(argv: List[str]) -> int:
    from .. import _core, _io
    s = settings_from_args(argv)
    check_settings(s)
    files = {k: s.get(k, v) for k, v in DEFAULT_FILES.items()}
    outputs = {"-intfile": files["intfile"]}
    if not s.get("nopgm"):
        outputs["-pgmfile"] = files["pgmfile"]
    if not s.get("nonoise"):
        outputs["-noisefile"] = files["noisefile"]
    C.check_distinct(outputs)
    _io.check_writable(list(outputs.values()))

    C.say("noisify - add noise to pixels - James Holton 3-19-16")
    src = files["floatfile"]
    if not os.path.exists(src) and "floatfile" not in s:
        raise UsageError("no input: give -floatfile FILE (a raw float32 image in photons/pixel)")
    header = raw_header = None
    if "header" in s:
        C.say(f"taking header from {s['header']}")
        header, raw_header = _read_header(s["header"])
        C.say(f"reading {s['header']}")
    data = C.read_file(src, "-floatfile", "floatfile")
    nfloats = len(data) // 4
    width, height, pixel_m, warnings = image_size(s, nfloats, header)
    for w in warnings:
        C.say(w)
    pixels = width * height
    if 4 * nfloats < pixels:   # the reference reads a quarter of the floats, at least
        raise ValueError(f"-floatfile '{src}' holds {nfloats} floats, too few for {width} x {height} pixels")
    if nfloats < pixels:
        C.say(f"WARNING: {src} holds {nfloats} of {pixels} pixels: the rest are 0")
    p = engine_params(s, width, height, pixel_m)
    C.say(f"importing {pixels} pixel intensites: {src}")
    distance = s.get("distance", 100.0) / 1000.0
    xbeam = s["Xbeam"] / 1000.0 if "Xbeam" in s else None
    ybeam = s["Ybeam"] / 1000.0 if "Ybeam" in s else None
    if header is not None:    # for the messages only: the header itself is copied as it is
        v = header.value("DISTANCE")
        distance = v / 1000.0 if v is not None else distance
        v = header.value("BEAM_CENTER_X")
        xbeam = v / 1000.0 if v is not None else xbeam
        v = header.value("BEAM_CENTER_Y")
        ybeam = pixel_m * height - v / 1000.0 if v is not None else ybeam
    xbeam = pixel_m * width / 2.0 if xbeam is None else xbeam
    ybeam = pixel_m * height / 2.0 if ybeam is None else ybeam
    C.say("  distance=%g detsize=%gx%g  pixel=%g meters (%dx%d pixels)"
          % (distance, pixel_m * width, pixel_m * height, pixel_m, width, height))
    C.say("  Xbeam=%g Ybeam=%g" % (xbeam, ybeam))
    if p["psf"]:
        what = "  Gaussian PSF fwhm = %g um " if p["psf"] == 1 else "  fiber PSF fwhm = %g um "
        rad = p["psf_radius"]
        if rad == 0:     # the reference says both
            C.say(what % (p["psf_fwhm_px"] * pixel_m * 1e6) + "  with automatic rendering radius")
            C.say("  with rendering radius: 0")
        else:
            C.say(what % (p["psf_fwhm_px"] * pixel_m * 1e6) + "  with rendering radius: %d" % rad)
    C.say("  seed: %d" % p["seed"])
    C.say("  calibration noise seed: %d" % p["calib_seed"])
    C.say("  calibration_noise = %g %%" % (p["calibration"] * 100))
    C.say("  input file scale = %g" % p["scale"])
    C.say("  readout_noise = %g ADU" % p["readout"])
    C.say("  flicker_noise = %g %%" % (p["flicker"] * 100))
    C.say("  quantum_gain = %g ADU/photon" % p["gain"])
    C.say("  adc_offset = %g ADU" % p["adc_offset"])
    C.say()
    r = _core.noisify(data, p, not s.get("nopgm", False))
    del data
    if r["negative_pixels"]:
        C.say(f"WARNING: {r['negative_pixels']} negative intensities in {src}")
    C.say("maximum value in input file: %g ( %g on photon scale)"
          % (r["max_input"], r["max_input"] * p["scale"] * p["fluence_re2"]))
    psf = r["psf"]

    def say_psf() -> None:
        if psf["max_photons"] or psf["auto_radius"]:
            C.say("  maximum input photon/pixel: %g" % psf["max_photons"])
        if psf["skipped"]:
            C.say("WARNING: no photons, PSF skipped")
        elif psf["auto_radius"]:
            C.say("  auto-selected psf_radius = %d pixels" % psf["auto_radius"])
        C.say("adding back %g lost photons" % psf["lost_photons"])

    if r["psf_applied"] and r["noise_image"] is None:
        C.say("  applying PSF to noiseless image width = %g pixels" % p["psf_fwhm_px"])
        say_psf()
    bits = p["bits"]
    if header is not None:
        head = raw_header
    else:
        head = _core.smv_header_fields("long_integer" if bits == 32 else "unsigned_short",
                                       header_fields(s, width, height, pixel_m))
    with _io.OutputSet() as out:
        C.say(f"writing {files['intfile']} as {pixels} {bits // 8}-byte integers")
        out.stage(files["intfile"], [head, r["int_image"]])
        if r["pgm"] is not None:
            C.say(f"writing {files['pgmfile']} as 1-byte integers")
            out.stage(files["pgmfile"], [_core.pgm_header(width, height, 1.0), r["pgm"]])
        if r["noise_image"] is not None:
            if r["psf_applied"]:
                C.say("%.0f photons on noise image before PSF" % r["photons_before_psf"])
                C.say("  applying PSF width = %g um" % (p["psf_fwhm_px"] * pixel_m * 1e6))
                say_psf()
            C.say("%.0f photons on noise image (%d overloads)" % (r["photons"], r["overloads"]))
            C.say(f"writing {files['noisefile']} as {bits // 8}-byte integers")
            out.stage(files["noisefile"], [head, r["noise_image"]])
        out.commit()
    return 0


def help_text() -> str:
    return C.help_text(PROG, "Turn a raw float image in photons/pixel into detector images with noise.", FLAGS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return C.run_command(PROG, _run, argv, help_text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
