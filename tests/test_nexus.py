"""NXmx files: written by nanobragg.nexus, read back by the nxmx package
(the reader DIALS is built on) and by nanobragg.nexus.read_nexus."""

import math

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")  # in the test extra: installed in CI
nxmx = pytest.importorskip("nxmx")

import nanobragg
from nanobragg import nexus

BASE = dict(cell=(70, 80, 90, 90, 95, 90), default_F=100, N=3, wavelength=1.3, distance=120,
            detpixels_f=24, detpixels_s=20, pixel=0.11, phi=12, osc=0.4, oversample=1)
CASES = {
    "mosflm": {},
    "xds": {"xds": True},
    "tilted": {"detector_rotx": 5, "detector_roty": -3, "twotheta": 8, "Xbeam": 1.2, "Ybeam": 1.6},
    "dials": {"dials": True, "detector_rotz": 2},
}


def _lab_expected(g):
    """Beam centre (fast, slow; m from pixel (0,0)'s corner) and distance along the
    beam computed from nanoBragg's own vectors."""
    beam = np.array(g["beam"]) / np.linalg.norm(g["beam"])
    pix0, f, s, o = (np.array(g[k], dtype=float) for k in ("pix0_m", "fdet", "sdet", "odet"))
    t = np.dot(pix0, o) / np.dot(beam, o)
    hit = t * beam - pix0
    return np.dot(hit, f), np.dot(hit, s), t


@pytest.fixture(params=sorted(CASES))
def written(request, tmp_path):
    r = nanobragg.simulate(**BASE, **CASES[request.param])
    path = tmp_path / "one.h5"
    counts = r.noise_image(7)
    nexus.write_nexus(path, counts, r.geometry, float_image=r.float_image)
    return r, counts, path


def test_nxmx_reads_the_simulated_geometry(written):
    r, counts, path = written
    g = r.geometry
    R = nexus.lab_to_mcstas(g)
    with h5py.File(path, "r") as f:
        (entry,) = nxmx.NXmx(f).entries
        assert entry.definition == "NXmx"
        (inst,) = entry.instruments
        wl = inst.beams[0].incident_wavelength.to("angstrom").magnitude
        assert float(wl) == pytest.approx(g["lambda0_m"] * 1e10, rel=1e-12)
        det = inst.detectors[0]
        (mod,) = det.modules
        assert tuple(mod.data_size) == (g["spixels"], g["fpixels"])
        assert mod.fast_pixel_direction[()].to("m").magnitude.item() == pytest.approx(g["pixel_m"])
        assert mod.slow_pixel_direction[()].to("m").magnitude.item() == pytest.approx(g["pixel_m"])
        # the module's dependency chain puts pixel (0,0)'s corner at pix0 (mm, McStas)
        chain = nxmx.get_dependency_chain(mod.fast_pixel_direction.depends_on)
        origin_mm = nxmx.get_cumulative_transformation(chain)[0, :3, 3]
        np.testing.assert_allclose(origin_mm, R @ np.array(g["pix0_m"]) * 1e3, atol=1e-9)
        fast = np.array(mod.fast_pixel_direction.vector)
        slow = np.array(mod.slow_pixel_direction.vector)
        np.testing.assert_allclose(fast, R @ g["fdet"], atol=1e-12)
        np.testing.assert_allclose(slow, R @ g["sdet"], atol=1e-12)
        # the beam is McStas +z: where it meets the detector plane is the simulated beam centre
        normal = np.cross(fast, slow)
        t_mm = np.dot(origin_mm, normal) / normal[2]
        hit = np.array([0, 0, t_mm]) - origin_mm
        fb, sb, dist = _lab_expected(g)
        assert np.dot(hit, fast) == pytest.approx(fb * 1e3, abs=1e-9)
        assert np.dot(hit, slow) == pytest.approx(sb * 1e3, abs=1e-9)
        assert t_mm == pytest.approx(dist * 1e3, rel=1e-12)
        assert det.distance.to("m").magnitude == pytest.approx(g["distance_m"], rel=1e-12)
        assert det.beam_center_x.to("pixel").magnitude * g["pixel_m"] == pytest.approx(g["Fbeam_m"])
        assert det.beam_center_y.to("pixel").magnitude * g["pixel_m"] == pytest.approx(g["Sbeam_m"])
        # the goniometer: phi about the spindle, right-handed as nanoBragg turns the crystal
        axes = nxmx.get_rotation_axes(nxmx.get_dependency_chain(entry.samples[0].depends_on))
        np.testing.assert_allclose(axes.axes[0], R @ g["spindle"], atol=1e-12)
        assert axes.angles[0] == pytest.approx(math.degrees(g["phi0_rad"]))
        # the data
        data = entry.data[0]
        assert data.signal == "data"
        np.testing.assert_array_equal(data["data"][0], counts)


def test_mcstas_frame_is_a_rotation_with_the_beam_on_z(written):
    r, _, _ = written
    g = r.geometry
    R = nexus.lab_to_mcstas(g)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R @ (np.array(g["beam"]) / np.linalg.norm(g["beam"])), [0, 0, 1], atol=1e-12)


def test_read_nexus_round_trip(written):
    r, counts, path = written
    g = r.geometry
    arr, h = nexus.read_nexus(path)
    assert arr.dtype == counts.dtype
    np.testing.assert_array_equal(arr, counts)
    fl, _ = nexus.read_nexus(path, image="float_image")
    np.testing.assert_array_equal(fl, r.float_image)
    fb, sb, dist = _lab_expected(g)
    assert h["format"] == "nexus" and h["frames"] == 1
    assert (h["SIZE1"], h["SIZE2"]) == (g["fpixels"], g["spixels"])
    assert h["PIXEL_SIZE"] == pytest.approx(g["pixel_m"] * 1e3)
    assert h["WAVELENGTH"] == pytest.approx(g["lambda0_m"] * 1e10)
    assert h["DISTANCE"] == pytest.approx(g["distance_m"] * 1e3)
    assert h["CLOSE_DISTANCE"] == pytest.approx(g["close_distance_m"] * 1e3)
    assert h["BEAM_CENTER_X"] == pytest.approx(fb * 1e3, abs=1e-9)
    assert h["BEAM_CENTER_Y"] == pytest.approx(sb * 1e3, abs=1e-9)
    assert h["PHI"] == pytest.approx(12.0) and h["OSC_RANGE"] == pytest.approx(0.4)


@pytest.mark.parametrize("compression", ["gzip", "lzf", "bitshuffle", "lz4"])
def test_compressed_images_read_back_equal(tmp_path, compression):
    pytest.importorskip("hdf5plugin")
    r = nanobragg.simulate(**BASE)
    counts = r.noise_image(3)
    path = tmp_path / f"{compression}.h5"
    nexus.write_nexus(path, counts, r.geometry, compression=compression)
    with h5py.File(path, "r") as f:
        assert f["/entry/data/data"].compression is not None or f["/entry/data/data"]._filters
    np.testing.assert_array_equal(nexus.read_nexus(path)[0], counts)


def test_bad_input_is_one_clear_error(tmp_path):
    r = nanobragg.simulate(**BASE)
    with pytest.raises(nexus.NexusError, match="unknown compression"):
        nexus.write_nexus(tmp_path / "x.h5", r.int_image(), r.geometry, compression="zip")
    with pytest.raises(nexus.NexusError, match="pixels for a 24x20 detector"):
        nexus.write_nexus(tmp_path / "x.h5", np.zeros((5, 5), np.uint16), r.geometry)
    assert not list(tmp_path.iterdir())            # nothing half-written
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(nexus.NexusError, match="not a readable HDF5 file"):
        nexus.read_nexus(tmp_path / "junk.h5")


def test_master_over_data_files_is_one_scan(tmp_path):
    r = nanobragg.simulate(**BASE)
    g = r.geometry
    frames = [r.noise_image(k) for k in range(5)]
    nexus.write_data_file(tmp_path / "a.h5", np.stack(frames[:2]))
    nexus.write_data_file(tmp_path / "b.h5", np.stack(frames[2:]))
    phi = 12 + 0.4 * np.arange(5)
    nexus.write_master(tmp_path / "master.h5", g, [("a.h5", 2), ("b.h5", 3)], phi_deg=phi, osc_deg=0.4)
    with h5py.File(tmp_path / "master.h5", "r") as f:
        entry = nxmx.NXmx(f).entries[0]
        np.testing.assert_array_equal(entry.data[0]["data"][()], np.stack(frames))
        axes = nxmx.get_rotation_axes(nxmx.get_dependency_chain(entry.samples[0].depends_on))
        assert list(axes.is_scan_axis) == [True]
        phi_ds = entry.samples[0].depends_on
        np.testing.assert_allclose(phi_ds[()].to("deg").magnitude, phi)
    for i in (0, 3, 4):
        np.testing.assert_array_equal(nexus.read_nexus(tmp_path / "master.h5", i)[0], frames[i])


def test_mosflm_frame_matches_the_reference_dials_origin(tmp_path):
    # the SMV header's DIALS_ORIGIN is pix0 in the imgCIF frame; NeXus's McStas
    # frame is imgCIF turned half a turn about y (as DIALS converts it back)
    r = nanobragg.simulate(**BASE, Xbeam=1.0, Ybeam=1.9)
    path = tmp_path / "m.h5"
    nexus.write_nexus(path, r.int_image(), r.geometry)
    with h5py.File(path, "r") as f:
        mod = nxmx.NXmx(f).entries[0].instruments[0].detectors[0].modules[0]
        origin = nxmx.get_cumulative_transformation(
            nxmx.get_dependency_chain(mod.fast_pixel_direction.depends_on))[0, :3, 3]
    np.testing.assert_allclose(np.diag([-1, 1, -1]) @ origin, r.header["DIALS_ORIGIN"], atol=1e-4)


def test_command_and_result_write_the_same_nexus_image(tmp_path):
    """-nexus FILE (with -nexus_float) through the command and
    Result.write_nexus() hold the run's noise image, its float image and
    geometry that nxmx reads back; read_image() gives the counts."""
    import subprocess
    import sys
    args = ["-cell", "70", "80", "90", "90", "95", "90", "-default_F", "100", "-N", "3", "-lambda", "1.3",
            "-distance", "120", "-detpixels_f", "24", "-detpixels_s", "20", "-pixel", "0.11", "-oversample", "1",
            "-seed", "3", "-nexus", "cmd.h5", "-nexus_float", "-nexus_compression", "gzip"]
    p = subprocess.run([sys.executable, "-m", "nanobragg"] + args, cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "writing cmd.h5 as NXmx HDF5 of the noise image" in p.stdout
    noise = np.fromfile(tmp_path / "noiseimage.img", dtype=np.uint16, offset=512).reshape(20, 24)
    counts, header = nanobragg.read_image(tmp_path / "cmd.h5")
    assert np.array_equal(counts, noise)
    floats = np.fromfile(tmp_path / "floatimage.bin", dtype=np.float32).reshape(20, 24)
    with h5py.File(tmp_path / "cmd.h5") as f:
        assert np.array_equal(f["/entry/data/float_image"][0], floats)
        beam = nxmx.NXmx(f).entries[0].instruments[0].beams[0]
        assert math.isclose(float(beam.incident_wavelength.to("angstrom").magnitude), 1.3, rel_tol=1e-9)
    r = nanobragg.simulate(cell=(70, 80, 90, 90, 95, 90), default_F=100, N=3, wavelength=1.3, distance=120,
                           detpixels_f=24, detpixels_s=20, pixel=0.11, oversample=1, seed=3)
    r.write_nexus(tmp_path / "api.h5")
    assert np.array_equal(nanobragg.read_image(tmp_path / "api.h5")[0], noise)


def test_result_write_nexus_is_the_noise_or_int_image(tmp_path):
    r = nanobragg.simulate(**BASE)
    r.write_nexus(tmp_path / "n.h5", seed=11, float_image=True, compression="gzip")
    r.write_nexus(tmp_path / "i.h5", noise=False)
    np.testing.assert_array_equal(nexus.read_nexus(tmp_path / "n.h5")[0], r.noise_image(11))
    np.testing.assert_array_equal(nexus.read_nexus(tmp_path / "n.h5", image="float_image")[0], r.float_image)
    np.testing.assert_array_equal(nexus.read_nexus(tmp_path / "i.h5")[0], r.int_image())
    with pytest.raises(nexus.NexusError, match="no /entry/data/float_image"):
        nexus.read_nexus(tmp_path / "i.h5", image="float_image")
    with pytest.raises(nexus.NexusError, match="frame 1 out of range"):
        nexus.read_nexus(tmp_path / "i.h5", 1)


def test_same_bytes_when_another_thread_holds_the_writers_frames(tmp_path):
    # dask's profiler samples the running thread's frames, which keeps h5py
    # objects alive for a moment longer; the file's bytes must not depend on it
    import hashlib
    import random
    import sys
    import threading
    import time

    r = nanobragg.simulate(**BASE)
    g, counts = r.geometry, r.noise_image(1)
    main = threading.get_ident()
    stop = threading.Event()

    def sampler():
        held = []
        while not stop.is_set():
            f, stack = sys._current_frames().get(main), []
            while f is not None:
                stack.append(f)
                f = f.f_back
            held.append(stack)
            if len(held) > 3:
                held.pop(0)
            time.sleep(random.random() * 0.002)
        held.clear()

    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    seen = {"one": set(), "frame": set(), "master": set()}
    try:
        for _ in range(60):
            nexus.write_nexus(tmp_path / "one.h5", counts, g, float_image=r.float_image)
            nexus.write_data_file(tmp_path / "frame.h5", counts, float_image=r.float_image, attrs={"a": "b"})
            nexus.write_master(tmp_path / "master.h5", g, [("frame.h5", 1)], phi_deg=[0.0], osc_deg=0.1)
            for k in seen:
                seen[k].add(hashlib.sha256((tmp_path / f"{k}.h5").read_bytes()).hexdigest())
    finally:
        stop.set()
        t.join()
    assert {k: len(v) for k, v in seen.items()} == {"one": 1, "frame": 1, "master": 1}


def test_read_nexus_follows_detector_style_external_data_blocks(tmp_path):
    # masters as detectors write them: /entry/data/data_000001, ... external links
    r = nanobragg.simulate(**BASE)
    frames = np.stack([r.noise_image(k) for k in range(5)])
    nexus.write_nexus(tmp_path / "ref.h5", frames, r.geometry)
    nexus.write_data_file(tmp_path / "d1.h5", frames[:3])
    nexus.write_data_file(tmp_path / "d2.h5", frames[3:])
    import shutil
    shutil.copy(tmp_path / "ref.h5", tmp_path / "master.h5")
    with h5py.File(tmp_path / "master.h5", "a") as f:
        del f["/entry/data/data"]
        del f["/entry/instrument/detector/data"]
        f["/entry/data/data_000001"] = h5py.ExternalLink("d1.h5", "/entry/data/data")
        f["/entry/data/data_000002"] = h5py.ExternalLink("d2.h5", "/entry/data/data")
        f["/entry/data"].attrs.pop("signal")
    for i in range(5):
        arr, h = nexus.read_nexus(tmp_path / "master.h5", i)
        np.testing.assert_array_equal(arr, frames[i])
        assert h["frames"] == 5 and h["PHI"] == pytest.approx(12 + 0.4 * i)
    (tmp_path / "d2.h5").unlink()
    with pytest.raises(nexus.NexusError, match="not there"):
        nexus.read_nexus(tmp_path / "master.h5", 0)
