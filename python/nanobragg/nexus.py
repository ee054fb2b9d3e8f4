"""NeXus/NXmx HDF5 files: one image, or the pieces of a multi-frame dataset.

The geometry comes from :attr:`nanobragg.Result.geometry` (SI, nanoBragg's lab
frame) and is written in the NeXus McStas frame (z along the beam, y up), the
frame of the NXmx application definition that DIALS reads through the ``nxmx``
package:

* ``/entry/instrument/detector``: a translation along the detector normal by the
  closest distance, then ``module_offset`` (in the detector plane, to the corner
  of pixel (0, 0), nanoBragg's pix0), then ``fast_pixel_direction`` and
  ``slow_pixel_direction`` (the pixel size along fdet and sdet);
* ``/entry/sample``: the goniometer's phi, a rotation about the spindle, one
  value per frame (the start of its oscillation);
* ``/entry/instrument/beam/incident_wavelength``: one value, or one per frame.

h5py writes the files; hdf5plugin provides the bitshuffle/LZ4 filters when they
are asked for.  Both are imported only here, only when used.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["write_nexus", "read_nexus", "write_data_file", "write_master", "lab_to_mcstas",
           "compression_options", "NexusError"]

PathLike = Union[str, "os.PathLike[str]"]

# nanoBragg's MOSFLM-style lab frame (beam along +x, spindle +z) to McStas:
# the same axes the reference's DIALS_ORIGIN uses (imgCIF: x_nb->-z, z_nb->x),
# then imgCIF -> McStas is a 180 degree turn about y.
_MOSFLM_TO_MCSTAS = np.array([[0.0, 0.0, -1.0],
                              [0.0, 1.0, 0.0],
                              [1.0, 0.0, 0.0]])


class NexusError(ValueError):
    """A NeXus file that cannot be written or read as asked (one-line message)."""


def _h5py():
    try:
        import h5py
    except ImportError:
        raise NexusError("NeXus files need h5py: pip install 'nanobragg[nexus]'") from None
    return h5py


def _unit(v) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(3)
    n = float(np.linalg.norm(a))
    if not n > 0 or not math.isfinite(n):
        raise NexusError(f"geometry: a direction vector is zero or not finite: {tuple(a)}")
    return a / n


def _turn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector a to unit vector b."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -1.0 + 1e-12:  # opposite: half a turn about an axis normal to a
        axis = np.cross(a, [0.0, 1.0, 0.0] if abs(a[1]) < 0.9 else [1.0, 0.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def lab_to_mcstas(geometry: Mapping[str, Any]) -> np.ndarray:
    """The rotation from nanoBragg's lab frame to the McStas frame (3x3).

    The beam goes to +z.  For nanoBragg's own frame (beam +x) this is the fixed
    axis swap of the reference's DIALS_ORIGIN; another beam direction (-xds,
    -beam_vector) is first turned onto +x by the smallest rotation."""
    beam = _unit(geometry["beam"])
    return _MOSFLM_TO_MCSTAS @ _turn(beam, np.array([1.0, 0.0, 0.0]))


def compression_options(compression: Optional[str]) -> Dict[str, Any]:
    """h5py create_dataset() keywords for a compression name.

    None/"none"; "gzip" or "gzip:LEVEL"; "lzf"; "bitshuffle" (bitshuffle+LZ4,
    as detectors write, needs hdf5plugin); "lz4" (needs hdf5plugin)."""
    if compression is None or compression == "none":
        return {}
    name, _, level = str(compression).partition(":")
    if name == "gzip":
        try:
            lev = int(level) if level else 4
        except ValueError:
            lev = -1
        if not 0 <= lev <= 9:
            raise NexusError(f"compression {compression!r}: the gzip level is 0..9")
        return {"compression": "gzip", "compression_opts": lev}
    if name == "lzf" and not level:
        return {"compression": "lzf"}
    if name in ("bitshuffle", "lz4") and not level:
        try:
            import hdf5plugin
        except ImportError:
            raise NexusError(f"compression {name!r} needs hdf5plugin: pip install hdf5plugin") from None
        f = hdf5plugin.Bitshuffle(cname="lz4") if name == "bitshuffle" else hdf5plugin.LZ4()
        return dict(f)
    raise NexusError(f"unknown compression {compression!r} (none, gzip[:LEVEL], lzf, bitshuffle, lz4)")


def _plugins_for_reading() -> None:
    # registers the bitshuffle/LZ4 filters with HDF5 when installed; files
    # written without them read without it
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        pass


def _str(group, name: str, value: str) -> None:
    group.create_dataset(name, data=np.bytes_(value.encode()))


def _nxgroup(parent, name: str, nx_class: str):
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _axis(group, name: str, value, *, kind: str, vector, units: str, depends_on: str,
          offset=None, component: Optional[str] = None):
    ds = group.create_dataset(name, data=np.asarray(value, dtype=np.float64))
    ds.attrs["transformation_type"] = kind
    ds.attrs["vector"] = np.asarray(vector, dtype=np.float64)
    ds.attrs["units"] = units
    ds.attrs["depends_on"] = depends_on
    if offset is not None:
        ds.attrs["offset"] = np.asarray(offset, dtype=np.float64)
        ds.attrs["offset_units"] = "m"
    if component:
        ds.attrs["equipment_component"] = component
    return ds


def _detector_frame(geometry: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Detector vectors and positions in McStas (metres)."""
    R = lab_to_mcstas(geometry)
    f = R @ _unit(geometry["fdet"])
    s = R @ _unit(geometry["sdet"])
    o = R @ _unit(geometry["odet"])
    pix0 = R @ np.asarray(geometry["pix0_m"], dtype=np.float64)
    close = float(np.dot(pix0, o))           # sample to detector plane along its normal
    in_plane = pix0 - close * o               # from the normal's foot to pixel (0, 0)'s corner
    return {"R": R, "fast": f, "slow": s, "normal": o, "pix0": pix0, "close": np.float64(close),
            "in_plane": in_plane, "spindle": R @ _unit(geometry["spindle"])}


def _write_metadata(entry, geometry: Mapping[str, Any], *, phi_deg: Sequence[float], osc_deg: float,
                    wavelength_m: Union[float, Sequence[float]], nframes: int, stills: bool,
                    saturation: Optional[int], extra: Optional[Mapping[str, Any]],
                    per_frame: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
    """Everything but the images: instrument, beam, detector chain, sample chain.
    Each object is written once (nothing is deleted or rewritten): the file's
    layout then follows from what is written alone."""
    d = _detector_frame(geometry)
    close, n_in, offset_vec, dist, fbeam, sbeam = _detector_values(geometry, d, per_frame)
    _str(entry, "definition", "NXmx")
    src = _nxgroup(entry, "source", "NXsource")
    _str(src, "name", "nanoBragg simulation")
    inst = _nxgroup(entry, "instrument", "NXinstrument")
    _str(inst, "name", "nanoBragg")

    beam = _nxgroup(inst, "beam", "NXbeam")
    wl = np.asarray(wavelength_m, dtype=np.float64) * 1e10
    ds = beam.create_dataset("incident_wavelength", data=wl if wl.ndim == 0 or wl.size > 1 else wl.reshape(()))
    ds.attrs["units"] = "angstrom"
    if geometry.get("flux"):
        ds = beam.create_dataset("total_flux", data=np.float64(geometry["flux"]))
        ds.attrs["units"] = "Hz"

    det = _nxgroup(inst, "detector", "NXdetector")
    tr = _nxgroup(det, "transformations", "NXtransformations")
    _axis(tr, "translation", close, kind="translation", vector=d["normal"], units="m",
          depends_on=".", component="detector_arm")
    det.create_dataset("depends_on", data=np.bytes_(f"{tr.name}/translation".encode()))
    ds = det.create_dataset("distance", data=dist)
    ds.attrs["units"] = "m"
    pixel = float(geometry["pixel_m"])
    for name, value in (("beam_center_x", fbeam), ("beam_center_y", sbeam)):
        ds = det.create_dataset(name, data=value / pixel)
        ds.attrs["units"] = "pixel"
    _str(det, "description", "nanoBragg simulated pixel-array detector")
    _str(det, "type", "pixel")
    _str(det, "sensor_material", "Si")
    ds = det.create_dataset("sensor_thickness", data=np.float64(geometry.get("thick_m", 0.0) or 0.0))
    ds.attrs["units"] = "m"
    if geometry.get("exposure_s") is not None:
        ds = det.create_dataset("count_time", data=np.float64(geometry["exposure_s"]))
        ds.attrs["units"] = "s"
    if saturation is not None:
        det.create_dataset("saturation_value", data=np.int64(saturation))
        det.create_dataset("underload_value", data=np.int64(-1))

    mod = _nxgroup(det, "module", "NXdetector_module")
    spix, fpix = int(geometry["spixels"]), int(geometry["fpixels"])
    mod.create_dataset("data_origin", data=np.array([0, 0], dtype=np.int64))
    mod.create_dataset("data_size", data=np.array([spix, fpix], dtype=np.int64))
    _axis(mod, "module_offset", n_in, kind="translation", vector=offset_vec, units="m",
          depends_on=f"{tr.name}/translation", component="detector_module")
    _axis(mod, "fast_pixel_direction", pixel, kind="translation", vector=d["fast"], units="m",
          depends_on=f"{mod.name}/module_offset", offset=[0.0, 0.0, 0.0], component="detector_module")
    _axis(mod, "slow_pixel_direction", pixel, kind="translation", vector=d["slow"], units="m",
          depends_on=f"{mod.name}/module_offset", offset=[0.0, 0.0, 0.0], component="detector_module")

    sample = _nxgroup(entry, "sample", "NXsample")
    _str(sample, "name", "nanoBragg crystal")
    st = _nxgroup(sample, "transformations", "NXtransformations")
    phi = np.asarray(phi_deg, dtype=np.float64).reshape(-1)
    if phi.size != nframes:
        raise NexusError(f"phi: {phi.size} values for {nframes} frames")
    _axis(st, "phi", phi, kind="rotation", vector=d["spindle"], units="deg", depends_on=".")
    ds = st.create_dataset("phi_increment_set", data=np.float64(0.0 if stills else osc_deg))
    ds.attrs["units"] = "deg"
    ds = st.create_dataset("phi_end", data=phi + (0.0 if stills else osc_deg))
    ds.attrs["units"] = "deg"
    sample.create_dataset("depends_on", data=np.bytes_(f"{st.name}/phi".encode()))
    # older NXmx readers look for the beam in the sample; a soft link leaves
    # the beam's own object header untouched
    sample["beam"] = _h5py().SoftLink(beam.name)

    # nanoBragg's own record: the SI geometry, so that a reader needs no NeXus
    nb = _nxgroup(entry, "nanobragg", "NXcollection")
    nb.attrs["scan"] = "stills" if stills else "rotation"
    nb.attrs["osc_deg"] = float(osc_deg)
    for key in ("fdet", "sdet", "odet", "beam", "spindle", "pix0_m", "pixel_m", "distance_m",
                "close_distance_m", "lambda0_m", "Fbeam_m", "Sbeam_m", "fpixels", "spixels",
                "convention"):
        if key in geometry and geometry[key] is not None:
            v = geometry[key]
            nb.attrs[key] = v if isinstance(v, str) else np.asarray(v)
    nb.attrs["lab_to_mcstas"] = d["R"]
    for k, v in (extra or {}).items():
        nb.attrs[k] = v


def _image_stack(a, name: str, nframes: Optional[int] = None) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise NexusError(f"{name}: expected a 2-D image or a 3-D stack of images, got shape {arr.shape}")
    if nframes is not None and arr.shape[0] != nframes:
        raise NexusError(f"{name}: {arr.shape[0]} frames where {nframes} were expected")
    return np.ascontiguousarray(arr)


def _check_shape(arr: np.ndarray, geometry: Mapping[str, Any], name: str) -> None:
    want = (int(geometry["spixels"]), int(geometry["fpixels"]))
    if tuple(arr.shape[1:]) != want:
        raise NexusError(f"{name}: images of {arr.shape[2]}x{arr.shape[1]} pixels for a "
                         f"{want[1]}x{want[0]} detector (fast x slow)")


def _saturation(dtype: np.dtype) -> Optional[int]:
    return int(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else None


def _image_dataset(group, name: str, arr: np.ndarray, compression: Optional[str]):
    opts = compression_options(compression)
    return group.create_dataset(name, data=arr, chunks=(1,) + arr.shape[1:], **opts)


def _atomic_h5(path: PathLike, build, atomic: bool = True) -> None:
    """Write an HDF5 file the way every output is written (nanobragg._io):
    under a temporary name, then renamed into place, so that readers see no
    file or the whole file, never a half-written one.  atomic=False writes
    path itself (a caller's temporary file)."""
    h5py = _h5py()
    from ._io import atomic_write

    def write(tmp: str) -> None:
        # The same frame must give the same bytes, but where HDF5 puts a
        # chunk or a group's heap can depend on when Python releases an h5py
        # object (later, when a profiler - dask's - or a debugger holds the
        # frame).  So: the HDF5 1.10 format (as VDS needs anyway), whose
        # compact groups have no local heap, and no raw-data chunk cache, so
        # that every chunk is placed when it is written, not when its dataset
        # is closed.
        with h5py.File(tmp, "w", libver=("v110", "v110"), rdcc_nbytes=0) as f:
            build(f)

    if atomic:
        atomic_write(path, write=write)
    else:
        write(os.fspath(path))


def write_nexus(path: PathLike, counts, geometry: Mapping[str, Any], *, float_image=None,
                phi_deg: Optional[Union[float, Sequence[float]]] = None, osc_deg: Optional[float] = None,
                wavelength_m: Optional[Union[float, Sequence[float]]] = None, stills: bool = False,
                compression: Optional[str] = None, extra: Optional[Mapping[str, Any]] = None,
                atomic: bool = True) -> None:
    """Write one NXmx file holding the images in ``/entry/data/data``.

    counts: a 2-D image (or an (n, slow, fast) stack, one scan of n frames);
    geometry: :attr:`Result.geometry`; float_image: optionally the float
    image(s) too, as ``/entry/data/float_image``; phi_deg/osc_deg: the
    oscillation start of each frame and its width (default: the geometry's
    phi and osc); stills: the frames are stills (phi does not advance);
    compression: see :func:`compression_options`.  Written atomically
    (atomic=False: into path as it is, for a caller's temporary file)."""
    data = _image_stack(counts, "counts")
    _check_shape(data, geometry, "counts")
    n = data.shape[0]
    fl = None
    if float_image is not None:
        fl = _image_stack(np.asarray(float_image, dtype=np.float32), "float_image", n)
        _check_shape(fl, geometry, "float_image")
    osc = math.degrees(float(geometry.get("osc_rad", 0.0))) if osc_deg is None else float(osc_deg)
    if phi_deg is None:
        phi0 = math.degrees(float(geometry.get("phi0_rad", 0.0)))
        phi = phi0 + osc * np.arange(n) if not stills else np.full(n, phi0)
    else:
        phi = np.broadcast_to(np.asarray(phi_deg, dtype=np.float64), (n,)).copy() if np.ndim(phi_deg) == 0 \
            else np.asarray(phi_deg, dtype=np.float64)
    wl = float(geometry["lambda0_m"]) if wavelength_m is None else wavelength_m
    compression_options(compression)  # a bad name fails before the file is made

    h5py = _h5py()

    def build(f):
        entry = _nxgroup(f, "entry", "NXentry")
        entry.attrs["default"] = "data"
        _write_metadata(entry, geometry, phi_deg=phi, osc_deg=osc, wavelength_m=wl, nframes=n,
                        stills=stills, saturation=_saturation(data.dtype), extra=extra)
        grp = _nxgroup(entry, "data", "NXdata")
        grp.attrs["signal"] = "data"
        _image_dataset(grp, "data", data, compression)
        entry["instrument/detector/data"] = h5py.SoftLink("/entry/data/data")
        if fl is not None:
            _image_dataset(grp, "float_image", fl, compression)

    _atomic_h5(path, build, atomic)


def write_data_file(path: PathLike, counts, *, float_image=None, compression: Optional[str] = None,
                    attrs: Optional[Mapping[str, Any]] = None) -> None:
    """A data file of a multi-frame dataset: ``/entry/data/data`` (n, slow, fast)
    and optionally ``/entry/data/float_image``; the master's virtual datasets
    point here.  Written atomically (complete or absent)."""
    data = _image_stack(counts, "counts")
    fl = None if float_image is None else _image_stack(np.asarray(float_image, dtype=np.float32),
                                                        "float_image", data.shape[0])
    compression_options(compression)

    def build(f):
        entry = _nxgroup(f, "entry", "NXentry")
        grp = _nxgroup(entry, "data", "NXdata")
        grp.attrs["signal"] = "data"
        _image_dataset(grp, "data", data, compression)
        if fl is not None:
            _image_dataset(grp, "float_image", fl, compression)
        for k, v in (attrs or {}).items():
            grp.attrs[k] = v

    _atomic_h5(path, build)


def write_master(path: PathLike, geometry: Mapping[str, Any], sources: Sequence[Tuple[str, int]], *,
                 phi_deg: Sequence[float], osc_deg: float, stills: bool = False,
                 wavelength_m: Optional[Union[float, Sequence[float]]] = None,
                 dtype="uint16", float_image: bool = False,
                 extra: Optional[Mapping[str, Any]] = None,
                 per_frame: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
    """The NXmx master of a multi-frame dataset.

    sources: (data file path relative to the master, frames in it), in frame
    order; ``/entry/data/data`` (and ``float_image`` when float_image=True) is
    a virtual dataset over their ``/entry/data/data``.  phi_deg: one value per
    frame (a rotation scan: start + i*osc; stills: the fixed phi).
    per_frame: each frame's geometry, for stills whose detector distance or
    beam centre vary: the detector translation and module offset then carry
    one value per frame.  A data file that is missing reads as zeros.
    Written atomically."""
    h5py = _h5py()
    n = sum(int(k) for _, k in sources)
    if n == 0:
        raise NexusError("a master file needs at least one frame")
    shape = (int(geometry["spixels"]), int(geometry["fpixels"]))
    dt = np.dtype(dtype)
    wl = float(geometry["lambda0_m"]) if wavelength_m is None else wavelength_m

    def virtual(group, name: str, dt: np.dtype):
        # h5py's VirtualLayout stamps the dataset with the time of day; the
        # same description must give the same master bytes, so the property
        # list is made here with times off
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_obj_track_times(False)
        dcpl.set_fill_value(np.zeros(1, dtype=dt))
        vspace = h5py.h5s.create_simple((n,) + shape)
        i = 0
        for rel, k in sources:
            k = int(k)
            vspace.select_hyperslab((i, 0, 0), (k,) + shape)
            src = h5py.h5s.create_simple((k,) + shape)
            dcpl.set_virtual(vspace, rel.encode(), f"/entry/data/{name}".encode(), src)
            i += k
        vspace.select_all()
        tid = h5py.h5t.py_create(dt, logical=1)
        dsid = h5py.h5d.create(group.id, name.encode(), tid, vspace, dcpl=dcpl)
        return h5py.Dataset(dsid)

    def build(f):
        entry = _nxgroup(f, "entry", "NXentry")
        entry.attrs["default"] = "data"
        _write_metadata(entry, geometry, phi_deg=phi_deg, osc_deg=osc_deg, wavelength_m=wl, nframes=n,
                        stills=stills, saturation=_saturation(dt), extra=extra, per_frame=per_frame)
        grp = _nxgroup(entry, "data", "NXdata")
        grp.attrs["signal"] = "data"
        virtual(grp, "data", dt)
        entry["instrument/detector/data"] = h5py.SoftLink("/entry/data/data")
        if float_image:
            virtual(grp, "float_image", np.dtype(np.float32))

    _atomic_h5(path, build)


def _detector_values(geometry: Mapping[str, Any], d0: Dict[str, np.ndarray],
                     per_frame: Optional[Sequence[Mapping[str, Any]]]):
    """The detector's translation, module offset (length and direction),
    distance and beam centre: scalars, or one value per frame when the frames'
    detectors differ by a move along the normal or within the plane (stills
    drawn with another distance or beam centre)."""
    def scalars(g, d):
        n_in = float(np.linalg.norm(d["in_plane"]))
        return (d["close"], n_in, d["in_plane"] / n_in if n_in > 0 else d["fast"],
                np.float64(g["distance_m"]), np.float64(g["Fbeam_m"]), np.float64(g["Sbeam_m"]))

    first = scalars(geometry, d0)
    if per_frame is None:
        return first
    ds = [_detector_frame(g) for g in per_frame]
    close = np.array([d["close"] for d in ds])
    off = np.array([d["in_plane"] for d in ds])
    if np.ptp(close) == 0 and np.ptp(off, axis=0).max() == 0:
        return first
    same_axes = all(np.allclose(d[k], d0[k], rtol=0, atol=1e-12) for d in ds for k in ("fast", "slow", "normal"))
    norms = np.linalg.norm(off, axis=1)
    direction = off[int(np.argmax(norms))] / norms.max() if norms.max() > 0 else d0["fast"]
    if not (same_axes and np.allclose(off, np.outer(norms, direction), rtol=0, atol=1e-12)):
        raise NexusError("the frames' detectors are turned differently: one NXmx master cannot describe them")
    return (close, norms, direction, np.array([float(g["distance_m"]) for g in per_frame]),
            np.array([float(g["Fbeam_m"]) for g in per_frame]), np.array([float(g["Sbeam_m"]) for g in per_frame]))


def read_nexus(path: PathLike, index: int = 0, *, image: str = "data") -> Tuple[np.ndarray, Dict[str, Any]]:
    """Read frame ``index`` of an NXmx file and its geometry.

    Returns (array (slow, fast), header dict).  image="float_image" reads the
    float image when the file holds one.  The header has the SMV-style
    keywords nanoBragg writes (SIZE1/SIZE2, PIXEL_SIZE and DISTANCE in mm,
    WAVELENGTH in A, PHI/OSC_START/OSC_RANGE in degrees, BEAM_CENTER_X/Y in mm
    from the corner of pixel (0, 0) along fast/slow) plus ``frames`` and, in
    the McStas frame, ``fast_axis``, ``slow_axis``, ``origin_mm``."""
    h5py = _h5py()
    _plugins_for_reading()
    path = os.fspath(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise NexusError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        entry = _find_nxmx_entry(f, path)
        grp = entry.get("data")
        blocks = _image_blocks(grp, image, path)
        frames = sum(1 if b.ndim == 2 else b.shape[0] for b in blocks)
        if not -frames <= index < frames:
            raise NexusError(f"{path}: frame {index} out of range (the file has {frames})")
        k = index % frames
        for ds in blocks:
            n = 1 if ds.ndim == 2 else ds.shape[0]
            if k < n:
                break
            k -= n
        try:
            arr = np.asarray(ds[()] if ds.ndim == 2 else ds[k])
        except (OSError, KeyError) as e:
            raise NexusError(f"{path}: cannot read frame {index} ({e}; is hdf5plugin installed, "
                             f"are the data files beside the master?)") from None
        header = _header(entry, path, frames, index % frames if frames else 0)
    return arr, header


def _image_blocks(grp, image: str, path: str) -> list:
    """The datasets holding the images, in frame order: ``data`` (or the
    NXdata's signal), or, as detectors' master files have them, the
    ``data_000001``, ``data_000002``, ... blocks (external links)."""
    if grp is None:
        raise NexusError(f"{path}: no /entry/data")
    name = image
    if image == "data" and "data" not in grp:
        name = _attr_str(grp, "signal") or "data"
    if name in grp:
        found = [grp[name]]
    elif image == "data":
        names = sorted(k for k in grp if k.startswith("data_") and k[5:].isdigit())
        found = []
        for k in names:
            try:
                found.append(grp[k])
            except KeyError:        # an external link whose file is missing
                raise NexusError(f"{path}: /entry/data/{k} points to a file that is not there") from None
    else:
        found = []
    if not found:
        raise NexusError(f"{path}: no /entry/data/{image}")
    for ds in found:
        if ds.ndim not in (2, 3):
            raise NexusError(f"{path}: {ds.name} has {ds.ndim} dimensions")
    return found


def _find_nxmx_entry(f, path: str):
    for name in f:
        g = f[name]
        if isinstance(g, _h5py().Group) and _attr_str(g, "NX_class") == "NXentry":
            d = g.get("definition")
            if d is not None and _as_str(d[()]) == "NXmx":
                return g
    raise NexusError(f"{path}: no NXentry with definition NXmx")


def _as_str(v) -> str:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return _as_str(v.reshape(-1)[0])
    return str(v)


def _attr_str(node, name: str) -> Optional[str]:
    v = node.attrs.get(name)
    return None if v is None else _as_str(v)


_TO_M = {"m": 1.0, "metre": 1.0, "meter": 1.0, "mm": 1e-3, "millimetre": 1e-3, "millimeter": 1e-3,
         "um": 1e-6, "microns": 1e-6, "micron": 1e-6, "cm": 1e-2, "nm": 1e-9}
_TO_DEG = {"deg": 1.0, "degree": 1.0, "degrees": 1.0, "rad": 180.0 / math.pi, "radian": 180.0 / math.pi,
           "radians": 180.0 / math.pi}
_TO_A = {"angstrom": 1.0, "angstroms": 1.0, "a": 1.0, "nm": 10.0, "m": 1e10}


def _scale(node, table: Dict[str, float], path: str) -> float:
    u = (_attr_str(node, "units") or "").strip().lower()
    if u not in table:
        raise NexusError(f"{path}: {node.name} has units {u!r}")
    return table[u]


def _axis_matrix(ds, path: str, index: int) -> np.ndarray:
    """The 4x4 matrix of one transformation axis at frame index."""
    v = np.atleast_1d(ds[()]).astype(np.float64)
    value = float(v[index] if v.size > 1 else v[0])
    vec = np.asarray(ds.attrs["vector"], dtype=np.float64).reshape(3)
    kind = _attr_str(ds, "transformation_type")
    A = np.eye(4)
    if kind == "rotation":
        ang = math.radians(value * _scale(ds, _TO_DEG, path))
        u = vec / np.linalg.norm(vec)
        K = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
        A[:3, :3] = np.eye(3) + math.sin(ang) * K + (1 - math.cos(ang)) * K @ K
    elif kind == "translation":
        A[:3, 3] = value * _scale(ds, _TO_M, path) * vec
    off = ds.attrs.get("offset")
    if off is not None:
        unit = _attr_str(ds, "offset_units") or _attr_str(ds, "units") or "m"
        A[:3, 3] += np.asarray(off, dtype=np.float64) * _TO_M.get(unit.lower(), 1.0)
    return A


def _chain(f, start, path: str, index: int) -> np.ndarray:
    """Cumulative transformation of a depends_on chain (closest axis last applied)."""
    A = np.eye(4)
    node = start
    seen = 0
    while node is not None:
        A = _axis_matrix(node, path, index) @ A
        dep = _attr_str(node, "depends_on")
        seen += 1
        if not dep or dep == "." or seen > 64:
            break
        node = node.parent[dep]
    return A


def _header(entry, path: str, frames: int, index: int) -> Dict[str, Any]:
    h: Dict[str, Any] = {"format": "nexus", "frames": frames, "index": index}
    inst = entry.get("instrument")
    det = inst.get("detector") if inst is not None else None
    beam = (inst.get("beam") if inst is not None else None) or entry.get("sample/beam")
    if beam is not None and "incident_wavelength" in beam:
        wl = beam["incident_wavelength"]
        w = np.atleast_1d(wl[()]).astype(np.float64)
        h["WAVELENGTH"] = float(w[index] if w.size > 1 else w[0]) * _scale(wl, _TO_A, path)
    if det is not None:
        mod = next((det[k] for k in det if _attr_str(det[k], "NX_class") == "NXdetector_module"), None)
        if mod is not None:
            fast, slow = mod["fast_pixel_direction"], mod["slow_pixel_direction"]
            size = np.asarray(mod["data_size"][()]).reshape(-1)
            h["SIZE1"], h["SIZE2"] = int(size[-1]), int(size[-2])
            pixel_m = float(np.atleast_1d(fast[()])[0]) * _scale(fast, _TO_M, path)
            h["PIXEL_SIZE"] = pixel_m * 1e3
            A = _chain(entry.file, fast.parent[_attr_str(fast, "depends_on")], path, index)
            R = A[:3, :3]
            fa = R @ np.asarray(fast.attrs["vector"], dtype=np.float64)
            sa = R @ np.asarray(slow.attrs["vector"], dtype=np.float64)
            origin = A[:3, 3]
            normal = np.cross(fa, sa)
            h["fast_axis"] = tuple(float(x) for x in fa)
            h["slow_axis"] = tuple(float(x) for x in sa)
            h["origin_mm"] = tuple(float(x) * 1e3 for x in origin)
            # where the beam (McStas +z) meets the detector plane
            bz = normal[2]
            if abs(bz) > 1e-12:
                t = float(np.dot(origin, normal)) / bz
                hit = np.array([0.0, 0.0, t]) - origin
                h["BEAM_CENTER_X"] = float(np.dot(hit, fa)) * 1e3
                h["BEAM_CENTER_Y"] = float(np.dot(hit, sa)) * 1e3
                h["DISTANCE"] = t * 1e3
            h["CLOSE_DISTANCE"] = abs(float(np.dot(origin, normal))) * 1e3
        if "distance" in det:
            dv = np.atleast_1d(det["distance"][()]).astype(np.float64)
            h["DISTANCE"] = float(dv[index] if dv.size > 1 else dv[0]) * _scale(det["distance"], _TO_M, path) * 1e3
    sample = entry.get("sample")
    if sample is not None and "transformations/phi" in sample:
        phi = sample["transformations/phi"]
        p = np.atleast_1d(phi[()]).astype(np.float64) * _scale(phi, _TO_DEG, path)
        h["PHI"] = h["OSC_START"] = float(p[index] if p.size > 1 else p[0])
        inc = sample.get("transformations/phi_increment_set")
        h["OSC_RANGE"] = float(np.atleast_1d(inc[()])[0]) * _scale(inc, _TO_DEG, path) if inc is not None else 0.0
    nb = entry.get("nanobragg")
    if nb is not None:
        h["scan"] = _attr_str(nb, "scan")
    return h
