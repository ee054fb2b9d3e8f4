"""Images out and in: miniCBF (fabio), 8-bit PNG previews, SMV with an opt-in
pedestal key, and :func:`read_image` for SMV, CBF and NeXus files.

* CBF: a Pilatus-style miniCBF (byte-offset compression, signed 32-bit
  counts) written by fabio, its header (``_array_data.header_contents``)
  built from the simulated geometry by :func:`pilatus_header`.  The header
  convention is ``GENERIC_MINI``, which DIALS's generic miniCBF reader takes
  for simulated detectors (``PILATUS_1.2`` would make it apply a real
  Pilatus's module-gap mask).
* PNG: greyscale, dark spots on white, log-stretched from the background
  (median + 3 robust sigma) to the maximum so that weak spots stay visible next to strong
  ones; encoded with zlib (PNG is zlib data in CRC'd chunks).
* SMV: :func:`smv_header_with_adc_offset` adds ``ADC_OFFSET=<pedestal>`` to an SMV
  header, the key DIALS reads the pedestal from (it assumes 1 without it).

fabio (and h5py for NeXus) are imported only when used.
"""

from __future__ import annotations

import math
import os
import struct
import zlib

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only
    from typing import Any, Dict, Mapping, Optional, Tuple, Union
    import numpy as np

__all__ = ["pilatus_header", "cbf_bytes", "write_cbf", "png_bytes", "write_png", "preview_8bit",
           "smv_header_with_adc_offset", "read_image", "image_kind", "CBF_CONVENTION"]

CBF_CONVENTION = "GENERIC_MINI"
HC_EV_A = 12398.42               # E(eV) = 12398.42 / lambda(A), as params.py's -energy


def _fabio_cbf():
    try:
        from fabio import cbfimage
    except ImportError:
        raise ImportError("writing and reading CBF files needs fabio: pip install fabio "
                          "(or pip install 'nanobragg[formats]')") from None
    return cbfimage


# ---------------------------------------------------------------------------
# CBF
# ---------------------------------------------------------------------------

def _beam_xy_px(g: "Mapping[str, Any]") -> "Tuple[float, float]":
    """Where the direct beam meets the detector plane, in pixels from the
    outer corner of the first pixel along fast and slow (Pilatus Beam_xy)."""
    import numpy as np
    pix0 = np.asarray(g["pix0_m"], dtype=float)
    fdet, sdet = np.asarray(g["fdet"], dtype=float), np.asarray(g["sdet"], dtype=float)
    beam = np.asarray(g["beam"], dtype=float)
    odet = np.cross(fdet, sdet)
    along = float(beam @ odet)
    if abs(along) < 1e-12:
        return (math.nan, math.nan)
    hit = beam * float(pix0 @ odet) / along - pix0
    px = float(g["pixel_m"])
    return (float(hit @ fdet) / px, float(hit @ sdet) / px)


def _timestamp() -> str:
    import time
    # SOURCE_DATE_EPOCH: reproducible files (same inputs, same bytes)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = float(epoch) if epoch and epoch.strip().isdigit() else time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000"


def pilatus_header(geometry: "Mapping[str, Any]", count_cutoff: int) -> str:
    """The Pilatus-style text of a miniCBF header for a simulated image.

    ``geometry``: ``Result.geometry`` (the engine's SI fields: pixel_m,
    thick_m, exposure_s, lambda0_m, close_distance_m, pix0_m, fdet, sdet,
    beam, phi0_rad, osc_rad, twotheta_rad, flux, polarization, nopolar).
    ``count_cutoff``: the largest valid count (overloads are at it)."""
    g = geometry
    lam_A = float(g["lambda0_m"]) * 1e10
    bx, by = _beam_xy_px(g)
    px = float(g["pixel_m"])
    lines = [
        "# Detector: nanoBragg simulation, S/N 0",
        "# " + _timestamp(),
        "# Pixel_size %.6ge-6 m x %.6ge-6 m" % (px * 1e6, px * 1e6),
        "# Silicon sensor, thickness %.6f m" % float(g.get("thick_m", 0.0)),
        "# Exposure_time %.7f s" % float(g.get("exposure_s", 1.0)),
        "# Exposure_period %.7f s" % float(g.get("exposure_s", 1.0)),
        "# Tau = 0 s",
        "# Count_cutoff %d counts" % int(count_cutoff),
        "# Threshold_setting: %d eV" % int(round(HC_EV_A / lam_A / 2.0)),
        "# Gain_setting: autog (vrf = 1.000)",
        "# N_excluded_pixels = 0",
        "# Excluded_pixels: (nil)",
        "# Flat_field: (nil)",
        "# Trim_file: (nil)",
        "# Image_path: (nil)",
        "# Wavelength %.6f A" % lam_A,
        "# Detector_distance %.6f m" % float(g["close_distance_m"]),
        "# Beam_xy (%.2f, %.2f) pixels" % (bx, by),
    ]
    if float(g.get("flux", 0.0)) > 0:
        lines.append("# Flux %.6g" % float(g["flux"]))
    lines += [
        "# Filter_transmission 1.0000",
        "# Start_angle %.4f deg." % math.degrees(float(g.get("phi0_rad", 0.0))),
        "# Angle_increment %.4f deg." % math.degrees(float(g.get("osc_rad", 0.0))),
        "# Detector_2theta %.4f deg." % math.degrees(float(g.get("twotheta_rad", 0.0))),
    ]
    if not int(g.get("nopolar", 0)):
        # the Kahn factor K of -polar is the polarized fraction 2f - 1
        lines.append("# Polarization %.3f" % ((1.0 + float(g.get("polarization", 0.0))) / 2.0))
    lines += ["# Alpha 0.0000 deg.", "# Kappa 0.0000 deg.",
              "# Phi %.4f deg." % math.degrees(float(g.get("phi0_rad", 0.0))),
              "# Phi_increment %.4f deg." % math.degrees(float(g.get("osc_rad", 0.0))),
              "# Oscillation_axis SPINDLE", "# N_oscillations 1"]
    return "\r\n".join(lines) + "\r\n"


def cbf_bytes(counts: "np.ndarray", header_text: str, name: str = "image") -> bytes:
    """A miniCBF file (byte-offset compressed signed 32-bit integers) of a 2-D
    count image (slow, fast) with the given Pilatus-style header text."""
    import tempfile
    import numpy as np
    cbfimage = _fabio_cbf()
    arr = np.asarray(counts)
    if arr.ndim != 2 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError(f"CBF: expected a 2-D integer image, got {arr.dtype} of shape {arr.shape}")
    if arr.size and (int(arr.max()) > 2**31 - 1 or int(arr.min()) < -2**31):
        raise ValueError("CBF: counts do not fit signed 32-bit integers")
    data = np.ascontiguousarray(arr, dtype=np.int32)
    header = {"_array_data.header_convention": CBF_CONVENTION, "_array_data.header_contents": header_text}
    img = cbfimage.CbfImage(data=data, header=header)
    # fabio writes to a path and names the CIF data block after it
    base = os.path.basename(name) or "image"
    with tempfile.TemporaryDirectory(prefix="nanobragg-cbf-") as d:
        p = os.path.join(d, base)
        img.write(p)
        with open(p, "rb") as f:
            return f.read()


def write_cbf(path: "Union[str, os.PathLike[str]]", counts: "np.ndarray", header_values: "Mapping[str, Any]",
              count_cutoff: "Optional[int]" = None) -> None:
    """Write ``counts`` (uint16 or int32 image) as a miniCBF with a Pilatus
    header from ``header_values`` (a geometry dict, see :func:`pilatus_header`),
    atomically.  ``count_cutoff``: default the image dtype's maximum."""
    import numpy as np
    from . import _io
    path = os.fspath(path)
    arr = np.asarray(counts)
    if count_cutoff is None:
        count_cutoff = int(np.iinfo(arr.dtype).max) if arr.dtype.kind in "iu" else 2**31 - 1
    _io.atomic_write(path, [cbf_bytes(arr, pilatus_header(header_values, count_cutoff), path)])


# ---------------------------------------------------------------------------
# PNG preview
# ---------------------------------------------------------------------------

def preview_8bit(image: "np.ndarray") -> "np.ndarray":
    """uint8 preview of an image: white background (up to the median plus
    three robust standard deviations), spots dark,
    log-stretched to the maximum so that weak and strong spots both show.
    Non-finite pixels are white."""
    import numpy as np
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"PNG: expected a 2-D image, got shape {a.shape}")
    finite = np.isfinite(a)
    if not finite.any():
        return np.full(a.shape, 255, dtype=np.uint8)
    vals = a[finite]
    # white up to the background's noise: median + 3 sigma (sigma from the MAD)
    med = float(np.median(vals))
    lo = med + 3.0 * 1.4826 * float(np.median(np.abs(vals - med)))
    hi = float(vals.max())
    if not hi > lo:
        return np.full(a.shape, 255, dtype=np.uint8)
    x = np.where(finite, a, lo) - lo
    np.clip(x, 0.0, None, out=x)
    # log1p(x / step) / log1p(span / step): step is a small fraction of the span
    step = max((hi - lo) * 1e-4, np.finfo(float).tiny)
    level = np.log1p(x / step) / math.log1p((hi - lo) / step)
    return (255.0 - np.round(255.0 * np.clip(level, 0.0, 1.0))).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(image: "np.ndarray") -> bytes:
    """An 8-bit greyscale PNG: a uint8 image as it is, any other image through
    :func:`preview_8bit`."""
    import numpy as np
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = preview_8bit(a)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"PNG: expected a 2-D image, got shape {a.shape}")
    h, w = a.shape
    raw = np.zeros((h, w + 1), dtype=np.uint8)     # filter type 0 (none) before each row
    raw[:, 1:] = a
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)   # 8-bit greyscale, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def write_png(path: "Union[str, os.PathLike[str]]", image: "np.ndarray") -> None:
    """Write an 8-bit PNG preview of ``image`` (float or integer), atomically."""
    from . import _io
    _io.atomic_write(os.fspath(path), [png_bytes(image)])


# ---------------------------------------------------------------------------
# SMV: the pedestal key DIALS reads
# ---------------------------------------------------------------------------

def smv_header_with_adc_offset(header: bytes, adc_offset: float) -> bytes:
    """An SMV header with ``ADC_OFFSET=<adc>;`` (rounded to an integer) added,
    in its padding when it fits, else grown by 512 bytes (HEADER_BYTES
    updated); the pixels follow it unchanged."""
    start = b"{\nHEADER_BYTES="
    if not header.startswith(start):
        raise ValueError("SMV: not an SMV image")
    end = header.index(b";", len(start))
    header_bytes = int(header[len(start):end])
    header = header[:header_bytes]
    close = header.rindex(b"}")
    text = header[:close]
    # an integer: DIALS reads the key with int()
    key = b"ADC_OFFSET=%d;\n" % int(round(adc_offset))
    tail = header[close:].rstrip(b" \0")        # "}\f"
    body = text + key + tail
    size = header_bytes
    while len(body) > size:
        size += 512
    if size != header_bytes:
        body = body.replace(b"HEADER_BYTES=%d;" % header_bytes, b"HEADER_BYTES=%d;" % size, 1)
        while len(body) > size:                   # the longer number may cross a boundary
            size += 512
            body = body.replace(b"HEADER_BYTES=%d;" % (size - 512), b"HEADER_BYTES=%d;" % size, 1)
    return body + b" " * (size - len(body))


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

def image_kind(head: bytes) -> str:
    """"smv", "cbf", "nexus" (HDF5) or "unknown", from a file's first bytes."""
    if head.startswith(b"{\nHEADER_BYTES=") or head.startswith(b"{\r\nHEADER_BYTES="):
        return "smv"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "nexus"
    if head.startswith(b"###CBF") or b"_array_data.data" in head[:65536]:
        return "cbf"
    return "unknown"


def _pilatus_values(text: str) -> "Dict[str, Any]":
    """The values of a Pilatus header text, as fabio's PilatusHeader parses them."""
    try:
        from fabio.cbfimage import PilatusHeader
        parsed = PilatusHeader(text)
        values = getattr(parsed, "_dict", None)
        return dict(values) if isinstance(values, dict) else {}
    except Exception:   # an unparsable vendor line: the raw text is still in the header
        return {}


def read_image(path: "Union[str, os.PathLike[str]]") -> "Tuple[np.ndarray, Dict[str, Any]]":
    """Read an SMV, CBF or NeXus/NXmx image (recognised by content): returns
    (pixels as a 2-D array, header as a dict).

    * SMV: uint16 pixels; the header keywords (numbers as int/float).
    * CBF: int32 pixels; fabio's header items plus the Pilatus header values
      (``Pixel_size`` (m, m), ``Wavelength`` (A), ``Detector_distance`` (m),
      ``Beam_xy`` (px, px), ``Start_angle``, ``Angle_increment`` (deg),
      ``Count_cutoff``, ``sensor`` (material, thickness m), ...).
    * NeXus: as :func:`nanobragg.nexus.read_nexus`."""
    path = os.fspath(path)
    from . import _io
    with open(path, "rb") as f:
        head = f.read(65536)
    kind = image_kind(head)
    if kind == "smv":
        import numpy as np
        from . import _core, api
        data = _io.read_input(path, "read_image", "img")
        try:
            smv = _core.parse_smv(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        header = api.parse_smv_header(bytes(data[:smv.header_bytes]))
        return np.array(smv.data, copy=True), header
    if kind == "cbf":
        import numpy as np
        cbfimage = _fabio_cbf()
        try:
            img = cbfimage.CbfImage(fname=path)
        except Exception as e:   # fabio raises many kinds for a damaged file
            raise ValueError(f"{path}: not a readable CBF image: {e}") from None
        items: Dict[str, Any] = dict(img.header)
        items.update(_pilatus_values(str(items.get("_array_data.header_contents", ""))))
        return np.asarray(img.data), items
    if kind == "nexus":
        try:
            from .nexus import read_nexus
        except ImportError as e:
            raise ImportError(f"{path}: reading NeXus files needs nanobragg.nexus and h5py ({e})") from None
        return read_nexus(path)
    raise ValueError(f"{path}: not an SMV, CBF or NeXus image")
