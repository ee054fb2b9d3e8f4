"""Datasets: same bytes serially, on a 2-worker dask LocalCluster and frame by
frame; resumable after a kill; descriptions checked."""

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")          # test extra: installed in CI
nxmx = pytest.importorskip("nxmx")
distributed = pytest.importorskip("dask.distributed")

from nanobragg import dataset, nexus

ARGS = "-cell 70 80 90 90 95 90 -default_F 100 -N 3 -distance 100 -detpixels 32 -pixel 0.1 -oversample 1"
ROTATION = f"""
args = "{ARGS}"
frames = 12
seed = 5
[rotation]
phi_start = 10
osc = 0.5
"""
STILLS = f"""
args = "{ARGS} -mosaic 0.2 -mosaic_domains 3"
frames = 16
seed = 9
images = ["counts", "float"]
[stills]
random_orientation = true
wavelength = {{normal = [1.0, 0.01]}}
distance = {{uniform = [90, 110]}}
N = {{integers = [3, 6]}}
"""


@pytest.fixture(scope="module")
def cluster():
    import logging
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=":0", silence_logs=logging.ERROR)
    yield c
    c.close()


def _files(out, spec):
    return {i: open(os.path.join(out, dataset.frame_name(spec, i)), "rb").read() for i in range(spec.frames)}


@pytest.mark.parametrize("text", [ROTATION, STILLS], ids=["rotation12", "stills16"])
def test_same_bytes_serial_cluster_and_single_frames(tmp_path, cluster, text):
    spec = dataset.load_spec(text)
    serial = dataset.run(spec, tmp_path / "serial", workers=0)
    assert serial.ok and serial.rendered == list(range(spec.frames))
    par = dataset.run(spec, tmp_path / "cluster", scheduler=cluster.scheduler_address)
    assert par.ok and par.rendered == list(range(spec.frames)) and par.workers == 2
    a, b = _files(tmp_path / "serial", spec), _files(tmp_path / "cluster", spec)
    assert a == b
    assert (tmp_path / "serial/master.h5").read_bytes() == (tmp_path / "cluster/master.h5").read_bytes()
    assert (tmp_path / "serial/frames.csv").read_bytes() == (tmp_path / "cluster/frames.csv").read_bytes()
    for i in (0, 7, spec.frames - 1):
        one = tmp_path / f"one{i}"
        s = dataset.run(spec, one, workers=0, frames=[i])
        assert s.rendered == [i]
        assert open(one / dataset.frame_name(spec, i), "rb").read() == a[i]
    # frames differ from each other (the seeds and angles do change per frame)
    imgs = [nexus.read_nexus(tmp_path / "cluster/master.h5", i)[0] for i in range(spec.frames)]
    assert len({im.tobytes() for im in imgs}) == spec.frames


def test_rotation_master_is_one_scan_for_nxmx(tmp_path, cluster):
    spec = dataset.load_spec(ROTATION)
    dataset.run(spec, tmp_path, scheduler=cluster.scheduler_address)
    with h5py.File(tmp_path / "master.h5", "r") as f:
        (entry,) = nxmx.NXmx(f).entries
        data = entry.data[0][entry.data[0].signal]
        assert data.shape == (12, 32, 32) and data.dtype == np.uint16
        phi = entry.samples[0].depends_on
        np.testing.assert_allclose(phi[()].to("deg").magnitude, 10 + 0.5 * np.arange(12))
        axes = nxmx.get_rotation_axes(nxmx.get_dependency_chain(phi))
        assert list(axes.is_scan_axis) == [True]
        for i in (0, 11):
            arr, h = nexus.read_nexus(tmp_path / "master.h5", i)
            assert h["PHI"] == pytest.approx(10 + 0.5 * i) and h["OSC_RANGE"] == pytest.approx(0.5)
            np.testing.assert_array_equal(arr, data[i])


def test_stills_master_has_n_stills_with_their_geometry(tmp_path):
    spec = dataset.load_spec(STILLS)
    dataset.run(spec, tmp_path, workers=0)
    rows = (tmp_path / "frames.csv").read_text().splitlines()
    head = rows[0].split(",")
    table = [dict(zip(head, r.split(","))) for r in rows[1:]]
    assert len(table) == 16 and len({r["noise_seed"] for r in table}) == 16
    with h5py.File(tmp_path / "master.h5", "r") as f:
        (entry,) = nxmx.NXmx(f).entries
        assert entry.data[0]["data"].shape == (16, 32, 32)
        assert entry.data[0]["float_image"].dtype == np.float32
        axes = nxmx.get_rotation_axes(nxmx.get_dependency_chain(entry.samples[0].depends_on))
        assert list(axes.is_scan_axis) == [False]
        wl = entry.instruments[0].beams[0].incident_wavelength.to("angstrom").magnitude
        np.testing.assert_allclose(wl, [float(r["wavelength"]) for r in table])
        det = entry.instruments[0].detectors[0]
        np.testing.assert_allclose(det.distance.to("mm").magnitude, [float(r["distance"]) for r in table])
        mod = det.modules[0]
        for i in (0, 9):
            # the per-frame translation chain puts frame i's detector at its drawn distance
            chain = nxmx.get_dependency_chain(mod.fast_pixel_direction.depends_on)
            z = nxmx.get_cumulative_transformation(chain)[i, 2, 3]
            assert z == pytest.approx(float(table[i]["distance"]))
    for i in (0, 9):
        _, h = nexus.read_nexus(tmp_path / "master.h5", i)
        assert h["WAVELENGTH"] == pytest.approx(float(table[i]["wavelength"]))
        assert h["DISTANCE"] == pytest.approx(float(table[i]["distance"]))


def test_random_orientation_angles_give_back_the_rotation():
    rng = np.random.default_rng(3)

    def rot(axis, deg):
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        i, j = [(1, 2), (2, 0), (0, 1)][axis]
        m = np.eye(3)
        m[i, i] = m[j, j] = c
        m[i, j], m[j, i] = -s, s
        return m

    for _ in range(20):
        R = dataset._random_rotation(rng)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        x, y, z = dataset.misset_from_matrix(R)
        np.testing.assert_allclose(rot(2, z) @ rot(1, y) @ rot(0, x), R, atol=1e-12)


SLOW = f"""
args = "-cell 70 80 90 90 95 90 -default_F 100 -N 3 -distance 100 -detpixels 160 -pixel 0.1 -oversample 3 -phisteps 4"
frames = 10
seed = 2
output = "{{output}}"
[rotation]
osc = 0.2
"""


@pytest.mark.parametrize("output", ["nexus", "smv"])
def test_killed_run_resumes_with_only_the_missing_frames(tmp_path, output):
    text = SLOW.replace("{output}", output)
    (tmp_path / "spec.toml").write_text(text)
    spec = dataset.load_spec(text)
    ref = tmp_path / "ref"
    dataset.run(spec, ref, workers=0)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "nanobragg.dataset", str(tmp_path / "spec.toml"), "--out", str(out),
                             "--workers", "0", "--no-progress"], stderr=subprocess.PIPE)
    names = [out / dataset.frame_name(spec, i) for i in range(spec.frames)]
    deadline = time.time() + 120
    while sum(p.exists() for p in names) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    present = [i for i, p in enumerate(names) if p.exists()]
    assert 3 <= len(present) < spec.frames, "the run was not killed part-way"
    assert not (out / "master.h5").exists()
    before = {i: os.stat(names[i]).st_ino for i in present}
    for i in present:  # a frame on disk is whole
        assert names[i].read_bytes() == (ref / dataset.frame_name(spec, i)).read_bytes()
    s = dataset.run(spec, out, workers=0)
    assert s.rendered == [i for i in range(spec.frames) if i not in present]
    assert s.skipped == len(present)
    assert {i: os.stat(names[i]).st_ino for i in present} == before      # not rendered again
    assert _files(out, spec) == _files(ref, spec)
    if output == "nexus":
        assert (out / "master.h5").read_bytes() == (ref / "master.h5").read_bytes()
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    again = dataset.run(spec, out, workers=0)
    assert again.rendered == [] and again.skipped == spec.frames


def test_partial_then_cluster_renders_the_rest(tmp_path, cluster):
    spec = dataset.load_spec(ROTATION)
    first = dataset.run(spec, tmp_path, workers=0, frames=[0, 4, 5])
    assert first.rendered == [0, 4, 5] and not (tmp_path / "master.h5").exists()
    rest = dataset.run(spec, tmp_path, scheduler=cluster.scheduler_address)
    assert rest.rendered == [1, 2, 3] + list(range(6, 12)) and rest.skipped == 3
    assert (tmp_path / "master.h5").exists()


def test_changed_description_is_refused(tmp_path):
    spec = dataset.load_spec(ROTATION)
    dataset.run(spec, tmp_path / "d", workers=0, frames=[0])
    changed = dataset.load_spec(ROTATION.replace("seed = 5", "seed = 6"))
    with pytest.raises(dataset.DatasetError, match="different description"):
        dataset.run(changed, tmp_path / "d", workers=0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("hello")
    with pytest.raises(dataset.DatasetError, match="not a nanobragg dataset"):
        dataset.run(spec, tmp_path / "other", workers=0)


def test_failed_frames_are_retried_and_reported(tmp_path, cluster):
    # N drawn from {3, -1}: the frames that draw -1 cannot render
    for seed in range(100):
        text = ROTATION.replace("seed = 5", f"seed = {seed}").split("[rotation]")[0] + \
            "[stills]\nN = {choice = [3, -1]}\n"
        try:
            spec = dataset.load_spec(text)
        except dataset.DatasetError:
            continue      # frame 0 draws -1: the description is refused up front
        bad = {i for i in range(spec.frames) if dataset.frame_keywords(spec, i)[0]["N"] < 0}
        if bad:
            break
    s = dataset.run(spec, tmp_path, scheduler=cluster.scheduler_address, retries=1)
    assert set(s.failed) == bad and not s.ok
    assert "N" in next(iter(s.failed.values()))
    assert not (tmp_path / "master.h5").exists()
    assert f"{len(bad)} failed" in s.line()


@pytest.mark.parametrize("text,match", [
    ("frames = 2\nseed = 1\n[rotation]\n", "missing key 'args'"),
    (f'args = "{ARGS}"\nframes = 2\nseed = 1\n', "exactly one of"),
    (f'args = "{ARGS}"\nframes = 0\nseed = 1\n[rotation]\n', "frames: at least 1"),
    (f'args = "{ARGS}"\nframes = 2\nseed = 1\ncolour = 3\n[rotation]\n', "unknown key 'colour'"),
    (f'args = "{ARGS} -bogus 1"\nframes = 2\nseed = 1\n[rotation]\n', "unknown option '-bogus'"),
    (f'args = "{ARGS}"\nframes = 2\nseed = 1\n[stills]\nmosaik = 1\n', "mosaik"),
    (f'args = "{ARGS}"\nframes = 2\nseed = 1\n[stills]\nN = {{poisson = [1]}}\n', "a distribution is one of"),
    (f'args = "{ARGS}"\nframes = 2\nseed = 1\noutput = "tiff"\n[rotation]\n', "output: 'tiff'"),
    (f'args = "{ARGS}"\nframes = 2\nseed = 1\ncompression = "zip"\n[rotation]\n', "unknown compression"),
    ("args = [", "not valid TOML"),
    (f'args = "{ARGS}"\nframes = 2\nseed = 1\n[rotation]\n[background]\nargs = "-water 100"\n',
     "background.args: unknown flag -water"),
    (f'args = "{ARGS}"\nframes = 2\nseed = 1\n[rotation]\n[background]\nargs = "-detpixels 32"\n',
     "background.args: needs -stol FILE"),
    (f'args = "{ARGS}"\nframes = 2\nseed = 1\n[rotation]\n[noisify]\nflags = 1\n', "noisify: a table with args"),
])
def test_bad_descriptions_are_one_line_errors(tmp_path, text, match):
    with pytest.raises(dataset.DatasetError, match=match):
        dataset.load_spec(text)
    p = tmp_path / "bad.toml"
    p.write_text(text)
    r = subprocess.run([sys.executable, "-m", "nanobragg.dataset", str(p), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("nanobragg-dataset: ") and match.split("'")[0] in r.stderr
    assert not (tmp_path / "o").exists()


def test_cbf_output_frames(tmp_path):
    """output = "cbf": one miniCBF per frame, the counts fabio reads back
    equal to the frame's noise image less the -adc pedestal."""
    import fabio
    text = ROTATION.replace("seed = 5", 'seed = 5\noutput = "cbf"')
    spec = dataset.load_spec(text)
    s = dataset.run(spec, tmp_path, workers=0, frames=[0])
    assert s.ok and (tmp_path / "frame_00001.cbf").exists()
    img = fabio.open(str(tmp_path / "frame_00001.cbf"))
    assert img.data.shape == (32, 32) and img.data.min() >= 0


def test_smv_frames_are_the_simulated_images(tmp_path):
    import nanobragg
    text = ROTATION.replace("seed = 5", 'seed = 5\noutput = "smv"\nimages = ["counts", "int", "float"]')
    spec = dataset.load_spec(text)
    s = dataset.run(spec, tmp_path, workers=0, frames=[3])
    assert s.ok
    kw, rec = dataset.frame_keywords(spec, 3)
    assert kw["phi"] == pytest.approx(10 + 3 * 0.5) and kw["osc"] == 0.5
    r = nanobragg.simulate(**kw)
    assert (tmp_path / "frame_00004.img").read_bytes() == r.smv_bytes(noise=True, seed=rec["noise_seed"])
    assert (tmp_path / "frame_00004.int.img").read_bytes() == r.smv_bytes()
    assert (tmp_path / "frame_00004.bin").read_bytes() == r.float_bytes()
    only = dataset.load_spec(text.replace('["counts", "int", "float"]', '["float"]'))
    assert dataset.run(only, tmp_path / "f", workers=0).ok
    assert sorted(p.name for p in (tmp_path / "f").glob("frame_*")) == [f"frame_{i:05d}.bin" for i in range(1, 13)]


def test_several_frames_per_file_same_frames(tmp_path, cluster):
    one = dataset.load_spec(ROTATION)
    five = dataset.load_spec(ROTATION.replace("seed = 5", "seed = 5\nframes_per_file = 5"))
    dataset.run(one, tmp_path / "one", workers=0)
    s = dataset.run(five, tmp_path / "five", scheduler=cluster.scheduler_address)
    assert s.ok and s.rendered == list(range(12))
    assert sorted(p.name for p in (tmp_path / "five/data").iterdir()) == \
        ["frame_000001.h5", "frame_000006.h5", "frame_000011.h5"]
    with h5py.File(tmp_path / "one/master.h5", "r") as a, h5py.File(tmp_path / "five/master.h5", "r") as b:
        np.testing.assert_array_equal(a["/entry/data/data"][()], b["/entry/data/data"][()])
        np.testing.assert_array_equal(a["/entry/sample/transformations/phi"][()],
                                      b["/entry/sample/transformations/phi"][()])
    # a frame alone renders its whole file, with the same bytes
    alone = dataset.run(five, tmp_path / "alone", workers=0, frames=[7])
    assert alone.rendered == [5, 6, 7, 8, 9]
    assert (tmp_path / "alone/data/frame_000006.h5").read_bytes() == (tmp_path / "five/data/frame_000006.h5").read_bytes()
    with pytest.raises(dataset.DatasetError, match="frames_per_file: only for"):
        dataset.load_spec(ROTATION.replace("seed = 5", 'seed = 5\nframes_per_file = 2\noutput = "smv"'))


@pytest.mark.parametrize("when, signum, message", [
    ("midway", signal.SIGINT, "interrupted"),
    ("midway", signal.SIGTERM, "stopped by SIGTERM"),
    # just after the folder is prepared: dask is importing or starting the cluster
    ("startup", signal.SIGINT, "interrupted"),
])
def test_stopped_cluster_run_says_one_line_and_resumes(tmp_path, when, signum, message):
    text = SLOW.replace("{output}", "nexus").replace("frames = 10", "frames = 16")
    (tmp_path / "spec.toml").write_text(text)
    spec = dataset.load_spec(text)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "nanobragg.dataset", str(tmp_path / "spec.toml"), "--out", str(out),
                             "--workers", "2", "--no-progress"], stderr=subprocess.PIPE, text=True)
    names = [out / dataset.frame_name(spec, i) for i in range(spec.frames)]
    deadline = time.time() + 120
    if when == "midway":
        while sum(p.exists() for p in names) < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
    else:
        while not (out / dataset.SPEC_FILE).exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.001)
    proc.send_signal(signum)
    err = proc.communicate(timeout=120)[1]
    present = [i for i, p in enumerate(names) if p.exists()]
    assert proc.returncode == 128 + signum and len(present) < spec.frames, "the run was not stopped part-way"
    assert err == f"nanobragg-dataset: {message}; run again with the same description to resume\n"
    s = dataset.run(spec, out, workers=0)
    assert s.rendered == [i for i in range(spec.frames) if i not in present]
    ref = dataset.run(spec, tmp_path / "ref", workers=0)
    assert ref.ok and _files(out, spec) == _files(tmp_path / "ref", spec)


@pytest.fixture
def python_sigint():
    """SIGINT with Python's own handler, whatever the test runner set."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _deliver(signum):
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # a handler runs in the main thread, between bytecodes


def test_a_signal_during_a_cluster_run_waits_for_a_safe_point(python_sigint):
    with dataset._DeferredSignals() as signals:
        _deliver(signal.SIGINT)             # noted, not raised
        with pytest.raises(KeyboardInterrupt):
            signals.check()
        signals.check()                     # raised once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # one still pending when the run ends is raised then
    with pytest.raises(KeyboardInterrupt):
        with dataset._DeferredSignals():
            _deliver(signal.SIGINT)
    # a second one acts at once: a start-up that hangs can still be stopped
    with pytest.raises(KeyboardInterrupt):
        with dataset._DeferredSignals() as signals:
            _deliver(signal.SIGINT)
            _deliver(signal.SIGINT)
            raise AssertionError("the second SIGINT did not act at once")
    assert signals.pending == signal.SIGINT and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_hosts_own_sigint_handler_is_left_alone():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with dataset._DeferredSignals() as signals:
            _deliver(signal.SIGINT)
            signals.check()
        assert seen == [signal.SIGINT] and signals.pending is None
    finally:
        signal.signal(signal.SIGINT, previous)


def test_stills_whose_detectors_turn_differently_get_no_master_and_say_so(tmp_path):
    text = STILLS.replace("N = {integers = [3, 6]}", "detector_rotx = {uniform = [-5, 5]}")
    spec = dataset.load_spec(text)
    with pytest.raises(dataset.DatasetError, match="every frame is rendered, but there is no master file"):
        dataset.run(spec, tmp_path, workers=0)
    assert all((tmp_path / dataset.frame_name(spec, i)).exists() for i in range(spec.frames))
    assert not (tmp_path / "master.h5").exists()


def test_background_and_detector_noise_frames(tmp_path):
    """[background] adds nonBragg's amorphous scattering to every frame and
    [noisify] turns the sum into detector counts, seeded per frame: the
    frames equal what the functions give for that frame, and do not depend
    on the number of workers."""
    import nanobragg
    bg_args = "-stol water -lambda 1 -distance 100 -detpixels 32 -pixel 0.1 -thick 0.05 -oversample 1"
    nz_args = "-readout_noise 2 -flicker 0.01 -psf gauss -psf_fwhm 100 -pixel 0.1"
    text = ROTATION.replace("seed = 5", 'seed = 5\noutput = "smv"\nimages = ["counts", "float"]') + \
        f'[background]\nargs = "{bg_args}"\n[noisify]\nargs = "{nz_args}"\n'
    spec = dataset.load_spec(text)
    assert dataset.run(spec, tmp_path / "serial", workers=0).ok
    assert dataset.run(spec, tmp_path / "one", workers=0, frames=[4]).ok
    a, b = tmp_path / "serial" / "frame_00005.img", tmp_path / "one" / "frame_00005.img"
    assert a.read_bytes() == b.read_bytes()
    kw, rec = dataset.frame_keywords(spec, 4)
    r = nanobragg.simulate(**kw)
    bg = nanobragg.background(stol="water", wavelength=1, distance=100, detpixels=32, pixel=0.1, thick=0.05,
                              oversample=1)
    photons = r.float_image + bg
    floats = np.fromfile(tmp_path / "serial" / "frame_00005.bin", dtype=np.float32).reshape(32, 32)
    np.testing.assert_array_equal(floats, photons)
    det = nanobragg.noisify(photons, readout_noise=2, flicker=0.01, psf="gauss", psf_fwhm=100, pixel=0.1,
                            seed=rec["noise_seed"])
    counts = np.frombuffer(a.read_bytes()[512:], dtype=np.uint16).reshape(32, 32)
    np.testing.assert_array_equal(counts, det.image)
    assert a.read_bytes()[:512] == r.smv_header()
    with pytest.raises(dataset.DatasetError, match="output = .cbf. takes nanoBragg's own counts"):
        dataset.load_spec(text.replace('output = "smv"', 'output = "cbf"'))
