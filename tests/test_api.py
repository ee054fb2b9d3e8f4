"""simulate(): the golden image, agreement with the command line, data
instead of files, errors, threads, and no files written."""
import gzip
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nanobragg._core", reason="the compiled engine is not built")

import nanobragg  # noqa: E402
from nanobragg import Result, args_to_params, simulate  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "golden"
INPUTS = GOLDEN / "inputs"
OUTPUT_FLAGS = ["-floatfile", "float.bin", "-intfile", "int.img", "-noisefile", "noise.img", "-pgmfile", "image.pgm"]

CUBIC = dict(cell=(100, 100, 100, 90, 90, 90), default_F=100, N=5, wavelength=1, distance=100,
             detpixels=128, pixel=0.1, seed=11)
SMALL = dict(cell=(90, 90, 90, 90, 90, 90), N=4, wavelength=1, distance=100, detpixels=48, pixel=0.2, seed=5)


def load_case(case_id):
    import json
    with open(GOLDEN / "cases.json") as f:
        for c in json.load(f)["cases"]:
            if c["id"] == case_id:
                return c
    raise KeyError(case_id)


def stage(case, workdir):
    for name in case.get("inputs", []):
        (Path(workdir) / name).write_bytes((INPUTS / name).read_bytes())


def run_cli(args, cwd):
    """The installed command (or python -m nanobragg) in cwd."""
    import shutil
    exe = shutil.which("nanoBragg")
    cmd = ([exe] if exe else [sys.executable, "-m", "nanobragg"]) + list(args)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def assert_golden_float(ours, ref):
    ours = ours.astype(np.float64).ravel()
    ref = ref.astype(np.float64).ravel()
    assert ours.shape == ref.shape
    tol = 1e-5 * np.abs(ref) + 1e-6 * np.abs(ref).max()
    bad = np.abs(ours - ref) > tol
    assert not bad.any(), f"{int(bad.sum())} pixels off the golden image"


@pytest.fixture(scope="module")
def cubic():
    return simulate(**CUBIC)


# ------------------------------------------------------------ golden image --

def test_cubic_default_matches_golden(cubic):
    with gzip.open(GOLDEN / "cubic_default" / "float.bin.gz") as f:
        ref = np.frombuffer(f.read(), dtype="<f4")
    assert isinstance(cubic, Result)
    assert cubic.float_image.dtype == np.float32 and cubic.float_image.shape == (128, 128)
    assert_golden_float(cubic.float_image, ref)


def test_args_to_params_of_a_golden_case_equals_keywords(cubic):
    params = args_to_params(load_case("cubic_default")["args"])
    r = simulate(**params)
    np.testing.assert_array_equal(r.float_image, cubic.float_image)


def test_result_contents(cubic):
    st = cubic.stats
    # the reference's printed values for this case (stdout.txt)
    assert "%g" % st["max_I"] == "97.2806"
    assert ("%g %g" % (st["max_I_x"], st["max_I_y"])) == "0.006575 0.006575"
    assert ("%g %g %g" % (st["mean"], st["rms"], st["rmsd"])) == "2.24087 10.2033 9.95422"
    assert "%g" % st["solid_angle"] == "0.0163171"
    assert "%g" % cubic.intfile_scale == "565.375"
    assert "%g" % cubic.pgm_scale == "5.023"
    h = cubic.header
    assert (h["SIZE1"], h["SIZE2"], h["PIXEL_SIZE"], h["DISTANCE"], h["WAVELENGTH"]) == (128, 128, 0.1, 100, 1)
    assert h["DIALS_ORIGIN"] == (-6.5, 6.5, -100)
    g = cubic.geometry
    assert g["Fbeam"] == pytest.approx(6.5) and g["Sbeam"] == pytest.approx(6.5)
    assert g["distance"] == pytest.approx(100) and g["close_distance"] == pytest.approx(100)
    assert g["pix0_vector"] == pytest.approx((0.1, 0.0065, -0.0065))
    assert g["fdet_vector"] == pytest.approx((0, 0, 1)) and g["beam_vector"] == pytest.approx((1, 0, 0))
    assert g["dials_origin"] == pytest.approx((-6.5, 6.5, -100))
    assert g["ORGX"] == pytest.approx(65.5)
    assert "mosflm convention selected." in cubic.log
    ii = cubic.int_image()
    assert ii.dtype == np.uint16 and ii.shape == (128, 128)
    assert cubic.pgm_image().dtype == np.uint8


def test_noise_image_seeds(cubic):
    a = cubic.noise_image()
    np.testing.assert_array_equal(a, cubic.noise_image(seed=11))
    assert not np.array_equal(a, cubic.noise_image(seed=12))
    n = cubic.noise(11)
    assert "%.0f photons on noise image (%d overloads)" % (n.photons, n.overloads) == "36776 photons on noise image (0 overloads)"
    with gzip.open(GOLDEN / "cubic_default" / "noise.img.gz") as f:
        ref = np.frombuffer(f.read()[512:], dtype="<u2")
    assert (a.ravel() == ref).mean() >= 0.999


# ------------------------------------------------------------- API == CLI --

def _all_public_case_ids():
    with open(GOLDEN / "cases.json") as f:
        return [c["id"] for c in json.load(f)["cases"]]


CLI_CASES = _all_public_case_ids()


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_api_equals_cli(case_id, tmp_path, monkeypatch):
    case = load_case(case_id)
    stage(case, tmp_path)
    p = run_cli(case["args"] + OUTPUT_FLAGS, tmp_path)
    assert p.returncode == 0, p.stderr
    monkeypatch.chdir(tmp_path)
    r = simulate(**args_to_params(case["args"]))
    cli_float = np.fromfile(tmp_path / "float.bin", dtype=np.float32).reshape(r.float_image.shape)
    np.testing.assert_array_equal(r.float_image, cli_float)
    # the SMV and PGM files are the Result's bytes
    assert (tmp_path / "int.img").read_bytes() == r.smv_bytes()
    assert (tmp_path / "noise.img").read_bytes() == r.smv_bytes(noise=True)
    assert (tmp_path / "image.pgm").read_bytes() == r.pgm_bytes()
    # the API's log is the engine's part of what the command printed
    for line in r.log.splitlines():
        assert line in p.stdout.splitlines()


def test_result_writers_match_cli(tmp_path, cubic):
    case = load_case("cubic_default")
    p = run_cli(case["args"] + OUTPUT_FLAGS, tmp_path)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "api"
    out.mkdir()
    cubic.write_float(out / "float.bin")
    cubic.write_smv(out / "int.img")
    cubic.write_smv(out / "noise.img", noise=True)
    cubic.write_pgm(out / "image.pgm")
    for name in ("float.bin", "int.img", "noise.img", "image.pgm"):
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name
    assert sorted(os.listdir(out)) == ["float.bin", "image.pgm", "int.img", "noise.img"]  # no temp files left


def test_cli_prints_the_reference_result_lines(tmp_path):
    case = load_case("cubic_default")
    p = run_cli(case["args"] + OUTPUT_FLAGS, tmp_path)
    ref = (GOLDEN / "cubic_default" / "stdout.txt").read_text().splitlines()
    tail = ref[ref.index("solid angle subtended by detector = 0.0163171 steradian ( 0.129848% sphere)"):]
    out = p.stdout.splitlines()
    assert out[-len(tail):] == tail
    assert ref == out          # the "% done" lines included


def test_cli_reads_and_writes_fdump(tmp_path):
    case = load_case("triclinic_misset_hkl")
    stage(case, tmp_path)
    p = run_cli(case["args"] + OUTPUT_FLAGS, tmp_path)
    assert "writing dump file for next time: Fdump.bin" in p.stdout
    with gzip.open(GOLDEN / "triclinic_misset_hkl" / "Fdump.bin.gz") as f:
        assert (tmp_path / "Fdump.bin").read_bytes() == f.read()
    first = (tmp_path / "float.bin").read_bytes()
    args = [a for a in case["args"]]
    i = args.index("-hkl")
    del args[i:i + 2]
    p = run_cli(args + OUTPUT_FLAGS, tmp_path)
    assert p.returncode == 0 and "reading Fs from Fdump.bin" in p.stdout
    assert (tmp_path / "float.bin").read_bytes() == first


def test_cli_checks_output_directory_before_rendering(tmp_path):
    p = run_cli(["-cell", "90", "90", "90", "90", "90", "90", "-default_F", "1", "-detpixels", "4000",
                 "-floatfile", str(tmp_path / "missing" / "f.bin")], tmp_path)
    assert p.returncode == 1
    assert p.stderr.startswith("nanoBragg: error: cannot write") and p.stderr.count("\n") == 1
    assert p.stdout == ""       # nothing rendered
    p = run_cli(["-cell", "90", "90", "90", "90", "90", "90", "-hkl", "nothere.hkl"], tmp_path)
    assert p.returncode == 1 and "nothere.hkl" in p.stderr and "Traceback" not in p.stderr


# ---------------------------------------------------- data instead of files --

def test_hkl_as_array_and_dict_equal_file():
    rows = np.loadtxt(INPUTS / "cubic.hkl")
    from_file = simulate(hkl=str(INPUTS / "cubic.hkl"), **SMALL).float_image
    from_array = simulate(hkl=rows, **SMALL).float_image
    from_dict = simulate(hkl={(int(h), int(k), int(l)): F for h, k, l, F in rows}, **SMALL).float_image
    np.testing.assert_array_equal(from_file, from_array)
    np.testing.assert_array_equal(from_file, from_dict)


def test_mat_as_array_equals_file():
    base = dict(hkl=str(INPUTS / "cubic.hkl"), N=4, wavelength=1, distance=100, detpixels=48, pixel=0.2, seed=1)
    mat = np.array([[0.011, 0.0, 0.0], [0.0, 0.011, 0.0], [0.0, 0.0, 0.011]]) @ np.array(
        [[0.8, -0.6, 0], [0.6, 0.8, 0], [0, 0, 1]])
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "A.mat"
        path.write_text("\n".join(" ".join("%.10f" % x for x in row) for row in mat) + "\n0 0 0\n")
        a = simulate(mat=str(path), **base).float_image
    b = simulate(mat=mat, **base).float_image
    np.testing.assert_array_equal(a, b)
    assert a.max() > 0


def test_sources_as_array_equal_file():
    rows = []
    for line in (INPUTS / "sources.txt").read_text().splitlines():
        vals = [float(t) for t in line.replace(",", " ").split()]
        if vals:
            rows.append(vals + [np.nan] * (5 - len(vals)))
    a = simulate(sourcefile=str(INPUTS / "sources.txt"), hkl=str(INPUTS / "cubic.hkl"), **SMALL).float_image
    b = simulate(sourcefile=np.array(rows), hkl=str(INPUTS / "cubic.hkl"), **SMALL).float_image
    np.testing.assert_array_equal(a, b)
    # fewer columns: the missing ones take their defaults
    c = simulate(sourcefile=[[-10, 0, 0]], hkl=str(INPUTS / "cubic.hkl"), **SMALL).float_image
    d = simulate(hkl=str(INPUTS / "cubic.hkl"), **SMALL).float_image
    np.testing.assert_allclose(c, d, rtol=1e-6)


def test_mask_array(cubic):
    mask = np.zeros((128, 128), dtype=bool)
    mask[20:60, 30:100] = True
    r = simulate(mask=mask, **CUBIC)
    assert (r.float_image[~mask] == 0).all()
    np.testing.assert_array_equal(r.float_image[mask], cubic.float_image[mask])
    # a mask array alone sizes the detector, like an SMV mask
    p = {k: v for k, v in CUBIC.items() if k != "detpixels"}
    r = simulate(mask=np.ones((40, 64)), **p)
    assert r.float_image.shape == (40, 64)


def test_switch_spellings_agree():
    a = simulate(xds=True, **SMALL, default_F=10).float_image
    b = simulate(convention="xds", **SMALL, default_F=10).float_image
    np.testing.assert_array_equal(a, b)
    kw = dict(SMALL, default_F=10)
    del kw["wavelength"]
    c = simulate(**{"lambda": 1.0}, **kw).float_image
    d = simulate(wave=1.0, **kw).float_image
    e = simulate(wavelength=1.0, **kw).float_image
    np.testing.assert_array_equal(c, d)
    np.testing.assert_array_equal(c, e)


def test_keyword_order_is_flag_order():
    # the custom convention (any vector flag) keeps the pivot the flags chose
    kw = dict(cell=(90, 90, 90, 90, 90, 90), default_F=10, N=4, detpixels=48, pixel=0.2, beam_vector=(1, 0, 0))
    a = simulate(distance=100, twotheta=10, **kw)   # pivot sample (last)
    b = simulate(twotheta=10, distance=100, **kw)   # pivot beam (last)
    assert "pivoting detector around sample" in a.log
    assert "pivoting detector around direct beam spot" in b.log
    assert not np.array_equal(a.float_image, b.float_image)


# ------------------------------------------------------------------- errors --

def test_unknown_keyword_names_the_closest():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'distnace' \(did you mean 'distance'\?\)"):
        simulate(distnace=100, **CUBIC)


@pytest.mark.parametrize("kw, message", [
    (dict(distance="far"), "distance"),
    (dict(cell=(100, 100, 100)), "cell: expected 6 numbers"),
    (dict(N=2.5), "N: expected an integer"),
    (dict(pixel=0), "pixel: the pixel size must be > 0, got 0 mm"),
    (dict(mat=np.zeros((2, 2))), "mat: expected a file name or a 3x3 array"),
    (dict(hkl=np.zeros((3, 3))), r"hkl: expected an \(n, 4\) array"),
    (dict(hkl=np.array([[0.5, 0, 0, 1.0]])), "hkl: Miller indices must be integers"),
    (dict(hkl={"a": 1}), "hkl: a dict must map"),
    (dict(mask=np.ones((10, 10))), "mask: the mask is 10x10 pixels but the detector is 128x128"),
    (dict(mask=np.ones(10)), "mask: expected a file name or a 2-D numeric array"),
    (dict(sourcefile=np.zeros((2, 6))), r"sourcefile: expected an \(n, <=5\) array"),
    (dict(xds="yes"), "xds: a switch takes True or False"),
])
def test_bad_values_raise_value_error(kw, message):
    params = dict(CUBIC)
    params.update(kw)
    with pytest.raises(ValueError, match=message):
        simulate(**params)


def test_missing_inputs_raise_value_error():
    no_f = {k: v for k, v in CUBIC.items() if k != "default_F"}
    with pytest.raises(ValueError, match="no structure factors"):
        simulate(**no_f)
    no_cell = {k: v for k, v in CUBIC.items() if k != "cell"}
    with pytest.raises(ValueError, match="no crystal"):
        simulate(**no_cell)
    with pytest.raises(FileNotFoundError, match="hkl"):
        simulate(hkl="/nonexistent/x.hkl", **CUBIC)


# --------------------------------------------------------- threads and disk --

def test_concurrent_calls_give_identical_results(cubic):
    params = dict(hkl=str(INPUTS / "cubic.hkl"), cell=(90, 90, 90, 90, 90, 90), N=4, wavelength=1, distance=100,
                  detpixels=96, pixel=0.1, mosaic=0.5, mosaic_dom=3, seed=7)
    serial = simulate(**params, threads=1).float_image
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = simulate(**params, threads=2).float_image
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_array_equal(r, serial)


def test_simulate_writes_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cubic.hkl").write_bytes((INPUTS / "cubic.hkl").read_bytes())
    before = sorted(os.listdir(tmp_path))
    r = simulate(hkl="cubic.hkl", dump="Fdump.bin", floatfile="f.bin", intfile="i.img", **SMALL)
    r.int_image(), r.noise_image(), r.pgm_image(), r.header, r.geometry
    assert sorted(os.listdir(tmp_path)) == before


def test_version():
    assert nanobragg.__version__ == nanobragg._core.version
